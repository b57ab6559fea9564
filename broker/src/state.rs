//! What every handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use extauth_providers::Providers;

use crate::crypto::KeyRing;
use crate::dev_login::DevLogin;
use crate::settings::Settings;
use crate::single_flight::RefreshLocks;
use crate::store::Store;
use crate::upstream::Upstream;

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    /// Validated settings.
    pub settings: Settings,
    /// Configured providers.
    pub providers: Providers,
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Encryption at rest.
    pub keys: KeyRing,
    /// Client of the providers.
    pub upstream: Upstream,
    /// Fetcher of OAuth client metadata documents.
    pub client_documents: crate::upstream::client_documents::ClientDocuments,
    /// One refresh at a time per (user, provider).
    pub refresh_locks: RefreshLocks,
    /// The pending one-time sign-in link of `--dev`.
    pub dev_login: DevLogin,
    /// OIDC sign-in, when configured.
    pub oidc: Option<crate::oidc::Oidc>,
    /// Renders `/metrics`; `None` when no recorder is installed (library use, tests).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Failed token checks per client address.
    pub auth_failures: crate::auth_failures::AuthFailures,
    /// Keys signing the authorization server's tokens.
    pub oauth2_keys: crate::oauth2::signing::Keys,
    /// Pace of `/oauth2/*` per client and address.
    pub oauth2_pace: crate::oauth2::pace::Pace,
    /// Per-provider timestamps for throttled warnings.
    pub warned: Mutex<HashMap<String, std::time::Instant>>,
    /// GitHub App installations asked lately.
    pub installations: crate::app_installations::cache::InstallationCache,
    /// Workload identity's trust policies (`EXTAUTH_WORKLOAD_POLICIES`).
    pub workload: crate::workload::trust::Policies,
}

impl AppState {
    /// Wraps the parts.
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
