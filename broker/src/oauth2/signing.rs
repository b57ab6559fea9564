//! The keys that sign access and ID tokens: made on first start (under a store lock, so two
//! replicas starting together make one), kept sealed in the store, published as a JWKS, and
//! rotated by `extauth-broker keys rotate`. A retired key stays published until every token it
//! signed has expired, so resource servers verifying offline never see a valid token fail.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
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

/// The one algorithm keys are made for. ES256: small tokens, fast signing, supported by every
/// JOSE library (RFC 7518 §3.4); RS256 keys imported by an operator would verify too.
pub const ALGORITHM: &str = "ES256";

/// The JWS types signed: access tokens (RFC 9068) and ID tokens.
const TYPES: [&str; 2] = ["at+jwt", "JWT"];

/// The store lock taken while making the first key or rotating.
const KEYS_LOCK: &str = "oauth2-signing-keys";

/// How long the in-memory key set is trusted before it is read again (another replica may
/// have rotated).
const RELOAD_EVERY: Duration = Duration::from_secs(60);

struct Loaded {
    /// The key that signs: kid and pair.
    signer: Option<(String, Arc<EcdsaKeyPair>)>,
    /// The encoded JWS headers of the signing key, by `typ` (made once, not per token).
    headers: Vec<(&'static str, String)>,
    /// Every published key: kid, public key bytes, JWK.
    public: Vec<(String, Vec<u8>, Value)>,
    at: Instant,
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
                at: Instant::now(),
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

/// A new P-256 key as a record: the private half sealed, the public half as a JWK whose
/// `kid` is its RFC 7638 thumbprint.
pub fn generate(ring: &KeyRing) -> Result<SigningKey, Failure> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| Failure::Internal("cannot generate a signing key".to_owned()))?;
    let pair = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .map_err(|e| Failure::Internal(format!("generated signing key unusable: {e}")))?;
    let point = pair.public_key().as_ref();
    let (x, y) = (B64.encode(&point[1..33]), B64.encode(&point[33..65]));
    // RFC 7638: the members in lexicographic order, no spaces.
    let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = B64.encode(Sha256::digest(thumbprint.as_bytes()));
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": ALGORITHM});
    Ok(SigningKey {
        private_key: ring.seal(&signing_key_purpose(&kid), pkcs8.as_ref()),
        kid,
        algorithm: ALGORITHM.to_owned(),
        public_jwk: jwk.to_string(),
        created_at: now(),
        retired_at: None,
    })
}

/// Makes the first key if the store has none that signs (once across replicas).
pub async fn ensure_key(store: &dyn Store, ring: &KeyRing) -> Result<(), Failure> {
    if store
        .signing_keys()
        .await?
        .iter()
        .any(|k| k.retired_at.is_none())
    {
        return Ok(());
    }
    let lock = store.lock(KEYS_LOCK).await?;
    let result = async {
        if !store
            .signing_keys()
            .await?
            .iter()
            .any(|k| k.retired_at.is_none())
        {
            store.put_signing_key(&generate(ring)?).await?;
            tracing::info!(target: "extauth::audit", event = "oauth2.signing_key.created", "made the first token-signing key");
        }
        Ok(())
    }
    .await;
    lock.release().await;
    result
}

/// `keys rotate`: a new key signs from now on; the old ones are retired and dropped once
/// nothing they signed can still be valid (`keep` after retirement). Returns the new kid.
pub async fn rotate(store: &dyn Store, ring: &KeyRing, keep: Duration) -> Result<String, Failure> {
    let lock = store.lock(KEYS_LOCK).await?;
    let result = async {
        let new = generate(ring)?;
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
        tracing::info!(target: "extauth::audit", event = "oauth2.signing_key.rotated", kid = %new.kid, "rotated the token-signing key");
        Ok(new.kid)
    }
    .await;
    lock.release().await;
    result
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
        for key in keys.iter().filter(|k| k.algorithm == ALGORITHM) {
            if key.retired_at.is_some_and(|at| at < cutoff) {
                continue;
            }
            let jwk: Value = serde_json::from_str(&key.public_jwk)
                .map_err(|e| Failure::Internal(format!("signing key {}: {e}", key.kid)))?;
            let coordinate = |name: &str| {
                jwk[name]
                    .as_str()
                    .and_then(|v| B64.decode(v).ok())
                    .unwrap_or_default()
            };
            let mut point = vec![4u8];
            point.extend(coordinate("x"));
            point.extend(coordinate("y"));
            if key.retired_at.is_none() {
                let pkcs8 = ring.open(&signing_key_purpose(&key.kid), &key.private_key)?;
                let pair = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &pkcs8,
                    &self.rng,
                )
                .map_err(|e| Failure::Internal(format!("signing key {}: {e}", key.kid)))?;
                // Keys come oldest first: the newest unretired one wins.
                signer = Some((key.kid.clone(), Arc::new(pair)));
            }
            public.push((key.kid.clone(), point, jwk));
        }
        let headers = signer
            .as_ref()
            .map(|(kid, _)| {
                TYPES
                    .iter()
                    .map(|typ| {
                        let header = json!({"alg": ALGORITHM, "typ": typ, "kid": kid});
                        (*typ, B64.encode(header.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let loaded = Loaded {
            headers,
            signer,
            public,
            at: Instant::now(),
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

    /// Whether the keys were read longer ago than the reload period.
    pub fn stale(&self) -> bool {
        self.current().at.elapsed() >= RELOAD_EVERY
    }

    /// Whether `kid` is published.
    pub fn knows(&self, kid: &str) -> bool {
        self.current().public.iter().any(|(k, _, _)| k == kid)
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .current()
            .public
            .iter()
            .map(|(_, _, jwk)| jwk.clone())
            .collect();
        json!({ "keys": keys })
    }

    /// A compact JWS of `claims` with header type `typ`.
    pub fn sign(&self, typ: &str, claims: &impl serde::Serialize) -> Result<String, Failure> {
        let loaded = self.current();
        let (Some((_, pair)), Some((_, header))) = (
            &loaded.signer,
            loaded.headers.iter().find(|(t, _)| *t == typ),
        ) else {
            return Err(Failure::Internal(
                "no token-signing key is loaded".to_owned(),
            ));
        };
        let payload =
            serde_json::to_vec(claims).map_err(|e| Failure::Internal(format!("claims: {e}")))?;
        let mut jws = String::with_capacity(header.len() + payload.len() * 4 / 3 + 100);
        jws.push_str(header);
        jws.push('.');
        jws.push_str(&B64.encode(payload));
        let signature = pair
            .sign(&self.rng, jws.as_bytes())
            .map_err(|_| Failure::Internal("signing failed".to_owned()))?;
        jws.push('.');
        jws.push_str(&B64.encode(signature.as_ref()));
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
        if header["alg"] != ALGORITHM {
            return Ok(None);
        }
        let kid = header["kid"].as_str().unwrap_or_default();
        let loaded = self.current();
        let Some((_, point, _)) = loaded.public.iter().find(|(k, _, _)| k == kid) else {
            return Err(kid.to_owned());
        };
        let Ok(sig) = B64.decode(sig) else {
            return Ok(None);
        };
        let signed = &jws[..header_len(jws, payload)];
        let key = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
        if key.verify(signed.as_bytes(), &sig).is_err() {
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

/// `at_hash`/`c_hash` of a value for ES256 (OIDC Core §3.1.3.6): the left half of its SHA-256.
pub fn half_hash(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    B64.encode(&digest[..16])
}
