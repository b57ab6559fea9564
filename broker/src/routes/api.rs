//! The user API (`/api/v2/…`), in Coder's JSON shapes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use extauth_providers::ProviderConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::accounts::{self, TokenKind, TokenRecord, User};
use crate::clock::now;
use crate::error::ApiError;
use crate::identity::Caller;
use crate::links;
use crate::random;
use crate::state::AppState;

pub(super) fn rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// `me`, a username or a user id; others than the caller only for admins.
pub(super) async fn target_user(
    state: &AppState,
    caller: &Caller,
    user: &str,
) -> Result<User, ApiError> {
    if user == "me" || user == caller.user.username || user == caller.user.id {
        return Ok(caller.user.clone());
    }
    if !caller.user.is_admin {
        return Err(ApiError::forbidden("Only admins can act for other users."));
    }
    accounts::find_user(state, user)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No user {user:?}."), ""))
}

/// Prometheus metrics.
pub async fn metrics_get(State(state): State<AppState>) -> Response {
    // Readiness as a series, checked at each scrape: a replica whose store is gone still
    // answers here, and the alert "readiness lost" needs to see it.
    let ready = accounts::store_reachable(&state).await.is_ok();
    metrics::gauge!("extauth_ready").set(if ready { 1.0 } else { 0.0 });
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match accounts::store_reachable(&state).await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Store unreachable.",
            e.to_string(),
        )
        .into_response(),
    }
}

#[derive(Serialize)]
struct UserBody {
    id: String,
    username: String,
    email: String,
    name: String,
    is_admin: bool,
}

impl From<&User> for UserBody {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            is_admin: u.is_admin,
        }
    }
}

pub async fn user_get(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = target_user(&state, &caller, &user).await?;
    Ok(Json(json!(UserBody::from(&user))))
}

/// `GET /api/v2/users/<user>/oidc-claims` (and Coder's `/api/v2/users/oidc-claims` for the
/// caller): what the IdP said at the user's latest OIDC sign-in, to see why a sign-in rule
/// (email domain, groups, `email_verified`) matched or not. Others' only for admins.
pub async fn oidc_claims_get(
    State(state): State<AppState>,
    caller: Caller,
    user: Option<Path<String>>,
) -> Result<Json<Value>, ApiError> {
    let user = match user {
        Some(Path(user)) => target_user(&state, &caller, &user).await?,
        None => caller.user.clone(),
    };
    let Some(kept) = accounts::oidc_claims(&state, &user.id).await? else {
        return Err(ApiError::not_found(
            format!("No OIDC sign-in recorded for {:?}.", user.username),
            "claims are kept from the next sign-in with the identity provider",
        ));
    };
    let claims: Value = serde_json::from_str(&kept.claims).map_err(ApiError::internal)?;
    Ok(Json(json!({
        "user_id": user.id,
        "username": user.username,
        "claims": claims,
        "signed_in_at": rfc3339(kept.updated_at),
    })))
}

#[derive(Deserialize)]
pub struct NewUser {
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
}

/// Admins create users (e.g. a provisioner before it mints their workspace tokens).
pub async fn user_create_post(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !caller.user.is_admin {
        return Err(ApiError::forbidden("Only admins can create users."));
    }
    let valid = !body.username.is_empty()
        && body.username.len() <= 64
        && body
            .username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid || body.username == "me" {
        return Err(ApiError::bad_request(
            "Invalid username.",
            "use 1 to 64 letters, digits, '-', '_' or '.', and not \"me\"",
        ));
    }
    let user = User {
        id: random::hex_token::<16>(),
        username: body.username,
        email: body.email,
        name: body.name,
        is_admin: false,
        oidc: None,
        created_at: now(),
    };
    accounts::create_user(&state, &user).await?;
    Ok((StatusCode::CREATED, Json(json!(UserBody::from(&user)))))
}

#[derive(Deserialize)]
pub struct NewToken {
    name: String,
    /// Workspace tokens only: provider IDs it may use.
    #[serde(default)]
    providers: Option<Vec<String>>,
    /// `30d`, `12h`, … or absent for no expiry.
    #[serde(default)]
    lifetime: Option<String>,
}

#[derive(Serialize)]
struct TokenBody {
    id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    providers: Option<Vec<String>>,
    created_at: Option<String>,
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn token_body(record: &TokenRecord, token: Option<String>) -> TokenBody {
    TokenBody {
        id: record.id.clone(),
        name: record.name.clone(),
        providers: record.providers.clone(),
        created_at: rfc3339(record.created_at),
        expires_at: record.expires_at.and_then(rfc3339),
        token,
    }
}

/// Creates a token for `user_id`, validating the request. Shared by API and pages.
async fn list_tokens(
    state: &AppState,
    caller: &Caller,
    user: &str,
    kind: TokenKind,
) -> Result<Json<Value>, ApiError> {
    let user = target_user(state, caller, user).await?;
    let tokens = accounts::tokens_of(state, &user.id, kind).await?;
    Ok(Json(json!(
        tokens
            .iter()
            .map(|t| token_body(t, None))
            .collect::<Vec<_>>()
    )))
}

async fn post_token(
    state: &AppState,
    caller: &Caller,
    user: &str,
    kind: TokenKind,
    body: NewToken,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = target_user(state, caller, user).await?;
    let minted = accounts::create_token(
        state,
        kind,
        &user.id,
        &body.name,
        body.providers,
        body.lifetime.as_deref(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!(token_body(&minted.record, Some(minted.token)))),
    ))
}

async fn delete_token(
    state: &AppState,
    caller: &Caller,
    user: &str,
    kind: TokenKind,
    id: &str,
) -> Result<StatusCode, ApiError> {
    let user = target_user(state, caller, user).await?;
    if accounts::revoke_token(state, &user.id, kind, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("No token {id:?}."), ""))
    }
}

pub async fn workspace_tokens_get(
    State(s): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    list_tokens(&s, &c, &user, TokenKind::Workspace).await
}

pub async fn workspace_tokens_post(
    State(s): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
    Json(body): Json<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    post_token(&s, &c, &user, TokenKind::Workspace, body).await
}

pub async fn workspace_token_delete(
    State(s): State<AppState>,
    c: Caller,
    Path((user, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_token(&s, &c, &user, TokenKind::Workspace, &id).await
}

/// The setup of a workspace token as the API shows it.
pub(super) fn setup_json(state: &AppState, setup: &crate::workspace_setup::Setup) -> Value {
    let mut body = json!(token_body(&setup.token, None));
    body["required_providers"] = json!(
        setup
            .required
            .iter()
            .map(|r| json!({"id": r.id, "linked": r.linked, "url": r.link_url}))
            .collect::<Vec<_>>()
    );
    body["ready"] = json!(setup.ready());
    body["setup_url"] = json!(crate::workspace_setup::page_url(state, &setup.token.id));
    body
}

/// `GET /api/v2/users/{user}/workspace-tokens/{id}`: the token and its setup.
pub async fn workspace_token_get(
    State(s): State<AppState>,
    c: Caller,
    Path((user, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let user = target_user(&s, &c, &user).await?;
    let setup = crate::workspace_setup::of(&s, &user.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such workspace token.", ""))?;
    Ok(Json(setup_json(&s, &setup)))
}

pub async fn api_tokens_get(
    State(s): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    list_tokens(&s, &c, &user, TokenKind::Api).await
}

pub async fn api_tokens_post(
    State(s): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
    Json(body): Json<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    post_token(&s, &c, &user, TokenKind::Api, body).await
}

pub async fn api_token_delete(
    State(s): State<AppState>,
    c: Caller,
    Path((user, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_token(&s, &c, &user, TokenKind::Api, &id).await
}

/// `GET /api/v2/external-auth`: providers and the caller's links.
pub async fn external_auth_list_get(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let providers: Vec<Value> = state
        .providers
        .iter()
        .map(|p| {
            json!({
                "id": p.id.as_str(),
                "type": p.provider_type.as_str(),
                "device": p.device_flow,
                "display_name": p.display_name,
                "display_icon": p.display_icon,
                "allow_refresh": !p.no_refresh,
                "allow_validate": p.validate_url.is_some(),
                "supports_revocation": p.revoke_url.is_some(),
                "code_challenge_methods_supported": p.pkce.as_list(),
            })
        })
        .collect();
    let links: Vec<Value> = links::refreshed_links_of_user(&state, &caller.user.id)
        .await?
        .iter()
        .map(|link| {
            let judged = links::link_state(state.providers.get(&link.provider_id), link);
            json!({
                "provider_id": link.provider_id,
                "account": link.account,
                "default": link.is_default,
                "owners": link.owners,
                "created_at": rfc3339(link.created_at),
                "updated_at": rfc3339(link.updated_at),
                "has_refresh_token": link.refresh_token.is_some(),
                "expires": link.expires_at.and_then(rfc3339),
                "authenticated": judged.authenticated,
                "validate_error": judged.error.unwrap_or_default(),
            })
        })
        .collect();
    let pending: Vec<Value> = state
        .store
        .pending_revocations_of_user(&caller.user.id)
        .await?
        .iter()
        .map(|p| {
            json!({
                "provider_id": p.provider_id,
                "attempts": p.attempts,
                "last_error": p.last_error,
                "next_attempt_at": rfc3339(p.next_attempt_at),
                "created_at": rfc3339(p.created_at),
            })
        })
        .collect();
    Ok(Json(
        json!({ "providers": providers, "links": links, "pending_revocations": pending }),
    ))
}

/// `GET /api/v2/external-auth/<id>`: whether the caller's link works now (refreshing if needed,
/// then validating with the provider when it has a validation URL).
pub async fn external_auth_get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let provider = links::provider(&state, &id)?;
    let (authenticated, user) = match links::check(&state, &caller.user.id, provider).await? {
        links::Check::NotWorking => (false, Value::Null),
        links::Check::Works(user) => (true, github_user(provider, user)),
    };
    let accounts: Vec<Value> = links::accounts_of(&state, &caller.user.id, &id)
        .await?
        .iter()
        .map(|link| {
            json!({
                "account": link.account,
                "default": link.is_default,
                "owners": link.owners,
                "expires": link.expires_at.and_then(rfc3339),
                "has_refresh_token": link.refresh_token.is_some(),
                "refresh_token_expires": link.refresh_expires_at.and_then(rfc3339),
            })
        })
        .collect();
    let installed_for = match links::notes(&state, &caller.user.id, provider).await? {
        Some(notes) => notes.installed_for.unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(Json(json!({
        "authenticated": authenticated,
        "device": provider.device_flow,
        "display_name": provider.display_name,
        "display_icon": provider.display_icon,
        "supports_revocation": provider.revoke_url.is_some(),
        "user": user,
        "app_installable": crate::app_installations::applies(provider),
        "installations": installed_for
            .iter()
            .map(|login| json!({"account": {"login": login}}))
            .collect::<Vec<_>>(),
        "app_install_url": provider.app_install_url.as_ref().map(url::Url::as_str).unwrap_or_default(),
        "accounts": accounts,
    })))
}

/// What may change about one linked account.
#[derive(Deserialize)]
pub struct AccountChange {
    /// `true`: make it the default account.
    default: Option<bool>,
    /// Repository owners routed to it (names or `prefix*` globs); replaces the list.
    owners: Option<Vec<String>>,
}

/// `PUT /api/v2/external-auth/<id>/accounts/<account>` (`-` for the unnamed account): make it
/// the default, or route repository owners to it.
pub async fn external_auth_account_put(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, account)): Path<(String, String)>,
    Json(change): Json<AccountChange>,
) -> Result<StatusCode, ApiError> {
    links::provider(&state, &id)?;
    let account = links::account_from_path(&account);
    let not_linked = || ApiError::not_found(format!("You have no {id:?} account {account:?}."), "");
    if let Some(owners) = change.owners {
        if let Some(bad) = owners
            .iter()
            .find(|o| o.is_empty() || o.contains(['/', ' ']) || o.matches('*').count() > 1)
        {
            return Err(ApiError::bad_request(
                format!("{bad:?} is not a repository owner."),
                "give owner names such as acme, or one glob such as acme-*",
            ));
        }
        if !links::set_account_owners(&state, &caller.user.id, &id, account, owners).await? {
            return Err(not_linked());
        }
    }
    if change.default == Some(true)
        && !links::set_default_account(&state, &caller.user.id, &id, account).await?
    {
        return Err(not_linked());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v2/external-auth/<id>/accounts/<account>`: unlink one account and revoke its
/// tokens.
pub async fn external_auth_account_delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, account)): Path<(String, String)>,
) -> Result<Json<links::Unlinked>, ApiError> {
    links::provider(&state, &id)?;
    let account = links::account_from_path(&account);
    match links::unlink_account(&state, &caller.user.id, &id, account).await? {
        Some(outcome) => Ok(Json(outcome)),
        None => Err(ApiError::not_found(
            format!("You have no {id:?} account {account:?}."),
            "",
        )),
    }
}

/// The user document of a GitHub validation answer, in Coder's shape.
fn github_user(provider: &ProviderConfig, user: Option<Value>) -> Value {
    match (
        provider.provider_type == extauth_providers::ProviderType::Github,
        user,
    ) {
        (true, Some(u)) => json!({
            "id": u.get("id"),
            "login": u.get("login"),
            "avatar_url": u.get("avatar_url"),
            "profile_url": u.get("html_url"),
            "name": u.get("name"),
        }),
        _ => Value::Null,
    }
}

/// `DELETE /api/v2/external-auth/<id>`: unlink and revoke at the provider.
pub async fn external_auth_delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<links::Unlinked>, ApiError> {
    match links::unlink(&state, &caller.user.id, &id).await? {
        Some(outcome) => Ok(Json(outcome)),
        None => Err(ApiError::not_found(
            format!("You have no link to {id:?}."),
            "",
        )),
    }
}

fn device_provider<'a>(state: &'a AppState, id: &str) -> Result<&'a ProviderConfig, ApiError> {
    let provider = links::provider(state, id)?;
    if !provider.device_flow {
        return Err(ApiError::bad_request(
            "This provider does not use the device flow.",
            format!("set CODER_EXTERNAL_AUTH_<N>_DEVICE_FLOW=true for {id:?} to use it"),
        ));
    }
    Ok(provider)
}

/// `GET /api/v2/external-auth/<id>/device`: start a device flow.
pub async fn device_get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let provider = device_provider(&state, &id)?;
    let flow = crate::device::begin(&state, &caller.user.id, provider).await?;
    Ok(Json(json!(flow)))
}

#[derive(Deserialize)]
pub struct DevicePoll {
    device_code: String,
}

/// `POST /api/v2/external-auth/<id>/device`: poll once; 204 once linked, else 400 with the RFC
/// 8628 code as `detail` (`authorization_pending`, `slow_down`, `expired_token`, `access_denied`).
pub async fn device_post(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<DevicePoll>,
) -> Result<StatusCode, ApiError> {
    let provider = device_provider(&state, &id)?;
    crate::device::poll_once(&state, &caller.user.id, provider, &body.device_code).await?;
    Ok(StatusCode::NO_CONTENT)
}
