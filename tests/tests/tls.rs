//! The broker serving HTTPS itself (`CODER_TLS_CERT_FILE`, `CODER_TLS_KEY_FILE`) with a
//! certificate from a private CA, and the workspace side trusting that CA (`EXTAUTH_CA_FILE`,
//! else `SSL_CERT_FILE`): sign in, link, and `extauth access-token` over TLS, end to end.

use std::path::Path;
use std::process::Command;

use extauth_tests::{Broker, Idp, answer, binary, client, free_port, provider_env};
use reqwest::StatusCode;
use serde_json::json;

/// A CA and a certificate it issued for 127.0.0.1, made with the `openssl` command.
fn private_ca(dir: &Path) {
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
    ]);
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
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
    let browser = reqwest::Client::builder()
        .add_root_certificate(trusted)
        .cookie_store(true)
        .build()
        .unwrap();
    let health = browser.get(format!("{site}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // Sign in and link through the provider, all over HTTPS (the cookies are Secure now).
    let home = browser.get(&broker.login_link).send().await.unwrap();
    assert_eq!(home.url().as_str(), format!("{site}/"));
    let csrf = extauth_tests::csrf_of(&home.text().await.unwrap());
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
