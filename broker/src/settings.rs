//! Broker settings: every one from an environment variable (Coder's name where Coder has the
//! setting) or a flag, validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use extauth_providers::AccessUrl;

/// Flags and variables of `extauth-broker` (serving).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "CODER_HTTP_ADDRESS",
        default_value = "127.0.0.1:3000",
        value_name = "HOST:PORT"
    )]
    pub http_address: String,

    /// Development mode: a one-time sign-in link for a local admin is printed at start (with
    /// either store).
    #[arg(long, env = "EXTAUTH_DEV")]
    pub dev: bool,

    /// Also run a demo forge in this process (an OAuth2 provider and a git server on loopback
    /// with one repository), to try extauth offline with no OAuth app of your own. Only on a
    /// loopback address.
    #[arg(long, env = "EXTAUTH_DEMO")]
    pub demo: bool,

    /// Directory of the embedded store (and of the generated encryption key).
    #[arg(
        long,
        env = "EXTAUTH_DATA_DIR",
        default_value = "./extauth-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// PostgreSQL connection URL; unset = the embedded store.
    #[arg(
        long,
        env = "CODER_PG_CONNECTION_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub postgres_url: Option<String>,

    /// Comma-separated base64 AES-256 keys; the first encrypts, all decrypt.
    #[arg(
        long,
        env = "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS",
        value_name = "KEYS",
        hide_env_values = true
    )]
    pub external_token_encryption_keys: Option<String>,

    /// Refresh a token before handing it out when it expires within this long.
    #[arg(
        long,
        env = "EXTAUTH_REFRESH_MARGIN",
        default_value = "5m",
        value_name = "DURATION"
    )]
    pub refresh_margin: String,

    /// Longest a `listen` request waits for a link before answering with the URL again.
    #[arg(
        long,
        env = "EXTAUTH_LISTEN_TIMEOUT",
        default_value = "5m",
        value_name = "DURATION"
    )]
    pub listen_timeout: String,

    /// How long a browser session lasts.
    #[arg(
        long,
        env = "EXTAUTH_SESSION_DURATION",
        default_value = "24h",
        value_name = "DURATION"
    )]
    pub session_duration: String,

    /// How long a refresh that fails for a passing reason is retried (with backoff) before the
    /// caller is told to try later.
    #[arg(
        long,
        env = "EXTAUTH_REFRESH_RETRY_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub refresh_retry_timeout: String,

    /// Timeout of each request to a provider.
    #[arg(
        long,
        env = "EXTAUTH_UPSTREAM_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub upstream_timeout: String,

    /// Log format.
    #[arg(long, env = "EXTAUTH_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Serve HTTPS with this certificate (PEM: the certificate, then its chain); with
    /// --tls-key-file.
    #[arg(long, env = "CODER_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// The private key of --tls-cert-file (PEM, unencrypted).
    #[arg(long, env = "CODER_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Longest a client may take to send a request's headers (from the connection's start or
    /// the end of its previous answer's idle time).
    #[arg(
        long,
        env = "EXTAUTH_HTTP_HEADER_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub http_header_timeout: String,

    /// Longest a kept-alive connection may wait idle for its next request.
    #[arg(
        long,
        env = "EXTAUTH_HTTP_IDLE_TIMEOUT",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub http_idle_timeout: String,

    /// Most connections served at once; more wait in the kernel's queue until one closes.
    #[arg(
        long,
        env = "EXTAUTH_HTTP_MAX_CONNECTIONS",
        default_value = "4096",
        value_name = "N"
    )]
    pub http_max_connections: String,

    /// Failed token checks a client address may make per minute before its token-authenticated
    /// requests are answered 429 for a while; 0 turns the limit off.
    #[arg(
        long,
        env = "EXTAUTH_AUTH_FAILURE_LIMIT",
        default_value = "60",
        value_name = "N"
    )]
    pub auth_failure_limit: String,

    /// Headers that carry the client's address from a trusted proxy (Coder's setting), e.g.
    /// X-Forwarded-For; read only from CODER_PROXY_TRUSTED_ORIGINS.
    #[arg(
        long,
        env = "CODER_PROXY_TRUSTED_HEADERS",
        value_delimiter = ',',
        value_name = "HEADERS"
    )]
    pub proxy_trusted_headers: Vec<String>,

    /// Proxies (CIDR ranges or addresses) whose client-address headers are believed (Coder's
    /// setting).
    #[arg(
        long,
        env = "CODER_PROXY_TRUSTED_ORIGINS",
        value_delimiter = ',',
        value_name = "CIDRS"
    )]
    pub proxy_trusted_origins: Vec<String>,

    /// Serve the OAuth2 authorization server and OpenID Provider (`/oauth2/*`, the
    /// `.well-known` documents, app management); false turns them all into 404s.
    #[arg(
        long,
        env = "CODER_OAUTH2_PROVIDER_ENABLE",
        default_value = "true",
        value_name = "BOOL"
    )]
    pub oauth2_provider_enable: String,

    /// Require PKCE of every OAuth2 client, confidential ones too (public ones always must).
    #[arg(
        long,
        env = "EXTAUTH_OAUTH2_REQUIRE_PKCE",
        default_value = "false",
        value_name = "BOOL"
    )]
    pub oauth2_require_pkce: String,

    /// Lifetime of the access (and ID) tokens the authorization server issues.
    #[arg(
        long,
        env = "EXTAUTH_OAUTH2_ACCESS_TOKEN_LIFETIME",
        default_value = "1h",
        value_name = "DURATION"
    )]
    pub oauth2_access_token_lifetime: String,

    /// Lifetime of a refresh token from its last use (Coder's setting).
    #[arg(
        long,
        env = "CODER_DEFAULT_OAUTH_REFRESH_LIFETIME",
        default_value = "720h",
        value_name = "DURATION"
    )]
    pub oauth2_refresh_lifetime: String,

    /// Requests per minute to /oauth2/* allowed per client and per client address; 0 turns the
    /// limit off.
    #[arg(
        long,
        env = "EXTAUTH_OAUTH2_RATE_LIMIT",
        default_value = "600",
        value_name = "N"
    )]
    pub oauth2_rate_limit: String,

    /// The algorithm of the keys that sign access and ID tokens (new keys: at first start and
    /// at `keys rotate`).
    #[arg(
        long,
        env = "EXTAUTH_OAUTH2_SIGNING_ALGORITHM",
        default_value = "ES256",
        value_name = "ES256|RS256"
    )]
    pub oauth2_signing_algorithm: String,

    /// Accept clients whose client_id is the https URL of their metadata document (MCP's
    /// "client ID metadata documents"): fetched, checked and cached.
    #[arg(
        long,
        env = "EXTAUTH_OAUTH2_CLIENT_METADATA",
        default_value = "true",
        value_name = "BOOL"
    )]
    pub oauth2_client_metadata: String,

    /// Fetch client metadata documents from private, loopback and link-local addresses too
    /// (an internal network's own clients); off, such documents are refused.
    #[arg(
        long,
        env = "EXTAUTH_OAUTH2_CLIENT_METADATA_ALLOW_PRIVATE",
        default_value = "false",
        value_name = "BOOL"
    )]
    pub oauth2_client_metadata_allow_private: String,

    /// Hosts whose client metadata documents are accepted (patterns with `*`, e.g.
    /// `*.example.com`); empty: any host not denied.
    #[arg(
        long,
        env = "EXTAUTH_OAUTH2_CLIENT_METADATA_HOSTS",
        value_delimiter = ',',
        value_name = "PATTERNS"
    )]
    pub oauth2_client_metadata_hosts: Vec<String>,

    /// Hosts whose client metadata documents are refused (patterns with `*`).
    #[arg(
        long,
        env = "EXTAUTH_OAUTH2_CLIENT_METADATA_DENY_HOSTS",
        value_delimiter = ',',
        value_name = "PATTERNS"
    )]
    pub oauth2_client_metadata_deny_hosts: Vec<String>,

    /// Open dynamic client registration (RFC 7591) at /oauth2/register; admins can also turn
    /// it on and off on the OAuth2 apps page.
    #[arg(
        long,
        env = "EXTAUTH_OAUTH2_DCR",
        default_value = "false",
        value_name = "BOOL"
    )]
    pub oauth2_dcr: String,

    /// Redirect URIs a self-registered client may have: `loopback` (http on 127.0.0.1, [::1]
    /// or localhost, any port), `SCHEME:` (a custom scheme such as `vscode:`; `*:` any),
    /// `https://HOST` (with `*`, e.g. `https://*.example.com`).
    #[arg(
        long,
        env = "EXTAUTH_OAUTH2_DCR_REDIRECTS",
        value_delimiter = ',',
        default_value = "loopback,*:,https://*",
        value_name = "PATTERNS"
    )]
    pub oauth2_dcr_redirects: Vec<String>,

    /// The kind of SSH key made for each user's git over SSH (Coder's setting): ed25519,
    /// ecdsa, or rsa4096 for servers that take nothing newer.
    #[arg(
        long,
        env = "CODER_SSH_KEYGEN_ALGORITHM",
        default_value = "ed25519",
        value_name = "ed25519|ecdsa|rsa4096"
    )]
    pub ssh_keygen_algorithm: String,

    /// More CA certificates (PEM) the broker trusts for its own HTTPS calls: providers, the
    /// IdP, client metadata documents (a private CA inside a company).
    #[arg(long, env = "EXTAUTH_UPSTREAM_CA_FILE", value_name = "FILE")]
    pub upstream_ca_file: Option<PathBuf>,

    /// Trust policies for workload identity (YAML): which signed workload tokens (Kubernetes,
    /// GitHub Actions, GitLab CI, SPIFFE) may be exchanged for what. Reloaded on change.
    #[arg(long, env = "EXTAUTH_WORKLOAD_POLICIES", value_name = "FILE")]
    pub workload_policies: Option<PathBuf>,
}

/// A setting that may hold a secret (keys, a database password): never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    /// The value itself.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[redacted, {} bytes]", self.0.len())
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Public base URL.
    pub access_url: AccessUrl,
    /// Listen address.
    pub http_address: SocketAddr,
    /// Development mode.
    pub dev: bool,
    /// Run the demo forge.
    pub demo: bool,
    /// Embedded store directory.
    pub data_dir: PathBuf,
    /// Encryption keys as given.
    pub encryption_keys: Option<Redacted>,
    /// The PostgreSQL store's URL (it may hold a password); `None` = embedded store.
    pub postgres_url: Option<Redacted>,
    /// Refresh margin.
    pub refresh_margin: Duration,
    /// Longest `listen` wait.
    pub listen_timeout: Duration,
    /// Browser session lifetime.
    pub session_duration: Duration,
    /// Timeout of provider requests.
    pub upstream_timeout: Duration,
    /// Budget of retries of a transiently failing refresh.
    pub refresh_retry_timeout: Duration,
    /// Cookies get `Secure` when the access URL is https.
    pub secure_cookies: bool,
    /// JSON logs.
    pub json_logs: bool,
    /// Limits on the connections served.
    pub connections: crate::connections::Limits,
    /// Failed token checks allowed per client address and minute (0: no limit).
    pub auth_failure_limit: u32,
    /// Where a request's client address is read from.
    pub client_address: crate::client_address::ClientAddress,
    /// The authorization server.
    pub oauth2: crate::oauth2::Oauth2Settings,
    /// More roots for the broker's own HTTPS calls (`EXTAUTH_UPSTREAM_CA_FILE`).
    pub upstream_roots: Vec<reqwest::Certificate>,
    /// The workload trust policy file (`EXTAUTH_WORKLOAD_POLICIES`), read at start.
    pub workload_policies: Option<PathBuf>,
    /// The kind of users' git SSH keys (`CODER_SSH_KEYGEN_ALGORITHM`).
    pub git_ssh_algorithm: crate::git_ssh::openssh::KeyAlgorithm,
    /// Serve HTTPS with this configuration and certificate (`CODER_TLS_CERT_FILE`,
    /// `CODER_TLS_KEY_FILE`).
    pub tls: Option<(
        std::sync::Arc<rustls::ServerConfig>,
        std::sync::Arc<crate::tls::Certificate>,
    )>,
}

impl Settings {
    /// Validates `args`; every problem is listed, each naming its variable.
    pub fn from_args(access_url: &str, args: &ServeArgs) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let access = AccessUrl::parse(access_url)
            .map_err(|e| {
                errors.push(format!(
                    "CODER_ACCESS_URL: {access_url:?} is not a usable access URL ({e}); set it to the broker's public base URL, e.g. https://extauth.example.com"
                ))
            })
            .ok();
        let http_address = args
            .http_address
            .parse::<SocketAddr>()
            .map_err(|_| {
                errors.push(format!(
                    "CODER_HTTP_ADDRESS: {:?} is not HOST:PORT with an IP address; use e.g. 127.0.0.1:3000 or 0.0.0.0:3000",
                    args.http_address
                ))
            })
            .ok();
        // The demo forge trusts whoever reaches it: only for a broker nobody else can reach.
        if args.demo {
            let loopback_listen = http_address.is_some_and(|a| a.ip().is_loopback());
            let loopback_access = access
                .as_ref()
                .is_some_and(|a| crate::oauth2::redirect_policy::loopback(a.as_url()));
            if !(loopback_listen && loopback_access) {
                errors.push(format!(
                    "EXTAUTH_DEMO: the demo forge is for trying extauth on this machine, and is refused with CODER_HTTP_ADDRESS={} and CODER_ACCESS_URL={access_url}; use a loopback address (127.0.0.1) or drop --demo",
                    args.http_address
                ));
            }
        }
        let mut duration = |variable: &str, value: &str| {
            parse_duration(value)
                .map_err(|e| {
                    errors.push(format!(
                        "{variable}: {value:?} is not a duration ({e}); write e.g. 30s, 5m or 1h"
                    ))
                })
                .unwrap_or_default()
        };
        let refresh_margin = duration("EXTAUTH_REFRESH_MARGIN", &args.refresh_margin);
        let listen_timeout = duration("EXTAUTH_LISTEN_TIMEOUT", &args.listen_timeout);
        let session_duration = duration("EXTAUTH_SESSION_DURATION", &args.session_duration);
        let upstream_timeout = duration("EXTAUTH_UPSTREAM_TIMEOUT", &args.upstream_timeout);
        let refresh_retry_timeout =
            duration("EXTAUTH_REFRESH_RETRY_TIMEOUT", &args.refresh_retry_timeout);
        let header_timeout = duration("EXTAUTH_HTTP_HEADER_TIMEOUT", &args.http_header_timeout);
        let idle_timeout = duration("EXTAUTH_HTTP_IDLE_TIMEOUT", &args.http_idle_timeout);
        for (variable, value) in [
            ("EXTAUTH_HTTP_HEADER_TIMEOUT", header_timeout),
            ("EXTAUTH_HTTP_IDLE_TIMEOUT", idle_timeout),
        ] {
            if value.is_zero() {
                errors.push(format!(
                    "{variable}: must be longer than 0, or no request could be read; write e.g. 10s"
                ));
            }
        }
        let mut count = |variable: &str, value: &str, min: u32| match value.trim().parse::<u32>() {
            Ok(n) if n >= min => n,
            _ => {
                errors.push(format!(
                    "{variable}: {value:?} is not a whole number of at least {min}; write e.g. {}",
                    if min == 0 { "30" } else { "4096" }
                ));
                0
            }
        };
        let max_connections = count(
            "EXTAUTH_HTTP_MAX_CONNECTIONS",
            &args.http_max_connections,
            1,
        );
        let auth_failure_limit = count("EXTAUTH_AUTH_FAILURE_LIMIT", &args.auth_failure_limit, 0);
        let oauth2_rate_limit = count("EXTAUTH_OAUTH2_RATE_LIMIT", &args.oauth2_rate_limit, 0);
        let mut flag =
            |variable: &str, value: &str| match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" | "" => false,
                _ => {
                    errors.push(format!(
                        "{variable}: {value:?} is not true or false; write true or false"
                    ));
                    false
                }
            };
        let oauth2_enabled = flag("CODER_OAUTH2_PROVIDER_ENABLE", &args.oauth2_provider_enable);
        let oauth2_require_pkce = flag("EXTAUTH_OAUTH2_REQUIRE_PKCE", &args.oauth2_require_pkce);
        let client_metadata = flag(
            "EXTAUTH_OAUTH2_CLIENT_METADATA",
            &args.oauth2_client_metadata,
        );
        let client_metadata_allow_private = flag(
            "EXTAUTH_OAUTH2_CLIENT_METADATA_ALLOW_PRIVATE",
            &args.oauth2_client_metadata_allow_private,
        );
        let dcr = flag("EXTAUTH_OAUTH2_DCR", &args.oauth2_dcr);
        let patterns = |list: &[String]| -> Vec<String> {
            list.iter()
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect()
        };
        let dcr_redirects = patterns(&args.oauth2_dcr_redirects);
        for pattern in &dcr_redirects {
            if let Err(why) = crate::oauth2::redirect_policy::check_pattern(pattern) {
                errors.push(format!("EXTAUTH_OAUTH2_DCR_REDIRECTS: {pattern:?} {why}"));
            }
        }
        let git_ssh_algorithm = crate::git_ssh::openssh::KeyAlgorithm::parse(&args.ssh_keygen_algorithm)
            .unwrap_or_else(|| {
                errors.push(format!(
                    "CODER_SSH_KEYGEN_ALGORITHM: {:?} is not a key kind extauth makes; write ed25519, ecdsa or rsa4096",
                    args.ssh_keygen_algorithm
                ));
                crate::git_ssh::openssh::KeyAlgorithm::Ed25519
            });
        let upstream_roots = match &args.upstream_ca_file {
            None => Vec::new(),
            Some(path) => match std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|pem| {
                    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())
                }) {
                Ok(roots) if !roots.is_empty() => roots,
                Ok(_) => {
                    errors.push(format!(
                        "EXTAUTH_UPSTREAM_CA_FILE: {} holds no PEM certificate; give the CA's certificate file",
                        path.display()
                    ));
                    Vec::new()
                }
                Err(e) => {
                    errors.push(format!(
                        "EXTAUTH_UPSTREAM_CA_FILE: {} cannot be used ({e}); give a readable PEM file of CA certificates",
                        path.display()
                    ));
                    Vec::new()
                }
            },
        };
        let mut duration = |variable: &str, value: &str| {
            parse_duration(value)
                .ok()
                .filter(|d| !d.is_zero())
                .unwrap_or_else(|| {
                    errors.push(format!(
                        "{variable}: {value:?} is not a duration longer than 0; write e.g. 1h or 720h"
                    ));
                    Duration::from_secs(1)
                })
        };
        let oauth2 = crate::oauth2::Oauth2Settings {
            enabled: oauth2_enabled,
            require_pkce: oauth2_require_pkce,
            client_metadata,
            client_metadata_allow_private,
            client_metadata_hosts: patterns(&args.oauth2_client_metadata_hosts),
            client_metadata_deny_hosts: patterns(&args.oauth2_client_metadata_deny_hosts),
            dcr,
            dcr_redirects,
            access_lifetime: duration(
                "EXTAUTH_OAUTH2_ACCESS_TOKEN_LIFETIME",
                &args.oauth2_access_token_lifetime,
            ),
            refresh_lifetime: duration(
                "CODER_DEFAULT_OAUTH_REFRESH_LIFETIME",
                &args.oauth2_refresh_lifetime,
            ),
            rate_limit: oauth2_rate_limit,
            algorithm: crate::oauth2::signing::Algorithm::parse(
                args.oauth2_signing_algorithm.trim(),
            )
            .unwrap_or_else(|| {
                errors.push(format!(
                    "EXTAUTH_OAUTH2_SIGNING_ALGORITHM: {:?} is not an algorithm extauth signs with; write ES256 or RS256",
                    args.oauth2_signing_algorithm
                ));
                crate::oauth2::signing::Algorithm::Es256
            }),
        };
        let client_address = crate::client_address::ClientAddress::parse(
            &args.proxy_trusted_headers,
            &args.proxy_trusted_origins,
        )
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
        let encryption_keys = args
            .external_token_encryption_keys
            .clone()
            .filter(|k| !k.trim().is_empty());
        // Parsed here as start parses them, so `config check` refuses what start would.
        if let Some(Err(e)) = encryption_keys
            .as_deref()
            .map(crate::crypto::KeyRing::parse)
        {
            errors.push(e.to_string());
        }
        let postgres_url = args.postgres_url.clone().filter(|u| !u.trim().is_empty());
        if let Some(url) = &postgres_url {
            if let Err(e) = crate::store::postgres_tls::prepare(url) {
                errors.push(format!(
                    "CODER_PG_CONNECTION_URL: not a usable PostgreSQL connection URL ({e}); write postgres://user:password@host:5432/database?sslmode=verify-full"
                ));
            }
            if encryption_keys.is_none() {
                errors.push(
                    "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS: required with CODER_PG_CONNECTION_URL, so that every replica encrypts with the same keys; generate one with `openssl rand -base64 32` and give it to every replica".to_owned(),
                );
            }
        }
        let tls = match (&args.tls_cert_file, &args.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => match crate::tls::server_config(cert, key) {
                Ok(served) => Some(served),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            (Some(_), None) => {
                errors.push("CODER_TLS_KEY_FILE: unset while CODER_TLS_CERT_FILE is set; give the certificate's private key too".to_owned());
                None
            }
            (None, Some(_)) => {
                errors.push("CODER_TLS_CERT_FILE: unset while CODER_TLS_KEY_FILE is set; give the certificate too".to_owned());
                None
            }
        };
        if let Some(access) = &access {
            if tls.is_some() && access.as_url().scheme() == "http" {
                tracing::warn!(
                    access_url = %access,
                    "CODER_ACCESS_URL is http:// while the broker serves HTTPS; links and callbacks will point at http"
                );
            }
        }
        match (access, http_address, errors.is_empty()) {
            (Some(access_url), Some(http_address), true) => Ok(Self {
                secure_cookies: access_url.as_url().scheme() == "https",
                access_url,
                http_address,
                dev: args.dev,
                demo: args.demo,
                data_dir: args.data_dir.clone(),
                encryption_keys: encryption_keys.map(Redacted),
                postgres_url: postgres_url.map(Redacted),
                refresh_margin,
                listen_timeout,
                session_duration,
                upstream_timeout,
                refresh_retry_timeout,
                json_logs: args.log_format == "json",
                tls,
                connections: crate::connections::Limits {
                    header_timeout,
                    idle_timeout,
                    max_connections: max_connections as usize,
                },
                auth_failure_limit,
                client_address,
                oauth2,
                upstream_roots,
                workload_policies: args.workload_policies.clone(),
                git_ssh_algorithm,
            }),
            _ => Err(errors),
        }
    }

    /// The path prefix of the access URL (`/` or `/prefix/`), under which routes are served.
    pub fn base_path(&self) -> &str {
        self.access_url.as_url().path()
    }
}

/// `250ms`, `30s`, `5m`, `1h`, `1d`, or plain seconds.
///
/// ```
/// use std::time::Duration;
/// use extauth_broker::settings::parse_duration;
/// assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
/// assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
/// assert!(parse_duration("5 minutes").is_err());
/// ```
pub fn parse_duration(value: &str) -> Result<Duration, &'static str> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| "no number")?;
    let millis = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err("unknown unit"),
    };
    number
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or("too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }
}
