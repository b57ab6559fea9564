//! Start-up and shutdown of the server: open the store, check the encryption keys against the
//! data, bind, serve until SIGTERM or SIGINT, finish in-flight requests.

use std::sync::{Arc, Mutex};

use extauth_providers::Providers;
use tokio::net::TcpListener;

use crate::crypto::KeyRing;
use crate::device::DeviceFlows;
use crate::identity;
use crate::refresh::RefreshLocks;
use crate::routes;
use crate::settings::Settings;
use crate::state::{AppState, Inner};
use crate::store::{SledStore, Store};
use crate::upstream::Upstream;

/// Name of the generated key file in the data directory.
pub const KEY_FILE: &str = "token-encryption.key";

/// Why the server could not start. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory is unusable.
    #[error("EXTAUTH_DATA_DIR {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("{0}; is another extauth-broker using the same EXTAUTH_DATA_DIR?")]
    Store(String),
    /// Keys are malformed, or data was sealed with keys not in the ring.
    #[error("{0}")]
    Keys(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
    /// The listen address is taken or not allowed.
    #[error("CODER_HTTP_ADDRESS {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Builds the state from settings: store, keys (checked against the stored data), client.
pub async fn build_state(
    settings: Settings,
    providers: Providers,
    oidc: Option<crate::oidc::OidcSettings>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Result<AppState, StartError> {
    let dir = &settings.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(&dir.join("store")).map_err(|e| StartError::Store(e.to_string()))?,
    );
    let keys = match &settings.encryption_keys {
        Some(keys) => KeyRing::parse(keys).map_err(|e| StartError::Keys(e.to_string()))?,
        None => {
            let path = dir.join(KEY_FILE);
            let (ring, created) =
                KeyRing::load_or_create_file(&path).map_err(|e| StartError::Keys(e.to_string()))?;
            tracing::warn!(
                path = %path.display(),
                created,
                "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS is unset: tokens are encrypted with a key kept next to the data; set the variable to keep the key elsewhere"
            );
            ring
        }
    };
    let used = store
        .encryption_key_ids()
        .await
        .map_err(|e| StartError::Store(e.to_string()))?;
    let unknown: Vec<&String> = used.iter().filter(|id| !keys.has_key(id)).collect();
    if !unknown.is_empty() {
        return Err(StartError::Keys(format!(
            "stored tokens are encrypted with key(s) {} that CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS does not contain (it has {}); add the missing key(s) after the current one, or remove the data",
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            keys.key_ids().join(", ")
        )));
    }
    let upstream =
        Upstream::new(settings.upstream_timeout).map_err(|e| StartError::Http(e.to_string()))?;
    let oidc = oidc
        .map(|o| crate::oidc::Oidc::new(o, settings.upstream_timeout))
        .transpose()
        .map_err(|e| StartError::Http(e.to_string()))?;
    Ok(AppState::new(Inner {
        settings,
        providers,
        store,
        keys,
        upstream,
        refresh_locks: RefreshLocks::default(),
        devices: DeviceFlows::default(),
        dev_login: Mutex::new(None),
        oidc,
        metrics,
        warned: Mutex::new(Default::default()),
    }))
}

/// Serves until SIGTERM or SIGINT, then lets in-flight requests finish.
pub async fn serve(
    settings: Settings,
    providers: Providers,
    oidc: Option<crate::oidc::OidcSettings>,
) -> Result<(), StartError> {
    for warning in providers.warnings() {
        tracing::warn!(variable = warning.variable, "{}", warning.message);
    }
    let address = settings.http_address;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| StartError::Http(format!("metrics recorder: {e}")))?;
    let state = build_state(settings, providers, oidc, Some(metrics)).await?;
    if let Some(oidc) = &state.oidc {
        // A self-test at start: a mistake here is better seen now than at the first sign-in.
        match oidc.discovery().await {
            Ok(d) => tracing::info!(
                issuer = d.issuer,
                redirect_uri = crate::routes::oidc_redirect_uri(&state),
                "OIDC sign-in ready"
            ),
            Err(e) => tracing::warn!(error = %e, "OIDC discovery failed; sign-in will retry it"),
        }
    }
    crate::revocations::spawn_worker(state.clone());
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            address: address.to_string(),
            source,
        })?;
    let access = state.settings.access_url.clone();
    tracing::info!(
        address = %listener.local_addr().map_or(address, |a| a),
        access_url = %access,
        providers = state.providers.len(),
        "extauth-broker listening"
    );
    if state.settings.dev {
        let secret = identity::prepare_dev_login(&state)
            .await
            .map_err(|e| StartError::Store(e.to_string()))?;
        let mut link = access.join("login/dev");
        link.query_pairs_mut().append_pair("token", &secret);
        // The one place a secret is printed: it is the point of --dev. To stdout, never a log.
        println!("Sign in as the local admin: {link}");
    }
    axum::serve(listener, routes::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|source| StartError::Bind {
            address: address.to_string(),
            source,
        })?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
