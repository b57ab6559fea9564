//! The keys that sign access and ID tokens: made on first start (under a store lock, so two
//! replicas starting together make one), kept sealed in the store, published as a JWKS, and
//! rotated by `extauth-broker keys rotate`. A retired key stays published until every token it
//! signed has expired, so resource servers verifying offline never see a valid token fail.
//!
//! ES256 by default (small tokens, fast signing); RS256 for relying parties that know nothing
//! else (`EXTAUTH_OAUTH2_SIGNING_ALGORITHM`). Signing and verifying are ring's; only making an
//! RSA key needs the `rsa` crate.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::clock::now;
use crate::crypto::KeyRing;
use crate::failure::Failure;
use crate::store::{SigningKey, Store};

/// What binds a sealed signing key to its record.
pub fn signing_key_purpose(kid: &str) -> String {
    format!("oauth2-signing-key:{kid}")
}

/// A JWS algorithm keys are made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256 (RFC 7518 §3.4).
    #[default]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys (RFC 7518 §3.3).
    Rs256,
}

impl Algorithm {
    /// Its JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
        }
    }

    /// From its JOSE name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Algorithm::Es256),
            "RS256" => Some(Algorithm::Rs256),
            _ => None,
        }
    }
}

/// The JWS types signed: access tokens (RFC 9068) and ID tokens.
const TYPES: [&str; 2] = ["at+jwt", "JWT"];

/// The store lock taken while making the first key or rotating.
const KEYS_LOCK: &str = "oauth2-signing-keys";

/// A private key, ready to sign.
enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A public key, ready to verify.
enum Verifier {
    /// The uncompressed point.
    Ec(Vec<u8>),
    /// Modulus and exponent, big-endian.
    Rsa(Vec<u8>, Vec<u8>),
}

struct Published {
    kid: String,
    algorithm: Algorithm,
    verifier: Verifier,
    jwk: Value,
}

struct Loaded {
    /// The key that signs.
    signer: Option<Arc<Signer>>,
    /// The encoded JWS headers of the signing key, by `typ` (made once, not per token).
    headers: Vec<(&'static str, String)>,
    /// Every published key.
    public: Vec<Published>,
}

/// The signing keys, in memory.
pub struct Keys {
    loaded: RwLock<Arc<Loaded>>,
    rng: SystemRandom,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            loaded: RwLock::new(Arc::new(Loaded {
                signer: None,
                headers: Vec::new(),
                public: Vec::new(),
            })),
            rng: SystemRandom::new(),
        }
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

fn internal(what: &str) -> impl Fn(String) -> Failure + '_ {
    move |e| Failure::Internal(format!("{what}: {e}"))
}

/// A new key as a record: the private half (PKCS#8) sealed, the public half as a JWK whose
/// `kid` is its RFC 7638 thumbprint.
pub fn generate(ring: &KeyRing, algorithm: Algorithm) -> Result<SigningKey, Failure> {
    let (pkcs8, thumbprint, mut jwk) = match algorithm {
        Algorithm::Es256 => {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| Failure::Internal("cannot generate a signing key".to_owned()))?;
            let pair = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.as_ref(),
                &rng,
            )
            .map_err(|e| internal("generated signing key")(e.to_string()))?;
            let point = pair.public_key().as_ref();
            let (x, y) = (B64.encode(&point[1..33]), B64.encode(&point[33..65]));
            // RFC 7638: the required members in lexicographic order, no spaces.
            let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
            let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
            (pkcs8.as_ref().to_vec(), thumbprint, jwk)
        }
        Algorithm::Rs256 => {
            use rsa::pkcs8::EncodePrivateKey as _;
            use rsa::traits::PublicKeyParts as _;
            let key = rsa::RsaPrivateKey::new(&mut crate::random::OsRandom, 2048)
                .map_err(|e| internal("cannot generate an RSA key")(e.to_string()))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| internal("RSA key")(e.to_string()))?;
            let (n, e) = (
                B64.encode(key.n().to_bytes_be()),
                B64.encode(key.e().to_bytes_be()),
            );
            let thumbprint = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
            let jwk = json!({"kty": "RSA", "n": n, "e": e});
            (der.as_bytes().to_vec(), thumbprint, jwk)
        }
    };
    let kid = B64.encode(Sha256::digest(thumbprint.as_bytes()));
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk["alg"] = json!(algorithm.name());
    Ok(SigningKey {
        private_key: ring.seal(&signing_key_purpose(&kid), &pkcs8),
        kid,
        algorithm: algorithm.name().to_owned(),
        public_jwk: jwk.to_string(),
        created_at: now(),
        retired_at: None,
    })
}

/// Makes the first key if the store has none that signs (once across replicas).
pub async fn ensure_key(
    store: &dyn Store,
    ring: &KeyRing,
    algorithm: Algorithm,
) -> Result<(), Failure> {
    let signing = |keys: &[SigningKey]| keys.iter().any(|k| k.retired_at.is_none());
    if signing(&store.signing_keys().await?) {
        return Ok(());
    }
    let lock = store.lock(KEYS_LOCK).await?;
    let result = async {
        if !signing(&store.signing_keys().await?) {
            let key = generate(ring, algorithm)?;
            store.put_signing_key(&key).await?;
            tracing::info!(target: "extauth::audit", event = "oauth2.signing_key.created", kid = %key.kid, algorithm = algorithm.name(), "made the first token-signing key");
        }
        Ok(())
    }
    .await;
    lock.release().await;
    result
}

/// `keys rotate`: a new key signs from now on; the old ones are retired and dropped once
/// nothing they signed can still be valid (`keep` after retirement). Returns the new kid.
pub async fn rotate(
    store: &dyn Store,
    ring: &KeyRing,
    algorithm: Algorithm,
    keep: Duration,
) -> Result<String, Failure> {
    let lock = store.lock(KEYS_LOCK).await?;
    let result = async {
        let new = generate(ring, algorithm)?;
        store.put_signing_key(&new).await?;
        let at = now();
        let keep = i64::try_from(keep.as_secs()).unwrap_or(i64::MAX);
        for mut key in store.signing_keys().await? {
            if key.kid == new.kid {
                continue;
            }
            match key.retired_at {
                None => {
                    key.retired_at = Some(at);
                    store.put_signing_key(&key).await?;
                }
                Some(retired) if retired.saturating_add(keep) < at => {
                    store.delete_signing_key(&key.kid).await?;
                }
                Some(_) => {}
            }
        }
        tracing::info!(target: "extauth::audit", event = "oauth2.signing_key.rotated", kid = %new.kid, algorithm = algorithm.name(), "rotated the token-signing key");
        Ok(new.kid)
    }
    .await;
    lock.release().await;
    result
}

/// The public key of a stored JWK.
fn verifier(algorithm: Algorithm, jwk: &Value) -> Verifier {
    let part = |name: &str| {
        jwk[name]
            .as_str()
            .and_then(|v| B64.decode(v).ok())
            .unwrap_or_default()
    };
    match algorithm {
        Algorithm::Es256 => {
            let mut point = vec![4u8];
            point.extend(part("x"));
            point.extend(part("y"));
            Verifier::Ec(point)
        }
        Algorithm::Rs256 => Verifier::Rsa(part("n"), part("e")),
    }
}

impl Keys {
    /// Reads the keys from the store: the newest unretired one signs, and every key retired
    /// less than `keep` ago is published.
    pub async fn load(
        &self,
        store: &dyn Store,
        ring: &KeyRing,
        keep: Duration,
    ) -> Result<(), Failure> {
        let keys = store.signing_keys().await?;
        let cutoff = now().saturating_sub(i64::try_from(keep.as_secs()).unwrap_or(i64::MAX));
        let mut signer = None;
        let mut public = Vec::new();
        for key in &keys {
            let Some(algorithm) = Algorithm::parse(&key.algorithm) else {
                tracing::warn!(kid = %key.kid, algorithm = %key.algorithm, "a stored signing key has an unknown algorithm; skipped");
                continue;
            };
            if key.retired_at.is_some_and(|at| at < cutoff) {
                continue;
            }
            let jwk: Value = serde_json::from_str(&key.public_jwk)
                .map_err(|e| internal("signing key")(format!("{}: {e}", key.kid)))?;
            if key.retired_at.is_none() {
                let pkcs8 = ring.open(&signing_key_purpose(&key.kid), &key.private_key)?;
                let unusable = |e: String| internal("signing key")(format!("{}: {e}", key.kid));
                let pair = match algorithm {
                    Algorithm::Es256 => Signer::Ec(
                        EcdsaKeyPair::from_pkcs8(
                            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                            &pkcs8,
                            &self.rng,
                        )
                        .map_err(|e| unusable(e.to_string()))?,
                    ),
                    Algorithm::Rs256 => Signer::Rsa(
                        RsaKeyPair::from_pkcs8(&pkcs8).map_err(|e| unusable(e.to_string()))?,
                    ),
                };
                // Keys come oldest first: the newest unretired one wins.
                signer = Some((key.kid.clone(), algorithm, Arc::new(pair)));
            }
            public.push(Published {
                kid: key.kid.clone(),
                algorithm,
                verifier: verifier(algorithm, &jwk),
                jwk,
            });
        }
        let headers = signer
            .as_ref()
            .map(|(kid, algorithm, _)| {
                TYPES
                    .iter()
                    .map(|typ| {
                        let header = json!({"alg": algorithm.name(), "typ": typ, "kid": kid});
                        (*typ, B64.encode(header.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let loaded = Loaded {
            headers,
            signer: signer.map(|(_, _, pair)| pair),
            public,
        };
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The algorithms of the published keys (for the discovery document).
    pub fn algorithms(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .current()
            .public
            .iter()
            .map(|p| p.algorithm.name())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .current()
            .public
            .iter()
            .map(|p| p.jwk.clone())
            .collect();
        json!({ "keys": keys })
    }

    /// A compact JWS of `claims` with header type `typ`.
    pub fn sign(&self, typ: &str, claims: &impl serde::Serialize) -> Result<String, Failure> {
        let loaded = self.current();
        let (Some(signer), Some((_, header))) = (
            &loaded.signer,
            loaded.headers.iter().find(|(t, _)| *t == typ),
        ) else {
            return Err(Failure::Internal(
                "no token-signing key is loaded".to_owned(),
            ));
        };
        let payload = serde_json::to_vec(claims).map_err(|e| internal("claims")(e.to_string()))?;
        let mut jws = String::with_capacity(header.len() + payload.len() * 4 / 3 + 400);
        jws.push_str(header);
        jws.push('.');
        jws.push_str(&B64.encode(payload));
        let failed = |_| Failure::Internal("signing failed".to_owned());
        let signature = match signer.as_ref() {
            Signer::Ec(pair) => pair
                .sign(&self.rng, jws.as_bytes())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            Signer::Rsa(pair) => {
                let mut out = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    jws.as_bytes(),
                    &mut out,
                )
                .map_err(failed)?;
                out
            }
        };
        jws.push('.');
        jws.push_str(&B64.encode(signature));
        Ok(jws)
    }

    /// The claims of a JWS this broker signed, if its signature holds (nothing else is
    /// checked here). `Err(kid)` names a key it does not know (perhaps rotated elsewhere).
    pub fn verify(&self, jws: &str) -> Result<Option<Value>, String> {
        let mut parts = jws.splitn(3, '.');
        let (Some(header), Some(payload), Some(sig)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let Some(header) = B64
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        else {
            return Ok(None);
        };
        let kid = header["kid"].as_str().unwrap_or_default();
        let loaded = self.current();
        let Some(key) = loaded.public.iter().find(|p| p.kid == kid) else {
            return Err(kid.to_owned());
        };
        // The key decides the algorithm; a header naming another one is refused (no
        // algorithm confusion).
        if header["alg"] != key.algorithm.name() {
            return Ok(None);
        }
        let Ok(sig) = B64.decode(sig) else {
            return Ok(None);
        };
        let signed = &jws[..header_len(jws, payload)];
        let valid = match &key.verifier {
            Verifier::Ec(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed.as_bytes(), &sig)
                    .is_ok()
            }
            Verifier::Rsa(n, e) => signature::RsaPublicKeyComponents { n, e }
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    signed.as_bytes(),
                    &sig,
                )
                .is_ok(),
        };
        if !valid {
            return Ok(None);
        }
        Ok(B64
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok()))
    }
}

/// The length of `header.payload` in `jws`.
fn header_len(jws: &str, payload: &str) -> usize {
    jws.find('.').map_or(0, |dot| dot + 1 + payload.len())
}

/// `at_hash` of an access token (OIDC Core §3.1.3.6): the left half of its SHA-256 (both
/// algorithms hash with SHA-256).
pub fn half_hash(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    B64.encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::parse(&base64::engine::general_purpose::STANDARD.encode([3u8; 32])).unwrap()
    }

    #[test]
    fn both_algorithms_sign_and_verify_and_refuse_confusion() {
        for algorithm in [Algorithm::Es256, Algorithm::Rs256] {
            let ring = ring();
            let record = generate(&ring, algorithm).unwrap();
            let store =
                crate::store::SledStore::open(&tempfile::tempdir().unwrap().keep()).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let keys = Keys::default();
            runtime.block_on(async {
                store.put_signing_key(&record).await.unwrap();
                keys.load(&store, &ring, Duration::from_secs(60))
                    .await
                    .unwrap();
            });
            let jws = keys.sign("at+jwt", &json!({"sub": "u1"})).unwrap();
            assert_eq!(keys.verify(&jws).unwrap().unwrap()["sub"], "u1");
            assert_eq!(keys.algorithms(), [algorithm.name()]);
            // A changed payload, or the header claiming another algorithm, fails.
            let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
            let tampered = format!(
                "{}.{}.{}",
                parts[0],
                B64.encode(r#"{"sub":"u2"}"#),
                parts[2]
            );
            assert_eq!(keys.verify(&tampered).unwrap(), None);
            let other = if algorithm == Algorithm::Es256 {
                "RS256"
            } else {
                "ES256"
            };
            parts[0] =
                B64.encode(json!({"alg": other, "typ": "at+jwt", "kid": record.kid}).to_string());
            assert_eq!(keys.verify(&parts.join(".")).unwrap(), None);
            assert_eq!(keys.verify("a.b.c"), Ok(None));
        }
    }
}
