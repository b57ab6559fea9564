//! The OAuth client side: talking to providers (authorize URL, code exchange, refresh, device
//! flow, revocation, validation), with every per-type quirk in one place.
//!
//! Written on reqwest directly rather than the `oauth2` crate because the quirks and, above all,
//! the failure classification need the raw answer: GitHub reports errors with HTTP 200, Azure
//! DevOps exchanges a JWT assertion, JFrog wants a bearer header on one request only, and telling
//! a dead refresh token from a rate limit depends on status, body and headers together.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use extauth_providers::{AccessToken, PkceMethod, ProviderConfig, ProviderType, RefreshToken};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use serde_json::{Map, Value};
use url::Url;

/// Azure DevOps' application id, the `resource` Entra ID v1 tokens must be issued for.
const AZURE_DEVOPS_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";
const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Provider error texts are cached and shown; they can be whole HTML pages.
pub const REASON_LIMIT: usize = 400;

/// Tokens as a provider issued them.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: AccessToken,
    /// The refresh token, when one was issued.
    pub refresh_token: Option<RefreshToken>,
    /// Lifetime in seconds; `None` = does not expire.
    pub expires_in: Option<i64>,
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

fn default_interval() -> u64 {
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

/// Which kind of provider call, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Authorization code exchange.
    Exchange,
    /// Refresh grant.
    Refresh,
    /// Token validation.
    Validate,
    /// Revocation.
    Revoke,
    /// Device authorization or device code exchange.
    Device,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Exchange => "exchange",
            Kind::Refresh => "refresh",
            Kind::Validate => "validate",
            Kind::Revoke => "revoke",
            Kind::Device => "device",
        }
    }
}

/// Counts one provider request: `extauth_upstream_requests_total{provider,kind,status}` (status
/// is the HTTP status, or `network` without an answer) and, when the answer says the rate limit
/// is used up, `extauth_upstream_rate_limited_total{provider,kind}`.
fn observe(provider: &ProviderConfig, kind: Kind, answer: Option<(u16, &HeaderMap)>) {
    let status = answer.map_or_else(|| "network".to_owned(), |(s, _)| s.to_string());
    metrics::counter!(
        "extauth_upstream_requests_total",
        "provider" => provider.id.to_string(),
        "kind" => kind.label(),
        "status" => status,
    )
    .increment(1);
    if let Some((status, headers)) = answer {
        if status == 429 || rate_limit_exhausted(headers) {
            metrics::counter!(
                "extauth_upstream_rate_limited_total",
                "provider" => provider.id.to_string(),
                "kind" => kind.label(),
            )
            .increment(1);
        }
    }
}

/// The outcome of revoking at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The provider confirmed.
    Revoked,
    /// The provider has no revocation endpoint configured.
    Unsupported,
}

/// How the client authenticates to the token endpoint. Like Go's oauth2 (which Coder uses),
/// HTTP Basic is tried first and request parameters after an `invalid_client`, and what worked
/// is remembered per provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthStyle {
    Header,
    Params,
}

/// The client for every provider.
pub struct Upstream {
    http: reqwest::Client,
    auth_styles: Mutex<HashMap<String, AuthStyle>>,
}

impl Upstream {
    /// A client that never follows redirects (a provider redirect is never a token answer, and
    /// following one could leak credentials elsewhere) and gives up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("extauth/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            auth_styles: Mutex::new(HashMap::new()),
        })
    }

    /// The provider's authorization URL for the browser flow.
    pub fn authorize_url(
        &self,
        provider: &ProviderConfig,
        redirect_uri: &Url,
        state: &str,
        pkce_challenge: Option<&str>,
    ) -> Url {
        let mut url = provider.auth_url.clone();
        {
            let mut query = url.query_pairs_mut();
            let response_type = match provider.provider_type {
                ProviderType::AzureDevops => "Assertion",
                _ => "code",
            };
            query
                .append_pair("response_type", response_type)
                .append_pair("client_id", &provider.client_id)
                .append_pair("redirect_uri", redirect_uri.as_str())
                .append_pair("state", state)
                // Ask for a refresh token where providers need to be asked (Google-style).
                .append_pair("access_type", "offline");
            if !provider.scopes.is_empty() {
                query.append_pair("scope", &provider.scopes.join(" "));
            }
            if let (PkceMethod::S256, Some(challenge)) = (provider.pkce, pkce_challenge) {
                query
                    .append_pair("code_challenge", challenge)
                    .append_pair("code_challenge_method", "S256");
            }
            if provider.provider_type == ProviderType::AzureDevopsEntra {
                query.append_pair("resource", AZURE_DEVOPS_RESOURCE);
            }
        }
        url
    }

    /// Exchanges an authorization code for tokens.
    pub async fn exchange_code(
        &self,
        provider: &ProviderConfig,
        code: &str,
        redirect_uri: &Url,
        pkce_verifier: Option<&str>,
    ) -> Result<TokenResponse, UpstreamError> {
        if provider.provider_type == ProviderType::AzureDevops {
            let form = vec![
                ("client_assertion_type", JWT_BEARER_ASSERTION.to_owned()),
                ("client_assertion", client_secret(provider)),
                ("grant_type", JWT_BEARER_GRANT.to_owned()),
                ("assertion", code.to_owned()),
                ("redirect_uri", redirect_uri.to_string()),
            ];
            return self
                .token_request(provider, Kind::Exchange, form, false)
                .await;
        }
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_string()),
        ];
        if let Some(verifier) = pkce_verifier {
            form.push(("code_verifier", verifier.to_owned()));
        }
        if provider.provider_type == ProviderType::AzureDevopsEntra {
            form.push(("resource", AZURE_DEVOPS_RESOURCE.to_owned()));
        }
        self.token_request(provider, Kind::Exchange, form, true)
            .await
    }

    /// Uses a refresh token. A provider that answers without a new refresh token keeps the old
    /// one valid, so the caller keeps it.
    pub async fn refresh(
        &self,
        provider: &ProviderConfig,
        refresh_token: &RefreshToken,
        redirect_uri: &Url,
    ) -> Result<TokenResponse, UpstreamError> {
        let form = match provider.provider_type {
            ProviderType::AzureDevops => vec![
                ("client_assertion_type", JWT_BEARER_ASSERTION.to_owned()),
                ("client_assertion", client_secret(provider)),
                ("grant_type", "refresh_token".to_owned()),
                ("assertion", refresh_token.secret().to_owned()),
                ("redirect_uri", redirect_uri.to_string()),
            ],
            ProviderType::AzureDevopsEntra => vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", refresh_token.secret().to_owned()),
                ("resource", AZURE_DEVOPS_RESOURCE.to_owned()),
                // Without the scopes Entra narrows refreshed tokens to the default consent.
                ("scope", provider.scopes.join(" ")),
            ],
            _ => vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", refresh_token.secret().to_owned()),
            ],
        };
        let authenticate = provider.provider_type != ProviderType::AzureDevops;
        self.token_request(provider, Kind::Refresh, form, authenticate)
            .await
    }

    /// Starts a device authorization (RFC 8628 §3.1).
    pub async fn device_authorize(
        &self,
        provider: &ProviderConfig,
    ) -> Result<DeviceAuthorization, UpstreamError> {
        let Some(url) = &provider.device_code_url else {
            return Err(UpstreamError::Malformed(
                "provider has no device code URL".to_owned(),
            ));
        };
        let mut form = Vec::new();
        if !provider.scopes.is_empty() {
            form.push(("scope", provider.scopes.join(" ")));
        }
        let (status, headers, body) = self
            .post_form(provider, Kind::Device, url, form, true, None)
            .await?;
        let fields = parse_body(&headers, &body, status)?;
        if !(200..300).contains(&status) || fields.contains_key("error") {
            return Err(error_from(status, &headers, &body, Some(&fields)));
        }
        serde_json::from_value(Value::Object(fields))
            .map_err(|e| UpstreamError::Malformed(format!("device authorization: {e}")))
    }

    /// Polls the token endpoint once with a device code (RFC 8628 §3.4). Pending, slow-down,
    /// expiry and denial come back as [`UpstreamError::OAuth`] with their RFC codes.
    pub async fn device_exchange(
        &self,
        provider: &ProviderConfig,
        device_code: &str,
    ) -> Result<TokenResponse, UpstreamError> {
        let form = vec![
            ("grant_type", DEVICE_GRANT.to_owned()),
            ("device_code", device_code.to_owned()),
        ];
        self.token_request(provider, Kind::Device, form, true).await
    }

    /// Revokes a grant at the provider: GitHub's grant API (DELETE with Basic client
    /// credentials), else RFC 7009 for the refresh token and then the access token.
    pub async fn revoke(
        &self,
        provider: &ProviderConfig,
        access_token: &AccessToken,
        refresh_token: Option<&RefreshToken>,
    ) -> Result<Revocation, UpstreamError> {
        let Some(url) = &provider.revoke_url else {
            return Ok(Revocation::Unsupported);
        };
        if provider.provider_type == ProviderType::Github {
            let response = self
                .http
                .delete(url.clone())
                .basic_auth(&provider.client_id, Some(client_secret(provider)))
                .header(ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .json(&serde_json::json!({ "access_token": access_token.secret() }))
                .send()
                .await
                .map_err(|e| {
                    observe(provider, Kind::Revoke, None);
                    network(e)
                })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            observe(provider, Kind::Revoke, Some((status, &headers)));
            let body = response.bytes().await.map_err(network)?;
            return match status {
                200..=299 => Ok(Revocation::Revoked),
                _ => Err(error_from(status, &headers, &body, None)),
            };
        }
        let mut tokens: Vec<(&str, &str)> = Vec::new();
        if let Some(refresh) = refresh_token {
            tokens.push((refresh.secret(), "refresh_token"));
        }
        tokens.push((access_token.secret(), "access_token"));
        for (token, hint) in tokens {
            let form = vec![
                ("token", token.to_owned()),
                ("token_type_hint", hint.to_owned()),
            ];
            let (status, headers, body) = self
                .post_form(provider, Kind::Revoke, url, form, true, None)
                .await?;
            if !(200..300).contains(&status) {
                return Err(error_from(status, &headers, &body, None));
            }
        }
        Ok(Revocation::Revoked)
    }

    /// Asks `VALIDATE_URL` whether a token is good: 2xx valid; 401 invalid; 403 invalid unless
    /// the answer says the rate limit is used up; 429 valid (a rate limit says nothing against
    /// the token). Any other status is an error, not a verdict.
    pub async fn validate(
        &self,
        provider: &ProviderConfig,
        access_token: &AccessToken,
    ) -> Result<Validity, UpstreamError> {
        let Some(url) = &provider.validate_url else {
            return Ok(Validity::Valid { user: None });
        };
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(access_token.secret())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                observe(provider, Kind::Validate, None);
                network(e)
            })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        observe(provider, Kind::Validate, Some((status, &headers)));
        let body = response.bytes().await.map_err(network)?;
        match status {
            200..=299 => Ok(Validity::Valid {
                user: serde_json::from_slice(&body).ok(),
            }),
            401 => Ok(Validity::Invalid),
            403 if rate_limit_exhausted(&headers) => Ok(Validity::RateLimited),
            403 => Ok(Validity::Invalid),
            429 => Ok(Validity::RateLimited),
            _ => Err(error_from(status, &headers, &body, None)),
        }
    }

    /// A request to the token endpoint with client authentication (unless `authenticate` is
    /// false, for assertion grants), parsed into tokens or an error.
    async fn token_request(
        &self,
        provider: &ProviderConfig,
        kind: Kind,
        form: Vec<(&'static str, String)>,
        authenticate: bool,
    ) -> Result<TokenResponse, UpstreamError> {
        // JFrog wants the client secret as a bearer token on the code exchange; it is set on
        // this request only (Coder swaps a shared client's transport, leaking it elsewhere).
        let bearer = (provider.provider_type == ProviderType::Jfrog
            && form
                .iter()
                .any(|(k, v)| *k == "grant_type" && v == "authorization_code"))
        .then(|| client_secret(provider));
        let (status, headers, body) = self
            .post_form(
                provider,
                kind,
                &provider.token_url,
                form,
                authenticate,
                bearer,
            )
            .await?;
        let fields = parse_body(&headers, &body, status)?;
        if !(200..300).contains(&status) || fields.contains_key("error") {
            return Err(error_from(status, &headers, &body, Some(&fields)));
        }
        token_response(fields)
    }

    /// POSTs a form with client authentication, retrying once with the other style when the
    /// provider says the client is not authenticated.
    async fn post_form(
        &self,
        provider: &ProviderConfig,
        kind: Kind,
        url: &Url,
        form: Vec<(&'static str, String)>,
        authenticate: bool,
        bearer: Option<String>,
    ) -> Result<(u16, HeaderMap, Vec<u8>), UpstreamError> {
        let remembered = self.auth_style(provider);
        let secret = provider
            .client_secret
            .as_ref()
            .map(|s| s.secret().to_owned());
        let first = match (&secret, &bearer) {
            (None, _) | (_, Some(_)) => AuthStyle::Params,
            _ => remembered.unwrap_or(AuthStyle::Header),
        };
        let mut style = first;
        loop {
            let mut fields = form.clone();
            let mut request = self
                .http
                .post(url.clone())
                .header(ACCEPT, "application/json");
            if authenticate {
                match (style, &secret) {
                    (AuthStyle::Header, Some(secret)) => {
                        request = request.basic_auth(
                            form_encode(&provider.client_id),
                            Some(form_encode(secret)),
                        );
                    }
                    (_, secret) => {
                        fields.push(("client_id", provider.client_id.clone()));
                        if let Some(secret) = secret {
                            fields.push(("client_secret", secret.clone()));
                        }
                    }
                }
            }
            if let Some(bearer) = &bearer {
                request = request.header(AUTHORIZATION, format!("Bearer {bearer}"));
            }
            let response = request.form(&fields).send().await.map_err(|e| {
                observe(provider, kind, None);
                network(e)
            })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            observe(provider, kind, Some((status, &headers)));
            let body = response.bytes().await.map_err(network)?.to_vec();
            let client_rejected = status == 401
                || (status == 400 && body_has_error(&body, "invalid_client"))
                || (status == 200 && body_has_error(&body, "incorrect_client_credentials"));
            let can_switch = authenticate && remembered.is_none() && style == AuthStyle::Header;
            if client_rejected && can_switch {
                style = AuthStyle::Params;
                continue;
            }
            if authenticate && secret.is_some() && bearer.is_none() && !client_rejected {
                self.remember_auth_style(provider, style);
            }
            return Ok((status, headers, body));
        }
    }

    fn auth_style(&self, provider: &ProviderConfig) -> Option<AuthStyle> {
        self.auth_styles
            .lock()
            .ok()
            .and_then(|styles| styles.get(provider.id.as_str()).copied())
    }

    fn remember_auth_style(&self, provider: &ProviderConfig, style: AuthStyle) {
        if let Ok(mut styles) = self.auth_styles.lock() {
            styles.insert(provider.id.to_string(), style);
        }
    }
}

fn client_secret(provider: &ProviderConfig) -> String {
    provider
        .client_secret
        .as_ref()
        .map(|s| s.secret().to_owned())
        .unwrap_or_default()
}

/// RFC 6749 §2.3.1: Basic credentials are form-encoded before base64.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn network(e: reqwest::Error) -> UpstreamError {
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

fn body_has_error(body: &[u8], code: &str) -> bool {
    let text = String::from_utf8_lossy(body);
    serde_json::from_str::<Map<String, Value>>(&text)
        .ok()
        .and_then(|m| m.get("error").and_then(Value::as_str).map(|e| e == code))
        .or_else(|| {
            url::form_urlencoded::parse(text.as_bytes())
                .find(|(k, _)| k == "error")
                .map(|(_, v)| v == code)
        })
        .unwrap_or(false)
}

/// JSON or form-encoded (GitHub without `Accept: application/json`) answer fields.
fn parse_body(
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

fn error_from(
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

fn token_response(mut fields: Map<String, Value>) -> Result<TokenResponse, UpstreamError> {
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
    let expires_in = match fields.remove("expires_in") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|n| *n > 0);
    Ok(TokenResponse {
        access_token,
        refresh_token,
        expires_in,
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn rate_limit_headers() {
        let mut headers = HeaderMap::new();
        assert!(!rate_limit_exhausted(&headers));
        headers.insert("X-RateLimit-Remaining", HeaderValue::from_static("5000"));
        assert!(!rate_limit_exhausted(&headers));
        headers.insert("X-RateLimit-Remaining", HeaderValue::from_static("0"));
        assert!(rate_limit_exhausted(&headers));
        let mut ietf = HeaderMap::new();
        ietf.insert("RateLimit-Remaining", HeaderValue::from_static("0"));
        assert!(rate_limit_exhausted(&ietf));
    }

    #[test]
    fn github_error_with_200_is_an_error() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = br#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired."}"#;
        let fields = parse_body(&headers, body, 200).unwrap();
        let err = error_from(200, &headers, body, Some(&fields));
        assert_eq!(err.oauth_code(), Some("bad_refresh_token"));
    }

    #[test]
    fn form_encoded_token_answers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        let fields = parse_body(
            &headers,
            b"access_token=gho_x&scope=repo&token_type=bearer",
            200,
        )
        .unwrap();
        let tokens = token_response(fields).unwrap();
        assert_eq!(tokens.access_token.secret(), "gho_x");
        assert_eq!(tokens.expires_in, None);
        assert_eq!(tokens.fields["scope"], "repo");
    }

    #[test]
    fn expires_in_as_string_or_number() {
        let fields = |v: Value| {
            let mut m = Map::new();
            m.insert("access_token".into(), "a".into());
            m.insert("expires_in".into(), v);
            m
        };
        assert_eq!(
            token_response(fields(Value::from(3600)))
                .unwrap()
                .expires_in,
            Some(3600)
        );
        assert_eq!(
            token_response(fields(Value::from("28800")))
                .unwrap()
                .expires_in,
            Some(28800)
        );
        assert_eq!(
            token_response(fields(Value::from(0))).unwrap().expires_in,
            None
        );
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééééé", 2), "éé…");
    }
}
