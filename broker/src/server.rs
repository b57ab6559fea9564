//! Start-up and shutdown of the server: open the store, check the encryption keys against the
//! data, bind, serve until SIGTERM or SIGINT, finish in-flight requests.

use std::sync::{Arc, Mutex};

use extauth_providers::Providers;
use tokio::net::TcpListener;

use crate::connections::{Gate, Limits, PlainListener};
use crate::crypto::KeyRing;
use crate::identity;
use crate::routes;
use crate::settings::Settings;
use crate::single_flight::RefreshLocks;
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
    /// The store could not be opened or read.
    #[error("{0}")]
    Store(String),
    /// Keys are malformed, or data was sealed with keys not in the ring.
    #[error("{0}")]
    Keys(String),
    /// The workload trust policies are wrong.
    #[error("{0}")]
    Workload(String),
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

/// Opens the embedded store in the data directory.
fn open_sled(settings: &Settings) -> Result<Arc<dyn Store>, StartError> {
    let dir = &settings.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    let store = SledStore::open(&dir.join("store")).map_err(|e| {
        StartError::Store(format!(
            "{e}; is another extauth-broker using the same EXTAUTH_DATA_DIR?"
        ))
    })?;
    Ok(Arc::new(crate::store::Timed::new(store, "sled")))
}

/// The key ring: the configured keys, or (embedded store only) the generated key file.
pub fn key_ring(settings: &Settings) -> Result<KeyRing, StartError> {
    match &settings.encryption_keys {
        Some(keys) => KeyRing::parse(keys.secret()).map_err(|e| StartError::Keys(e.to_string())),
        None => {
            let dir = &settings.data_dir;
            std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
            let path = dir.join(KEY_FILE);
            let (ring, created) =
                KeyRing::load_or_create_file(&path).map_err(|e| StartError::Keys(e.to_string()))?;
            tracing::warn!(
                path = %path.display(),
                created,
                "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS is unset: tokens are encrypted with a key kept next to the data; set the variable to keep the key elsewhere"
            );
            Ok(ring)
        }
    }
}

/// Refuses keys and data that do not fit together: data sealed with a key missing from the
/// ring or revoked by `dbcrypt`, or a ring whose encrypting key was revoked.
pub async fn check_keys(
    store: &dyn Store,
    keys: &KeyRing,
    settings: &Settings,
) -> Result<(), StartError> {
    // Where the keys came from, for the messages.
    let source = if settings.encryption_keys.is_some() {
        "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS".to_owned()
    } else {
        format!(
            "the generated key file {} (CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS is unset)",
            settings.data_dir.join(KEY_FILE).display()
        )
    };
    let store_error = |e: crate::store::StoreError| StartError::Store(e.to_string());
    let used = store.encryption_key_ids().await.map_err(store_error)?;
    let revoked = store.revoked_key_ids().await.map_err(store_error)?;
    let unknown: Vec<&str> = used
        .iter()
        .filter(|id| !keys.has_key(id))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(StartError::Keys(format!(
            "stored tokens are encrypted with key(s) {} that {source} does not contain (it has {}); add the missing key(s) to CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS after the current one, or remove the data",
            unknown.join(", "),
            keys.key_ids().join(", ")
        )));
    }
    let sealed_with_revoked: Vec<&str> = used
        .iter()
        .filter(|id| revoked.contains(*id))
        .map(String::as_str)
        .collect();
    if !sealed_with_revoked.is_empty() {
        return Err(StartError::Keys(format!(
            "stored tokens are encrypted with revoked key(s) {}; run `extauth-broker dbcrypt rotate` with those keys after the current one",
            sealed_with_revoked.join(", ")
        )));
    }
    if let Some(first) = keys.key_ids().first() {
        if revoked.contains(*first) {
            return Err(StartError::Keys(format!(
                "the encrypting key {first} from {source} was revoked by dbcrypt; set CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS to the key the data was rotated to, or to a new one first (`openssl rand -base64 32`)"
            )));
        }
    }
    let plain = store.plaintext_values().await.map_err(store_error)?;
    if plain > 0 {
        tracing::warn!(
            values = plain,
            "tokens are stored unencrypted (after `dbcrypt decrypt`); run `extauth-broker dbcrypt rotate` to encrypt them"
        );
    }
    for id in keys
        .key_ids()
        .iter()
        .skip(1)
        .filter(|id| revoked.contains(**id))
    {
        tracing::warn!(
            key = id,
            "a revoked key is still in CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS; remove it"
        );
    }
    Ok(())
}

/// Builds the state from settings and an opened store: keys (checked against the stored
/// data), clients.
pub async fn build_state(
    settings: Settings,
    providers: Providers,
    oidc: Option<crate::oidc::OidcSettings>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    store: Arc<dyn Store>,
) -> Result<AppState, StartError> {
    let keys = key_ring(&settings)?;
    check_keys(&*store, &keys, &settings).await?;
    let settings_failure_limit = settings.auth_failure_limit;
    let upstream = Upstream::with_roots(settings.upstream_timeout, &settings.upstream_roots)
        .map_err(|e| StartError::Http(e.to_string()))?;
    let client_documents = crate::upstream::client_documents::ClientDocuments::new(
        settings.oauth2.client_metadata_allow_private,
        &settings.upstream_roots,
    )
    .map_err(|e| StartError::Http(e.to_string()))?;
    let oidc = oidc
        .map(|o| {
            crate::oidc::Oidc::with_roots(o, settings.upstream_timeout, &settings.upstream_roots)
        })
        .transpose()
        .map_err(|e| StartError::Http(e.to_string()))?;
    crate::oauth2::signing::ensure_key(&*store, &keys, settings.oauth2.algorithm)
        .await
        .map_err(|e| StartError::Store(format!("token-signing key: {e}")))?;
    crate::oauth2::apps::ensure_cli_app(&*store)
        .await
        .map_err(|e| StartError::Store(format!("the CLI's OAuth2 app: {e}")))?;
    let oauth2_keys = crate::oauth2::signing::Keys::default();
    oauth2_keys
        .load(&*store, &keys, settings.oauth2.key_overlap())
        .await
        .map_err(|e| StartError::Store(format!("token-signing key: {e}")))?;
    let workload = match &settings.workload_policies {
        None => crate::workload::Policies::none(),
        Some(path) => crate::workload::Policies::load(
            path.clone(),
            crate::workload::known(&providers),
            settings.upstream_roots.clone(),
            settings.upstream_timeout,
        )
        .map_err(StartError::Workload)?,
    };
    Ok(AppState::new(Inner {
        workload,
        oauth2_keys,
        oauth2_pace: Default::default(),
        settings,
        providers,
        store,
        keys,
        upstream,
        client_documents,
        refresh_locks: RefreshLocks::default(),
        dev_login: Default::default(),
        oidc,
        metrics,
        auth_failures: crate::auth_failures::AuthFailures::new(settings_failure_limit),
        warned: Mutex::new(Default::default()),
        installations: Default::default(),
    }))
}

/// The authorization server's upkeep, every minute: reads the signing keys again (a rotation by
/// `keys rotate` or another replica takes effect without a restart) and drops token families
/// whose last token has expired (they would otherwise pile up).
fn spawn_oauth2_upkeep(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            match state
                .store
                .delete_expired_oauth2_families(crate::clock::now())
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(families = n, "dropped expired OAuth2 token families"),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping expired OAuth2 token families failed")
                }
            }
            if let Err(e) = crate::oauth2::registration::expire_unused(&state).await {
                tracing::warn!(error = %e, "deleting unused self-registered OAuth2 apps failed");
            }
            if let Err(e) = state
                .oauth2_keys
                .load(
                    state.store.as_ref(),
                    &state.keys,
                    state.settings.oauth2.key_overlap(),
                )
                .await
            {
                tracing::warn!(error = %e, "reading the token-signing keys failed; keeping the loaded ones");
            }
        }
    });
}

/// Tells systemd how the broker is doing (`Type=notify` units: `READY=1` once it serves), by a
/// datagram to `$NOTIFY_SOCKET`; nothing without one.
pub fn notify_systemd(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &address)
            }
            None => socket.send_to(message.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "telling systemd failed");
    }
}

/// Serves until SIGTERM or SIGINT, then lets in-flight requests finish.
pub async fn serve(
    settings: Settings,
    providers: Providers,
    oidc: Option<crate::oidc::OidcSettings>,
    demo: Option<(Arc<crate::demo_forge::DemoForge>, std::net::TcpListener)>,
) -> Result<(), StartError> {
    for warning in providers.warnings() {
        tracing::warn!(variable = warning.variable, "{}", warning.message);
    }
    let address = settings.http_address;
    // Durations as histograms (aggregatable across replicas, unlike summaries).
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_owned()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        )
        .map_err(|e| StartError::Http(format!("metrics buckets: {e}")))?
        .install_recorder()
        .map_err(|e| StartError::Http(format!("metrics recorder: {e}")))?;
    metrics::gauge!("extauth_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            address: address.to_string(),
            source,
        })?;
    let store = match &settings.postgres_url {
        None => open_sled(&settings)?,
        Some(url) => {
            let tls = settings.tls.as_ref().map(|(config, _)| config.clone());
            connect_postgres(url.secret(), &listener, tls, settings.connections).await?
        }
    };
    let state = build_state(settings, providers, oidc, Some(metrics), store).await?;
    if let Some(oidc) = &state.oidc {
        // A self-test at start: a mistake here is better seen now than at the first sign-in.
        match oidc.discovery().await {
            Ok(d) => tracing::info!(
                issuer = d.issuer,
                redirect_uri = crate::sign_in::redirect_uri(&state),
                "OIDC sign-in ready"
            ),
            Err(e) => tracing::warn!(error = %e, "OIDC discovery failed; sign-in will retry it"),
        }
    }
    crate::revocations::spawn_worker(state.clone());
    spawn_oauth2_upkeep(state.clone());
    crate::workload::watch(state.clone());
    if let Some((_, certificate)) = &state.settings.tls {
        certificate.watch();
    }
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
    if let Some((forge, listener)) = demo {
        if let Err(e) = forge.prepare_repository() {
            tracing::warn!(error = %e, "the demo repository could not be made; Connect and tokens still work");
        }
        let listener = TcpListener::from_std(listener)
            .map_err(|e| StartError::Http(format!("the demo forge: {e}")))?;
        crate::demo_forge::spawn(forge.clone(), listener);
        let helper = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("git-credential-extauth")))
            .map_or_else(
                || "git-credential-extauth".to_owned(),
                |p| p.display().to_string(),
            );
        let base = access.to_string();
        let base = base.trim_end_matches('/');
        println!(
            "\nDemo forge (a demo, not a real forge) at {url}. Three things to try:\n\
             \x20 1. Sign in with the link above and press Connect on \"{name}\".\n\
             \x20 2. Make a workspace token on the Workspace tokens page, then ask for the demo token:\n\
             \x20      export EXTAUTH_URL={base} EXTAUTH_TOKEN=<the token>\n\
             \x20      curl -H \"Authorization: Bearer $EXTAUTH_TOKEN\" \"$EXTAUTH_URL/api/v2/workspaceagents/me/external-auth?id={id}\"\n\
             \x20 3. Clone the demo repository through the credential helper:\n\
             \x20      git -c credential.helper= -c credential.helper='!{helper}' clone {clone}\n",
            url = forge.url,
            name = crate::demo_forge::DISPLAY_NAME,
            id = crate::demo_forge::PROVIDER_ID,
            clone = forge.clone_url(),
        );
    }
    let tls = state
        .settings
        .tls
        .as_ref()
        .map(|(config, _)| config.clone());
    let limits = state.settings.connections;
    notify_systemd("READY=1");
    serve_on(
        listener,
        tls,
        limits,
        routes::router(state),
        shutdown_signal(),
    )
    .await
    .map_err(|source| StartError::Bind {
        address: address.to_string(),
        source,
    })?;
    notify_systemd("STOPPING=1");
    tracing::info!("stopped");
    Ok(())
}

/// Connects to PostgreSQL, retrying until it answers (a replica started before its database
/// waits instead of crash-looping), then registers as a serving replica (waiting while a
/// `dbcrypt` runs). Meanwhile the listener answers `/healthz` with 200 and everything else,
/// `/readyz` included, with 503 and the reason, so a load balancer sends no traffic yet.
async fn connect_postgres(
    url: &str,
    listener: &TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
) -> Result<Arc<dyn Store>, StartError> {
    let mut starting: Option<Starting> = None;
    let mut delay = std::time::Duration::from_millis(500);
    let store = loop {
        let error = match crate::store::PgStore::connect(url).await {
            Ok(store) => break store,
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "PostgreSQL store unreachable; retrying");
        Starting::show(
            &mut starting,
            (listener, &tls, limits),
            "The broker is starting: its PostgreSQL store is unreachable.",
            error,
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown_signal() => {
                return Err(StartError::Store("stopped while waiting for PostgreSQL".to_owned()));
            }
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(10));
    };
    if starting.is_some() {
        tracing::info!("PostgreSQL store reachable");
    }
    {
        // Before the keys are checked: a dbcrypt running now may be revoking some.
        let register = store.register_replica();
        tokio::pin!(register);
        let registered = match tokio::time::timeout(
            std::time::Duration::from_millis(500),
            &mut register,
        )
        .await
        {
            Ok(registered) => registered,
            Err(_) => {
                Starting::show(
                    &mut starting,
                    (listener, &tls, limits),
                    "The broker is starting: a maintenance command (dbcrypt) runs on its database.",
                    "it serves once the command has finished".to_owned(),
                );
                tokio::select! {
                    registered = &mut register => registered,
                    () = shutdown_signal() => {
                        return Err(StartError::Store("stopped while waiting for dbcrypt to finish".to_owned()));
                    }
                }
            }
        };
        registered.map_err(|e| StartError::Store(e.to_string()))?;
    }
    if let Some(starting) = starting {
        starting.end().await;
    }
    Ok(Arc::new(crate::store::Timed::new(store, "postgres")))
}

/// What the listener answers while the broker cannot serve yet: `/healthz` 200, anything else
/// 503 with why.
struct Starting {
    reason: Arc<Mutex<(&'static str, String)>>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Starting {
    /// Shows `message` and `detail`, starting to answer if not yet.
    fn show(
        slot: &mut Option<Self>,
        (listener, tls, limits): (&TcpListener, &Option<Arc<rustls::ServerConfig>>, Limits),
        message: &'static str,
        detail: String,
    ) {
        match slot {
            Some(starting) => starting.says(message, detail),
            None => {
                *slot = Some(Self::begin(
                    listener,
                    tls.clone(),
                    limits,
                    (message, detail),
                ))
            }
        }
    }

    fn begin(
        listener: &TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
        reason: (&'static str, String),
    ) -> Self {
        use axum::http::StatusCode;
        use axum::response::IntoResponse as _;

        // Set before the first request can be answered.
        let reason = Arc::new(Mutex::new(reason));
        let shown = reason.clone();
        let router = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .fallback(move || {
                let (message, detail) = shown.lock().map(|r| r.clone()).unwrap_or_default();
                async move {
                    crate::error::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message, detail)
                        .into_response()
                }
            });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = duplicate(listener).ok().map(|l| {
            tokio::spawn(async move {
                let _ = serve_on(l, tls, limits, router, async {
                    let _ = stopped.await;
                })
                .await;
            })
        });
        Self {
            reason,
            stop,
            server,
        }
    }

    fn says(&self, message: &'static str, detail: String) {
        if let Ok(mut reason) = self.reason.lock() {
            *reason = (message, detail);
        }
    }

    /// Stops answering (the real router takes over the listener).
    async fn end(self) {
        let _ = self.stop.send(());
        if let Some(server) = self.server {
            let _ = server.await;
        }
    }
}

/// Serves `router` on `listener`, over TLS when `tls` is set, until `shutdown` completes, with
/// `limits` on the connections. Each request knows its peer (`ConnectInfo`).
async fn serve_on(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gate = Gate::new(listener, limits);
    let app = router.into_make_service_with_connect_info::<crate::connections::Peer>();
    match tls {
        None => {
            axum::serve(PlainListener(gate), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            axum::serve(crate::tls::TlsListener::new(gate, config)?, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// A second handle on the same listening socket, for the start-up responder.
#[cfg(unix)]
fn duplicate(listener: &TcpListener) -> std::io::Result<TcpListener> {
    use std::os::fd::AsFd as _;
    let std = std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?);
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

#[cfg(not(unix))]
fn duplicate(_listener: &TcpListener) -> std::io::Result<TcpListener> {
    Err(std::io::ErrorKind::Unsupported.into())
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
