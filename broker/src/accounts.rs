//! Users and their API and workspace tokens: finding and creating users, minting tokens with
//! their limits, listing and revoking them.

use crate::clock::now;
use crate::failure::Failure;
use crate::identity;
use crate::settings::parse_duration;
use crate::state::AppState;
pub use crate::store::{OidcClaims, TokenKind, TokenRecord, User};

/// A user by username, else by id.
pub async fn find_user(state: &AppState, name_or_id: &str) -> Result<Option<User>, Failure> {
    Ok(match state.store.user_by_username(name_or_id).await? {
        Some(user) => Some(user),
        None => state.store.user(name_or_id).await?,
    })
}

/// Stores a new user (a taken username is a conflict).
pub async fn create_user(state: &AppState, user: &User) -> Result<(), Failure> {
    state.store.create_user(user).await?;
    tracing::info!(user = user.id, username = user.username, "user created");
    Ok(())
}

/// What the user's latest OIDC sign-in said.
pub async fn oidc_claims(state: &AppState, user_id: &str) -> Result<Option<OidcClaims>, Failure> {
    Ok(state.store.oidc_claims(user_id).await?)
}

/// Whether the store answers (readiness).
pub async fn store_reachable(state: &AppState) -> Result<(), String> {
    state.store.ping().await.map_err(|e| e.to_string())
}

/// The user's tokens of `kind`.
pub async fn tokens_of(
    state: &AppState,
    user_id: &str,
    kind: TokenKind,
) -> Result<Vec<TokenRecord>, Failure> {
    Ok(state.store.tokens_of_user(user_id, kind).await?)
}

/// Revokes the token `id` if it is `owner_id`'s and of `kind`; whether it was.
pub async fn revoke_token(
    state: &AppState,
    owner_id: &str,
    kind: TokenKind,
    id: &str,
) -> Result<bool, Failure> {
    match state.store.token(id).await? {
        Some(t) if t.user_id == owner_id && t.kind == kind => {
            state.store.delete_token(id).await?;
            tracing::info!(user = owner_id, token = id, "token revoked");
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The longest lifetime written as a duration; longer ones used to wrap to "never".
const MAX_TOKEN_LIFETIME_SECS: i64 = 100 * 366 * 24 * 3600;

/// Creates a token of `user_id`, checking its name, providers and lifetime.
pub async fn create_token(
    state: &AppState,
    kind: TokenKind,
    user_id: &str,
    name: &str,
    providers: Option<Vec<String>>,
    lifetime: Option<&str>,
) -> Result<identity::Minted, Failure> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Failure::InvalidTokenName);
    }
    let providers = match providers {
        Some(_) if kind == TokenKind::Api => {
            return Err(Failure::ApiTokenNarrowed);
        }
        // An empty list once meant "unrestricted": the opposite of what it says.
        Some(ids) if ids.is_empty() => {
            return Err(Failure::NarrowedToNothing);
        }
        Some(ids) => {
            for id in &ids {
                crate::links::provider(state, id)?;
            }
            Some(ids)
        }
        None => None,
    };
    let expires_at = match lifetime.map(str::trim).filter(|l| !l.is_empty()) {
        None => None,
        Some(text) => {
            let invalid = |e: &dyn std::fmt::Display| Failure::InvalidLifetime {
                text: text.to_owned(),
                reason: e.to_string(),
            };
            let duration = parse_duration(text).map_err(|e| invalid(&e))?;
            let at = i64::try_from(duration.as_secs())
                .ok()
                .filter(|secs| *secs <= MAX_TOKEN_LIFETIME_SECS)
                .and_then(|secs| now().checked_add(secs))
                .ok_or_else(|| {
                    invalid(&"longer than 100 years; leave it empty for a token that never expires")
                })?;
            Some(at)
        }
    };
    let minted = identity::mint(kind, user_id, name, providers, expires_at);
    state.store.create_token(&minted.record).await?;
    tracing::info!(user = user_id, token = minted.record.id, kind = ?kind, "token created");
    Ok(minted)
}
