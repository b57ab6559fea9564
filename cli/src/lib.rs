//! The `extauth` command line: tokens for scripts, linking providers from a terminal, workspace
//! tokens, and wiring git to `git-credential-extauth`. The broker client is
//! `extauth-git-askpass`'s; this crate only parses the command line and prints.
//!
//! Exit codes: 0 success; 1 the operation failed (not linked, refused, broker error);
//! 2 usage error; 3 not configured (no workspace variables and not logged in).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod credentials;
mod forge_cli;
mod gitssh;
mod loopback_login;
mod setup_git;

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use extauth_git_askpass::workspace::{
    By, Client, ClientError, Lookup, Settings, api_error, terminal_safe,
};
use serde_json::{Value, json};

const EXAMPLES: &str = "Examples:
  extauth access-token github                 print the GitHub token (scripts: exit 1 = not linked, URL printed)
  extauth external-auth access-token slack --extra authed_user.id
  extauth setup-git --global                  make git use your tokens for every configured provider
  extauth login https://extauth.example.com   sign the CLI in (for list, link, unlink, workspace-token)
  extauth external-auth link gitlab           link a provider from the terminal
  extauth workspace-token create my-workspace --provider github

Exit codes: 0 success, 1 failure (e.g. not linked), 2 usage error, 3 not configured.";

/// extauth: your OAuth tokens for git and scripts, from the extauth broker.
#[derive(Debug, Parser)]
#[command(name = "extauth", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the access token of a provider (same as `external-auth access-token`).
    AccessToken(AccessTokenArgs),
    /// Linked providers and their tokens.
    #[command(subcommand)]
    ExternalAuth(ExternalAuth),
    /// Sign the CLI in to a broker: in a browser on this machine when one can be opened (the
    /// CLI takes the answer on a loopback port), else with a code to confirm in any browser (the
    /// device authorization); the CLI refreshes its token itself. Or --token with an API token.
    Login {
        /// The broker's URL, e.g. https://extauth.example.com.
        url: String,
        /// Use this API token instead of asking for one.
        #[arg(long)]
        token: Option<String>,
        /// Use a code to confirm in any browser, even when one could be opened here (e.g. over
        /// SSH).
        #[arg(long, conflicts_with = "token")]
        device: bool,
    },
    /// Forget the CLI's credential.
    Logout,
    /// Show who the CLI acts as.
    Whoami {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Tokens that let a workspace fetch your provider tokens.
    #[command(subcommand)]
    WorkspaceToken(WorkspaceToken),
    /// Apps of the broker's OAuth2 authorization server (admins).
    #[command(subcommand, name = "oauth2-app")]
    OAuth2App(OAuth2App),
    /// Configure git to get credentials from extauth for every provider (idempotent).
    SetupGit {
        /// Write to ~/.gitconfig instead of the current repository's config.
        #[arg(long)]
        global: bool,
    },
    /// Wait until every account this workspace requires is connected (for start-up scripts);
    /// prints where to connect them meanwhile.
    WaitForAuth {
        /// Give up after this many seconds (exit 1); 0 waits as long as it takes.
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// Print your git SSH public key (and where to add it at each forge).
    Publickey,
    /// Run ssh with your git SSH key (git's core.sshCommand; `extauth setup-git` sets it).
    Gitssh {
        /// ssh's arguments, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a command with fresh provider tokens in the variables forge CLIs read (GH_TOKEN and
    /// GITHUB_TOKEN, GITLAB_TOKEN, AZURE_DEVOPS_EXT_PAT, GITEA_TOKEN, and EXTAUTH_TOKEN_<ID>
    /// for every provider). Example: extauth exec --provider github -- gh pr list
    Exec {
        /// Only these providers (each must be linked); default: every linked one.
        #[arg(long = "provider", value_name = "ID")]
        providers: Vec<String>,
        /// A GitHub App installation token for this provider, as the workload's trust policy
        /// grants it (EXTAUTH_IDENTITY_TOKEN_FILE); revoked when the command ends.
        #[arg(long = "app", value_name = "ID")]
        apps: Vec<String>,
        /// The command, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Put a wrapper in front of a forge CLI (gh, glab, tea, az) so that it always runs with a
    /// fresh token: ~/.local/bin/<cli> → extauth exec.
    SetupCli {
        /// gh, glab, tea or az.
        cli: String,
        /// The provider whose token it gets (default: the broker's first of the CLI's forge).
        #[arg(long, value_name = "ID")]
        provider: Option<String>,
        /// Where to put the wrapper (default ~/.local/bin; it must come first on PATH).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
struct AccessTokenArgs {
    /// Provider ID (as configured on the broker).
    id: String,
    /// The account, when you linked several of the provider (default: your default account).
    #[arg(long, value_name = "LOGIN")]
    account: Option<String>,
    /// Print a field of the token's extra data instead, e.g. `authed_user.id`.
    #[arg(long, value_name = "PATH")]
    extra: Option<String>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Subcommand)]
enum ExternalAuth {
    /// Print the access token of a provider.
    AccessToken(AccessTokenArgs),
    /// List providers and whether you have linked them.
    List {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Link a provider: shows a device code or opens the browser, and waits until linked.
    Link {
        /// Provider ID.
        id: String,
    },
    /// Unlink a provider and revoke its token at the provider.
    Unlink {
        /// Provider ID.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum WorkspaceToken {
    /// Create one; prints the EXTAUTH_URL/EXTAUTH_TOKEN lines for the workspace.
    Create {
        /// A name to recognise it by.
        name: String,
        /// Narrow it to these provider IDs (repeatable).
        #[arg(long = "provider", value_name = "ID")]
        providers: Vec<String>,
        /// Expiry, e.g. 7d or 12h; "never" for a token that does not expire. The default is the
        /// web form's.
        #[arg(long, default_value = "30d")]
        lifetime: String,
        /// Create it for another user (admins).
        #[arg(long, default_value = "me")]
        user: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List yours.
    List {
        #[arg(long, default_value = "me")]
        user: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Revoke one by ID.
    Revoke {
        /// Its ID (from `list`).
        id: String,
        #[arg(long, default_value = "me")]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum OAuth2App {
    /// Register an app; a confidential one gets its first client secret (printed once).
    Create {
        /// Its name, shown on the consent page.
        name: String,
        /// A redirect URI (repeatable; the first is Coder's `callback_url`).
        #[arg(long = "redirect-uri", value_name = "URI", required = true)]
        redirect_uris: Vec<String>,
        /// An icon URL.
        #[arg(long, default_value = "")]
        icon: String,
        /// A public client (native app, CLI, SPA): PKCE instead of a secret.
        #[arg(long)]
        public: bool,
        /// A scope it may ask for (repeatable; default: openid profile email offline_access
        /// user:read).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// A protected resource (its id) it may ask tokens for (repeatable; default: every
        /// registered one).
        #[arg(long = "resource", value_name = "ID")]
        resources: Vec<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List the registered apps.
    List {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Delete an app and end every token issued through it.
    Delete {
        /// Its client_id.
        id: String,
    },
    /// Client secrets of an app.
    #[command(subcommand)]
    Secret(OAuth2Secret),
    /// APIs and MCP servers behind the authorization server (protected resources).
    #[command(subcommand)]
    Resource(OAuth2Resource),
}

#[derive(Debug, Subcommand)]
enum OAuth2Resource {
    /// Register a resource: tokens for it carry its URL as audience and its scopes.
    Create {
        /// Its name, shown on the consent page.
        name: String,
        /// The URL its clients connect to (e.g. https://mcp.example.com/mcp).
        #[arg(long)]
        url: String,
        /// A scope it defines (repeatable).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List the registered resources.
    List {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Delete a resource: no new token is issued for it.
    Delete {
        /// Its id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum OAuth2Secret {
    /// Make a new client secret (printed once); the old ones keep working until deleted.
    Create {
        /// The app's client_id.
        app: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Delete a client secret and end every token issued under it.
    Delete {
        /// The app's client_id.
        app: String,
        /// The secret's id (from `GET …/secrets`).
        id: String,
    },
}

/// Output format of commands that print data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// A failed command: its message (stderr) and exit code.
struct Failure(String, u8);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure(e.to_string(), 1)
    }
}

type Outcome = Result<(), Failure>;

/// Runs the process's command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match run(cli.command, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message, code)) => {
            if !message.is_empty() {
                eprintln!("extauth: {message}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(command: Command, out: &mut dyn Write) -> Outcome {
    match command {
        Command::AccessToken(args) | Command::ExternalAuth(ExternalAuth::AccessToken(args)) => {
            access_token(args, out)
        }
        Command::ExternalAuth(ExternalAuth::List { output }) => list(output, out),
        Command::ExternalAuth(ExternalAuth::Link { id }) => link(&id, out),
        Command::ExternalAuth(ExternalAuth::Unlink { id }) => unlink(&id, out),
        Command::Login { url, token, device } => login(&url, token, device, out),
        Command::Logout => logout(out),
        Command::Whoami { output } => whoami(output, out),
        Command::WorkspaceToken(command) => workspace_token(command, out),
        Command::OAuth2App(command) => oauth2_app(command, out),
        Command::SetupGit { global } => setup_git::run(&workspace_client()?, global, out),
        Command::Publickey => gitssh::publickey(&workspace_client()?, out),
        Command::WaitForAuth { timeout } => wait_for_auth(&workspace_client()?, timeout, out),
        Command::Gitssh { args } => gitssh::run(&workspace_client()?, &args),
        Command::Exec {
            providers,
            apps,
            command,
        } => forge_cli::exec(&workspace_client()?, &providers, &apps, &command),
        Command::SetupCli { cli, provider, dir } => forge_cli::setup(
            &workspace_client()?,
            &cli,
            provider.as_deref(),
            dir.as_deref(),
            out,
        ),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "extauth", out);
            Ok(())
        }
    }
}

fn env_settings() -> Option<Result<Settings, Failure>> {
    let present = ["EXTAUTH_URL", "CODER_AGENT_URL"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    present.then(|| {
        Settings::from_env(|k| std::env::var(k).ok()).map_err(|e| Failure(e.to_string(), 3))
    })
}

/// The workspace's credentials (EXTAUTH_URL/EXTAUTH_TOKEN or Coder's), else the login.
fn workspace_client() -> Result<Client, Failure> {
    if let Some(settings) = env_settings() {
        return Ok(Client::new(settings?));
    }
    user_client()
}

/// The login's credential, else the workspace's variables (an API token there works too).
fn user_client() -> Result<Client, Failure> {
    if let Some(c) = credentials::load() {
        let c = fresh(c)?;
        let settings = Settings::new(&c.url, &c.token).map_err(|e| Failure(e.to_string(), 3))?;
        return Ok(Client::new(settings));
    }
    match env_settings() {
        Some(settings) => Ok(Client::new(settings?)),
        None => Err(Failure(
            "not configured: run `extauth login <broker-url>`, or set EXTAUTH_URL and EXTAUTH_TOKEN".to_owned(),
            3,
        )),
    }
}

fn print_json(out: &mut dyn Write, value: &Value) {
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Coder's contract: the token without a newline, exit 0; not linked: the URL, exit 1.
fn access_token(args: AccessTokenArgs, out: &mut dyn Write) -> Outcome {
    let client = workspace_client()?;
    let prefer = extauth_git_askpass::workspace::Prefer {
        account: args.account.as_deref(),
        schemes: None,
    };
    match client.external_auth_as(By::Id(&args.id), prefer, None)? {
        Lookup::NoMatch { message, detail } => Err(Failure(
            if detail.is_empty() {
                message
            } else {
                format!("{message} ({detail})")
            },
            1,
        )),
        Lookup::NotLinked(url) => {
            if args.output == Output::Json {
                print_json(out, &json!({ "url": url }));
            } else {
                let _ = write!(out, "{url}");
            }
            Err(Failure(String::new(), 1))
        }
        Lookup::Token(reply) => {
            if let Some(wanted) = args.account.as_deref() {
                // The broker falls back to the default account; asked by name, that is wrong.
                if !reply.account.eq_ignore_ascii_case(wanted) {
                    return Err(Failure(
                        format!(
                            "you have no {} account {wanted:?} linked (the default is {:?}); link it with \"Add another account\" on the provider's page",
                            args.id, reply.account
                        ),
                        1,
                    ));
                }
            }
            if let Some(path) = &args.extra {
                let mut value = Value::Object(reply.token_extra.clone());
                for part in path.split('.') {
                    value = match value {
                        Value::Object(mut map) => map.remove(part).unwrap_or(Value::Null),
                        Value::Array(mut items) => part
                            .parse::<usize>()
                            .ok()
                            .filter(|i| *i < items.len())
                            .map(|i| items.swap_remove(i))
                            .unwrap_or(Value::Null),
                        _ => Value::Null,
                    };
                }
                return match value {
                    Value::Null => Err(Failure(
                        format!("no extra property {path:?} found for the token"),
                        1,
                    )),
                    Value::String(s) => {
                        let _ = write!(out, "{s}");
                        Ok(())
                    }
                    other => {
                        let _ = write!(out, "{other}");
                        Ok(())
                    }
                };
            }
            if args.output == Output::Json {
                print_json(out, &serde_json::to_value(&reply).unwrap_or_default());
            } else {
                let _ = write!(out, "{}", reply.access_token.secret());
            }
            Ok(())
        }
    }
}

fn get_json(client: &Client, path: &str) -> Result<Value, Failure> {
    let (status, body) = client.send("GET", path, &[], None, None)?;
    if !(200..300).contains(&status) {
        return Err(api_error(status, &body).into());
    }
    serde_json::from_str(&body).map_err(|e| Failure(format!("unreadable answer: {e}"), 1))
}

fn list(output: Output, out: &mut dyn Write) -> Outcome {
    let client = user_client()?;
    let list = get_json(&client, "/api/v2/external-auth")?;
    if output == Output::Json {
        print_json(out, &list);
        return Ok(());
    }
    let empty = Vec::new();
    let links = list["links"].as_array().unwrap_or(&empty);
    let providers = list["providers"].as_array().unwrap_or(&empty);
    if providers.is_empty() {
        let _ = writeln!(
            out,
            "No providers are configured on {}.",
            client.settings().url
        );
        return Ok(());
    }
    let _ = writeln!(out, "{:<20} {:<18} STATUS", "ID", "TYPE");
    for p in providers {
        let id = p["id"].as_str().unwrap_or_default();
        let kind = p["type"].as_str().unwrap_or_default();
        let accounts: Vec<&Value> = links.iter().filter(|l| l["provider_id"] == id).collect();
        let status = |l: &Value| {
            if l["authenticated"] == true {
                match l["expires"].as_str() {
                    Some(at) => format!("linked (token until {at})"),
                    None => "linked".to_owned(),
                }
            } else {
                format!(
                    "link again: {}",
                    l["validate_error"].as_str().unwrap_or_default()
                )
            }
        };
        match accounts.as_slice() {
            [] => {
                let _ = writeln!(out, "{id:<20} {kind:<18} not linked");
            }
            // One account without a name: the one line of before.
            [only] if only["account"].as_str().unwrap_or_default().is_empty() => {
                let _ = writeln!(out, "{id:<20} {kind:<18} {}", status(only));
            }
            several => {
                for l in several {
                    let account = l["account"].as_str().filter(|a| !a.is_empty());
                    let mut name = account.unwrap_or("(unnamed)").to_owned();
                    if l["default"] == true {
                        name.push_str(" (default)");
                    }
                    let owners = l["owners"]
                        .as_array()
                        .map(|o| o.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                        .unwrap_or_default();
                    let routed = if owners.is_empty() {
                        String::new()
                    } else {
                        format!("; for {}", owners.join(", "))
                    };
                    let _ = writeln!(out, "{id:<20} {kind:<18} {} — {name}{routed}", status(l));
                }
            }
        }
    }
    Ok(())
}

fn link(id: &str, out: &mut dyn Write) -> Outcome {
    let client = user_client()?;
    let info = get_json(&client, &format!("/api/v2/external-auth/{id}"))?;
    if info["authenticated"] == true {
        let _ = writeln!(out, "{id} is already linked.");
        return Ok(());
    }
    if info["device"] == true {
        return link_with_device_code(&client, id, out);
    }
    let url = format!("{}/external-auth/{id}", client.settings().url);
    eprintln!("Open this page to link {id}:\n  {url}");
    open_browser(&url);
    let deadline = std::time::Instant::now() + client.settings().login_timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(Failure(format!("gave up waiting for {id} to be linked"), 1));
        }
        if let Lookup::Token(_) = client.external_auth(By::Id(id), Some(left))? {
            let _ = writeln!(out, "Linked {id}.");
            return Ok(());
        }
    }
}

fn link_with_device_code(client: &Client, id: &str, out: &mut dyn Write) -> Outcome {
    let path = format!("/api/v2/external-auth/{id}/device");
    let flow = get_json(client, &path)?;
    let code = flow["device_code"].as_str().unwrap_or_default().to_owned();
    let verify = flow["verification_uri_complete"]
        .as_str()
        .or(flow["verification_uri"].as_str())
        .unwrap_or_default();
    eprintln!(
        "Enter the code {} at:\n  {verify}",
        flow["user_code"].as_str().unwrap_or_default()
    );
    open_browser(verify);
    let mut interval = std::time::Duration::from_secs(flow["interval"].as_u64().unwrap_or(5));
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_secs(flow["expires_in"].as_u64().unwrap_or(900));
    while std::time::Instant::now() < deadline {
        std::thread::sleep(interval);
        let (status, body) = client.send(
            "POST",
            &path,
            &[],
            Some(&json!({ "device_code": code })),
            None,
        )?;
        if status == 204 {
            let _ = writeln!(out, "Linked {id}.");
            return Ok(());
        }
        let error = extauth_git_askpass::workspace::error_body(&body);
        match error.detail.as_str() {
            "authorization_pending" => {}
            "slow_down" => interval += std::time::Duration::from_secs(5),
            "expired_token" => {
                return Err(Failure(
                    "the code expired; run the command again".to_owned(),
                    1,
                ));
            }
            "access_denied" => {
                return Err(Failure("access was denied at the provider".to_owned(), 1));
            }
            _ => return Err(api_error(status, &body).into()),
        }
    }
    Err(Failure(
        "the code expired; run the command again".to_owned(),
        1,
    ))
}

/// The program that opens a page: `$BROWSER`, `open` on macOS, `xdg-open` with a display.
fn browser_program() -> Option<String> {
    match std::env::var("BROWSER").ok().filter(|b| !b.is_empty()) {
        Some(b) => Some(b),
        None if cfg!(target_os = "macos") => Some("open".to_owned()),
        None if std::env::var_os("DISPLAY").is_some()
            || std::env::var_os("WAYLAND_DISPLAY").is_some() =>
        {
            Some("xdg-open".to_owned())
        }
        None => None,
    }
}

/// Opens `url` in a browser; whether one was started.
fn open_browser(url: &str) -> bool {
    let Some(program) = browser_program() else {
        return false;
    };
    std::process::Command::new(program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// `extauth wait-for-auth`: until the workspace token's required providers are all linked,
/// listening on each missing one (the broker answers as soon as it is linked).
fn wait_for_auth(client: &Client, timeout: u64, out: &mut dyn Write) -> Outcome {
    let deadline =
        (timeout > 0).then(|| std::time::Instant::now() + std::time::Duration::from_secs(timeout));
    let mut told = false;
    loop {
        let (status, body) =
            client.send("GET", "/api/v2/workspaceagents/me/setup", &[], None, None)?;
        if status != 200 {
            return Err(api_error(status, &body).into());
        }
        let setup: Value = serde_json::from_str(&body).unwrap_or_default();
        let missing: Vec<(String, String)> = setup["required_providers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["linked"] != true)
            .map(|p| {
                (
                    p["id"].as_str().unwrap_or_default().to_owned(),
                    p["url"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if missing.is_empty() {
            let _ = writeln!(
                out,
                "Ready: every account this workspace requires is connected."
            );
            return Ok(());
        }
        if !told {
            let names: Vec<&str> = missing.iter().map(|(id, _)| id.as_str()).collect();
            eprintln!(
                "Waiting for {} to be connected: open {}",
                terminal_safe(&names.join(", ")),
                terminal_safe(setup["setup_url"].as_str().unwrap_or_default())
            );
            told = true;
        }
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(Failure(
                "gave up waiting; the accounts are still not all connected".to_owned(),
                1,
            ));
        }
        // The broker holds the request until the link arrives (or its listen timeout).
        let wait = left
            .unwrap_or(std::time::Duration::from_secs(300))
            .min(std::time::Duration::from_secs(300));
        match client.external_auth(By::Id(&missing[0].0), Some(wait)) {
            Ok(_) => {}
            Err(e) => {
                eprintln!("extauth: {e}; trying again");
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
        }
    }
}

fn unlink(id: &str, out: &mut dyn Write) -> Outcome {
    let client = user_client()?;
    let (status, body) = client.send(
        "DELETE",
        &format!("/api/v2/external-auth/{id}"),
        &[],
        None,
        None,
    )?;
    if status != 200 {
        return Err(api_error(status, &body).into());
    }
    let result: Value = serde_json::from_str(&body).unwrap_or_default();
    if result["token_revoked"] == true {
        let _ = writeln!(out, "Unlinked {id}; the token was revoked at the provider.");
    } else {
        let _ = writeln!(
            out,
            "Unlinked {id}; the token was not revoked at the provider: {}",
            result["token_revocation_error"]
                .as_str()
                .unwrap_or("unknown reason")
        );
    }
    Ok(())
}

/// The broker's built-in public app for this CLI (`oauth2::apps::CLI_APP` there).
const CLI_CLIENT_ID: &str = "extauth-cli";

/// `extauth login <url>`: with `--token`, that API token; otherwise the broker's device
/// authorization (a code to confirm in the browser, nothing to paste), or the paste-a-token page
/// of a broker without one.
fn login(url: &str, token: Option<String>, device: bool, out: &mut dyn Write) -> Outcome {
    let url = url.trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Failure(format!("{url:?} is not an http(s) URL"), 2));
    }
    let credential = match token {
        Some(token) => credentials::Credential {
            url: url.to_owned(),
            token,
            refresh_token: None,
            expires_at: None,
        },
        None => match browser_or_device_login(url, device)? {
            Some(credential) => credential,
            None => credentials::Credential {
                url: url.to_owned(),
                token: pasted_token(url)?,
                refresh_token: None,
                expires_at: None,
            },
        },
    };
    if credential.token.is_empty() {
        return Err(Failure("no token given".to_owned(), 2));
    }
    let client =
        Client::new(Settings::new(url, &credential.token).map_err(|e| Failure(e.to_string(), 3))?);
    let me = get_json(&client, "/api/v2/users/me")?;
    let stored = credentials::save(&credential)
        .map_err(|e| Failure(format!("cannot save the credential: {e}"), 1))?;
    let place = match stored {
        credentials::Stored::Keyring => "the OS keyring".to_owned(),
        credentials::Stored::File(path) => format!(
            "{} (mode 0600; no keyring service is running)",
            path.display()
        ),
    };
    let _ = writeln!(
        out,
        "Logged in to {url} as {}; credential kept in {place}.",
        me["username"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// The paste-a-token page, for a broker whose authorization server is off.
fn pasted_token(url: &str) -> Result<String, Failure> {
    let page = format!("{url}/cli-auth");
    eprintln!("Open this page, sign in, and paste the token it shows:\n  {page}");
    open_browser(&page);
    eprint!("Token: ");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure(e.to_string(), 1))?;
    Ok(line.trim().to_owned())
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// A credential from a token answer (the refresh token kept when the answer has none).
fn from_tokens(
    url: &str,
    answer: &Value,
    previous_refresh: Option<&str>,
) -> Option<credentials::Credential> {
    let token = answer["access_token"].as_str()?.to_owned();
    Some(credentials::Credential {
        url: url.to_owned(),
        token,
        refresh_token: answer["refresh_token"]
            .as_str()
            .or(previous_refresh)
            .map(str::to_owned),
        expires_at: answer["expires_in"].as_i64().map(|s| now_unix() + s),
    })
}

/// The scopes the CLI asks for: who the user is, a refresh token, and the whole API.
const CLI_SCOPE: &str = "openid offline_access all";

/// A browser on this machine when one can be opened and the broker's authorization server
/// answers, else the device authorization. `None`: the broker has neither (paste a token).
fn browser_or_device_login(
    url: &str,
    device: bool,
) -> Result<Option<credentials::Credential>, Failure> {
    if device || browser_program().is_none() {
        return device_login(url);
    }
    let client = Client::new(Settings::new(url, "").map_err(|e| Failure(e.to_string(), 3))?);
    let (status, _) = client.send(
        "GET",
        "/.well-known/oauth-authorization-server",
        &[],
        None,
        None,
    )?;
    if status != 200 {
        return device_login(url);
    }
    let pending = loopback_login::Pending::start(url).map_err(|e| Failure(e, 1))?;
    let page = pending.authorize_url(CLI_CLIENT_ID, CLI_SCOPE);
    eprintln!(
        "Opening your browser to sign in (or open this page yourself):\n  {}",
        terminal_safe(&page)
    );
    if !open_browser(&page) {
        return device_login(url);
    }
    let code = match pending.wait().map_err(|e| Failure(e, 1))? {
        loopback_login::Outcome::Code(code) => code,
        loopback_login::Outcome::Refused(why) => {
            return Err(Failure(
                format!("the sign-in was not completed: {}", terminal_safe(&why)),
                1,
            ));
        }
    };
    let (status, text) = client.post_form(
        "/oauth2/tokens",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", CLI_CLIENT_ID),
            ("redirect_uri", &pending.redirect_uri),
            ("code_verifier", &pending.verifier),
        ],
    )?;
    let answer: Value = serde_json::from_str(&text).unwrap_or_default();
    if status != 200 {
        return Err(Failure(
            format!(
                "the broker refused the code ({status}): {}",
                oauth_error(&answer)
            ),
            1,
        ));
    }
    from_tokens(url, &answer, None)
        .map(Some)
        .ok_or_else(|| Failure("the broker answered without a token".to_owned(), 1))
}

/// RFC 8628 against the broker: shows the code, opens the page, polls. `None` when the broker
/// has no device authorization (an older broker, or its authorization server is off).
fn device_login(url: &str) -> Result<Option<credentials::Credential>, Failure> {
    let client = Client::new(Settings::new(url, "").map_err(|e| Failure(e.to_string(), 3))?);
    let (status, text) = client.post_form(
        "/oauth2/device/authorize",
        &[("client_id", CLI_CLIENT_ID), ("scope", CLI_SCOPE)],
    )?;
    if status == 404 || (status == 401 && text.contains("invalid_client")) {
        return Ok(None);
    }
    let started: Value = serde_json::from_str(&text).unwrap_or_default();
    let (Some(device_code), Some(user_code)) = (
        started["device_code"].as_str(),
        started["user_code"].as_str(),
    ) else {
        return Err(Failure(
            format!(
                "the broker refused the device login ({status}): {}",
                oauth_error(&started)
            ),
            1,
        ));
    };
    let page = started["verification_uri_complete"]
        .as_str()
        .or(started["verification_uri"].as_str())
        .unwrap_or_default();
    eprintln!(
        "Confirm the code {} in your browser to sign in:\n  {}",
        terminal_safe(user_code),
        terminal_safe(page)
    );
    open_browser(page);
    let mut interval = started["interval"].as_u64().unwrap_or(5).max(1);
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_secs(started["expires_in"].as_u64().unwrap_or(600));
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_secs(interval));
        let (status, text) = client.post_form(
            "/oauth2/tokens",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
                ("client_id", CLI_CLIENT_ID),
            ],
        )?;
        let answer: Value = serde_json::from_str(&text).unwrap_or_default();
        if status == 200 {
            return from_tokens(url, &answer, None)
                .map(Some)
                .ok_or_else(|| Failure("the broker answered without a token".to_owned(), 1));
        }
        match answer["error"].as_str() {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += 5,
            Some("access_denied") => {
                return Err(Failure(
                    "the sign-in was denied in the browser".to_owned(),
                    1,
                ));
            }
            Some("expired_token") => break,
            _ => {
                return Err(Failure(
                    format!(
                        "the device login failed ({status}): {}",
                        oauth_error(&answer)
                    ),
                    1,
                ));
            }
        }
    }
    Err(Failure(
        "the code expired before it was confirmed; run `extauth login` again".to_owned(),
        1,
    ))
}

/// An OAuth error answer's code and description, and nothing else of it (an odd answer may
/// carry a token, which is never printed).
fn oauth_error(answer: &Value) -> String {
    let field = |name: &str| terminal_safe(answer[name].as_str().unwrap_or_default());
    match (field("error"), field("error_description")) {
        (code, _) if code.is_empty() => "an unexpected answer".to_owned(),
        (code, description) if description.is_empty() => code,
        (code, description) => format!("{code}: {description}"),
    }
}

/// A device login's access token, refreshed (and saved) when it expires within a minute.
fn fresh(credential: credentials::Credential) -> Result<credentials::Credential, Failure> {
    let (Some(refresh), Some(expires_at)) = (&credential.refresh_token, credential.expires_at)
    else {
        return Ok(credential);
    };
    if expires_at > now_unix() + 60 {
        return Ok(credential);
    }
    let client =
        Client::new(Settings::new(&credential.url, "").map_err(|e| Failure(e.to_string(), 3))?);
    let (status, text) = client.post_form(
        "/oauth2/tokens",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", CLI_CLIENT_ID),
        ],
    )?;
    let answer: Value = serde_json::from_str(&text).unwrap_or_default();
    let renewed = (status == 200)
        .then(|| from_tokens(&credential.url, &answer, Some(refresh)))
        .flatten()
        .ok_or_else(|| {
            Failure(
                format!(
                    "the sign-in has ended ({}); run `extauth login {}` again",
                    answer["error"].as_str().unwrap_or("refused"),
                    credential.url
                ),
                1,
            )
        })?;
    credentials::save(&renewed)
        .map_err(|e| Failure(format!("cannot save the refreshed credential: {e}"), 1))?;
    Ok(renewed)
}

/// `extauth logout`: a device login's refresh token is revoked at the broker, then forgotten.
fn logout(out: &mut dyn Write) -> Outcome {
    if let Some(credential) = credentials::load() {
        if let Some(refresh) = &credential.refresh_token {
            if let Ok(settings) = Settings::new(&credential.url, "") {
                let revoked = Client::new(settings).post_form(
                    "/oauth2/revoke",
                    &[("token", refresh), ("client_id", CLI_CLIENT_ID)],
                );
                if !matches!(revoked, Ok((200, _))) {
                    eprintln!(
                        "extauth: the broker could not be told; the sign-in ends when its refresh token expires"
                    );
                }
            }
        }
    }
    let existed = credentials::delete().map_err(|e| Failure(e.to_string(), 1))?;
    let _ = writeln!(
        out,
        "{}",
        if existed {
            "Logged out."
        } else {
            "Not logged in."
        }
    );
    Ok(())
}

fn whoami(output: Output, out: &mut dyn Write) -> Outcome {
    let client = user_client()?;
    let me = get_json(&client, "/api/v2/users/me")?;
    if output == Output::Json {
        print_json(out, &me);
    } else {
        let _ = writeln!(
            out,
            "{}{} on {}",
            me["username"].as_str().unwrap_or("?"),
            if me["is_admin"] == true {
                " (admin)"
            } else {
                ""
            },
            client.settings().url
        );
    }
    Ok(())
}

fn workspace_token(command: WorkspaceToken, out: &mut dyn Write) -> Outcome {
    let client = user_client()?;
    match command {
        WorkspaceToken::Create {
            name,
            providers,
            lifetime,
            user,
            output,
        } => {
            let body = json!({
                "name": name,
                "providers": (!providers.is_empty()).then_some(providers),
                // The API takes an absent lifetime as "never".
                "lifetime": (lifetime != "never").then_some(lifetime),
            });
            let (status, text) = client.send(
                "POST",
                &format!("/api/v2/users/{user}/workspace-tokens"),
                &[],
                Some(&body),
                None,
            )?;
            if status != 201 {
                return Err(api_error(status, &text).into());
            }
            let created: Value = serde_json::from_str(&text).unwrap_or_default();
            if output == Output::Json {
                print_json(out, &created);
            } else {
                let _ = writeln!(out, "export EXTAUTH_URL={}", client.settings().url);
                let _ = writeln!(
                    out,
                    "export EXTAUTH_TOKEN={}",
                    created["token"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        WorkspaceToken::List { user, output } => {
            let tokens = get_json(&client, &format!("/api/v2/users/{user}/workspace-tokens"))?;
            if output == Output::Json {
                print_json(out, &tokens);
                return Ok(());
            }
            let empty = Vec::new();
            let tokens = tokens.as_array().unwrap_or(&empty);
            if tokens.is_empty() {
                let _ = writeln!(
                    out,
                    "No workspace tokens; create one with `extauth workspace-token create <name>`."
                );
                return Ok(());
            }
            let _ = writeln!(
                out,
                "{:<18} {:<24} {:<20} EXPIRES",
                "ID", "NAME", "PROVIDERS"
            );
            for t in tokens {
                let providers = t["providers"]
                    .as_array()
                    .map(|p| {
                        p.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_else(|| "all".to_owned());
                // Names are the users' own words: escaped, never written raw to a terminal.
                let shown = |v: &Value| terminal_safe(v.as_str().unwrap_or_default());
                let _ = writeln!(
                    out,
                    "{:<18} {:<24} {:<20} {}",
                    shown(&t["id"]),
                    shown(&t["name"]),
                    terminal_safe(&providers),
                    t["expires_at"]
                        .as_str()
                        .map_or_else(|| "never".to_owned(), terminal_safe)
                );
            }
            Ok(())
        }
        WorkspaceToken::Revoke { id, user } => {
            let (status, text) = client.send(
                "DELETE",
                &format!("/api/v2/users/{user}/workspace-tokens/{id}"),
                &[],
                None,
                None,
            )?;
            if status != 204 {
                return Err(api_error(status, &text).into());
            }
            let _ = writeln!(out, "Revoked {id}.");
            Ok(())
        }
    }
}

/// A JSON array of strings as one line, separated by spaces.
fn words(list: &Value) -> String {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn oauth2_app(command: OAuth2App, out: &mut dyn Write) -> Outcome {
    let client = user_client()?;
    let send =
        |method: &str, path: &str, body: Option<&Value>, expected: u16| -> Result<Value, Failure> {
            let (status, text) = client.send(method, path, &[], body, None)?;
            if status != expected {
                return Err(api_error(status, &text).into());
            }
            Ok(serde_json::from_str(&text).unwrap_or_default())
        };
    let new_secret = |app: &str| {
        send(
            "POST",
            &format!("/api/v2/oauth2-provider/apps/{app}/secrets"),
            None,
            201,
        )
    };
    match command {
        OAuth2App::Create {
            name,
            redirect_uris,
            icon,
            public,
            scopes,
            resources,
            output,
        } => {
            let body = json!({
                "name": name,
                "icon": icon,
                "redirect_uris": redirect_uris,
                "client_type": if public { "public" } else { "confidential" },
                "scopes": (!scopes.is_empty()).then_some(scopes),
                "resources": resources,
            });
            let mut app = send("POST", "/api/v2/oauth2-provider/apps", Some(&body), 201)?;
            let id = app["id"].as_str().unwrap_or_default().to_owned();
            if !public {
                app["client_secret"] = new_secret(&id)?["client_secret_full"].clone();
            }
            if output == Output::Json {
                print_json(out, &app);
                return Ok(());
            }
            let _ = writeln!(out, "client_id:     {}", terminal_safe(&id));
            if let Some(secret) = app["client_secret"].as_str() {
                let _ = writeln!(out, "client_secret: {secret}");
                let _ = writeln!(out, "(the secret is shown only this once)");
            }
            let _ = writeln!(
                out,
                "discovery:     {}/.well-known/openid-configuration",
                client.settings().url.trim_end_matches('/')
            );
            Ok(())
        }
        OAuth2App::List { output } => {
            let apps = get_json(&client, "/api/v2/oauth2-provider/apps")?;
            if output == Output::Json {
                print_json(out, &apps);
                return Ok(());
            }
            let empty = Vec::new();
            let apps = apps.as_array().unwrap_or(&empty);
            if apps.is_empty() {
                let _ = writeln!(
                    out,
                    "No apps; register one with `extauth oauth2-app create <name> --redirect-uri <uri>`."
                );
                return Ok(());
            }
            let _ = writeln!(
                out,
                "{:<34} {:<24} {:<13} REDIRECT URIS",
                "CLIENT ID", "NAME", "TYPE"
            );
            for app in apps {
                let shown = |v: &Value| terminal_safe(v.as_str().unwrap_or_default());
                let uris = words(&app["redirect_uris"]);
                let _ = writeln!(
                    out,
                    "{:<34} {:<24} {:<13} {}",
                    shown(&app["id"]),
                    shown(&app["name"]),
                    shown(&app["client_type"]),
                    terminal_safe(&uris)
                );
            }
            Ok(())
        }
        OAuth2App::Delete { id } => {
            send(
                "DELETE",
                &format!("/api/v2/oauth2-provider/apps/{id}"),
                None,
                204,
            )?;
            let _ = writeln!(
                out,
                "Deleted app {}; its tokens no longer work.",
                terminal_safe(&id)
            );
            Ok(())
        }
        OAuth2App::Secret(OAuth2Secret::Create { app, output }) => {
            let secret = new_secret(&app)?;
            if output == Output::Json {
                print_json(out, &secret);
            } else {
                let _ = writeln!(
                    out,
                    "{}",
                    secret["client_secret_full"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        OAuth2App::Resource(OAuth2Resource::Create {
            name,
            url,
            scopes,
            output,
        }) => {
            let body = json!({"name": name, "url": url, "scopes": scopes});
            let resource = send(
                "POST",
                "/api/v2/oauth2-provider/resources",
                Some(&body),
                201,
            )?;
            if output == Output::Json {
                print_json(out, &resource);
                return Ok(());
            }
            let shown = |v: &Value| terminal_safe(v.as_str().unwrap_or_default());
            let _ = writeln!(out, "id:       {}", shown(&resource["id"]));
            let _ = writeln!(out, "resource: {}", shown(&resource["url"]));
            let _ = writeln!(out, "metadata: {}", shown(&resource["metadata_url"]));
            let _ = writeln!(
                out,
                "Its server answers a 401 with: WWW-Authenticate: Bearer resource_metadata=\"{}\"",
                shown(&resource["metadata_url"])
            );
            let _ = writeln!(
                out,
                "and checks tokens against {}/oauth2/jwks (aud = the resource URL).",
                client.settings().url.trim_end_matches('/')
            );
            Ok(())
        }
        OAuth2App::Resource(OAuth2Resource::List { output }) => {
            let list = get_json(&client, "/api/v2/oauth2-provider/resources")?;
            if output == Output::Json {
                print_json(out, &list);
                return Ok(());
            }
            let empty = Vec::new();
            let list = list.as_array().unwrap_or(&empty);
            if list.is_empty() {
                let _ = writeln!(
                    out,
                    "No resources; register one with `extauth oauth2-app resource create <name> --url <url>`."
                );
                return Ok(());
            }
            let _ = writeln!(out, "{:<18} {:<24} {:<40} SCOPES", "ID", "NAME", "URL");
            for r in list {
                let shown = |v: &Value| terminal_safe(v.as_str().unwrap_or_default());
                let scopes = words(&r["scopes"]);
                let _ = writeln!(
                    out,
                    "{:<18} {:<24} {:<40} {}",
                    shown(&r["id"]),
                    shown(&r["name"]),
                    shown(&r["url"]),
                    terminal_safe(&scopes)
                );
            }
            Ok(())
        }
        OAuth2App::Resource(OAuth2Resource::Delete { id }) => {
            send(
                "DELETE",
                &format!("/api/v2/oauth2-provider/resources/{id}"),
                None,
                204,
            )?;
            let _ = writeln!(
                out,
                "Deleted resource {}; no new token is issued for it.",
                terminal_safe(&id)
            );
            Ok(())
        }
        OAuth2App::Secret(OAuth2Secret::Delete { app, id }) => {
            send(
                "DELETE",
                &format!("/api/v2/oauth2-provider/apps/{app}/secrets/{id}"),
                None,
                204,
            )?;
            let _ = writeln!(
                out,
                "Deleted secret {}; tokens issued under it no longer work.",
                terminal_safe(&id)
            );
            Ok(())
        }
    }
}
