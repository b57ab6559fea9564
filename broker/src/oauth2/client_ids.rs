//! Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document; MCP 2025-11-25):
//! a client whose `client_id` is an https URL is known by the JSON document at that URL. It is
//! fetched on first use and again when the copy kept goes stale (its HTTP caching headers,
//! within bounds), checked (its `client_id` is the URL, its redirect URIs are the only ones
//! allowed, it holds no secret), and kept as an app of origin `metadata_document`, so tokens
//! issued to it are checked like any app's and an admin sees and can delete it.

use serde_json::Value;

use crate::clock::{now, now_millis};
use crate::state::AppState;
use crate::store::{AppOrigin, ClientType, OAuth2App};
use crate::upstream::client_documents::DocumentError;

use super::OAuthError;
use super::apps::{check_redirect, claimed_icon, claimed_name, glob, loopback};
use super::scopes;

/// A copy is kept at least this long (a document saying `no-store` is fetched again at the
/// next authorization, not at every token request) and at most this long.
const MIN_KEEP_MS: i64 = 60_000;
const MAX_KEEP_MS: i64 = 24 * 3600 * 1000;
/// Kept this long when the document says nothing about caching.
const DEFAULT_KEEP_MS: i64 = 3600 * 1000;

/// Whether a `client_id` is a URL (and so a metadata document, when accepted here).
pub fn is_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// The URL of a `client_id`, when its shape is one the draft allows: https, a path, no
/// fragment, no credentials, no dot segments. An `http://` loopback document is taken only
/// while this broker itself runs on a loopback http access URL (tests and local trials).
fn document_url(state: &AppState, client_id: &str) -> Result<url::Url, String> {
    if client_id.len() > 2048 {
        return Err("the client_id URL is longer than 2048 characters".to_owned());
    }
    let url = url::Url::parse(client_id).map_err(|e| format!("not a URL ({e})"))?;
    let access = state.settings.access_url.as_url();
    let local_trial = access.scheme() == "http" && loopback(access);
    match url.scheme() {
        "https" => {}
        "http" if local_trial && loopback(&url) => {}
        _ => {
            return Err(
                "a client_id URL must be https:// (http:// only for a loopback document while the broker itself runs on a loopback http address)"
                    .to_owned(),
            );
        }
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(
            "a client_id URL must have a path (e.g. https://app.example/oauth/client.json)"
                .to_owned(),
        );
    }
    if url.fragment().is_some() || client_id.contains('#') {
        return Err("a client_id URL has no fragment".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a client_id URL has no user name or password".to_owned());
    }
    if client_id.contains("/./") || client_id.contains("/../") {
        return Err("a client_id URL has no . or .. segments".to_owned());
    }
    Ok(url)
}

/// Whether admins let documents come from `host`.
fn host_allowed(state: &AppState, host: &str) -> Result<(), String> {
    let host = host.to_ascii_lowercase();
    let settings = &state.settings.oauth2;
    if settings
        .client_metadata_deny_hosts
        .iter()
        .any(|p| glob(p, &host))
    {
        return Err(format!(
            "clients from {host} are refused here (EXTAUTH_OAUTH2_CLIENT_METADATA_DENY_HOSTS)"
        ));
    }
    if !settings.client_metadata_hosts.is_empty()
        && !settings
            .client_metadata_hosts
            .iter()
            .any(|p| glob(p, &host))
    {
        return Err(format!(
            "clients from {host} are not among those accepted here (EXTAUTH_OAUTH2_CLIENT_METADATA_HOSTS)"
        ));
    }
    Ok(())
}

/// The app a metadata document describes, or why it cannot be one.
fn app_of(
    client_id: &str,
    document: &Value,
    kept: Option<&OAuth2App>,
) -> Result<OAuth2App, String> {
    if document["client_id"].as_str() != Some(client_id) {
        return Err("its client_id is not the URL it was fetched from".to_owned());
    }
    for forbidden in ["client_secret", "client_secret_expires_at"] {
        if !document[forbidden].is_null() {
            return Err(format!(
                "it holds {forbidden}, which a public document must not"
            ));
        }
    }
    match document["token_endpoint_auth_method"].as_str() {
        None | Some("none") => {}
        Some("private_key_jwt") => {
            return Err(
                "token_endpoint_auth_method private_key_jwt is not supported here yet; use none (PKCE)"
                    .to_owned(),
            );
        }
        Some(other) => {
            return Err(format!(
                "token_endpoint_auth_method {other:?} cannot be used by a document-identified client; use none"
            ));
        }
    }
    let Some(uris) = document["redirect_uris"]
        .as_array()
        .filter(|u| !u.is_empty())
    else {
        return Err("it has no redirect_uris".to_owned());
    };
    if uris.len() > 32 {
        return Err("it has more than 32 redirect_uris".to_owned());
    }
    let mut redirect_uris = Vec::new();
    for uri in uris {
        let Some(uri) = uri.as_str() else {
            return Err("a redirect URI is not a string".to_owned());
        };
        check_redirect(uri, ClientType::Public)
            .map_err(|why| format!("redirect URI {uri:?} {why}"))?;
        redirect_uris.push(uri.to_owned());
    }
    let host = url::Url::parse(client_id)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let name = claimed_name(document["client_name"].as_str(), &host);
    let icon = claimed_icon(document["logo_uri"].as_str());
    Ok(OAuth2App {
        id: client_id.to_owned(),
        name,
        icon,
        redirect_uris,
        client_type: ClientType::Public,
        scopes: scopes::every(),
        default_scopes: scopes::claimed_defaults(document["scope"].as_str()),
        secrets: Vec::new(),
        created_at: kept.map_or_else(now, |k| k.created_at),
        updated_at: now(),
        origin: AppOrigin::MetadataDocument,
        resources: kept.map(|k| k.resources.clone()).unwrap_or_default(),
        registration_hash: None,
        stale_ms: None,
        granted: kept.is_some_and(|k| k.granted),
    })
}

/// The app behind `client_id`: registered here, or described by the metadata document its URL
/// names (fetched when the copy kept is missing or stale). `None`: no such client.
pub async fn resolve(state: &AppState, client_id: &str) -> Result<Option<OAuth2App>, OAuthError> {
    let kept = state.store.oauth2_app(client_id).await?;
    if !is_url(client_id) {
        return Ok(kept);
    }
    let refuse = |why: String| {
        OAuthError::InvalidClient(format!(
            "the client metadata document {client_id} cannot be used: {why}"
        ))
    };
    if !state.settings.oauth2.client_metadata {
        return Err(refuse(
            "client ID metadata documents are turned off here (EXTAUTH_OAUTH2_CLIENT_METADATA=false)"
                .to_owned(),
        ));
    }
    let url = document_url(state, client_id).map_err(&refuse)?;
    let loopback_trial = url.scheme() == "http";
    host_allowed(state, url.host_str().unwrap_or_default()).map_err(&refuse)?;
    if let Some(app) = &kept {
        if app.origin == AppOrigin::MetadataDocument
            && app.stale_ms.is_some_and(|stale| stale > now_millis())
        {
            return Ok(kept);
        }
    }
    let fetched = match state.client_documents.fetch(&url, loopback_trial).await {
        Ok(fetched) => fetched,
        Err(DocumentError::Refused(why) | DocumentError::Failed(why)) => {
            tracing::warn!(target: "extauth::audit", event = "oauth2.client_document", client = %client_id, outcome = "refused", reason = %why, "a client metadata document could not be used");
            return Err(refuse(why));
        }
    };
    let mut app = app_of(client_id, &fetched.body, kept.as_ref()).map_err(|why| {
        tracing::warn!(target: "extauth::audit", event = "oauth2.client_document", client = %client_id, outcome = "invalid", reason = %why, "a client metadata document is invalid");
        refuse(why)
    })?;
    let keep_ms = fetched
        .max_age
        .map_or(DEFAULT_KEEP_MS, |d| {
            i64::try_from(d.as_millis()).unwrap_or(MAX_KEEP_MS)
        })
        .clamp(MIN_KEEP_MS, MAX_KEEP_MS);
    app.stale_ms = Some(now_millis().saturating_add(keep_ms));
    if kept.is_some_and(|k| k.origin != AppOrigin::MetadataDocument) {
        return Err(refuse("an app registered here has this id".to_owned()));
    }
    state.store.put_oauth2_app(&app).await?;
    tracing::info!(target: "extauth::audit", event = "oauth2.client_document", client = %client_id, outcome = "fetched", keep_s = keep_ms / 1000, "read a client metadata document");
    Ok(Some(app))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "https://app.example/oauth/client.json";

    #[test]
    fn a_document_must_name_itself_and_hold_no_secret() {
        let good = json!({"client_id": ID, "client_name": "App", "redirect_uris": ["http://127.0.0.1:33418/cb"]});
        let app = app_of(ID, &good, None).unwrap();
        assert_eq!(app.name, "App");
        assert_eq!(app.client_type, ClientType::Public);
        let other = json!({"client_id": "https://evil.example/c.json", "redirect_uris": ["http://127.0.0.1/cb"]});
        assert!(app_of(ID, &other, None).unwrap_err().contains("client_id"));
        let secret = json!({"client_id": ID, "client_secret": "x", "redirect_uris": ["http://127.0.0.1/cb"]});
        assert!(
            app_of(ID, &secret, None)
                .unwrap_err()
                .contains("client_secret")
        );
        let basic = json!({"client_id": ID, "token_endpoint_auth_method": "client_secret_basic", "redirect_uris": ["http://127.0.0.1/cb"]});
        assert!(app_of(ID, &basic, None).is_err());
        let none = json!({"client_id": ID});
        assert!(
            app_of(ID, &none, None)
                .unwrap_err()
                .contains("redirect_uris")
        );
        let js = json!({"client_id": ID, "redirect_uris": ["javascript:alert(1)"]});
        assert!(app_of(ID, &js, None).is_err());
    }
}
