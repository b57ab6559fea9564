//! Device flows in progress (RFC 8628), on the broker's side: which user a device code belongs
//! to, and the polling pace. The broker enforces `interval`, `slow_down` (+5 s) and `expires_in`
//! itself, so a client polling too fast is slowed down without the provider being asked, and an
//! expired code is refused without a call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::identity::hash;

/// One device flow.
#[derive(Debug, Clone)]
struct Flow {
    user_id: String,
    provider_id: String,
    interval: Duration,
    next_poll: Instant,
    expires: Instant,
}

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

/// Device flows keyed by the hash of the device code.
#[derive(Default)]
pub struct DeviceFlows(Mutex<HashMap<String, Flow>>);

impl DeviceFlows {
    fn flows(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flow>> {
        match self.0.lock() {
            Ok(flows) => flows,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers a flow the provider just started.
    pub fn start(
        &self,
        device_code: &str,
        user_id: &str,
        provider_id: &str,
        interval: u64,
        expires_in: u64,
    ) {
        let now = Instant::now();
        let mut flows = self.flows();
        flows.retain(|_, f| f.expires > now);
        flows.insert(
            hash(device_code),
            Flow {
                user_id: user_id.to_owned(),
                provider_id: provider_id.to_owned(),
                interval: Duration::from_secs(interval.max(1)),
                next_poll: now,
                expires: now + Duration::from_secs(expires_in.max(1)),
            },
        );
    }

    /// Decides whether a poll may go to the provider, and books the next slot if so.
    pub fn poll(&self, device_code: &str, user_id: &str, provider_id: &str) -> Poll {
        let now = Instant::now();
        let mut flows = self.flows();
        let Some(flow) = flows.get_mut(&hash(device_code)) else {
            return Poll::Unknown;
        };
        if flow.user_id != user_id || flow.provider_id != provider_id {
            return Poll::Unknown;
        }
        if now >= flow.expires {
            return Poll::Expired;
        }
        if now < flow.next_poll {
            flow.interval += Duration::from_secs(5);
            flow.next_poll = now + flow.interval;
            return Poll::SlowDown(flow.interval);
        }
        flow.next_poll = now + flow.interval;
        Poll::Ask
    }

    /// The provider said `slow_down`: add 5 s to the interval (RFC 8628 §3.5).
    pub fn slow_down(&self, device_code: &str) -> Duration {
        let mut flows = self.flows();
        match flows.get_mut(&hash(device_code)) {
            Some(flow) => {
                flow.interval += Duration::from_secs(5);
                flow.next_poll = Instant::now() + flow.interval;
                flow.interval
            }
            None => Duration::from_secs(5),
        }
    }

    /// The flow ended (linked, denied or expired).
    pub fn finish(&self, device_code: &str) {
        self.flows().remove(&hash(device_code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_and_ownership() {
        let flows = DeviceFlows::default();
        flows.start("dc", "u1", "github", 1, 60);
        assert_eq!(flows.poll("dc", "u2", "github"), Poll::Unknown);
        assert_eq!(flows.poll("dc", "u1", "gitlab"), Poll::Unknown);
        assert_eq!(flows.poll("other", "u1", "github"), Poll::Unknown);
        assert_eq!(flows.poll("dc", "u1", "github"), Poll::Ask);
        // Immediately again: too fast, slowed down by 5 s without asking the provider.
        assert_eq!(
            flows.poll("dc", "u1", "github"),
            Poll::SlowDown(Duration::from_secs(6))
        );
        assert_eq!(flows.slow_down("dc"), Duration::from_secs(11));
        flows.finish("dc");
        assert_eq!(flows.poll("dc", "u1", "github"), Poll::Unknown);
    }

    #[test]
    fn expiry() {
        let flows = DeviceFlows::default();
        flows.start("dc", "u1", "github", 1, 0);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(flows.poll("dc", "u1", "github"), Poll::Expired);
    }
}
