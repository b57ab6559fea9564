//! OIDC sign-in routes: `/api/v2/users/oidc/callback` (start and finish), the back-channel
//! logout receiver, and the sign-in methods the login page shows.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, PageError};
use crate::failure::Failure;
use crate::identity::{self, cookie_header};
use crate::oidc::Oidc;
use crate::redirects::safe_redirect;
use crate::state::AppState;
use crate::{login_flow, sign_in};

/// The cookie that binds a sign-in in progress to its browser.
const SIGNIN: &str = "extauth_signin";

fn configured(state: &AppState) -> Result<&Oidc, Failure> {
    state.oidc.as_ref().ok_or(Failure::OidcOff)
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
    let Some(code) = q.code else {
        let redirect = q
            .redirect
            .as_deref()
            .and_then(safe_redirect)
            .unwrap_or_default();
        let (url, binding) = sign_in::start(&state, oidc, &redirect).await?;
        let age = Some(login_flow::LIFETIME_MS / 1000);
        return Ok(with_cookies(
            Redirect::to(url.as_str()).into_response(),
            vec![cookie_header(&state, SIGNIN, &binding, age)],
        ));
    };
    let binding = identity::site_cookie(&state, &headers, SIGNIN).unwrap_or_default();
    let returned_state = q.state.as_deref().unwrap_or_default();
    let finished = sign_in::finish(&state, oidc, binding, &code, returned_state).await;
    let outcome = match &finished {
        Ok(_) => "signed_in",
        Err(crate::failure::Failure::IdpUnavailable { .. }) => "idp_unavailable",
        Err(_) => "refused",
    };
    metrics::counter!("extauth_oidc_sign_ins_total", "outcome" => outcome).increment(1);
    let signed_in = finished?;
    let to = signed_in
        .redirect
        .unwrap_or_else(|| state.settings.base_path().to_owned());
    Ok(with_cookies(
        Redirect::to(&to).into_response(),
        vec![
            signed_in.session_cookie,
            cookie_header(&state, SIGNIN, "", Some(0)),
        ],
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
        Err(e) => {
            let e = ApiError::from(e);
            return invalid(&format!("{} {}", e.message, e.detail));
        }
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
    match sign_in::end_sessions(&state, issuer, sub, sid).await {
        Ok(_) => (
            StatusCode::OK,
            [(axum::http::header::CACHE_CONTROL, "no-store")],
        )
            .into_response(),
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
