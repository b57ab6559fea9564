//! Refreshing a link's tokens without ever logging the user out by accident.
//!
//! - One refresh at a time per (user, provider): the first caller refreshes in a task of its own
//!   (it completes even if that caller hangs up: the old refresh token may already be spent),
//!   later callers wait for that task and share its result.
//! - The new pair is stored before anything else can fail, and only if the stored refresh token
//!   is still the one that was used; a loser of a race — in this process or on another replica —
//!   returns the winner's tokens and records no failure.
//! - Failures are classified by [`classify`]: only a refusal of the refresh token itself clears
//!   it; rate limits, server errors and timeouts are retried with backoff and never destroy
//!   anything.

use std::time::{Duration, Instant};

use extauth_providers::{ProviderConfig, ProviderType, RefreshToken};

use crate::clock::now;
use crate::failure::Failure as DomainFailure;
use crate::link_secrets::{open_fresh, purpose, seal};
use crate::state::AppState;
use crate::store::LinkRecord;
use crate::upstream::{UpstreamError, Validity};

/// What a refresh failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasting {
    /// The refresh token is dead: clear it, cache the reason, never send it again.
    Permanent,
    /// A passing problem: keep everything, retry with backoff, tell the caller to try later.
    Transient,
}

/// OAuth error codes that mean the refresh token (or the client) is refused for good.
pub const PERMANENT_CODES: [&str; 6] = [
    "invalid_grant",                // RFC 6749; GitLab, oidc-provider
    "bad_refresh_token",            // GitHub (with HTTP 200)
    "unauthorized_client",          // RFC 6749; Gitea
    "unsupported_grant_type",       // RFC 6749: refresh not supported
    "incorrect_client_credentials", // GitHub (with HTTP 200)
    "invalid_client",               // RFC 6749 §5.2
];

/// OAuth error codes that say "later", whatever the HTTP status.
pub const TRANSIENT_CODES: [&str; 3] = ["temporarily_unavailable", "server_error", "slow_down"];

/// The classification table. In order:
///
/// | answer | failure |
/// |---|---|
/// | no answer (connection refused or reset, timeout) | transient |
/// | HTTP 429, any 5xx | transient |
/// | HTTP 403 (rate limited or not: no provider refuses refresh tokens with it) | transient |
/// | an error code in [`TRANSIENT_CODES`] | transient |
/// | an error code in [`PERMANENT_CODES`] (any status, GitHub uses 200) | permanent |
/// | any other HTTP 400 or 401 | permanent |
/// | anything else (404, a redirect, an unreadable 2xx) | transient |
pub fn classify(error: &UpstreamError) -> Lasting {
    let (status, code) = match error {
        UpstreamError::Network(_) | UpstreamError::Malformed(_) => return Lasting::Transient,
        UpstreamError::OAuth { status, code, .. } => (*status, Some(code.as_str())),
        UpstreamError::Status { status, .. } => (*status, None),
    };
    if status == 429 || status >= 500 || status == 403 {
        return Lasting::Transient;
    }
    match code {
        Some(code) if TRANSIENT_CODES.contains(&code) => Lasting::Transient,
        Some(code) if PERMANENT_CODES.contains(&code) => Lasting::Permanent,
        _ if matches!(status, 400 | 401) => Lasting::Permanent,
        _ => Lasting::Transient,
    }
}

/// Whether a failed revocation is worth retrying. As [`classify`], except that a 404 is final:
/// nothing is there to revoke (GitHub answers 404 for a grant that is already gone), and a
/// wrong URL will not start working by retrying.
pub fn classify_revocation(error: &UpstreamError) -> Lasting {
    match error {
        UpstreamError::Status { status: 404, .. } | UpstreamError::OAuth { status: 404, .. } => {
            Lasting::Permanent
        }
        other => classify(other),
    }
}

/// (user id, provider id).
/// A refresh that produced tokens.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// The stored link after the refresh (possibly another caller's).
    pub link: LinkRecord,
    /// `false` when the provider's validation rejected the new token (it stays stored).
    pub valid: bool,
}

/// Why a refresh did not produce a token.
#[derive(Debug)]
pub enum RefreshFailure {
    /// The refresh token is dead; the reason is cached on the link.
    Permanent,
    /// Nothing changed; the last error after the retries.
    Transient(UpstreamError),
    /// The link disappeared meanwhile, or its provider is gone.
    Gone,
    /// Storage or decryption failed.
    Internal(DomainFailure),
}

fn count(provider_id: &str, outcome: &'static str) {
    metrics::counter!("extauth_refreshes_total", "provider" => provider_id.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Refreshes `link` once. Callers arriving while a refresh of the same link runs wait for it
/// and get its result instead of refreshing again.
pub async fn refresh(state: &AppState, link: &LinkRecord) -> Result<Refreshed, RefreshFailure> {
    // One flight per account: accounts of one provider refresh independently.
    let slot = if link.account.is_empty() {
        link.provider_id.clone()
    } else {
        format!("{}/{}", link.provider_id, link.account)
    };
    let lock = state.refresh_locks.get(&link.user_id, &slot);
    let task_state = state.clone();
    let seen = link.refresh_token.clone();
    let (user_id, provider_id) = (link.user_id.clone(), link.provider_id.clone());
    let account = link.account.clone();
    let task = tokio::spawn(async move {
        // Callers queued behind a refresh of the same link (single flight): a refresh storm
        // shows here, not as refreshes at the provider.
        metrics::gauge!("extauth_refresh_waiters").increment(1.0);
        let _guard = lock.lock().await;
        metrics::gauge!("extauth_refresh_waiters").decrement(1.0);
        // Replicas sharing a database take turns too: the in-process lock keeps this to one
        // waiter per process, the store lock to one refresh across all of them.
        let shared = task_state
            .store
            .lock(&format!("refresh:{user_id}:{slot}"))
            .await
            .map_err(|e| RefreshFailure::Internal(e.into()))?;
        let result = refresh_locked(&task_state, &user_id, &provider_id, &account, seen).await;
        shared.release().await;
        result
    });
    match task.await {
        Ok(result) => result,
        Err(e) => Err(RefreshFailure::Internal(DomainFailure::Internal(
            e.to_string(),
        ))),
    }
}

/// The current link, when its refresh token is no longer `seen`: someone else refreshed (or
/// relinked, or gave up on the token).
async fn changed(
    state: &AppState,
    user_id: &str,
    provider_id: &str,
    account: &str,
    seen: Option<&crate::crypto::Sealed>,
) -> Result<Option<LinkRecord>, RefreshFailure> {
    match state
        .store
        .link_account(user_id, provider_id, account)
        .await
    {
        Ok(Some(current)) if current.refresh_token.as_ref() != seen => Ok(Some(current)),
        Ok(Some(_)) => Ok(None),
        Ok(None) => Err(RefreshFailure::Gone),
        Err(e) => Err(RefreshFailure::Internal(e.into())),
    }
}

/// What another caller's outcome means for us.
fn joined(provider_id: &str, current: LinkRecord) -> Result<Refreshed, RefreshFailure> {
    count(provider_id, "joined");
    if current.refresh_token.is_none() && current.refresh_failure.is_some() {
        Err(RefreshFailure::Permanent)
    } else {
        Ok(Refreshed {
            link: current,
            valid: true,
        })
    }
}

async fn refresh_locked(
    state: &AppState,
    user_id: &str,
    provider_id: &str,
    account: &str,
    seen: Option<crate::crypto::Sealed>,
) -> Result<Refreshed, RefreshFailure> {
    if let Some(current) = changed(state, user_id, provider_id, account, seen.as_ref()).await? {
        return joined(provider_id, current);
    }
    let Some(provider) = state.providers.get(provider_id) else {
        return Err(RefreshFailure::Gone);
    };
    let Some(sealed) = &seen else {
        return Err(RefreshFailure::Permanent);
    };
    let refresh_token = state
        .keys
        .open_string(&purpose(user_id, provider_id, "refresh"), sealed)
        .map(RefreshToken::new)
        .map_err(|e| RefreshFailure::Internal(e.into()))?;
    let callback = provider.callback_url(&state.settings.access_url);

    let started = Instant::now();
    let mut backoff = Duration::from_millis(250);
    let outcome = loop {
        match state
            .upstream
            .refresh(provider, &refresh_token, &callback)
            .await
        {
            Ok(tokens) => break Ok(tokens),
            Err(error) if classify(&error) == Lasting::Permanent => break Err(error),
            Err(error) => {
                let budget = state.settings.refresh_retry_timeout;
                if started.elapsed() + backoff > budget {
                    break Err(error);
                }
                tracing::info!(user = user_id, provider = provider_id, error = %error, retry_in_ms = backoff.as_millis() as u64, "refresh failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    };

    let current = match state
        .store
        .link_account(user_id, provider_id, account)
        .await
    {
        Ok(Some(current)) => current,
        Ok(None) => return Err(RefreshFailure::Gone),
        Err(e) => return Err(RefreshFailure::Internal(e.into())),
    };
    match outcome {
        Ok(tokens) => {
            let mut new = seal(
                &state.keys,
                user_id,
                provider,
                &tokens,
                seen.clone(),
                current.created_at,
            );
            if tokens.refresh_token.is_none() {
                // The refresh token is kept, and with it the time it runs out.
                new.refresh_expires_at = current.refresh_expires_at;
            }
            new.account.clone_from(&current.account);
            new.is_default = current.is_default;
            new.owners.clone_from(&current.owners);
            // Persist before anything else can fail: the old refresh token may be spent.
            match state.store.replace_link_if(&new, seen.as_ref()).await {
                Ok(true) => {}
                Ok(false) => {
                    // Another replica won meanwhile; its pair is the live one.
                    return match changed(state, user_id, provider_id, account, seen.as_ref())
                        .await?
                    {
                        Some(winner) => joined(provider_id, winner),
                        None => Err(RefreshFailure::Gone),
                    };
                }
                Err(e) => return Err(RefreshFailure::Internal(e.into())),
            }
            count(provider_id, "success");
            tracing::info!(
                user = user_id,
                provider = provider_id,
                expires_at = new.expires_at,
                "token refreshed"
            );
            let valid = validate_new(state, provider, &new).await;
            Ok(Refreshed { link: new, valid })
        }
        Err(error) if classify(&error) == Lasting::Permanent => {
            // A loser of a cross-replica race sees the winner's rotation as invalid_grant.
            if let Some(winner) =
                changed(state, user_id, provider_id, account, seen.as_ref()).await?
            {
                return joined(provider_id, winner);
            }
            let reason = error.reason();
            tracing::warn!(
                user = user_id,
                provider = provider_id,
                reason,
                "refresh token refused; the user must link again"
            );
            let failed = LinkRecord {
                refresh_token: None,
                refresh_failure: Some(reason),
                updated_at: now(),
                ..current
            };
            match state.store.replace_link_if(&failed, seen.as_ref()).await {
                Ok(true) => {
                    count(provider_id, "permanent");
                    Err(RefreshFailure::Permanent)
                }
                Ok(false) => {
                    match changed(state, user_id, provider_id, account, seen.as_ref()).await? {
                        Some(winner) => joined(provider_id, winner),
                        None => Err(RefreshFailure::Gone),
                    }
                }
                Err(e) => Err(RefreshFailure::Internal(e.into())),
            }
        }
        Err(error) => {
            count(provider_id, "transient");
            tracing::warn!(user = user_id, provider = provider_id, error = %error, "refresh failed; tokens kept, a later request will try again");
            Err(RefreshFailure::Transient(error))
        }
    }
}

/// Validates a freshly refreshed token once (inside the single flight, so waiters share the
/// verdict). GitHub's read replicas can lag right after a refresh, so an "invalid" there is
/// retried briefly (50 → 200 ms, 1 s in all). A validation that errors is not a verdict.
async fn validate_new(state: &AppState, provider: &ProviderConfig, link: &LinkRecord) -> bool {
    if provider.validate_url.is_none() {
        return true;
    }
    let Ok(fresh) = open_fresh(&state.keys, link) else {
        return true;
    };
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match validate(state, provider, &fresh.access_token).await {
            Ok(Validity::Invalid) => {
                let retry = provider.provider_type == ProviderType::Github
                    && started.elapsed() + pause <= Duration::from_secs(1);
                if !retry {
                    return false;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Ok(_) => return true,
            Err(error) => {
                tracing::warn!(provider = provider.id.as_str(), error = %error, "validation of a refreshed token failed; using it unconfirmed");
                return true;
            }
        }
    }
}

/// Asks the provider whether a token is good, warning about rate limits at most once a
/// minute per provider.
pub async fn validate(
    state: &AppState,
    provider: &ProviderConfig,
    token: &extauth_providers::AccessToken,
) -> Result<Validity, UpstreamError> {
    let verdict = state.upstream.validate(provider, token).await?;
    if verdict == Validity::RateLimited {
        let mut warned = match state.warned.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        let due = warned
            .get(provider.id.as_str())
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
        if due {
            warned.insert(provider.id.to_string(), Instant::now());
            tracing::warn!(
                provider = provider.id.as_str(),
                "the provider is rate limiting token validation; tokens are treated as valid meanwhile"
            );
        }
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth(status: u16, code: &str) -> UpstreamError {
        UpstreamError::OAuth {
            status,
            code: code.to_owned(),
            description: None,
        }
    }

    fn status(status: u16, rate_limited: bool) -> UpstreamError {
        UpstreamError::Status {
            status,
            body: String::new(),
            rate_limited,
        }
    }

    /// One row of the table per test, as the issue asks.
    #[track_caller]
    fn check(error: UpstreamError, expected: Lasting) {
        assert_eq!(classify(&error), expected, "{error:?}");
    }

    #[test]
    fn invalid_grant_is_permanent() {
        check(oauth(400, "invalid_grant"), Lasting::Permanent);
    }
    #[test]
    fn bad_refresh_token_with_200_is_permanent() {
        check(oauth(200, "bad_refresh_token"), Lasting::Permanent);
    }
    #[test]
    fn unauthorized_client_is_permanent() {
        check(oauth(400, "unauthorized_client"), Lasting::Permanent);
    }
    #[test]
    fn unsupported_grant_type_is_permanent() {
        check(oauth(400, "unsupported_grant_type"), Lasting::Permanent);
    }
    #[test]
    fn incorrect_client_credentials_is_permanent() {
        check(
            oauth(200, "incorrect_client_credentials"),
            Lasting::Permanent,
        );
    }
    #[test]
    fn invalid_client_is_permanent() {
        check(oauth(401, "invalid_client"), Lasting::Permanent);
    }
    #[test]
    fn other_400_and_401_are_permanent() {
        check(status(400, false), Lasting::Permanent);
        check(status(401, false), Lasting::Permanent);
        check(oauth(400, "invalid_request"), Lasting::Permanent);
    }
    #[test]
    fn rate_limited_403_is_transient() {
        check(status(403, true), Lasting::Transient);
        check(oauth(403, "invalid_grant"), Lasting::Transient);
    }
    #[test]
    fn too_many_requests_is_transient() {
        check(status(429, false), Lasting::Transient);
        check(oauth(429, "invalid_grant"), Lasting::Transient);
    }
    #[test]
    fn server_errors_are_transient() {
        for s in [500, 502, 503, 504] {
            check(status(s, false), Lasting::Transient);
        }
        check(oauth(500, "server_error"), Lasting::Transient);
        check(oauth(400, "temporarily_unavailable"), Lasting::Transient);
    }
    #[test]
    fn timeouts_and_connection_errors_are_transient() {
        check(
            UpstreamError::Network("timed out".into()),
            Lasting::Transient,
        );
        check(
            UpstreamError::Network("connection failed".into()),
            Lasting::Transient,
        );
        check(UpstreamError::Malformed("html".into()), Lasting::Transient);
    }
    #[test]
    fn a_revocation_answered_404_is_not_retried() {
        assert_eq!(classify_revocation(&status(404, false)), Lasting::Permanent);
        assert_eq!(classify_revocation(&status(503, false)), Lasting::Transient);
        assert_eq!(
            classify_revocation(&oauth(400, "unsupported_token_type")),
            Lasting::Permanent
        );
    }

    #[test]
    fn unexpected_statuses_are_transient() {
        check(status(404, false), Lasting::Transient);
        check(status(302, false), Lasting::Transient);
    }
}
