//! Failed token checks: counted, logged (rate-limited), and limited per client address.
//!
//! Guessing a 256-bit token secret is hopeless, but a client sending thousands of bad tokens is
//! still something an operator must see (a leaked token being tried after revocation, a script
//! stuck on an old token, someone probing), and must not cost a store lookup each. Each client
//! address has a bucket of `limit` failures that refills over a minute; once it is empty the
//! address's token-authenticated requests get 429 without a lookup, until the bucket refills.
//! Other clients are not affected. Logs carry the address, counts and the token id's first
//! characters, never a secret.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Why a presented token was refused (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not `extauth_<kind>_<id>_<secret>`.
    Malformed,
    /// No token with that id.
    Unknown,
    /// The secret (or kind) does not match.
    WrongSecret,
    /// Past its expiry.
    Expired,
    /// Its user is gone.
    NoUser,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown",
            Refusal::WrongSecret => "wrong_secret",
            Refusal::Expired => "expired",
            Refusal::NoUser => "no_user",
        }
    }
}

/// Addresses tracked at most; beyond, full buckets are forgotten first.
const MAX_TRACKED: usize = 100_000;
/// One log line per address at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

struct Bucket {
    /// Failures still allowed (fractional while refilling).
    allowance: f64,
    updated: Instant,
    /// Failures since the last log line about this address.
    unlogged: u64,
    logged: Option<Instant>,
}

/// The per-address failure limiter.
pub struct AuthFailures {
    /// Failures per minute per address; 0 = no limit (failures are still counted and logged).
    limit: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// How many addresses `buckets` holds, read without the lock: a token check (every
    /// authenticated request) takes the lock only while some address has failed recently.
    tracked: AtomicUsize,
}

impl AuthFailures {
    /// A limiter allowing `limit` failures per address and minute.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
            tracked: AtomicUsize::new(0),
        }
    }

    fn per_second(&self) -> f64 {
        f64::from(self.limit) / 60.0
    }

    /// The failures `bucket` allows at `now`.
    fn allowance(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        (bucket.allowance + elapsed * self.per_second()).min(f64::from(self.limit))
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        bucket.allowance = self.allowance(bucket, now);
        bucket.updated = now;
    }

    /// `Some(wait)` when `client` has used up its failures: refuse its token without checking.
    pub fn throttled(&self, client: IpAddr) -> Option<Duration> {
        if self.limit == 0 || self.tracked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().ok()?;
        let bucket = buckets.get_mut(&client)?;
        self.refill(bucket, now);
        if bucket.allowance >= f64::from(self.limit) {
            // Refilled: forget the address, so checks go back to the lock-free path.
            buckets.remove(&client);
            self.tracked.store(buckets.len(), Ordering::Relaxed);
            return None;
        }
        if bucket.allowance >= 1.0 {
            return None;
        }
        metrics::counter!("extauth_auth_throttled_total").increment(1);
        let missing = 1.0 - bucket.allowance;
        Some(Duration::from_secs_f64(missing / self.per_second()).max(Duration::from_secs(1)))
    }

    /// Counts a failed check by `client` (when known); `token_id` is the id part of the token,
    /// if any.
    pub fn failed(&self, client: Option<IpAddr>, refusal: Refusal, token_id: Option<&str>) {
        metrics::counter!("extauth_auth_failures_total", "reason" => refusal.label()).increment(1);
        let Some(client) = client else {
            return;
        };
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return;
        };
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&client) {
            buckets.retain(|_, b| self.allowance(b, now) < f64::from(self.limit));
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            allowance: f64::from(self.limit),
            updated: now,
            unlogged: 0,
            logged: None,
        });
        self.refill(bucket, now);
        bucket.allowance = (bucket.allowance - 1.0).max(0.0);
        let throttled = self.limit > 0 && bucket.allowance < 1.0;
        bucket.unlogged += 1;
        if bucket
            .logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            // An id is not a secret, but a prefix is enough to find the token in a list.
            let prefix: String = token_id.unwrap_or_default().chars().take(6).collect();
            tracing::warn!(
                client = %client,
                reason = refusal.label(),
                token_id_prefix = prefix,
                failures = bucket.unlogged,
                throttled,
                "token authentication failed"
            );
            bucket.unlogged = 0;
            bucket.logged = Some(now);
        }
        self.tracked.store(buckets.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_throttled_after_its_failures_and_others_are_not() {
        let limiter = AuthFailures::new(5);
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(limiter.throttled(attacker), None);
            limiter.failed(Some(attacker), Refusal::Unknown, Some("abcdef0123"));
        }
        let wait = limiter.throttled(attacker).expect("throttled after 5");
        assert!(
            wait >= Duration::from_secs(1) && wait <= Duration::from_secs(13),
            "{wait:?}"
        );
        assert_eq!(limiter.throttled(other), None);
    }

    #[test]
    fn a_refilled_address_is_forgotten_and_checks_skip_the_lock_again() {
        let limiter = AuthFailures::new(6000); // 100 a second: refills in 10 ms
        let client: IpAddr = "10.0.0.3".parse().unwrap();
        limiter.failed(Some(client), Refusal::WrongSecret, Some("abc"));
        limiter.failed(None, Refusal::Malformed, None);
        assert_eq!(
            limiter.tracked.load(Ordering::Relaxed),
            1,
            "unknown clients are not tracked"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(limiter.throttled(client), None);
        assert_eq!(limiter.tracked.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = AuthFailures::new(0);
        let client: IpAddr = "::1".parse().unwrap();
        for _ in 0..100 {
            limiter.failed(Some(client), Refusal::Malformed, None);
        }
        assert_eq!(limiter.throttled(client), None);
    }
}
