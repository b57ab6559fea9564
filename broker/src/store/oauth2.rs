//! What the authorization server keeps: apps and their secrets, authorization codes, remembered
//! consent, refresh-token families and the keys that sign its JWTs. Secrets are stored as
//! hashes; the few values that must be read back (a signing key, the answer kept for a retried
//! refresh) are [`Sealed`].

use serde::{Deserialize, Serialize};

use crate::crypto::Sealed;

/// Whether an app can keep a secret (RFC 6749 §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientType {
    /// A server-side app with a secret.
    Confidential,
    /// A native app, SPA or CLI: no secret, PKCE instead.
    Public,
}

/// How an app came to be known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppOrigin {
    /// An admin registered it.
    #[default]
    Admin,
    /// It registered itself (RFC 7591 dynamic client registration).
    Registered,
    /// Its `client_id` is the URL of its metadata document, fetched on first use and again
    /// when the copy kept here is stale.
    MetadataDocument,
}

/// A third-party app. `id` is its `client_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuth2App {
    /// Random; the `client_id`.
    pub id: String,
    /// Shown on the consent page.
    pub name: String,
    /// An icon URL (may be empty).
    pub icon: String,
    /// Exact redirect URIs (a loopback one matches on any port).
    pub redirect_uris: Vec<String>,
    /// Confidential or public.
    pub client_type: ClientType,
    /// The scopes it may ask for.
    pub scopes: Vec<String>,
    /// What a request without `scope` gets.
    pub default_scopes: Vec<String>,
    /// Its client secrets (several during a rotation).
    pub secrets: Vec<AppSecret>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Who made it known.
    #[serde(default)]
    pub origin: AppOrigin,
    /// The ids of the protected resources it may ask tokens for (empty: every one).
    #[serde(default)]
    pub resources: Vec<String>,
    /// sha256 of its registration access token (RFC 7592), for a self-registered app.
    #[serde(default)]
    pub registration_hash: Option<String>,
    /// For an app known by its metadata document: when the copy here goes stale (Unix ms).
    #[serde(default)]
    pub stale_ms: Option<i64>,
    /// Whether a grant was ever completed (a self-registered app that never completes one is
    /// deleted after a day).
    #[serde(default)]
    pub granted: bool,
}

/// An API or MCP server behind extauth, registered by an admin: tokens may be asked for it
/// (RFC 8707 `resource`), carry its URL as their audience and its own scopes, and extauth
/// serves its protected resource metadata (RFC 9728).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedResource {
    /// Random.
    pub id: String,
    /// Shown on the consent page and in the metadata (`resource_name`).
    pub name: String,
    /// The resource identifier: the URL clients connect to.
    pub url: String,
    /// The scopes it defines.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A client secret: only its hash is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSecret {
    /// Random; also inside the secret (`extauth_cs_<id>_<secret>`).
    pub id: String,
    /// sha256 of the whole secret, hex.
    pub secret_hash: String,
    /// The last characters, for recognising it (`*****abc123`).
    pub truncated: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds (updated at most once a minute).
    pub last_used_at: Option<i64>,
}

/// An authorization code: single use, short-lived. Kept after use until it expires so that a
/// second use is recognised (and what the first one issued is revoked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuth2Code {
    /// sha256 of the code, hex.
    pub code_hash: String,
    /// For which app.
    pub app_id: String,
    /// For whom.
    pub user_id: String,
    /// The redirect URI it was sent to (to be presented again).
    pub redirect_uri: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// PKCE S256 challenge, if one was sent.
    pub challenge: Option<String>,
    /// OIDC `nonce`, if one was sent.
    pub nonce: Option<String>,
    /// RFC 8707 `resource`, if one was sent.
    pub resource: Option<String>,
    /// When the user signed in (Unix seconds), for `auth_time`.
    pub auth_time: i64,
    /// The family the code's tokens belong to (so a replay can revoke them).
    pub family_id: String,
    /// Whether it was redeemed already.
    pub used: bool,
    /// Unix milliseconds.
    pub expires_ms: i64,
}

/// A user's consent to an app, remembered so the next authorization with the same or fewer
/// scopes is not asked again. Its presence is what "connected apps" lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuth2Grant {
    /// Who consented.
    pub user_id: String,
    /// To which app.
    pub app_id: String,
    /// Everything consented to so far.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// One chain of refresh tokens from one authorization (RFC 9700 §4.14): every rotation replaces
/// `refresh_hash`; the previous one is kept to recognise a replay. Access tokens name their
/// family, so deleting it ends them too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuth2Family {
    /// Random; also inside the refresh token (`extauth_rt_<id>_<secret>`).
    pub id: String,
    /// Issued to which app.
    pub app_id: String,
    /// For whom.
    pub user_id: String,
    /// The client secret the client authenticated with (deleting it ends the family).
    pub secret_id: Option<String>,
    /// Granted scopes (a refresh may narrow its access token, never this).
    pub scopes: Vec<String>,
    /// RFC 8707 `resource`, if any.
    pub resource: Option<String>,
    /// When the user signed in (Unix seconds).
    pub auth_time: i64,
    /// sha256 of the current refresh token, hex (empty: no refresh token was issued).
    pub refresh_hash: String,
    /// sha256 of the refresh token the last rotation replaced.
    pub previous_hash: Option<String>,
    /// sha256 of the refresh tokens replaced before (the latest few), to recognise a replay
    /// of any of them and not only of the last.
    pub earlier_hashes: Vec<String>,
    /// When the last rotation happened (Unix milliseconds).
    pub rotated_ms: i64,
    /// The answer the last rotation gave, sealed, handed out again to an identical retry within
    /// the grace window (its answer was lost).
    pub retry_answer: Option<Sealed>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds: the refresh token's end.
    pub expires_at: i64,
}

/// A key that signs access and ID tokens. The newest unretired one signs; retired ones stay
/// published (JWKS) until the tokens they signed have expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// `kid`.
    pub kid: String,
    /// `ES256` or `RS256`.
    pub algorithm: String,
    /// The private key (PKCS#8 DER), sealed.
    pub private_key: Sealed,
    /// The public key as a JWK (JSON).
    pub public_jwk: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` while it signs.
    pub retired_at: Option<i64>,
}

/// Which families [`crate::store::Store::delete_oauth2_families`] ends.
#[derive(Clone, Copy, Debug, Default)]
pub struct FamilyFilter<'a> {
    /// Of this app (required).
    pub app_id: &'a str,
    /// Only this user's.
    pub user_id: Option<&'a str>,
    /// Only those issued under this client secret.
    pub secret_id: Option<&'a str>,
}

impl FamilyFilter<'_> {
    /// Whether `family` is one of them.
    pub fn matches(&self, family: &OAuth2Family) -> bool {
        family.app_id == self.app_id
            && self.user_id.is_none_or(|u| u == family.user_id)
            && self
                .secret_id
                .is_none_or(|s| family.secret_id.as_deref() == Some(s))
    }
}

/// Where a device authorization (RFC 8628) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceDecision {
    /// The user has not answered yet.
    Pending,
    /// The user allowed it; the device may redeem it once.
    Approved,
    /// The user refused.
    Denied,
    /// The device got its tokens.
    Redeemed,
}

/// A device authorization in progress: the device polls with its code, the user answers on a
/// page with the user code. Kept in the store so any replica takes the next poll, paced alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceGrant {
    /// sha256 of the device code, hex.
    pub code_hash: String,
    /// The user code, 8 letters without the dash.
    pub user_code: String,
    /// For which app.
    pub app_id: String,
    /// What it asks for.
    pub scopes: Vec<String>,
    /// RFC 8707 `resource`, if any.
    pub resource: Option<String>,
    /// Who answered (once answered).
    pub user_id: Option<String>,
    /// When they had signed in (Unix seconds).
    pub auth_time: i64,
    /// Where it stands.
    pub decision: DeviceDecision,
    /// The polling interval now (grows with `slow_down`), milliseconds.
    pub interval_ms: i64,
    /// No poll is answered before this (Unix milliseconds) without `slow_down`.
    pub next_poll_ms: i64,
    /// Unix milliseconds.
    pub expires_ms: i64,
}
