//! Verifying what the IdP signs: ID tokens and logout tokens (signature from the JWKS, or HS256
//! with the client secret; issuer, audience, expiry), and `at_hash`.

use super::*;
use crate::failure::Refusal;

pub(super) fn refused(refusal: Refusal) -> Failure {
    Failure::SignInRefused(refusal)
}

/// OpenID Connect Core §3.1.3.8: an `at_hash` claim binds the ID token to the access token
/// that came with it; a mismatch means the two were not issued together (a substituted token).
/// Without the claim, or without an access token, there is nothing to compare.
pub fn check_at_hash(
    id_token: &str,
    claims: &Map<String, Value>,
    access_token: &str,
) -> Result<(), Failure> {
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
        .map_err(|e| refused(Refusal::NotAJwt(e.to_string())))?;
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
        Err(refused(Refusal::AtHash))
    }
}

impl Oidc {
    /// Verifies a JWT from the IdP (ID token or logout token): signature (RS256/ES256/PS256 from
    /// JWKS; HS256 with the client secret), `iss`, `aud`; `exp` when `check_exp`.
    pub async fn verify(
        &self,
        token: &str,
        check_exp: bool,
    ) -> Result<Map<String, Value>, Failure> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused(Refusal::NotAJwt(e.to_string())))?;
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
                return Err(refused(Refusal::Algorithm(format!("{other:?}"))));
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
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidAudience => refused(Refusal::Audience {
                        client_id: self.settings.client_id.clone(),
                    }),
                    ErrorKind::ExpiredSignature => refused(Refusal::Expired),
                    ErrorKind::InvalidIssuer => refused(Refusal::Issuer {
                        expected: self.settings.issuer.clone(),
                    }),
                    ErrorKind::InvalidSignature if header.alg == Algorithm::HS256 => {
                        refused(Refusal::Hs256Secret)
                    }
                    ErrorKind::InvalidSignature => refused(Refusal::Signature),
                    other => refused(Refusal::Invalid(format!("{other:?}"))),
                }
            })?;
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            matches!(wrong, Failure::SignInRefused(Refusal::AtHash)),
            "{wrong:?}"
        );
        assert!(
            check_at_hash(id_token, &Map::new(), access).is_ok(),
            "no claim, nothing to check"
        );
    }
}
