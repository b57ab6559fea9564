//! The embedded store on sled: one process, one data directory. Every write is flushed before
//! it returns.

use std::collections::BTreeSet;
use std::path::Path;

use super::read_cache::{self, Changed, ReadCache};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional as _;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::broadcast;

use super::{
    DeviceDecision, DeviceFlowRecord, DeviceGrant, FamilyFilter, GitSshKey, LinkChanged,
    LinkRecord, LoginFlow, OAuth2App, OAuth2Code, OAuth2Family, OAuth2Grant, OidcClaims,
    PendingRevocation, ProtectedResource, Session, SigningKey, Snapshot, Store, StoreError,
    StoreLock, StoreResult, TokenKind, TokenRecord, User,
};
use crate::crypto::Sealed;

mod snapshot;

/// The page cache of the embedded store. sled's default (1 GiB) dominated the broker's memory;
/// at 100 000 users 32 MiB kept lookups as fast as 64 MiB (the OS page cache serves the rest)
/// with 50-90 MB less resident memory, and at a million users 32 MiB still left the broker
/// above its 300 MB goal after random lookups, which mostly miss any cache this size (README,
/// "Scale").
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// sled-backed [`Store`].
pub struct SledStore {
    db: sled::Db,
    users: sled::Tree,
    usernames: sled::Tree,
    identities: sled::Tree,
    sessions: sled::Tree,
    tokens: sled::Tree,
    links: sled::Tree,
    revocations: sled::Tree,
    revoked_keys: sled::Tree,
    oidc_claims: sled::Tree,
    device_flows: sled::Tree,
    login_flows: sled::Tree,
    oauth2_apps: sled::Tree,
    oauth2_codes: sled::Tree,
    oauth2_grants: sled::Tree,
    oauth2_families: sled::Tree,
    signing_keys: sled::Tree,
    oauth2_resources: sled::Tree,
    runtime_settings: sled::Tree,
    git_ssh_keys: sled::Tree,
    used_once: sled::Tree,
    device_grants: sled::Tree,
    device_user_codes: sled::Tree,
    /// The key ids that sealed a stored link (`#<id>`; `#` alone for plaintext): start-up
    /// checks every stored value's key against the ring, and with a million users reading
    /// three million links for it took most of 20 seconds. A superset: link writes add to it,
    /// and only `revoke_key_ids` (dbcrypt, after rewriting everything) makes it exact again.
    /// So a key whose last link was removed still counts until the next rotation — the broker
    /// then refuses to start without it and says to rotate; it never starts with a key missing.
    link_key_ids: sled::Tree,
    /// Tokens with their users and users' links as the lookup path reads them; every write
    /// of those goes through this store, which forgets what it changed.
    cache: ReadCache,
    events: broadcast::Sender<LinkChanged>,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// The first byte of a record in the compact encoding (JSON records start with `{`).
const COMPACT_V1: u8 = 1;

/// Records are stored compactly (postcard after a version byte): with many users the whole
/// store is the working set, and its size is the broker's memory and latency.
fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    let mut bytes = vec![COMPACT_V1];
    postcard::to_io(value, &mut bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(bytes)
}

/// Reads either encoding: records written as JSON by earlier versions stay readable and are
/// rewritten compactly when next written.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    match bytes.split_first() {
        Some((&COMPACT_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt(e.to_string()))
        }
        _ => serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string())),
    }
}

/// The first byte of a link in its second compact shape (with accounts and
/// `refresh_expires_at`). Links written before are [`COMPACT_V1`] in [`LinkRecordV1`]'s shape,
/// read as such.
const LINK_V2: u8 = 2;

/// A link as stored before accounts and `refresh_expires_at` (postcard has no field names to
/// default from).
#[derive(serde::Deserialize)]
struct LinkRecordV1 {
    user_id: String,
    provider_id: String,
    access_token: Sealed,
    refresh_token: Option<Sealed>,
    expires_at: Option<i64>,
    extra: Option<Sealed>,
    refresh_failure: Option<String>,
    needs_validation: bool,
    created_at: i64,
    updated_at: i64,
}

impl From<LinkRecordV1> for LinkRecord {
    fn from(v1: LinkRecordV1) -> Self {
        Self {
            user_id: v1.user_id,
            provider_id: v1.provider_id,
            account: String::new(),
            is_default: true,
            owners: Vec::new(),
            access_token: v1.access_token,
            refresh_token: v1.refresh_token,
            expires_at: v1.expires_at,
            extra: v1.extra,
            refresh_failure: v1.refresh_failure,
            needs_validation: v1.needs_validation,
            created_at: v1.created_at,
            updated_at: v1.updated_at,
            refresh_expires_at: None,
        }
    }
}

fn encode_link(link: &LinkRecord) -> StoreResult<Vec<u8>> {
    let mut bytes = vec![LINK_V2];
    postcard::to_io(link, &mut bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(bytes)
}

/// Reads a link in any shape it was ever stored in.
fn decode_link(bytes: &[u8]) -> StoreResult<LinkRecord> {
    match bytes.split_first() {
        Some((&LINK_V2, rest)) => {
            postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt(e.to_string()))
        }
        Some((&COMPACT_V1, rest)) => postcard::from_bytes::<LinkRecordV1>(rest)
            .map(LinkRecord::from)
            .map_err(|e| StoreError::Corrupt(e.to_string())),
        _ => decode(bytes),
    }
}

/// `a\0b`: an OAuth2 grant's (user, app).
fn pair_key(a: &str, b: &str) -> Vec<u8> {
    format!("{a}\0{b}").into_bytes()
}

/// `user\0provider\0account`. Links stored before accounts had `user\0provider`; the store
/// rewrites those at open ([`SledStore::open`]).
fn link_key(user_id: &str, provider_id: &str, account: &str) -> Vec<u8> {
    format!("{user_id}\0{provider_id}\0{account}").into_bytes()
}

/// The key prefix of every account of (user, provider).
fn provider_prefix(user_id: &str, provider_id: &str) -> Vec<u8> {
    format!("{user_id}\0{provider_id}\0").into_bytes()
}

/// What the `meta` tree records as done, once per store.
const LINK_KEYS_MIGRATED: &[u8] = b"links keyed by account";
const LINK_KEY_IDS_BUILT: &[u8] = b"link key ids kept";

/// The sealed values of a link.
fn sealed_of(link: &LinkRecord) -> impl Iterator<Item = &Sealed> {
    std::iter::once(&link.access_token)
        .chain(link.refresh_token.as_ref())
        .chain(link.extra.as_ref())
}

fn key_id_entry(key_id: &str) -> Vec<u8> {
    format!("#{key_id}").into_bytes()
}

/// Makes `link_key_ids` exactly the key ids of the stored links (reads every link).
fn rebuild_link_key_ids(links: &sled::Tree, link_key_ids: &sled::Tree) -> StoreResult<()> {
    let mut ids = BTreeSet::new();
    for entry in links.iter() {
        let link = decode_link(&entry?.1)?;
        ids.extend(sealed_of(&link).map(|s| key_id_entry(&s.key_id)));
    }
    for key in link_key_ids.iter().keys() {
        let key = key?;
        if !ids.contains(key.as_ref()) {
            link_key_ids.remove(key)?;
        }
    }
    for id in ids {
        link_key_ids.insert(id, &[])?;
    }
    Ok(())
}

/// Rewrites links keyed `user\0provider` (before accounts) to `user\0provider\0`: the same
/// link, its account unnamed. Runs once per store (recorded in `meta`).
fn migrate_link_keys(links: &sled::Tree) -> StoreResult<()> {
    for entry in links.iter() {
        let (key, value) = entry?;
        if key.iter().filter(|b| **b == 0).count() == 1 {
            let mut new_key = key.to_vec();
            new_key.push(0);
            links.insert(new_key, value)?;
            links.remove(key)?;
        }
    }
    links.flush()?;
    Ok(())
}

fn identity_key(issuer: &str, subject: &str) -> Vec<u8> {
    format!("{issuer}\0{subject}").into_bytes()
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. sled holds a lock: one process per directory.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", dir.display())))?;
        let (events, _) = broadcast::channel(1024);
        let links = db.open_tree("links")?;
        let link_key_ids = db.open_tree("link_key_ids")?;
        let meta = db.open_tree("meta")?;
        if !meta.contains_key(LINK_KEYS_MIGRATED)? {
            migrate_link_keys(&links)?;
            meta.insert(LINK_KEYS_MIGRATED, &[])?;
        }
        if !meta.contains_key(LINK_KEY_IDS_BUILT)? {
            rebuild_link_key_ids(&links, &link_key_ids)?;
            meta.insert(LINK_KEY_IDS_BUILT, &[])?;
        }
        db.flush()?;
        // One process owns the store: nothing can change it behind the cache's back.
        let cache = ReadCache::new(read_cache::SLED_CAPACITY);
        cache.set_listening(true);
        Ok(Self {
            users: db.open_tree("users")?,
            usernames: db.open_tree("usernames")?,
            identities: db.open_tree("identities")?,
            sessions: db.open_tree("sessions")?,
            tokens: db.open_tree("tokens")?,
            links,
            link_key_ids,
            cache,
            revocations: db.open_tree("revocations")?,
            revoked_keys: db.open_tree("revoked_keys")?,
            oidc_claims: db.open_tree("oidc_claims")?,
            device_flows: db.open_tree("device_flows")?,
            login_flows: db.open_tree("login_flows")?,
            oauth2_apps: db.open_tree("oauth2_apps")?,
            oauth2_codes: db.open_tree("oauth2_codes")?,
            oauth2_grants: db.open_tree("oauth2_grants")?,
            oauth2_families: db.open_tree("oauth2_families")?,
            signing_keys: db.open_tree("signing_keys")?,
            oauth2_resources: db.open_tree("oauth2_resources")?,
            runtime_settings: db.open_tree("runtime_settings")?,
            git_ssh_keys: db.open_tree("git_ssh_keys")?,
            used_once: db.open_tree("used_once")?,
            device_grants: db.open_tree("oauth2_device_grants")?,
            device_user_codes: db.open_tree("oauth2_device_user_codes")?,
            db,
            events,
        })
    }

    async fn flush(&self) -> StoreResult<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Records the keys that sealed `link`; before the link is written, so that the summary
    /// is never short of a stored link's key.
    fn note_link_keys(&self, link: &LinkRecord) -> StoreResult<()> {
        for sealed in sealed_of(link) {
            let entry = key_id_entry(&sealed.key_id);
            if !self.link_key_ids.contains_key(&entry)? {
                self.link_key_ids.insert(entry, &[])?;
            }
        }
        Ok(())
    }

    /// After a link write: the cache and local waiters learn at once.
    fn notify(&self, user_id: &str, provider_id: &str) {
        self.cache.forget_links(user_id, provider_id);
        // No receiver is fine: nobody is waiting.
        let _ = self.events.send(LinkChanged {
            user_id: user_id.to_owned(),
            provider_id: provider_id.to_owned(),
        });
    }

    fn get<T: DeserializeOwned>(
        tree: &sled::Tree,
        key: impl AsRef<[u8]>,
    ) -> StoreResult<Option<T>> {
        tree.get(key)?.map(|v| decode(&v)).transpose()
    }

    /// A user's links of one provider, sorted by account (the keys' order): from the cache,
    /// or read and cached.
    async fn cached_links(
        &self,
        user_id: &str,
        provider_id: &str,
    ) -> StoreResult<std::sync::Arc<Vec<LinkRecord>>> {
        self.cache
            .links_or_read(user_id, provider_id, || async {
                self.links
                    .scan_prefix(provider_prefix(user_id, provider_id))
                    .map(|entry| decode_link(&entry?.1))
                    .collect()
            })
            .await
    }

    fn user_by_index(&self, index: &sled::Tree, key: &[u8]) -> StoreResult<Option<User>> {
        match index.get(key)? {
            Some(id) => Self::get(&self.users, id),
            None => Ok(None),
        }
    }
}

impl SledStore {
    /// Removes the token families `pick` chooses (not flushed); how many.
    fn remove_families(&self, pick: impl Fn(&OAuth2Family) -> bool) -> StoreResult<u64> {
        let mut removed = 0;
        for entry in self.oauth2_families.iter() {
            let (key, value) = entry?;
            if pick(&decode::<OAuth2Family>(&value)?) {
                self.oauth2_families.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn conflict(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

/// Stores `record` under `key` in a tree of short-lived records, first dropping those whose
/// expiry (Unix milliseconds) has passed, so the tree never grows with abandoned flows.
fn put_expiring<T: Serialize + serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &str,
    record: &T,
    expires_ms: impl Fn(&T) -> i64,
) -> StoreResult<()> {
    let now = crate::clock::now_millis();
    for entry in tree.iter() {
        let (stale_key, value) = entry?;
        if expires_ms(&decode::<T>(&value)?) < now {
            tree.remove(stale_key)?;
        }
    }
    tree.insert(key.as_bytes(), encode(record)?)?;
    Ok(())
}

#[async_trait]
impl Store for SledStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let value = encode(user)?;
        let identity = user
            .oidc
            .as_ref()
            .map(|o| identity_key(&o.issuer, &o.subject));
        (&self.users, &self.usernames, &self.identities)
            .transaction(|(users, usernames, identities)| {
                if usernames.get(user.username.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
                        "username",
                    )));
                }
                if let Some(key) = &identity {
                    if identities.get(key.as_slice())?.is_some() {
                        return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
                            "OIDC identity",
                        )));
                    }
                    identities.insert(key.as_slice(), user.id.as_bytes())?;
                }
                if users.get(user.id.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
                        "user id",
                    )));
                }
                usernames.insert(user.username.as_bytes(), user.id.as_bytes())?;
                users.insert(user.id.as_bytes(), value.as_slice())?;
                Ok(())
            })
            .map_err(conflict)?;
        self.flush().await
    }

    async fn update_user(&self, user: &User) -> StoreResult<()> {
        let Some(existing) = Self::get::<User>(&self.users, user.id.as_bytes())? else {
            return Err(StoreError::Backend(format!("no user {}", user.id)));
        };
        let updated = User {
            id: existing.id,
            username: existing.username,
            oidc: existing.oidc,
            created_at: existing.created_at,
            ..user.clone()
        };
        self.users.insert(user.id.as_bytes(), encode(&updated)?)?;
        self.cache.forget(&Changed::User(&user.id));
        self.flush().await
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        Self::get(&self.users, id.as_bytes())
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        self.user_by_index(&self.usernames, username.as_bytes())
    }

    async fn user_by_oidc(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
        self.user_by_index(&self.identities, &identity_key(issuer, subject))
    }

    async fn count_users(&self) -> StoreResult<u64> {
        Ok(self.users.len() as u64)
    }

    async fn put_session(&self, session: &Session) -> StoreResult<()> {
        self.sessions
            .insert(session.id_hash.as_bytes(), encode(session)?)?;
        self.flush().await
    }

    async fn session(&self, id_hash: &str) -> StoreResult<Option<Session>> {
        Self::get(&self.sessions, id_hash.as_bytes())
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        self.sessions.remove(id_hash.as_bytes())?;
        self.flush().await
    }

    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64> {
        let mut deleted = 0;
        for entry in self.sessions.iter() {
            let (key, value) = entry?;
            let session: Session = decode(&value)?;
            if session.user_id == user_id {
                self.sessions.remove(key)?;
                deleted += 1;
            }
        }
        self.flush().await?;
        Ok(deleted)
    }

    async fn delete_sessions_by_sid(&self, user_id: &str, sid: &str) -> StoreResult<u64> {
        let mut deleted = 0;
        for entry in self.sessions.iter() {
            let (key, value) = entry?;
            let session: Session = decode(&value)?;
            let same_sid = session
                .oidc
                .as_ref()
                .and_then(|o| o.sid.as_deref())
                .is_some_and(|s| s == sid);
            if session.user_id == user_id && same_sid {
                self.sessions.remove(key)?;
                deleted += 1;
            }
        }
        self.flush().await?;
        Ok(deleted)
    }

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let swapped = self.tokens.compare_and_swap(
            token.id.as_bytes(),
            None as Option<&[u8]>,
            Some(encode(token)?),
        )?;
        if swapped.is_err() {
            return Err(StoreError::Conflict("token id"));
        }
        self.flush().await
    }

    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        Self::get(&self.tokens, id.as_bytes())
    }

    async fn token_with_user(&self, id: &str) -> StoreResult<Option<(TokenRecord, Option<User>)>> {
        self.cache
            .token_or_read(id, || async {
                let Some(token) = Self::get::<TokenRecord>(&self.tokens, id.as_bytes())? else {
                    return Ok(None);
                };
                let user = Self::get(&self.users, token.user_id.as_bytes())?;
                Ok(Some((token, user)))
            })
            .await
    }

    async fn tokens_of_user(
        &self,
        user_id: &str,
        kind: TokenKind,
    ) -> StoreResult<Vec<TokenRecord>> {
        let mut tokens = Vec::new();
        for entry in self.tokens.iter() {
            let (_, value) = entry?;
            let token: TokenRecord = decode(&value)?;
            if token.user_id == user_id && token.kind == kind {
                tokens.push(token);
            }
        }
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tokens)
    }

    async fn delete_token(&self, id: &str) -> StoreResult<bool> {
        let existed = self.tokens.remove(id.as_bytes())?.is_some();
        self.cache.forget(&Changed::Token(id));
        self.flush().await?;
        Ok(existed)
    }

    async fn put_link(&self, link: &LinkRecord) -> StoreResult<()> {
        self.note_link_keys(link)?;
        self.links.insert(
            link_key(&link.user_id, &link.provider_id, &link.account),
            encode_link(link)?,
        )?;
        self.flush().await?;
        self.notify(&link.user_id, &link.provider_id);
        Ok(())
    }

    async fn replace_link_if(
        &self,
        link: &LinkRecord,
        expected_refresh: Option<&Sealed>,
    ) -> StoreResult<bool> {
        let key = link_key(&link.user_id, &link.provider_id, &link.account);
        let new = encode_link(link)?;
        self.note_link_keys(link)?;
        loop {
            let Some(current) = self.links.get(&key)? else {
                return Ok(false);
            };
            let stored = decode_link(&current)?;
            if stored.refresh_token.as_ref() != expected_refresh {
                return Ok(false);
            }
            // Anything else may have changed in between; retry until the swap is atomic.
            if self
                .links
                .compare_and_swap(&key, Some(current), Some(new.as_slice()))?
                .is_ok()
            {
                break;
            }
        }
        self.flush().await?;
        self.notify(&link.user_id, &link.provider_id);
        Ok(true)
    }

    async fn link(&self, user_id: &str, provider_id: &str) -> StoreResult<Option<LinkRecord>> {
        let accounts = self.cached_links(user_id, provider_id).await?;
        Ok(read_cache::default_of(&accounts).cloned())
    }

    async fn link_account(
        &self,
        user_id: &str,
        provider_id: &str,
        account: &str,
    ) -> StoreResult<Option<LinkRecord>> {
        self.links
            .get(link_key(user_id, provider_id, account))?
            .map(|v| decode_link(&v))
            .transpose()
    }

    async fn links_of_provider(
        &self,
        user_id: &str,
        provider_id: &str,
    ) -> StoreResult<Vec<LinkRecord>> {
        Ok(std::sync::Arc::unwrap_or_clone(
            self.cached_links(user_id, provider_id).await?,
        ))
    }

    async fn links_of_user(&self, user_id: &str) -> StoreResult<Vec<LinkRecord>> {
        self.links
            .scan_prefix(format!("{user_id}\0").as_bytes())
            .map(|entry| decode_link(&entry?.1))
            .collect()
    }

    async fn delete_link(
        &self,
        user_id: &str,
        provider_id: &str,
        account: &str,
    ) -> StoreResult<Option<LinkRecord>> {
        let removed = self.links.remove(link_key(user_id, provider_id, account))?;
        self.flush().await?;
        let removed = removed.map(|v| decode_link(&v)).transpose()?;
        if removed.is_some() {
            self.notify(user_id, provider_id);
        }
        Ok(removed)
    }

    async fn put_pending_revocation(&self, pending: &PendingRevocation) -> StoreResult<()> {
        self.revocations
            .insert(pending.id.as_bytes(), encode(pending)?)?;
        self.flush().await
    }

    async fn pending_revocations_due(&self, now: i64) -> StoreResult<Vec<PendingRevocation>> {
        let mut due: Vec<PendingRevocation> = Vec::new();
        for entry in self.revocations.iter() {
            let pending: PendingRevocation = decode(&entry?.1)?;
            if pending.next_attempt_at <= now {
                due.push(pending);
            }
        }
        due.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(due)
    }

    async fn pending_revocations_of_user(
        &self,
        user_id: &str,
    ) -> StoreResult<Vec<PendingRevocation>> {
        let mut found: Vec<PendingRevocation> = Vec::new();
        for entry in self.revocations.iter() {
            let pending: PendingRevocation = decode(&entry?.1)?;
            if pending.user_id == user_id {
                found.push(pending);
            }
        }
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(found)
    }

    async fn delete_pending_revocation(&self, id: &str) -> StoreResult<bool> {
        let existed = self.revocations.remove(id.as_bytes())?.is_some();
        self.flush().await?;
        Ok(existed)
    }

    async fn encryption_key_ids(&self) -> StoreResult<BTreeSet<String>> {
        let mut ids = BTreeSet::new();
        for key in self.link_key_ids.iter().keys() {
            let key = key?;
            let id = std::str::from_utf8(&key[1..])
                .map_err(|e| StoreError::Corrupt(format!("link key id: {e}")))?;
            ids.insert(id.to_owned());
        }
        for entry in self.revocations.iter() {
            let pending: PendingRevocation = decode(&entry?.1)?;
            ids.insert(pending.access_token.key_id);
            ids.extend(pending.refresh_token.map(|s| s.key_id));
        }
        for entry in self.sessions.iter() {
            let session: Session = decode(&entry?.1)?;
            if let Some(oidc) = session.oidc {
                ids.extend(oidc.id_token.map(|s| s.key_id));
                ids.extend(oidc.refresh_token.map(|s| s.key_id));
            }
        }
        for entry in self.oauth2_families.iter() {
            let family: OAuth2Family = decode(&entry?.1)?;
            ids.extend(family.retry_answer.map(|s| s.key_id));
        }
        for entry in self.signing_keys.iter() {
            let key: SigningKey = decode(&entry?.1)?;
            ids.insert(key.private_key.key_id);
        }
        for entry in self.git_ssh_keys.iter() {
            let key: GitSshKey = decode(&entry?.1)?;
            ids.insert(key.private_key.key_id);
        }
        // Plaintext (after `dbcrypt decrypt`) is not a key.
        ids.remove("");
        Ok(ids)
    }

    async fn plaintext_values(&self) -> StoreResult<u64> {
        let count = |values: &[Option<&Sealed>]| {
            values.iter().flatten().filter(|s| s.is_plaintext()).count() as u64
        };
        let mut plain = 0;
        // Links are read only when one may be plaintext (see `link_key_ids`).
        if self.link_key_ids.contains_key(key_id_entry(""))? {
            for entry in self.links.iter() {
                let l = decode_link(&entry?.1)?;
                plain += count(&sealed_of(&l).map(Some).collect::<Vec<_>>());
            }
        }
        for entry in self.revocations.iter() {
            let p: PendingRevocation = decode(&entry?.1)?;
            plain += count(&[Some(&p.access_token), p.refresh_token.as_ref()]);
        }
        for entry in self.sessions.iter() {
            let s: Session = decode(&entry?.1)?;
            if let Some(o) = &s.oidc {
                plain += count(&[o.id_token.as_ref(), o.refresh_token.as_ref()]);
            }
        }
        for entry in self.oauth2_families.iter() {
            let f: OAuth2Family = decode(&entry?.1)?;
            plain += count(&[f.retry_answer.as_ref()]);
        }
        for entry in self.signing_keys.iter() {
            let k: SigningKey = decode(&entry?.1)?;
            plain += count(&[Some(&k.private_key)]);
        }
        for entry in self.git_ssh_keys.iter() {
            let k: GitSshKey = decode(&entry?.1)?;
            plain += count(&[Some(&k.private_key)]);
        }
        Ok(plain)
    }

    fn subscribe_links(&self) -> broadcast::Receiver<LinkChanged> {
        self.events.subscribe()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.db.was_recovered(); // Touching the handle is enough: sled is in-process.
        Ok(())
    }

    async fn put_login_flow(&self, flow: &LoginFlow) -> StoreResult<()> {
        put_expiring(
            &self.login_flows,
            &flow.state_hash,
            flow,
            |f: &LoginFlow| f.expires_ms,
        )?;
        self.flush().await
    }

    async fn take_login_flow(&self, state_hash: &str) -> StoreResult<Option<LoginFlow>> {
        // `remove` is atomic: of two callbacks with the same state, one gets the flow.
        let Some(value) = self.login_flows.remove(state_hash.as_bytes())? else {
            return Ok(None);
        };
        self.flush().await?;
        let flow: LoginFlow = decode(&value)?;
        Ok((flow.expires_ms >= crate::clock::now_millis()).then_some(flow))
    }

    async fn put_device_flow(&self, flow: &DeviceFlowRecord) -> StoreResult<()> {
        put_expiring(
            &self.device_flows,
            &flow.code_hash,
            flow,
            |f: &DeviceFlowRecord| f.expires_ms,
        )?;
        self.flush().await
    }

    async fn device_flow(&self, code_hash: &str) -> StoreResult<Option<DeviceFlowRecord>> {
        Self::get(&self.device_flows, code_hash.as_bytes())
    }

    async fn replace_device_flow_if(
        &self,
        flow: &DeviceFlowRecord,
        expected_next_poll_ms: i64,
    ) -> StoreResult<bool> {
        let key = flow.code_hash.as_bytes();
        let new = encode(flow)?;
        loop {
            let Some(current) = self.device_flows.get(key)? else {
                return Ok(false);
            };
            let stored: DeviceFlowRecord = decode(&current)?;
            if stored.next_poll_ms != expected_next_poll_ms {
                return Ok(false);
            }
            if self
                .device_flows
                .compare_and_swap(key, Some(current), Some(new.as_slice()))?
                .is_ok()
            {
                break;
            }
        }
        self.flush().await?;
        Ok(true)
    }

    async fn delete_device_flow(&self, code_hash: &str) -> StoreResult<()> {
        self.device_flows.remove(code_hash.as_bytes())?;
        self.flush().await
    }

    async fn lock(&self, _name: &str) -> StoreResult<StoreLock> {
        // sled admits one process per directory: in-process locks are all there is to take.
        Ok(StoreLock::in_process())
    }

    async fn try_lock(&self, _name: &str) -> StoreResult<Option<StoreLock>> {
        Ok(Some(StoreLock::in_process()))
    }

    async fn snapshot(&self) -> StoreResult<Snapshot> {
        self.read_snapshot()
    }

    async fn import(&self, snapshot: &Snapshot) -> StoreResult<()> {
        let written = self.write_snapshot(snapshot).await;
        self.cache.forget(&Changed::Everything);
        written
    }

    async fn put_oidc_claims(&self, claims: &OidcClaims) -> StoreResult<()> {
        self.oidc_claims
            .insert(claims.user_id.as_bytes(), encode(claims)?)?;
        self.flush().await
    }

    async fn oidc_claims(&self, user_id: &str) -> StoreResult<Option<OidcClaims>> {
        Self::get(&self.oidc_claims, user_id.as_bytes())
    }

    async fn revoked_key_ids(&self) -> StoreResult<BTreeSet<String>> {
        self.revoked_keys
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }

    async fn revoke_key_ids(&self, ids: &[String], now: i64) -> StoreResult<()> {
        for id in ids {
            self.revoked_keys
                .insert(id.as_bytes(), now.to_string().as_bytes())?;
        }
        // dbcrypt revokes after rewriting every value: the links' keys are exact again.
        rebuild_link_key_ids(&self.links, &self.link_key_ids)?;
        self.flush().await
    }

    async fn put_oauth2_app(&self, app: &OAuth2App) -> StoreResult<()> {
        self.oauth2_apps.insert(app.id.as_bytes(), encode(app)?)?;
        self.flush().await
    }

    async fn oauth2_app(&self, id: &str) -> StoreResult<Option<OAuth2App>> {
        Self::get(&self.oauth2_apps, id.as_bytes())
    }

    async fn oauth2_apps(&self) -> StoreResult<Vec<OAuth2App>> {
        let mut apps: Vec<OAuth2App> = self
            .oauth2_apps
            .iter()
            .map(|entry| decode(&entry?.1))
            .collect::<StoreResult<_>>()?;
        apps.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(apps)
    }

    async fn touch_app_secret(&self, app_id: &str, secret_id: &str, at: i64) -> StoreResult<()> {
        let key = app_id.as_bytes();
        loop {
            let Some(current) = self.oauth2_apps.get(key)? else {
                return Ok(());
            };
            let mut app: OAuth2App = decode(&current)?;
            let Some(secret) = app.secrets.iter_mut().find(|s| s.id == secret_id) else {
                return Ok(());
            };
            secret.last_used_at = Some(at);
            if self
                .oauth2_apps
                .compare_and_swap(key, Some(current), Some(encode(&app)?))?
                .is_ok()
            {
                return self.flush().await;
            }
        }
    }

    async fn delete_oauth2_app(&self, id: &str) -> StoreResult<bool> {
        let existed = self.oauth2_apps.remove(id.as_bytes())?.is_some();
        for entry in self.oauth2_grants.iter() {
            let (key, value) = entry?;
            if decode::<OAuth2Grant>(&value)?.app_id == id {
                self.oauth2_grants.remove(key)?;
            }
        }
        self.remove_families(|f| f.app_id == id)?;
        self.flush().await?;
        Ok(existed)
    }

    async fn put_oauth2_code(&self, code: &OAuth2Code) -> StoreResult<()> {
        put_expiring(
            &self.oauth2_codes,
            &code.code_hash,
            code,
            |c: &OAuth2Code| c.expires_ms,
        )?;
        self.flush().await
    }

    async fn use_oauth2_code(&self, code_hash: &str) -> StoreResult<Option<OAuth2Code>> {
        let key = code_hash.as_bytes();
        loop {
            let Some(current) = self.oauth2_codes.get(key)? else {
                return Ok(None);
            };
            let code: OAuth2Code = decode(&current)?;
            if code.expires_ms < crate::clock::now_millis() {
                return Ok(None);
            }
            let used = OAuth2Code {
                used: true,
                ..code.clone()
            };
            if self
                .oauth2_codes
                .compare_and_swap(key, Some(current), Some(encode(&used)?))?
                .is_ok()
            {
                self.flush().await?;
                return Ok(Some(code));
            }
        }
    }

    async fn put_oauth2_grant(&self, grant: &OAuth2Grant) -> StoreResult<()> {
        self.oauth2_grants
            .insert(pair_key(&grant.user_id, &grant.app_id), encode(grant)?)?;
        self.flush().await
    }

    async fn oauth2_grant(&self, user_id: &str, app_id: &str) -> StoreResult<Option<OAuth2Grant>> {
        Self::get(&self.oauth2_grants, pair_key(user_id, app_id))
    }

    async fn oauth2_grants_of_user(&self, user_id: &str) -> StoreResult<Vec<OAuth2Grant>> {
        self.oauth2_grants
            .scan_prefix(format!("{user_id}\0").as_bytes())
            .map(|entry| decode(&entry?.1))
            .collect()
    }

    async fn delete_oauth2_grant(&self, user_id: &str, app_id: &str) -> StoreResult<bool> {
        let existed = self
            .oauth2_grants
            .remove(pair_key(user_id, app_id))?
            .is_some();
        self.flush().await?;
        Ok(existed)
    }

    async fn create_oauth2_family(&self, family: &OAuth2Family) -> StoreResult<()> {
        let swapped = self.oauth2_families.compare_and_swap(
            family.id.as_bytes(),
            None as Option<&[u8]>,
            Some(encode(family)?),
        )?;
        if swapped.is_err() {
            return Err(StoreError::Conflict("token family id"));
        }
        self.flush().await
    }

    async fn oauth2_family(&self, id: &str) -> StoreResult<Option<OAuth2Family>> {
        Self::get(&self.oauth2_families, id.as_bytes())
    }

    async fn replace_oauth2_family_if(
        &self,
        family: &OAuth2Family,
        expected_refresh_hash: &str,
    ) -> StoreResult<bool> {
        let key = family.id.as_bytes();
        let new = encode(family)?;
        loop {
            let Some(current) = self.oauth2_families.get(key)? else {
                return Ok(false);
            };
            let stored: OAuth2Family = decode(&current)?;
            if stored.refresh_hash != expected_refresh_hash {
                return Ok(false);
            }
            if self
                .oauth2_families
                .compare_and_swap(key, Some(current), Some(new.as_slice()))?
                .is_ok()
            {
                break;
            }
        }
        self.flush().await?;
        Ok(true)
    }

    async fn delete_oauth2_family(&self, id: &str) -> StoreResult<bool> {
        let existed = self.oauth2_families.remove(id.as_bytes())?.is_some();
        self.flush().await?;
        Ok(existed)
    }

    async fn delete_oauth2_families(&self, filter: FamilyFilter<'_>) -> StoreResult<u64> {
        let removed = self.remove_families(|f| filter.matches(f))?;
        self.flush().await?;
        Ok(removed)
    }

    async fn delete_expired_oauth2_families(&self, now: i64) -> StoreResult<u64> {
        let removed = self.remove_families(|f| f.expires_at < now)?;
        if removed > 0 {
            self.flush().await?;
        }
        Ok(removed)
    }

    async fn put_device_grant(&self, grant: &DeviceGrant) -> StoreResult<()> {
        let now = crate::clock::now_millis();
        for entry in self.device_grants.iter() {
            let (key, value) = entry?;
            let stale: DeviceGrant = decode(&value)?;
            if stale.expires_ms < now {
                self.device_grants.remove(key)?;
                self.device_user_codes.remove(stale.user_code.as_bytes())?;
            }
        }
        // The user-code index entry is claimed first: of two grants with one code, one wins.
        if self
            .device_user_codes
            .compare_and_swap(
                grant.user_code.as_bytes(),
                None as Option<&[u8]>,
                Some(grant.code_hash.as_bytes()),
            )?
            .is_err()
        {
            return Err(StoreError::Conflict("user code"));
        }
        self.device_grants
            .insert(grant.code_hash.as_bytes(), encode(grant)?)?;
        self.flush().await
    }

    async fn device_grant(&self, code_hash: &str) -> StoreResult<Option<DeviceGrant>> {
        let grant: Option<DeviceGrant> = Self::get(&self.device_grants, code_hash.as_bytes())?;
        Ok(grant.filter(|g| g.expires_ms >= crate::clock::now_millis()))
    }

    async fn device_grant_by_user_code(&self, user_code: &str) -> StoreResult<Option<DeviceGrant>> {
        match self.device_user_codes.get(user_code.as_bytes())? {
            Some(hash) => self.device_grant(&String::from_utf8_lossy(&hash)).await,
            None => Ok(None),
        }
    }

    async fn replace_device_grant_if(
        &self,
        grant: &DeviceGrant,
        expected: (DeviceDecision, i64),
    ) -> StoreResult<bool> {
        let key = grant.code_hash.as_bytes();
        let new = encode(grant)?;
        loop {
            let Some(current) = self.device_grants.get(key)? else {
                return Ok(false);
            };
            let stored: DeviceGrant = decode(&current)?;
            if (stored.decision, stored.next_poll_ms) != expected {
                return Ok(false);
            }
            if self
                .device_grants
                .compare_and_swap(key, Some(current), Some(new.as_slice()))?
                .is_ok()
            {
                break;
            }
        }
        self.flush().await?;
        Ok(true)
    }

    async fn put_signing_key(&self, key: &SigningKey) -> StoreResult<()> {
        self.signing_keys.insert(key.kid.as_bytes(), encode(key)?)?;
        self.flush().await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        let mut keys: Vec<SigningKey> = self
            .signing_keys
            .iter()
            .map(|entry| decode(&entry?.1))
            .collect::<StoreResult<_>>()?;
        keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        Ok(keys)
    }

    async fn delete_signing_key(&self, kid: &str) -> StoreResult<()> {
        self.signing_keys.remove(kid.as_bytes())?;
        self.flush().await
    }

    async fn put_oauth2_resource(&self, resource: &ProtectedResource) -> StoreResult<()> {
        self.oauth2_resources
            .insert(resource.id.as_bytes(), encode(resource)?)?;
        self.flush().await
    }

    async fn oauth2_resources(&self) -> StoreResult<Vec<ProtectedResource>> {
        let mut resources: Vec<ProtectedResource> = self
            .oauth2_resources
            .iter()
            .map(|entry| decode(&entry?.1))
            .collect::<StoreResult<_>>()?;
        resources.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(resources)
    }

    async fn delete_oauth2_resource(&self, id: &str) -> StoreResult<bool> {
        let existed = self.oauth2_resources.remove(id.as_bytes())?.is_some();
        self.flush().await?;
        Ok(existed)
    }

    async fn put_runtime_setting(&self, name: &str, value: &str) -> StoreResult<()> {
        self.runtime_settings
            .insert(name.as_bytes(), value.as_bytes())?;
        self.flush().await
    }

    async fn runtime_setting(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(self
            .runtime_settings
            .get(name.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    async fn insert_git_ssh_key(&self, key: &GitSshKey) -> StoreResult<bool> {
        let inserted = self
            .git_ssh_keys
            .compare_and_swap(key.user_id.as_bytes(), None::<&[u8]>, Some(encode(key)?))?
            .is_ok();
        self.flush().await?;
        Ok(inserted)
    }

    async fn put_git_ssh_key(&self, key: &GitSshKey) -> StoreResult<()> {
        self.git_ssh_keys
            .insert(key.user_id.as_bytes(), encode(key)?)?;
        self.flush().await
    }

    async fn git_ssh_key(&self, user_id: &str) -> StoreResult<Option<GitSshKey>> {
        Self::get(&self.git_ssh_keys, user_id.as_bytes())
    }

    async fn delete_git_ssh_key(&self, user_id: &str) -> StoreResult<bool> {
        let existed = self.git_ssh_keys.remove(user_id.as_bytes())?.is_some();
        self.flush().await?;
        Ok(existed)
    }

    async fn use_once(&self, key: &str, expires_at: i64, now: i64) -> StoreResult<bool> {
        let value = expires_at.to_be_bytes();
        let won = loop {
            let current = self.used_once.get(key.as_bytes())?;
            let live = current
                .as_deref()
                .is_some_and(|v| <[u8; 8]>::try_from(v).is_ok_and(|b| i64::from_be_bytes(b) > now));
            if live {
                break false;
            }
            if self
                .used_once
                .compare_and_swap(key.as_bytes(), current, Some(&value[..]))?
                .is_ok()
            {
                break true;
            }
        };
        if won {
            // Prune a few spent marks on each write, so the tree stays as large as what lives.
            let spent: Vec<sled::IVec> = self
                .used_once
                .iter()
                .take(64)
                .filter_map(Result::ok)
                .filter(|(_, v)| {
                    <[u8; 8]>::try_from(v.as_ref()).is_ok_and(|b| i64::from_be_bytes(b) <= now)
                })
                .map(|(k, _)| k)
                .collect();
            for k in spent {
                self.used_once.remove(k)?;
            }
            self.flush().await?;
        }
        Ok(won)
    }
}
