//! The one place errors become HTTP responses: JSON `{message, detail}` for the API, an HTML
//! page for browser routes. Internal failures are logged with a reference id and answered with
//! a generic message that carries the id, never the cause.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use extauth_providers::wire::ErrorBody;

use crate::crypto::CryptoError;
use crate::failure::{Failure, IdpPart, LoginKind, Refusal};
use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// One sentence for humans.
    pub message: String,
    /// More context; may be empty.
    pub detail: String,
    /// Seconds after which a retry may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401 or 403 (default for 401: `Bearer`).
    pub www_authenticate: Option<String>,
}

impl ApiError {
    /// An error with a status, a message and a detail.
    pub fn new(status: StatusCode, message: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            detail: detail.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    /// 403 with a detail.
    pub fn forbidden_with(message: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message, detail)
    }

    /// 429: too many attempts; retry in `after`.
    pub fn too_many(message: impl Into<String>, after: std::time::Duration) -> Self {
        let secs = after.as_secs().max(1);
        Self {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                message,
                format!("retry in {secs} s"),
            )
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, detail)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message, "")
    }

    /// 401 with a detail saying what to do.
    pub fn unauthorized_with(message: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message, detail)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message, "")
    }

    /// 404.
    pub fn not_found(message: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message, detail)
    }

    /// 500 with a logged cause: the answer only carries a reference to find it in the log.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let reference = crate::random::hex_token::<6>();
        tracing::error!(reference, error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error.",
            format!("look for reference {reference} in the broker's log"),
        )
    }

    /// 502 for a provider that failed in a way a retry may fix.
    pub fn upstream(message: impl Into<String>, cause: &UpstreamError) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, message, cause.reason())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => {
                Self::new(StatusCode::CONFLICT, format!("{what} already exists."), "")
            }
            other => Self::internal(other),
        }
    }
}

impl From<CryptoError> for ApiError {
    fn from(e: CryptoError) -> Self {
        Self::internal(e)
    }
}

/// The one place the domain's failures get their status and their words.
impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        let again = |kind: LoginKind| match kind {
            LoginKind::Link => "start linking again from the broker's page",
            LoginKind::SignIn => "start signing in again",
        };
        match failure {
            Failure::Store(e) => e.into(),
            Failure::Crypto(e) => e.into(),
            Failure::Internal(cause) => Self::internal(cause),
            Failure::UnknownProvider { id, known } => Self::not_found(
                format!("No external auth provider with ID {id:?}."),
                if known.is_empty() {
                    "no providers are configured".to_owned()
                } else {
                    format!("configured providers: {}", known.join(", "))
                },
            ),
            Failure::InvalidTokenName => Self::bad_request(
                "Invalid token name.",
                "use 1 to 64 characters, none of them control characters",
            ),
            Failure::ApiTokenNarrowed => Self::bad_request(
                "API tokens cannot be narrowed to providers.",
                "narrow a workspace token instead",
            ),
            Failure::NarrowedToNothing => Self::bad_request(
                "A token narrowed to no provider could do nothing.",
                "list at least one provider ID in \"providers\", or leave the field out for all",
            ),
            Failure::InvalidLifetime { text, reason } => Self::bad_request(
                "Invalid lifetime.",
                format!("{text:?}: {reason}; write e.g. 30d or 12h"),
            ),
            Failure::TooManyFailures { wait } => {
                Self::too_many("Too many failed token checks from this address.", wait)
            }
            Failure::InvalidToken => Self::unauthorized("Invalid or expired token."),
            Failure::AuthenticationRequired => Self::unauthorized(
                "Authentication required: send a token as `Authorization: Bearer <token>`.",
            ),
            Failure::CsrfHeader => Self::forbidden(
                "Missing or wrong X-CSRF-Token header for a cookie-authenticated request.",
            ),
            Failure::CsrfForm => Self::forbidden(
                "The form has expired or did not come from this site; reload the page and try again.",
            ),
            Failure::WorkspaceTokenOnly => Self::forbidden(
                "A workspace token can only fetch provider tokens; use a session or an API token.",
            ),
            Failure::DevLinkUsed => Self::unauthorized(
                "This sign-in link was already used or is not the current one; restart the broker for a new one.",
            ),
            Failure::InsufficientScope(scope) => Self {
                www_authenticate: Some(format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{scope}\""
                )),
                ..Self::new(
                    StatusCode::FORBIDDEN,
                    format!("This token lacks the scope {scope:?}."),
                    "ask the app's user to authorize it again with that scope",
                )
            },
            Failure::ServiceToken => Self::forbidden_with(
                "An app's service token does not act as a user.",
                "get a token through the authorization code flow to act for a user",
            ),
            Failure::AdminOnly => Self::forbidden("Only admins can do this."),
            Failure::OAuth2Off => Self::not_found(
                "There is nothing at this address.",
                "the OAuth2 provider is off (CODER_OAUTH2_PROVIDER_ENABLE=false)",
            ),
            Failure::UnknownApp(id) => {
                Self::not_found(format!("No OAuth2 app with id {id:?}."), "")
            }
            Failure::UnknownAppSecret(id) => {
                Self::not_found(format!("No client secret with id {id:?}."), "")
            }
            Failure::InvalidApp(detail) => Self::bad_request("Invalid OAuth2 app.", detail),
            Failure::UnknownResource(id) => {
                Self::not_found(format!("No protected resource with id {id:?}."), "")
            }
            Failure::InvalidResource(detail) => {
                Self::bad_request("Invalid protected resource.", detail)
            }
            Failure::DevAdminGone => Self::unauthorized("The local admin no longer exists."),
            Failure::LoginStateMissing(kind) => {
                Self::bad_request("State must be provided.", again(kind))
            }
            Failure::LoginUnknown(kind) => Self::unauthorized_with(
                "This login is unknown, was already finished or has expired.",
                again(kind),
            ),
            Failure::LoginElsewhere(kind) => Self::unauthorized_with(
                "This login was not started in this browser session.",
                again(kind),
            ),
            Failure::LoginUnfinishable { kind, reason } => Self::bad_request(
                "This login cannot be finished.",
                format!("{reason}; {}", again(kind)),
            ),
            Failure::CodeRefused(e) => {
                Self::bad_request("Failed exchanging OAuth code.", e.reason())
            }
            Failure::CodeExchange(e) => Self::upstream("Failed exchanging OAuth code.", &e),
            Failure::RefreshUnavailable(e) => Self::upstream(
                "The token expired and the provider could not refresh it; try again shortly.",
                &e,
            ),
            Failure::Validation(e) => Self::upstream("Failed to validate token.", &e),
            Failure::DeviceRateLimited(e) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "The provider is rate limiting device authorizations; retry later.",
                e.reason(),
            ),
            Failure::DeviceAuthorize(e) => Self::upstream("Failed to authorize device.", &e),
            Failure::UnknownDeviceCode => Self::bad_request(
                "Unknown device code.",
                "start a device flow with GET on this URL first",
            ),
            Failure::DevicePending(code) => {
                Self::bad_request("Failed to exchange device code.", code)
            }
            Failure::DeviceExchange(e) => Self::upstream("Failed to exchange device code.", &e),
            Failure::OidcOff => Self::not_found(
                "OIDC sign-in is not configured.",
                "set CODER_OIDC_ISSUER_URL, CODER_OIDC_CLIENT_ID and CODER_OIDC_CLIENT_SECRET",
            ),
            Failure::IdpUnavailable { what, detail } => {
                let message = match what {
                    IdpPart::Document(what) => {
                        format!("The identity provider's {what} is not available.")
                    }
                    IdpPart::AuthorizationEndpoint => {
                        "The IdP's authorization endpoint is not a URL.".to_owned()
                    }
                    IdpPart::TokenEndpoint => "The IdP's token endpoint is not a URL.".to_owned(),
                    IdpPart::Unreachable => "The identity provider is not reachable.".to_owned(),
                    IdpPart::Userinfo => {
                        "The identity provider's userinfo endpoint failed.".to_owned()
                    }
                };
                Self::new(StatusCode::BAD_GATEWAY, message, detail)
            }
            Failure::IssuerMismatch(detail) => {
                Self::new(StatusCode::BAD_GATEWAY, "Issuer mismatch.", detail)
            }
            Failure::SignInCodeRefused(detail) => {
                Self::bad_request("The identity provider refused the sign-in code.", detail)
            }
            Failure::NoIdToken => Self::bad_request(
                "The identity provider sent no ID token.",
                "is the openid scope requested?",
            ),
            Failure::NonceMismatch => Self::new(
                StatusCode::FORBIDDEN,
                "The ID token's nonce does not match this sign-in.",
                "start signing in again",
            ),
            Failure::SignInRefused(refusal) => {
                let (message, detail) = refusal_words(refusal);
                Self::new(StatusCode::FORBIDDEN, message, detail)
            }
            Failure::SignUpsDisabled { text } => Self::new(
                StatusCode::FORBIDDEN,
                text.unwrap_or_else(|| {
                    "Sign-ups are disabled: ask an administrator to create your account.".to_owned()
                }),
                "",
            ),
            Failure::NoFreeUsername(username) => Self::new(
                StatusCode::CONFLICT,
                "No free username for this account.",
                username,
            ),
        }
    }
}

/// What a sign-in refusal tells the person signing in, and what to do.
fn refusal_words(refusal: Refusal) -> (String, String) {
    let (message, detail): (&str, String) = match refusal {
        Refusal::NotAJwt(why) => ("The ID token is not a valid JWT.", why),
        Refusal::Algorithm(alg) => (
            "The ID token uses an algorithm extauth does not accept.",
            format!("{alg}; use RS256 or ES256"),
        ),
        Refusal::UnknownKey(kid) => (
            "The ID token is signed with a key the IdP does not publish.",
            format!("key id {kid:?}"),
        ),
        Refusal::Hs256Secret => (
            "The ID token's HS256 signature does not match CODER_OIDC_CLIENT_SECRET.",
            "check the client secret, or select a signing key for the provider in authentik (RS256)"
                .to_owned(),
        ),
        Refusal::Signature => ("The ID token's signature is invalid.", String::new()),
        Refusal::Audience { client_id } => (
            "The ID token was issued for another client.",
            format!("its aud does not contain CODER_OIDC_CLIENT_ID ({client_id})"),
        ),
        Refusal::Expired => (
            "The ID token has expired.",
            "sign in again; check the clocks of the IdP and the broker".to_owned(),
        ),
        Refusal::Issuer { expected } => (
            "The ID token comes from another issuer.",
            format!("expected iss {expected:?}"),
        ),
        Refusal::Invalid(why) => ("The ID token is invalid.", why),
        Refusal::AtHash => (
            "The ID token does not belong to the access token sent with it.",
            "its at_hash does not match; sign in again".to_owned(),
        ),
        Refusal::UserinfoOfAnother => (
            "The userinfo answer is for another user.",
            "its sub differs from the ID token's".to_owned(),
        ),
        Refusal::NoSubject => ("The ID token has no subject (sub).", String::new()),
        Refusal::EmailUnverified { email } => {
            return (
                format!("Your email address {email} is not verified by the identity provider."),
                "verify it at the IdP, or an administrator sets CODER_OIDC_IGNORE_EMAIL_VERIFIED=true (authentik reports false by default)".to_owned(),
            );
        }
        Refusal::EmailDomain { email, allowed } => {
            return (
                format!("Your email address {email:?} is not in an allowed domain."),
                format!("allowed: {}", allowed.join(", ")),
            );
        }
        Refusal::Group { allowed } => (
            "You are not in a group allowed to sign in.",
            format!("allowed groups: {}", allowed.join(", ")),
        ),
    };
    (message.to_owned(), detail)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: self.message,
            detail: self.detail,
            validations: Vec::new(),
        };
        let retry_after = self.retry_after;
        let challenge = self.www_authenticate;
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(value) = challenge.and_then(|c| header::HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED
            && !response.headers().contains_key(header::WWW_AUTHENTICATE)
        {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// An error on a browser route: the same information as an HTML page.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

/// What a browser route failed with, left on the response for the router's error-page layer
/// ([`crate::routes::router`]): only that layer knows the site's path prefix and who is signed
/// in, so it renders the page with the same navigation as every other page.
#[derive(Debug, Clone)]
pub struct PageErrorMark(pub ApiError);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let mut response = self.0.status.into_response();
        response.extensions_mut().insert(PageErrorMark(self.0));
        response
    }
}

/// An OAuth2 protocol error as RFC 6749 §5.2 says: JSON `{error, error_description}`, 400, or
/// 401 with a `Basic` challenge for client authentication, 429 with `Retry-After` when paced;
/// a server error is logged with a reference and its cause never sent.
impl IntoResponse for crate::oauth2::OAuthError {
    fn into_response(self) -> Response {
        use crate::oauth2::OAuthError;
        let code = self.code();
        let (status, description) = match &self {
            OAuthError::InvalidClient(_) => (StatusCode::UNAUTHORIZED, self.to_string()),
            OAuthError::SlowDown(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests; retry in {} s", wait.as_secs().max(1)),
            ),
            OAuthError::Server(failure) => {
                let reference = crate::random::hex_token::<6>();
                tracing::error!(reference, error = %failure, "OAuth2 request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the server failed (reference {reference})"),
                )
            }
            _ => (StatusCode::BAD_REQUEST, self.to_string()),
        };
        let body = serde_json::json!({"error": code, "error_description": description});
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        headers.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
        match &self {
            OAuthError::InvalidClient(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"extauth\""),
                );
            }
            OAuthError::SlowDown(wait) => {
                headers.insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from(wait.as_secs().max(1)),
                );
            }
            _ => {}
        }
        response
    }
}

/// A registration refused (RFC 7591 §3.2.2): 400 `{error, error_description}`; 401
/// `invalid_token` for a wrong registration access token (RFC 7592 §3); 404 while
/// registration is closed, as if the endpoint did not exist.
impl IntoResponse for crate::oauth2::RegistrationError {
    fn into_response(self) -> Response {
        use crate::oauth2::RegistrationError;
        let description = self.to_string();
        let (status, code) = match self {
            RegistrationError::InvalidRedirectUri(_) => {
                (StatusCode::BAD_REQUEST, "invalid_redirect_uri")
            }
            RegistrationError::InvalidMetadata(_) => {
                (StatusCode::BAD_REQUEST, "invalid_client_metadata")
            }
            RegistrationError::Off => {
                return ApiError::not_found(
                    "There is nothing at this address.",
                    "dynamic client registration is off (EXTAUTH_OAUTH2_DCR, or the OAuth2 apps page)",
                )
                .into_response();
            }
            RegistrationError::Unauthorized => (StatusCode::UNAUTHORIZED, "invalid_token"),
            RegistrationError::Server(failure) => {
                return crate::oauth2::OAuthError::Server(failure).into_response();
            }
        };
        let body = serde_json::json!({"error": code, "error_description": description});
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}
