//! What providers said lately about a user's GitHub App installations, so that a lookup asks at
//! most once a minute per user and provider.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a user's installations are taken as known.
const FRESH_FOR: Duration = Duration::from_secs(60);

/// What the provider said at a time: the owners, or `None` when it would not say.
type Asked = (Instant, Option<Vec<String>>);

/// The installations asked lately, per (user id, provider id).
#[derive(Default)]
pub struct InstallationCache(Mutex<HashMap<(String, String), Asked>>);

impl InstallationCache {
    /// What was said less than a minute ago, if anything (`Some(None)`: the provider would
    /// not say).
    pub fn get(&self, user_id: &str, provider_id: &str) -> Option<Option<Vec<String>>> {
        let cache = self.0.lock().ok()?;
        let (at, owners) = cache.get(&(user_id.to_owned(), provider_id.to_owned()))?;
        (at.elapsed() < FRESH_FOR).then(|| owners.clone())
    }

    /// Keeps what was said now; forgets what is stale.
    pub fn put(&self, user_id: &str, provider_id: &str, owners: Option<Vec<String>>) {
        if let Ok(mut cache) = self.0.lock() {
            cache.retain(|_, (at, _)| at.elapsed() < FRESH_FOR);
            cache.insert(
                (user_id.to_owned(), provider_id.to_owned()),
                (Instant::now(), owners),
            );
        }
    }
}
