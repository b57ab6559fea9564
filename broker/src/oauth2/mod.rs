//! The broker as an OAuth2 authorization server and OpenID Provider, for third-party apps
//! (IDE plugins, internal tools, MCP servers, the CLI): apps and secrets (`apps`), the
//! authorization endpoint and consent (`authorize`), the token endpoint's grants (`grants`),
//! JWT access and ID tokens and their checks (`tokens`), signing keys (`signing`), scopes
//! (`scopes`) and the per-client and per-address pace (`pace`).
//!
//! Beyond Coder's provider (research part A): scopes and public clients from the start, JWT
//! access tokens a resource server verifies offline, refresh rotation with reuse detection,
//! client credentials, introspection, remembered consent, and OpenID Connect.

pub mod apps;
pub mod authorize;
pub mod client_ids;
pub mod device;
pub mod grants;
pub mod pace;
pub mod redirect_policy;
pub mod registration;
pub mod resources;
pub mod scopes;
pub mod signing;
pub mod tokens;

use std::time::Duration;

pub use grants::retry_purpose;
pub use signing::signing_key_purpose;

use crate::failure::Failure;

/// An OAuth2 protocol error (RFC 6749 §4.1.2.1, §5.2; RFC 7009, 7662, 8707): the error code is
/// the variant, the text is `error_description`, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// `invalid_request`.
    #[error("{0}")]
    InvalidRequest(String),
    /// `invalid_client`: unknown client or wrong credentials.
    #[error("{0}")]
    InvalidClient(String),
    /// `invalid_grant`: code or refresh token unknown, used, expired or not this client's.
    #[error("{0}")]
    InvalidGrant(String),
    /// `unauthorized_client`: this client may not use this grant.
    #[error("{0}")]
    UnauthorizedClient(String),
    /// `unsupported_grant_type`.
    #[error("{0}")]
    UnsupportedGrantType(String),
    /// `unsupported_response_type`.
    #[error("{0}")]
    UnsupportedResponseType(String),
    /// `invalid_scope`.
    #[error("{0}")]
    InvalidScope(String),
    /// `invalid_target` (RFC 8707).
    #[error("{0}")]
    InvalidTarget(String),
    /// `authorization_pending`: the user has not answered the device authorization yet.
    #[error("the user has not answered yet")]
    AuthorizationPending,
    /// `slow_down`: the device polls faster than its interval.
    #[error("polling too fast; wait longer between polls")]
    PollTooFast,
    /// `expired_token`: the device code expired (or never was).
    #[error("the device code has expired; start again")]
    ExpiredToken,
    /// `access_denied`: the user said no.
    #[error("the user denied the request")]
    AccessDenied,
    /// `temporarily_unavailable` with a wait: too many requests.
    #[error("too many requests")]
    SlowDown(Duration),
    /// `server_error`: the broker failed (details logged, not sent).
    #[error(transparent)]
    Server(#[from] Failure),
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Server(e.into())
    }
}

impl OAuthError {
    /// The RFC's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient(_) => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
            Self::UnsupportedResponseType(_) => "unsupported_response_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::InvalidTarget(_) => "invalid_target",
            Self::AccessDenied => "access_denied",
            Self::AuthorizationPending => "authorization_pending",
            Self::PollTooFast => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::SlowDown(_) => "temporarily_unavailable",
            Self::Server(_) => "server_error",
        }
    }
}

/// Why a registration (or its management) was refused, in RFC 7591 §3.2.2 terms.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// `invalid_redirect_uri`.
    #[error("{0}")]
    InvalidRedirectUri(String),
    /// `invalid_client_metadata`.
    #[error("{0}")]
    InvalidMetadata(String),
    /// Registration is closed here (404, as if the endpoint did not exist).
    #[error("dynamic client registration is off here")]
    Off,
    /// The registration access token is missing or wrong (401 `invalid_token`).
    #[error("the registration access token is missing or not this client's")]
    Unauthorized,
    /// The broker failed.
    #[error(transparent)]
    Server(#[from] Failure),
}

impl From<crate::store::StoreError> for RegistrationError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Server(e.into())
    }
}

/// The settings of the authorization server.
#[derive(Debug, Clone)]
pub struct Oauth2Settings {
    /// `CODER_OAUTH2_PROVIDER_ENABLE` (on by default).
    pub enabled: bool,
    /// `EXTAUTH_OAUTH2_REQUIRE_PKCE`: PKCE of every client, confidential ones too.
    pub require_pkce: bool,
    /// `EXTAUTH_OAUTH2_ACCESS_TOKEN_LIFETIME` (1 h).
    pub access_lifetime: Duration,
    /// `CODER_DEFAULT_OAUTH_REFRESH_LIFETIME` (720 h).
    pub refresh_lifetime: Duration,
    /// `EXTAUTH_OAUTH2_RATE_LIMIT`: requests per minute to `/oauth2/*` per client and per
    /// address (0: no limit).
    pub rate_limit: u32,
    /// `EXTAUTH_OAUTH2_SIGNING_ALGORITHM`: what new signing keys are made for.
    pub algorithm: signing::Algorithm,
    /// `EXTAUTH_OAUTH2_CLIENT_METADATA`: client ids that are metadata document URLs.
    pub client_metadata: bool,
    /// `EXTAUTH_OAUTH2_CLIENT_METADATA_ALLOW_PRIVATE`.
    pub client_metadata_allow_private: bool,
    /// `EXTAUTH_OAUTH2_CLIENT_METADATA_HOSTS` (lowercase patterns; empty: any).
    pub client_metadata_hosts: Vec<String>,
    /// `EXTAUTH_OAUTH2_CLIENT_METADATA_DENY_HOSTS` (lowercase patterns).
    pub client_metadata_deny_hosts: Vec<String>,
    /// `EXTAUTH_OAUTH2_DCR`: dynamic registration open at start (admins may change it).
    pub dcr: bool,
    /// `EXTAUTH_OAUTH2_DCR_REDIRECTS`: the redirect URIs self-registered clients may have.
    pub dcr_redirects: Vec<String>,
}

impl Default for Oauth2Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            require_pkce: false,
            access_lifetime: Duration::from_secs(3600),
            refresh_lifetime: Duration::from_secs(720 * 3600),
            rate_limit: 600,
            algorithm: signing::Algorithm::Es256,
            client_metadata: true,
            client_metadata_allow_private: false,
            client_metadata_hosts: Vec::new(),
            client_metadata_deny_hosts: Vec::new(),
            dcr: false,
            dcr_redirects: ["loopback", "*:", "https://*"]
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        }
    }
}

impl Oauth2Settings {
    /// How long a retired signing key stays published: as long as anything it signed lives.
    pub fn key_overlap(&self) -> Duration {
        self.access_lifetime + Duration::from_secs(300)
    }
}
