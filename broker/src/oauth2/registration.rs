//! Dynamic client registration (RFC 7591) and its management protocol (RFC 7592): off unless an
//! admin opens it, and then only under a redirect policy. Clients such as VS Code, Cursor and
//! Claude Code register several redirect URIs at once, some of which a policy may not allow:
//! those are left out and the rest registered (the answer lists what was kept), rather than the
//! whole registration failing.

use serde::Deserialize;

use crate::clock::now;
use crate::failure::Failure;
use crate::identity::hash;
use crate::random;
use crate::state::AppState;
use crate::store::{AppOrigin, ClientType, OAuth2App};
use extauth_providers::constant_time_eq;

pub use super::RegistrationError;
use super::apps::{check_redirect, claimed_icon, claimed_name, new_secret};
use super::grants::DEVICE_GRANT;
use super::redirect_policy::policy_allows;
use super::scopes;

/// The runtime setting admins flip on the apps page.
const SETTING: &str = "oauth2.dcr";
/// A self-registered app that completed no grant within this is deleted.
pub const UNUSED_LIFETIME_S: i64 = 24 * 3600;

/// The metadata a client sends (RFC 7591 §2); unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientMetadata {
    pub redirect_uris: Option<Vec<String>>,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub scope: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub application_type: Option<String>,
}

/// A registration done: the app, and the secrets shown this once.
#[derive(Debug)]
pub struct Registered {
    /// The app as registered.
    pub app: OAuth2App,
    /// Its client secret (a confidential client).
    pub client_secret: Option<String>,
    /// Its registration access token (RFC 7592).
    pub access_token: String,
    /// What was asked and is echoed (grant types, response types, auth method, type).
    pub echo: Echo,
}

/// The metadata echoed in the answer.
#[derive(Debug, Clone)]
pub struct Echo {
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub application_type: String,
    pub client_uri: Option<String>,
    /// Redirect URIs left out by the policy, each with why.
    pub left_out: Vec<String>,
}

/// Whether registration is open now: an admin's choice on the page, else the setting.
pub async fn enabled(state: &AppState) -> Result<bool, Failure> {
    Ok(match state.store.runtime_setting(SETTING).await? {
        Some(value) => value == "true",
        None => state.settings.oauth2.dcr,
    })
}

/// Opens or closes registration (every replica sees it at its next request).
pub async fn set_enabled(state: &AppState, on: bool) -> Result<(), Failure> {
    state
        .store
        .put_runtime_setting(SETTING, if on { "true" } else { "false" })
        .await?;
    tracing::info!(target: "extauth::audit", event = "oauth2.dcr", enabled = on, "changed dynamic client registration");
    Ok(())
}

/// The checked metadata: the app's fields and what is echoed.
fn checked(
    state: &AppState,
    metadata: &ClientMetadata,
) -> Result<(ClientType, Vec<String>, Echo), RegistrationError> {
    let invalid = |why: String| Err(RegistrationError::InvalidMetadata(why));
    let method = metadata
        .token_endpoint_auth_method
        .clone()
        .unwrap_or_else(|| "client_secret_basic".to_owned());
    let client_type = match method.as_str() {
        "none" => ClientType::Public,
        "client_secret_basic" | "client_secret_post" => ClientType::Confidential,
        other => {
            return invalid(format!(
                "token_endpoint_auth_method {other:?} is not supported; use none, client_secret_basic or client_secret_post"
            ));
        }
    };
    let application_type = metadata
        .application_type
        .clone()
        .unwrap_or_else(|| "web".to_owned());
    if !matches!(application_type.as_str(), "web" | "native") {
        return invalid(format!(
            "application_type {application_type:?} is not web or native"
        ));
    }
    let grant_types = metadata
        .grant_types
        .clone()
        .unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    for grant in &grant_types {
        match grant.as_str() {
            "authorization_code" | "refresh_token" => {}
            g if g == DEVICE_GRANT => {}
            "client_credentials" if client_type == ClientType::Confidential => {}
            other => {
                return invalid(format!(
                    "grant_types: {other:?} is not available to a self-registered client"
                ));
            }
        }
    }
    let response_types = metadata
        .response_types
        .clone()
        .unwrap_or_else(|| vec!["code".to_owned()]);
    if response_types.iter().any(|r| r != "code") {
        return invalid("response_types: only code is supported".to_owned());
    }
    let mut kept = Vec::new();
    let mut left_out = Vec::new();
    for uri in metadata.redirect_uris.iter().flatten() {
        let verdict = check_redirect(uri, client_type).and_then(|()| {
            let url = url::Url::parse(uri).map_err(|e| e.to_string())?;
            if policy_allows(&state.settings.oauth2.dcr_redirects, &url) {
                Ok(())
            } else {
                Err("is not allowed by this server's registration policy".to_owned())
            }
        });
        match verdict {
            Ok(()) if !kept.contains(uri) => kept.push(uri.clone()),
            Ok(()) => {}
            Err(why) => left_out.push(format!("{uri} {why}")),
        }
    }
    let needs_redirect = grant_types.iter().any(|g| g == "authorization_code");
    if needs_redirect && kept.is_empty() {
        return Err(RegistrationError::InvalidRedirectUri(
            if left_out.is_empty() {
                "redirect_uris: give at least one".to_owned()
            } else {
                format!("no usable redirect URI: {}", left_out.join("; "))
            },
        ));
    }
    if kept.len() > 32 {
        return Err(RegistrationError::InvalidRedirectUri(
            "redirect_uris: at most 32".to_owned(),
        ));
    }
    Ok((
        client_type,
        kept,
        Echo {
            grant_types,
            response_types,
            token_endpoint_auth_method: method,
            application_type,
            client_uri: metadata
                .client_uri
                .clone()
                .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
            left_out,
        },
    ))
}

fn name_and_icon(metadata: &ClientMetadata) -> (String, String) {
    (
        claimed_name(metadata.client_name.as_deref(), "Unnamed client"),
        claimed_icon(metadata.logo_uri.as_deref()),
    )
}

/// `POST /oauth2/register`.
pub async fn register(
    state: &AppState,
    metadata: &ClientMetadata,
) -> Result<Registered, RegistrationError> {
    if !enabled(state).await? {
        return Err(RegistrationError::Off);
    }
    let (client_type, redirect_uris, echo) = checked(state, metadata)?;
    let (name, icon) = name_and_icon(metadata);
    let access_token = format!("extauth_rat_{}", random::hex_token::<32>());
    let (secrets, client_secret) = if client_type == ClientType::Confidential {
        let new = new_secret();
        (vec![new.record], Some(new.secret))
    } else {
        (Vec::new(), None)
    };
    let app = OAuth2App {
        id: format!("dyn_{}", random::hex_token::<16>()),
        name,
        icon,
        redirect_uris,
        client_type,
        scopes: scopes::every(),
        default_scopes: scopes::claimed_defaults(metadata.scope.as_deref()),
        secrets,
        created_at: now(),
        updated_at: now(),
        origin: AppOrigin::Registered,
        resources: Vec::new(),
        registration_hash: Some(hash(&access_token)),
        stale_ms: None,
        granted: false,
    };
    state.store.put_oauth2_app(&app).await?;
    tracing::info!(target: "extauth::audit", event = "oauth2.app.registered", app = %app.id, name = %app.name, left_out = echo.left_out.len(), "a client registered itself");
    Ok(Registered {
        app,
        client_secret,
        access_token,
        echo,
    })
}

/// The self-registered app `id`, if `access_token` is its registration access token.
pub async fn authorized(
    state: &AppState,
    id: &str,
    access_token: Option<&str>,
) -> Result<OAuth2App, RegistrationError> {
    if !enabled(state).await? {
        return Err(RegistrationError::Off);
    }
    let presented = access_token.map(hash).unwrap_or_default();
    match state.store.oauth2_app(id).await? {
        Some(app)
            if app.origin == AppOrigin::Registered
                && app
                    .registration_hash
                    .as_deref()
                    .is_some_and(|h| constant_time_eq(h.as_bytes(), presented.as_bytes())) =>
        {
            Ok(app)
        }
        _ => Err(RegistrationError::Unauthorized),
    }
}

/// `PUT /oauth2/clients/{id}` (RFC 7592 §2.2): the metadata replaced, the secret kept.
pub async fn update(
    state: &AppState,
    id: &str,
    access_token: Option<&str>,
    metadata: &ClientMetadata,
) -> Result<(OAuth2App, Echo), RegistrationError> {
    let mut app = authorized(state, id, access_token).await?;
    let (client_type, redirect_uris, echo) = checked(state, metadata)?;
    if client_type != app.client_type {
        return Err(RegistrationError::InvalidMetadata(
            "token_endpoint_auth_method: a client cannot change between public and confidential; register again".to_owned(),
        ));
    }
    let (name, icon) = name_and_icon(metadata);
    app.name = name;
    app.icon = icon;
    app.redirect_uris = redirect_uris;
    app.default_scopes = scopes::claimed_defaults(metadata.scope.as_deref());
    app.updated_at = now();
    state.store.put_oauth2_app(&app).await?;
    Ok((app, echo))
}

/// `DELETE /oauth2/clients/{id}` (RFC 7592 §2.3): the app and its tokens end.
pub async fn delete(
    state: &AppState,
    id: &str,
    access_token: Option<&str>,
) -> Result<(), RegistrationError> {
    authorized(state, id, access_token).await?;
    state.store.delete_oauth2_app(id).await?;
    tracing::info!(target: "extauth::audit", event = "oauth2.app.unregistered", app = %id, "a client deleted its registration");
    Ok(())
}

/// Deletes self-registered apps that never completed a grant within a day, and copies of
/// metadata documents never used and stale for a day; how many.
pub async fn expire_unused(state: &AppState) -> Result<u64, Failure> {
    let cutoff = now() - UNUSED_LIFETIME_S;
    let mut deleted = 0;
    for app in state.store.oauth2_apps().await? {
        let unused = !app.granted
            && match app.origin {
                AppOrigin::Admin => false,
                AppOrigin::Registered => app.created_at < cutoff,
                AppOrigin::MetadataDocument => app.updated_at < cutoff,
            };
        if unused && state.store.delete_oauth2_app(&app.id).await? {
            deleted += 1;
        }
    }
    if deleted > 0 {
        tracing::info!(target: "extauth::audit", event = "oauth2.app.expired", count = deleted, "deleted self-registered apps that were never used");
    }
    Ok(deleted)
}
