//! Git over SSH with the broker's key, against a real SSH git server: Debian's `openssh-server`
//! on loopback with `git-shell`, its `authorized_keys` holding the user's public key from
//! `extauth publickey`. `git clone` and `git push` go through `extauth gitssh`; the private key
//! is never in the broker's log and never left in the workspace; a regenerated key makes the
//! server refuse the old one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use extauth_tests::{Broker, answer, binary, free_port, git};
use reqwest::StatusCode;
use serde_json::json;

/// sshd on loopback, stopped when dropped.
struct Sshd {
    child: Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd_binary() -> PathBuf {
    let path = PathBuf::from("/usr/sbin/sshd");
    assert!(
        path.is_file(),
        "the SSH git server test needs Debian's openssh-server (apt-get install openssh-server; ./tests/run installs it as root)"
    );
    path
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Sshd {
    /// Serves git (through `git-shell`) to whoever holds a key in `authorized_keys`.
    fn start(dir: &Path, authorized_keys: &Path) -> Self {
        let port = free_port();
        let host_key = dir.join("host_key");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key));
        std::fs::create_dir_all("/run/sshd").unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
                 UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nAllowUsers {}\nForceCommand git-shell -c \"$SSH_ORIGINAL_COMMAND\"\n\
                 LogLevel VERBOSE\n",
                host_key.display(),
                authorized_keys.display(),
                dir.join("sshd.pid").display(),
                whoami(),
            ),
        )
        .unwrap();
        let child = Command::new(sshd_binary())
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("sshd.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        // Owned from here: stopped (and waited for) when dropped, also when it never listens.
        let server = Self { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(server);
        panic!(
            "sshd did not listen: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
    }
}

fn whoami() -> String {
    run(Command::new("id").arg("-un")).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn git_over_ssh_uses_the_brokers_key_and_a_regenerated_key_replaces_it() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("broker.log");
    let broker = Broker::start_logging_to(
        free_port(),
        &data.path().join("store"),
        &[("EXTAUTH_LOG".to_owned(), "debug".to_owned())],
        &log,
    );
    let (admin, csrf) = broker.admin().await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "ssh"}))
        .await;

    // The workspace: its own HOME and runtime directory.
    let ws = tempfile::tempdir().unwrap();
    let home = ws.path().join("home");
    let runtime = ws.path().join("run");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&runtime).unwrap();
    let extauth = |args: &[&str]| {
        let mut command = Command::new(binary("extauth"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("EXTAUTH_URL", &broker.url)
            .env("EXTAUTH_TOKEN", &token)
            .args(args);
        command
    };
    let out = extauth(&["publickey"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    assert!(public.ends_with(" extauth:admin"), "{public}");
    // The same key through Coder's user route, and ssh-keygen reads it.
    let api = answer(admin.get(format!("{}/api/v2/users/me/gitsshkey", broker.url))).await;
    assert_eq!(api["public_key"], public);
    assert!(api["created_at"].as_str().unwrap().ends_with('Z'));
    let keys = ws.path().join("authorized_keys");
    std::fs::write(&keys, format!("{public}\n")).unwrap();
    let fingerprint = run(Command::new("ssh-keygen").arg("-lf").arg(&keys));
    let page = admin
        .get(format!("{}/git-ssh-key", broker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let shown = fingerprint.split_whitespace().nth(1).unwrap();
    assert!(
        page.contains(shown),
        "the page shows ssh-keygen's fingerprint {shown}"
    );
    // Only a workspace token gets the private half.
    let refused = admin
        .get(format!(
            "{}/api/v2/workspaceagents/me/gitsshkey",
            broker.url
        ))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_ne!(refused.status(), StatusCode::OK);

    // The SSH git server, with that key authorized, and a repository on it.
    let server_dir = ws.path().join("server");
    std::fs::create_dir_all(&server_dir).unwrap();
    let sshd = Sshd::start(&server_dir, &keys);
    let bare = server_dir.join("org/repo.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let seed = ws.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README"), "hello\n").unwrap();
    git(&seed, &["add", "README"]);
    git(
        &seed,
        &[
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-q",
            "-m",
            "first",
        ],
    );
    git(&seed, &["push", "-q", bare.to_str().unwrap(), "main"]);

    // setup-git points git's SSH at `extauth gitssh`.
    let out = extauth(&["setup-git", "--global"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let configured =
        run(Command::new("git")
            .env("HOME", &home)
            .args(["config", "--global", "core.sshCommand"]));
    assert!(
        configured.trim().ends_with("extauth gitssh --"),
        "{configured}"
    );
    let out = extauth(&["setup-git", "--global"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged core.sshCommand"));

    // Clone and push over ssh:// through git's configured command. The test's own ssh options
    // (no known_hosts, no system config) ride along after `--`.
    let ssh_config = ws.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        "StrictHostKeyChecking no\nUserKnownHostsFile /dev/null\nLogLevel ERROR\n",
    )
    .unwrap();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        whoami(),
        sshd.port,
        bare.display()
    );
    let git_ws = |dir: &Path, args: &[&str]| {
        let mut command = Command::new("git");
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("EXTAUTH_URL", &broker.url)
            .env("EXTAUTH_TOKEN", &token)
            .env(
                "GIT_SSH_COMMAND",
                format!("{} -F {}", configured.trim(), ssh_config.display()),
            )
            .args(args);
        command
    };
    let out = git_ws(ws.path(), &["clone", "-q", &url, "clone"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clone over SSH: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(server_dir.join("sshd.log")).unwrap_or_default()
    );
    let clone = ws.path().join("clone");
    assert_eq!(
        std::fs::read_to_string(clone.join("README")).unwrap(),
        "hello\n"
    );
    std::fs::write(clone.join("NEW"), "pushed over ssh\n").unwrap();
    run(&mut git_ws(&clone, &["add", "NEW"]));
    run(&mut git_ws(
        &clone,
        &[
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-q",
            "-m",
            "second",
        ],
    ));
    let out = git_ws(&clone, &["push", "-q", "origin", "main"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "push over SSH: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        git(&bare, &["show", "main:NEW"]),
        "pushed over ssh\n",
        "the push reached the server"
    );
    // Nothing of the key stays in the workspace, and the broker never logged it. What may stay
    // is the helper's connection agent (its socket and pid file; it holds no key or token).
    extauth_tests::stop_agents(&runtime);
    let mut left = Vec::new();
    let mut dirs = vec![runtime.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() && name == "extauth" {
                dirs.push(path);
            } else if !(name.starts_with("agent-")
                && (name.ends_with(".sock") || name.ends_with(".pid")))
            {
                left.push(path);
            }
        }
    }
    assert_eq!(
        left,
        Vec::<std::path::PathBuf>::new(),
        "the key file and its directory are gone after the command"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains("PRIVATE KEY"),
        "the private key is never logged"
    );

    // Regenerate: the server, which knows only the old key, refuses.
    let regenerated = answer(
        admin
            .put(format!("{}/api/v2/users/me/gitsshkey", broker.url))
            .header("X-CSRF-Token", &csrf),
    )
    .await;
    assert_ne!(regenerated["public_key"], public);
    let out = git_ws(ws.path(), &["clone", "-q", &url, "again"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the old key no longer opens the server"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = extauth(&["publickey"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        regenerated["public_key"].as_str().unwrap()
    );
    drop(sshd);
    extauth_tests::stop_agents(&runtime);
    assert!(broker.stop());
}

/// The other kinds of key are files ssh reads: `ssh-keygen -y` derives the public key shown.
#[tokio::test(flavor = "multi_thread")]
async fn ecdsa_keys_are_keys_ssh_reads() {
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(
        free_port(),
        data.path(),
        &[("CODER_SSH_KEYGEN_ALGORITHM".to_owned(), "ecdsa".to_owned())],
    );
    let (admin, csrf) = broker.admin().await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "ssh"}))
        .await;
    let pair = answer(
        reqwest::Client::new()
            .get(format!(
                "{}/api/v2/workspaceagents/me/gitsshkey",
                broker.url
            ))
            .bearer_auth(&token),
    )
    .await;
    let file = data.path().join("id");
    std::fs::write(&file, pair["private_key"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let derived = run(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&file));
    let public = pair["public_key"].as_str().unwrap();
    assert!(public.starts_with("ecdsa-sha2-nistp256 "));
    let blob = |line: &str| {
        line.split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(blob(&derived), blob(public));
    assert!(broker.stop());
}

/// An Ed25519 key in OpenSSH's own format: ssh-keygen reads it too.
#[test]
fn ed25519_keys_are_keys_ssh_reads() {
    let key = extauth_broker::git_ssh::openssh::generate(
        extauth_broker::git_ssh::KeyAlgorithm::Ed25519,
        "extauth:test",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("id");
    std::fs::write(&file, &key.private_key).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let derived = run(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&file));
    assert_eq!(
        derived.split_whitespace().nth(1),
        key.public_key.split_whitespace().nth(1)
    );
}

/// An RSA 4096 key (for servers that take nothing newer), in PKCS#8: ssh-keygen reads it.
#[test]
fn rsa_keys_are_keys_ssh_reads() {
    let key = extauth_broker::git_ssh::openssh::generate(
        extauth_broker::git_ssh::KeyAlgorithm::Rsa4096,
        "extauth:test",
    )
    .unwrap();
    assert!(key.public_key.starts_with("ssh-rsa "));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("id");
    std::fs::write(&file, &key.private_key).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let derived = run(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&file));
    assert_eq!(
        derived.split_whitespace().nth(1),
        key.public_key.split_whitespace().nth(1)
    );
    let bits = run(Command::new("ssh-keygen").arg("-lf").arg(&file));
    assert!(bits.starts_with("4096 "), "{bits}");
}
