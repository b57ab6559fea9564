//! `git-credential-extauth`: the credential helper (`get`, `store`, `erase`) and the
//! `GIT_ASKPASS` mode, over the broker client.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use extauth_providers::wire::ExternalAuthResponse;

use crate::prompt::{self, Asked};
use crate::protocol::{Answer, Request, Scheme};
use crate::workspace::{By, Client, Lookup, Prefer, Settings};

/// Where the helper reads its environment from (the process, or a test's map).
pub trait Environment {
    /// A variable.
    fn var(&self, name: &str) -> Option<String>;
    /// Whether a terminal is there to wait with the user.
    fn has_terminal(&self) -> bool;
}

/// The real process environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn has_terminal(&self) -> bool {
        // git gives helpers pipes for stdin and stdout; the controlling terminal is what counts.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .is_ok()
    }
}

const USAGE: &str = "usage: git-credential-extauth get|store|erase   (git credential helper)
       git-credential-extauth '<git prompt>'      (as GIT_ASKPASS)

Configure git with `extauth setup-git`, or `git config --global credential.helper extauth`.
Needs EXTAUTH_URL and EXTAUTH_TOKEN (or CODER_AGENT_URL and CODER_AGENT_TOKEN).";

/// Runs the helper with `args` (without the program name).
pub fn run(
    args: &[String],
    env: &dyn Environment,
    stdin: impl std::io::BufRead,
    stdout: &mut dyn Write,
) -> ExitCode {
    if prompt::is_askpass(args) {
        return askpass(
            args.first().map(String::as_str).unwrap_or_default(),
            env,
            stdout,
        );
    }
    match args.first().map(String::as_str) {
        Some("get") => get(env, stdin, stdout),
        Some("erase") => erase(env, stdin),
        // Tokens live in the broker: nothing to store here. Read the request so git is not
        // left writing into a closed pipe.
        Some("store") => {
            let _ = Request::read(stdin);
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            let _ = writeln!(
                stdout,
                "git-credential-extauth {}",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Some("--help" | "-h") => {
            let _ = writeln!(stdout, "{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn client(env: &dyn Environment) -> Result<Client, ExitCode> {
    match Settings::from_env(|k| env.var(k)) {
        Ok(settings) => Ok(Client::new(settings)),
        Err(e) => {
            eprintln!("git-credential-extauth: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn get(env: &dyn Environment, stdin: impl std::io::BufRead, stdout: &mut dyn Write) -> ExitCode {
    let request = match Request::read(stdin) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("git-credential-extauth: {e}");
            return ExitCode::from(1);
        }
    };
    let Some(url) = request.match_url() else {
        return ExitCode::SUCCESS; // Not an HTTP credential: let git ask elsewhere.
    };
    let client = match client(env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // `https://work@github.com/…`: git passes the URL's user; it names the account to use
    // when several are linked (as Git Credential Manager reads it).
    let schemes = request.offered_schemes();
    let prefer = Prefer {
        account: request.username.as_deref(),
        schemes: schemes.as_deref(),
    };
    let reply = match token_for(&client, env, &url, prefer) {
        Ok(Some(reply)) => reply,
        Ok(None) => return ExitCode::SUCCESS,
        Err(code) => return code,
    };
    if !reply.notice.is_empty() {
        // Said before git tries, so that a 403 that follows is explained.
        eprintln!("extauth: {}", reply.notice);
    }
    // The provider, and the account when named: what `erase` reports refused.
    let state_value = if reply.account.is_empty() {
        reply.provider_id.clone()
    } else {
        format!("{}/{}", reply.provider_id, reply.account)
    };
    let answer = Answer {
        username: reply.username.secret(),
        password: reply.password.secret(),
        expiry_unix: reply.expires_at.map(|t| t.unix_timestamp()),
        scheme: Scheme::choose(&request, &reply.git_auth),
        state_provider: Some(state_value.as_str())
            .filter(|id| !id.is_empty() && request.can("state")),
    };
    let _ = stdout.write_all(answer.lines().as_bytes());
    ExitCode::SUCCESS
}

/// The token for `url`: asked once; when not linked, the user is sent to link it and, if
/// someone is there to do so, waited for.
fn token_for(
    client: &Client,
    env: &dyn Environment,
    url: &str,
    prefer: Prefer<'_>,
) -> Result<Option<ExternalAuthResponse>, ExitCode> {
    match client.external_auth_as(By::Match(url), prefer, None) {
        Ok(Lookup::Token(reply)) => Ok(Some(*reply)),
        // No provider for this host: print nothing, so git goes on to its next helper or prompt.
        Ok(Lookup::NoMatch { .. }) => Ok(None),
        Ok(Lookup::NotLinked(link)) => Ok(wait_for_link(client, env, url, &link)),
        Err(e) => {
            eprintln!("git-credential-extauth: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn wait_for_link(
    client: &Client,
    env: &dyn Environment,
    url: &str,
    link: &str,
) -> Option<ExternalAuthResponse> {
    eprintln!("extauth: {url} needs your account connected. Open:\n  {link}");
    let prompts_off = env
        .var("GIT_TERMINAL_PROMPT")
        .is_some_and(|v| v == "0" || v.eq_ignore_ascii_case("false"));
    if prompts_off || !env.has_terminal() {
        eprintln!(
            "extauth: not waiting (no terminal, or GIT_TERMINAL_PROMPT=0); run git again once connected"
        );
        return None;
    }
    if open_browser(env, link) {
        eprintln!("extauth: opened your browser.");
    }
    let timeout = client.settings().login_timeout;
    eprintln!(
        "extauth: waiting up to {} for the connection (Ctrl-C to stop)…",
        human(timeout)
    );
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "extauth: gave up waiting after {}; run git again once connected",
                human(timeout)
            );
            return None;
        }
        match client.external_auth(By::Match(url), Some(left)) {
            Ok(Lookup::Token(reply)) => {
                eprintln!("extauth: connected.");
                return Some(*reply);
            }
            Ok(Lookup::NotLinked(_)) => {}
            Ok(Lookup::NoMatch { .. }) => return None,
            Err(e) => {
                eprintln!("extauth: {e}; retrying");
                std::thread::sleep(Duration::from_secs(1).min(left));
            }
        }
    }
}

/// Opens `url` in a browser when one can be opened here (`$BROWSER`, or a desktop session).
fn open_browser(env: &dyn Environment, url: &str) -> bool {
    let program = match env.var("BROWSER").filter(|b| !b.is_empty()) {
        Some(browser) => browser,
        None if cfg!(target_os = "macos") => "open".to_owned(),
        None if env.var("DISPLAY").is_some() || env.var("WAYLAND_DISPLAY").is_some() => {
            "xdg-open".to_owned()
        }
        None => return false,
    };
    std::process::Command::new(program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

fn erase(env: &dyn Environment, stdin: impl std::io::BufRead) -> ExitCode {
    let Ok(request) = Request::read(stdin) else {
        return ExitCode::SUCCESS;
    };
    let Some(url) = request.match_url() else {
        return ExitCode::SUCCESS;
    };
    let client = match client(env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // git hands back the state[] of our answer: the exact provider whose token was refused,
    // even when several could match the URL.
    let ours = request
        .our_provider()
        .map(|s| s.split_once('/').unwrap_or((s, "")));
    let (by, account) = match ours {
        Some((id, account)) => (By::Id(id), Some(account)),
        // Not the request's username: after our classic answer that is the token itself.
        None => (By::Match(&url), None),
    };
    if let Err(e) = client.rejected_as(by, account) {
        eprintln!("git-credential-extauth: {e}");
    }
    ExitCode::SUCCESS
}

/// `GIT_ASKPASS` mode: Coder's output contract, one line on stdout.
fn askpass(prompt_text: &str, env: &dyn Environment, stdout: &mut dyn Write) -> ExitCode {
    let parsed = match prompt::parse(prompt_text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("git-credential-extauth: parse prompt: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match client(env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let reply = match client.external_auth(By::Match(&parsed.url), None) {
        Ok(Lookup::Token(reply)) => *reply,
        Ok(Lookup::NoMatch { message, detail }) => {
            eprintln!(
                "extauth was unable to handle this git request; git's default behaviour is used instead.\n{message}\n{detail}"
            );
            return ExitCode::from(1);
        }
        Ok(Lookup::NotLinked(link)) => match wait_for_link(&client, env, &parsed.url, &link) {
            Some(reply) => reply,
            None => return ExitCode::from(1),
        },
        Err(e) => {
            eprintln!("git-credential-extauth: {e}");
            return ExitCode::from(1);
        }
    };
    if !reply.notice.is_empty() {
        eprintln!("extauth: {}", reply.notice);
    }
    let line = prompt::answer(
        parsed.asked,
        reply.username.secret(),
        reply.password.secret(),
    );
    if parsed.asked == Asked::Username && line.is_empty() {
        return ExitCode::from(1);
    }
    let _ = writeln!(stdout, "{line}");
    ExitCode::SUCCESS
}
