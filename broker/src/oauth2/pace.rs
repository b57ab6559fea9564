//! How often one client, or one address, may call `/oauth2/*`: a window of a minute per key.
//! A client guessing codes or secrets, or a runaway loop, gets `temporarily_unavailable` with
//! the wait, not the broker's full attention. In-process: each replica counts its own share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Counts per key (`client:<id>` or `ip:<address>`).
#[derive(Default)]
pub struct Pace {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Pace {
    /// Counts a request of `key`; the wait if it is over `limit` a minute (0: no limit).
    pub fn admit(&self, key: &str, limit: u32) -> Result<(), Duration> {
        if limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= limit {
            return Err(WINDOW.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_limit_waits() {
        let pace = Pace::default();
        for _ in 0..3 {
            assert!(pace.admit("ip:1", 3).is_ok());
        }
        let wait = pace.admit("ip:1", 3).unwrap_err();
        assert!(wait > Duration::from_secs(50));
        assert!(pace.admit("ip:2", 3).is_ok());
        assert!(pace.admit("ip:1", 0).is_ok());
    }
}
