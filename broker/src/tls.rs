//! Serving HTTPS itself (`CODER_TLS_CERT_FILE` + `CODER_TLS_KEY_FILE`), for deployments without
//! a TLS proxy in front. Handshakes run in tasks of their own, so a slow or silent client never
//! holds up the others; connections reach axum only once their handshake is done. A renewed
//! certificate is picked up without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;

use crate::connections::{Gate, Peer, Watched};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The certificate being served, read again from its files on `SIGHUP` and when they change
/// (renewals by certbot or cert-manager need no restart). A renewal that cannot be used is
/// logged and the current certificate kept.
pub struct Certificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the two files when last read.
    read_at: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl Certificate {
    /// Reads the files; errors name the variable and say what to fix.
    fn load(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let read_at = (modified(cert_file), modified(key_file));
        let key = certified_key(cert_file, key_file, &provider)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            current: RwLock::new(Arc::new(key)),
            read_at: Mutex::new(read_at),
        })
    }

    /// The certificate chain and key served now.
    pub fn served(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|key| key.clone())
    }

    /// Reads the files again (when `only_if_changed`, only if either changed since).
    pub fn reload(&self, only_if_changed: bool) {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        if only_if_changed && self.read_at.lock().is_ok_and(|seen| *seen == stamps) {
            return;
        }
        match certified_key(&self.cert_file, &self.key_file, &self.provider) {
            Ok(key) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(key);
                }
                if let Ok(mut seen) = self.read_at.lock() {
                    *seen = stamps;
                }
                tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate loaded");
            }
            Err(e) => tracing::error!(
                error = e,
                "TLS certificate not reloaded; serving the previous one"
            ),
        }
    }

    /// Reloads on `SIGHUP`, and every minute if the files changed, until the process ends.
    pub fn watch(self: &Arc<Self>) {
        let certificate = self.clone();
        // Installed before returning: from here on SIGHUP reloads rather than ends the process.
        #[cfg(unix)]
        let mut hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hangups.as_mut() {
                        Some(signals) => {
                            signals.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<()>();
                tokio::select! {
                    () = hangup => certificate.reload(false),
                    _ = tick.tick() => certificate.reload(true),
                }
            }
        });
    }
}

/// Names the files only: the key itself never reaches a log.
impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.served()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(Iterator::collect)
        .map_err(|e| {
            format!(
                "CODER_TLS_CERT_FILE {}: cannot read certificates ({e}); give a PEM file with the certificate first, then its chain",
                cert_file.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "CODER_TLS_CERT_FILE {}: no certificate in it; give a PEM file with -----BEGIN CERTIFICATE-----",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "CODER_TLS_KEY_FILE {}: no usable private key ({e}); give the certificate's key as PEM (PKCS#8, PKCS#1 or SEC1), unencrypted",
            key_file.display()
        )
    })?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        format!(
            "CODER_TLS_CERT_FILE / CODER_TLS_KEY_FILE: the key does not fit the certificate ({e}); give the key the certificate was issued for"
        )
    })
}

/// The server configuration for the certificate and key files (PEM), and the certificate
/// handle to [`Certificate::watch`].
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Arc<ServerConfig>, Arc<Certificate>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificate = Arc::new(Certificate::load(cert_file, key_file, provider.clone())?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(certificate.clone());
    // This server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), certificate))
}

/// A listener whose connections are TLS sessions, for `axum::serve`. Connections count against
/// the [`Gate`]'s limit from their TCP accept, handshake included.
pub struct TlsListener {
    ready: mpsc::Receiver<(Watched<TlsStream<TcpStream>>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts through `gate` and handshakes with `config`; stops when this listener is dropped.
    pub fn new(mut gate: Gate, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = gate.local_addr()?;
        let limits = gate.limits();
        let (done, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (tcp, peer, slot) = tokio::select! {
                    () = done.closed() => return,
                    accepted = gate.accept() => accepted,
                };
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    // The handshake is due within the header timeout, like a plain request's headers.
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let kind = match tls.get_ref().1.handshake_kind() {
                                Some(rustls::HandshakeKind::Resumed) => "resumed",
                                _ => "full",
                            };
                            metrics::counter!("extauth_tls_handshakes_total", "outcome" => kind)
                                .increment(1);
                            let _ = done.send((Watched::new(tls, slot, limits), peer)).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("extauth_tls_handshakes_total", "outcome" => "failed")
                                .increment(1);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("extauth_tls_handshakes_total", "outcome" => "timed_out")
                                .increment(1);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Watched<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it only does when this listener is gone).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}
