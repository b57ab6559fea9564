//! Signing users in with OpenID Connect (authentik first), the IdP side: settings
//! (`CODER_OIDC_*`, `settings.rs`), discovery with an exact issuer check and the signing keys
//! (here), ID-token and logout-token verification (`verify.rs`), the code exchange and userinfo
//! (here), and the sign-in rules (email domains, `email_verified`, groups; `rules.rs`). The flow
//! itself is `sign_in`.
//!
//! Users are linked by `iss`+`sub` only, never by email.

mod rules;
mod settings;
mod verify;

pub use rules::{Identity, identity, username_from};
pub use settings::{OidcSettings, session_purpose};
pub use verify::check_at_hash;
use verify::refused;

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::RwLock;

use crate::failure::{Failure, IdpPart, Refusal};
use crate::upstream::token_endpoint;

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

impl Oidc {
    /// A client for `settings`.
    pub fn new(settings: OidcSettings, timeout: Duration) -> Result<Self, reqwest::Error> {
        Self::with_roots(settings, timeout, &[])
    }

    /// The same, also trusting `extra_roots` (`EXTAUTH_UPSTREAM_CA_FILE`).
    pub fn with_roots(
        settings: OidcSettings,
        timeout: Duration,
        extra_roots: &[reqwest::Certificate],
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout);
        for root in extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = builder.build()?;
        Ok(Self {
            settings,
            http,
            cache: RwLock::new(None),
            warned_hs256: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Fetches discovery and keys, checking the issuer exactly.
    async fn fetch(&self) -> Result<Cached, Failure> {
        let issuer = &self.settings.issuer;
        let url = self.settings.internal(&format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ));
        let unavailable = |what: &'static str, e: String| Failure::IdpUnavailable {
            what: IdpPart::Document(what),
            detail: e,
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
                return Err(Failure::IssuerMismatch(detail));
            }
        }
        let jwks: JwkSet = self
            .http
            .get(self.settings.internal(&discovery.jwks_uri))
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
    pub async fn discovery(&self) -> Result<Discovery, Failure> {
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
    pub async fn key_summary(&self) -> Result<Vec<String>, Failure> {
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

    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, Failure> {
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
        key.ok_or_else(|| refused(Refusal::UnknownKey(kid.map(str::to_owned))))
    }

    /// Exchanges the authorization code (client_secret_basic, then client_secret_post).
    pub async fn exchange(
        &self,
        discovery: &Discovery,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Result<Map<String, Value>, Failure> {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v.to_owned()));
        }
        let endpoint = url::Url::parse(&self.settings.internal(&discovery.token_endpoint))
            .map_err(|e| Failure::IdpUnavailable {
                what: IdpPart::TokenEndpoint,
                detail: e.to_string(),
            })?;
        let client = token_endpoint::Client {
            id: &self.settings.client_id,
            secret: Some(self.settings.client_secret()),
        };
        let answer = token_endpoint::post(
            &self.http,
            &endpoint,
            &client,
            &form,
            true,
            token_endpoint::AuthStyle::Header,
            true,
            None,
            |_| {},
        )
        .await
        .map_err(|e| Failure::IdpUnavailable {
            what: IdpPart::Unreachable,
            detail: e.without_url().to_string(),
        })?;
        let status = answer.status;
        let body: Map<String, Value> = serde_json::from_slice(&answer.body).unwrap_or_default();
        if !(200..300).contains(&status) || body.contains_key("error") {
            return Err(Failure::SignInCodeRefused(
                format!(
                    "HTTP {}: {} {}",
                    status,
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
    ) -> Result<Map<String, Value>, Failure> {
        let Some(endpoint) = discovery
            .userinfo_endpoint
            .as_deref()
            .filter(|_| !self.settings.ignore_userinfo)
        else {
            return Ok(Map::new());
        };
        let claims: Map<String, Value> = self
            .http
            .get(self.settings.internal(endpoint))
            .bearer_auth(access_token)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| Failure::IdpUnavailable {
                what: IdpPart::Userinfo,
                detail: e.without_url().to_string(),
            })?
            .json()
            .await
            .unwrap_or_default();
        if claims
            .get("sub")
            .and_then(Value::as_str)
            .is_some_and(|s| s != sub)
        {
            return Err(refused(Refusal::UserinfoOfAnother));
        }
        Ok(claims)
    }
}
