//! Secret newtypes: values that must never reach a log line or a `Debug` dump by accident.
//!
//! None of them implements `Display`; `Debug` prints `Name([redacted])`. Reading the value takes
//! an explicit call to `secret()`, which makes every place a secret leaves its wrapper easy to
//! find with grep.

use serde::{Deserialize, Serialize};

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The secret value.
            ///
            /// # Security Warning
            ///
            /// Leaking this value gives its holder the access it grants. Never log it; log its
            /// length or a hash instead.
            pub fn secret(&self) -> &str {
                &self.0
            }

            /// Whether the value is the empty string (which providers use to mean "none").
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        /// Compared in constant time, so equality checks do not leak a prefix through timing.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
            }
        }

        impl Eq for $name {}
    };
}

secret_type!(
    /// An OAuth client secret (`CODER_EXTERNAL_AUTH_<N>_CLIENT_SECRET`).
    ClientSecret
);
secret_type!(
    /// An OAuth access token issued by a provider.
    AccessToken
);
secret_type!(
    /// An OAuth refresh token issued by a provider.
    RefreshToken
);

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // `black_box` keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let token = AccessToken::new("gho_supersecret");
        assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
        assert_eq!(
            format!("{:?}", ClientSecret::new("s")),
            "ClientSecret([redacted])"
        );
        assert_eq!(
            format!("{:?}", Some(RefreshToken::new("r"))),
            "Some(RefreshToken([redacted]))"
        );
    }

    #[test]
    fn equality_compares_values() {
        assert_eq!(AccessToken::new("abc"), AccessToken::new("abc"));
        assert_ne!(AccessToken::new("abc"), AccessToken::new("abd"));
        assert_ne!(AccessToken::new("abc"), AccessToken::new("abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn serializes_as_plain_string() {
        let json = serde_json::to_string(&AccessToken::new("t0k")).unwrap();
        assert_eq!(json, "\"t0k\"");
    }
}
