//! The broker serving HTTPS itself (`CODER_TLS_CERT_FILE`, `CODER_TLS_KEY_FILE`) with a
//! certificate from a private CA, and the workspace side trusting that CA (`EXTAUTH_CA_FILE`,
//! else `SSL_CERT_FILE`): sign in, link, and `extauth access-token` over TLS, end to end.

use std::path::Path;
use std::process::Command;

use extauth_tests::{Broker, Idp, answer, binary, client, free_port, private_ca, provider_env};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_serves_https_and_workspaces_trust_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    private_ca(certs.path());
    let ca = certs.path().join("ca.pem");

    let port = free_port();
    let site = format!("https://127.0.0.1:{port}");
    let idp = Idp::start(json!({ "clients": [
        client("broker", "broker-secret", &[format!("{site}/external-auth/forge/callback")], false),
    ] }));
    let mut env = provider_env(
        0,
        "forge",
        &idp.issuer,
        "broker",
        "broker-secret",
        "git.forge.test",
    );
    let file = |name: &str| certs.path().join(name).display().to_string();
    env.extend([
        ("CODER_ACCESS_URL".to_owned(), format!("{site}/")),
        ("CODER_TLS_CERT_FILE".to_owned(), file("server.pem")),
        ("CODER_TLS_KEY_FILE".to_owned(), file("server.key")),
        ("EXTAUTH_HTTP_HEADER_TIMEOUT".to_owned(), "2s".to_owned()),
    ]);
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);

    // Silent clients are closed over TLS too: before their handshake, and after it.
    let silent: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let sessions: Vec<std::process::Child> = (0..10)
        .map(|_| {
            Command::new("openssl")
                .args([
                    "s_client",
                    "-quiet",
                    "-connect",
                    &format!("127.0.0.1:{port}"),
                ])
                .arg("-CAfile")
                .arg(&ca)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut stream in silent {
        use std::io::Read as _;
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(
            matches!(stream.read(&mut buf), Ok(0) | Err(_)),
            "a silent connection before its handshake is closed"
        );
    }
    for mut session in sessions {
        // stdin stays open: s_client ends only when the broker closes the connection.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while session.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "a TLS session that sends no request stays open"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    assert!(
        broker.login_link.starts_with(&format!("{site}/login/dev?")),
        "{}",
        broker.login_link
    );

    // Plain HTTP on the TLS port gets no answer; HTTPS with the CA does.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let trusted = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .add_root_certificate(trusted)
        .cookie_provider(jar.clone())
        .build()
        .unwrap();
    let health = browser.get(format!("{site}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.headers()["strict-transport-security"],
        "max-age=31536000",
        "HSTS behind https"
    );

    // Sign in and link through the provider, all over HTTPS (the cookies are Secure now).
    let home = browser.get(&broker.login_link).send().await.unwrap();
    assert_eq!(home.url().as_str(), format!("{site}/"));
    let csrf = extauth_tests::csrf_of(&home.text().await.unwrap());
    use reqwest::cookie::CookieStore as _;
    let cookies = jar.cookies(&site.parse().unwrap()).unwrap();
    assert!(
        cookies
            .to_str()
            .unwrap()
            .starts_with("__Host-extauth_session="),
        "behind https the session cookie is host-only: {cookies:?}"
    );
    let linked = browser
        .get(format!("{site}/external-auth/forge"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        linked.url().as_str(),
        format!("{site}/external-auth/forge?redirected=true")
    );
    let created = answer(
        browser
            .post(format!("{site}/api/v2/users/me/workspace-tokens"))
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"name": "ws"})),
    )
    .await;
    let token = created["token"].as_str().unwrap().to_owned();

    // The workspace side: the CA from EXTAUTH_CA_FILE, or from SSL_CERT_FILE.
    let access_token = |ca_variable: Option<&str>| {
        let mut command = Command::new(binary("extauth"));
        command
            .args(["access-token", "forge"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", data.path())
            .env("EXTAUTH_URL", &site)
            .env("EXTAUTH_TOKEN", &token);
        if let Some(variable) = ca_variable {
            command.env(variable, &ca);
        }
        command.output().unwrap()
    };
    for variable in ["EXTAUTH_CA_FILE", "SSL_CERT_FILE"] {
        let out = access_token(Some(variable));
        assert!(
            out.status.success(),
            "{variable}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.len() > 10, "a token on stdout");
    }
    // Without it, the private CA is not trusted: a clear failure, no token.
    let untrusted = access_token(None);
    assert!(!untrusted.status.success());
    assert!(untrusted.stdout.is_empty());
    let said = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        said.contains(&site) && said.contains("set EXTAUTH_CA_FILE to that CA's PEM file"),
        "{said}"
    );

    // A renewed certificate (from another CA here, so the switch is visible) is served after
    // SIGHUP, without a restart.
    let renewed = tempfile::tempdir().unwrap();
    private_ca(renewed.path());
    for name in ["server.pem", "server.key"] {
        std::fs::copy(renewed.path().join(name), certs.path().join(name)).unwrap();
    }
    let trusting = |ca: &Path| {
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap(),
            )
            .build()
            .unwrap()
    };
    let (old_ca, new_ca) = (trusting(&ca), trusting(&renewed.path().join("ca.pem")));
    assert!(new_ca.get(format!("{site}/healthz")).send().await.is_err());
    let hup = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while new_ca.get(format!("{site}/healthz")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate is served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(old_ca.get(format!("{site}/healthz")).send().await.is_err());

    // A CA file that is not one: the variable is named.
    let mut bad = Command::new(binary("extauth"));
    let out = bad
        .args(["access-token", "forge"])
        .env_clear()
        .env("HOME", data.path())
        .env("EXTAUTH_URL", &site)
        .env("EXTAUTH_TOKEN", &token)
        .env("EXTAUTH_CA_FILE", file("server.csr"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("EXTAUTH_CA_FILE") && said.contains("no certificate in it"),
        "{said}"
    );
    assert!(broker.stop());
}

#[test]
fn a_key_that_does_not_fit_or_a_missing_half_is_refused_at_start() {
    let certs = tempfile::tempdir().unwrap();
    private_ca(certs.path());
    let file = |name: &str| certs.path().join(name).display().to_string();
    let start = |pairs: &[(&str, String)]| {
        Command::new(binary("extauth-broker"))
            .env_clear()
            .env("EXTAUTH_DATA_DIR", certs.path().join("data"))
            .envs(pairs.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    };
    for (pairs, says) in [
        (
            vec![
                ("CODER_TLS_CERT_FILE", file("server.pem")),
                ("CODER_TLS_KEY_FILE", file("ca.key")),
            ],
            "the key does not fit the certificate",
        ),
        (
            vec![("CODER_TLS_CERT_FILE", file("server.pem"))],
            "CODER_TLS_KEY_FILE: unset while CODER_TLS_CERT_FILE is set",
        ),
        (
            vec![
                ("CODER_TLS_CERT_FILE", file("server.key")),
                ("CODER_TLS_KEY_FILE", file("server.key")),
            ],
            "no certificate in it",
        ),
    ] {
        let out = start(&pairs);
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(says), "{pairs:?}: {said}");
    }
}

#[test]
fn a_certificate_is_read_again_only_when_its_files_change() {
    let certs = tempfile::tempdir().unwrap();
    private_ca(certs.path());
    let (cert, key) = (
        certs.path().join("server.pem"),
        certs.path().join("server.key"),
    );
    let (_, certificate) = extauth_broker::tls::server_config(&cert, &key).unwrap();
    let first = certificate.served().unwrap();
    certificate.reload(true);
    assert!(
        std::sync::Arc::ptr_eq(&first, &certificate.served().unwrap()),
        "unchanged files are not read again"
    );

    // A broken renewal keeps the current certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    certificate.reload(true);
    assert_eq!(certificate.served().unwrap().cert, first.cert);

    // A good one replaces it, at the next check.
    let renewed = tempfile::tempdir().unwrap();
    private_ca(renewed.path());
    std::fs::copy(renewed.path().join("server.pem"), &cert).unwrap();
    std::fs::copy(renewed.path().join("server.key"), &key).unwrap();
    // Modification times have a coarse grain on some file systems: make the change visible.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    for file in [&cert, &key] {
        std::fs::File::options()
            .write(true)
            .open(file)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    certificate.reload(true);
    let now = certificate.served().unwrap();
    assert_ne!(now.cert, first.cert);
    assert_eq!(
        now.cert[0].as_ref(),
        rustls_cert_der(&renewed.path().join("server.pem")).as_slice()
    );
}

/// The DER of the first certificate of a PEM file.
fn rustls_cert_der(pem: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(pem).unwrap();
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap()
}

/// The connection agent (`git-credential-extauth --agent`): after the first helper run, the
/// next ones go through one kept-alive connection the agent verified against the private CA,
/// instead of a full TLS handshake each; a dropped connection comes back as a resumed session.
/// Every answer is still the broker's: a revoked token is refused at once. The agent holds no
/// token, lives only in a private directory, and goes when its socket goes or it idles.
#[tokio::test(flavor = "multi_thread")]
async fn helper_runs_share_one_verified_connection_through_the_agent() {
    let certs = tempfile::tempdir().unwrap();
    private_ca(certs.path());
    let ca = certs.path().join("ca.pem");
    let port = free_port();
    let site = format!("https://127.0.0.1:{port}");
    let idp = Idp::start(json!({ "clients": [
        client("broker", "broker-secret", &[format!("{site}/external-auth/forge/callback")], false),
    ] }));
    let mut env = provider_env(
        0,
        "forge",
        &idp.issuer,
        "broker",
        "broker-secret",
        "git.forge.test",
    );
    let file = |name: &str| certs.path().join(name).display().to_string();
    env.extend([
        ("CODER_ACCESS_URL".to_owned(), format!("{site}/")),
        ("CODER_TLS_CERT_FILE".to_owned(), file("server.pem")),
        ("CODER_TLS_KEY_FILE".to_owned(), file("server.key")),
        ("EXTAUTH_HTTP_IDLE_TIMEOUT".to_owned(), "2s".to_owned()),
    ]);
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    let browser = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .cookie_store(true)
        .build()
        .unwrap();
    let home = browser.get(&broker.login_link).send().await.unwrap();
    let csrf = extauth_tests::csrf_of(&home.text().await.unwrap());
    let linked = browser
        .get(format!("{site}/external-auth/forge"))
        .send()
        .await
        .unwrap();
    assert!(linked.url().as_str().ends_with("?redirected=true"));
    let created = answer(
        browser
            .post(format!("{site}/api/v2/users/me/workspace-tokens"))
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"name": "ws"})),
    )
    .await;
    let token = created["token"].as_str().unwrap().to_owned();
    let handshakes = || {
        let browser = browser.clone();
        let site = site.clone();
        async move {
            let text = browser
                .get(format!("{site}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let count = |outcome: &str| -> u64 {
                let name = format!("extauth_tls_handshakes_total{{outcome=\"{outcome}\"}} ");
                text.lines()
                    .find_map(|l| l.strip_prefix(name.as_str()))
                    .map_or(0, |v| v.trim().parse().unwrap())
            };
            (count("full"), count("resumed"))
        }
    };

    let home_dir = tempfile::tempdir().unwrap();
    let run_dir = home_dir.path().join("run");
    let fill = |vars: &[(&str, &str)]| {
        use std::io::Write as _;
        let mut child = Command::new(binary("git-credential-extauth"))
            .arg("get")
            .env_clear()
            .env("HOME", home_dir.path())
            .env("EXTAUTH_CACHE_DIR", &run_dir)
            .env("EXTAUTH_URL", &site)
            .env("EXTAUTH_TOKEN", &token)
            .env("EXTAUTH_CA_FILE", &ca)
            .envs(vars.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"protocol=https\nhost=git.forge.test\n\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let agent_socket = || -> Option<std::path::PathBuf> {
        std::fs::read_dir(&run_dir).ok()?.find_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "sock" && path.file_name()?.to_str()?.starts_with("agent-"))
                .then_some(path)
        })
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();

    // Off: every run is its own handshake, and no agent starts.
    let before = handshakes().await;
    for _ in 0..3 {
        let (ok, out, err) = fill(&[("EXTAUTH_AGENT", "off")]);
        assert!(ok && out.contains("password="), "{err}");
    }
    assert!(
        agent_socket().is_none(),
        "EXTAUTH_AGENT=off starts no agent"
    );
    let after = handshakes().await;
    assert!(after.0 - before.0 >= 3, "{before:?} → {after:?}");

    // The first run answers by itself and starts the agent; the next 20 share its connection.
    let (ok, out, err) = fill(&[]);
    assert!(ok && out.contains("password="), "{err}");
    wait_for("the agent listens", &|| agent_socket().is_some());
    let socket = agent_socket().unwrap();
    let pid_file = socket.with_extension("pid");
    wait_for("the agent writes its pid", &|| pid_file.exists());
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&run_dir).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "the agent's directory is the user's alone"
        );
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains(&token),
        "the agent's environment holds no token"
    );
    let before = handshakes().await;
    for _ in 0..20 {
        let (ok, out, err) = fill(&[]);
        assert!(ok && out.contains("password="), "{err}");
    }
    let after = handshakes().await;
    assert!(
        after.0 - before.0 <= 1 && after.1 == before.1,
        "20 helper runs through the agent: at most its own one full handshake, {before:?} → {after:?}"
    );

    // Helpers at once (git fetching several remotes, or submodules, in parallel) all answer.
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..16).map(|_| scope.spawn(|| fill(&[]))).collect();
        for run in runs {
            let (ok, out, err) = run.join().unwrap();
            assert!(ok && out.contains("password="), "{err}");
        }
    });

    // The broker closes the idle connection (2 s here); the agent's next one resumes its session.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let before = handshakes().await;
    let (ok, out, err) = fill(&[]);
    assert!(ok && out.contains("password="), "{err}");
    let after = handshakes().await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (0, 1),
        "a new connection of the agent resumes its TLS session: {before:?} → {after:?}"
    );

    // Revoked: the very next run through the agent is refused, nothing is served from memory.
    let id = created["id"].as_str().unwrap();
    let revoked = browser
        .delete(format!("{site}/api/v2/users/me/workspace-tokens/{id}"))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    let (ok, out, err) = fill(&[]);
    assert!(
        !ok && !out.contains("password="),
        "a revoked token gets nothing: {out}"
    );
    assert!(err.contains("refused the token"), "{err}");
    assert!(alive(pid), "the agent served that refusal");

    // Its socket removed, the agent goes.
    std::fs::remove_file(&socket).unwrap();
    wait_for("the agent exits when its socket is gone", &|| {
        !alive(pid) || is_zombie(pid)
    });
    assert!(!pid_file.exists(), "and takes its pid file");

    // An idle agent goes by itself.
    let (ok, _, err) = fill(&[("EXTAUTH_AGENT_IDLE", "1s"), ("EXTAUTH_TOKEN", "refused")]);
    assert!(!ok, "{err}");
    wait_for("a second agent starts", &|| pid_file.exists());
    let second: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(second, pid);
    wait_for("an idle agent exits", &|| {
        !alive(second) || is_zombie(second)
    });
    assert!(agent_socket().is_none());

    // A directory others may enter is not used: the helper answers alone.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (ok, _, _) = fill(&[]);
    assert!(!ok, "the token is revoked, but the broker was asked");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        agent_socket().is_none(),
        "no agent in a directory others can enter"
    );
    assert!(broker.stop());
}

/// A process that has exited but is not yet reaped by its (adopting) parent.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}
