//! Harness for extauth's end-to-end tests: starts real parts on loopback — the broker binary,
//! `oidc-provider` (npm) as the upstream forge — and stops each by its pid when dropped.
//!
//! Binaries are taken from the cargo target directory (`tests/run` builds them first); the IdP
//! from `tests/idp` (`tests/run` installs its lock-pinned packages). A missing part fails the
//! test with what to do, never skips it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

pub mod database;
pub mod git_server;

pub use database::TestDatabase;

/// Runs `git` in `dir` with a clean configuration; panics with its output when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The cargo target profile directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // Tests live in target/<profile>/deps/, binaries (like the perf tools) in target/<profile>/.
    let dir = exe.parent().unwrap();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary; panics with the fix when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with ./tests/run (it builds the binaries first), or `cargo build --bins`",
        path.display()
    );
    path
}

/// Sends `request` and reads its answer as JSON, whatever the status.
pub async fn answer(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// The `p` quantile (0.0–1.0) of sorted samples, nearest rank; NaN when there are none. One
/// definition, so every benchmark's p50 and p99 mean the same thing.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A free TCP port on 127.0.0.1 for a server a test starts later (its IdP client must know the
/// port first). Picked below the kernel's ephemeral range: ports there are handed to every
/// `bind(0)` and outgoing connection on the machine, and one of those could take the port
/// between this check and the server's own bind (seen once under load). Never the same port
/// twice in one process.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};

    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if ephemeral_low > LOWEST + 1000 {
        let span = u64::from(ephemeral_low - LOWEST);
        let random = std::collections::hash_map::RandomState::new();
        for attempt in 0u64..1000 {
            let mut hasher = random.build_hasher();
            hasher.write_u64(attempt);
            hasher.write_u32(std::process::id());
            let port = LOWEST + u16::try_from(hasher.finish() % span).unwrap_or(0);
            let mut given = GIVEN.lock().unwrap();
            if given.contains(&port) {
                continue;
            }
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process, killed when dropped. Its stdout lines arrive on a channel.
pub struct Process {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Process {
    fn spawn(name: &str, command: Command) -> Self {
        Self::spawn_with_stderr(name, command, Stdio::inherit())
    }

    fn spawn_with_stderr(name: &str, mut command: Command, stderr: Stdio) -> Self {
        command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// The next stdout line that satisfies `pick`, within `timeout`.
    pub fn wait_line(&mut self, timeout: Duration, pick: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pick(&line) => return line,
                Ok(_) => {}
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    // What the process was doing, to tell a hang from slowness.
                    let pid = self.child.id();
                    let proc = |f: &str| {
                        std::fs::read_to_string(format!("/proc/{pid}/{f}"))
                            .unwrap_or_default()
                            .trim()
                            .to_owned()
                    };
                    panic!(
                        "{} did not print the expected line within {timeout:?} (exit status: {status:?}; wchan {:?}; stat {:?}; threads {:?})",
                        self.name,
                        proc("wchan"),
                        proc("stat"),
                        std::fs::read_dir(format!("/proc/{pid}/task"))
                            .map(|d| d
                                .flatten()
                                .map(|t| {
                                    let read = |f: &str| {
                                        std::fs::read_to_string(t.path().join(f))
                                            .unwrap_or_default()
                                            .trim()
                                            .to_owned()
                                    };
                                    format!("{}:{}", read("comm"), read("wchan"))
                                })
                                .collect::<Vec<_>>())
                            .unwrap_or_default(),
                    );
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// SIGKILL, as a crash or an OOM kill would end it; waits until it is gone.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `oidc-provider` serving as a forge / IdP.
pub struct Idp {
    /// Its issuer URL, `http://127.0.0.1:<port>`.
    pub issuer: String,
    _process: Process,
}

impl Idp {
    /// Starts the IdP with `config` (`{"clients": [...], "accessTokenTtl": …}`).
    pub fn start(config: Value) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("idp");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "the test IdP is not installed: run ./tests/run, or `npm ci --prefix tests/idp`"
        );
        let mut command = Command::new("node");
        command
            .arg(dir.join("idp.mjs"))
            .env("IDP_CONFIG", config.to_string())
            .current_dir(&dir);
        let mut process = Process::spawn("oidc-provider", command);
        let line = process.wait_line(Duration::from_secs(30), |l| l.starts_with('{'));
        let issuer = serde_json::from_str::<Value>(&line).unwrap()["issuer"]
            .as_str()
            .unwrap()
            .to_owned();
        Self {
            issuer,
            _process: process,
        }
    }

    /// Installs a fault in front of `path` (see `idp.mjs`): e.g.
    /// `{"path": "/token", "mode": "status", "status": 500}`.
    pub async fn fault(&self, fault: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/test/faults", self.issuer))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Removes every fault.
    pub async fn clear_faults(&self) {
        reqwest::Client::new()
            .delete(format!("{}/test/faults", self.issuer))
            .send()
            .await
            .unwrap();
    }

    /// `{"requests": {path: n}, "grants": {grant_type: n}}` counted at the IdP.
    pub async fn counters(&self) -> Value {
        reqwest::Client::new()
            .get(format!("{}/test/counters", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Refresh grants the IdP has served.
    pub async fn refreshes(&self) -> u64 {
        self.counters().await["grants"]["refresh_token"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Requests that reached `path` (after faults).
    pub async fn requests(&self, path: &str) -> u64 {
        self.counters().await["requests"][path]
            .as_u64()
            .unwrap_or(0)
    }

    /// Requests to `path` that a fault caught (and answered, delayed or dropped).
    pub async fn faulted(&self, path: &str) -> u64 {
        self.counters().await["faulted"][path].as_u64().unwrap_or(0)
    }

    /// Changes the IdP's test settings (`/test/config` in `idp.mjs`).
    async fn configure(&self, settings: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/test/config", self.issuer))
            .json(&settings)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Which account the next login at the IdP signs in as.
    pub async fn set_account(&self, account: &str) {
        self.configure(json!({ "account": account })).await;
    }

    /// Claims every account reports from now on, over its usual ones (`{}` resets).
    pub async fn set_claims(&self, claims: Value) {
        self.configure(json!({ "claims": claims })).await;
    }

    /// A back-channel logout token signed by the IdP.
    pub async fn logout_token(&self, claims: Value) -> String {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/test/logout-token", self.issuer))
            .json(&claims)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["logout_token"].as_str().unwrap().to_owned()
    }

    /// Lifetime of access tokens issued from now on.
    pub async fn set_access_token_ttl(&self, seconds: u64) {
        self.configure(json!({ "accessTokenTtl": seconds })).await;
    }

    /// Approves a device code as a person would at the IdP: code page, confirm, login, consent.
    pub async fn approve_device(&self, user_code: &str) {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::limited(20))
            .build()
            .unwrap();
        let xsrf = |html: &str| {
            regex::Regex::new(r#"name="xsrf" value="([^"]+)""#)
                .unwrap()
                .captures(html)
                .unwrap()[1]
                .to_owned()
        };
        let page = client
            .get(format!("{}/device", self.issuer))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let confirm = client
            .post(format!("{}/device", self.issuer))
            .form(&[("xsrf", xsrf(&page).as_str()), ("user_code", user_code)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let done = client
            .post(format!("{}/device", self.issuer))
            .form(&[
                ("xsrf", xsrf(&confirm).as_str()),
                ("user_code", user_code),
                ("confirm", "yes"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), reqwest::StatusCode::OK);
    }

    /// RFC 7662 introspection of `token` with the given client's credentials.
    pub async fn introspect(&self, client_id: &str, client_secret: &str, token: &str) -> Value {
        reqwest::Client::new()
            .post(format!("{}/token/introspection", self.issuer))
            .basic_auth(client_id, Some(client_secret))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The variables of provider number `n`: a generic OAuth2 provider `id` on the test IdP
/// (`issuer`), with that client, validated at `/me`, revoked at `/token/revocation`, matching
/// `http(s)://<host>/…`.
pub fn provider_env(
    n: usize,
    id: &str,
    issuer: &str,
    client_id: &str,
    secret: &str,
    host: &str,
) -> Vec<(String, String)> {
    let key = |k: &str| format!("CODER_EXTERNAL_AUTH_{n}_{k}");
    vec![
        (key("ID"), id.to_owned()),
        (key("TYPE"), "forge".to_owned()),
        (key("CLIENT_ID"), client_id.to_owned()),
        (key("CLIENT_SECRET"), secret.to_owned()),
        (key("AUTH_URL"), format!("{issuer}/auth")),
        (key("TOKEN_URL"), format!("{issuer}/token")),
        (key("VALIDATE_URL"), format!("{issuer}/me")),
        (key("REVOKE_URL"), format!("{issuer}/token/revocation")),
        (
            key("REGEX"),
            format!(r"^(https?://)?{}(/.*)?$", regex::escape(host)),
        ),
        (key("SCOPES"), "openid".to_owned()),
    ]
}

/// Starts a workspace lookup with `listen` in the background (`query` without `listen`): its
/// answer and when it arrived.
pub fn spawn_listen(
    broker_url: &str,
    token: &str,
    query: &str,
) -> tokio::task::JoinHandle<(Value, std::time::Instant)> {
    let url = format!("{broker_url}/api/v2/workspaceagents/me/external-auth?{query}&listen");
    let token = token.to_owned();
    tokio::spawn(async move {
        let reply: Value = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (reply, std::time::Instant::now())
    })
}

/// A client registration for the IdP.
pub fn client(id: &str, secret: &str, redirect_uris: &[String], device: bool) -> Value {
    if device {
        json!({
            "client_id": id, "client_secret": secret,
            "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
            "response_types": [], "redirect_uris": [],
            "token_endpoint_auth_method": "client_secret_post",
        })
    } else {
        json!({
            "client_id": id, "client_secret": secret,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "redirect_uris": redirect_uris,
            "token_endpoint_auth_method": "client_secret_basic",
        })
    }
}

/// A running broker.
pub struct Broker {
    /// Its access URL without trailing slash, `http://127.0.0.1:<port>`.
    pub url: String,
    /// The one-time admin sign-in link it printed.
    pub login_link: String,
    session: std::sync::Mutex<Option<String>>,
    process: Process,
}

impl Broker {
    /// Starts `extauth-broker --dev` on `port` with `env` (provider settings etc.) and its
    /// store in `data_dir`; waits until it answers.
    pub fn start(port: u16, data_dir: &Path, env: &[(String, String)]) -> Self {
        let process = Self::spawn(port, data_dir, env);
        Self::ready(port, process)
    }

    /// Starts like [`Broker::start`], its log (stderr) written to `log` for the test to read.
    pub fn start_logging_to(
        port: u16,
        data_dir: &Path,
        env: &[(String, String)],
        log: &Path,
    ) -> Self {
        let command = Self::command(port, data_dir, env);
        let file = std::fs::File::create(log).unwrap();
        Self::ready(
            port,
            Process::spawn_with_stderr("extauth-broker", command, Stdio::from(file)),
        )
    }

    /// Starts a broker with a command of the test's own (e.g. `podman run` of the image) that
    /// serves on `port` in `--dev` mode; waits until it answers.
    pub fn start_with(port: u16, name: &str, command: Command) -> Self {
        Self::ready(port, Process::spawn(name, command))
    }

    /// Spawns without waiting (for tests of start-up failures).
    pub fn spawn(port: u16, data_dir: &Path, env: &[(String, String)]) -> Process {
        Process::spawn("extauth-broker", Self::command(port, data_dir, env))
    }

    fn command(port: u16, data_dir: &Path, env: &[(String, String)]) -> Command {
        let url = format!("http://127.0.0.1:{port}");
        let mut command = Command::new(binary("extauth-broker"));
        command
            .arg("--dev")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CODER_HTTP_ADDRESS", format!("127.0.0.1:{port}"))
            .env("CODER_ACCESS_URL", &url)
            .env("EXTAUTH_DATA_DIR", data_dir)
            .env("EXTAUTH_LOG", "warn,extauth_broker=info")
            .envs(env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn ready(port: u16, mut process: Process) -> Self {
        let line = process.wait_line(Duration::from_secs(30), |l| {
            l.starts_with("Sign in as the local admin: ")
        });
        let login_link = line
            .trim_start_matches("Sign in as the local admin: ")
            .to_owned();
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self {
                    url,
                    login_link,
                    session: std::sync::Mutex::new(None),
                    process,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the broker did not accept connections on port {port}");
    }

    /// Stops it with SIGTERM; whether it shut down cleanly.
    pub fn stop(mut self) -> bool {
        self.process.terminate()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Waits for it to exit after something else stopped it; its exit status.
    pub fn wait_exit(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// Kills it with SIGKILL, mid-work.
    pub fn kill_hard(mut self) {
        self.process.kill_hard();
    }

    /// The admin's session cookie (`extauth_session=…`). The one-time link is redeemed on the
    /// first call; later calls reuse the session.
    pub async fn session_cookie(&self) -> String {
        if let Some(cookie) = self.session.lock().unwrap().clone() {
            return cookie;
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let response = client.get(&self.login_link).send().await.unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::SEE_OTHER,
            "dev sign-in failed"
        );
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .find(|c| c.starts_with("extauth_session="))
            .expect("the sign-in sets the session cookie");
        *self.session.lock().unwrap() = Some(cookie.clone());
        cookie
    }

    /// A browser-like client (cookie jar, follows redirects) signed in as the admin, and the
    /// CSRF token of its session.
    pub async fn admin(&self) -> (reqwest::Client, String) {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let url: reqwest::Url = self.url.parse().unwrap();
        jar.add_cookie_str(&format!("{}; Path=/", self.session_cookie().await), &url);
        let client = reqwest::Client::builder()
            .cookie_provider(jar)
            .redirect(reqwest::redirect::Policy::limited(20))
            .build()
            .unwrap();
        let csrf = csrf_of(
            &client
                .get(format!("{}/", self.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
        (client, csrf)
    }
}

impl Broker {
    /// Walks the whole browser flow with a signed-in `client`: broker page → IdP login and
    /// consent → callback → the broker's "Connected" page.
    pub async fn link(&self, client: &reqwest::Client, id: &str) {
        let response = client
            .get(format!("{}/external-auth/{id}", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::OK,
            "final URL {}",
            response.url()
        );
        assert_eq!(
            response.url().as_str(),
            format!("{}/external-auth/{id}?redirected=true", self.url)
        );
        let page = response.text().await.unwrap();
        assert!(page.contains("Connected."), "{page}");
    }

    /// The next line the broker prints (stdout) that `pick` accepts, within `timeout`.
    pub fn output_line(&mut self, timeout: Duration, pick: impl Fn(&str) -> bool) -> String {
        self.process.wait_line(timeout, pick)
    }

    /// Presses Connect on the demo forge (`--demo`) and allows on its consent page; the
    /// consent page's text, and the page the browser lands on after.
    pub async fn connect_demo(&self, client: &reqwest::Client) -> (String, reqwest::Response) {
        let consent = client
            .get(format!("{}/external-auth/demo", self.url))
            .send()
            .await
            .unwrap();
        let consent_url = consent.url().clone();
        let page = consent.text().await.unwrap();
        let field = |name: &str| {
            let marker = format!("name=\"{name}\" value=\"");
            let start = page.find(&marker).unwrap() + marker.len();
            let value = &page[start..];
            value[..value.find('"').unwrap()]
                .replace("&#x2f;", "/")
                .replace("&#x3a;", ":")
                .replace("&amp;", "&")
                .replace("&#x3d;", "=")
                .replace("&#x3f;", "?")
        };
        let landed = client
            .post(consent_url)
            .form(&[
                ("client_id", field("client_id")),
                ("redirect_uri", field("redirect_uri")),
                ("state", field("state")),
                ("decision", "allow".to_owned()),
            ])
            .send()
            .await
            .unwrap();
        (page, landed)
    }

    /// Creates a workspace token for `user` through the API.
    pub async fn workspace_token(
        &self,
        client: &reqwest::Client,
        csrf: &str,
        user: &str,
        body: Value,
    ) -> String {
        let response = client
            .post(format!("{}/api/v2/users/{user}/workspace-tokens", self.url))
            .header("X-CSRF-Token", csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
        response.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Its Prometheus metrics page.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The workspace endpoint with `query`, as a workspace holding `token` calls it.
    pub async fn lookup(&self, token: &str, query: &str) -> (reqwest::StatusCode, Value) {
        let response = reqwest::Client::new()
            .get(format!(
                "{}/api/v2/workspaceagents/me/external-auth?{query}",
                self.url
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

/// The CSRF token in a page's forms.
pub fn csrf_of(html: &str) -> String {
    regex::Regex::new(r#"name="csrf" value="([0-9a-f]+)""#)
        .unwrap()
        .captures(html)
        .unwrap_or_else(|| panic!("no CSRF token in page: {html}"))[1]
        .to_owned()
}

/// A CA (`ca.pem`, `ca.key`) and a certificate it issued for 127.0.0.1 (`server.pem`,
/// `server.key`) in `dir`, made with the `openssl` command.
pub fn private_ca(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command is needed to make the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=extauth test CA"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
            &["-subj", "/CN=127.0.0.1"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

/// The README's examples, read by the tests that hold them to what the programs print.
pub mod readme {
    /// The README's text.
    pub fn text() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap()
    }

    /// The fenced blocks of the README: (info string, lines).
    /// (Lines keep their indentation beyond the fence's: a block inside a list item is indented.)
    pub fn blocks(readme: &str) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        let mut current: Option<(String, usize, Vec<String>)> = None;
        for line in readme.lines() {
            let indent = line.len() - line.trim_start().len();
            let fence = line.trim_start().strip_prefix("```");
            match (fence, current.take()) {
                (Some(_), Some((info, _, lines))) => out.push((info, lines)),
                (Some(info), None) => current = Some((info.trim().to_owned(), indent, Vec::new())),
                (None, Some((info, margin, mut lines))) => {
                    let cut = margin.min(indent);
                    lines.push(line[cut..].to_owned());
                    current = Some((info, margin, lines));
                }
                (None, None) => {}
            }
        }
        out
    }

    /// The commands of console blocks (`$ …`, continued over lines ending in `\`) that start
    /// with `prefix`, each with the output lines the README shows after it.
    pub fn console_examples(readme: &str, prefix: &str) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for (info, lines) in blocks(readme) {
            if info != "console" {
                continue;
            }
            let mut current: Option<(String, Vec<String>, bool)> = None;
            for line in lines {
                match current.take() {
                    Some((command, output, true)) => {
                        let more = line.trim_end().ends_with('\\');
                        let joined =
                            format!("{} {}", command, line.trim().trim_end_matches('\\').trim());
                        current = Some((joined, output, more));
                    }
                    Some((command, output, false)) if line.starts_with("$ ") => {
                        out.push((command, output));
                        current = None;
                        if let Some(rest) = line.strip_prefix("$ ") {
                            let more = rest.trim_end().ends_with('\\');
                            current = Some((
                                rest.trim_end_matches('\\').trim().to_owned(),
                                Vec::new(),
                                more,
                            ));
                        }
                    }
                    Some((command, mut output, false)) => {
                        output.push(line);
                        current = Some((command, output, false));
                    }
                    None => {
                        if let Some(rest) = line.strip_prefix("$ ") {
                            let more = rest.trim_end().ends_with('\\');
                            current = Some((
                                rest.trim_end_matches('\\').trim().to_owned(),
                                Vec::new(),
                                more,
                            ));
                        }
                    }
                }
            }
            if let Some((command, output, _)) = current {
                out.push((command, output));
            }
        }
        out.into_iter()
            .filter(|(command, _)| command.starts_with(prefix))
            .map(|(command, mut output)| {
                while output.last().is_some_and(|l| l.trim().is_empty()) {
                    output.pop();
                }
                (command, output)
            })
            .collect()
    }

    /// Whether `actual` is `expected` where each `…` stands for any text.
    pub fn matches(expected: &str, actual: &str) -> bool {
        let parts: Vec<&str> = expected.split('…').collect();
        let Some(rest) = actual.strip_prefix(parts[0]) else {
            return false;
        };
        if parts.len() == 1 {
            return rest.is_empty();
        }
        let mut rest = rest;
        for part in &parts[1..parts.len() - 1] {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.ends_with(parts[parts.len() - 1])
    }
}

/// Stops the helper's connection agents (`git-credential-extauth --agent`) started under
/// `dir`, by the pids they wrote beside their sockets; returns how many. (An agent also exits
/// by itself once its socket is removed with the test's directory.)
pub fn stop_agents(dir: &Path) -> usize {
    let mut stopped = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_dir() && !path.is_symlink() {
                dirs.push(path);
            } else if name.starts_with("agent-") && name.ends_with(".pid") {
                let pid = std::fs::read_to_string(&path).unwrap_or_default();
                if Command::new("kill")
                    .arg(pid.trim())
                    .status()
                    .is_ok_and(|s| s.success())
                {
                    stopped += 1;
                }
            }
        }
    }
    stopped
}
