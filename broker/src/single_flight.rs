//! One refresh at a time per link: the in-process lock that `refresh` takes (inside it, the
//! store's lock across replicas). Kept apart from `refresh` so the shared state can hold it
//! without depending on the refresh logic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type LinkKey = (String, String);

/// Serialises refreshes per (user, provider).
#[derive(Default)]
pub struct RefreshLocks(Mutex<HashMap<LinkKey, Arc<tokio::sync::Mutex<()>>>>);

impl RefreshLocks {
    /// The lock of (user, provider), created on first use.
    pub fn get(&self, user_id: &str, provider_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.0.lock() {
            Ok(locks) => locks,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Drop locks nobody holds or waits for, so the map stays as small as the work in flight.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks
            .entry((user_id.to_owned(), provider_id.to_owned()))
            .or_default()
            .clone()
    }
}
