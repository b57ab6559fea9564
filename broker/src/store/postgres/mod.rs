//! The PostgreSQL store, for several broker replicas on one database.
//!
//! - Versioned migrations run at start under an advisory lock, so replicas starting together
//!   apply each migration once.
//! - Every sealed value has its own column and a sibling `_key_id` column (NULL: plaintext,
//!   after `dbcrypt decrypt`), like Coder's dbcrypt.
//! - Link changes are announced with `NOTIFY extauth_links`, token and user changes with
//!   `NOTIFY extauth_cache`; a dedicated connection per process `LISTEN`s, wakes local `listen`
//!   waiters and keeps the lookup path's read-through cache (`cache.rs`) true, whichever
//!   replica wrote.
//! - [`Store::lock`] is a session advisory lock on a pooled connection: released explicitly, or
//!   by closing that connection, so a replica that dies never leaves a lock behind.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio_postgres::Row;

use super::{
    DeviceDecision, DeviceFlowRecord, DeviceGrant, FamilyFilter, GitSshKey, HeldLock, LinkChanged,
    LinkRecord, LoginFlow, OAuth2App, OAuth2Code, OAuth2Family, OAuth2Grant, OidcClaims,
    OidcIdentity, OidcSession, PendingRevocation, ProtectedResource, Session, SigningKey, Snapshot,
    Store, StoreError, StoreLock, StoreResult, TokenKind, TokenRecord, User,
};
use crate::crypto::Sealed;

use super::read_cache as cache;
mod migrations;
mod notify;
mod rows;
mod store_impl;

use migrations::*;
use notify::*;
use rows::*;

/// The channel link changes are announced on.
pub(super) const CHANNEL: &str = "extauth_links";

pub(super) const LISTEN: &str = "LISTEN extauth_links; LISTEN extauth_cache";

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    pool: Pool,
    locks: Pool,
    events: broadcast::Sender<LinkChanged>,
    cache: std::sync::Arc<cache::ReadCache>,
}

/// An error with its causes (`db error: FATAL: database "x" does not exist`), since the
/// driver's own message is often only "db error".
pub(super) fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(super) fn pg(e: tokio_postgres::Error) -> StoreError {
    // A unique violation is a conflict the caller can act on; name what is taken.
    if let Some(db) = e.as_db_error() {
        if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
            let what = match db.constraint().unwrap_or_default() {
                c if c.contains("username") => "username",
                c if c.contains("oidc") => "OIDC identity",
                c if c.starts_with("api_tokens") => "token id",
                c if c.starts_with("users") => "user id",
                c if c.starts_with("oauth2_families") => "token family id",
                _ => "record",
            };
            return StoreError::Conflict(what);
        }
        return StoreError::Backend(format!("{}: {}", db.code().code(), db.message()));
    }
    StoreError::Backend(causes(&e))
}

/// The advisory lock key of a name: 64 bits of its sha256 (`pg_locks` shows it as
/// `classid` = high 32 bits, `objid` = low 32 bits).
pub fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("extauth:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// A sealed value as its two columns (`None` key id: plaintext).
impl PgStore {
    /// Connects to `url` (`CODER_PG_CONNECTION_URL`), applies pending migrations and starts
    /// listening for link changes. Fails when the database cannot be reached; the caller
    /// decides whether to retry.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_as(url, "CODER_PG_CONNECTION_URL").await
    }

    /// [`PgStore::connect`], naming the URL `setting` in messages (e.g. `--to`).
    pub async fn connect_as(url: &str, setting: &str) -> StoreResult<Self> {
        let prepared = super::postgres_tls::prepare(url).map_err(|e| {
            StoreError::Backend(format!(
                "{setting} is not a usable PostgreSQL URL ({e}); write postgres://user:password@host:5432/database?sslmode=verify-full"
            ))
        })?;
        if prepared.encrypted && prepared.check == super::postgres_tls::Check::Nothing {
            tracing::warn!(
                "{setting}: the database's TLS certificate is not checked (as libpq with this sslmode); use sslmode=verify-full, with sslrootcert for a private CA"
            );
        }
        let (config, tls) = (prepared.config, prepared.tls);
        let mut config_for_pool = config.clone();
        config_for_pool.connect_timeout(Duration::from_secs(5));
        let pool_of = |size: usize| {
            let manager = Manager::from_config(
                config_for_pool.clone(),
                tls.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size)
                .wait_timeout(Some(Duration::from_secs(10)))
                .create_timeout(Some(Duration::from_secs(5)))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(backend)
        };
        // Locks hold a connection while a provider answers a refresh (seconds, when it is
        // slow): they get a pool of their own, so that many refreshes at once never starve
        // the lookups of connections.
        let (pool, locks) = (pool_of(16)?, pool_of(32)?);
        let (events, _) = broadcast::channel(1024);
        let store = Self {
            pool,
            locks,
            events,
            cache: std::sync::Arc::new(cache::ReadCache::new(cache::POSTGRES_CAPACITY)),
        };
        store.migrate().await?;
        tokio::spawn(listen(
            config,
            tls,
            store.events.clone(),
            store.cache.clone(),
        ));
        Ok(store)
    }

    async fn client(&self) -> StoreResult<Object> {
        Self::from(&self.pool).await
    }

    async fn from(pool: &Pool) -> StoreResult<Object> {
        pool.get()
            .await
            .map_err(|e| StoreError::Backend(format!("PostgreSQL unreachable: {}", causes(&e))))
    }

    /// Applies the migrations this database has not seen, one replica at a time.
    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let key = lock_key("migrations");
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .map_err(pg)?;
        let result = async {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS extauth_schema_migrations (
                        version integer PRIMARY KEY,
                        applied_at timestamptz NOT NULL DEFAULT now())",
                )
                .await
                .map_err(pg)?;
            let current: i32 = client
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM extauth_schema_migrations",
                    &[],
                )
                .await
                .map_err(pg)?
                .get(0);
            let known = MIGRATIONS.last().map_or(0, |m| m.0);
            if current > known {
                return Err(StoreError::Backend(format!(
                    "the database schema is at version {current}, newer than this extauth-broker knows ({known}); run the newer broker, or restore a matching database"
                )));
            }
            for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
                let tx = client.transaction().await.map_err(pg)?;
                tx.batch_execute(sql).await.map_err(pg)?;
                tx.execute(
                    "INSERT INTO extauth_schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(pg)?;
                tx.commit().await.map_err(pg)?;
                tracing::info!(version, "database migration applied");
            }
            Ok(())
        }
        .await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .await;
        if unlocked.is_err() {
            // Closing the connection releases the lock.
            drop(Object::take(client));
        }
        result
    }

    /// Runs a statement; how many rows it touched.
    /// In one transaction: `prune` (given the time now, Unix milliseconds) drops expired rows of
    /// a table of short-lived records, then `insert` stores one.
    async fn put_pruning(
        &self,
        prune: &str,
        insert: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(prune, &[&crate::clock::now_millis()])
            .await
            .map_err(pg)?;
        tx.execute(insert, params).await.map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<u64> {
        self.client().await?.execute(sql, params).await.map_err(pg)
    }

    /// One row by a prepared statement kept per connection: the hot reads (every workspace
    /// lookup reads a token, a user and a link) then take one round trip instead of two.
    async fn one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<Option<Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg)?;
        client.query_opt(&statement, params).await.map_err(pg)
    }

    /// Every sealed value of the authorization server's records (families' retry answers,
    /// signing keys), for `encryption_key_ids` and `plaintext_values`.
    async fn oauth2_sealed(&self) -> StoreResult<Vec<Sealed>> {
        let client = self.client().await?;
        let families: Vec<OAuth2Family> =
            rows(&client, "SELECT doc FROM oauth2_families", &[], doc_of).await?;
        let keys: Vec<SigningKey> =
            rows(&client, "SELECT doc FROM signing_keys", &[], doc_of).await?;
        let ssh: Vec<GitSshKey> =
            rows(&client, "SELECT doc FROM git_ssh_keys", &[], doc_of).await?;
        Ok(families
            .into_iter()
            .filter_map(|f| f.retry_answer)
            .chain(keys.into_iter().map(|k| k.private_key))
            .chain(ssh.into_iter().map(|k| k.private_key))
            .collect())
    }

    /// A user's links of one provider, sorted by account: from the cache, or read and cached.
    async fn cached_links(
        &self,
        user_id: &str,
        provider_id: &str,
    ) -> StoreResult<std::sync::Arc<Vec<LinkRecord>>> {
        self.cache
            .links_or_read(user_id, provider_id, || async {
                // Prepared once per connection: a plain query string is parsed in a round
                // trip of its own before it runs.
                let client = self.client().await?;
                let statement = client
                    .prepare_cached(
                        "SELECT * FROM external_auth_links WHERE user_id = $1 AND provider_id = $2
                         ORDER BY account",
                    )
                    .await
                    .map_err(pg)?;
                client
                    .query(&statement, &[&user_id, &provider_id])
                    .await
                    .map_err(pg)?
                    .iter()
                    .map(link_of)
                    .collect()
            })
            .await
    }

    /// After a link write committed: this replica's cache and waiters learn at once (the
    /// others through the notification).
    fn notify_local(&self, user_id: &str, provider_id: &str) {
        self.cache.forget_links(user_id, provider_id);
        let _ = self.events.send(LinkChanged {
            user_id: user_id.to_owned(),
            provider_id: provider_id.to_owned(),
        });
    }

    async fn write_link(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        link: &LinkRecord,
    ) -> StoreResult<()> {
        let (access, access_key) = columns(Some(&link.access_token));
        let (refresh, refresh_key) = columns(link.refresh_token.as_ref());
        let (extra, extra_key) = columns(link.extra.as_ref());
        let owners = serde_json::to_string(&link.owners)
            .map_err(|e| StoreError::Corrupt(format!("link owners: {e}")))?;
        client
            .execute(
                UPSERT_LINK,
                &[
                    &link.user_id,
                    &link.provider_id,
                    &access,
                    &access_key,
                    &refresh,
                    &refresh_key,
                    &link.expires_at,
                    &extra,
                    &extra_key,
                    &link.refresh_failure,
                    &link.needs_validation,
                    &link.created_at,
                    &link.updated_at,
                    &link.refresh_expires_at,
                    &link.account,
                    &link.is_default,
                    &owners,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn write_session(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        session: &Session,
    ) -> StoreResult<()> {
        let oidc = session.oidc.as_ref();
        let (id_token, id_token_key) = columns(oidc.and_then(|o| o.id_token.as_ref()));
        let (refresh, refresh_key) = columns(oidc.and_then(|o| o.refresh_token.as_ref()));
        client
            .execute(
                UPSERT_SESSION,
                &[
                    &session.id_hash,
                    &session.user_id,
                    &session.csrf,
                    &session.created_at,
                    &session.expires_at,
                    &oidc.is_some(),
                    &oidc.and_then(|o| o.sid.as_deref()),
                    &id_token,
                    &id_token_key,
                    &refresh,
                    &refresh_key,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn write_pending(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        p: &PendingRevocation,
    ) -> StoreResult<()> {
        let (access, access_key) = columns(Some(&p.access_token));
        let (refresh, refresh_key) = columns(p.refresh_token.as_ref());
        let attempts = i32::try_from(p.attempts).unwrap_or(i32::MAX);
        client
            .execute(
                UPSERT_PENDING,
                &[
                    &p.id,
                    &p.user_id,
                    &p.provider_id,
                    &access,
                    &access_key,
                    &refresh,
                    &refresh_key,
                    &attempts,
                    &p.next_attempt_at,
                    &p.last_error,
                    &p.created_at,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }
}
