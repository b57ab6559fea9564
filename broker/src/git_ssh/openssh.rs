//! SSH key pairs in the forms `ssh` and the forges read: the public key as an `authorized_keys`
//! line (what a user pastes at GitHub or GitLab), the private key as a file `ssh -i` loads —
//! OpenSSH's own format for Ed25519 (older OpenSSH reads no other), PKCS#8 PEM for ECDSA and RSA
//! (which OpenSSH reads through its crypto library). Pure: no I/O but the random generator.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use sha2::{Digest, Sha256};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The kinds of key (`CODER_SSH_KEYGEN_ALGORITHM`, Coder's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// `ed25519` (the default: short, fast, accepted by every forge today).
    Ed25519,
    /// `ecdsa`: NIST P-256.
    Ecdsa,
    /// `rsa4096`: for servers that take nothing newer.
    Rsa4096,
}

impl KeyAlgorithm {
    /// From Coder's setting value.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "ed25519" => Some(Self::Ed25519),
            "ecdsa" => Some(Self::Ecdsa),
            "rsa4096" => Some(Self::Rsa4096),
            _ => None,
        }
    }

    /// The setting value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::Ecdsa => "ecdsa",
            Self::Rsa4096 => "rsa4096",
        }
    }
}

/// A key pair just made. The private half is a secret: sealed before it is stored.
pub struct NewKey {
    /// `ssh-ed25519 AAAA… <comment>`.
    pub public_key: String,
    /// The private key file's text.
    pub private_key: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("public_key", &self.public_key)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

/// SSH wire encoding (RFC 4251 §5).
#[derive(Default)]
struct Wire(Vec<u8>);

impl Wire {
    fn u32(&mut self, n: u32) -> &mut Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    fn string(&mut self, bytes: &[u8]) -> &mut Self {
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(bytes);
        self
    }

    /// A positive integer, big-endian, with a zero byte in front when its top bit is set.
    fn mpint(&mut self, big_endian: &[u8]) -> &mut Self {
        let trimmed: &[u8] = {
            let start = big_endian
                .iter()
                .position(|b| *b != 0)
                .unwrap_or(big_endian.len());
            &big_endian[start..]
        };
        if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
            let mut padded = vec![0];
            padded.extend_from_slice(trimmed);
            self.string(&padded)
        } else {
            self.string(trimmed)
        }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(70) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn public_line(kind: &str, blob: &[u8], comment: &str) -> String {
    format!("{kind} {} {comment}", B64.encode(blob))
}

/// ring's PKCS#8 v2 document of an Ed25519 key: its fixed prefix, then the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn ed25519(comment: &str) -> Result<NewKey, String> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "no Ed25519 key".to_owned())?;
    let document = pkcs8.as_ref();
    if document.len() < 48 || document[..16] != ED25519_PKCS8_PREFIX {
        return Err("an Ed25519 key in an unexpected form".to_owned());
    }
    let seed = &document[16..48];
    let pair = Ed25519KeyPair::from_pkcs8(document).map_err(|e| e.to_string())?;
    let public = pair.public_key().as_ref();
    let mut blob = Wire::default();
    blob.string(b"ssh-ed25519").string(public);
    // PROTOCOL.key: the unencrypted form, one key.
    let check = u32::from_le_bytes(crate::random::bytes::<4>());
    let mut secret = Vec::with_capacity(64);
    secret.extend_from_slice(seed);
    secret.extend_from_slice(public);
    let mut private = Wire::default();
    private
        .u32(check)
        .u32(check)
        .string(b"ssh-ed25519")
        .string(public)
        .string(&secret)
        .string(comment.as_bytes());
    let mut pad = 1u8;
    while private.0.len() % 8 != 0 {
        private.0.push(pad);
        pad += 1;
    }
    let mut file = Wire::default();
    file.0.extend_from_slice(b"openssh-key-v1\0");
    file.string(b"none")
        .string(b"none")
        .string(b"")
        .u32(1)
        .string(&blob.0)
        .string(&private.0);
    Ok(NewKey {
        public_key: public_line("ssh-ed25519", &blob.0, comment),
        private_key: pem("OPENSSH PRIVATE KEY", &file.0),
    })
}

fn ecdsa(comment: &str) -> Result<NewKey, String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| "no ECDSA key".to_owned())?;
    let pair = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .map_err(|e| e.to_string())?;
    let mut blob = Wire::default();
    blob.string(b"ecdsa-sha2-nistp256")
        .string(b"nistp256")
        .string(pair.public_key().as_ref());
    Ok(NewKey {
        public_key: public_line("ecdsa-sha2-nistp256", &blob.0, comment),
        private_key: pem("PRIVATE KEY", pkcs8.as_ref()),
    })
}

fn rsa4096(comment: &str) -> Result<NewKey, String> {
    use rsa::pkcs8::EncodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    let key = rsa::RsaPrivateKey::new(&mut crate::random::OsRandom, 4096)
        .map_err(|e| format!("no RSA key: {e}"))?;
    let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    let mut blob = Wire::default();
    blob.string(b"ssh-rsa")
        .mpint(&key.e().to_bytes_be())
        .mpint(&key.n().to_bytes_be());
    Ok(NewKey {
        public_key: public_line("ssh-rsa", &blob.0, comment),
        private_key: pem("PRIVATE KEY", der.as_bytes()),
    })
}

/// A new key pair of `algorithm`; `comment` ends the public line (e.g. `extauth:alice`).
pub fn generate(algorithm: KeyAlgorithm, comment: &str) -> Result<NewKey, String> {
    match algorithm {
        KeyAlgorithm::Ed25519 => ed25519(comment),
        KeyAlgorithm::Ecdsa => ecdsa(comment),
        KeyAlgorithm::Rsa4096 => rsa4096(comment),
    }
}

/// `SHA256:…`, as `ssh-keygen -l` and the forges show a key.
pub fn fingerprint(public_key: &str) -> String {
    let blob = public_key
        .split_whitespace()
        .nth(1)
        .and_then(|b| B64.decode(b).ok())
        .unwrap_or_default();
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&blob))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_shapes_ssh_reads() {
        let key = generate(KeyAlgorithm::Ed25519, "extauth:alice").unwrap();
        assert!(
            key.public_key
                .starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")
        );
        assert!(key.public_key.ends_with(" extauth:alice"));
        assert!(
            key.private_key
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        );
        assert!(!format!("{key:?}").contains("PRIVATE KEY-----"));
        let ecdsa = generate(KeyAlgorithm::Ecdsa, "c").unwrap();
        assert!(
            ecdsa
                .public_key
                .starts_with("ecdsa-sha2-nistp256 AAAAE2VjZHNh")
        );
        assert!(fingerprint(&key.public_key).starts_with("SHA256:"));
        assert_eq!(fingerprint(&key.public_key).len(), "SHA256:".len() + 43);
    }

    #[test]
    fn integers_are_ssh_mpints() {
        let mut w = Wire::default();
        w.mpint(&[0x00, 0x01, 0x00, 0x01]);
        assert_eq!(w.0, [0, 0, 0, 3, 1, 0, 1]);
        let mut w = Wire::default();
        w.mpint(&[0x80]);
        assert_eq!(w.0, [0, 0, 0, 2, 0, 0x80]);
    }
}
