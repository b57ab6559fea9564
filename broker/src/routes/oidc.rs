//! OIDC sign-in routes: `/api/v2/users/oidc/callback` (start and finish), the back-channel
//! logout receiver, and the sign-in methods the login page shows.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use extauth_providers::constant_time_eq;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::now;
use crate::error::{ApiError, PageError};
use crate::identity::{self, cookie_header};
use crate::login_flow;
use crate::oidc::{Identity, Oidc};
use crate::random;
use crate::redirects::safe_redirect;
use crate::state::AppState;
use crate::store::{OidcIdentity, OidcSession, StoreError, User};

/// The cookie that binds a sign-in in progress to its browser.
const SIGNIN: &str = "extauth_signin";

fn configured(state: &AppState) -> Result<&Oidc, ApiError> {
    state.oidc.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "OIDC sign-in is not configured.",
            "set CODER_OIDC_ISSUER_URL, CODER_OIDC_CLIENT_ID and CODER_OIDC_CLIENT_SECRET",
        )
    })
}

/// The redirect URI to register at the IdP.
pub fn redirect_uri(state: &AppState) -> String {
    state
        .settings
        .access_url
        .join("api/v2/users/oidc/callback")
        .to_string()
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    redirect: Option<String>,
}

fn with_cookies(mut response: Response, cookies: Vec<String>) -> Response {
    for c in cookies {
        if let Ok(v) = c.parse() {
            response
                .headers_mut()
                .append(axum::http::header::SET_COOKIE, v);
        }
    }
    response
}

/// `GET /api/v2/users/oidc/callback`: without `code`, sends the browser to the IdP; with it,
/// finishes the sign-in.
pub async fn callback_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, PageError> {
    let oidc = configured(&state)?;
    if let Some(error) = q.error {
        // The IdP's words (and anyone's who crafted this link) go to the log, not the page.
        tracing::warn!(
            error = %error.escape_debug(),
            description = %q.error_description.unwrap_or_default().escape_debug(),
            "the identity provider refused the sign-in"
        );
        return Err(ApiError::bad_request(
            format!(
                "The identity provider refused the sign-in ({}).",
                login_flow::error_code(&error)
            ),
            "sign in again, or ask an admin to look at the broker's log",
        )
        .into());
    }
    let discovery = oidc.discovery().await?;
    let Some(code) = q.code else {
        let pkce = discovery.code_challenge_methods_supported.is_empty()
            || discovery
                .code_challenge_methods_supported
                .iter()
                .any(|m| m == "S256");
        let redirect = q
            .redirect
            .as_deref()
            .and_then(safe_redirect)
            .unwrap_or_default();
        // What binds the sign-in to this browser: only its hash is stored.
        let binding = random::hex_token::<32>();
        let started = login_flow::start(
            &state,
            login_flow::Purpose::SignIn,
            &identity::hash(&binding),
            "",
            pkce,
            &redirect,
        )
        .await?;
        let mut url = url::Url::parse(&discovery.authorization_endpoint).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "The IdP's authorization endpoint is not a URL.",
                e.to_string(),
            )
        })?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &oidc.settings.client_id)
                .append_pair("redirect_uri", &redirect_uri(&state))
                .append_pair("scope", &oidc.settings.scopes.join(" "))
                .append_pair("state", &started.state)
                .append_pair("nonce", &started.nonce);
            if let Some(challenge) = &started.challenge {
                query
                    .append_pair("code_challenge", challenge)
                    .append_pair("code_challenge_method", "S256");
            }
            for (k, v) in &oidc.settings.auth_url_params {
                query.append_pair(k, v);
            }
        }
        let age = Some(login_flow::LIFETIME_MS / 1000);
        return Ok(with_cookies(
            Redirect::to(url.as_str()).into_response(),
            vec![cookie_header(&state, SIGNIN, &binding, age)],
        ));
    };

    let binding = identity::site_cookie(&state, &headers, SIGNIN).unwrap_or_default();
    let finished = login_flow::finish(
        &state,
        login_flow::Purpose::SignIn,
        &identity::hash(binding),
        "",
        q.state.as_deref().unwrap_or_default(),
    )
    .await?;
    let tokens = oidc
        .exchange(
            &discovery,
            &code,
            &redirect_uri(&state),
            finished.verifier.as_deref(),
        )
        .await?;
    let id_token = tokens
        .get("id_token")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::bad_request(
                "The identity provider sent no ID token.",
                "is the openid scope requested?",
            )
        })?;
    let claims = oidc.verify(id_token, true).await?;
    let nonce = finished.nonce.as_str();
    let token_nonce = claims
        .get("nonce")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if nonce.is_empty() || !constant_time_eq(nonce.as_bytes(), token_nonce.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "The ID token's nonce does not match this sign-in.",
            "start signing in again",
        )
        .into());
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let access_token = tokens
        .get("access_token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    crate::oidc::check_at_hash(id_token, &claims, access_token)?;
    let userinfo = if access_token.is_empty() {
        serde_json::Map::new()
    } else {
        oidc.userinfo(&discovery, access_token, &sub).await?
    };
    // Kept for troubleshooting sign-in rules (`GET /api/v2/users/<user>/oidc-claims`), also
    // when a known user is refused: that is when an admin needs to see them.
    let mut merged = claims.clone();
    merged.extend(userinfo.clone());
    let keep = |user_id: String| crate::store::OidcClaims {
        user_id,
        claims: Value::Object(merged.clone()).to_string(),
        updated_at: now(),
    };
    let who = match crate::oidc::identity(&oidc.settings, &claims, &userinfo) {
        Ok(who) => who,
        Err(refused) => {
            let issuer = claims
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or(&oidc.settings.issuer);
            if let Ok(Some(known)) = state.store.user_by_oidc(issuer, &sub).await {
                let _ = state.store.put_oidc_claims(&keep(known.id)).await;
            }
            return Err(refused.into());
        }
    };
    let user = provision(&state, oidc, &who).await?;
    state.store.put_oidc_claims(&keep(user.id.clone())).await?;
    let seal = |field: &str, value: &str| {
        state.keys.seal(
            &crate::oidc::session_purpose(&user.id, field),
            value.as_bytes(),
        )
    };
    let session = OidcSession {
        sid: who.sid.clone(),
        id_token: Some(seal("id_token", id_token)),
        refresh_token: tokens
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(|r| seal("refresh_token", r)),
    };
    let session_cookie = identity::start_session_with(&state, &user, Some(session)).await?;
    tracing::info!(
        user = user.id,
        username = user.username,
        "signed in with OIDC"
    );
    let to =
        safe_redirect(&finished.redirect).unwrap_or_else(|| state.settings.base_path().to_owned());
    Ok(with_cookies(
        Redirect::to(&to).into_response(),
        vec![session_cookie, cookie_header(&state, SIGNIN, "", Some(0))],
    ))
}

/// The user of an identity: found by `iss`+`sub` (profile refreshed), or created when sign-ups
/// are open or nobody exists yet (the first user is an admin).
async fn provision(state: &AppState, oidc: &Oidc, who: &Identity) -> Result<User, ApiError> {
    if let Some(user) = state.store.user_by_oidc(&who.issuer, &who.subject).await? {
        let updated = User {
            email: who.email.clone(),
            name: who.name.clone(),
            ..user
        };
        state.store.update_user(&updated).await?;
        return Ok(updated);
    }
    let first = state.store.count_users().await? == 0
        || (state.settings.dev
            && state.store.count_users().await? == 1
            && state.store.user_by_username("admin").await?.is_some());
    if !oidc.settings.allow_signups && !first {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            oidc.settings
                .signups_disabled_text
                .clone()
                .unwrap_or_else(|| {
                    "Sign-ups are disabled: ask an administrator to create your account.".to_owned()
                }),
            "",
        ));
    }
    for attempt in 0..20 {
        let username = if attempt == 0 {
            who.username.clone()
        } else {
            format!("{}-{}", who.username, attempt + 1)
        };
        let user = User {
            id: random::hex_token::<16>(),
            username,
            email: who.email.clone(),
            name: who.name.clone(),
            is_admin: first,
            oidc: Some(OidcIdentity {
                issuer: who.issuer.clone(),
                subject: who.subject.clone(),
            }),
            created_at: now(),
        };
        match state.store.create_user(&user).await {
            Ok(()) => {
                tracing::info!(
                    user = user.id,
                    username = user.username,
                    admin = user.is_admin,
                    "user created from OIDC sign-in"
                );
                return Ok(user);
            }
            Err(StoreError::Conflict("username")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "No free username for this account.",
        who.username.clone(),
    ))
}

#[derive(Deserialize)]
pub struct BackchannelForm {
    logout_token: String,
}

const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// `POST /api/v2/users/oidc/backchannel-logout` (OpenID Back-Channel Logout 1.0): validates the
/// `logout_token` and ends the sessions it names (`sid`, else every session of `sub`).
pub async fn backchannel_post(
    State(state): State<AppState>,
    axum::Form(form): axum::Form<BackchannelForm>,
) -> Response {
    let invalid = |detail: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request", "error_description": detail})),
        )
            .into_response()
    };
    let Some(oidc) = state.oidc.as_ref() else {
        return invalid("OIDC is not configured");
    };
    let claims = match oidc.verify(&form.logout_token, false).await {
        Ok(c) => c,
        Err(e) => return invalid(&format!("{} {}", e.message, e.detail)),
    };
    let has_event = claims
        .get("events")
        .and_then(Value::as_object)
        .is_some_and(|e| e.contains_key(LOGOUT_EVENT));
    if !has_event || claims.contains_key("nonce") || claims.get("iat").is_none() {
        return invalid("not a logout token (events, iat required; nonce forbidden)");
    }
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let sid = claims.get("sid").and_then(Value::as_str);
    let Some(sub) = claims.get("sub").and_then(Value::as_str) else {
        return invalid("logout tokens without sub are not supported");
    };
    let user = match state.store.user_by_oidc(issuer, sub).await {
        Ok(Some(user)) => user,
        Ok(None) => return StatusCode::OK.into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let ended = match sid {
        Some(sid) => state.store.delete_sessions_by_sid(&user.id, sid).await,
        None => state.store.delete_user_sessions(&user.id).await,
    };
    match ended {
        Ok(n) => {
            tracing::info!(user = user.id, sessions = n, "back-channel logout");
            (
                StatusCode::OK,
                [(axum::http::header::CACHE_CONTROL, "no-store")],
            )
                .into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /api/v2/users/authmethods`: how the sign-in page offers to sign in.
pub async fn authmethods_get(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "dev": state.settings.dev,
        "oidc": state.oidc.as_ref().map_or(json!({"enabled": false}), |o| json!({
            "enabled": true,
            "signInText": o.settings.sign_in_text,
            "iconUrl": o.settings.icon_url.clone().unwrap_or_default(),
        })),
    }))
}
