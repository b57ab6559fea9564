//! The provider tokens of a link, sealed at rest: each field encrypted with the key ring and
//! bound to its user, provider and field (`purpose`), so a ciphertext moved to another row or
//! field does not open. The one place link secrets are sealed and opened.

use extauth_providers::{AccessToken, ProviderConfig, RefreshToken};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::clock::now;
use crate::crypto::{CryptoError, KeyRing, Sealed};
use crate::store::LinkRecord;
use crate::upstream::TokenResponse;

/// A token ready to hand out.
#[derive(Debug, Clone)]
pub struct Fresh {
    /// The access token.
    pub access_token: AccessToken,
    /// When it expires (`None` = never).
    pub expires_at: Option<OffsetDateTime>,
    /// `EXTRA_TOKEN_KEYS` fields.
    pub extra: Map<String, Value>,
    /// When the refresh token runs out and the user must link again (unix seconds), if said.
    pub relink_by: Option<i64>,
    /// The account at the provider (empty when unnamed).
    pub account: String,
}

/// The associated data sealing one field of a link: binds ciphertext to its row and field.
pub fn purpose(user_id: &str, provider_id: &str, field: &str) -> String {
    format!("link:{user_id}:{provider_id}:{field}")
}

/// Builds the stored link for tokens a provider just issued. `kept_refresh` is the previous
/// refresh token, kept when the provider did not send a new one.
pub fn seal(
    keys: &KeyRing,
    user_id: &str,
    provider: &ProviderConfig,
    tokens: &TokenResponse,
    kept_refresh: Option<Sealed>,
    created_at: i64,
) -> LinkRecord {
    let id = provider.id.as_str();
    let extra: Map<String, Value> = provider
        .extra_token_keys
        .iter()
        .filter_map(|k| tokens.fields.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    let now = now();
    LinkRecord {
        user_id: user_id.to_owned(),
        provider_id: id.to_owned(),
        // The caller names the account (links::save_account) or keeps it (refresh).
        account: String::new(),
        is_default: true,
        owners: Vec::new(),
        access_token: keys.seal(
            &purpose(user_id, id, "access"),
            tokens.access_token.secret().as_bytes(),
        ),
        refresh_token: tokens
            .refresh_token
            .as_ref()
            .map(|r| keys.seal(&purpose(user_id, id, "refresh"), r.secret().as_bytes()))
            .or(kept_refresh),
        expires_at: tokens.expires_in.map(|s| now.saturating_add(s)),
        extra: (!extra.is_empty()).then(|| {
            keys.seal(
                &purpose(user_id, id, "extra"),
                Value::Object(extra).to_string().as_bytes(),
            )
        }),
        refresh_failure: None,
        needs_validation: false,
        created_at,
        updated_at: now,
        refresh_expires_at: tokens
            .refresh_expires_in
            .filter(|_| tokens.refresh_token.is_some())
            .map(|s| now.saturating_add(s)),
    }
}

/// The token to hand out from a stored link.
pub fn open_fresh(keys: &KeyRing, link: &LinkRecord) -> Result<Fresh, CryptoError> {
    let (user, provider) = (&link.user_id, &link.provider_id);
    let access = keys.open_string(&purpose(user, provider, "access"), &link.access_token)?;
    let extra = match &link.extra {
        Some(sealed) => {
            let text = keys.open_string(&purpose(user, provider, "extra"), sealed)?;
            match serde_json::from_str(&text) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            }
        }
        None => Map::new(),
    };
    Ok(Fresh {
        access_token: AccessToken::new(access),
        expires_at: link
            .expires_at
            .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok()),
        extra,
        relink_by: link.refresh_expires_at,
        account: link.account.clone(),
    })
}

/// The provider's tokens of a link, decrypted (for revocation).
pub fn open_tokens(
    keys: &KeyRing,
    link: &LinkRecord,
) -> Result<(AccessToken, Option<RefreshToken>), CryptoError> {
    let (user, provider) = (&link.user_id, &link.provider_id);
    let access =
        AccessToken::new(keys.open_string(&purpose(user, provider, "access"), &link.access_token)?);
    let refresh = link
        .refresh_token
        .as_ref()
        .map(|s| keys.open_string(&purpose(user, provider, "refresh"), s))
        .transpose()?
        .map(RefreshToken::new);
    Ok((access, refresh))
}
