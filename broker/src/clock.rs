//! The broker's one clock: wall time as Unix seconds and milliseconds. Expiries, sessions,
//! device-flow pacing and stored timestamps all read it here, so a test can move it (on its own
//! thread) to cross an expiry without sleeping.

use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(test)]
thread_local! {
    /// How far this test thread's clock is ahead of the wall clock, in milliseconds.
    static SHIFT_MS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    #[cfg(test)]
    let wall = wall.saturating_add(SHIFT_MS.with(std::cell::Cell::get));
    wall
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    now_millis().div_euclid(1000)
}

/// Moves this thread's clock `by` milliseconds ahead (tests only; current-thread runtimes).
#[cfg(test)]
pub fn advance(by_ms: i64) {
    SHIFT_MS.with(|shift| shift.set(shift.get().saturating_add(by_ms)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree_and_tests_can_move_time() {
        let before = now();
        advance(3_600_000);
        assert!(now() >= before + 3600);
        assert!((now_millis() / 1000 - now()).abs() <= 1);
        advance(-3_600_000);
        assert!(now() < before + 3600);
    }
}
