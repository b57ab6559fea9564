//! The PostgreSQL store, for several broker replicas on one database.
//!
//! - Versioned migrations run at start under an advisory lock, so replicas starting together
//!   apply each migration once.
//! - Every sealed value has its own column and a sibling `_key_id` column (NULL: plaintext,
//!   after `dbcrypt decrypt`), like Coder's dbcrypt.
//! - Link changes are announced with `NOTIFY extauth_links`; a dedicated connection per process
//!   `LISTEN`s and wakes local `listen` waiters, whichever replica wrote.
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
    DeviceFlowRecord, HeldLock, LinkChanged, LinkRecord, LoginFlow, OidcClaims, OidcIdentity,
    OidcSession, PendingRevocation, Session, Snapshot, Store, StoreError, StoreLock, StoreResult,
    TokenKind, TokenRecord, User,
};
use crate::crypto::Sealed;

/// The channel link changes are announced on.
const CHANNEL: &str = "extauth_links";

const LISTEN: &str = "LISTEN extauth_links";

/// Schema versions, applied in order, each in its own transaction. Append; never edit.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r"
CREATE TABLE users (
    id text PRIMARY KEY,
    username text NOT NULL UNIQUE,
    email text NOT NULL,
    name text NOT NULL,
    is_admin boolean NOT NULL,
    oidc_issuer text,
    oidc_subject text,
    created_at bigint NOT NULL,
    UNIQUE (oidc_issuer, oidc_subject)
);
CREATE TABLE sessions (
    id_hash text PRIMARY KEY,
    user_id text NOT NULL,
    csrf text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    oidc boolean NOT NULL,
    oidc_sid text,
    oidc_id_token text,
    oidc_id_token_key_id text,
    oidc_refresh_token text,
    oidc_refresh_token_key_id text
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE TABLE api_tokens (
    id text PRIMARY KEY,
    kind text NOT NULL,
    user_id text NOT NULL,
    name text NOT NULL,
    secret_hash text NOT NULL,
    providers text[],
    created_at bigint NOT NULL,
    expires_at bigint
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, kind, created_at);
CREATE TABLE external_auth_links (
    user_id text NOT NULL,
    provider_id text NOT NULL,
    access_token text NOT NULL,
    access_token_key_id text,
    refresh_token text,
    refresh_token_key_id text,
    expires_at bigint,
    extra text,
    extra_key_id text,
    refresh_failure text,
    needs_validation boolean NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (user_id, provider_id)
);
CREATE TABLE pending_revocations (
    id text PRIMARY KEY,
    user_id text NOT NULL,
    provider_id text NOT NULL,
    access_token text NOT NULL,
    access_token_key_id text,
    refresh_token text,
    refresh_token_key_id text,
    attempts integer NOT NULL,
    next_attempt_at bigint NOT NULL,
    last_error text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX pending_revocations_due ON pending_revocations (next_attempt_at);
CREATE INDEX pending_revocations_user ON pending_revocations (user_id);
CREATE TABLE dbcrypt_keys (
    key_id text PRIMARY KEY,
    revoked_at bigint NOT NULL
);
",
    ),
    (
        2,
        r"
CREATE TABLE device_flows (
    code_hash text PRIMARY KEY,
    user_id text NOT NULL,
    provider_id text NOT NULL,
    interval_ms bigint NOT NULL,
    next_poll_ms bigint NOT NULL,
    expires_ms bigint NOT NULL
);
CREATE INDEX device_flows_expiry ON device_flows (expires_ms);
",
    ),
    (
        3,
        r"
CREATE TABLE oidc_claims (
    user_id text PRIMARY KEY,
    claims text NOT NULL,
    updated_at bigint NOT NULL
);
",
    ),
    (
        4,
        r"
CREATE TABLE login_flows (
    state_hash text PRIMARY KEY,
    binding_hash text NOT NULL,
    user_id text NOT NULL,
    purpose text NOT NULL,
    verifier text,
    verifier_key_id text,
    nonce text NOT NULL,
    redirect text NOT NULL,
    expires_ms bigint NOT NULL
);
CREATE INDEX login_flows_expiry ON login_flows (expires_ms);
",
    ),
];

const UPSERT_OIDC_CLAIMS: &str = "INSERT INTO oidc_claims (user_id, claims, updated_at)
     VALUES ($1, $2, $3)
     ON CONFLICT (user_id) DO UPDATE SET claims = $2, updated_at = $3";

fn oidc_claims_of(row: &Row) -> StoreResult<OidcClaims> {
    Ok(OidcClaims {
        user_id: row.try_get("user_id").map_err(pg)?,
        claims: row.try_get("claims").map_err(pg)?,
        updated_at: row.try_get("updated_at").map_err(pg)?,
    })
}

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    pool: Pool,
    locks: Pool,
    events: broadcast::Sender<LinkChanged>,
}

/// An error with its causes (`db error: FATAL: database "x" does not exist`), since the
/// driver's own message is often only "db error".
fn causes(e: &dyn std::error::Error) -> String {
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

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    // A unique violation is a conflict the caller can act on; name what is taken.
    if let Some(db) = e.as_db_error() {
        if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
            let what = match db.constraint().unwrap_or_default() {
                c if c.contains("username") => "username",
                c if c.contains("oidc") => "OIDC identity",
                c if c.starts_with("api_tokens") => "token id",
                c if c.starts_with("users") => "user id",
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
fn columns(sealed: Option<&Sealed>) -> (Option<&str>, Option<&str>) {
    match sealed {
        None => (None, None),
        Some(s) => (
            Some(s.data.as_str()),
            (!s.key_id.is_empty()).then_some(s.key_id.as_str()),
        ),
    }
}

fn sealed_at(row: &Row, data: &str, key: &str) -> StoreResult<Option<Sealed>> {
    let data: Option<String> = row.try_get(data).map_err(pg)?;
    let key_id: Option<String> = row.try_get(key).map_err(pg)?;
    Ok(data.map(|data| Sealed {
        key_id: key_id.unwrap_or_default(),
        data,
    }))
}

fn user_of(row: &Row) -> StoreResult<User> {
    user_at(row, "")
}

/// The user in `row` whose columns are named `<prefix><column>` (a join names them apart).
fn user_at(row: &Row, prefix: &str) -> StoreResult<User> {
    let get = |column: &str| format!("{prefix}{column}");
    let issuer: Option<String> = row.try_get(get("oidc_issuer").as_str()).map_err(pg)?;
    let subject: Option<String> = row.try_get(get("oidc_subject").as_str()).map_err(pg)?;
    Ok(User {
        id: row.try_get(get("id").as_str()).map_err(pg)?,
        username: row.try_get(get("username").as_str()).map_err(pg)?,
        email: row.try_get(get("email").as_str()).map_err(pg)?,
        name: row.try_get(get("name").as_str()).map_err(pg)?,
        is_admin: row.try_get(get("is_admin").as_str()).map_err(pg)?,
        oidc: issuer
            .zip(subject)
            .map(|(issuer, subject)| OidcIdentity { issuer, subject }),
        created_at: row.try_get(get("created_at").as_str()).map_err(pg)?,
    })
}

/// A token and its user in one round trip (every token-authenticated request reads both).
const TOKEN_WITH_USER: &str = "SELECT t.*, u.id AS u_id, u.username AS u_username,
     u.email AS u_email, u.name AS u_name, u.is_admin AS u_is_admin,
     u.oidc_issuer AS u_oidc_issuer, u.oidc_subject AS u_oidc_subject,
     u.created_at AS u_created_at
     FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id WHERE t.id = $1";

fn session_of(row: &Row) -> StoreResult<Session> {
    let oidc: bool = row.try_get("oidc").map_err(pg)?;
    Ok(Session {
        id_hash: row.try_get("id_hash").map_err(pg)?,
        user_id: row.try_get("user_id").map_err(pg)?,
        csrf: row.try_get("csrf").map_err(pg)?,
        created_at: row.try_get("created_at").map_err(pg)?,
        expires_at: row.try_get("expires_at").map_err(pg)?,
        oidc: if oidc {
            Some(OidcSession {
                sid: row.try_get("oidc_sid").map_err(pg)?,
                id_token: sealed_at(row, "oidc_id_token", "oidc_id_token_key_id")?,
                refresh_token: sealed_at(row, "oidc_refresh_token", "oidc_refresh_token_key_id")?,
            })
        } else {
            None
        },
    })
}

fn kind_name(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Api => "api",
        TokenKind::Workspace => "workspace",
    }
}

fn token_of(row: &Row) -> StoreResult<TokenRecord> {
    let kind: String = row.try_get("kind").map_err(pg)?;
    Ok(TokenRecord {
        id: row.try_get("id").map_err(pg)?,
        kind: match kind.as_str() {
            "api" => TokenKind::Api,
            "workspace" => TokenKind::Workspace,
            other => return Err(StoreError::Corrupt(format!("token kind {other:?}"))),
        },
        user_id: row.try_get("user_id").map_err(pg)?,
        name: row.try_get("name").map_err(pg)?,
        secret_hash: row.try_get("secret_hash").map_err(pg)?,
        providers: row.try_get("providers").map_err(pg)?,
        created_at: row.try_get("created_at").map_err(pg)?,
        expires_at: row.try_get("expires_at").map_err(pg)?,
    })
}

fn link_of(row: &Row) -> StoreResult<LinkRecord> {
    Ok(LinkRecord {
        user_id: row.try_get("user_id").map_err(pg)?,
        provider_id: row.try_get("provider_id").map_err(pg)?,
        access_token: sealed_at(row, "access_token", "access_token_key_id")?
            .ok_or_else(|| StoreError::Corrupt("link without access token".into()))?,
        refresh_token: sealed_at(row, "refresh_token", "refresh_token_key_id")?,
        expires_at: row.try_get("expires_at").map_err(pg)?,
        extra: sealed_at(row, "extra", "extra_key_id")?,
        refresh_failure: row.try_get("refresh_failure").map_err(pg)?,
        needs_validation: row.try_get("needs_validation").map_err(pg)?,
        created_at: row.try_get("created_at").map_err(pg)?,
        updated_at: row.try_get("updated_at").map_err(pg)?,
    })
}

fn device_flow_of(row: &Row) -> StoreResult<DeviceFlowRecord> {
    Ok(DeviceFlowRecord {
        code_hash: row.try_get("code_hash").map_err(pg)?,
        user_id: row.try_get("user_id").map_err(pg)?,
        provider_id: row.try_get("provider_id").map_err(pg)?,
        interval_ms: row.try_get("interval_ms").map_err(pg)?,
        next_poll_ms: row.try_get("next_poll_ms").map_err(pg)?,
        expires_ms: row.try_get("expires_ms").map_err(pg)?,
    })
}

fn login_flow_of(row: &Row) -> StoreResult<LoginFlow> {
    Ok(LoginFlow {
        state_hash: row.try_get("state_hash").map_err(pg)?,
        binding_hash: row.try_get("binding_hash").map_err(pg)?,
        user_id: row.try_get("user_id").map_err(pg)?,
        purpose: row.try_get("purpose").map_err(pg)?,
        verifier: sealed_at(row, "verifier", "verifier_key_id")?,
        nonce: row.try_get("nonce").map_err(pg)?,
        redirect: row.try_get("redirect").map_err(pg)?,
        expires_ms: row.try_get("expires_ms").map_err(pg)?,
    })
}

fn pending_of(row: &Row) -> StoreResult<PendingRevocation> {
    let attempts: i32 = row.try_get("attempts").map_err(pg)?;
    Ok(PendingRevocation {
        id: row.try_get("id").map_err(pg)?,
        user_id: row.try_get("user_id").map_err(pg)?,
        provider_id: row.try_get("provider_id").map_err(pg)?,
        access_token: sealed_at(row, "access_token", "access_token_key_id")?
            .ok_or_else(|| StoreError::Corrupt("revocation without access token".into()))?,
        refresh_token: sealed_at(row, "refresh_token", "refresh_token_key_id")?,
        attempts: u32::try_from(attempts).unwrap_or_default(),
        next_attempt_at: row.try_get("next_attempt_at").map_err(pg)?,
        last_error: row.try_get("last_error").map_err(pg)?,
        created_at: row.try_get("created_at").map_err(pg)?,
    })
}

const INSERT_USER: &str =
    "INSERT INTO users (id, username, email, name, is_admin, oidc_issuer, oidc_subject, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const UPSERT_SESSION: &str =
    "INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at, oidc, oidc_sid,
         oidc_id_token, oidc_id_token_key_id, oidc_refresh_token, oidc_refresh_token_key_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (id_hash) DO UPDATE SET user_id = $2, csrf = $3, created_at = $4, expires_at = $5,
         oidc = $6, oidc_sid = $7, oidc_id_token = $8, oidc_id_token_key_id = $9,
         oidc_refresh_token = $10, oidc_refresh_token_key_id = $11";
const INSERT_TOKEN: &str = "INSERT INTO api_tokens (id, kind, user_id, name, secret_hash, providers, created_at, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const UPSERT_LINK: &str =
    "INSERT INTO external_auth_links (user_id, provider_id, access_token, access_token_key_id,
         refresh_token, refresh_token_key_id, expires_at, extra, extra_key_id, refresh_failure,
         needs_validation, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
     ON CONFLICT (user_id, provider_id) DO UPDATE SET access_token = $3, access_token_key_id = $4,
         refresh_token = $5, refresh_token_key_id = $6, expires_at = $7, extra = $8,
         extra_key_id = $9, refresh_failure = $10, needs_validation = $11, created_at = $12,
         updated_at = $13";
const UPSERT_PENDING: &str =
    "INSERT INTO pending_revocations (id, user_id, provider_id, access_token, access_token_key_id,
         refresh_token, refresh_token_key_id, attempts, next_attempt_at, last_error, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (id) DO UPDATE SET user_id = $2, provider_id = $3, access_token = $4,
         access_token_key_id = $5, refresh_token = $6, refresh_token_key_id = $7, attempts = $8,
         next_attempt_at = $9, last_error = $10, created_at = $11";

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
        };
        store.migrate().await?;
        tokio::spawn(listen(config, tls, store.events.clone()));
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

    fn notify_local(&self, user_id: &str, provider_id: &str) {
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

/// Keeps a connection `LISTEN`ing for link changes and forwards them to local waiters;
/// reconnects after a failure, then tells every waiter to look again (what changed while the
/// connection was down is not known).
async fn listen(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    events: broadcast::Sender<LinkChanged>,
) {
    let mut delay = Duration::from_millis(250);
    let mut reconnecting = false;
    loop {
        match listen_once(&config, &tls, &events, reconnecting).await {
            // It was listening until the connection ended: start over quickly.
            Ok(()) => delay = Duration::from_millis(250),
            Err(e) => tracing::warn!(
                error = %causes(&e),
                retry_in_ms = delay.as_millis() as u64,
                "PostgreSQL LISTEN connection unavailable"
            ),
        }
        reconnecting = true;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One `LISTEN` connection, until it ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    events: &broadcast::Sender<LinkChanged>,
    reconnecting: bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let forward = events.clone();
    // The connection delivers notifications only while it is polled, LISTEN's answer included.
    let pump = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message? {
                if let Some((user_id, provider_id)) = n.payload().split_once('\n') {
                    let _ = forward.send(LinkChanged {
                        user_id: user_id.to_owned(),
                        provider_id: provider_id.to_owned(),
                    });
                }
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    client.batch_execute(LISTEN).await?;
    if reconnecting {
        let _ = events.send(LinkChanged::unknown());
    }
    let ended = pump.await;
    drop(client);
    match ended {
        Ok(result) => result,
        // The pump never panics; a cancelled runtime is shutting down anyway.
        Err(_) => Ok(()),
    }
}

/// Holds [`super::SERVING_LOCK`] shared on a connection of its own for as long as the process
/// runs, taking it again after the connection is lost. `acquired` learns when it is first held
/// (or why it could not be).
async fn hold_serving(pool: Pool, acquired: tokio::sync::oneshot::Sender<StoreResult<()>>) {
    let key = lock_key(super::SERVING_LOCK);
    let mut acquired = Some(acquired);
    let mut delay = Duration::from_millis(250);
    loop {
        let held = async {
            let client = PgStore::from(&pool).await?;
            let free: bool = client
                .query_one("SELECT pg_try_advisory_lock_shared($1)", &[&key])
                .await
                .map_err(pg)?
                .get(0);
            if !free {
                tracing::warn!(
                    "a maintenance command (dbcrypt) is running on this database; waiting for it to finish"
                );
                client
                    .execute("SELECT pg_advisory_lock_shared($1)", &[&key])
                    .await
                    .map_err(pg)?;
            }
            Ok::<_, StoreError>(Object::take(client))
        }
        .await;
        match held {
            Ok(client) => {
                if let Some(acquired) = acquired.take() {
                    let _ = acquired.send(Ok(()));
                }
                delay = Duration::from_millis(250);
                // Held until the connection ends; a cheap query notices a dead one.
                while client.simple_query("").await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(15)).await;
                }
                tracing::warn!(
                    "PostgreSQL connection holding the replica registration lost; taking it again"
                );
            }
            Err(e) => {
                if let Some(acquired) = acquired.take() {
                    let _ = acquired.send(Err(e));
                    return;
                }
                tracing::warn!(error = %e, "registering this replica again failed; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// A session advisory lock on a connection taken out of the pool's rotation until released.
struct PgLock {
    client: Option<Object>,
    key: i64,
}

#[async_trait]
impl HeldLock for PgLock {
    async fn release(mut self: Box<Self>) {
        if let Some(client) = self.client.take() {
            if client
                .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
                .await
                .is_err()
            {
                drop(Object::take(client));
            }
        }
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        // Not released (a panic, a cancelled task): close the connection, which releases the
        // lock, rather than return a connection that still holds it to the pool.
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let client = self.client().await?;
        write_user(&client, INSERT_USER, user).await
    }

    async fn update_user(&self, user: &User) -> StoreResult<()> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE users SET email = $2, name = $3, is_admin = $4 WHERE id = $1",
                &[&user.id, &user.email, &user.name, &user.is_admin],
            )
            .await
            .map_err(pg)?;
        if updated == 0 {
            return Err(StoreError::Backend(format!("no user {}", user.id)));
        }
        Ok(())
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        let row = self
            .one("SELECT * FROM users WHERE id = $1", &[&id])
            .await?;
        row.as_ref().map(user_of).transpose()
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM users WHERE username = $1", &[&username])
            .await
            .map_err(pg)?;
        row.as_ref().map(user_of).transpose()
    }

    async fn user_by_oidc(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT * FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2",
                &[&issuer, &subject],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(user_of).transpose()
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .map_err(pg)?
            .get(0);
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn put_session(&self, session: &Session) -> StoreResult<()> {
        let client = self.client().await?;
        self.write_session(&client, session).await
    }

    async fn session(&self, id_hash: &str) -> StoreResult<Option<Session>> {
        let row = self
            .one("SELECT * FROM sessions WHERE id_hash = $1", &[&id_hash])
            .await?;
        row.as_ref().map(session_of).transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        self.execute("DELETE FROM sessions WHERE id_hash = $1", &[&id_hash])
            .await
            .map(drop)
    }

    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64> {
        self.execute("DELETE FROM sessions WHERE user_id = $1", &[&user_id])
            .await
    }

    async fn delete_sessions_by_sid(&self, user_id: &str, sid: &str) -> StoreResult<u64> {
        self.execute(
            "DELETE FROM sessions WHERE user_id = $1 AND oidc_sid = $2",
            &[&user_id, &sid],
        )
        .await
    }

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                INSERT_TOKEN,
                &[
                    &token.id,
                    &kind_name(token.kind),
                    &token.user_id,
                    &token.name,
                    &token.secret_hash,
                    &token.providers,
                    &token.created_at,
                    &token.expires_at,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        let row = self
            .one("SELECT * FROM api_tokens WHERE id = $1", &[&id])
            .await?;
        row.as_ref().map(token_of).transpose()
    }

    async fn token_with_user(&self, id: &str) -> StoreResult<Option<(TokenRecord, Option<User>)>> {
        let Some(row) = self.one(TOKEN_WITH_USER, &[&id]).await? else {
            return Ok(None);
        };
        let token = token_of(&row)?;
        let user_id: Option<String> = row.try_get("u_id").map_err(pg)?;
        let user = user_id.map(|_| user_at(&row, "u_")).transpose()?;
        Ok(Some((token, user)))
    }

    async fn tokens_of_user(
        &self,
        user_id: &str,
        kind: TokenKind,
    ) -> StoreResult<Vec<TokenRecord>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT * FROM api_tokens WHERE user_id = $1 AND kind = $2 ORDER BY created_at, id",
            &[&user_id, &kind_name(kind)],
            token_of,
        )
        .await
    }

    async fn delete_token(&self, id: &str) -> StoreResult<bool> {
        Ok(self
            .execute("DELETE FROM api_tokens WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    async fn put_link(&self, link: &LinkRecord) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        self.write_link(&tx, link).await?;
        notify(&tx, &link.user_id, &link.provider_id).await?;
        tx.commit().await.map_err(pg)?;
        self.notify_local(&link.user_id, &link.provider_id);
        Ok(())
    }

    async fn replace_link_if(
        &self,
        link: &LinkRecord,
        expected_refresh: Option<&Sealed>,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                "SELECT refresh_token, refresh_token_key_id FROM external_auth_links
                 WHERE user_id = $1 AND provider_id = $2 FOR UPDATE",
                &[&link.user_id, &link.provider_id],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Ok(false);
        };
        if sealed_at(&row, "refresh_token", "refresh_token_key_id")?.as_ref() != expected_refresh {
            return Ok(false);
        }
        self.write_link(&tx, link).await?;
        notify(&tx, &link.user_id, &link.provider_id).await?;
        tx.commit().await.map_err(pg)?;
        self.notify_local(&link.user_id, &link.provider_id);
        Ok(true)
    }

    async fn link(&self, user_id: &str, provider_id: &str) -> StoreResult<Option<LinkRecord>> {
        let row = self
            .one(
                "SELECT * FROM external_auth_links WHERE user_id = $1 AND provider_id = $2",
                &[&user_id, &provider_id],
            )
            .await?;
        row.as_ref().map(link_of).transpose()
    }

    async fn links_of_user(&self, user_id: &str) -> StoreResult<Vec<LinkRecord>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT * FROM external_auth_links WHERE user_id = $1 ORDER BY provider_id",
            &[&user_id],
            link_of,
        )
        .await
    }

    async fn delete_link(
        &self,
        user_id: &str,
        provider_id: &str,
    ) -> StoreResult<Option<LinkRecord>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                "DELETE FROM external_auth_links WHERE user_id = $1 AND provider_id = $2 RETURNING *",
                &[&user_id, &provider_id],
            )
            .await
            .map_err(pg)?;
        let removed = row.as_ref().map(link_of).transpose()?;
        if removed.is_some() {
            notify(&tx, user_id, provider_id).await?;
        }
        tx.commit().await.map_err(pg)?;
        if removed.is_some() {
            self.notify_local(user_id, provider_id);
        }
        Ok(removed)
    }

    async fn put_pending_revocation(&self, pending: &PendingRevocation) -> StoreResult<()> {
        let client = self.client().await?;
        self.write_pending(&client, pending).await
    }

    async fn pending_revocations_due(&self, now: i64) -> StoreResult<Vec<PendingRevocation>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT * FROM pending_revocations WHERE next_attempt_at <= $1 ORDER BY created_at, id",
            &[&now],
            pending_of,
        )
        .await
    }

    async fn pending_revocations_of_user(
        &self,
        user_id: &str,
    ) -> StoreResult<Vec<PendingRevocation>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT * FROM pending_revocations WHERE user_id = $1 ORDER BY created_at, id",
            &[&user_id],
            pending_of,
        )
        .await
    }

    async fn delete_pending_revocation(&self, id: &str) -> StoreResult<bool> {
        Ok(self
            .execute("DELETE FROM pending_revocations WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    async fn encryption_key_ids(&self) -> StoreResult<BTreeSet<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT access_token_key_id FROM external_auth_links
                 UNION SELECT refresh_token_key_id FROM external_auth_links
                 UNION SELECT extra_key_id FROM external_auth_links
                 UNION SELECT access_token_key_id FROM pending_revocations
                 UNION SELECT refresh_token_key_id FROM pending_revocations
                 UNION SELECT oidc_id_token_key_id FROM sessions
                 UNION SELECT oidc_refresh_token_key_id FROM sessions",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(0))
            .collect())
    }

    async fn plaintext_values(&self) -> StoreResult<u64> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one(
                "SELECT
                   (SELECT count(*) FROM external_auth_links WHERE access_token_key_id IS NULL)
                 + (SELECT count(*) FROM external_auth_links WHERE refresh_token IS NOT NULL AND refresh_token_key_id IS NULL)
                 + (SELECT count(*) FROM external_auth_links WHERE extra IS NOT NULL AND extra_key_id IS NULL)
                 + (SELECT count(*) FROM pending_revocations WHERE access_token_key_id IS NULL)
                 + (SELECT count(*) FROM pending_revocations WHERE refresh_token IS NOT NULL AND refresh_token_key_id IS NULL)
                 + (SELECT count(*) FROM sessions WHERE oidc_id_token IS NOT NULL AND oidc_id_token_key_id IS NULL)
                 + (SELECT count(*) FROM sessions WHERE oidc_refresh_token IS NOT NULL AND oidc_refresh_token_key_id IS NULL)",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        Ok(u64::try_from(n).unwrap_or_default())
    }

    fn subscribe_links(&self) -> broadcast::Receiver<LinkChanged> {
        self.events.subscribe()
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.execute("SELECT 1", &[]).await.map_err(pg)?;
        Ok(())
    }

    async fn put_login_flow(&self, flow: &LoginFlow) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "DELETE FROM login_flows WHERE expires_ms < $1",
            &[&crate::clock::now_millis()],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO login_flows (state_hash, binding_hash, user_id, purpose, verifier,
                 verifier_key_id, nonce, redirect, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &flow.state_hash,
                &flow.binding_hash,
                &flow.user_id,
                &flow.purpose,
                &flow.verifier.as_ref().map(|v| v.data.as_str()),
                &flow.verifier.as_ref().map(|v| v.key_id.as_str()),
                &flow.nonce,
                &flow.redirect,
                &flow.expires_ms,
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn take_login_flow(&self, state_hash: &str) -> StoreResult<Option<LoginFlow>> {
        let row = self
            .one(
                "DELETE FROM login_flows WHERE state_hash = $1 RETURNING *",
                &[&state_hash],
            )
            .await?;
        let flow = row.as_ref().map(login_flow_of).transpose()?;
        Ok(flow.filter(|f| f.expires_ms >= crate::clock::now_millis()))
    }

    async fn put_device_flow(&self, flow: &DeviceFlowRecord) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "DELETE FROM device_flows WHERE expires_ms < $1",
            &[&crate::clock::now_millis()],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO device_flows (code_hash, user_id, provider_id, interval_ms, next_poll_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (code_hash) DO UPDATE SET user_id = $2, provider_id = $3,
                 interval_ms = $4, next_poll_ms = $5, expires_ms = $6",
            &[
                &flow.code_hash,
                &flow.user_id,
                &flow.provider_id,
                &flow.interval_ms,
                &flow.next_poll_ms,
                &flow.expires_ms,
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn device_flow(&self, code_hash: &str) -> StoreResult<Option<DeviceFlowRecord>> {
        let row = self
            .one(
                "SELECT * FROM device_flows WHERE code_hash = $1",
                &[&code_hash],
            )
            .await?;
        row.as_ref().map(device_flow_of).transpose()
    }

    async fn replace_device_flow_if(
        &self,
        flow: &DeviceFlowRecord,
        expected_next_poll_ms: i64,
    ) -> StoreResult<bool> {
        let updated = self
            .execute(
                "UPDATE device_flows SET interval_ms = $2, next_poll_ms = $3, expires_ms = $4
                 WHERE code_hash = $1 AND next_poll_ms = $5",
                &[
                    &flow.code_hash,
                    &flow.interval_ms,
                    &flow.next_poll_ms,
                    &flow.expires_ms,
                    &expected_next_poll_ms,
                ],
            )
            .await?;
        Ok(updated == 1)
    }

    async fn delete_device_flow(&self, code_hash: &str) -> StoreResult<()> {
        self.execute(
            "DELETE FROM device_flows WHERE code_hash = $1",
            &[&code_hash],
        )
        .await
        .map(drop)
    }

    async fn lock(&self, name: &str) -> StoreResult<StoreLock> {
        let client = Self::from(&self.locks).await?;
        let key = lock_key(name);
        let lock = PgLock {
            client: Some(client),
            key,
        };
        if let Some(client) = &lock.client {
            // On failure the lock is dropped, which closes the connection.
            client
                .execute("SELECT pg_advisory_lock($1)", &[&key])
                .await
                .map_err(pg)?;
        }
        Ok(StoreLock::held(Box::new(lock)))
    }

    async fn register_replica(&self) -> StoreResult<()> {
        let (acquired, first) = tokio::sync::oneshot::channel();
        tokio::spawn(hold_serving(self.locks.clone(), acquired));
        first.await.map_err(|_| {
            StoreError::Backend("PostgreSQL: the replica registration ended early".to_owned())
        })?
    }

    async fn try_lock(&self, name: &str) -> StoreResult<Option<StoreLock>> {
        let client = Self::from(&self.locks).await?;
        let key = lock_key(name);
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(pg)?
            .get(0);
        Ok(got.then(|| {
            StoreLock::held(Box::new(PgLock {
                client: Some(client),
                key,
            }))
        }))
    }

    async fn snapshot(&self) -> StoreResult<Snapshot> {
        let mut client = self.client().await?;
        // One consistent view of every table.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let snapshot = Snapshot {
            users: rows(&tx, "SELECT * FROM users", &[], user_of).await?,
            sessions: rows(&tx, "SELECT * FROM sessions", &[], session_of).await?,
            tokens: rows(&tx, "SELECT * FROM api_tokens", &[], token_of).await?,
            links: rows(&tx, "SELECT * FROM external_auth_links", &[], link_of).await?,
            pending_revocations: rows(&tx, "SELECT * FROM pending_revocations", &[], pending_of)
                .await?,
            revoked_keys: rows(&tx, "SELECT key_id FROM dbcrypt_keys", &[], |r| {
                r.try_get(0).map_err(pg)
            })
            .await?,
            oidc_claims: rows(&tx, "SELECT * FROM oidc_claims", &[], oidc_claims_of).await?,
        };
        tx.commit().await.map_err(pg)?;
        Ok(snapshot.sorted())
    }

    async fn import(&self, snapshot: &Snapshot) -> StoreResult<()> {
        let mut client = self.client().await?;
        // All or nothing: a failed import leaves the database as it was.
        let tx = client.transaction().await.map_err(pg)?;
        for user in &snapshot.users {
            write_user(
                &tx,
                &format!(
                    "{INSERT_USER} ON CONFLICT (id) DO UPDATE SET username = $2, email = $3, name = $4,
                     is_admin = $5, oidc_issuer = $6, oidc_subject = $7, created_at = $8"
                ),
                user,
            )
            .await?;
        }
        for session in &snapshot.sessions {
            self.write_session(&tx, session).await?;
        }
        for token in &snapshot.tokens {
            tx.execute(
                &format!(
                    "{INSERT_TOKEN} ON CONFLICT (id) DO UPDATE SET kind = $2, user_id = $3, name = $4,
                     secret_hash = $5, providers = $6, created_at = $7, expires_at = $8"
                ),
                &[
                    &token.id,
                    &kind_name(token.kind),
                    &token.user_id,
                    &token.name,
                    &token.secret_hash,
                    &token.providers,
                    &token.created_at,
                    &token.expires_at,
                ],
            )
            .await
            .map_err(pg)?;
        }
        for link in &snapshot.links {
            self.write_link(&tx, link).await?;
        }
        for pending in &snapshot.pending_revocations {
            self.write_pending(&tx, pending).await?;
        }
        for id in &snapshot.revoked_keys {
            tx.execute(
                "INSERT INTO dbcrypt_keys (key_id, revoked_at) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                &[id],
            )
            .await
            .map_err(pg)?;
        }
        for claims in &snapshot.oidc_claims {
            tx.execute(
                UPSERT_OIDC_CLAIMS,
                &[&claims.user_id, &claims.claims, &claims.updated_at],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    async fn put_oidc_claims(&self, claims: &OidcClaims) -> StoreResult<()> {
        self.execute(
            UPSERT_OIDC_CLAIMS,
            &[&claims.user_id, &claims.claims, &claims.updated_at],
        )
        .await
        .map(drop)
    }

    async fn oidc_claims(&self, user_id: &str) -> StoreResult<Option<OidcClaims>> {
        let row = self
            .one("SELECT * FROM oidc_claims WHERE user_id = $1", &[&user_id])
            .await?;
        row.as_ref().map(oidc_claims_of).transpose()
    }

    async fn revoked_key_ids(&self) -> StoreResult<BTreeSet<String>> {
        let client = self.client().await?;
        Ok(client
            .query("SELECT key_id FROM dbcrypt_keys", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn revoke_key_ids(&self, ids: &[String], now: i64) -> StoreResult<()> {
        let client = self.client().await?;
        for id in ids {
            client
                .execute(
                    "INSERT INTO dbcrypt_keys (key_id, revoked_at) VALUES ($1, $2)
                     ON CONFLICT (key_id) DO UPDATE SET revoked_at = $2",
                    &[id, &now],
                )
                .await
                .map_err(pg)?;
        }
        Ok(())
    }
}

/// Inserts `user` with `sql` (a plain insert, or one replacing by id).
async fn write_user(
    client: &impl deadpool_postgres::GenericClient,
    sql: &str,
    user: &User,
) -> StoreResult<()> {
    let oidc = user.oidc.as_ref();
    client
        .execute(
            sql,
            &[
                &user.id,
                &user.username,
                &user.email,
                &user.name,
                &user.is_admin,
                &oidc.map(|o| o.issuer.as_str()),
                &oidc.map(|o| o.subject.as_str()),
                &user.created_at,
            ],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

/// Every row of a query, converted.
async fn rows<T>(
    client: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    convert: impl Fn(&Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    client
        .query(sql, params)
        .await
        .map_err(pg)?
        .iter()
        .map(convert)
        .collect()
}

/// Announces a link change to every replica when the transaction commits.
async fn notify(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: &str,
    provider_id: &str,
) -> StoreResult<()> {
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &format!("{user_id}\n{provider_id}")],
    )
    .await
    .map_err(pg)?;
    Ok(())
}
