//! The `--dev` one-time sign-in: a secret that signs in the local admin once. Only its hash is
//! kept, in memory; a restart offers a new one.

use std::sync::Mutex;

use extauth_providers::constant_time_eq;

struct Offer {
    secret_hash: String,
    user_id: String,
}

/// The sign-in link on offer, if any.
#[derive(Default)]
pub struct DevLogin(Mutex<Option<Offer>>);

impl DevLogin {
    /// Offers a sign-in as `user_id` to whoever presents the secret hashing to `secret_hash`,
    /// replacing any earlier offer.
    pub fn offer(&self, secret_hash: String, user_id: String) {
        let mut offer = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *offer = Some(Offer {
            secret_hash,
            user_id,
        });
    }

    /// The user to sign in, if `secret_hash` is the offer's; the offer is then used up.
    pub fn redeem(&self, secret_hash: &str) -> Option<String> {
        let mut offer = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let matches = offer
            .as_ref()
            .is_some_and(|o| constant_time_eq(o.secret_hash.as_bytes(), secret_hash.as_bytes()));
        if matches {
            offer.take().map(|o| o.user_id)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_is_redeemed_once_and_only_with_its_secret() {
        let login = DevLogin::default();
        assert_eq!(login.redeem("h"), None);
        login.offer("h".into(), "admin".into());
        assert_eq!(login.redeem("other"), None);
        assert_eq!(login.redeem("h"), Some("admin".into()));
        assert_eq!(login.redeem("h"), None, "used up");
    }
}
