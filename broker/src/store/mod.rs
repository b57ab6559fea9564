//! Storage: one [`Store`] trait, one conformance suite ([`conformance`]) that every backend must
//! pass, and the backends: sled (embedded, one process) and PostgreSQL (several replicas).
//!
//! Records hold secrets only as [`Sealed`] ciphertext and token secrets only as hashes: a
//! backend never sees a plaintext credential. Every write returns only once it is durable
//! (sled: flushed), so a request is never acknowledged for data a crash would lose.

mod oauth2;
mod postgres;
pub mod postgres_tls;
mod read_cache;
mod sled_store;
mod timed;

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use oauth2::{
    AppOrigin, AppSecret, ClientType, DeviceDecision, DeviceGrant, FamilyFilter, OAuth2App,
    OAuth2Code, OAuth2Family, OAuth2Grant, ProtectedResource, SigningKey,
};
pub use postgres::{PgStore, lock_key};

/// The lock serving replicas hold shared ([`Store::register_replica`]) and maintenance
/// commands (`dbcrypt`) take for themselves.
pub const SERVING_LOCK: &str = "serving";
pub use sled_store::SledStore;
pub use timed::Timed;

use crate::crypto::Sealed;

/// A user of the broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Opaque, random.
    pub id: String,
    /// Unique, shown in the UI and used in admin APIs.
    pub username: String,
    /// From the IdP; may be empty.
    pub email: String,
    /// Display name; may be empty.
    pub name: String,
    /// Admins may mint workspace tokens for other users.
    pub is_admin: bool,
    /// OIDC identity (`iss`, `sub`); users are linked by it only, never by email.
    pub oidc: Option<OidcIdentity>,
    /// Unix seconds.
    pub created_at: i64,
}

/// An OIDC identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcIdentity {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
}

/// A browser session. The cookie holds a secret; the store keeps its hash as the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// sha256 of the cookie value, hex.
    pub id_hash: String,
    /// Whose session.
    pub user_id: String,
    /// The anti-CSRF token every state-changing form must echo.
    pub csrf: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Set when the session came from an OIDC sign-in.
    #[serde(default)]
    pub oidc: Option<OidcSession>,
}

/// What a session keeps of the OIDC sign-in it came from: enough for RP-initiated logout
/// (`id_token_hint`) and back-channel logout (`sid`), and the IdP's refresh token, sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcSession {
    /// The IdP's session id (`sid` claim), if it sent one.
    pub sid: Option<String>,
    /// The ID token, sealed (for `id_token_hint`).
    pub id_token: Option<Sealed>,
    /// The IdP's refresh token, sealed.
    pub refresh_token: Option<Sealed>,
}

/// What an API credential may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// For the CLI and automation: acts as the user.
    Api,
    /// What a workspace presents: fetches the user's provider tokens, possibly only some.
    Workspace,
}

/// An API or workspace token. Only the hash of its secret is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The lookup id, the middle part of `extauth_<kind>_<id>_<secret>`.
    pub id: String,
    /// API or workspace.
    pub kind: TokenKind,
    /// Owner.
    pub user_id: String,
    /// Chosen by the user.
    pub name: String,
    /// sha256 of the secret part, hex.
    pub secret_hash: String,
    /// Workspace tokens only: the provider IDs it may fetch (`None` = all).
    pub providers: Option<Vec<String>>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` = never.
    pub expires_at: Option<i64>,
}

/// A user's link to an account at a provider: the provider's tokens, sealed. A user may link
/// several accounts of one provider (work and personal GitHub); one of them is the default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// Whose link.
    pub user_id: String,
    /// To which provider.
    pub provider_id: String,
    /// The account's login at the provider, read at link time; empty for a link made before
    /// accounts had names, or at a provider that does not say.
    #[serde(default)]
    pub account: String,
    /// The account used when nothing chooses another (one per user and provider).
    #[serde(default = "yes")]
    pub is_default: bool,
    /// Repository owners routed to this account (`acme`, or a glob such as `acme-*`).
    #[serde(default)]
    pub owners: Vec<String>,
    /// The access token.
    pub access_token: Sealed,
    /// The refresh token, if the provider gave one (and it has not been given up on).
    pub refresh_token: Option<Sealed>,
    /// Unix seconds; `None` = the token does not expire.
    pub expires_at: Option<i64>,
    /// `EXTRA_TOKEN_KEYS` fields, sealed JSON.
    pub extra: Option<Sealed>,
    /// Why the last refresh failed permanently (≤ 400 chars); cleared on relink.
    pub refresh_failure: Option<String>,
    /// A workspace reported the token rejected: validate (and refresh) before handing it out.
    pub needs_validation: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// When the refresh token itself expires (unix seconds; GitHub's `refresh_token_expires_in`,
    /// six months): the user must link again before then. `None` = not said.
    #[serde(default)]
    pub refresh_expires_at: Option<i64>,
}

fn yes() -> bool {
    true
}

/// Tokens of an unlinked provider whose revocation failed: retried in the background until the
/// provider confirms or refuses for good. The sealed values are the link's, unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRevocation {
    /// Random id.
    pub id: String,
    /// Whose tokens.
    pub user_id: String,
    /// At which provider.
    pub provider_id: String,
    /// The access token, sealed as it was in the link.
    pub access_token: Sealed,
    /// The refresh token, sealed as it was in the link.
    pub refresh_token: Option<Sealed>,
    /// Attempts so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt_at: i64,
    /// Why the last attempt failed.
    pub last_error: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A device flow (RFC 8628) in progress: whose it is and its polling pace. Kept in the store so
/// that a poll reaching any replica is paced and owned the same way. Times are Unix
/// milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFlowRecord {
    /// sha256 of the device code, hex.
    pub code_hash: String,
    /// Who started it.
    pub user_id: String,
    /// At which provider.
    pub provider_id: String,
    /// The polling interval now (grows with `slow_down`).
    pub interval_ms: i64,
    /// No poll reaches the provider before this.
    pub next_poll_ms: i64,
    /// The code's end.
    pub expires_ms: i64,
}

/// A login in progress at a provider (linking) or at the OIDC identity provider (signing in),
/// kept on the server: its `state` is bound to the browser that started it and can finish it
/// once. A cookie alone was neither (a replayed callback was exchanged again; a cookie planted on
/// the host could finish someone's link with another code). Ephemeral: not part of snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFlow {
    /// sha256 of the `state` sent to the provider, hex.
    pub state_hash: String,
    /// sha256 of what binds the flow to its browser: the session (linking) or a sign-in cookie.
    pub binding_hash: String,
    /// Who started it (empty when signing in).
    pub user_id: String,
    /// `link:<provider id>` or `oidc`.
    pub purpose: String,
    /// The PKCE verifier, sealed.
    pub verifier: Option<Sealed>,
    /// The OIDC nonce (empty when linking).
    pub nonce: String,
    /// Where to go afterwards (a path on this site, or empty).
    pub redirect: String,
    /// Unix milliseconds after which it cannot finish.
    pub expires_ms: i64,
}

/// A change of a link, sent to `listen` waiters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkChanged {
    /// Whose link (empty: see [`LinkChanged::unknown`]).
    pub user_id: String,
    /// Which provider.
    pub provider_id: String,
}

impl LinkChanged {
    /// Any link may have changed (notifications were missed while reconnecting): every waiter
    /// looks again.
    pub fn unknown() -> Self {
        Self {
            user_id: String::new(),
            provider_id: String::new(),
        }
    }

    /// Whether a waiter for (`user_id`, `provider_id`) should look again.
    pub fn concerns(&self, user_id: &str, provider_id: &str) -> bool {
        (self.user_id.is_empty() && self.provider_id.is_empty())
            || (self.user_id == user_id && self.provider_id == provider_id)
    }
}

/// Everything a store holds, for `store migrate` and `dbcrypt`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Users.
    pub users: Vec<User>,
    /// Browser sessions.
    pub sessions: Vec<Session>,
    /// API and workspace tokens.
    pub tokens: Vec<TokenRecord>,
    /// Provider links.
    pub links: Vec<LinkRecord>,
    /// Revocations still to do.
    pub pending_revocations: Vec<PendingRevocation>,
    /// Encryption key ids revoked by `dbcrypt`.
    pub revoked_keys: Vec<String>,
    /// The claims of each user's latest OIDC sign-in.
    #[serde(default)]
    pub oidc_claims: Vec<OidcClaims>,
    /// Apps of the authorization server.
    #[serde(default)]
    pub oauth2_apps: Vec<OAuth2App>,
    /// Remembered consents.
    #[serde(default)]
    pub oauth2_grants: Vec<OAuth2Grant>,
    /// Refresh-token families.
    #[serde(default)]
    pub oauth2_families: Vec<OAuth2Family>,
    /// Keys signing the authorization server's tokens.
    #[serde(default)]
    pub signing_keys: Vec<SigningKey>,
    /// Protected resources registered by admins.
    #[serde(default)]
    pub oauth2_resources: Vec<ProtectedResource>,
    /// Settings changed at run time by admins (name, value).
    #[serde(default)]
    pub runtime_settings: Vec<(String, String)>,
    /// Users' SSH keys for git.
    #[serde(default)]
    pub git_ssh_keys: Vec<GitSshKey>,
}

/// A user's SSH key for git (Coder's `gitsshkey`): the public half as an `authorized_keys`
/// line, the private half sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSshKey {
    /// Whose.
    pub user_id: String,
    /// `ed25519`, `ecdsa` or `rsa4096`.
    pub algorithm: String,
    /// `ssh-ed25519 AAAA… extauth:<username>`.
    pub public_key: String,
    /// The private key file's text, sealed.
    pub private_key: Sealed,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds (a regeneration).
    pub updated_at: i64,
}

/// What the IdP said about a user at their latest OIDC sign-in (ID token and userinfo claims,
/// merged), kept for troubleshooting sign-in rules (`GET /api/v2/users/<user>/oidc-claims`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcClaims {
    /// Whose.
    pub user_id: String,
    /// A JSON object.
    pub claims: String,
    /// Unix seconds.
    pub updated_at: i64,
}

impl Snapshot {
    /// `users 3, sessions 2, …`, for reports.
    pub fn counts(&self) -> String {
        format!(
            "users {}, sessions {}, tokens {}, links {}, pending revocations {}, revoked keys {}, OIDC claims {}, OAuth2 apps {}, grants {}, token families {}, signing keys {}, protected resources {}, runtime settings {}, git SSH keys {}",
            self.users.len(),
            self.sessions.len(),
            self.tokens.len(),
            self.links.len(),
            self.pending_revocations.len(),
            self.revoked_keys.len(),
            self.oidc_claims.len(),
            self.oauth2_apps.len(),
            self.oauth2_grants.len(),
            self.oauth2_families.len(),
            self.signing_keys.len(),
            self.oauth2_resources.len(),
            self.runtime_settings.len(),
            self.git_ssh_keys.len()
        )
    }

    /// Sorted by key, so that two snapshots of the same data compare equal.
    pub fn sorted(mut self) -> Self {
        self.users.sort_by(|a, b| a.id.cmp(&b.id));
        self.sessions.sort_by(|a, b| a.id_hash.cmp(&b.id_hash));
        self.tokens.sort_by(|a, b| a.id.cmp(&b.id));
        self.links
            .sort_by(|a, b| (&a.user_id, &a.provider_id).cmp(&(&b.user_id, &b.provider_id)));
        self.pending_revocations.sort_by(|a, b| a.id.cmp(&b.id));
        self.revoked_keys.sort();
        self.oidc_claims.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        self.oauth2_apps.sort_by(|a, b| a.id.cmp(&b.id));
        self.oauth2_grants
            .sort_by(|a, b| (&a.user_id, &a.app_id).cmp(&(&b.user_id, &b.app_id)));
        self.oauth2_families.sort_by(|a, b| a.id.cmp(&b.id));
        self.signing_keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        self.oauth2_resources.sort_by(|a, b| a.id.cmp(&b.id));
        self.runtime_settings.sort();
        self.git_ssh_keys.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        self
    }
}

/// What `store migrate` did.
#[derive(Debug)]
pub struct Copied {
    /// What the source holds.
    pub source: Snapshot,
    /// What the destination holds afterwards.
    pub destination: Snapshot,
}

/// Copies everything from `from` into `to` (records replaced by key, so it can run again), then
/// reads the destination back and checks that every source record is there, unchanged.
pub async fn copy_all(from: &dyn Store, to: &dyn Store) -> Result<Copied, StoreError> {
    let source = from.snapshot().await?;
    to.import(&source).await?;
    let destination = to.snapshot().await?;
    let missing = source.missing_from(&destination);
    if !missing.is_empty() {
        return Err(StoreError::Backend(format!(
            "after copying, the destination lacks {} record(s): {}",
            missing.len(),
            missing.join(", ")
        )));
    }
    Ok(Copied {
        source,
        destination,
    })
}

impl Snapshot {
    /// Records of `self` that `other` does not hold identically, named for a report.
    pub fn missing_from(&self, other: &Snapshot) -> Vec<String> {
        fn check<T: PartialEq>(
            mine: &[T],
            theirs: &[T],
            name: impl Fn(&T) -> String,
            out: &mut Vec<String>,
        ) {
            out.extend(mine.iter().filter(|r| !theirs.contains(r)).map(name));
        }
        let mut out = Vec::new();
        check(
            &self.users,
            &other.users,
            |u| format!("user {}", u.id),
            &mut out,
        );
        check(
            &self.sessions,
            &other.sessions,
            |s| format!("session of user {}", s.user_id),
            &mut out,
        );
        check(
            &self.tokens,
            &other.tokens,
            |t| format!("token {}", t.id),
            &mut out,
        );
        check(
            &self.links,
            &other.links,
            |l| format!("link of user {} to {}", l.user_id, l.provider_id),
            &mut out,
        );
        check(
            &self.pending_revocations,
            &other.pending_revocations,
            |p| format!("pending revocation {}", p.id),
            &mut out,
        );
        check(
            &self.revoked_keys,
            &other.revoked_keys,
            |k| format!("revoked key {k}"),
            &mut out,
        );
        check(
            &self.oauth2_apps,
            &other.oauth2_apps,
            |a| format!("OAuth2 app {}", a.id),
            &mut out,
        );
        check(
            &self.oauth2_grants,
            &other.oauth2_grants,
            |g| format!("consent of user {} to app {}", g.user_id, g.app_id),
            &mut out,
        );
        check(
            &self.oauth2_families,
            &other.oauth2_families,
            |f| format!("token family {}", f.id),
            &mut out,
        );
        check(
            &self.signing_keys,
            &other.signing_keys,
            |k| format!("signing key {}", k.kid),
            &mut out,
        );
        check(
            &self.oauth2_resources,
            &other.oauth2_resources,
            |r| format!("protected resource {}", r.id),
            &mut out,
        );
        check(
            &self.runtime_settings,
            &other.runtime_settings,
            |(name, _)| format!("setting {name}"),
            &mut out,
        );
        check(
            &self.git_ssh_keys,
            &other.git_ssh_keys,
            |k| format!("git SSH key of user {}", k.user_id),
            &mut out,
        );
        out
    }
}

/// A lock every broker process sharing the store honours (PostgreSQL: a session advisory lock;
/// embedded: nothing to do, one process owns the store and in-process locks suffice).
///
/// Release it with [`StoreLock::release`]. Dropped without that, a backend may have to close
/// the connection that holds it, which also releases it: a crashed holder never blocks others.
pub struct StoreLock(Option<Box<dyn HeldLock>>);

/// What a backend keeps while a [`StoreLock`] is held.
#[async_trait]
pub trait HeldLock: Send {
    /// Gives the lock up.
    async fn release(self: Box<Self>);
}

impl StoreLock {
    /// A lock that needs no work: the process is the store's only user.
    pub fn in_process() -> Self {
        Self(None)
    }

    /// A lock held by a backend.
    pub fn held(held: Box<dyn HeldLock>) -> Self {
        Self(Some(held))
    }

    /// Gives the lock up.
    pub async fn release(mut self) {
        if let Some(held) = self.0.take() {
            held.release().await;
        }
    }
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique field is taken (username, OIDC identity, token id).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The backend failed; the operation may be retried.
    #[error("storage backend: {0}")]
    Backend(String),
    /// A record could not be read back.
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
}

/// Result of storage operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the broker persists. Shaped for both an embedded store and PostgreSQL: no
/// method needs a cross-record transaction the other cannot give, and change notification is
/// part of the contract (PostgreSQL will carry it between replicas with LISTEN/NOTIFY).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a user; `Conflict` if the username or OIDC identity is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    /// Updates a user's profile fields (not its id, username or identity).
    async fn update_user(&self, user: &User) -> StoreResult<()>;
    /// A user by id.
    async fn user(&self, id: &str) -> StoreResult<Option<User>>;
    /// A user by username.
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    /// A user by OIDC identity.
    async fn user_by_oidc(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>>;
    /// How many users exist (the first one becomes admin).
    async fn count_users(&self) -> StoreResult<u64>;

    /// Creates or replaces a session.
    async fn put_session(&self, session: &Session) -> StoreResult<()>;
    /// A session by the hash of its cookie.
    async fn session(&self, id_hash: &str) -> StoreResult<Option<Session>>;
    /// Deletes one session.
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()>;
    /// Deletes every session of a user; returns how many.
    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64>;
    /// Deletes a user's sessions that came from the IdP session `sid`; returns how many.
    async fn delete_sessions_by_sid(&self, user_id: &str, sid: &str) -> StoreResult<u64>;

    /// Creates a token; `Conflict` if its id is taken.
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()>;
    /// A token by lookup id.
    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>>;
    /// A token by lookup id and the user it belongs to (`None` if that user is gone): what
    /// every token-authenticated request needs, in one read where the backend can.
    async fn token_with_user(&self, id: &str) -> StoreResult<Option<(TokenRecord, Option<User>)>> {
        let Some(token) = self.token(id).await? else {
            return Ok(None);
        };
        let user = self.user(&token.user_id).await?;
        Ok(Some((token, user)))
    }
    /// A user's tokens of one kind, oldest first.
    async fn tokens_of_user(&self, user_id: &str, kind: TokenKind)
    -> StoreResult<Vec<TokenRecord>>;
    /// Deletes a token; whether it existed.
    async fn delete_token(&self, id: &str) -> StoreResult<bool>;

    /// Inserts or replaces the link of (user, provider), and notifies waiters.
    async fn put_link(&self, link: &LinkRecord) -> StoreResult<()>;
    /// Replaces a link only if its refresh token is still `expected` (the optimistic check of
    /// concurrent refreshes); whether it was replaced. Notifies waiters when it was.
    async fn replace_link_if(
        &self,
        link: &LinkRecord,
        expected_refresh: Option<&Sealed>,
    ) -> StoreResult<bool>;
    /// The link of (user, provider) to use when nothing chooses an account: the default
    /// account's, else the first by account.
    async fn link(&self, user_id: &str, provider_id: &str) -> StoreResult<Option<LinkRecord>>;
    /// The link of (user, provider, account).
    async fn link_account(
        &self,
        user_id: &str,
        provider_id: &str,
        account: &str,
    ) -> StoreResult<Option<LinkRecord>>;
    /// Every account a user linked at a provider, by account.
    async fn links_of_provider(
        &self,
        user_id: &str,
        provider_id: &str,
    ) -> StoreResult<Vec<LinkRecord>>;
    /// All links of a user, by provider id, then account.
    async fn links_of_user(&self, user_id: &str) -> StoreResult<Vec<LinkRecord>>;
    /// Deletes the link of (user, provider, account) and returns it.
    async fn delete_link(
        &self,
        user_id: &str,
        provider_id: &str,
        account: &str,
    ) -> StoreResult<Option<LinkRecord>>;

    /// Creates or replaces a pending revocation.
    async fn put_pending_revocation(&self, pending: &PendingRevocation) -> StoreResult<()>;
    /// Pending revocations whose next attempt is due at `now`, oldest first.
    async fn pending_revocations_due(&self, now: i64) -> StoreResult<Vec<PendingRevocation>>;
    /// A user's pending revocations.
    async fn pending_revocations_of_user(
        &self,
        user_id: &str,
    ) -> StoreResult<Vec<PendingRevocation>>;
    /// Deletes a pending revocation; whether it existed.
    async fn delete_pending_revocation(&self, id: &str) -> StoreResult<bool>;

    /// Ids of every encryption key that sealed something still stored. A backend may also list
    /// a key whose values were all removed since the last `revoke_key_ids`, never fewer: the
    /// start-up check reads this, and a million users' links are too many to read each time.
    async fn encryption_key_ids(&self) -> StoreResult<BTreeSet<String>>;
    /// How many secrets are stored unencrypted (after `dbcrypt decrypt`).
    async fn plaintext_values(&self) -> StoreResult<u64>;
    /// Subscribes to link changes (from this process, and from other replicas where the
    /// backend can tell).
    fn subscribe_links(&self) -> broadcast::Receiver<LinkChanged>;
    /// Whether the backend answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Creates or replaces a device flow; flows expired by now are dropped on the way.
    async fn put_device_flow(&self, flow: &DeviceFlowRecord) -> StoreResult<()>;
    /// A device flow by the hash of its code.
    async fn device_flow(&self, code_hash: &str) -> StoreResult<Option<DeviceFlowRecord>>;
    /// Replaces a device flow only if its `next_poll_ms` is still `expected_next_poll_ms` (two
    /// replicas booking the same poll slot: one wins); whether it was replaced.
    async fn replace_device_flow_if(
        &self,
        flow: &DeviceFlowRecord,
        expected_next_poll_ms: i64,
    ) -> StoreResult<bool>;
    /// Deletes a device flow.
    async fn delete_device_flow(&self, code_hash: &str) -> StoreResult<()>;

    /// Waits for the lock `name`, shared by every process on this store (e.g. one refresh of a
    /// link across replicas).
    async fn lock(&self, name: &str) -> StoreResult<StoreLock>;
    /// The lock `name` if nobody holds it (e.g. one replica retries pending revocations).
    async fn try_lock(&self, name: &str) -> StoreResult<Option<StoreLock>>;
    /// Marks this process as a serving replica for as long as it runs: a maintenance command
    /// taking [`SERVING_LOCK`] with [`Store::try_lock`] then sees it and refuses to run, and
    /// this waits while such a command runs. The default does nothing, for backends one
    /// process at a time can open anyway (sled locks its directory).
    async fn register_replica(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Everything stored.
    async fn snapshot(&self) -> StoreResult<Snapshot>;
    /// Inserts or replaces every record of `snapshot` (by key): running it twice is harmless.
    /// `Conflict` when a username or OIDC identity belongs to another user id.
    async fn import(&self, snapshot: &Snapshot) -> StoreResult<()>;

    /// Stores a login in progress (dropping expired ones).
    async fn put_login_flow(&self, flow: &LoginFlow) -> StoreResult<()>;
    /// Removes and returns the login whose state hashes to `state_hash`, if it has not expired:
    /// of two callers with the same state, one gets it.
    async fn take_login_flow(&self, state_hash: &str) -> StoreResult<Option<LoginFlow>>;

    /// Keeps the claims of a user's latest OIDC sign-in (replacing earlier ones).
    async fn put_oidc_claims(&self, claims: &OidcClaims) -> StoreResult<()>;
    /// The claims of a user's latest OIDC sign-in.
    async fn oidc_claims(&self, user_id: &str) -> StoreResult<Option<OidcClaims>>;

    /// Encryption key ids `dbcrypt` revoked.
    async fn revoked_key_ids(&self) -> StoreResult<BTreeSet<String>>;
    /// Records keys as revoked at `now`.
    async fn revoke_key_ids(&self, ids: &[String], now: i64) -> StoreResult<()>;

    /// Creates or replaces an app (by id).
    async fn put_oauth2_app(&self, app: &OAuth2App) -> StoreResult<()>;
    /// An app by id (`client_id`).
    async fn oauth2_app(&self, id: &str) -> StoreResult<Option<OAuth2App>>;
    /// Every app, oldest first.
    async fn oauth2_apps(&self) -> StoreResult<Vec<OAuth2App>>;
    /// Records a client secret's use at `at` (Unix seconds), only while the secret still
    /// exists: a use racing the secret's deletion never brings it back.
    async fn touch_app_secret(&self, app_id: &str, secret_id: &str, at: i64) -> StoreResult<()>;
    /// Deletes an app with its consents and token families; whether it existed.
    async fn delete_oauth2_app(&self, id: &str) -> StoreResult<bool>;

    /// Stores a new authorization code (dropping expired ones).
    async fn put_oauth2_code(&self, code: &OAuth2Code) -> StoreResult<()>;
    /// Marks the code `code_hash` used and returns it as it was before: of two redemptions one
    /// sees `used == false`. `None` if unknown or expired.
    async fn use_oauth2_code(&self, code_hash: &str) -> StoreResult<Option<OAuth2Code>>;

    /// Creates or replaces a user's consent to an app.
    async fn put_oauth2_grant(&self, grant: &OAuth2Grant) -> StoreResult<()>;
    /// A user's consent to an app.
    async fn oauth2_grant(&self, user_id: &str, app_id: &str) -> StoreResult<Option<OAuth2Grant>>;
    /// A user's consents, by app id.
    async fn oauth2_grants_of_user(&self, user_id: &str) -> StoreResult<Vec<OAuth2Grant>>;
    /// Deletes a user's consent to an app; whether it existed.
    async fn delete_oauth2_grant(&self, user_id: &str, app_id: &str) -> StoreResult<bool>;

    /// Creates a token family; `Conflict` if its id is taken.
    async fn create_oauth2_family(&self, family: &OAuth2Family) -> StoreResult<()>;
    /// A token family by id.
    async fn oauth2_family(&self, id: &str) -> StoreResult<Option<OAuth2Family>>;
    /// Replaces a family only if its refresh hash is still `expected_refresh_hash` (two
    /// rotations of one refresh token: one wins); whether it was replaced.
    async fn replace_oauth2_family_if(
        &self,
        family: &OAuth2Family,
        expected_refresh_hash: &str,
    ) -> StoreResult<bool>;
    /// Deletes one family; whether it existed.
    async fn delete_oauth2_family(&self, id: &str) -> StoreResult<bool>;
    /// Deletes the families `filter` picks; how many.
    async fn delete_oauth2_families(&self, filter: FamilyFilter<'_>) -> StoreResult<u64>;
    /// Deletes the families whose end (`expires_at`, Unix seconds) is before `now`; how many.
    async fn delete_expired_oauth2_families(&self, now: i64) -> StoreResult<u64>;

    /// Stores a new device authorization (dropping expired ones); `Conflict` if its user code
    /// is taken by one still running.
    async fn put_device_grant(&self, grant: &DeviceGrant) -> StoreResult<()>;
    /// A device authorization by the hash of its device code, if not expired.
    async fn device_grant(&self, code_hash: &str) -> StoreResult<Option<DeviceGrant>>;
    /// A device authorization by its user code, if not expired.
    async fn device_grant_by_user_code(&self, user_code: &str) -> StoreResult<Option<DeviceGrant>>;
    /// Replaces a device authorization only if its decision and next poll are still
    /// `expected` (a poll and an answer, or two polls, racing: one wins); whether it was.
    async fn replace_device_grant_if(
        &self,
        grant: &DeviceGrant,
        expected: (DeviceDecision, i64),
    ) -> StoreResult<bool>;

    /// Creates or replaces a signing key.
    async fn put_signing_key(&self, key: &SigningKey) -> StoreResult<()>;
    /// Every signing key, oldest first.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>>;
    /// Deletes a signing key no token needs any more.
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<()>;

    /// Creates or replaces a protected resource (by id).
    async fn put_oauth2_resource(&self, resource: &ProtectedResource) -> StoreResult<()>;
    /// Every protected resource, oldest first.
    async fn oauth2_resources(&self) -> StoreResult<Vec<ProtectedResource>>;
    /// Deletes a protected resource; whether it existed.
    async fn delete_oauth2_resource(&self, id: &str) -> StoreResult<bool>;

    /// Sets a setting admins change at run time (shared by every replica).
    async fn put_runtime_setting(&self, name: &str, value: &str) -> StoreResult<()>;
    /// A setting admins changed at run time, if they did.
    async fn runtime_setting(&self, name: &str) -> StoreResult<Option<String>>;

    /// Stores a user's first git SSH key; `false` (nothing written) if they have one already:
    /// of two first uses at once, one key wins.
    async fn insert_git_ssh_key(&self, key: &GitSshKey) -> StoreResult<bool>;
    /// Replaces a user's git SSH key (regeneration, `dbcrypt`).
    async fn put_git_ssh_key(&self, key: &GitSshKey) -> StoreResult<()>;
    /// A user's git SSH key.
    async fn git_ssh_key(&self, user_id: &str) -> StoreResult<Option<GitSshKey>>;
    /// Deletes a user's git SSH key (`dbcrypt delete`); whether there was one.
    async fn delete_git_ssh_key(&self, user_id: &str) -> StoreResult<bool>;

    /// Marks `key` used until `expires_at` (unix seconds): `true` the first time, `false` while
    /// an earlier mark lives — of two replicas marking at once, one wins. A workload token's
    /// `jti` is spent this way; marks past their time are pruned as others are written.
    /// `key` is text without NUL (callers hash what they were given).
    async fn use_once(&self, key: &str, expires_at: i64, now: i64) -> StoreResult<bool>;
}
