//! Signing in with OIDC: the start at the IdP (state, nonce and PKCE kept by `login_flow`,
//! bound to the browser), the finish (code exchange, ID token checks, the sign-in rules, the
//! user found or provisioned — the first one an admin —, a session), back-channel logout, and
//! the IdP's end-session URL for signing out.

use extauth_providers::constant_time_eq;
use serde_json::Value;
use url::Url;

use crate::clock::now;
use crate::failure::{Failure, IdpPart};
use crate::identity;
use crate::login_flow;
use crate::oidc::{Identity, Oidc};
use crate::random;
use crate::redirects::safe_redirect;
use crate::state::AppState;
use crate::store::{OidcIdentity, OidcSession, StoreError, User};

/// The redirect URI to register at the IdP.
pub fn redirect_uri(state: &AppState) -> String {
    state
        .settings
        .access_url
        .join("api/v2/users/oidc/callback")
        .to_string()
}

/// Starts signing in at the IdP: where to send the browser, and the value of the cookie that
/// binds the sign-in to it (only its hash is stored).
pub async fn start(
    state: &AppState,
    oidc: &Oidc,
    redirect: &str,
) -> Result<(Url, String), Failure> {
    let discovery = oidc.discovery().await?;
    let pkce = discovery.code_challenge_methods_supported.is_empty()
        || discovery
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256");
    // What binds the sign-in to this browser: only its hash is stored.
    let binding = random::hex_token::<32>();
    let started = login_flow::start(
        state,
        login_flow::Purpose::SignIn,
        &identity::hash(&binding),
        "",
        pkce,
        redirect,
    )
    .await?;
    let mut url = url::Url::parse(&oidc.settings.public(&discovery.authorization_endpoint))
        .map_err(|e| Failure::IdpUnavailable {
            what: IdpPart::AuthorizationEndpoint,
            detail: e.to_string(),
        })?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &oidc.settings.client_id)
            .append_pair("redirect_uri", &redirect_uri(state))
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
    Ok((url, binding))
}

/// A finished sign-in: the session cookie to set, and where to go (if the start said).
pub struct SignedIn {
    /// `Set-Cookie` of the new session.
    pub session_cookie: String,
    /// A path on this site.
    pub redirect: Option<String>,
}

/// Finishes a sign-in with the `code` and `state` the IdP sent back to the browser whose
/// binding cookie is `binding`: exchanges the code, verifies the ID token (signature, nonce,
/// `at_hash`), applies the sign-in rules, finds or creates the user, starts a session.
pub async fn finish(
    state: &AppState,
    oidc: &Oidc,
    binding: &str,
    code: &str,
    returned_state: &str,
) -> Result<SignedIn, Failure> {
    let discovery = oidc.discovery().await?;
    let finished = login_flow::finish(
        state,
        login_flow::Purpose::SignIn,
        &identity::hash(binding),
        "",
        returned_state,
    )
    .await?;
    let tokens = oidc
        .exchange(
            &discovery,
            code,
            &redirect_uri(state),
            finished.verifier.as_deref(),
        )
        .await?;
    let id_token = tokens
        .get("id_token")
        .and_then(Value::as_str)
        .ok_or(Failure::NoIdToken)?;
    let claims = oidc.verify(id_token, true).await?;
    let nonce = finished.nonce.as_str();
    let token_nonce = claims
        .get("nonce")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if nonce.is_empty() || !constant_time_eq(nonce.as_bytes(), token_nonce.as_bytes()) {
        return Err(Failure::NonceMismatch);
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
            return Err(refused);
        }
    };
    let user = provision(state, oidc, &who).await?;
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
    let session_cookie = identity::start_session_with(state, &user, Some(session)).await?;
    tracing::info!(
        user = user.id,
        username = user.username,
        "signed in with OIDC"
    );
    Ok(SignedIn {
        session_cookie,
        redirect: safe_redirect(&finished.redirect),
    })
}

/// The user of an identity: found by `iss`+`sub` (profile refreshed), or created when sign-ups
/// are open or nobody exists yet (the first user is an admin).
async fn provision(state: &AppState, oidc: &Oidc, who: &Identity) -> Result<User, Failure> {
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
        return Err(Failure::SignUpsDisabled {
            text: oidc.settings.signups_disabled_text.clone(),
        });
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
    Err(Failure::NoFreeUsername(who.username.clone()))
}

/// Ends the sessions an IdP's back-channel logout names: those of `sid`, else every session of
/// the user `iss`+`sub` (none: nothing to do). How many ended.
pub async fn end_sessions(
    state: &AppState,
    issuer: &str,
    subject: &str,
    sid: Option<&str>,
) -> Result<u64, Failure> {
    let Some(user) = state.store.user_by_oidc(issuer, subject).await? else {
        return Ok(0);
    };
    let ended = match sid {
        Some(sid) => state.store.delete_sessions_by_sid(&user.id, sid).await?,
        None => state.store.delete_user_sessions(&user.id).await?,
    };
    tracing::info!(user = user.id, sessions = ended, "back-channel logout");
    Ok(ended)
}

/// Where RP-initiated logout sends the browser: the IdP's end-session endpoint with
/// `id_token_hint` and `post_logout_redirect_uri`, when both are known.
pub async fn end_session_url(
    state: &AppState,
    user_id: &str,
    session: Option<&OidcSession>,
) -> Option<String> {
    let oidc = state.oidc.as_ref()?;
    let sealed = session?.id_token.as_ref()?;
    let id_token = state
        .keys
        .open_string(&crate::oidc::session_purpose(user_id, "id_token"), sealed)
        .ok()?;
    let endpoint = oidc
        .settings
        .public(&oidc.discovery().await.ok()?.end_session_endpoint?);
    let mut url = url::Url::parse(&endpoint).ok()?;
    url.query_pairs_mut()
        .append_pair("id_token_hint", &id_token)
        .append_pair(
            "post_logout_redirect_uri",
            state.settings.access_url.join("login").as_str(),
        )
        .append_pair("client_id", &oidc.settings.client_id);
    Some(url.to_string())
}
