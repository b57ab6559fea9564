//! What providers answer: tokens, device codes, validation results, and errors told apart
//! (an OAuth error, a status, a rate limit, the network), from the raw status, headers and body.

use extauth_providers::{AccessToken, RefreshToken};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::{Map, Value};

use super::REASON_LIMIT;

/// Tokens as a provider issued them.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: AccessToken,
    /// The refresh token, when one was issued.
    pub refresh_token: Option<RefreshToken>,
    /// Lifetime in seconds; `None` = does not expire.
    pub expires_in: Option<i64>,
    /// The refresh token's own lifetime in seconds, when said (GitHub's
    /// `refresh_token_expires_in`, six months; also `refresh_expires_in`, Keycloak's name).
    pub refresh_expires_in: Option<i64>,
    /// Every other field of the answer (callers keep those named in `EXTRA_TOKEN_KEYS`).
    pub fields: Map<String, Value>,
}

/// An RFC 8628 device authorization.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeviceAuthorization {
    /// Secret handle the client polls with.
    pub device_code: String,
    /// What the user types at the provider.
    pub user_code: String,
    /// Where the user types it.
    pub verification_uri: String,
    /// The same with the code filled in, when the provider offers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_uri_complete: Option<String>,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    #[serde(default = "default_interval")]
    pub interval: u64,
}

pub(super) fn default_interval() -> u64 {
    5
}

/// How a call to a provider failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No answer: connection refused or reset, DNS, timeout.
    #[error("provider unreachable: {0}")]
    Network(String),
    /// An OAuth error answer (`error` field), whatever the HTTP status.
    #[error("provider refused with {code}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The RFC 6749 error code (`invalid_grant`, `slow_down`, …).
        code: String,
        /// `error_description`, truncated.
        description: Option<String>,
    },
    /// Any other unsuccessful answer.
    #[error("provider answered HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
        /// Whether rate-limit headers say the quota is used up.
        rate_limited: bool,
    },
    /// A successful status with a body that makes no sense.
    #[error("provider sent an unreadable answer: {0}")]
    Malformed(String),
}

impl UpstreamError {
    /// The OAuth error code, if the provider sent one.
    pub fn oauth_code(&self) -> Option<&str> {
        match self {
            Self::OAuth { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Why, in at most [`REASON_LIMIT`] characters, for caching and showing to users.
    pub fn reason(&self) -> String {
        truncate(&self.to_string(), REASON_LIMIT)
    }
}

/// What validating a token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validity {
    /// The provider accepted it (or is rate limiting, which says nothing against it).
    Valid {
        /// The provider's user document, when it sent JSON.
        user: Option<Value>,
    },
    /// The provider is rate limiting, which says nothing against the token: treat as valid.
    RateLimited,
    /// The provider rejected it.
    Invalid,
}

pub(super) fn network(e: reqwest::Error) -> UpstreamError {
    // reqwest's message names the URL; ours never carry secrets, but keep it short anyway.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    UpstreamError::Network(format!("{kind}: {}", e.without_url()))
}

/// JSON or form-encoded (GitHub without `Accept: application/json`) answer fields.
pub(super) fn parse_body(
    headers: &HeaderMap,
    body: &[u8],
    status: u16,
) -> Result<Map<String, Value>, UpstreamError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        return Ok(url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ if !(200..300).contains(&status) => Ok(Map::new()),
        _ => Err(UpstreamError::Malformed(format!(
            "expected a JSON object, got {} bytes of {}",
            body.len(),
            if content_type.is_empty() {
                "unknown type"
            } else {
                content_type
            }
        ))),
    }
}

pub(super) fn error_from(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    fields: Option<&Map<String, Value>>,
) -> UpstreamError {
    let parsed;
    let fields = match fields {
        Some(f) => Some(f),
        None => {
            parsed = parse_body(headers, body, status).ok();
            parsed.as_ref()
        }
    };
    if let Some(code) = fields.and_then(|f| f.get("error")).and_then(Value::as_str) {
        let description = fields
            .and_then(|f| f.get("error_description"))
            .and_then(Value::as_str)
            .map(|d| truncate(d, 200));
        return UpstreamError::OAuth {
            status,
            code: truncate(code, 64),
            description,
        };
    }
    UpstreamError::Status {
        status,
        body: truncate(String::from_utf8_lossy(body).trim(), 200),
        rate_limited: rate_limit_exhausted(headers),
    }
}

pub(super) fn token_response(
    mut fields: Map<String, Value>,
) -> Result<TokenResponse, UpstreamError> {
    let access_token = match fields.remove("access_token") {
        Some(Value::String(t)) if !t.is_empty() => AccessToken::new(t),
        _ => {
            return Err(UpstreamError::Malformed(
                "token answer without access_token".to_owned(),
            ));
        }
    };
    let refresh_token = match fields.remove("refresh_token") {
        Some(Value::String(t)) if !t.is_empty() => Some(RefreshToken::new(t)),
        _ => None,
    };
    let seconds = |value: Option<Value>| {
        match value {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .filter(|n| *n > 0)
    };
    let expires_in = seconds(fields.remove("expires_in"));
    let refresh_expires_in = seconds(fields.get("refresh_token_expires_in").cloned())
        .or_else(|| seconds(fields.get("refresh_expires_in").cloned()));
    Ok(TokenResponse {
        access_token,
        refresh_token,
        expires_in,
        refresh_expires_in,
        fields,
    })
}

/// `X-RateLimit-Remaining: 0` (GitHub) or `RateLimit-Remaining: 0` (IETF draft, GitLab).
pub fn rate_limit_exhausted(headers: &HeaderMap) -> bool {
    ["x-ratelimit-remaining", "ratelimit-remaining"]
        .iter()
        .any(|name| {
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == "0")
        })
}

/// At most `limit` characters, on a character boundary.
pub fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
