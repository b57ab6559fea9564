//! An issuer's public keys and the signature check of a workload token. Keys come from the
//! issuer's discovery document, a JWKS URL, or a file (a JWKS document — e.g. `kubectl get
//! --raw /openid/v1/jwks` — or PEM public keys). They are cached; a token naming a key not in
//! the cache fetches them again (the issuer rotated) at once, but at most five times a minute per
//! issuer, so tokens with made-up key ids cannot make the broker hammer the issuer.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};

use super::policy::KeySource;

/// How many times a minute the keys may be fetched again for an unknown key id.
const REFETCHES_A_MINUTE: usize = 5;
/// How long fetched keys are kept without a miss.
const KEEP_FOR: Duration = Duration::from_secs(3600);

/// Why a token's signature was not accepted (for the admin's log and the metric).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// Not three base64url parts with a JSON header.
    #[error("not a JWT ({0})")]
    Malformed(String),
    /// `alg` outside the allow-list (`none`, HMAC, …).
    #[error("algorithm {0:?} is not allowed")]
    Algorithm(String),
    /// No key of the issuer fits.
    #[error("no key of the issuer has id {0:?}")]
    UnknownKey(String),
    /// A key fits, the signature does not.
    #[error("the signature does not verify with the issuer's key")]
    Signature,
    /// The issuer's keys could not be had.
    #[error("the issuer's keys are unavailable: {0}")]
    Unavailable(String),
}

impl KeyRefusal {
    /// The metric's label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Algorithm(_) => "algorithm",
            Self::UnknownKey(_) => "unknown_key",
            Self::Signature => "signature",
            Self::Unavailable(_) => "issuer_unavailable",
        }
    }
}

/// A token's header and claims, read before anything is checked (to find the policies).
#[derive(Debug, Clone)]
pub struct Unverified {
    /// `alg` as written.
    pub alg: String,
    /// `kid`.
    pub kid: Option<String>,
    /// The claims.
    pub claims: Map<String, Value>,
}

/// Reads a JWT without checking it.
pub fn peek(token: &str) -> Result<Unverified, KeyRefusal> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyRefusal::Malformed(
            "not three dot-separated parts".into(),
        ));
    };
    let json = |part: &str, what: &str| -> Result<Map<String, Value>, KeyRefusal> {
        let bytes = B64
            .decode(part.trim_end_matches('='))
            .map_err(|_| KeyRefusal::Malformed(format!("its {what} is not base64url")))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| KeyRefusal::Malformed(format!("its {what} is not a JSON object")))
    };
    let header = json(header, "header")?;
    let claims = json(payload, "payload")?;
    Ok(Unverified {
        alg: header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
        claims,
    })
}

/// One issuer's keys (shared by the policies that name the same issuer and source).
pub struct IssuerKeys {
    issuer: String,
    source: KeySource,
    http: reqwest::Client,
    cached: tokio::sync::RwLock<Option<(JwkSet, Instant)>>,
    /// When the keys were fetched for unknown key ids in the last minute.
    refetches: Mutex<Vec<Instant>>,
}

impl IssuerKeys {
    /// Keys of `issuer` from `source`, over `http` (which trusts the policy's CA file).
    pub fn new(issuer: &str, source: KeySource, http: reqwest::Client) -> Self {
        Self {
            issuer: issuer.to_owned(),
            source,
            http,
            cached: tokio::sync::RwLock::new(None),
            refetches: Mutex::new(Vec::new()),
        }
    }

    async fn fetch(&self) -> Result<JwkSet, KeyRefusal> {
        let unavailable = |e: String| KeyRefusal::Unavailable(e);
        let get = |url: String| async move {
            // Logged on failure: without any credentials the URL may carry.
            let shown = url::Url::parse(&url).map_or_else(
                |_| "(not a URL)".to_owned(),
                |mut u| {
                    let _ = u.set_password(None);
                    let _ = u.set_username("");
                    u.to_string()
                },
            );
            self.http
                .get(&url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| unavailable(format!("{shown}: {}", e.without_url())))?
                .json::<Value>()
                .await
                .map_err(|e| unavailable(format!("{shown}: {}", e.without_url())))
        };
        let document = match &self.source {
            KeySource::File(path) => return read_keys_file(path).map_err(unavailable),
            KeySource::JwksUrl(url) => get(url.clone()).await?,
            KeySource::Discovery => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let discovery = get(url.clone()).await?;
                if discovery["issuer"].as_str() != Some(self.issuer.as_str()) {
                    return Err(unavailable(format!(
                        "{url} names issuer {} rather than {:?}",
                        discovery["issuer"], self.issuer
                    )));
                }
                let Some(jwks_uri) = discovery["jwks_uri"].as_str() else {
                    return Err(unavailable(format!("{url} has no jwks_uri")));
                };
                get(jwks_uri.to_owned()).await?
            }
        };
        serde_json::from_value(document)
            .map_err(|e| unavailable(format!("not a JWKS document ({e})")))
    }

    /// The keys, fetching them when none are cached, the cache is old, or `missing` names a
    /// key the cache lacks (paced).
    async fn keys(&self, missing: bool) -> Result<JwkSet, KeyRefusal> {
        if let Some((set, at)) = self.cached.read().await.as_ref() {
            if !missing && at.elapsed() < KEEP_FOR {
                return Ok(set.clone());
            }
        }
        if missing {
            let mut recent = self.refetches.lock().unwrap_or_else(|e| e.into_inner());
            recent.retain(|t| t.elapsed() < Duration::from_secs(60));
            if recent.len() >= REFETCHES_A_MINUTE {
                if let Some((set, _)) = self
                    .cached
                    .try_read()
                    .ok()
                    .as_deref()
                    .and_then(Option::as_ref)
                {
                    return Ok(set.clone());
                }
            }
            recent.push(Instant::now());
        }
        let set = self.fetch().await?;
        *self.cached.write().await = Some((set.clone(), Instant::now()));
        Ok(set)
    }

    /// Checks `token`'s signature (and only that) with the issuer's keys; `allowed` are the
    /// algorithms the policy accepts.
    pub async fn verify(
        &self,
        token: &str,
        seen: &Unverified,
        allowed: &[String],
    ) -> Result<(), KeyRefusal> {
        if !allowed.contains(&seen.alg) {
            return Err(KeyRefusal::Algorithm(seen.alg.clone()));
        }
        let alg: Algorithm = seen
            .alg
            .parse()
            .map_err(|_| KeyRefusal::Algorithm(seen.alg.clone()))?;
        let mut set = self.keys(false).await?;
        let mut candidates = fitting(&set, seen.kid.as_deref(), alg);
        if candidates.is_empty() {
            set = self.keys(true).await?;
            candidates = fitting(&set, seen.kid.as_deref(), alg);
        }
        if candidates.is_empty() {
            return Err(KeyRefusal::UnknownKey(
                seen.kid.clone().unwrap_or_else(|| "(none)".into()),
            ));
        }
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        for jwk in candidates {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            if jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).is_ok() {
                return Ok(());
            }
        }
        Err(KeyRefusal::Signature)
    }
}

/// The keys that may have signed a token with `kid` and `alg`: by id when it has one (or every
/// key without an id), of the algorithm's key type, and of its `alg` when the key says one.
fn fitting<'a>(set: &'a JwkSet, kid: Option<&str>, alg: Algorithm) -> Vec<&'a Jwk> {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    set.keys
        .iter()
        .filter(|k| match (kid, k.common.key_id.as_deref()) {
            (Some(kid), Some(id)) => kid == id,
            (Some(_), None) | (None, _) => true,
        })
        .filter(|k| match &k.algorithm {
            P::RSA(_) => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            P::EllipticCurve(_) => matches!(alg, Algorithm::ES256 | Algorithm::ES384),
            P::OctetKeyPair(_) => alg == Algorithm::EdDSA,
            P::OctetKey(_) => false,
        })
        .filter(|k| {
            k.common
                .key_algorithm
                .is_none_or(|ka| format!("{ka:?}") == format!("{alg:?}"))
        })
        .collect()
}

/// A keys file: a JWKS document, or PEM `PUBLIC KEY` blocks (RSA, P-256, P-384, Ed25519).
pub fn read_keys_file(path: &Path) -> Result<JwkSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("keys_file {} cannot be read ({e})", path.display()))?;
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(&text)
            .map_err(|e| format!("keys_file {} is not a JWKS document ({e})", path.display()));
    }
    let mut keys = Vec::new();
    let blocks = pem_blocks(&text).map_err(|e| format!("keys_file {}: {e}", path.display()))?;
    for (_, der) in blocks.iter().filter(|(label, _)| label == "PUBLIC KEY") {
        keys.push(spki_to_jwk(der).map_err(|e| format!("keys_file {}: {e}", path.display()))?);
    }
    if keys.is_empty() {
        return Err(format!(
            "keys_file {} holds no JWKS document and no PEM PUBLIC KEY block",
            path.display()
        ));
    }
    serde_json::from_value(json!({ "keys": keys })).map_err(|e| e.to_string())
}

/// The PEM blocks of `text`: each one's label (`PUBLIC KEY`, `RSA PRIVATE KEY`, …) and bytes.
pub fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| "a PEM header is not closed".to_owned())?;
        let label = &after[..label_end];
        let body = &after[label_end + "-----".len()..];
        let footer = format!("-----END {label}-----");
        let end = body
            .find(&footer)
            .ok_or_else(|| format!("the PEM block {label} is not closed"))?;
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| format!("the PEM block {label} is not base64"))?;
        blocks.push((label.to_owned(), der));
        rest = &body[end + footer.len()..];
    }
    Ok(blocks)
}

/// A SubjectPublicKeyInfo as a JWK.
fn spki_to_jwk(der: &[u8]) -> Result<Value, String> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    if has(RSA) {
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::traits::PublicKeyParts as _;
        let key = rsa::RsaPublicKey::from_public_key_der(der)
            .map_err(|e| format!("an RSA key does not parse ({e})"))?;
        return Ok(json!({
            "kty": "RSA",
            "n": B64.encode(key.n().to_bytes_be()),
            "e": B64.encode(key.e().to_bytes_be()),
        }));
    }
    let point = |len: usize| -> Result<&[u8], String> {
        der.len()
            .checked_sub(len)
            .map(|start| &der[start..])
            .filter(|p| p.first() == Some(&0x04))
            .ok_or_else(|| "an EC key is not an uncompressed point".to_owned())
    };
    let (crv, size) = if has(P256) {
        ("P-256", 32)
    } else if has(P384) {
        ("P-384", 48)
    } else if has(ED25519) {
        let x = der
            .len()
            .checked_sub(32)
            .map(|s| &der[s..])
            .ok_or("an Ed25519 key is too short")?;
        return Ok(json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(x)}));
    } else {
        return Err("a key is neither RSA, P-256, P-384 nor Ed25519".to_owned());
    };
    let p = point(1 + 2 * size)?;
    Ok(json!({
        "kty": "EC",
        "crv": crv,
        "x": B64.encode(&p[1..=size]),
        "y": B64.encode(&p[1 + size..]),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_reads_alg_none_and_refuses_junk() {
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none"}"#),
            B64.encode(br#"{"iss":"x"}"#)
        );
        let seen = peek(&none).unwrap();
        assert_eq!(seen.alg, "none");
        assert_eq!(seen.claims["iss"], "x");
        assert!(matches!(peek("a.b"), Err(KeyRefusal::Malformed(_))));
        assert!(matches!(peek("!!.e30.x"), Err(KeyRefusal::Malformed(_))));
    }

    #[test]
    fn pem_blocks_are_read_with_their_label() {
        let pem =
            "junk\n-----BEGIN RSA PRIVATE KEY-----\nAAEC\nAw==\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(
            pem_blocks(pem),
            Ok(vec![("RSA PRIVATE KEY".to_owned(), vec![0, 1, 2, 3])])
        );
        assert_eq!(pem_blocks("no pem"), Ok(vec![]));
        assert!(pem_blocks("-----BEGIN X-----\nAA==\n").is_err());
    }

    #[test]
    fn pem_public_keys_become_jwks() {
        // An EC P-256 key made by ring, wrapped as SPKI the way openssl writes it.
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        let jwk = spki_to_jwk(&spki).unwrap();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(
            B64.decode(jwk["x"].as_str().unwrap()).unwrap(),
            pair.public_key().as_ref()[1..33]
        );
        assert!(spki_to_jwk(&[0x30, 0x00]).is_err());
    }
}
