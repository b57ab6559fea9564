//! Encryption at rest: an AES-256-GCM key ring, as `CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS`.
//!
//! The first key encrypts; every key decrypts. Each sealed value records the id of the key that
//! sealed it (first 7 hex digits of sha256("aes256gcm" ‖ key), Coder's digest), so start-up can
//! refuse data sealed with a key that is not in the ring instead of failing on first use. Each
//! value is bound to its purpose (associated data, e.g. `link:<user>:<provider>:access`), so a
//! ciphertext copied into another row does not decrypt there.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::random;

/// A value sealed with a key of the ring. This is all the store ever sees of a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Which key sealed it.
    pub key_id: String,
    /// Nonce (12 bytes) followed by ciphertext and tag, base64.
    pub data: String,
}

/// The text form (JSON): `{"key_id", "data"}` with `data` in base64.
#[derive(Serialize, Deserialize)]
struct SealedText {
    key_id: String,
    data: String,
}

/// Binary formats (the embedded store's records) keep the bytes, a third smaller than base64.
impl Serialize for Sealed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            SealedText {
                key_id: self.key_id.clone(),
                data: self.data.clone(),
            }
            .serialize(serializer)
        } else {
            // Ciphertext is canonical base64 and goes as its bytes; anything else (never
            // produced by the ring) is kept verbatim, so a store returns what it was given.
            match STANDARD.decode(&self.data) {
                Ok(bytes) if STANDARD.encode(&bytes) == self.data => {
                    (&self.key_id, RAW, Bytes(&bytes)).serialize(serializer)
                }
                _ => (&self.key_id, VERBATIM, Bytes(self.data.as_bytes())).serialize(serializer),
            }
        }
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = SealedText::deserialize(deserializer)?;
            Ok(Self {
                key_id: text.key_id,
                data: text.data,
            })
        } else {
            let (key_id, form, bytes): (String, u8, ByteBuf) =
                Deserialize::deserialize(deserializer)?;
            let data = match form {
                RAW => STANDARD.encode(bytes.0),
                _ => String::from_utf8(bytes.0).map_err(serde::de::Error::custom)?,
            };
            Ok(Self { key_id, data })
        }
    }
}

/// Binary form of `data`: its base64-decoded bytes.
const RAW: u8 = 0;
/// Binary form of `data`: the string itself.
const VERBATIM: u8 = 1;

/// Bytes serialized as bytes (not as a sequence of numbers).
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

impl Sealed {
    /// A value kept unencrypted (`dbcrypt decrypt`): no key id, the bytes in base64. Like
    /// Coder's `NULL` key id.
    pub fn plaintext(value: &[u8]) -> Self {
        Self {
            key_id: String::new(),
            data: STANDARD.encode(value),
        }
    }

    /// Whether this value is stored unencrypted.
    pub fn is_plaintext(&self) -> bool {
        self.key_id.is_empty()
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed(key {}, {} bytes)", self.key_id, self.data.len())
    }
}

/// Problems with keys or sealed data.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A key is not base64 of 32 bytes.
    #[error(
        "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS: key number {index} is not a base64-encoded 32-byte key; generate one with `openssl rand -base64 32`"
    )]
    BadKey {
        /// 1-based position in the list.
        index: usize,
    },
    /// The same key appears twice.
    #[error(
        "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS: key number {index} repeats an earlier key; remove it"
    )]
    DuplicateKey {
        /// 1-based position in the list.
        index: usize,
    },
    /// Sealed with a key that is not in the ring.
    #[error(
        "data is encrypted with key {key_id}, which is not in CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS"
    )]
    UnknownKey {
        /// The key's id.
        key_id: String,
    },
    /// Tampered, truncated, or sealed for another purpose.
    #[error("encrypted value cannot be decrypted (corrupt, or moved from another record)")]
    Corrupt,
    /// Reading or writing the generated key file failed.
    #[error("token encryption key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

struct RingKey {
    id: String,
    cipher: Aes256Gcm,
}

/// The key ring. Keys never leave it and it is not `Serialize`.
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

/// Coder's key digest: the first 7 hex digits of sha256("aes256gcm" ‖ key).
pub fn key_id(key: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"aes256gcm");
    hasher.update(key);
    hex::encode(hasher.finalize())[..7].to_owned()
}

impl KeyRing {
    /// Parses the comma-separated base64 keys of `CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS`.
    pub fn parse(value: &str) -> Result<Self, CryptoError> {
        let mut keys: Vec<RingKey> = Vec::new();
        for (i, text) in value.split(',').map(str::trim).enumerate() {
            let index = i + 1;
            let bytes = STANDARD
                .decode(text)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or(CryptoError::BadKey { index })?;
            let id = key_id(&bytes);
            if keys.iter().any(|k| k.id == id) {
                return Err(CryptoError::DuplicateKey { index });
            }
            keys.push(RingKey {
                id,
                cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            });
        }
        Ok(Self { keys })
    }

    /// Loads the key kept in `path`, creating it (mode 0600) with a fresh random key first when
    /// it does not exist. Used only by the embedded store when no key is configured.
    pub fn load_or_create_file(path: &Path) -> Result<(Self, bool), CryptoError> {
        let io = |source| CryptoError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let created = match std::fs::read_to_string(path) {
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = STANDARD.encode(random::bytes::<32>());
                write_private(path, &key).map_err(io)?;
                true
            }
            Err(e) => return Err(io(e)),
        };
        let text = std::fs::read_to_string(path).map_err(io)?;
        Ok((Self::parse(text.trim())?, created))
    }

    /// Ids of the keys, the encrypting one first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Whether data sealed with `key_id` can be opened.
    pub fn has_key(&self, key_id: &str) -> bool {
        self.keys.iter().any(|k| k.id == key_id)
    }

    /// Seals `plaintext` for `purpose` with the first key.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Sealed {
        let Some(key) = self.keys.first() else {
            unreachable!("a key ring always has a key: parse rejects an empty list")
        };
        let nonce_bytes = random::bytes::<12>();
        let payload = Payload {
            msg: plaintext,
            aad: purpose.as_bytes(),
        };
        // Encryption with a valid key and a 12-byte nonce cannot fail.
        let ciphertext = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), payload)
            .unwrap_or_default();
        let mut data = nonce_bytes.to_vec();
        data.extend_from_slice(&ciphertext);
        Sealed {
            key_id: key.id.clone(),
            data: STANDARD.encode(data),
        }
    }

    /// Opens a value sealed for `purpose` (or stored in plaintext by `dbcrypt decrypt`).
    pub fn open(&self, purpose: &str, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        if sealed.is_plaintext() {
            return STANDARD
                .decode(&sealed.data)
                .map_err(|_| CryptoError::Corrupt);
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| CryptoError::UnknownKey {
                key_id: sealed.key_id.clone(),
            })?;
        let data = STANDARD
            .decode(&sealed.data)
            .map_err(|_| CryptoError::Corrupt)?;
        if data.len() < 12 + 16 {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, ciphertext) = data.split_at(12);
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Corrupt)
    }

    /// Opens a sealed UTF-8 string.
    pub fn open_string(&self, purpose: &str, sealed: &Sealed) -> Result<String, CryptoError> {
        String::from_utf8(self.open(purpose, sealed)?).map_err(|_| CryptoError::Corrupt)
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn round_trip_and_rotation() {
        let old = KeyRing::parse(&key(1)).unwrap();
        let sealed = old.seal("p", b"gho_token");
        assert_eq!(old.open("p", &sealed).unwrap(), b"gho_token");
        assert!(!sealed.data.contains("gho_token"));

        let rotated = KeyRing::parse(&format!("{},{}", key(2), key(1))).unwrap();
        assert_eq!(rotated.open("p", &sealed).unwrap(), b"gho_token");
        assert_eq!(rotated.seal("p", b"x").key_id, key_id(&[2; 32]));

        let new_only = KeyRing::parse(&key(2)).unwrap();
        assert!(matches!(
            new_only.open("p", &sealed),
            Err(CryptoError::UnknownKey { .. })
        ));
    }

    #[test]
    fn sealed_values_are_text_in_json_and_bytes_in_binary_records() {
        let ring = KeyRing::parse(&key(1)).unwrap();
        let sealed = ring.seal("p", b"gho_token");
        let json = serde_json::to_string(&sealed).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"key_id":"{}","data":"{}"}}"#,
                sealed.key_id, sealed.data
            )
        );
        assert_eq!(serde_json::from_str::<Sealed>(&json).unwrap(), sealed);
        let binary = postcard::to_allocvec(&sealed).unwrap();
        // key id (1 + 7 bytes), form (1), raw nonce, ciphertext and tag (1 + 12 + 9 + 16).
        assert_eq!(binary.len(), 8 + 1 + 1 + 12 + 9 + 16);
        assert_eq!(postcard::from_bytes::<Sealed>(&binary).unwrap(), sealed);
        for odd in [
            Sealed::plaintext(b"x"),
            Sealed {
                key_id: "k".into(),
                data: "not base64!".into(),
            },
        ] {
            let binary = postcard::to_allocvec(&odd).unwrap();
            assert_eq!(postcard::from_bytes::<Sealed>(&binary).unwrap(), odd);
        }
    }

    #[test]
    fn plaintext_values_open_without_a_key() {
        let ring = KeyRing::parse(&key(1)).unwrap();
        let plain = Sealed::plaintext(b"gho_token");
        assert!(plain.is_plaintext());
        assert_eq!(ring.open("any", &plain).unwrap(), b"gho_token");
        assert!(!ring.seal("p", b"x").is_plaintext());
    }

    #[test]
    fn purpose_binds_the_value() {
        let ring = KeyRing::parse(&key(1)).unwrap();
        let sealed = ring.seal("link:a:github:access", b"t");
        assert!(matches!(
            ring.open("link:b:github:access", &sealed),
            Err(CryptoError::Corrupt)
        ));
    }

    #[test]
    fn key_digest_is_coders() {
        // sha256("aes256gcm" ‖ 32 zero bytes), first 7 hex digits.
        let mut h = Sha256::new();
        h.update(b"aes256gcm");
        h.update([0u8; 32]);
        let expected = hex::encode(h.finalize());
        assert_eq!(key_id(&[0; 32]), expected[..7]);
        assert_eq!(key_id(&[0; 32]).len(), 7);
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(
            KeyRing::parse("nope").unwrap_err().to_string(),
            "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS: key number 1 is not a base64-encoded 32-byte key; generate one with `openssl rand -base64 32`"
        );
        assert!(matches!(
            KeyRing::parse(&format!("{},{}", key(1), key(1))),
            Err(CryptoError::DuplicateKey { index: 2 })
        ));
        assert!(KeyRing::parse(&STANDARD.encode([0u8; 16])).is_err());
    }

    #[test]
    fn key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token-encryption.key");
        let (first, created) = KeyRing::load_or_create_file(&path).unwrap();
        assert!(created);
        let (second, created) = KeyRing::load_or_create_file(&path).unwrap();
        assert!(!created);
        assert_eq!(first.key_ids(), second.key_ids());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
