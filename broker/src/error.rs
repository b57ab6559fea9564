//! The one place errors become HTTP responses: JSON `{message, detail}` for the API, an HTML
//! page for browser routes. Internal failures are logged with a reference id and answered with
//! a generic message that carries the id, never the cause.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use extauth_providers::wire::ErrorBody;

use crate::crypto::CryptoError;
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
}

impl ApiError {
    /// An error with a status, a message and a detail.
    pub fn new(status: StatusCode, message: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            detail: detail.into(),
            retry_after: None,
        }
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: self.message,
            detail: self.detail,
            validations: Vec::new(),
        };
        let retry_after = self.retry_after;
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
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
