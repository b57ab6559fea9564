//! The authorization endpoint: the request checked in the order that keeps redirects safe
//! (client and redirect URI first: until both are trusted an error is shown here, never sent
//! anywhere), consent asked or remembered, and the code issued.

use serde::Deserialize;

use crate::clock::{now, now_millis};
use crate::failure::Failure;
use crate::identity::hash;
use crate::random;
use crate::state::AppState;
use crate::store::{ClientType, OAuth2App, OAuth2Code, OAuth2Grant, Session, User};

use super::OAuthError;
use super::apps::redirect_matches;
use super::client_ids;
use super::resources::{self, Audience};
use super::scopes::{self, Scopes};
use super::tokens::issuer;

/// How long a code may wait for its redemption (RFC 6749 §4.1.2 recommends at most 10 min;
/// the client redeems within seconds).
const CODE_LIFETIME_MS: i64 = 60_000;

/// The parameters of an authorization request (query of the GET, hidden fields of the
/// consent form). Unknown parameters are ignored (RFC 6749 §3.1).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizeRequest {
    pub client_id: Option<String>,
    pub response_type: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub nonce: Option<String>,
    pub resource: Option<String>,
}

/// A request that checked out.
#[derive(Debug, Clone)]
pub struct Valid {
    /// The app.
    pub app: OAuth2App,
    /// Where the answer goes.
    pub redirect_uri: String,
    /// What will be granted.
    pub scopes: Scopes,
    /// Echoed exactly.
    pub state: Option<String>,
    challenge: Option<String>,
    nonce: Option<String>,
    /// What the tokens will be for.
    pub audience: Audience,
}

/// A refused request.
#[derive(Debug)]
pub enum Refused {
    /// The client or redirect URI cannot be trusted: said on this site's page, sent nowhere.
    Here(String),
    /// Sent back to the client's (validated) redirect URI.
    Back(String),
}

/// The redirect URI with `params`, `state` and `iss` (RFC 9207) added to its query.
fn back(redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>, iss: &str) -> String {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return redirect_uri.to_owned();
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", iss);
    }
    url.to_string()
}

/// The redirect carrying `error` to a validated redirect URI.
fn error_back(
    state: &AppState,
    redirect_uri: &str,
    client_state: Option<&str>,
    error: &OAuthError,
) -> String {
    let description = error.to_string();
    back(
        redirect_uri,
        &[("error", error.code()), ("error_description", &description)],
        client_state,
        &issuer(state),
    )
}

/// PKCE values are 43 to 128 unreserved characters (RFC 7636 §4.1).
pub fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Checks a request.
pub async fn validate(state: &AppState, request: &AuthorizeRequest) -> Result<Valid, Refused> {
    let Some(client_id) = request.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return Err(Refused::Here(
            "The request names no client (client_id).".to_owned(),
        ));
    };
    let app = match client_ids::resolve(state, client_id).await {
        Ok(Some(app)) => app,
        Ok(None) => {
            return Err(Refused::Here(format!(
                "No app is registered with client_id {client_id:?}."
            )));
        }
        Err(OAuthError::Server(e)) => {
            tracing::error!(error = %e, "reading an app failed");
            return Err(Refused::Here(
                "The app cannot be read now; try again.".to_owned(),
            ));
        }
        Err(refusal) => return Err(Refused::Here(format!("{refusal}."))),
    };
    if app.redirect_uris.is_empty() {
        return Err(Refused::Here(format!(
            "{} has no redirect URI: it cannot use the browser flow.",
            app.name
        )));
    }
    let redirect_uri = match request.redirect_uri.as_deref() {
        Some(uri) if app.redirect_uris.iter().any(|r| redirect_matches(r, uri)) => uri.to_owned(),
        Some(_) => {
            return Err(Refused::Here(format!(
                "The redirect_uri is not one registered for {}; its admin must add it exactly.",
                app.name
            )));
        }
        None => app.redirect_uris.first().cloned().unwrap_or_default(),
    };
    let client_state = request.state.clone();
    let refuse = |error: OAuthError| {
        Err(Refused::Back(error_back(
            state,
            &redirect_uri,
            client_state.as_deref(),
            &error,
        )))
    };
    if request.response_type.as_deref() != Some("code") {
        return refuse(OAuthError::UnsupportedResponseType(
            "only response_type=code is supported".to_owned(),
        ));
    }
    match request.code_challenge_method.as_deref() {
        None | Some("S256") => {}
        Some("plain") => {
            return refuse(OAuthError::InvalidRequest(
                "code_challenge_method plain is not accepted; use S256".to_owned(),
            ));
        }
        Some(_) => {
            return refuse(OAuthError::InvalidRequest(
                "code_challenge_method must be S256".to_owned(),
            ));
        }
    }
    let challenge = request.code_challenge.clone().filter(|c| !c.is_empty());
    match &challenge {
        Some(c) if !pkce_shaped(c) => {
            return refuse(OAuthError::InvalidRequest(
                "code_challenge must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~".to_owned(),
            ));
        }
        None if app.client_type == ClientType::Public => {
            return refuse(OAuthError::InvalidRequest(
                "a public client must send a PKCE code_challenge (S256)".to_owned(),
            ));
        }
        None if state.settings.oauth2.require_pkce => {
            return refuse(OAuthError::InvalidRequest(
                "this server requires PKCE: send a code_challenge (S256)".to_owned(),
            ));
        }
        _ => {}
    }
    let resource = request.resource.as_deref().filter(|r| !r.is_empty());
    let audience = match resources::target(state, &app, resource).await {
        Ok(audience) => audience,
        Err(OAuthError::Server(e)) => {
            tracing::error!(error = %e, "reading the protected resources failed");
            return Err(Refused::Here(
                "The request cannot be checked now; try again.".to_owned(),
            ));
        }
        Err(refusal) => return refuse(refusal),
    };
    let requested = match request.scope.as_deref() {
        None | Some("") => {
            let mut defaults = scopes::set(&app.default_scopes);
            defaults.extend(audience.scopes.iter().cloned());
            defaults
        }
        Some(text) => match scopes::parse_with(text, &audience.scopes) {
            Ok(s) => s,
            Err(bad) => return refuse(OAuthError::InvalidScope(format!("unknown scope {bad:?}"))),
        },
    };
    let mut allowed = scopes::set(&app.scopes);
    allowed.extend(audience.scopes.iter().cloned());
    if let Some(bad) = requested.difference(&allowed).next() {
        return refuse(OAuthError::InvalidScope(format!(
            "this app may not ask for {bad:?}"
        )));
    }
    if requested.is_empty() {
        return refuse(OAuthError::InvalidScope("no scope to grant".to_owned()));
    }
    let requested = with_offline_access(requested, &app, &audience);
    Ok(Valid {
        app,
        redirect_uri,
        scopes: requested,
        state: client_state,
        challenge,
        nonce: request.nonce.clone().filter(|n| !n.is_empty()),
        audience,
    })
}

/// A token for a registered resource comes with a refresh token (MCP clients ask only for the
/// resource's scopes, and an MCP session outlives an access token): `offline_access` is added,
/// and shown on the consent page, when the app may have it.
pub fn with_offline_access(mut requested: Scopes, app: &OAuth2App, audience: &Audience) -> Scopes {
    if audience.name.is_some() && app.scopes.iter().any(|s| s == "offline_access") {
        requested.insert("offline_access".to_owned());
    }
    requested
}

/// Whether the user consented before to these scopes (or more) for this app.
pub async fn remembered(state: &AppState, user: &User, valid: &Valid) -> Result<bool, Failure> {
    Ok(state
        .store
        .oauth2_grant(&user.id, &valid.app.id)
        .await?
        .is_some_and(|g| valid.scopes.is_subset(&scopes::set(&g.scopes))))
}

/// The user allowed: consent remembered, a code issued; the redirect that carries it.
pub async fn approve(
    state: &AppState,
    user: &User,
    session: &Session,
    valid: &Valid,
) -> Result<String, Failure> {
    let previous = state.store.oauth2_grant(&user.id, &valid.app.id).await?;
    let mut granted = previous
        .as_ref()
        .map(|g| scopes::set(&g.scopes))
        .unwrap_or_default();
    if !valid.scopes.is_subset(&granted) {
        granted.extend(valid.scopes.iter().cloned());
        state
            .store
            .put_oauth2_grant(&OAuth2Grant {
                user_id: user.id.clone(),
                app_id: valid.app.id.clone(),
                scopes: granted.into_iter().collect(),
                created_at: previous.as_ref().map_or_else(now, |g| g.created_at),
                updated_at: now(),
            })
            .await?;
    }
    let code = format!("extauth_code_{}", random::hex_token::<32>());
    state
        .store
        .put_oauth2_code(&OAuth2Code {
            code_hash: hash(&code),
            app_id: valid.app.id.clone(),
            user_id: user.id.clone(),
            redirect_uri: valid.redirect_uri.clone(),
            scopes: valid.scopes.iter().cloned().collect(),
            challenge: valid.challenge.clone(),
            nonce: valid.nonce.clone(),
            resource: valid.audience.url.clone(),
            auth_time: session.created_at,
            family_id: random::hex_token::<16>(),
            used: false,
            expires_ms: now_millis().saturating_add(CODE_LIFETIME_MS),
        })
        .await?;
    tracing::info!(target: "extauth::audit", event = "oauth2.authorize", app = %valid.app.id, user = %user.id, scope = %scopes::join(&valid.scopes), outcome = "code issued", "authorized an app");
    Ok(back(
        &valid.redirect_uri,
        &[("code", &code)],
        valid.state.as_deref(),
        &issuer(state),
    ))
}

/// The user said no: `access_denied` back to the app.
pub fn deny(state: &AppState, user: &User, valid: &Valid) -> String {
    tracing::info!(target: "extauth::audit", event = "oauth2.authorize", app = %valid.app.id, user = %user.id, outcome = "denied", "the user denied an app");
    error_back(
        state,
        &valid.redirect_uri,
        valid.state.as_deref(),
        &OAuthError::AccessDenied,
    )
}
