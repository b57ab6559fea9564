//! Signing users in with OpenID Connect (authentik first): settings (`CODER_OIDC_*`), discovery
//! with an exact issuer check, the authorization-code flow with state, PKCE and nonce, ID-token
//! verification (RS256/ES256 from JWKS; HS256 with the client secret, for authentik apps without
//! a signing key), the sign-in rules (email domains, `email_verified`, groups, sign-ups), and
//! logout (RP-initiated, back-channel).
//!
//! Users are linked by `iss`+`sub` only, never by email.

use extauth_providers::ClientSecret;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::RwLock;

use crate::error::ApiError;
use axum::http::StatusCode;

/// Validated `CODER_OIDC_*` settings.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `CODER_OIDC_ISSUER_URL`, exactly as the IdP writes it (authentik's trailing slash kept).
    pub issuer: String,
    /// `CODER_OIDC_CLIENT_ID`.
    pub client_id: String,
    client_secret: ClientSecret,
    /// `CODER_OIDC_EMAIL_DOMAIN`: `example.com` (exactly) or `*.example.com` (subdomains).
    pub email_domains: Vec<String>,
    /// `CODER_OIDC_SCOPES`.
    pub scopes: Vec<String>,
    /// `CODER_OIDC_AUTH_URL_PARAMS`.
    pub auth_url_params: Vec<(String, String)>,
    /// `CODER_OIDC_ALLOW_SIGNUPS`.
    pub allow_signups: bool,
    /// `CODER_OIDC_SIGNUPS_DISABLED_TEXT`.
    pub signups_disabled_text: Option<String>,
    /// `CODER_OIDC_IGNORE_EMAIL_VERIFIED`.
    pub ignore_email_verified: bool,
    /// `CODER_OIDC_IGNORE_USERINFO`.
    pub ignore_userinfo: bool,
    /// Claim names.
    pub username_field: String,
    /// Claim names.
    pub email_field: String,
    /// Claim names.
    pub name_field: String,
    /// Claim names.
    pub group_field: String,
    /// `CODER_OIDC_ALLOWED_GROUPS`.
    pub allowed_groups: Vec<String>,
    /// `CODER_OIDC_SIGN_IN_TEXT`.
    pub sign_in_text: String,
    /// `CODER_OIDC_ICON_URL`.
    pub icon_url: Option<String>,
    /// `CODER_DANGEROUS_OIDC_SKIP_ISSUER_CHECKS`.
    pub skip_issuer_checks: bool,
}

/// Coder settings extauth reads but does not implement: accepted with a warning.
const IGNORED: &[&str] = &[
    "CODER_OIDC_CLIENT_KEY_FILE",
    "CODER_OIDC_CLIENT_CERT_FILE",
    "CODER_OIDC_GROUP_MAPPING",
    "CODER_OIDC_GROUP_AUTO_CREATE",
    "CODER_OIDC_GROUP_REGEX_FILTER",
    "CODER_OIDC_USER_ROLE_FIELD",
    "CODER_OIDC_USER_ROLE_MAPPING",
    "CODER_OIDC_USER_ROLE_DEFAULT",
    "CODER_OIDC_ORGANIZATION_FIELD",
    "CODER_OIDC_ORGANIZATION_MAPPING",
    "CODER_OIDC_ORGANIZATION_ASSIGN_DEFAULT",
    "CODER_OIDC_ACCESS_TOKEN_CLAIMS",
    "CODER_OIDC_REDIRECT_ALLOWED_HOSTS",
];

const KNOWN: &[&str] = &[
    "CODER_OIDC_ISSUER_URL",
    "CODER_OIDC_CLIENT_ID",
    "CODER_OIDC_CLIENT_SECRET",
    "CODER_OIDC_EMAIL_DOMAIN",
    "CODER_OIDC_SCOPES",
    "CODER_OIDC_AUTH_URL_PARAMS",
    "CODER_OIDC_ALLOW_SIGNUPS",
    "CODER_OIDC_SIGNUPS_DISABLED_TEXT",
    "CODER_OIDC_IGNORE_EMAIL_VERIFIED",
    "CODER_OIDC_IGNORE_USERINFO",
    "CODER_OIDC_USERNAME_FIELD",
    "CODER_OIDC_EMAIL_FIELD",
    "CODER_OIDC_NAME_FIELD",
    "CODER_OIDC_GROUP_FIELD",
    "CODER_OIDC_ALLOWED_GROUPS",
    "CODER_OIDC_SIGN_IN_TEXT",
    "CODER_OIDC_ICON_URL",
];

/// What an OIDC session's sealed `field` (`id_token`, `refresh_token`) is bound to.
pub fn session_purpose(user_id: &str, field: &str) -> String {
    format!("oidc:{user_id}:{field}")
}

fn go_bool(variable: &str, value: &str, errors: &mut Vec<String>) -> bool {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
        other => {
            errors.push(format!(
                "{variable}: {other:?} is not a boolean; use true or false"
            ));
            false
        }
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl OidcSettings {
    /// Reads `CODER_OIDC_*` from `(name, value)` pairs. `Ok(None)` when OIDC is not configured;
    /// every problem is listed, each naming its variable. Warnings go to `warnings`.
    pub fn from_vars(
        vars: &[(String, String)],
        warnings: &mut Vec<String>,
    ) -> Result<Option<Self>, Vec<String>> {
        let map: HashMap<&str, &str> = vars
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k.as_str(), v.trim()))
            .collect();
        let mut errors = Vec::new();
        for name in map.keys().filter(|k| k.starts_with("CODER_OIDC_")) {
            if IGNORED.contains(name) {
                warnings.push(format!("{name}: not supported by extauth; ignored"));
            } else if !KNOWN.contains(name) {
                errors.push(format!(
                    "{name}: unknown setting; the OIDC settings are {}",
                    KNOWN.join(", ")
                ));
            }
        }
        let Some(issuer) = map.get("CODER_OIDC_ISSUER_URL").map(|s| (*s).to_owned()) else {
            if map.keys().any(|k| KNOWN.contains(k)) && errors.is_empty() {
                errors.push("CODER_OIDC_ISSUER_URL: required when other CODER_OIDC_* settings are set; set it to the IdP's issuer, e.g. https://authentik.example.com/application/o/extauth/".to_owned());
            }
            return if errors.is_empty() {
                Ok(None)
            } else {
                Err(errors)
            };
        };
        if url::Url::parse(&issuer).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
            errors.push(format!(
                "CODER_OIDC_ISSUER_URL: {issuer:?} is not an http(s) URL"
            ));
        }
        let get = |k: &str| map.get(k).map(|s| (*s).to_owned());
        let client_id = get("CODER_OIDC_CLIENT_ID").unwrap_or_default();
        if client_id.is_empty() {
            errors.push("CODER_OIDC_CLIENT_ID: required; set it to the client ID of the broker's application at the IdP".to_owned());
        }
        let client_secret = get("CODER_OIDC_CLIENT_SECRET").unwrap_or_default();
        if client_secret.is_empty() {
            errors.push("CODER_OIDC_CLIENT_SECRET: required; set it to the client secret of the broker's application at the IdP".to_owned());
        }
        let flag = |k: &str, default: bool, errors: &mut Vec<String>| {
            get(k).map_or(default, |v| go_bool(k, &v, errors))
        };
        let allow_signups = flag("CODER_OIDC_ALLOW_SIGNUPS", true, &mut errors);
        let ignore_email_verified = flag("CODER_OIDC_IGNORE_EMAIL_VERIFIED", false, &mut errors);
        let ignore_userinfo = flag("CODER_OIDC_IGNORE_USERINFO", false, &mut errors);
        let skip_issuer_checks = map
            .get("CODER_DANGEROUS_OIDC_SKIP_ISSUER_CHECKS")
            .is_some_and(|v| go_bool("CODER_DANGEROUS_OIDC_SKIP_ISSUER_CHECKS", v, &mut errors));
        let scopes = get("CODER_OIDC_SCOPES").map_or_else(
            || {
                ["openid", "profile", "email", "offline_access"]
                    .map(str::to_owned)
                    .to_vec()
            },
            |v| list(&v),
        );
        if !scopes.iter().any(|s| s == "openid") {
            errors.push("CODER_OIDC_SCOPES: must include openid".to_owned());
        }
        if !scopes.iter().any(|s| s == "offline_access") {
            warnings.push("CODER_OIDC_SCOPES: offline_access is not requested, so the IdP may issue no refresh token".to_owned());
        }
        let auth_url_params = match get("CODER_OIDC_AUTH_URL_PARAMS") {
            None => Vec::new(),
            Some(text) => match serde_json::from_str::<Map<String, Value>>(&text) {
                Ok(map) => map
                    .into_iter()
                    .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect(),
                Err(e) => {
                    errors.push(format!("CODER_OIDC_AUTH_URL_PARAMS: not a JSON object ({e}); write e.g. {{\"prompt\":\"login\"}}"));
                    Vec::new()
                }
            },
        };
        let email_domains: Vec<String> = get("CODER_OIDC_EMAIL_DOMAIN")
            .map(|v| {
                list(&v)
                    .into_iter()
                    .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(Self {
            issuer,
            client_id,
            client_secret: ClientSecret::new(client_secret),
            email_domains,
            scopes,
            auth_url_params,
            allow_signups,
            signups_disabled_text: get("CODER_OIDC_SIGNUPS_DISABLED_TEXT"),
            ignore_email_verified,
            ignore_userinfo,
            username_field: get("CODER_OIDC_USERNAME_FIELD")
                .unwrap_or_else(|| "preferred_username".to_owned()),
            email_field: get("CODER_OIDC_EMAIL_FIELD").unwrap_or_else(|| "email".to_owned()),
            name_field: get("CODER_OIDC_NAME_FIELD").unwrap_or_else(|| "name".to_owned()),
            group_field: get("CODER_OIDC_GROUP_FIELD").unwrap_or_else(|| "groups".to_owned()),
            allowed_groups: get("CODER_OIDC_ALLOWED_GROUPS")
                .map(|v| list(&v))
                .unwrap_or_default(),
            sign_in_text: get("CODER_OIDC_SIGN_IN_TEXT")
                .unwrap_or_else(|| "OpenID Connect".to_owned()),
            icon_url: get("CODER_OIDC_ICON_URL"),
            skip_issuer_checks,
        }))
    }

    /// The client secret (token endpoint authentication, HS256 verification).
    pub fn client_secret(&self) -> &str {
        self.client_secret.secret()
    }

    /// Whether `email`'s domain is allowed: exact domains, or `*.domain` for its subdomains.
    pub fn email_allowed(&self, email: &str) -> bool {
        if self.email_domains.is_empty() {
            return true;
        }
        let Some((_, domain)) = email.rsplit_once('@') else {
            return false;
        };
        let domain = domain.to_ascii_lowercase();
        self.email_domains
            .iter()
            .any(|allowed| match allowed.strip_prefix("*.") {
                Some(parent) => domain.ends_with(&format!(".{parent}")),
                None => domain == *allowed,
            })
    }
}

/// The IdP's discovery document (the parts used).
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// `issuer`.
    pub issuer: String,
    /// `authorization_endpoint`.
    pub authorization_endpoint: String,
    /// `token_endpoint`.
    pub token_endpoint: String,
    /// `userinfo_endpoint`.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    /// `jwks_uri`.
    pub jwks_uri: String,
    /// `end_session_endpoint`.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// `code_challenge_methods_supported`.
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// `scopes_supported`.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// `backchannel_logout_supported`.
    #[serde(default)]
    pub backchannel_logout_supported: bool,
}

struct Cached {
    discovery: Discovery,
    jwks: JwkSet,
    fetched: Instant,
}

/// The OIDC client: settings plus the cached discovery document and keys.
pub struct Oidc {
    /// Settings.
    pub settings: OidcSettings,
    http: reqwest::Client,
    cache: RwLock<Option<Cached>>,
    warned_hs256: std::sync::atomic::AtomicBool,
}

fn refused(message: impl Into<String>, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message, detail)
}

/// OpenID Connect Core §3.1.3.8: an `at_hash` claim binds the ID token to the access token
/// that came with it; a mismatch means the two were not issued together (a substituted token).
/// Without the claim, or without an access token, there is nothing to compare.
pub fn check_at_hash(
    id_token: &str,
    claims: &Map<String, Value>,
    access_token: &str,
) -> Result<(), ApiError> {
    use base64::Engine as _;
    use sha2::Digest as _;

    let Some(expected) = claims.get("at_hash").and_then(Value::as_str) else {
        return Ok(());
    };
    if access_token.is_empty() {
        return Ok(());
    }
    let alg = jsonwebtoken::decode_header(id_token)
        .map(|h| h.alg)
        .map_err(|e| refused("The ID token is not a valid JWT.", e.to_string()))?;
    // The hash of the signing algorithm, left half.
    let digest = match alg {
        Algorithm::RS384 | Algorithm::ES384 | Algorithm::PS384 | Algorithm::HS384 => {
            sha2::Sha384::digest(access_token.as_bytes()).to_vec()
        }
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::HS512 => {
            sha2::Sha512::digest(access_token.as_bytes()).to_vec()
        }
        _ => sha2::Sha256::digest(access_token.as_bytes()).to_vec(),
    };
    let actual =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2]);
    if extauth_providers::constant_time_eq(actual.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(refused(
            "The ID token does not belong to the access token sent with it.",
            "its at_hash does not match; sign in again",
        ))
    }
}

impl Oidc {
    /// A client for `settings`.
    pub fn new(settings: OidcSettings, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()?;
        Ok(Self {
            settings,
            http,
            cache: RwLock::new(None),
            warned_hs256: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Fetches discovery and keys, checking the issuer exactly.
    async fn fetch(&self) -> Result<Cached, ApiError> {
        let issuer = &self.settings.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let unavailable = |what: &str, e: String| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("The identity provider's {what} is not available."),
                e,
            )
        };
        let discovery: Discovery = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable("discovery document", format!("{url}: {}", e.without_url())))?
            .json()
            .await
            .map_err(|e| unavailable("discovery document", format!("{url}: {e}")))?;
        if discovery.issuer != *issuer {
            let detail = format!(
                "CODER_OIDC_ISSUER_URL is {issuer:?} but the IdP says its issuer is {:?}; set CODER_OIDC_ISSUER_URL to exactly that (authentik's ends with a slash)",
                discovery.issuer
            );
            if self.settings.skip_issuer_checks {
                tracing::warn!("{detail} (ignored: CODER_DANGEROUS_OIDC_SKIP_ISSUER_CHECKS)");
            } else {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "Issuer mismatch.",
                    detail,
                ));
            }
        }
        let jwks: JwkSet = self
            .http
            .get(&discovery.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable("key set (JWKS)", e.without_url().to_string()))?
            .json()
            .await
            .map_err(|e| unavailable("key set (JWKS)", e.to_string()))?;
        Ok(Cached {
            discovery,
            jwks,
            fetched: Instant::now(),
        })
    }

    /// The discovery document, fetched at most once an hour.
    pub async fn discovery(&self) -> Result<Discovery, ApiError> {
        if let Some(cached) = self.cache.read().await.as_ref() {
            if cached.fetched.elapsed() < Duration::from_secs(3600) {
                return Ok(cached.discovery.clone());
            }
        }
        let fresh = self.fetch().await?;
        let discovery = fresh.discovery.clone();
        *self.cache.write().await = Some(fresh);
        Ok(discovery)
    }

    /// The published signing keys as `kid (alg)`, for `oidc check`; fetched with discovery.
    pub async fn key_summary(&self) -> Result<Vec<String>, ApiError> {
        self.discovery().await?;
        let cache = self.cache.read().await;
        Ok(cache
            .as_ref()
            .map(|c| {
                c.jwks
                    .keys
                    .iter()
                    .map(|k| {
                        let alg = k
                            .common
                            .key_algorithm
                            .map_or_else(|| "alg unset".to_owned(), |a| format!("{a:?}"));
                        format!("{} ({alg})", k.common.key_id.as_deref().unwrap_or("no kid"))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, ApiError> {
        let find = |jwks: &JwkSet| -> Option<DecodingKey> {
            let jwk = match kid {
                Some(kid) => jwks.find(kid),
                None => jwks.keys.first(),
            }?;
            let _ = alg;
            DecodingKey::from_jwk(jwk).ok()
        };
        if let Some(key) = self.cache.read().await.as_ref().and_then(|c| find(&c.jwks)) {
            return Ok(key);
        }
        // An unknown key id: the IdP may have rotated its keys.
        let fresh = self.fetch().await?;
        let key = find(&fresh.jwks);
        *self.cache.write().await = Some(fresh);
        key.ok_or_else(|| {
            refused(
                "The ID token is signed with a key the IdP does not publish.",
                format!("key id {kid:?}"),
            )
        })
    }

    /// Verifies a JWT from the IdP (ID token or logout token): signature (RS256/ES256/PS256 from
    /// JWKS; HS256 with the client secret), `iss`, `aud`; `exp` when `check_exp`.
    pub async fn verify(
        &self,
        token: &str,
        check_exp: bool,
    ) -> Result<Map<String, Value>, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused("The ID token is not a valid JWT.", e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => {
                if !self
                    .warned_hs256
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        "the IdP signs ID tokens with HS256 (the client secret); in authentik, select a signing key for the provider to use RS256"
                    );
                }
                DecodingKey::from_secret(self.settings.client_secret().as_bytes())
            }
            alg @ (Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::PS256) => self.key_for(header.kid.as_deref(), alg).await?,
            other => {
                return Err(refused(
                    "The ID token uses an algorithm extauth does not accept.",
                    format!("{other:?}; use RS256 or ES256"),
                ));
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.settings.client_id]);
        if !self.settings.skip_issuer_checks {
            validation.set_issuer(&[&self.settings.issuer]);
        }
        validation.leeway = 60;
        validation.validate_exp = check_exp;
        validation.set_required_spec_claims(if check_exp {
            &["exp", "iss", "aud"][..]
        } else {
            &["iss", "aud"][..]
        });
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidAudience => refused(
                    "The ID token was issued for another client.",
                    format!("its aud does not contain CODER_OIDC_CLIENT_ID ({})", self.settings.client_id),
                ),
                ErrorKind::ExpiredSignature => refused("The ID token has expired.", "sign in again; check the clocks of the IdP and the broker"),
                ErrorKind::InvalidIssuer => refused(
                    "The ID token comes from another issuer.",
                    format!("expected iss {:?}", self.settings.issuer),
                ),
                ErrorKind::InvalidSignature if header.alg == Algorithm::HS256 => refused(
                    "The ID token's HS256 signature does not match CODER_OIDC_CLIENT_SECRET.",
                    "check the client secret, or select a signing key for the provider in authentik (RS256)",
                ),
                ErrorKind::InvalidSignature => refused("The ID token's signature is invalid.", ""),
                other => refused("The ID token is invalid.", format!("{other:?}")),
            }
        })?;
        Ok(data.claims)
    }

    /// Exchanges the authorization code (client_secret_basic, then client_secret_post).
    pub async fn exchange(
        &self,
        discovery: &Discovery,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Result<Map<String, Value>, ApiError> {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v.to_owned()));
        }
        let basic = self
            .http
            .post(&discovery.token_endpoint)
            .basic_auth(
                url::form_urlencoded::byte_serialize(self.settings.client_id.as_bytes())
                    .collect::<String>(),
                Some(
                    url::form_urlencoded::byte_serialize(self.settings.client_secret().as_bytes())
                        .collect::<String>(),
                ),
            )
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await;
        let response = match basic {
            Ok(r) if r.status() == 401 => {
                form.push(("client_id", self.settings.client_id.clone()));
                form.push(("client_secret", self.settings.client_secret().to_owned()));
                self.http
                    .post(&discovery.token_endpoint)
                    .header("accept", "application/json")
                    .form(&form)
                    .send()
                    .await
            }
            other => other,
        }
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "The identity provider is not reachable.",
                e.without_url().to_string(),
            )
        })?;
        let status = response.status();
        let body: Map<String, Value> = response.json().await.unwrap_or_default();
        if !status.is_success() || body.contains_key("error") {
            return Err(ApiError::bad_request(
                "The identity provider refused the sign-in code.",
                format!(
                    "HTTP {}: {} {}",
                    status.as_u16(),
                    body.get("error")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    body.get("error_description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                )
                .trim()
                .to_owned(),
            ));
        }
        Ok(body)
    }

    /// The userinfo claims for an access token; `sub` must match the ID token's.
    pub async fn userinfo(
        &self,
        discovery: &Discovery,
        access_token: &str,
        sub: &str,
    ) -> Result<Map<String, Value>, ApiError> {
        let Some(endpoint) = discovery
            .userinfo_endpoint
            .as_deref()
            .filter(|_| !self.settings.ignore_userinfo)
        else {
            return Ok(Map::new());
        };
        let claims: Map<String, Value> = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "The identity provider's userinfo endpoint failed.",
                    e.without_url().to_string(),
                )
            })?
            .json()
            .await
            .unwrap_or_default();
        if claims
            .get("sub")
            .and_then(Value::as_str)
            .is_some_and(|s| s != sub)
        {
            return Err(refused(
                "The userinfo answer is for another user.",
                "its sub differs from the ID token's",
            ));
        }
        Ok(claims)
    }
}

/// The identity an OIDC sign-in establishes, after the rules.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// Preferred username (sanitised).
    pub username: String,
    /// Email (may be empty).
    pub email: String,
    /// Display name.
    pub name: String,
    /// `sid`, when the IdP sent one.
    pub sid: Option<String>,
}

fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

/// A username made of `[a-z0-9._-]`, from the username claim, else the email's local part.
pub fn username_from(candidate: Option<&str>, email: &str) -> String {
    let raw = candidate.unwrap_or_else(|| email.split('@').next().unwrap_or_default());
    let cleaned: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let cleaned = cleaned.trim_matches('-').to_owned();
    if cleaned.is_empty() || cleaned == "me" {
        "user".to_owned()
    } else {
        cleaned
    }
}

/// Applies the sign-in rules to the merged claims (ID token, then userinfo on top).
pub fn identity(
    settings: &OidcSettings,
    id_claims: &Map<String, Value>,
    userinfo: &Map<String, Value>,
) -> Result<Identity, ApiError> {
    let mut claims = id_claims.clone();
    for (k, v) in userinfo {
        claims.insert(k.clone(), v.clone());
    }
    let subject = claim_str(id_claims, "sub")
        .ok_or_else(|| refused("The ID token has no subject (sub).", ""))?;
    let issuer = claim_str(id_claims, "iss").unwrap_or_else(|| settings.issuer.clone());
    let email = claim_str(&claims, &settings.email_field).unwrap_or_default();
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => Some(s == "true"),
        _ => None,
    };
    if verified == Some(false) && !settings.ignore_email_verified {
        return Err(refused(
            format!("Your email address {email} is not verified by the identity provider."),
            "verify it at the IdP, or an administrator sets CODER_OIDC_IGNORE_EMAIL_VERIFIED=true (authentik reports false by default)",
        ));
    }
    if !settings.email_domains.is_empty() && !settings.email_allowed(&email) {
        return Err(refused(
            format!("Your email address {email:?} is not in an allowed domain."),
            format!("allowed: {}", settings.email_domains.join(", ")),
        ));
    }
    if !settings.allowed_groups.is_empty() {
        let groups: Vec<String> = match claims.get(&settings.group_field) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => list(s),
            _ => Vec::new(),
        };
        if !groups.iter().any(|g| settings.allowed_groups.contains(g)) {
            return Err(refused(
                "You are not in a group allowed to sign in.",
                format!("allowed groups: {}", settings.allowed_groups.join(", ")),
            ));
        }
    }
    Ok(Identity {
        issuer,
        username: username_from(
            claim_str(&claims, &settings.username_field).as_deref(),
            &email,
        ),
        name: claim_str(&claims, &settings.name_field).unwrap_or_default(),
        sid: claim_str(id_claims, "sid"),
        email,
        subject,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn at_hash_is_the_left_half_of_the_access_tokens_hash() {
        // OpenID Connect Core, Appendix A.3 (an RS256 ID token).
        let id_token = "eyJhbGciOiJSUzI1NiJ9.e30.c2ln";
        let access = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y";
        let claims = |at_hash: &str| {
            let mut m = Map::new();
            m.insert("at_hash".into(), Value::from(at_hash));
            m
        };
        assert!(check_at_hash(id_token, &claims("77QmUPtjPfzWtF2AnpK9RQ"), access).is_ok());
        let wrong = check_at_hash(id_token, &claims("77QmUPtjPfzWtF2AnpK9RA"), access).unwrap_err();
        assert_eq!(wrong.status, StatusCode::FORBIDDEN);
        assert!(
            check_at_hash(id_token, &Map::new(), access).is_ok(),
            "no claim, nothing to check"
        );
    }

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn debug_never_shows_the_client_secret() {
        let mut v = base();
        v.retain(|(k, _)| k != "CODER_OIDC_CLIENT_SECRET");
        v.push((
            "CODER_OIDC_CLIENT_SECRET".to_owned(),
            "very-secret-value".to_owned(),
        ));
        let s = OidcSettings::from_vars(&v, &mut Vec::new())
            .unwrap()
            .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert_eq!(s.client_secret(), "very-secret-value");
    }

    fn base() -> Vec<(String, String)> {
        vars(&[
            (
                "CODER_OIDC_ISSUER_URL",
                "https://ak.example.com/application/o/extauth/",
            ),
            ("CODER_OIDC_CLIENT_ID", "c"),
            ("CODER_OIDC_CLIENT_SECRET", "s"),
        ])
    }

    #[test]
    fn settings_defaults_and_errors() {
        let mut warnings = Vec::new();
        let s = OidcSettings::from_vars(&base(), &mut warnings)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.issuer, "https://ak.example.com/application/o/extauth/",
            "trailing slash kept"
        );
        assert_eq!(s.scopes, ["openid", "profile", "email", "offline_access"]);
        assert!(s.allow_signups && !s.ignore_email_verified);
        assert!(
            OidcSettings::from_vars(&[], &mut warnings)
                .unwrap()
                .is_none()
        );

        let mut bad = base();
        bad.extend(vars(&[
            ("CODER_OIDC_ALLOW_SIGNUPS", "yes"),
            ("CODER_OIDC_SCOPE", "x"),
            ("CODER_OIDC_GROUP_MAPPING", "{}"),
        ]));
        let errors = OidcSettings::from_vars(&bad, &mut warnings).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e
                    == "CODER_OIDC_ALLOW_SIGNUPS: \"yes\" is not a boolean; use true or false"),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("CODER_OIDC_SCOPE: unknown setting")),
            "{errors:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w == "CODER_OIDC_GROUP_MAPPING: not supported by extauth; ignored")
        );
        let only_id = vars(&[("CODER_OIDC_CLIENT_ID", "c")]);
        assert!(
            OidcSettings::from_vars(&only_id, &mut warnings).unwrap_err()[0]
                .starts_with("CODER_OIDC_ISSUER_URL: required")
        );
    }

    #[test]
    fn email_domains_with_subdomain_rule() {
        let mut v = base();
        v.extend(vars(&[(
            "CODER_OIDC_EMAIL_DOMAIN",
            "example.com, @Corp.Example ,*.dev.example.org",
        )]));
        let s = OidcSettings::from_vars(&v, &mut Vec::new())
            .unwrap()
            .unwrap();
        for (email, ok) in [
            ("a@example.com", true),
            ("a@EXAMPLE.com", true),
            ("a@sub.example.com", false),
            ("a@corp.example", true),
            ("a@x.dev.example.org", true),
            ("a@dev.example.org", false),
            ("a@evil-example.com", false),
            ("a@example.com.evil", false),
            ("no-at-sign", false),
        ] {
            assert_eq!(s.email_allowed(email), ok, "{email}");
        }
    }

    #[test]
    fn usernames() {
        assert_eq!(username_from(Some("Alice Smith"), ""), "alice-smith");
        assert_eq!(username_from(None, "bob.jones@example.com"), "bob.jones");
        assert_eq!(username_from(Some("!!!"), ""), "user");
        assert_eq!(username_from(Some("me"), ""), "user");
    }
}
