//! The read-through cache of the lookup path: a workspace token with its user, and a user's
//! links of one provider. Without it every lookup on PostgreSQL costs two round trips to the
//! database, which is what kept two replicas at a fifth of the embedded store's rate; on sled
//! three tree reads and their copies, which were most of the store's share of a lookup's time
//! (`docs/perf/`).
//!
//! On sled (one process owns the store) every write goes through the store, which forgets
//! what it changed after writing; the cache is always usable. On PostgreSQL, why it never
//! serves a revoked token or a stale link:
//! - Every write of these rows announces itself with `NOTIFY` in the writing transaction (links
//!   on [`super::CHANNEL`], tokens and users on [`CACHE_CHANNEL`]); each replica's `LISTEN`
//!   connection drops the entry as the notification arrives, and the writer drops its own entry
//!   before it answers.
//! - The cache is used only while that `LISTEN` connection is up. When it is lost, or comes
//!   back, the whole cache is dropped: notifications missed in between are not known.
//! - A read that raced with an invalidation is not kept: each invalidation moves the epoch on,
//!   and a result is stored only if the epoch is where it was before the read started.
//! - Entries also expire after [`MAX_AGE`], a bound should anything above ever fail.
//!
//! It holds what the database holds: token hashes and sealed (still encrypted) provider tokens,
//! never a plaintext secret.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{LinkRecord, StoreResult, TokenRecord, User};

/// The channel token and user changes are announced on.
pub(super) const CACHE_CHANNEL: &str = "extauth_cache";

/// How long an entry may be served without a notification having been seen for it.
const MAX_AGE: Duration = Duration::from_secs(30);

/// Entries per map on PostgreSQL, where a miss is a round trip; a full map is emptied rather
/// than walked (one lookup in 200 000 pays a miss), so memory stays bounded at a million users.
pub(super) const POSTGRES_CAPACITY: usize = 200_000;

/// Entries per map on sled, where a miss is three in-process reads and sled keeps its own page
/// cache: enough for the workspaces busy at once; 20 000 cost 40 MB more resident memory at a
/// million users (355 MB against the 300 MB goal, README "Scale").
pub(super) const SLED_CAPACITY: usize = 4_096;

/// A token as the lookup path reads it.
pub(super) type TokenEntry = (TokenRecord, Option<User>);

/// What a notification on [`CACHE_CHANNEL`] says changed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Changed<'a> {
    Token(&'a str),
    User(&'a str),
    Everything,
}

impl<'a> Changed<'a> {
    /// The notification's payload.
    pub(super) fn payload(&self) -> String {
        match self {
            Changed::Token(id) => format!("token\n{id}"),
            Changed::User(id) => format!("user\n{id}"),
            Changed::Everything => "all".to_owned(),
        }
    }

    /// Reads a payload; anything unknown is taken as "everything" (safe for a newer writer).
    pub(super) fn parse(payload: &'a str) -> Self {
        match payload.split_once('\n') {
            Some(("token", id)) => Changed::Token(id),
            Some(("user", id)) => Changed::User(id),
            _ => Changed::Everything,
        }
    }
}

struct Entry<T> {
    value: Arc<T>,
    at: Instant,
}

struct Map<K, T> {
    entries: RwLock<HashMap<K, Entry<T>>>,
    capacity: usize,
}

impl<K: Eq + Hash, T> Map<K, T> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<Arc<T>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|e| e.at.elapsed() < MAX_AGE)
            .map(|e| e.value.clone())
    }

    fn put(&self, key: K, value: Arc<T>) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(
            key,
            Entry {
                value,
                at: Instant::now(),
            },
        );
    }

    fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    fn retain(&self, keep: impl FnMut(&K, &mut Entry<T>) -> bool) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(keep);
    }

    fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// The cache; one per process, shared by the store and its `LISTEN` task.
pub(super) struct ReadCache {
    hits: metrics::Counter,
    misses: metrics::Counter,
    listening: AtomicBool,
    epoch: AtomicU64,
    tokens: Map<String, TokenEntry>,
    links: Map<(String, String), Vec<LinkRecord>>,
}

/// Where the epoch stood before a read: the result may be stored only if it has not moved.
#[derive(Clone, Copy)]
pub(super) struct Ticket(u64);

impl ReadCache {
    /// A cache of up to `capacity` entries per map, unusable until [`Self::set_listening`].
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            hits: metrics::counter!("extauth_store_cache_lookups_total", "result" => "hit"),
            misses: metrics::counter!("extauth_store_cache_lookups_total", "result" => "miss"),
            listening: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            tokens: Map::new(capacity),
            links: Map::new(capacity),
        }
    }

    /// Taken before reading the database.
    pub(super) fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::Acquire))
    }

    fn usable(&self, ticket: Ticket) -> bool {
        self.listening.load(Ordering::Acquire) && self.epoch.load(Ordering::Acquire) == ticket.0
    }

    pub(super) fn token(&self, id: &str) -> Option<Arc<TokenEntry>> {
        let found = self
            .listening
            .load(Ordering::Acquire)
            .then(|| self.tokens.get(id))
            .flatten();
        self.count(found.is_some());
        found
    }

    fn count(&self, hit: bool) {
        if hit {
            self.hits.increment(1);
        } else {
            self.misses.increment(1);
        }
    }

    pub(super) fn put_token(&self, id: &str, entry: Arc<TokenEntry>, ticket: Ticket) {
        // A token without its user is not kept: creating a user announces nothing.
        if self.usable(ticket) && entry.1.is_some() {
            self.tokens.put(id.to_owned(), entry);
            // An invalidation may have landed between the check and the insert: take it back.
            if !self.usable(ticket) {
                self.tokens.remove(id);
            }
        }
    }

    /// A user's links of one provider, sorted by account.
    pub(super) fn links(&self, user_id: &str, provider_id: &str) -> Option<Arc<Vec<LinkRecord>>> {
        let found = self
            .listening
            .load(Ordering::Acquire)
            .then(|| {
                self.links
                    .get(&(user_id.to_owned(), provider_id.to_owned()))
            })
            .flatten();
        self.count(found.is_some());
        found
    }

    pub(super) fn put_links(
        &self,
        user_id: &str,
        provider_id: &str,
        links: Arc<Vec<LinkRecord>>,
        ticket: Ticket,
    ) {
        if self.usable(ticket) {
            let key = (user_id.to_owned(), provider_id.to_owned());
            self.links.put(key.clone(), links);
            if !self.usable(ticket) {
                self.links.remove(&key);
            }
        }
    }

    /// A token with its user from the cache, or from `read` (run only on a miss) and kept.
    /// Unknown ids are not kept: they would let anyone fill the cache.
    pub(super) async fn token_or_read<F>(
        &self,
        id: &str,
        read: impl FnOnce() -> F,
    ) -> StoreResult<Option<TokenEntry>>
    where
        F: std::future::Future<Output = StoreResult<Option<TokenEntry>>>,
    {
        if let Some(entry) = self.token(id) {
            return Ok(Some((*entry).clone()));
        }
        let ticket = self.ticket();
        let Some(entry) = read().await? else {
            return Ok(None);
        };
        let entry = Arc::new(entry);
        self.put_token(id, entry.clone(), ticket);
        Ok(Some(Arc::unwrap_or_clone(entry)))
    }

    /// A user's links of one provider, sorted by account, from the cache, or from `read` (run
    /// only on a miss) and kept.
    pub(super) async fn links_or_read<F>(
        &self,
        user_id: &str,
        provider_id: &str,
        read: impl FnOnce() -> F,
    ) -> StoreResult<Arc<Vec<LinkRecord>>>
    where
        F: std::future::Future<Output = StoreResult<Vec<LinkRecord>>>,
    {
        if let Some(links) = self.links(user_id, provider_id) {
            return Ok(links);
        }
        let ticket = self.ticket();
        let links = Arc::new(read().await?);
        self.put_links(user_id, provider_id, links.clone(), ticket);
        Ok(links)
    }

    fn moved(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn forget(&self, changed: &Changed<'_>) {
        self.moved();
        match changed {
            Changed::Token(id) => self.tokens.remove(*id),
            // A user's tokens are not indexed by user: user changes are rare (sign-in data).
            Changed::User(id) => self.tokens.retain(|_, e| e.value.0.user_id != *id),
            Changed::Everything => {
                self.tokens.clear();
                self.links.clear();
            }
        }
    }

    /// A link of (`user_id`, `provider_id`) changed; empty ids: any link may have.
    pub(super) fn forget_links(&self, user_id: &str, provider_id: &str) {
        self.moved();
        if user_id.is_empty() && provider_id.is_empty() {
            self.links.clear();
        } else {
            self.links
                .remove(&(user_id.to_owned(), provider_id.to_owned()));
        }
    }

    /// The `LISTEN` connection is up (`true`) or lost (`false`): either way, what was cached
    /// may have missed a notification.
    pub(super) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
        self.forget(&Changed::Everything);
    }
}

/// The first link as `ORDER BY is_default DESC, account` picks it, from links sorted by account.
pub(super) fn default_of(links: &[LinkRecord]) -> Option<&LinkRecord> {
    links.iter().find(|l| l.is_default).or(links.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, user: &str) -> Arc<TokenEntry> {
        Arc::new((
            TokenRecord {
                id: id.into(),
                kind: super::super::TokenKind::Workspace,
                user_id: user.into(),
                name: "t".into(),
                secret_hash: "h".into(),
                providers: None,
                created_at: 0,
                expires_at: None,
            },
            Some(User {
                id: user.into(),
                username: user.into(),
                email: String::new(),
                name: String::new(),
                is_admin: false,
                oidc: None,
                created_at: 0,
            }),
        ))
    }

    #[test]
    fn a_token_without_its_user_is_not_kept() {
        let cache = ReadCache::new(SLED_CAPACITY);
        cache.set_listening(true);
        let orphan = Arc::new((token("a", "u").0.clone(), None));
        cache.put_token("a", orphan, cache.ticket());
        assert!(cache.token("a").is_none());
    }

    #[test]
    fn nothing_is_served_or_kept_while_not_listening() {
        let cache = ReadCache::new(POSTGRES_CAPACITY);
        let ticket = cache.ticket();
        cache.put_token("a", token("a", "u"), ticket);
        assert!(cache.token("a").is_none());
        cache.set_listening(true);
        let ticket = cache.ticket();
        cache.put_token("a", token("a", "u"), ticket);
        assert!(cache.token("a").is_some());
        cache.set_listening(false);
        assert!(cache.token("a").is_none(), "losing LISTEN drops everything");
        cache.set_listening(true);
        assert!(cache.token("a").is_none());
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_kept() {
        let cache = ReadCache::new(POSTGRES_CAPACITY);
        cache.set_listening(true);
        let ticket = cache.ticket();
        // The token is revoked while the read is under way.
        cache.forget(&Changed::Token("a"));
        cache.put_token("a", token("a", "u"), ticket);
        assert!(cache.token("a").is_none());
    }

    #[test]
    fn invalidations_drop_what_they_name() {
        let cache = ReadCache::new(POSTGRES_CAPACITY);
        cache.set_listening(true);
        let t = cache.ticket();
        cache.put_token("a", token("a", "alice"), t);
        cache.put_token("b", token("b", "bob"), t);
        cache.put_links("alice", "gh", Arc::new(Vec::new()), t);
        cache.put_links("bob", "gh", Arc::new(Vec::new()), t);
        cache.forget(&Changed::User("alice"));
        assert!(cache.token("a").is_none());
        assert!(cache.token("b").is_some());
        cache.forget_links("bob", "gh");
        assert!(cache.links("bob", "gh").is_none());
        assert!(cache.links("alice", "gh").is_some());
        cache.forget(&Changed::Token("b"));
        assert!(cache.token("b").is_none());
    }

    #[test]
    fn payloads_read_back() {
        for c in [Changed::Token("x"), Changed::User("y"), Changed::Everything] {
            assert_eq!(Changed::parse(&c.payload()), c);
        }
        assert_eq!(Changed::parse("something new"), Changed::Everything);
    }
}
