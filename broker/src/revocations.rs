//! Revocations that failed at unlink time, retried in the background with backoff until the
//! provider confirms or refuses for good. They are visible to their user in the API.

use std::time::Duration;

use crate::clock::now;
use crate::failure::Failure;
use crate::link_secrets::open_tokens;
use crate::random;
use crate::refresh::{Lasting, classify_revocation};
use crate::state::AppState;
use crate::store::{LinkRecord, PendingRevocation};
use crate::upstream::{Revocation, UpstreamError};

/// Longest wait between two attempts.
const MAX_BACKOFF_SECONDS: i64 = 300;

fn backoff(attempts: u32) -> i64 {
    2_i64
        .saturating_pow(attempts.saturating_sub(1))
        .min(MAX_BACKOFF_SECONDS)
}

/// Keeps a failed revocation of `link` for retrying.
pub async fn keep(
    state: &AppState,
    link: &LinkRecord,
    error: &UpstreamError,
) -> Result<(), Failure> {
    let now = now();
    let pending = PendingRevocation {
        id: random::hex_token::<8>(),
        user_id: link.user_id.clone(),
        provider_id: link.provider_id.clone(),
        access_token: link.access_token.clone(),
        refresh_token: link.refresh_token.clone(),
        attempts: 1,
        next_attempt_at: now + backoff(1),
        last_error: error.reason(),
        created_at: now,
    };
    state.store.put_pending_revocation(&pending).await?;
    Ok(())
}

/// One pass: retries every revocation that is due.
pub async fn retry_due(state: &AppState) -> Result<(), Failure> {
    let due = state.store.pending_revocations_due(now()).await?;
    // The backlog an alert watches: revocations a provider keeps refusing pile up here.
    metrics::gauge!("extauth_revocations_due").set(due.len() as f64);
    for pending in due {
        let Some(provider) = state.providers.get(&pending.provider_id) else {
            tracing::warn!(
                provider = pending.provider_id,
                "dropping a pending revocation: the provider is no longer configured"
            );
            state.store.delete_pending_revocation(&pending.id).await?;
            continue;
        };
        let as_link = LinkRecord {
            user_id: pending.user_id.clone(),
            provider_id: pending.provider_id.clone(),
            account: String::new(),
            is_default: true,
            owners: Vec::new(),
            access_token: pending.access_token.clone(),
            refresh_token: pending.refresh_token.clone(),
            expires_at: None,
            extra: None,
            refresh_failure: None,
            needs_validation: false,
            created_at: pending.created_at,
            updated_at: pending.created_at,
            refresh_expires_at: None,
        };
        let (access, refresh_token) = open_tokens(&state.keys, &as_link)?;
        match state
            .upstream
            .revoke(provider, &access, refresh_token.as_ref())
            .await
        {
            Ok(Revocation::Revoked | Revocation::Unsupported) => {
                tracing::info!(
                    user = pending.user_id,
                    provider = pending.provider_id,
                    attempts = pending.attempts + 1,
                    "pending revocation done"
                );
                state.store.delete_pending_revocation(&pending.id).await?;
            }
            Err(e) if classify_revocation(&e) == Lasting::Permanent => {
                tracing::warn!(
                    user = pending.user_id,
                    provider = pending.provider_id,
                    reason = e.reason(),
                    "the provider refused the revocation for good; giving up"
                );
                state.store.delete_pending_revocation(&pending.id).await?;
            }
            Err(e) => {
                let attempts = pending.attempts + 1;
                let retried = PendingRevocation {
                    attempts,
                    next_attempt_at: now() + backoff(attempts),
                    last_error: e.reason(),
                    ..pending
                };
                state.store.put_pending_revocation(&retried).await?;
            }
        }
    }
    Ok(())
}

/// Runs [`retry_due`] every second until the process ends.
pub fn spawn_worker(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // One replica at a time works through the list; the others skip this round.
            let lock = match state.store.try_lock("revocations").await {
                Ok(Some(lock)) => lock,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "retrying pending revocations: store unavailable");
                    continue;
                }
            };
            if let Err(e) = retry_due(&state).await {
                tracing::warn!(error = %e, "retrying pending revocations failed");
            }
            lock.release().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), 1);
        assert_eq!(backoff(2), 2);
        assert_eq!(backoff(5), 16);
        assert_eq!(backoff(30), 300);
        assert_eq!(backoff(u32::MAX), 300);
    }
}
