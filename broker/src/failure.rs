//! What went wrong in the broker's domain, said as facts, with no HTTP in it. The one mapping to
//! an answer (status, message, detail) is `From<Failure> for ApiError` in `error.rs`, where the
//! wording lives.

use std::time::Duration;

use crate::crypto::CryptoError;
use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// Which login a login-flow failure is about (the fix differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    /// Linking a provider.
    Link,
    /// Signing in with OIDC.
    SignIn,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The store failed (a conflict names what is taken).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing or opening failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Something that should not happen.
    #[error("{0}")]
    Internal(String),

    /// No provider with this id.
    #[error("no provider {id:?}")]
    UnknownProvider {
        /// The id asked for.
        id: String,
        /// The configured ids.
        known: Vec<String>,
    },
    /// A token name that is empty, too long or has control characters.
    #[error("invalid token name")]
    InvalidTokenName,
    /// API tokens cannot be narrowed.
    #[error("API tokens cannot be narrowed to providers")]
    ApiTokenNarrowed,
    /// A workspace token narrowed to no provider.
    #[error("a token narrowed to no provider")]
    NarrowedToNothing,
    /// A lifetime that does not parse or is too long.
    #[error("invalid lifetime {text:?}: {reason}")]
    InvalidLifetime {
        /// As given.
        text: String,
        /// Why.
        reason: String,
    },

    /// A client address failed too many token checks.
    #[error("too many failed token checks")]
    TooManyFailures {
        /// Until the next check is allowed.
        wait: Duration,
    },
    /// The token is malformed, unknown, wrong, expired or its user is gone.
    #[error("invalid or expired token")]
    InvalidToken,
    /// No credential at all.
    #[error("authentication required")]
    AuthenticationRequired,
    /// A cookie-authenticated write without the session's CSRF header.
    #[error("missing or wrong CSRF header")]
    CsrfHeader,
    /// A form without the session's CSRF token.
    #[error("missing or wrong CSRF form field")]
    CsrfForm,
    /// A workspace token on a route that is not the workspace API.
    #[error("a workspace token outside the workspace API")]
    WorkspaceTokenOnly,
    /// A token lacks the scope a route needs.
    #[error("the token lacks scope {0}")]
    InsufficientScope(&'static str),
    /// An app's service token (client credentials) on a route that acts as a user.
    #[error("a service token where a user is needed")]
    ServiceToken,
    /// An admin-only action by someone else.
    #[error("admins only")]
    AdminOnly,
    /// The authorization server is turned off.
    #[error("the OAuth2 provider is off")]
    OAuth2Off,
    /// No OAuth2 app with this id.
    #[error("no OAuth2 app {0:?}")]
    UnknownApp(String),
    /// No secret with this id on the app.
    #[error("no client secret {0:?}")]
    UnknownAppSecret(String),
    /// An app's registration was refused: the field and why.
    #[error("invalid app: {0}")]
    InvalidApp(String),
    /// No protected resource with this id.
    #[error("no protected resource {0:?}")]
    UnknownResource(String),
    /// A protected resource's registration was refused: the field and why.
    #[error("invalid resource: {0}")]
    InvalidResource(String),
    /// The `--dev` sign-in link was used or replaced.
    #[error("the dev sign-in link is used up")]
    DevLinkUsed,
    /// The `--dev` admin was deleted.
    #[error("the dev admin is gone")]
    DevAdminGone,

    /// A callback without a state.
    #[error("no state")]
    LoginStateMissing(LoginKind),
    /// A state unknown, used or expired.
    #[error("unknown login")]
    LoginUnknown(LoginKind),
    /// A state another browser session started.
    #[error("login started elsewhere")]
    LoginElsewhere(LoginKind),
    /// The login's sealed verifier cannot be opened.
    #[error("login cannot be finished: {reason}")]
    LoginUnfinishable {
        /// Which login.
        kind: LoginKind,
        /// Why.
        reason: String,
    },
    /// The provider refused the authorization code (an OAuth error).
    #[error("code refused: {0}")]
    CodeRefused(UpstreamError),
    /// The code could not be exchanged (network, 5xx, …).
    #[error("code exchange failed: {0}")]
    CodeExchange(UpstreamError),
    /// The token expired and refreshing it failed for a passing reason.
    #[error("refresh unavailable: {0}")]
    RefreshUnavailable(UpstreamError),
    /// Validating a token with the provider failed.
    #[error("validation failed: {0}")]
    Validation(UpstreamError),

    /// The provider rate-limits device authorizations.
    #[error("device authorization rate limited: {0}")]
    DeviceRateLimited(UpstreamError),
    /// Starting a device flow failed.
    #[error("device authorization failed: {0}")]
    DeviceAuthorize(UpstreamError),
    /// Not a device code this user started here.
    #[error("unknown device code")]
    UnknownDeviceCode,
    /// The device flow is not done: the RFC 8628 code (`authorization_pending`, `slow_down`,
    /// `expired_token`, `access_denied`).
    #[error("device flow: {0}")]
    DevicePending(String),
    /// Polling a device flow failed.
    #[error("device exchange failed: {0}")]
    DeviceExchange(UpstreamError),

    /// OIDC sign-in is not configured.
    #[error("OIDC is not configured")]
    OidcOff,
    /// An IdP document or endpoint could not be used (discovery, keys, a URL, the network).
    #[error("identity provider: {what}: {detail}")]
    IdpUnavailable {
        /// Which part.
        what: IdpPart,
        /// Why.
        detail: String,
    },
    /// The IdP's discovery document names another issuer.
    #[error("issuer mismatch: {0}")]
    IssuerMismatch(String),
    /// The IdP refused the sign-in code.
    #[error("sign-in code refused: {0}")]
    SignInCodeRefused(String),
    /// No ID token came with the code.
    #[error("no ID token")]
    NoIdToken,
    /// The ID token's nonce is not this sign-in's.
    #[error("nonce mismatch")]
    NonceMismatch,
    /// A verification check or a sign-in rule refused the identity.
    #[error("sign-in refused: {0:?}")]
    SignInRefused(Refusal),
    /// Sign-ups are off and the identity has no user.
    #[error("sign-ups are disabled")]
    SignUpsDisabled {
        /// The operator's text (`CODER_OIDC_SIGNUPS_DISABLED_TEXT`), if set.
        text: Option<String>,
    },
    /// Every username derived from the identity is taken.
    #[error("no free username for {0}")]
    NoFreeUsername(String),
}

/// Why an ID token, a logout token or an identity was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a JWT at all.
    NotAJwt(String),
    /// Signed with an algorithm that is not accepted.
    Algorithm(String),
    /// Signed with a key the IdP does not publish.
    UnknownKey(Option<String>),
    /// HS256-signed, but not with the client secret.
    Hs256Secret,
    /// The signature does not verify.
    Signature,
    /// `aud` does not hold the client id.
    Audience {
        /// `CODER_OIDC_CLIENT_ID`.
        client_id: String,
    },
    /// `exp` has passed.
    Expired,
    /// `iss` is another issuer.
    Issuer {
        /// The configured one.
        expected: String,
    },
    /// Invalid in another way.
    Invalid(String),
    /// `at_hash` does not match the access token.
    AtHash,
    /// The userinfo answer is for another `sub`.
    UserinfoOfAnother,
    /// No `sub`.
    NoSubject,
    /// `email_verified` is false.
    EmailUnverified {
        /// The address.
        email: String,
    },
    /// The email's domain is not allowed.
    EmailDomain {
        /// The address.
        email: String,
        /// `CODER_OIDC_EMAIL_DOMAIN`.
        allowed: Vec<String>,
    },
    /// Not in an allowed group.
    Group {
        /// `CODER_OIDC_ALLOWED_GROUPS`.
        allowed: Vec<String>,
    },
}

/// A part of the identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpPart {
    /// A document (`discovery document`, `keys`).
    Document(&'static str),
    /// The authorization endpoint is not a URL.
    AuthorizationEndpoint,
    /// The token endpoint is not a URL.
    TokenEndpoint,
    /// The token endpoint did not answer.
    Unreachable,
    /// The userinfo endpoint failed.
    Userinfo,
}

impl std::fmt::Display for IdpPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdpPart::Document(what) => f.write_str(what),
            IdpPart::AuthorizationEndpoint => f.write_str("authorization endpoint"),
            IdpPart::TokenEndpoint => f.write_str("token endpoint"),
            IdpPart::Unreachable => f.write_str("token endpoint unreachable"),
            IdpPart::Userinfo => f.write_str("userinfo endpoint"),
        }
    }
}
