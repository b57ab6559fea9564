//! Device flows in progress (RFC 8628), on the broker's side: which user a device code belongs
//! to, and the polling pace. The broker enforces `interval`, `slow_down` (+5 s) and `expires_in`
//! itself, so a client polling too fast is slowed down without the provider being asked, and an
//! expired code is refused without a call.
//!
//! Flows live in the store, not in the process: with several replicas, the poll that starts a
//! flow and the polls that follow may each reach another one. Booking a poll slot is a
//! compare-and-swap on `next_poll_ms`, so two replicas never both ask the provider at once.

use std::time::Duration;

use extauth_providers::ProviderConfig;

use crate::clock::now_millis;
use crate::failure::Failure;
use crate::identity::hash;
use crate::state::AppState;
use crate::store::{DeviceFlowRecord, Store, StoreResult};
use crate::upstream::{DeviceAuthorization, UpstreamError};

/// What `slow_down` adds to the interval (RFC 8628 §3.5).
const SLOW_DOWN_MS: i64 = 5_000;

/// What to do with a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Ask the provider now.
    Ask,
    /// Too early: answer `slow_down` without asking; the client must wait this long.
    SlowDown(Duration),
    /// The code expired.
    Expired,
    /// Not a code this user started for this provider.
    Unknown,
}

fn duration_of(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or_default())
}

/// Registers a flow the provider just started.
pub async fn start(
    store: &dyn Store,
    device_code: &str,
    user_id: &str,
    provider_id: &str,
    interval_seconds: u64,
    expires_in_seconds: u64,
) -> StoreResult<()> {
    let now = now_millis();
    let seconds = |s: u64| i64::try_from(s.max(1).saturating_mul(1000)).unwrap_or(i64::MAX);
    store
        .put_device_flow(&DeviceFlowRecord {
            code_hash: hash(device_code),
            user_id: user_id.to_owned(),
            provider_id: provider_id.to_owned(),
            interval_ms: seconds(interval_seconds),
            next_poll_ms: now,
            expires_ms: now.saturating_add(seconds(expires_in_seconds)),
        })
        .await
}

/// Decides whether a poll may go to the provider, and books the next slot if so.
pub async fn poll(
    store: &dyn Store,
    device_code: &str,
    user_id: &str,
    provider_id: &str,
) -> StoreResult<Poll> {
    let code_hash = hash(device_code);
    loop {
        let Some(flow) = store.device_flow(&code_hash).await? else {
            return Ok(Poll::Unknown);
        };
        if flow.user_id != user_id || flow.provider_id != provider_id {
            return Ok(Poll::Unknown);
        }
        let now = now_millis();
        if now >= flow.expires_ms {
            return Ok(Poll::Expired);
        }
        let mut next = flow.clone();
        let verdict = if now < flow.next_poll_ms {
            // Too fast: slowed down by 5 s without asking the provider, as it would.
            next.interval_ms += SLOW_DOWN_MS;
            Poll::SlowDown(duration_of(next.interval_ms))
        } else {
            Poll::Ask
        };
        next.next_poll_ms = now + next.interval_ms;
        if store
            .replace_device_flow_if(&next, flow.next_poll_ms)
            .await?
        {
            return Ok(verdict);
        }
        // Another replica booked this slot meanwhile: judge again against its booking.
    }
}

/// The provider said `slow_down`: add 5 s to the interval; the new interval.
pub async fn slow_down(store: &dyn Store, device_code: &str) -> StoreResult<Duration> {
    let code_hash = hash(device_code);
    loop {
        let Some(flow) = store.device_flow(&code_hash).await? else {
            return Ok(duration_of(SLOW_DOWN_MS));
        };
        let mut next = flow.clone();
        next.interval_ms += SLOW_DOWN_MS;
        next.next_poll_ms = now_millis() + next.interval_ms;
        if store
            .replace_device_flow_if(&next, flow.next_poll_ms)
            .await?
        {
            return Ok(duration_of(next.interval_ms));
        }
    }
}

/// The flow ended (linked, denied or expired).
pub async fn finish(store: &dyn Store, device_code: &str) -> StoreResult<()> {
    store.delete_device_flow(&hash(device_code)).await
}

fn rate_limited(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Status { status: 429, .. }
            | UpstreamError::Status {
                rate_limited: true,
                ..
            }
    )
}

/// Starts a device flow of `user_id` at `provider`: the code to show the user.
pub async fn begin(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
) -> Result<DeviceAuthorization, Failure> {
    let flow = state
        .upstream
        .device_authorize(provider)
        .await
        .map_err(|e| {
            if rate_limited(&e) {
                Failure::DeviceRateLimited(e)
            } else {
                Failure::DeviceAuthorize(e)
            }
        })?;
    start(
        &*state.store,
        &flow.device_code,
        user_id,
        provider.id.as_str(),
        flow.interval,
        flow.expires_in,
    )
    .await?;
    Ok(flow)
}

/// Polls a device flow once, at the pace the provider set: `Ok` once linked; otherwise the
/// RFC 8628 code (`authorization_pending`, `slow_down`, `expired_token`, `access_denied`) as
/// the error's detail.
pub async fn poll_once(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
    device_code: &str,
) -> Result<(), Failure> {
    let id = provider.id.as_str();
    let pending = |code: &str| Failure::DevicePending(code.to_owned());
    let store = &*state.store;
    match poll(store, device_code, user_id, id).await? {
        Poll::Unknown => {
            return Err(Failure::UnknownDeviceCode);
        }
        Poll::Expired => {
            finish(store, device_code).await?;
            return Err(pending("expired_token"));
        }
        Poll::SlowDown(_) => return Err(pending("slow_down")),
        Poll::Ask => {}
    }
    match state.upstream.device_exchange(provider, device_code).await {
        Ok(tokens) => {
            crate::links::save_link(state, user_id, provider, &tokens).await?;
            finish(store, device_code).await?;
            Ok(())
        }
        Err(e) => match e.oauth_code() {
            Some("authorization_pending") => Err(pending("authorization_pending")),
            Some("slow_down") => {
                slow_down(store, device_code).await?;
                Err(pending("slow_down"))
            }
            Some(code @ ("expired_token" | "access_denied")) => {
                finish(store, device_code).await?;
                Err(pending(code))
            }
            _ => Err(Failure::DeviceExchange(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn store() -> (SledStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (SledStore::open(&dir.path().join("db")).unwrap(), dir)
    }

    #[tokio::test]
    async fn pace_and_ownership() {
        let (flows, _dir) = store();
        start(&flows, "dc", "u1", "github", 1, 60).await.unwrap();
        let poll = |user: &'static str, provider: &'static str, code: &'static str| {
            let flows = &flows;
            async move { super::poll(flows, code, user, provider).await.unwrap() }
        };
        assert_eq!(poll("u2", "github", "dc").await, Poll::Unknown);
        assert_eq!(poll("u1", "gitlab", "dc").await, Poll::Unknown);
        assert_eq!(poll("u1", "github", "other").await, Poll::Unknown);
        assert_eq!(poll("u1", "github", "dc").await, Poll::Ask);
        // Immediately again: too fast, slowed down by 5 s without asking the provider.
        assert_eq!(
            poll("u1", "github", "dc").await,
            Poll::SlowDown(Duration::from_secs(6))
        );
        assert_eq!(
            slow_down(&flows, "dc").await.unwrap(),
            Duration::from_secs(11)
        );
        finish(&flows, "dc").await.unwrap();
        assert_eq!(poll("u1", "github", "dc").await, Poll::Unknown);
    }

    #[tokio::test]
    async fn expiry() {
        let (flows, _dir) = store();
        start(&flows, "dc", "u1", "github", 1, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            poll(&flows, "dc", "u1", "github").await.unwrap(),
            Poll::Expired
        );
    }

    #[tokio::test]
    async fn concurrent_polls_book_one_slot() {
        let (flows, _dir) = store();
        start(&flows, "dc", "u1", "github", 5, 60).await.unwrap();
        let verdicts = futures_join(&flows).await;
        assert_eq!(
            verdicts.iter().filter(|v| **v == Poll::Ask).count(),
            1,
            "{verdicts:?}"
        );
    }

    async fn futures_join(flows: &SledStore) -> Vec<Poll> {
        let (a, b, c) = tokio::join!(
            poll(flows, "dc", "u1", "github"),
            poll(flows, "dc", "u1", "github"),
            poll(flows, "dc", "u1", "github"),
        );
        vec![a.unwrap(), b.unwrap(), c.unwrap()]
    }
}
