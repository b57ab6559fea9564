//! The web UI in headless Chromium (`playwright-core`, Debian's `/usr/bin/chromium`): sign in
//! through the IdP's own login page, connect a provider in the browser and another by device
//! code, create and use a workspace token, unlink, sign out through the IdP. The walk itself is
//! `tests/idp/browser-flow.mjs`; this test sets up the world, runs it, and checks from outside
//! what the browser cannot see. Screenshots land in `target/screenshots/`.
//!
//! Without Chromium this test fails (it never skips): `./tests/run` installs it when root.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use extauth_tests::{Broker, Idp, answer, bin_dir, client, free_port, provider_env};
use serde_json::{Value, json};

fn provider(n: usize, id: &str, name: &str, issuer: &str, client: &str) -> Vec<(String, String)> {
    let mut env = provider_env(
        n,
        id,
        issuer,
        client,
        &format!("{client}-secret"),
        &format!("{id}.test"),
    );
    env.push((
        format!("CODER_EXTERNAL_AUTH_{n}_DISPLAY_NAME"),
        name.to_owned(),
    ));
    env
}

/// Runs `node browser-flow.mjs` with `env`, at most `limit`; (success, stdout, stderr).
fn run_flow(env: &[(&str, String)], limit: Duration) -> (bool, String, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("idp");
    let mut child = Command::new("node")
        .arg(dir.join("browser-flow.mjs"))
        .current_dir(&dir)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs the browser flow");
    let pipe = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.is_some(),
        "the browser flow did not finish within {limit:?}\n{out}\n{err}"
    );
    (status.is_some_and(|s| s.success()), out, err)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_signs_in_links_creates_a_token_unlinks_and_signs_out_in_chromium() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(json!({
        "interactiveLogin": true,
        "clients": [
            {
                "client_id": "extauth", "client_secret": "extauth-secret",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "redirect_uris": [format!("{base}/api/v2/users/oidc/callback")],
                "post_logout_redirect_uris": [format!("{base}/login")],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            client("forge-app", "forge-app-secret", &[format!("{base}/external-auth/forge/callback")], false),
            client("tracker-app", "tracker-app-secret", &[], true),
        ]
    }));
    let mut env: Vec<(String, String)> = vec![
        ("CODER_OIDC_ISSUER_URL".into(), idp.issuer.clone()),
        ("CODER_OIDC_CLIENT_ID".into(), "extauth".into()),
        ("CODER_OIDC_CLIENT_SECRET".into(), "extauth-secret".into()),
        ("CODER_OIDC_SIGN_IN_TEXT".into(), "Company SSO".into()),
    ];
    env.extend(provider(0, "forge", "Forge", &idp.issuer, "forge-app"));
    env.extend(provider(
        1,
        "tracker",
        "Tracker",
        &idp.issuer,
        "tracker-app",
    ));
    env.push(("CODER_EXTERNAL_AUTH_1_DEVICE_FLOW".into(), "true".into()));
    env.push((
        "CODER_EXTERNAL_AUTH_1_DEVICE_CODE_URL".into(),
        format!("{}/device/auth", idp.issuer),
    ));
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);

    let shots = bin_dir().parent().unwrap().join("screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let flow_env = [
        ("BROKER_URL", broker.url.clone()),
        ("IDP_URL", idp.issuer.clone()),
        ("PROVIDER_ID", "forge".to_owned()),
        ("PROVIDER_NAME", "Forge".to_owned()),
        ("DEVICE_PROVIDER_ID", "tracker".to_owned()),
        ("DEVICE_PROVIDER_NAME", "Tracker".to_owned()),
        ("SIGN_IN_TEXT", "Company SSO".to_owned()),
        ("SCREENSHOT_DIR", shots.display().to_string()),
    ];
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || run_flow(&flow_env, Duration::from_secs(180)))
            .await
            .unwrap();
    assert!(ok, "the browser flow failed:\n{err}\n{out}");
    let seen: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the flow's report is JSON ({e}): {out}"));

    // Every main page was photographed, as PNG files with something in them.
    let files = seen["screenshots"].as_array().unwrap();
    assert_eq!(files.len(), 18, "{seen}");
    for file in files {
        let bytes = std::fs::read(file.as_str().unwrap()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{file} is a PNG");
        assert!(bytes.len() > 5_000, "{file} is not blank");
    }
    assert!(seen["access_token_length"].as_u64().unwrap() > 10);
    // The app authorized in the browser got what the consent page said.
    assert_eq!(
        seen["oauth2"]["scope"], "external-auth:read openid profile user:read",
        "{seen}"
    );

    // What happened at the IdP: the user signed in there, the unlink revoked the forge's
    // token, and the sign-out went through its end-session endpoint.
    assert!(idp.requests("/token/revocation").await >= 1);
    assert!(idp.requests("/session/end/confirm").await >= 1);

    // The person who signed in is a user of the broker, linked by the IdP's subject; the first
    // OIDC user is an admin.
    let (admin, _) = broker.admin().await;
    let alice: Value = answer(admin.get(format!("{}/api/v2/users/alice", broker.url))).await;
    assert_eq!(alice["email"], "alice@example.com", "{alice}");
    assert_eq!(alice["is_admin"], true, "{alice}");
    assert!(broker.stop(), "the broker shuts down cleanly");
}
