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
use reqwest::header::{ACCEPT, HeaderMap};
use serde_json::Value;
use url::Url;

mod answers;
pub mod client_documents;
pub mod token_endpoint;

use answers::*;
pub use answers::{
    DeviceAuthorization, TokenResponse, UpstreamError, Validity, rate_limit_exhausted, truncate,
};
use token_endpoint::AuthStyle;

/// Azure DevOps' application id, the `resource` Entra ID v1 tokens must be issued for.
const AZURE_DEVOPS_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";
const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Provider error texts are cached and shown; they can be whole HTML pages.
pub const REASON_LIMIT: usize = 400;

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
    /// The GitHub App installations a user's token reaches.
    Installations,
    /// A GitHub App's own calls: its installations, an installation token.
    App,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Exchange => "exchange",
            Kind::Refresh => "refresh",
            Kind::Validate => "validate",
            Kind::Revoke => "revoke",
            Kind::Device => "device",
            Kind::Installations => "installations",
            Kind::App => "app",
        }
    }
}

/// Counts one provider request: `extauth_upstream_requests_total{provider,kind,status}` (status
/// is the HTTP status, or `network` without an answer) and, when the answer says the rate limit
/// is used up, `extauth_upstream_rate_limited_total{provider,kind}`.
fn observe(
    provider: &ProviderConfig,
    kind: Kind,
    answer: Option<(u16, &HeaderMap)>,
    started: std::time::Instant,
) {
    metrics::histogram!(
        "extauth_upstream_request_duration_seconds",
        "provider" => provider.id.to_string(),
        "kind" => kind.label(),
    )
    .record(started.elapsed().as_secs_f64());
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

/// The client for every provider.
pub struct Upstream {
    http: reqwest::Client,
    /// How each provider's token endpoint took the client's credentials: like Go's oauth2
    /// (which Coder uses), HTTP Basic is tried first and parameters after an `invalid_client`,
    /// and what worked is remembered per provider.
    auth_styles: Mutex<HashMap<String, AuthStyle>>,
}

impl Upstream {
    /// A client that never follows redirects (a provider redirect is never a token answer, and
    /// following one could leak credentials elsewhere) and gives up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        Self::with_roots(timeout, &[])
    }

    /// The same, also trusting `extra_roots` (`EXTAUTH_UPSTREAM_CA_FILE`).
    pub fn with_roots(
        timeout: Duration,
        extra_roots: &[reqwest::Certificate],
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("extauth/", env!("CARGO_PKG_VERSION")));
        for root in extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = builder.build()?;
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
        let Some(url) = &provider
            .device_code_url
            .as_ref()
            .map(|u| provider.internal(u))
        else {
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
        let Some(url) = &provider.revoke_url.as_ref().map(|u| provider.internal(u)) else {
            return Ok(Revocation::Unsupported);
        };
        let started = std::time::Instant::now();
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
                    observe(provider, Kind::Revoke, None, started);
                    network(e)
                })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            observe(provider, Kind::Revoke, Some((status, &headers)), started);
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
        let Some(url) = &provider.validate_url.as_ref().map(|u| provider.internal(u)) else {
            return Ok(Validity::Valid { user: None });
        };
        let started = std::time::Instant::now();
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(access_token.secret())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                observe(provider, Kind::Validate, None, started);
                network(e)
            })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        observe(provider, Kind::Validate, Some((status, &headers)), started);
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

    /// The accounts (users and organisations) whose GitHub App installation `access_token`
    /// reaches, from `APP_INSTALLATIONS_URL` (GitHub's `GET /user/installations`, followed over
    /// up to 10 pages of 100). `None` when the provider will not say for this token (401, 403,
    /// 404: e.g. an OAuth App's token, which has no installations).
    pub async fn installations(
        &self,
        provider: &ProviderConfig,
        url: &Url,
        access_token: &AccessToken,
    ) -> Result<Option<Vec<String>>, UpstreamError> {
        let mut owners = Vec::new();
        for page in 1..=10 {
            let mut url = provider.internal(url);
            url.query_pairs_mut()
                .append_pair("per_page", "100")
                .append_pair("page", &page.to_string());
            let started = std::time::Instant::now();
            let response = self
                .http
                .get(url)
                .bearer_auth(access_token.secret())
                .header(ACCEPT, "application/vnd.github+json")
                .send()
                .await
                .map_err(|e| {
                    observe(provider, Kind::Installations, None, started);
                    network(e)
                })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            observe(
                provider,
                Kind::Installations,
                Some((status, &headers)),
                started,
            );
            let body = response.bytes().await.map_err(network)?;
            match status {
                200..=299 => {}
                401 | 404 => return Ok(None),
                403 if !rate_limit_exhausted(&headers) => return Ok(None),
                _ => return Err(error_from(status, &headers, &body, None)),
            }
            let answer: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| UpstreamError::Malformed(format!("installations: {e}")))?;
            let listed = answer["installations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            owners.extend(
                listed
                    .iter()
                    .filter_map(|i| i["account"]["login"].as_str().map(str::to_owned)),
            );
            if listed.len() < 100 {
                break;
            }
        }
        Ok(Some(owners))
    }

    /// A GitHub App's request with its JWT (`app_jwt`): the answer's JSON, or the provider's
    /// error.
    async fn app_request(
        &self,
        provider: &ProviderConfig,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, UpstreamError> {
        let started = std::time::Instant::now();
        let response = request
            .header(ACCEPT, "application/vnd.github+json")
            .send()
            .await
            .map_err(|e| {
                observe(provider, Kind::App, None, started);
                network(e)
            })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        observe(provider, Kind::App, Some((status, &headers)), started);
        let body = response.bytes().await.map_err(network)?;
        if !(200..=299).contains(&status) {
            return Err(error_from(status, &headers, &body, None));
        }
        serde_json::from_slice(&body).map_err(|e| UpstreamError::Malformed(format!("app: {e}")))
    }

    /// The installation of a GitHub App on account `owner` (`GET /app/installations`, up to
    /// 10 pages of 100), by the app's JWT.
    pub async fn app_installation(
        &self,
        provider: &ProviderConfig,
        api: &Url,
        app_jwt: &str,
        owner: &str,
    ) -> Result<Option<u64>, UpstreamError> {
        for page in 1..=10 {
            let mut url = provider.internal(&join_api(api, "app/installations"));
            url.query_pairs_mut()
                .append_pair("per_page", "100")
                .append_pair("page", &page.to_string());
            let answer = self
                .app_request(provider, self.http.get(url).bearer_auth(app_jwt))
                .await?;
            let listed = answer.as_array().cloned().unwrap_or_default();
            if let Some(found) = listed.iter().find(|i| {
                i["account"]["login"]
                    .as_str()
                    .is_some_and(|l| l.eq_ignore_ascii_case(owner))
            }) {
                return Ok(found["id"].as_u64());
            }
            if listed.len() < 100 {
                break;
            }
        }
        Ok(None)
    }

    /// An installation token (`POST /app/installations/<id>/access_tokens`), narrowed to
    /// `repositories` and `permissions` when they are given; with when it expires (unix).
    pub async fn app_installation_token(
        &self,
        provider: &ProviderConfig,
        api: &Url,
        app_jwt: &str,
        installation_id: u64,
        narrowed: &serde_json::Value,
    ) -> Result<(AccessToken, i64), UpstreamError> {
        let url = provider.internal(&join_api(
            api,
            &format!("app/installations/{installation_id}/access_tokens"),
        ));
        let answer = self
            .app_request(
                provider,
                self.http.post(url).bearer_auth(app_jwt).json(narrowed),
            )
            .await?;
        let Some(token) = answer["token"].as_str().filter(|t| !t.is_empty()) else {
            return Err(UpstreamError::Malformed(
                "the installation token answer has no token".to_owned(),
            ));
        };
        let expires_at = answer["expires_at"]
            .as_str()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map_or_else(|| crate::clock::now() + 3600, |t| t.unix_timestamp());
        Ok((AccessToken::new(token.to_owned()), expires_at))
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
                &provider.internal(&provider.token_url),
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
        let secret = provider.client_secret.as_ref().map(|s| s.secret());
        let first = match (secret, &bearer) {
            (None, _) | (_, Some(_)) => AuthStyle::Params,
            _ => remembered.unwrap_or(AuthStyle::Header),
        };
        let started = std::time::Instant::now();
        let answer = token_endpoint::post(
            &self.http,
            url,
            &token_endpoint::Client {
                id: &provider.client_id,
                secret,
            },
            &form,
            authenticate,
            first,
            remembered.is_none(),
            bearer.as_deref(),
            |seen| observe(provider, kind, seen, started),
        )
        .await
        .map_err(network)?;
        if authenticate && secret.is_some() && bearer.is_none() && !answer.client_rejected {
            self.remember_auth_style(provider, answer.style);
        }
        Ok((answer.status, answer.headers, answer.body))
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

/// `path` under a REST API base (which may or may not end in a slash).
pub fn join_api(api: &Url, path: &str) -> Url {
    let mut base = api.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base.join(path).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{CONTENT_TYPE, HeaderValue};
    use serde_json::Map;

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
