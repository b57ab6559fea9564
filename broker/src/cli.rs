//! Command-line interface of `extauth-broker`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config_check::{self, CheckArgs};
use crate::settings::{ServeArgs, Settings};

/// extauth broker: links users' OAuth providers and serves their tokens to workspaces.
///
/// Without a command, serves. Providers come from CODER_EXTERNAL_AUTH_<N>_* variables; check them
/// with `extauth-broker config check`. Quick start: `extauth-broker --dev`.
#[derive(Debug, Parser)]
#[command(name = "extauth-broker", version, about, long_about = None)]
pub struct Cli {
    /// The broker's public base URL; callbacks are <access-url>/external-auth/<id>/callback.
    /// [default: http:// and the listen address, 127.0.0.1 for an unspecified one]
    #[arg(long, global = true, env = "CODER_ACCESS_URL", value_name = "URL")]
    pub access_url: Option<String>,

    #[command(flatten)]
    serve: ServeArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the configuration read from the environment.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// OIDC sign-in.
    #[command(subcommand)]
    Oidc(OidcCommand),
    /// Re-encrypt, decrypt or delete the stored tokens (stop every broker first).
    ///
    /// Works on the store the broker would use: CODER_PG_CONNECTION_URL, or EXTAUTH_DATA_DIR.
    #[command(subcommand)]
    Dbcrypt(DbcryptCommand),
    /// Move data between stores.
    #[command(subcommand)]
    Store(StoreCommand),
    /// The keys that sign the authorization server's tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Exit 0 when the broker on this machine answers /readyz, else 1 (a container image's
    /// HEALTHCHECK, which has no shell or curl to do it).
    Healthcheck {
        /// Give up after this long.
        #[arg(long, default_value = "5s", value_name = "DURATION")]
        timeout: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new signing key; it signs from now on (running replicas switch within a minute).
    /// The old key stays published in the JWKS until the tokens it signed have expired.
    Rotate,
}

#[derive(Debug, Subcommand)]
enum DbcryptCommand {
    /// Encrypt every token with the first key of CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS, then
    /// revoke the other keys (the broker refuses them from then on).
    ///
    /// Example: CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS=<new>,<old> extauth-broker dbcrypt rotate
    Rotate,
    /// Store every token unencrypted and revoke every key. Keys come from
    /// CODER_EXTERNAL_TOKEN_ENCRYPTION_DECRYPT_KEYS (deliberately not the serving variable).
    Decrypt {
        /// The keys to decrypt with.
        #[arg(
            long,
            env = "CODER_EXTERNAL_TOKEN_ENCRYPTION_DECRYPT_KEYS",
            hide_env_values = true
        )]
        keys: Option<String>,
    },
    /// Delete every encrypted token (links, pending revocations, OIDC sessions) and revoke
    /// the keys. Users link their providers again.
    Delete {
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy everything from an embedded store to PostgreSQL, then verify it. Safe to run again.
    ///
    /// Example: extauth-broker store migrate --from ./extauth-data --to postgres://extauth@db/extauth
    Migrate {
        /// The embedded store's data directory (EXTAUTH_DATA_DIR of the broker that used it).
        #[arg(long, value_name = "DIR")]
        from: std::path::PathBuf,
        /// The PostgreSQL URL.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum OidcCommand {
    /// Check CODER_OIDC_* against the IdP: discovery, issuer, keys, scopes, and print the
    /// redirect URI to register. Exit status 1 when something is wrong.
    Check,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Resolve CODER_EXTERNAL_AUTH_<N>_* into providers and report every problem.
    ///
    /// Prints each provider with its defaults applied and the callback URL to register with
    /// the provider. The client secret is shown only as set/unset. Exit status: 0 when the
    /// configuration is valid, 1 when it has errors (all listed), 2 on a usage error.
    ///
    /// Example: extauth-broker config check --match https://github.com/org/repo.git
    Check(CheckArgs),
}

impl Cli {
    /// The access URL as set, or else where a local user reaches the listen address (so that
    /// changing only `CODER_HTTP_ADDRESS` keeps the links and callbacks right).
    fn access_url(&self) -> String {
        if let Some(url) = self.access_url.as_deref().filter(|u| !u.trim().is_empty()) {
            return url.to_owned();
        }
        let https = self.serve.tls_cert_file.is_some();
        default_access_url(&self.serve.http_address, https)
    }
}

/// `http://<address>` (`https://` when serving TLS), with a loopback address for an unspecified
/// one (`0.0.0.0`, `::`).
fn default_access_url(http_address: &str, https: bool) -> String {
    let scheme = if https { "https" } else { "http" };
    match http_address.parse::<std::net::SocketAddr>() {
        Ok(address) => {
            let ip = match address.ip() {
                std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                }
                std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                    std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                }
                ip => ip,
            };
            format!(
                "{scheme}://{}",
                std::net::SocketAddr::new(ip, address.port())
            )
        }
        // The address itself is reported as an error where it is used.
        Err(_) => config_check::DEFAULT_ACCESS_URL.replacen("http", scheme, 1),
    }
}

/// Runs the command line of the process.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let access_url = cli.access_url();
    match cli.command {
        Some(Command::Config(ConfigCommand::Check(args))) => {
            let mut other = config_check::OtherSettings {
                workload_policies: cli.serve.workload_policies.clone(),
                ..Default::default()
            };
            match Settings::from_args(&access_url, &cli.serve) {
                Ok(settings) => other.oauth2_provider = Some(settings.oauth2.enabled),
                Err(errors) => other.errors.extend(errors),
            }
            if let Err(errors) =
                crate::oidc::OidcSettings::from_vars(&process_env(), &mut other.warnings)
            {
                other.errors.extend(errors);
            }
            let outcome = config_check::run(process_env(), &access_url, &args, &other);
            print!("{}", outcome.stdout);
            eprint!("{}", outcome.stderr);
            ExitCode::from(outcome.status)
        }
        Some(Command::Oidc(OidcCommand::Check)) => oidc_check(&access_url),
        Some(Command::Dbcrypt(command)) => {
            init_logging(false);
            block_on(dbcrypt(&cli.serve, command))
        }
        Some(Command::Keys(KeysCommand::Rotate)) => {
            init_logging(false);
            block_on(keys_rotate(&access_url, &cli.serve))
        }
        Some(Command::Store(StoreCommand::Migrate { from, to })) => {
            init_logging(false);
            block_on(store_migrate(&from, &to))
        }
        Some(Command::Healthcheck { timeout }) => healthcheck(&access_url, &cli.serve, &timeout),
        None => serve(&access_url, &cli.serve),
    }
}

/// `healthcheck`: `/readyz` of the broker listening at `CODER_HTTP_ADDRESS` (an unspecified
/// address asked on loopback), under the access URL's path.
fn healthcheck(access_url: &str, args: &ServeArgs, timeout: &str) -> ExitCode {
    let settings = match Settings::from_args(access_url, args) {
        Ok(settings) => settings,
        Err(errors) => {
            eprintln!(
                "extauth-broker healthcheck: the configuration is invalid: {}",
                errors.join("; ")
            );
            return ExitCode::from(1);
        }
    };
    let Ok(timeout) = crate::settings::parse_duration(timeout) else {
        eprintln!(
            "extauth-broker healthcheck: --timeout {timeout:?} is not a duration; write e.g. 5s"
        );
        return ExitCode::from(2);
    };
    let mut address = settings.http_address;
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{address}{}readyz", settings.base_path());
    // The probe asks its own process's port by address, so the certificate (made for the
    // public name) cannot match it: readiness, not identity, is what is checked here.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .danger_accept_invalid_certs(settings.tls.is_some())
        .build();
    let Ok(client) = client else {
        return ExitCode::from(1);
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let answer = runtime.block_on(async move {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{url} answered {}", r.status())),
            Err(e) => Err(format!("{url}: {}", e.without_url())),
        }
    });
    match answer {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("extauth-broker healthcheck: not ready: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(access_url: &str, args: &ServeArgs) -> ExitCode {
    init_logging(args.log_format == "json");
    let settings = match Settings::from_args(access_url, args) {
        Ok(settings) => settings,
        Err(errors) => {
            eprintln!("extauth-broker: cannot start:");
            for e in errors {
                eprintln!("  - {e}");
            }
            return ExitCode::from(1);
        }
    };
    let mut env = process_env();
    let demo = if settings.demo {
        match demo_forge(&settings) {
            Ok((forge, listener)) => {
                env.extend(forge.provider_vars(next_provider_index(&env)));
                Some((forge, listener))
            }
            Err(e) => {
                eprintln!("extauth-broker: cannot start the demo forge: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let providers = match extauth_providers::Providers::from_vars(env) {
        Ok(providers) => providers,
        Err(errors) => {
            eprintln!("extauth-broker: cannot start: {errors}");
            return ExitCode::from(1);
        }
    };
    let mut oidc_warnings = Vec::new();
    let oidc = match crate::oidc::OidcSettings::from_vars(&process_env(), &mut oidc_warnings) {
        Ok(oidc) => oidc,
        Err(errors) => {
            eprintln!("extauth-broker: cannot start:");
            for e in errors {
                eprintln!("  - {e}");
            }
            return ExitCode::from(1);
        }
    };
    for w in oidc_warnings {
        tracing::warn!("{w}");
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(crate::server::serve(settings, providers, oidc, demo)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("extauth-broker: cannot start: {e}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("extauth-broker: cannot start the runtime: {e}");
            ExitCode::from(1)
        })
}

/// Runs a maintenance command: its report on stdout and exit 0, or its error and exit 1.
fn block_on(work: impl std::future::Future<Output = Result<String, String>>) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(work) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("extauth-broker: {e}");
            ExitCode::from(1)
        }
    }
}

/// The store the broker would serve from, for maintenance.
async fn open_store(args: &ServeArgs) -> Result<std::sync::Arc<dyn crate::store::Store>, String> {
    match args
        .postgres_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    {
        Some(url) => Ok(std::sync::Arc::new(
            crate::store::PgStore::connect(url)
                .await
                .map_err(|e| e.to_string())?,
        )),
        None => crate::store::SledStore::open(&args.data_dir.join("store"))
            .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn crate::store::Store>)
            .map_err(|e| format!("{e}; stop the broker using EXTAUTH_DATA_DIR first")),
    }
}

fn ring(variable: &str, keys: Option<&str>) -> Result<crate::crypto::KeyRing, String> {
    let keys = keys.filter(|k| !k.trim().is_empty()).ok_or_else(|| {
        format!("{variable} is required: the keys the tokens are encrypted with, the new one first")
    })?;
    crate::crypto::KeyRing::parse(keys).map_err(|e| {
        e.to_string()
            .replace("CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS", variable)
    })
}

/// Opens the store for a maintenance command, alone: a replica still serving could write
/// with a key the command is about to revoke, or read one it is rewriting.
async fn open_store_alone(
    args: &ServeArgs,
) -> Result<
    (
        std::sync::Arc<dyn crate::store::Store>,
        crate::store::StoreLock,
    ),
    String,
> {
    let store = open_store(args).await?;
    match store.try_lock(crate::store::SERVING_LOCK).await {
        Ok(Some(alone)) => Ok((store, alone)),
        Ok(None) => Err(
            "broker replicas are running on this database; stop every one of them, run the command, then start them with the new keys".to_owned(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

async fn dbcrypt(args: &ServeArgs, command: DbcryptCommand) -> Result<String, String> {
    let now = crate::clock::now();
    let report = match command {
        DbcryptCommand::Rotate => {
            let keys = ring(
                "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS",
                args.external_token_encryption_keys.as_deref(),
            )?;
            let (store, alone) = open_store_alone(args).await?;
            let report = crate::dbcrypt::rotate(&*store, &keys, now)
                .await
                .map_err(|e| e.to_string())?;
            alone.release().await;
            format!(
                "rotated: {} value(s) encrypted with key {}, {} already were; revoked: {}",
                report.changed,
                keys.key_ids().first().copied().unwrap_or_default(),
                report.unchanged,
                list(&report.revoked)
            )
        }
        DbcryptCommand::Decrypt { keys } => {
            let keys = ring(
                "CODER_EXTERNAL_TOKEN_ENCRYPTION_DECRYPT_KEYS",
                keys.as_deref(),
            )?;
            let (store, alone) = open_store_alone(args).await?;
            let report = crate::dbcrypt::decrypt(&*store, &keys, now)
                .await
                .map_err(|e| e.to_string())?;
            alone.release().await;
            format!(
                "decrypted: {} value(s) now stored unencrypted; revoked: {}",
                report.changed,
                list(&report.revoked)
            )
        }
        DbcryptCommand::Delete { yes } => {
            if !yes {
                return Err(
                    "dbcrypt delete removes every stored token and users must link again; add --yes to confirm".to_owned(),
                );
            }
            let keys = args
                .external_token_encryption_keys
                .as_deref()
                .filter(|k| !k.trim().is_empty())
                .map(|k| ring("CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS", Some(k)))
                .transpose()?;
            let (store, alone) = open_store_alone(args).await?;
            let report = crate::dbcrypt::delete(&*store, keys.as_ref(), now)
                .await
                .map_err(|e| e.to_string())?;
            alone.release().await;
            format!(
                "deleted: {} record(s) holding encrypted tokens; revoked: {}",
                report.changed,
                list(&report.revoked)
            )
        }
    };
    Ok(report)
}

/// `keys rotate`: works beside running replicas (PostgreSQL), under the store's key lock.
async fn keys_rotate(access_url: &str, args: &ServeArgs) -> Result<String, String> {
    let settings = Settings::from_args(access_url, args).map_err(|e| e.join("\n"))?;
    let keys = crate::server::key_ring(&settings).map_err(|e| e.to_string())?;
    let store = open_store(args).await?;
    let kid = crate::oauth2::signing::rotate(
        &*store,
        &keys,
        settings.oauth2.algorithm,
        settings.oauth2.key_overlap(),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "rotated: key {kid} ({}) signs from now on; the previous key stays published for {} s",
        settings.oauth2.algorithm.name(),
        settings.oauth2.key_overlap().as_secs()
    ))
}

fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(", ")
    }
}

async fn store_migrate(from: &std::path::Path, to: &str) -> Result<String, String> {
    // Accept the data directory or the store directory inside it.
    let sled_dir = if from.join("store").is_dir() {
        from.join("store")
    } else {
        from.to_path_buf()
    };
    if !sled_dir.join("conf").exists() {
        return Err(format!(
            "--from {}: no embedded store there; give the broker's EXTAUTH_DATA_DIR",
            from.display()
        ));
    }
    let source = crate::store::SledStore::open(&sled_dir)
        .map_err(|e| format!("{e}; stop the broker using {} first", from.display()))?;
    let destination = crate::store::PgStore::connect_as(to, "--to")
        .await
        .map_err(|e| e.to_string())?;
    let copied = crate::store::copy_all(&source, &destination)
        .await
        .map_err(|e| e.to_string())?;
    let mut report = format!(
        "copied and verified: {}\ndestination now holds: {}",
        copied.source.counts(),
        copied.destination.counts()
    );
    let key_file = from.join(crate::server::KEY_FILE);
    if key_file.exists() {
        report.push_str(&format!(
            "\nthe tokens are encrypted with the key in {}: set CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS to its content on every replica",
            key_file.display()
        ));
    }
    Ok(report)
}

fn oidc_check(access_url: &str) -> ExitCode {
    let mut warnings = Vec::new();
    let settings = match crate::oidc::OidcSettings::from_vars(&process_env(), &mut warnings) {
        Ok(Some(settings)) => settings,
        Ok(None) => {
            eprintln!(
                "OIDC is not configured: set CODER_OIDC_ISSUER_URL, CODER_OIDC_CLIENT_ID and CODER_OIDC_CLIENT_SECRET"
            );
            return ExitCode::from(1);
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::from(1);
        }
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let Ok(access) = extauth_providers::AccessUrl::parse(access_url) else {
        eprintln!("error: CODER_ACCESS_URL {access_url:?} is not a usable URL");
        return ExitCode::from(1);
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::from(1);
    };
    runtime.block_on(async {
        let issuer = settings.issuer.clone();
        let scopes = settings.scopes.clone();
        let Ok(oidc) = crate::oidc::Oidc::new(settings, std::time::Duration::from_secs(10)) else {
            return ExitCode::from(1);
        };
        match oidc.discovery().await {
            Ok(d) => {
                println!(
                    "issuer             {} (matches CODER_OIDC_ISSUER_URL)",
                    d.issuer
                );
                println!("authorization      {}", d.authorization_endpoint);
                println!("token              {}", d.token_endpoint);
                println!(
                    "userinfo           {}",
                    d.userinfo_endpoint.as_deref().unwrap_or("(none)")
                );
                match oidc.key_summary().await {
                    Ok(keys) if keys.is_empty() => println!(
                        "jwks               {} (no keys: ID tokens must be HS256, verified with the client secret)",
                        d.jwks_uri
                    ),
                    Ok(keys) => println!(
                        "jwks               {} ({} key(s): {})",
                        d.jwks_uri,
                        keys.len(),
                        keys.join(", ")
                    ),
                    Err(e) => {
                        let e = crate::error::ApiError::from(e);
                eprintln!("error: {} {}", e.message, e.detail);
                        return ExitCode::from(1);
                    }
                }
                println!(
                    "end session        {}",
                    d.end_session_endpoint
                        .as_deref()
                        .unwrap_or("(none: no RP-initiated logout)")
                );
                println!(
                    "back-channel       {}",
                    if d.backchannel_logout_supported {
                        "supported"
                    } else {
                        "not advertised"
                    }
                );
                println!("scopes requested   {}", scopes.join(" "));
                let unsupported: Vec<&String> = scopes
                    .iter()
                    .filter(|s| !d.scopes_supported.is_empty() && !d.scopes_supported.contains(s))
                    .collect();
                if !unsupported.is_empty() {
                    println!("warning: the IdP does not list these scopes: {unsupported:?}");
                }
                println!(
                    "redirect URI       {}  (register this at the IdP)",
                    access.join("api/v2/users/oidc/callback")
                );
                println!(
                    "back-channel URI   {}",
                    access.join("api/v2/users/oidc/backchannel-logout")
                );
                println!("post-logout URI    {}", access.join("login"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                let e = crate::error::ApiError::from(e);
                eprintln!("error: {} {}", e.message, e.detail);
                eprintln!("(CODER_OIDC_ISSUER_URL is {issuer:?})");
                ExitCode::from(1)
            }
        }
    })
}

/// Logs to stderr, text or JSON; `RUST_LOG` (or `EXTAUTH_LOG`) sets the filter, `info` by default.
fn init_logging(json: bool) {
    let filter = std::env::var("EXTAUTH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The demo forge and its listener: on the port after the broker's when free, else any.
fn demo_forge(
    settings: &Settings,
) -> Result<
    (
        std::sync::Arc<crate::demo_forge::DemoForge>,
        std::net::TcpListener,
    ),
    String,
> {
    let ip = settings.http_address.ip();
    let listener = std::net::TcpListener::bind((ip, settings.http_address.port().wrapping_add(1)))
        .or_else(|_| std::net::TcpListener::bind((ip, 0)))
        .map_err(|e| format!("no loopback port: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let forge = crate::demo_forge::DemoForge::new(format!("http://{address}"), &settings.data_dir);
    Ok((std::sync::Arc::new(forge), listener))
}

/// The number after the highest `CODER_EXTERNAL_AUTH_<N>_` in `env` (the demo provider's).
fn next_provider_index(env: &[(String, String)]) -> usize {
    env.iter()
        .filter_map(|(k, _)| {
            k.strip_prefix("CODER_EXTERNAL_AUTH_")
                .or_else(|| k.strip_prefix("CODER_GITAUTH_"))
                .and_then(|rest| rest.split('_').next())
                .and_then(|n| n.parse::<usize>().ok())
        })
        .max()
        .map_or(0, |n| n + 1)
}

/// The process environment. Names or values that are not UTF-8 are converted lossily rather
/// than panicking as `std::env::vars` would; a mangled provider setting then fails validation
/// with its name.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::default_access_url;

    #[test]
    fn the_default_access_url_follows_the_listen_address() {
        let http = |address| default_access_url(address, false);
        assert_eq!(http("127.0.0.1:3000"), "http://127.0.0.1:3000");
        assert_eq!(http("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(http("[::]:8080"), "http://[::1]:8080");
        assert_eq!(http("10.1.2.3:80"), "http://10.1.2.3:80");
        assert_eq!(http("not an address"), "http://127.0.0.1:3000");
        assert_eq!(
            default_access_url("0.0.0.0:443", true),
            "https://127.0.0.1:443"
        );
    }
}
