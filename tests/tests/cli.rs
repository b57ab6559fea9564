//! The `extauth` CLI, run as a user would: the real binary, a clean HOME, the real broker and IdP.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use extauth_tests::git_server::GitServer;
use extauth_tests::{Broker, Idp, binary, client, free_port};
use serde_json::{Value, json};

struct World {
    idp: Idp,
    broker: Broker,
    git: GitServer,
    admin: reqwest::Client,
    csrf: String,
    token: String,
    home: tempfile::TempDir,
    _data: tempfile::TempDir,
    _repos: tempfile::TempDir,
}

async fn world() -> World {
    world_with(&[]).await
}

/// The world with `extra` broker settings.
async fn world_with(extra: &[(&str, &str)]) -> World {
    let port = free_port();
    let idp = Idp::start(json!({
        "clients": [
            client("gh-client", "gh-secret", &[format!("http://127.0.0.1:{port}/external-auth/gh/callback")], false),
            client("dev-client", "dev-secret", &[], true),
        ]
    }));
    let repos = tempfile::tempdir().unwrap();
    let git = GitServer::start(repos.path(), &idp.issuer, &[("gh-client", "gh-secret")]).await;
    git.create_repo("gh/org/repo.git");
    let host = regex::escape(git.url.trim_start_matches("http://"));
    let iss = idp.issuer.clone();
    let mut env = Vec::new();
    for (n, id, kind, client_id, secret) in [
        (0, "gh", "github", "gh-client", "gh-secret"),
        (1, "dev", "forge", "dev-client", "dev-secret"),
    ] {
        let key = |k: &str| format!("CODER_EXTERNAL_AUTH_{n}_{k}");
        env.extend([
            (key("ID"), id.to_owned()),
            (key("TYPE"), kind.to_owned()),
            (key("CLIENT_ID"), client_id.to_owned()),
            (key("CLIENT_SECRET"), secret.to_owned()),
            (key("AUTH_URL"), format!("{iss}/auth")),
            (key("TOKEN_URL"), format!("{iss}/token")),
            (key("VALIDATE_URL"), format!("{iss}/me")),
            (key("REVOKE_URL"), format!("{iss}/token/revocation")),
            (key("SCOPES"), "openid".to_owned()),
            (key("EXTRA_TOKEN_KEYS"), "scope token_type".to_owned()),
        ]);
    }
    env.extend([
        (
            "CODER_EXTERNAL_AUTH_0_REGEX".to_owned(),
            format!(r"^https?://{host}/gh/.*$"),
        ),
        (
            "CODER_EXTERNAL_AUTH_1_DEVICE_FLOW".to_owned(),
            "true".to_owned(),
        ),
        (
            "CODER_EXTERNAL_AUTH_1_DEVICE_CODE_URL".to_owned(),
            format!("{iss}/device/auth"),
        ),
    ]);
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    let (admin, csrf) = broker.admin().await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "ws"}))
        .await;
    World {
        idp,
        broker,
        git,
        admin,
        csrf,
        token,
        home: tempfile::tempdir().unwrap(),
        _data: data,
        _repos: repos,
    }
}

impl World {
    /// `extauth` in a clean HOME; `workspace` adds EXTAUTH_URL/EXTAUTH_TOKEN.
    fn extauth(&self, workspace: bool, args: &[&str]) -> Command {
        let mut command = Command::new(binary("extauth"));
        command
            .env_clear()
            .env("PATH", path_with_binaries())
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .current_dir(self.home.path())
            .args(args);
        if workspace {
            command
                .env("EXTAUTH_URL", &self.broker.url)
                .env("EXTAUTH_TOKEN", &self.token);
        }
        command
    }

    fn run(&self, workspace: bool, args: &[&str]) -> Output {
        self.extauth(workspace, args).output().unwrap()
    }
}

/// PATH with the workspace's binaries first, as after installing them.
fn path_with_binaries() -> String {
    format!(
        "{}:{}",
        extauth_tests::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn access_token_follows_coders_contract() {
    let w = world().await;
    let not_linked = w.run(true, &["access-token", "gh"]);
    assert_eq!(not_linked.status.code(), Some(1));
    assert_eq!(
        stdout(&not_linked),
        format!("{}/external-auth/gh", w.broker.url),
        "the URL, without newline"
    );

    w.broker.link(&w.admin, "gh").await;
    let (_, reply) = w.broker.lookup(&w.token, "id=gh").await;
    let token = reply["access_token"].as_str().unwrap();
    let linked = w.run(true, &["access-token", "gh"]);
    assert_eq!(linked.status.code(), Some(0), "{}", stderr(&linked));
    assert_eq!(stdout(&linked), token, "the token, without newline");
    let same = w.run(true, &["external-auth", "access-token", "gh"]);
    assert_eq!(stdout(&same), token);

    let json_out = w.run(
        true,
        &["external-auth", "access-token", "gh", "--output", "json"],
    );
    let parsed: Value = serde_json::from_str(&stdout(&json_out)).unwrap();
    assert_eq!(parsed["access_token"], token);
    assert_eq!(parsed["type"], "github");

    let extra = w.run(
        true,
        &[
            "external-auth",
            "access-token",
            "gh",
            "--extra",
            "token_type",
        ],
    );
    assert_eq!(stdout(&extra), "Bearer");
    let scope = w.run(true, &["access-token", "gh", "--extra", "scope"]);
    assert_eq!(stdout(&scope), "openid");
    let missing = w.run(true, &["access-token", "gh", "--extra", "authed_user.id"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no extra property \"authed_user.id\""),
        "{}",
        stderr(&missing)
    );

    let unknown = w.run(true, &["access-token", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains(
            "No external auth provider with ID \"nope\". (configured providers: gh, dev)"
        ),
        "the message and its detail, not run together: {}",
        stderr(&unknown)
    );
    assert!(!stderr(&linked).contains(token) && !stderr(&unknown).contains(token));
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_mistakes_are_one_clear_line() {
    let w = world().await;
    let none = w.run(false, &["access-token", "gh"]);
    assert_eq!(none.status.code(), Some(3));
    assert_eq!(
        stderr(&none),
        "extauth: not configured: run `extauth login <broker-url>`, or set EXTAUTH_URL and EXTAUTH_TOKEN\n"
    );
    let bad = w
        .extauth(false, &["access-token", "gh"])
        .env("EXTAUTH_URL", "broker:3000")
        .env("EXTAUTH_TOKEN", "x")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(3));
    assert!(
        stderr(&bad)
            .starts_with("extauth: EXTAUTH_URL: \"broker:3000\" is not an http:// or https:// URL")
    );
    let wrong = w
        .extauth(false, &["access-token", "gh"])
        .env("EXTAUTH_URL", &w.broker.url)
        .env("EXTAUTH_TOKEN", "extauth_ws_00_00")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("the broker refused the token"),
        "{}",
        stderr(&wrong)
    );

    let helper = Command::new(binary("git-credential-extauth"))
        .env_clear()
        .arg("get")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        helper.status.code(),
        Some(0),
        "no request on stdin: nothing to do"
    );

    let usage = w.run(true, &["frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    let help = w.run(false, &["--help"]);
    assert!(stdout(&help).contains("Examples:") && stdout(&help).contains("Exit codes:"));
    let completions = w.run(false, &["completions", "bash"]);
    assert!(
        stdout(&completions).contains("_extauth()"),
        "{}",
        stdout(&completions)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_list_link_unlink_and_workspace_tokens() {
    let w = world().await;
    // A CLI token, as the broker's /cli-auth page issues it.
    let page = w
        .admin
        .post(format!("{}/cli-auth", w.broker.url))
        .form(&[("csrf", w.csrf.as_str())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cli_token = regex::Regex::new(r"(extauth_api_[0-9a-f_]+)")
        .unwrap()
        .captures(&page)
        .unwrap()[1]
        .to_owned();

    let login = w.run(false, &["login", &w.broker.url, "--token", &cli_token]);
    assert!(login.status.success(), "{}", stderr(&login));
    assert!(
        stdout(&login).starts_with(&format!("Logged in to {} as admin;", w.broker.url)),
        "{}",
        stdout(&login)
    );
    // No keyring service here: the 0600 file fallback.
    let file = w.home.path().join(".config/extauth/config.json");
    assert!(stdout(&login).contains("mode 0600"), "{}", stdout(&login));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(
        stdout(&w.run(false, &["whoami"])),
        format!("admin (admin) on {}\n", w.broker.url)
    );

    let list = stdout(&w.run(false, &["external-auth", "list"]));
    assert!(list.contains("gh") && list.contains("not linked"), "{list}");

    // Browser flow: the CLI waits; the user links in the browser meanwhile.
    let mut link = w.extauth(false, &["external-auth", "link", "gh"]);
    let linking = std::thread::spawn(move || link.output().unwrap());
    tokio::time::sleep(Duration::from_millis(800)).await;
    w.broker.link(&w.admin, "gh").await;
    let linked = tokio::task::spawn_blocking(move || linking.join().unwrap())
        .await
        .unwrap();
    assert!(linked.status.success(), "{}", stderr(&linked));
    assert_eq!(stdout(&linked), "Linked gh.\n");
    assert!(stderr(&linked).contains(&format!("{}/external-auth/gh", w.broker.url)));

    // Device flow: the CLI shows the code; the user enters it at the provider.
    let mut device = w.extauth(false, &["external-auth", "link", "dev"]);
    device
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = device.spawn().unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    let code = line
        .trim()
        .strip_prefix("Enter the code ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    w.idp.approve_device(&code).await;
    let done = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(done.status.success());
    assert_eq!(stdout(&done), "Linked dev.\n");

    let list: Value = serde_json::from_str(&stdout(
        &w.run(false, &["external-auth", "list", "--output", "json"]),
    ))
    .unwrap();
    assert_eq!(list["links"].as_array().unwrap().len(), 2);

    let unlinked = w.run(false, &["external-auth", "unlink", "dev"]);
    assert_eq!(
        stdout(&unlinked),
        "Unlinked dev; the token was revoked at the provider.\n"
    );

    let created = stdout(&w.run(
        false,
        &[
            "workspace-token",
            "create",
            "laptop",
            "--provider",
            "gh",
            "--lifetime",
            "7d",
        ],
    ));
    let token = regex::Regex::new(r"export EXTAUTH_TOKEN=(extauth_ws_\S+)")
        .unwrap()
        .captures(&created)
        .unwrap()[1]
        .to_owned();
    assert!(created.starts_with(&format!("export EXTAUTH_URL={}\n", w.broker.url)));
    let listed: Value = serde_json::from_str(&stdout(
        &w.run(false, &["workspace-token", "list", "--output", "json"]),
    ))
    .unwrap();
    let laptop = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "laptop")
        .unwrap()
        .clone();
    assert_eq!(laptop["providers"], json!(["gh"]));
    // Without --lifetime, a token lives as long as the web form's default: 30 days.
    w.run(false, &["workspace-token", "create", "default-lifetime"]);
    w.run(
        false,
        &[
            "workspace-token",
            "create",
            "forever",
            "--lifetime",
            "never",
        ],
    );
    let listed: Value = serde_json::from_str(&stdout(
        &w.run(false, &["workspace-token", "list", "--output", "json"]),
    ))
    .unwrap();
    let named = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone()
    };
    let expires = time::OffsetDateTime::parse(
        named("default-lifetime")["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let days = (expires - time::OffsetDateTime::now_utc()).whole_hours() as f64 / 24.0;
    assert!((29.9..=30.1).contains(&days), "{days} days");
    assert_eq!(named("forever")["expires_at"], Value::Null);
    let (status, _) = w.broker.lookup(&token, "id=gh").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let revoked = w.run(
        false,
        &["workspace-token", "revoke", laptop["id"].as_str().unwrap()],
    );
    assert!(revoked.status.success());
    let (status, _) = w.broker.lookup(&token, "id=gh").await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);

    assert_eq!(stdout(&w.run(false, &["logout"])), "Logged out.\n");
    assert!(!file.exists());
    assert_eq!(w.run(false, &["whoami"]).status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_git_then_clone_just_works() {
    let w = world().await;
    w.broker.link(&w.admin, "gh").await;
    let first = w.run(true, &["setup-git", "--global"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let host = w.git.url.trim_start_matches("http://");
    let out = stdout(&first);
    assert!(
        out.contains(&format!(
            "set       credential.https://{host}.helper = extauth"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "set       credential.http://{host}.useHttpPath = true"
        )),
        "{out}"
    );
    let gitconfig = std::fs::read_to_string(w.home.path().join(".gitconfig")).unwrap();
    assert!(
        gitconfig.contains(&format!("[credential \"http://{host}\"]")),
        "{gitconfig}"
    );

    let again = stdout(&w.run(true, &["setup-git", "--global"]));
    assert!(again.ends_with("git was already set up.\n"), "{again}");
    assert_eq!(
        std::fs::read_to_string(w.home.path().join(".gitconfig")).unwrap(),
        gitconfig,
        "idempotent"
    );

    // A fresh shell: only the environment and ~/.gitconfig.
    let clone = Command::new("git")
        .env_clear()
        .env("PATH", path_with_binaries())
        .env("HOME", w.home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("EXTAUTH_URL", &w.broker.url)
        .env("EXTAUTH_TOKEN", &w.token)
        .current_dir(w.home.path())
        .args([
            "clone",
            "--quiet",
            &format!("{}/gh/org/repo.git", w.git.url),
            "repo",
        ])
        .output()
        .unwrap();
    assert!(clone.status.success(), "{}", stderr(&clone));
    assert!(Path::new(&w.home.path().join("repo/README")).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_git_says_why_it_did_nothing() {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &[]);
    let (admin, csrf) = broker.admin().await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "ws"}))
        .await;
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(binary("extauth"))
        .env_clear()
        .env("PATH", path_with_binaries())
        .env("HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("EXTAUTH_URL", &broker.url)
        .env("EXTAUTH_TOKEN", &token)
        .args(["setup-git", "--global"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // SSH remotes are set up (the key needs no provider); HTTPS says why there is nothing.
    let said = stdout(&out);
    assert!(said.starts_with("set       core.sshCommand = "), "{said}");
    assert!(
        said.contains("HTTPS: the broker has no provider with a regex"),
        "{said}"
    );
    let config = std::fs::read_to_string(home.path().join(".gitconfig")).unwrap();
    assert!(
        config.contains("sshCommand") && !config.contains("credential"),
        "{config}"
    );
}

/// coder/coder#11904: a GITHUB_TOKEN put in the environment at start goes stale. Through the
/// wrapper `setup-cli gh` installs, the real `gh` (Debian's) prints the current token, and after
/// the token expired and the broker refreshed it, the new one.
#[tokio::test(flavor = "multi_thread")]
async fn gh_through_setup_cli_always_gets_the_current_token() {
    assert!(
        Path::new("/usr/bin/gh").is_file(),
        "the forge CLI test needs GitHub's gh: apt-get install gh (./tests/run installs it as root)"
    );
    let w = world_with(&[("EXTAUTH_REFRESH_MARGIN", "0s")]).await;
    w.idp.set_access_token_ttl(2).await;
    w.broker.link(&w.admin, "gh").await;
    let bin = w.home.path().join("bin");
    let setup = w.run(true, &["setup-cli", "gh", "--dir", bin.to_str().unwrap()]);
    assert!(setup.status.success(), "{}", stderr(&setup));
    let said = String::from_utf8_lossy(&setup.stdout).into_owned();
    assert!(said.contains("/usr/bin/gh"), "{said}");
    let gh = || {
        let output = Command::new("gh")
            .env_clear()
            .env(
                "PATH",
                format!("{}:{}", bin.display(), path_with_binaries()),
            )
            .env("HOME", w.home.path())
            .env("EXTAUTH_URL", &w.broker.url)
            .env("EXTAUTH_TOKEN", &w.token)
            .args(["auth", "token"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let current = |reply: Value| reply["access_token"].as_str().unwrap().to_owned();
    let first = gh();
    assert_eq!(first, current(w.broker.lookup(&w.token, "id=gh").await.1));
    let refreshes = w.idp.refreshes().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = gh();
    assert_ne!(second, first, "the expired token was handed out again");
    assert!(
        w.idp.refreshes().await > refreshes,
        "the broker refreshed it"
    );
    assert_eq!(second, current(w.broker.lookup(&w.token, "id=gh").await.1));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sets_each_linked_providers_variables_and_names_an_unlinked_one() {
    let w = world().await;
    w.broker.link(&w.admin, "gh").await;
    let token = w.broker.lookup(&w.token, "id=gh").await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = w.run(
        true,
        &[
            "exec",
            "--",
            "sh",
            "-c",
            "printf '%s %s %s' \"$GH_TOKEN\" \"$GITHUB_TOKEN\" \"$EXTAUTH_TOKEN_GH\"",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{token} {token} {token}")
    );
    // The command's exit status is extauth's.
    let failed = w.run(
        true,
        &["exec", "--provider", "gh", "--", "sh", "-c", "exit 7"],
    );
    assert_eq!(failed.status.code(), Some(7));
    // A provider asked for by name but not linked: where to link it, and the command never runs.
    let unlinked = w.run(
        true,
        &["exec", "--provider", "dev", "--", "sh", "-c", "echo ran"],
    );
    assert_eq!(unlinked.status.code(), Some(1));
    assert!(unlinked.stdout.is_empty());
    assert!(
        stderr(&unlinked).contains("dev is not linked; connect it at http://127.0.0.1:"),
        "{}",
        stderr(&unlinked)
    );
}
