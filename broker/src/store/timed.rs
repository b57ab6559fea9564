//! Store latency: every store operation's duration, as the histogram
//! `extauth_store_operation_duration_seconds{backend, operation}`, by wrapping the backend.
//!
//! A wrapper rather than timing inside each backend, so that both backends report the same
//! operations under the same names, and a new trait method cannot be left out: it does not
//! compile until it is listed here. The histograms are registered once, at start, so a call
//! costs a clock read and an atomic add, not a registry lookup.

use std::collections::BTreeSet;
use std::time::Instant;

use async_trait::async_trait;
use metrics::Histogram;
use tokio::sync::broadcast;

use super::*;
use crate::crypto::Sealed;

/// A store whose operations are timed.
pub struct Timed<S> {
    inner: S,
    histograms: Histograms,
}

impl<S: Store> Timed<S> {
    /// Wraps `inner`; `backend` is the `backend` label (`sled`, `postgres`).
    pub fn new(inner: S, backend: &'static str) -> Self {
        Self {
            inner,
            histograms: Histograms::new(backend),
        }
    }
}

macro_rules! timed_store {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        #[allow(non_snake_case)]
        struct Histograms {
            $($name: Histogram,)*
        }

        impl Histograms {
            fn new(backend: &'static str) -> Self {
                Self {
                    $($name: metrics::histogram!(
                        "extauth_store_operation_duration_seconds",
                        "backend" => backend,
                        "operation" => stringify!($name),
                    ),)*
                }
            }
        }

        #[async_trait]
        impl<S: Store> Store for Timed<S> {
            $(async fn $name(&self, $($arg: $ty),*) -> $ret {
                let started = Instant::now();
                let result = self.inner.$name($($arg),*).await;
                self.histograms.$name.record(started.elapsed());
                result
            })*

            fn subscribe_links(&self) -> broadcast::Receiver<LinkChanged> {
                self.inner.subscribe_links()
            }
        }
    };
}

timed_store! {
    fn create_user(user: &User) -> StoreResult<()>;
    fn update_user(user: &User) -> StoreResult<()>;
    fn user(id: &str) -> StoreResult<Option<User>>;
    fn user_by_username(username: &str) -> StoreResult<Option<User>>;
    fn user_by_oidc(issuer: &str, subject: &str) -> StoreResult<Option<User>>;
    fn count_users() -> StoreResult<u64>;
    fn put_session(session: &Session) -> StoreResult<()>;
    fn session(id_hash: &str) -> StoreResult<Option<Session>>;
    fn delete_session(id_hash: &str) -> StoreResult<()>;
    fn delete_user_sessions(user_id: &str) -> StoreResult<u64>;
    fn delete_sessions_by_sid(user_id: &str, sid: &str) -> StoreResult<u64>;
    fn create_token(token: &TokenRecord) -> StoreResult<()>;
    fn token(id: &str) -> StoreResult<Option<TokenRecord>>;
    fn token_with_user(id: &str) -> StoreResult<Option<(TokenRecord, Option<User>)>>;
    fn tokens_of_user(user_id: &str, kind: TokenKind) -> StoreResult<Vec<TokenRecord>>;
    fn delete_token(id: &str) -> StoreResult<bool>;
    fn put_link(link: &LinkRecord) -> StoreResult<()>;
    fn replace_link_if(link: &LinkRecord, expected_refresh: Option<&Sealed>) -> StoreResult<bool>;
    fn link(user_id: &str, provider_id: &str) -> StoreResult<Option<LinkRecord>>;
    fn links_of_user(user_id: &str) -> StoreResult<Vec<LinkRecord>>;
    fn link_account(user_id: &str, provider_id: &str, account: &str) -> StoreResult<Option<LinkRecord>>;
    fn links_of_provider(user_id: &str, provider_id: &str) -> StoreResult<Vec<LinkRecord>>;
    fn delete_link(user_id: &str, provider_id: &str, account: &str) -> StoreResult<Option<LinkRecord>>;
    fn put_pending_revocation(pending: &PendingRevocation) -> StoreResult<()>;
    fn pending_revocations_due(now: i64) -> StoreResult<Vec<PendingRevocation>>;
    fn pending_revocations_of_user(user_id: &str) -> StoreResult<Vec<PendingRevocation>>;
    fn delete_pending_revocation(id: &str) -> StoreResult<bool>;
    fn encryption_key_ids() -> StoreResult<BTreeSet<String>>;
    fn plaintext_values() -> StoreResult<u64>;
    fn ping() -> StoreResult<()>;
    fn put_device_flow(flow: &DeviceFlowRecord) -> StoreResult<()>;
    fn device_flow(code_hash: &str) -> StoreResult<Option<DeviceFlowRecord>>;
    fn replace_device_flow_if(flow: &DeviceFlowRecord, expected_next_poll_ms: i64) -> StoreResult<bool>;
    fn delete_device_flow(code_hash: &str) -> StoreResult<()>;
    fn lock(name: &str) -> StoreResult<StoreLock>;
    fn try_lock(name: &str) -> StoreResult<Option<StoreLock>>;
    fn register_replica() -> StoreResult<()>;
    fn snapshot() -> StoreResult<Snapshot>;
    fn import(snapshot: &Snapshot) -> StoreResult<()>;
    fn put_login_flow(flow: &LoginFlow) -> StoreResult<()>;
    fn take_login_flow(state_hash: &str) -> StoreResult<Option<LoginFlow>>;
    fn put_oidc_claims(claims: &OidcClaims) -> StoreResult<()>;
    fn oidc_claims(user_id: &str) -> StoreResult<Option<OidcClaims>>;
    fn revoked_key_ids() -> StoreResult<BTreeSet<String>>;
    fn revoke_key_ids(ids: &[String], now: i64) -> StoreResult<()>;
    fn put_oauth2_app(app: &OAuth2App) -> StoreResult<()>;
    fn oauth2_app(id: &str) -> StoreResult<Option<OAuth2App>>;
    fn oauth2_apps() -> StoreResult<Vec<OAuth2App>>;
    fn touch_app_secret(app_id: &str, secret_id: &str, at: i64) -> StoreResult<()>;
    fn delete_oauth2_app(id: &str) -> StoreResult<bool>;
    fn put_oauth2_code(code: &OAuth2Code) -> StoreResult<()>;
    fn use_oauth2_code(code_hash: &str) -> StoreResult<Option<OAuth2Code>>;
    fn put_oauth2_grant(grant: &OAuth2Grant) -> StoreResult<()>;
    fn oauth2_grant(user_id: &str, app_id: &str) -> StoreResult<Option<OAuth2Grant>>;
    fn oauth2_grants_of_user(user_id: &str) -> StoreResult<Vec<OAuth2Grant>>;
    fn delete_oauth2_grant(user_id: &str, app_id: &str) -> StoreResult<bool>;
    fn create_oauth2_family(family: &OAuth2Family) -> StoreResult<()>;
    fn oauth2_family(id: &str) -> StoreResult<Option<OAuth2Family>>;
    fn replace_oauth2_family_if(family: &OAuth2Family, expected_refresh_hash: &str) -> StoreResult<bool>;
    fn delete_oauth2_family(id: &str) -> StoreResult<bool>;
    fn delete_oauth2_families(filter: FamilyFilter<'_>) -> StoreResult<u64>;
    fn delete_expired_oauth2_families(now: i64) -> StoreResult<u64>;
    fn put_device_grant(grant: &DeviceGrant) -> StoreResult<()>;
    fn device_grant(code_hash: &str) -> StoreResult<Option<DeviceGrant>>;
    fn device_grant_by_user_code(user_code: &str) -> StoreResult<Option<DeviceGrant>>;
    fn replace_device_grant_if(grant: &DeviceGrant, expected: (DeviceDecision, i64)) -> StoreResult<bool>;
    fn put_signing_key(key: &SigningKey) -> StoreResult<()>;
    fn signing_keys() -> StoreResult<Vec<SigningKey>>;
    fn delete_signing_key(kid: &str) -> StoreResult<()>;
    fn put_oauth2_resource(resource: &ProtectedResource) -> StoreResult<()>;
    fn oauth2_resources() -> StoreResult<Vec<ProtectedResource>>;
    fn delete_oauth2_resource(id: &str) -> StoreResult<bool>;
    fn put_runtime_setting(name: &str, value: &str) -> StoreResult<()>;
    fn runtime_setting(name: &str) -> StoreResult<Option<String>>;
    fn insert_git_ssh_key(key: &GitSshKey) -> StoreResult<bool>;
    fn put_git_ssh_key(key: &GitSshKey) -> StoreResult<()>;
    fn git_ssh_key(user_id: &str) -> StoreResult<Option<GitSshKey>>;
    fn delete_git_ssh_key(user_id: &str) -> StoreResult<bool>;
    fn use_once(key: &str, expires_at: i64, now: i64) -> StoreResult<bool>;
}
