//! Logins in progress at a provider (linking) or the OIDC identity provider (signing in).
//!
//! The `state` sent to the provider is a random value whose hash the store keeps with what
//! started it: the browser it is bound to (the session when linking, a sign-in cookie when
//! signing in), the PKCE verifier (sealed), the nonce and where to go afterwards. A callback
//! finishes a flow only if its state is known, unexpired, not used before, bound to this
//! browser and for this purpose — all checked before anything is sent to the provider. A state
//! kept only in cookies was none of that: a replayed callback was exchanged again, and a cookie
//! planted by another site on the host could finish a link with the attacker's code.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use extauth_providers::constant_time_eq;
use sha2::{Digest, Sha256};

use crate::failure::{Failure, LoginKind};
use crate::identity::hash;
use crate::random;
use crate::state::AppState;
use crate::store::LoginFlow;

/// A login must finish within this long.
pub const LIFETIME_MS: i64 = 600_000;

/// What a login is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose<'a> {
    /// Linking the provider with this id.
    Link(&'a str),
    /// Linking another account of the provider with this id, beside those linked.
    AddAccount(&'a str),
    /// Signing in with OIDC.
    SignIn,
}

impl Purpose<'_> {
    fn tag(self) -> String {
        match self {
            Purpose::Link(provider) => format!("link:{provider}"),
            Purpose::AddAccount(provider) => format!("link+account:{provider}"),
            Purpose::SignIn => "oidc".to_owned(),
        }
    }
}

/// A login just started: what to send to the provider.
pub struct Started {
    /// The `state` parameter.
    pub state: String,
    /// The PKCE `code_challenge` (S256), when asked for.
    pub challenge: Option<String>,
    /// The OIDC `nonce`.
    pub nonce: String,
}

/// A login that may finish: what it started with.
pub struct Finished {
    /// Who started it (empty when signing in).
    pub user_id: String,
    /// The PKCE verifier to send with the code.
    pub verifier: Option<String>,
    /// The nonce the ID token must carry (empty when linking).
    pub nonce: String,
    /// A path on this site to go to, or empty.
    pub redirect: String,
    /// It was started to add another account ([`Purpose::AddAccount`]).
    pub adds_account: bool,
}

fn verifier_purpose(state_hash: &str) -> String {
    format!("login-flow:{state_hash}:verifier")
}

/// Starts a login bound to `binding` (the hash of what identifies the browser).
pub async fn start(
    app: &AppState,
    purpose: Purpose<'_>,
    binding_hash: &str,
    user_id: &str,
    pkce: bool,
    redirect: &str,
) -> Result<Started, Failure> {
    let state = random::hex_token::<32>();
    let state_hash = hash(&state);
    let nonce = match purpose {
        Purpose::SignIn => random::hex_token::<16>(),
        Purpose::Link(_) | Purpose::AddAccount(_) => String::new(),
    };
    let verifier = pkce.then(|| URL_SAFE_NO_PAD.encode(random::bytes::<32>()));
    let challenge = verifier
        .as_ref()
        .map(|v| URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())));
    let flow = LoginFlow {
        verifier: verifier
            .as_ref()
            .map(|v| app.keys.seal(&verifier_purpose(&state_hash), v.as_bytes())),
        state_hash,
        binding_hash: binding_hash.to_owned(),
        user_id: user_id.to_owned(),
        purpose: purpose.tag(),
        nonce: nonce.clone(),
        redirect: redirect.to_owned(),
        expires_ms: crate::clock::now_millis().saturating_add(LIFETIME_MS),
    };
    app.store.put_login_flow(&flow).await?;
    Ok(Started {
        state,
        challenge,
        nonce,
    })
}

/// Finishes the login whose `state` came back, if this browser (`binding_hash`) started it for
/// `purpose` (and, when linking, as `user_id`). The flow is used up whatever the outcome.
pub async fn finish(
    app: &AppState,
    purpose: Purpose<'_>,
    binding_hash: &str,
    user_id: &str,
    state: &str,
) -> Result<Finished, Failure> {
    let kind = match purpose {
        Purpose::Link(_) | Purpose::AddAccount(_) => LoginKind::Link,
        Purpose::SignIn => LoginKind::SignIn,
    };
    if state.is_empty() {
        return Err(Failure::LoginStateMissing(kind));
    }
    let state_hash = hash(state);
    let Some(flow) = app.store.take_login_flow(&state_hash).await? else {
        tracing::warn!(
            purpose = purpose.tag(),
            "callback with an unknown, used or expired state"
        );
        return Err(Failure::LoginUnknown(kind));
    };
    let same_browser = constant_time_eq(flow.binding_hash.as_bytes(), binding_hash.as_bytes());
    // A link's callback finishes either kind of link flow; which one it was is said back.
    let adds_account = match purpose {
        Purpose::Link(provider) => flow.purpose == Purpose::AddAccount(provider).tag(),
        _ => false,
    };
    let same_purpose = flow.purpose == purpose.tag() || adds_account;
    if !same_browser || !same_purpose || flow.user_id != user_id {
        tracing::warn!(
            purpose = purpose.tag(),
            same_browser,
            "callback for a login started elsewhere"
        );
        return Err(Failure::LoginElsewhere(kind));
    }
    let verifier = flow
        .verifier
        .as_ref()
        .map(|sealed| app.keys.open_string(&verifier_purpose(&state_hash), sealed))
        .transpose()
        .map_err(|e| Failure::LoginUnfinishable {
            kind,
            reason: e.to_string(),
        })?;
    Ok(Finished {
        user_id: flow.user_id,
        verifier,
        nonce: flow.nonce,
        redirect: flow.redirect,
        adds_account,
    })
}

/// An OAuth error code as shown on a page: one of RFC 6749's, or a fixed word. The parameter is
/// anyone's to write into a link, so nothing else of it is shown.
pub fn error_code(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "access_denied",
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "invalid_scope",
        "unauthorized_client",
        "unsupported_response_type",
        "server_error",
        "temporarily_unavailable",
        "login_required",
        "consent_required",
        "interaction_required",
        "account_selection_required",
    ];
    KNOWN
        .iter()
        .find(|known| **known == code)
        .copied()
        .unwrap_or("an unknown error")
}
