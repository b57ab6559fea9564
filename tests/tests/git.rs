//! Real git over smart HTTP through `git-credential-extauth`, as a credential helper and as
//! `GIT_ASKPASS`, against a git server that accepts only tokens the test IdP says are active.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use extauth_tests::git_server::GitServer;
use extauth_tests::{Broker, Idp, binary, client, free_port};
use serde_json::json;

struct World {
    idp: Idp,
    broker: Broker,
    git: GitServer,
    admin: reqwest::Client,
    token: String,
    home: tempfile::TempDir,
    _data: tempfile::TempDir,
    _repos: tempfile::TempDir,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Helper,
    Askpass,
}

async fn world() -> World {
    world_with(&[]).await
}

/// The world with `extra` broker settings.
async fn world_with(extra: &[(&str, &str)]) -> World {
    let port = free_port();
    let callback = |id: &str| {
        vec![format!(
            "http://127.0.0.1:{port}/external-auth/{id}/callback"
        )]
    };
    let idp = Idp::start(json!({
        "clients": [
            client("gh-client", "gh-secret", &callback("gh"), false),
            client("gl-client", "gl-secret", &callback("gl"), false),
        ]
    }));
    let repos = tempfile::tempdir().unwrap();
    let git = GitServer::start(
        repos.path(),
        &idp.issuer,
        &[("gh-client", "gh-secret"), ("gl-client", "gl-secret")],
    )
    .await;
    git.create_repo("gh/org/repo.git");
    git.create_repo("gl/group/project.git");
    let git_host = regex::escape(git.url.trim_start_matches("http://"));
    let iss = idp.issuer.clone();
    let mut env: Vec<(String, String)> = vec![("EXTAUTH_REFRESH_MARGIN".into(), "0s".into())];
    for (n, (id, kind, client_id, secret)) in [
        ("gh", "github", "gh-client", "gh-secret"),
        ("gl", "gitlab", "gl-client", "gl-secret"),
    ]
    .into_iter()
    .enumerate()
    {
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
            // Two providers on one host, told apart by path.
            (key("REGEX"), format!(r"^https?://{git_host}/{id}/.*$")),
            (key("SCOPES"), "openid".to_owned()),
        ]);
    }
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
        token,
        home: tempfile::tempdir().unwrap(),
        _data: data,
        _repos: repos,
    }
}

fn helper() -> PathBuf {
    binary("git-credential-extauth")
}

impl World {
    /// A git command in a clean HOME, wired to extauth in `mode`, prompts off.
    fn git(&self, mode: Mode, dir: &Path, args: &[&str]) -> Command {
        self.git_program("git", mode, dir, args)
    }

    /// Like [`World::git`], with a given git program.
    fn git_program(&self, program: &str, mode: Mode, dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("EXTAUTH_URL", &self.broker.url)
            .env("EXTAUTH_TOKEN", &self.token)
            .args([
                "-c",
                "credential.helper=",
                "-c",
                "credential.useHttpPath=true",
            ])
            .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.com"]);
        match mode {
            Mode::Helper => {
                command.args(["-c", &format!("credential.helper={}", helper().display())]);
            }
            Mode::Askpass => {
                command.env("GIT_ASKPASS", helper());
            }
        }
        command.args(args);
        command
    }

    fn run(&self, mode: Mode, dir: &Path, args: &[&str]) -> Output {
        self.git(mode, dir, args).output().unwrap()
    }

    #[track_caller]
    fn ok(&self, mode: Mode, dir: &Path, args: &[&str]) -> String {
        let output = self.run(mode, dir, args);
        assert!(
            output.status.success(),
            "git {args:?} ({mode:?}) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn repo_url(&self, id: &str) -> String {
        match id {
            "gh" => format!("{}/gh/org/repo.git", self.git.url),
            _ => format!("{}/gl/group/project.git", self.git.url),
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn clone_and_push(mode: Mode) {
    let w = world().await;
    w.broker.link(&w.admin, "gh").await;
    w.broker.link(&w.admin, "gl").await;
    for id in ["gh", "gl"] {
        let work = tempfile::tempdir().unwrap();
        w.ok(
            mode,
            work.path(),
            &["clone", "--quiet", &w.repo_url(id), "repo"],
        );
        let repo = work.path().join("repo");
        assert!(repo.join("README").exists());
        std::fs::write(repo.join("change.txt"), format!("{id} {mode:?}\n")).unwrap();
        w.ok(mode, &repo, &["add", "change.txt"]);
        w.ok(mode, &repo, &["commit", "--quiet", "-m", "change"]);
        w.ok(mode, &repo, &["push", "--quiet", "origin", "main"]);
        let bare = w.git.root.join(if id == "gh" {
            "gh/org/repo.git"
        } else {
            "gl/group/project.git"
        });
        let log = extauth_tests::git(&bare, &["log", "--format=%s", "main"]);
        assert_eq!(log, "change\nfirst\n", "{id}: the push reached the server");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_and_push_through_the_credential_helper() {
    clone_and_push(Mode::Helper).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_and_push_through_askpass() {
    clone_and_push(Mode::Askpass).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_helper_answers_git_credential_fill() {
    let w = world().await;
    w.broker.link(&w.admin, "gl").await;
    let (_, reply) = w.broker.lookup(&w.token, "id=gl").await;
    let token = reply["access_token"].as_str().unwrap().to_owned();
    let expiry = time::OffsetDateTime::parse(
        reply["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    let host = w.git.url.trim_start_matches("http://").to_owned();
    let mut fill = w.git(Mode::Helper, w.home.path(), &["credential", "fill"]);
    fill.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = fill.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("protocol=http\nhost={host}\npath=gl/group/project.git\n\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "protocol=http\nhost={host}\npath=gl/group/project.git\nusername=oauth2\npassword={token}\npassword_expiry_utc={expiry}\n"
        )
    );
    assert!(!stderr(&out).contains(&token), "never a token on stderr");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_is_refreshed_between_fetches() {
    let w = world().await;
    w.idp.set_access_token_ttl(2).await;
    w.broker.link(&w.admin, "gh").await;
    let work = tempfile::tempdir().unwrap();
    w.ok(
        Mode::Helper,
        work.path(),
        &["clone", "--quiet", &w.repo_url("gh"), "repo"],
    );
    let repo = work.path().join("repo");
    w.ok(Mode::Helper, &repo, &["fetch", "--quiet"]);
    assert_eq!(w.idp.refreshes().await, 0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    w.ok(Mode::Helper, &repo, &["fetch", "--quiet"]);
    assert_eq!(
        w.idp.refreshes().await,
        1,
        "the second fetch used a refreshed token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_is_erased_and_the_next_clone_works_after_relinking() {
    let w = world().await;
    w.broker.link(&w.admin, "gh").await;
    let work = tempfile::tempdir().unwrap();
    w.ok(
        Mode::Helper,
        work.path(),
        &["clone", "--quiet", &w.repo_url("gh"), "repo"],
    );

    // The user revokes the grant at the provider (refresh token included).
    let (_, reply) = w.broker.lookup(&w.token, "id=gh").await;
    let revoked = reqwest::Client::new()
        .post(format!("{}/token/revocation", w.idp.issuer))
        .basic_auth("gh-client", Some("gh-secret"))
        .form(&[("token", reply["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());

    let repo = work.path().join("repo");
    let failed = w.run(Mode::Helper, &repo, &["fetch", "--quiet"]);
    assert!(
        !failed.status.success(),
        "the dead token is refused by the server"
    );
    // git told the helper (erase): the next request is validated, found dead, and the user is
    // sent to link again instead of getting the dead token once more.
    let again = w.run(Mode::Helper, &repo, &["fetch", "--quiet"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains(&format!("{}/external-auth/gh", w.broker.url)),
        "{}",
        stderr(&again)
    );

    w.broker.link(&w.admin, "gh").await;
    let fresh = tempfile::tempdir().unwrap();
    w.ok(
        Mode::Helper,
        fresh.path(),
        &["clone", "--quiet", &w.repo_url("gh"), "repo"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn not_linked_fails_fast_without_a_terminal() {
    let w = world().await;
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = w.run(
        Mode::Helper,
        work.path(),
        &["clone", "--quiet", &w.repo_url("gh"), "repo"],
    );
    assert!(!output.status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("Open:\n  {}/external-auth/gh", w.broker.url)),
        "{err}"
    );
    assert!(err.contains("not waiting"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn not_linked_waits_in_a_terminal_until_linked() {
    let w = world().await;
    let work = tempfile::tempdir().unwrap();
    // `script` gives git a terminal, as a developer's shell has.
    let mut command = w.git(Mode::Helper, work.path(), &[]);
    let git_line = {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut words = vec![program];
        words.extend(
            command
                .get_args()
                .map(|a| shell_quote(&a.to_string_lossy())),
        );
        words.extend(["clone", "--quiet", &w.repo_url("gh"), "repo"].map(shell_quote));
        words.join(" ")
    };
    command = Command::new("script");
    command
        .current_dir(work.path())
        .args(["-qec", &git_line, "/dev/null"])
        .env("HOME", w.home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "1")
        .env("EXTAUTH_URL", &w.broker.url)
        .env("EXTAUTH_TOKEN", &w.token)
        .env("EXTAUTH_LOGIN_TIMEOUT", "30s")
        .env_remove("BROWSER")
        .env_remove("DISPLAY")
        .stdin(std::process::Stdio::null());
    let clone = std::thread::spawn(move || command.output().unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!clone.is_finished(), "git waits for the link");
    w.broker.link(&w.admin, "gh").await;
    let output = tokio::task::spawn_blocking(move || clone.join().unwrap())
        .await
        .unwrap();
    let transcript = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{transcript}");
    assert!(transcript.contains("waiting up to 30 s"), "{transcript}");
    assert!(transcript.contains("connected."), "{transcript}");
    assert!(work.path().join("repo/README").exists());
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The newest git's version and an old one's: the machine's /usr/local git (2.46+, which
/// announces `capability[]=authtype`) and Debian's (before 2.46, which does not).
fn gits() -> (&'static str, &'static str) {
    let version = |program: &str| {
        let out = Command::new(program).arg("--version").output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let numbers: Vec<u32> = text
            .trim()
            .trim_start_matches("git version ")
            .split('.')
            .take(2)
            .map(|n| n.parse().unwrap())
            .collect();
        (numbers[0], numbers[1])
    };
    let (new, old) = ("/usr/local/bin/git", "/usr/bin/git");
    assert!(version(new) >= (2, 46), "{new} must be git 2.46 or newer");
    assert!(version(old) < (2, 46), "{old} must be older than git 2.46");
    (new, old)
}

#[tokio::test(flavor = "multi_thread")]
async fn git_2_46_gets_an_ephemeral_bearer_credential_and_older_gits_the_classic_answer() {
    let (new_git, old_git) = gits();
    // gl sends its token as Bearer (as Azure DevOps with Entra does); gh keeps Basic.
    let w = world_with(&[("CODER_EXTERNAL_AUTH_1_GIT_AUTH", "bearer")]).await;
    w.broker.link(&w.admin, "gl").await;
    w.broker.link(&w.admin, "gh").await;

    for (program, id, scheme) in [
        (new_git, "gl", "Bearer"),
        (old_git, "gl", "Basic"),
        (new_git, "gh", "Basic"),
    ] {
        w.git.take_schemes();
        let work = tempfile::tempdir().unwrap();
        let output = w
            .git_program(
                program,
                Mode::Helper,
                work.path(),
                &["clone", "--quiet", &w.repo_url(id), "repo"],
            )
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{program} clone {id}: {}",
            stderr(&output)
        );
        let seen = w.git.take_schemes();
        assert!(
            !seen.is_empty() && seen.iter().all(|s| s == scheme),
            "{program} {id}: the server saw {seen:?}, not {scheme}"
        );
    }

    // What the helper says, through the real `git credential fill` (which passes on the
    // capabilities its caller announces).
    let (_, reply) = w.broker.lookup(&w.token, "id=gl").await;
    let token = reply["access_token"].as_str().unwrap().to_owned();
    let host = w.git.url.trim_start_matches("http://").to_owned();
    let fill = |input: String| {
        use std::io::Write;
        let mut child = w
            .git_program(
                new_git,
                Mode::Helper,
                w.home.path(),
                &["credential", "fill"],
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    let newer = fill(format!(
        "capability[]=authtype\ncapability[]=state\nprotocol=http\nhost={host}\npath=gl/group/project.git\n\n"
    ));
    let lines: Vec<&str> = newer.lines().collect();
    for line in [
        "authtype=Bearer",
        &format!("credential={token}"),
        // git reads our `ephemeral=true` and writes its own boolean back.
        "ephemeral=1",
        // The provider and the account (the IdP login).
        "state[]=extauth:provider=gl/alice",
    ] {
        assert!(
            lines.contains(&line),
            "no {:?} in the answer {:?}",
            line.split('=').next(),
            lines
                .iter()
                .map(
                    |l| l.split_once('=').map_or(*l, |(k, _)| if k == "credential" {
                        k
                    } else {
                        l
                    })
                )
                .collect::<Vec<_>>()
        );
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("password=")),
        "no password beside the credential"
    );
    let older = fill(format!(
        "protocol=http\nhost={host}\npath=gl/group/project.git\n\n"
    ));
    assert!(
        older.lines().any(|l| l == format!("password={token}")),
        "the classic answer"
    );
    assert!(!older.contains("authtype="));
}

/// VS Code and JetBrains terminals set `GIT_ASKPASS` to their own program (coder/coder#10450);
/// with the credential helper configured, git asks extauth first and never reaches it.
#[tokio::test(flavor = "multi_thread")]
async fn an_ide_askpass_does_not_stand_in_the_way_of_the_credential_helper() {
    let w = world().await;
    w.broker.link(&w.admin, "gh").await;
    let ide = w.home.path().join("ide-askpass.sh");
    let asked = w.home.path().join("ide-was-asked");
    std::fs::write(
        &ide,
        format!("#!/bin/sh\ntouch '{}'\necho wrong\n", asked.display()),
    )
    .unwrap();
    run_chmod(&ide);
    let work = tempfile::tempdir().unwrap();
    let output = w
        .git(
            Mode::Helper,
            work.path(),
            &["clone", "--quiet", &w.repo_url("gh"), "repo"],
        )
        .env("GIT_ASKPASS", &ide)
        .env("VSCODE_GIT_ASKPASS_NODE", "/nonexistent/node")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(work.path().join("repo/README").exists());
    assert!(!asked.exists(), "git asked the IDE's askpass");
}

fn run_chmod(path: &Path) {
    let status = Command::new("chmod")
        .arg("0755")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Two providers for one URL (a PAT-style and an Entra-style Azure DevOps, say): the server's
/// challenges (`wwwauth[]`, passed on as `schemes=`) choose the one whose scheme it offers.
#[tokio::test(flavor = "multi_thread")]
async fn the_servers_challenges_choose_between_providers_of_one_url() {
    let every = r"^https?://127\.0\.0\.1:[0-9]+/.*$";
    let w = world_with(&[
        ("CODER_EXTERNAL_AUTH_0_REGEX", every),
        ("CODER_EXTERNAL_AUTH_1_REGEX", every),
        ("CODER_EXTERNAL_AUTH_1_GIT_AUTH", "bearer"),
    ])
    .await;
    let url = w.repo_url("gh");
    let provider_for = |schemes: &str| {
        let query = format!("match={url}{schemes}");
        let broker = &w.broker;
        let token = w.token.clone();
        async move {
            let (_, answer) = broker.lookup(&token, &query).await;
            answer["provider_id"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(
        provider_for("").await,
        "gh",
        "the first in configuration order"
    );
    assert_eq!(provider_for("&schemes=basic").await, "gh");
    assert_eq!(provider_for("&schemes=bearer").await, "gl");
    assert_eq!(provider_for("&schemes=bearer,basic").await, "gh");
    assert_eq!(provider_for("&schemes=negotiate").await, "gh");
}
