//! Credential latency benchmark: `git credential fill` answered by `git-credential-extauth`
//! (broker on loopback, over plain HTTP and over HTTPS with a private CA) against peers, side by side in one hyperfine run: `git credential-store`,
//! `git-credential-oauth` behind a warm `git credential-cache`, and `gh auth git-credential`.
//! Prints medians and ratios to credential-store (the target: extauth ≤ 1.5×).
//!
//! Run through `tests/perf/credential-latency.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::process::Command;

use extauth_tests::{Broker, Idp, answer, binary, client, csrf_of, free_port, private_ca};
use serde_json::{Value, json};

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::main]
async fn main() {
    let runs: u32 = std::env::args()
        .nth(1)
        .map_or(300, |a| a.parse().expect("runs is a number"));
    let (port, tls_port) = (free_port(), free_port());
    let tls_site = format!("https://127.0.0.1:{tls_port}");
    let idp = Idp::start(json!({
        "clients": [client("bench", "bench-secret", &[
            format!("http://127.0.0.1:{port}/external-auth/forge/callback"),
            format!("{tls_site}/external-auth/forge/callback"),
        ], false)]
    }));
    let iss = idp.issuer.clone();
    let env: Vec<(String, String)> = [
        ("CODER_EXTERNAL_AUTH_0_ID", "forge".to_owned()),
        ("CODER_EXTERNAL_AUTH_0_TYPE", "gitlab".to_owned()),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "bench".to_owned()),
        (
            "CODER_EXTERNAL_AUTH_0_CLIENT_SECRET",
            "bench-secret".to_owned(),
        ),
        ("CODER_EXTERNAL_AUTH_0_AUTH_URL", format!("{iss}/auth")),
        ("CODER_EXTERNAL_AUTH_0_TOKEN_URL", format!("{iss}/token")),
        (
            "CODER_EXTERNAL_AUTH_0_REGEX",
            r"^https?://git\.bench\.test(/.*)?$".to_owned(),
        ),
        ("CODER_EXTERNAL_AUTH_0_SCOPES", "openid".to_owned()),
        ("EXTAUTH_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    let (admin, csrf) = broker.admin().await;
    broker.link(&admin, "forge").await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "bench"}))
        .await;

    // The same broker serving HTTPS itself, with a certificate from a private CA.
    let certs = tempfile::tempdir().unwrap();
    private_ca(certs.path());
    let file = |name: &str| certs.path().join(name).display().to_string();
    let mut tls_env = env.clone();
    tls_env.extend([
        ("CODER_ACCESS_URL".to_owned(), format!("{tls_site}/")),
        ("CODER_TLS_CERT_FILE".to_owned(), file("server.pem")),
        ("CODER_TLS_KEY_FILE".to_owned(), file("server.key")),
    ]);
    let tls_data = tempfile::tempdir().unwrap();
    let tls_broker = Broker::start(tls_port, tls_data.path(), &tls_env);
    let browser = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(file("ca.pem")).unwrap()).unwrap(),
        )
        .cookie_store(true)
        .build()
        .unwrap();
    let home = browser.get(&tls_broker.login_link).send().await.unwrap();
    let tls_csrf = csrf_of(&home.text().await.unwrap());
    let linked = browser
        .get(format!("{tls_site}/external-auth/forge"))
        .send()
        .await
        .unwrap();
    assert!(linked.url().as_str().ends_with("?redirected=true"));
    let tls_token = answer(
        browser
            .post(format!("{tls_site}/api/v2/users/me/workspace-tokens"))
            .header("X-CSRF-Token", &tls_csrf)
            .json(&json!({"name": "bench"})),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("request");
    write(&input, "protocol=https\nhost=git.bench.test\n\n");
    let gh_input = d.join("gh-request");
    write(&gh_input, "protocol=https\nhost=github.com\n\n");
    // credential-store: a plain file.
    write(
        &d.join("store/.git-credentials"),
        "https://oauth2:stored-token@git.bench.test\n",
    );
    // git-credential-oauth behind credential-cache, warmed with one approve.
    let cache_home = d.join("oauth");
    std::fs::create_dir_all(&cache_home).unwrap();
    let oauth_helpers = "-c credential.helper= -c 'credential.helper=cache --timeout 3600' -c credential.helper=oauth";
    let approve = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'protocol=https\\nhost=git.bench.test\\nusername=oauth2\\npassword=cached-token\\n\\n' | git {oauth_helpers} credential approve"
        ))
        .env("HOME", &cache_home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .unwrap();
    assert!(approve.success());
    std::fs::create_dir_all(d.join("gh")).unwrap();

    let helper = binary("git-credential-extauth");
    let home = |name: &str| sh_quote(&d.join(name).display().to_string());
    let mut commands = vec![
        (
            "extauth",
            format!(
                "HOME={} GIT_CONFIG_NOSYSTEM=1 EXTAUTH_URL={} EXTAUTH_TOKEN={} git -c credential.helper= -c credential.helper={} credential fill < {}",
                home("extauth"),
                broker.url,
                token,
                sh_quote(&helper.display().to_string()),
                sh_quote(&input.display().to_string())
            ),
        ),
        (
            "extauth (https, private CA)",
            format!(
                "HOME={} GIT_CONFIG_NOSYSTEM=1 EXTAUTH_URL={} EXTAUTH_TOKEN={} EXTAUTH_CA_FILE={} git -c credential.helper= -c credential.helper={} credential fill < {}",
                home("extauth-https"),
                tls_site,
                tls_token,
                sh_quote(&file("ca.pem")),
                sh_quote(&helper.display().to_string()),
                sh_quote(&input.display().to_string())
            ),
        ),
        (
            "credential-store",
            format!(
                "HOME={} GIT_CONFIG_NOSYSTEM=1 git -c credential.helper= -c credential.helper=store credential fill < {}",
                home("store"),
                sh_quote(&input.display().to_string())
            ),
        ),
        (
            "git-credential-oauth (cache warm)",
            format!(
                "HOME={} GIT_CONFIG_NOSYSTEM=1 git {oauth_helpers} credential fill < {}",
                home("oauth"),
                sh_quote(&input.display().to_string())
            ),
        ),
        (
            "gh auth git-credential",
            format!(
                "HOME={} GH_CONFIG_DIR={} GH_TOKEN=gho_benchmark GIT_CONFIG_NOSYSTEM=1 git -c credential.helper= -c 'credential.helper=!gh auth git-credential' credential fill < {}",
                home("gh"),
                home("gh"),
                sh_quote(&gh_input.display().to_string())
            ),
        ),
    ];
    // EXTAUTH_BENCH_BASELINE_HELPER: an earlier build of the helper, timed in the same run
    // against the same broker, so a change to the helper shows as a ratio, not across runs.
    if let Ok(baseline) = std::env::var("EXTAUTH_BENCH_BASELINE_HELPER") {
        commands.push((
            "extauth (baseline helper)",
            format!(
                "HOME={} GIT_CONFIG_NOSYSTEM=1 EXTAUTH_URL={} EXTAUTH_TOKEN={} git -c credential.helper= -c credential.helper={} credential fill < {}",
                home("extauth"),
                broker.url,
                token,
                sh_quote(&baseline),
                sh_quote(&input.display().to_string())
            ),
        ));
    }
    // Each command must really answer before it is timed.
    for (name, command) in &commands {
        let out = Command::new("sh").arg("-c").arg(command).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("password="),
            "{name} does not answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let json_path = d.join("results.json");
    let mut hyperfine = Command::new("hyperfine");
    hyperfine
        .args([
            "--warmup",
            "20",
            "--runs",
            &runs.to_string(),
            "--style",
            "none",
            "--export-json",
        ])
        .arg(&json_path);
    for (name, command) in &commands {
        hyperfine.args(["-n", name, command]);
    }
    let status = hyperfine
        .status()
        .expect("hyperfine is needed: apt-get install hyperfine");
    assert!(status.success());

    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let median = |name: &str| {
        results["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["command"] == name)
            .map(|r| r["median"].as_f64().unwrap() * 1000.0)
            .unwrap()
    };
    let store = median("credential-store");
    println!("| helper | median ms | ratio to credential-store |");
    println!("|---|---:|---:|");
    for (name, _) in &commands {
        println!(
            "| {name} | {:.2} | {:.2}× |",
            median(name),
            median(name) / store
        );
    }
    let _ = Command::new("git")
        .args(["credential-cache", "exit"])
        .env("HOME", &cache_home)
        .status();
    broker.stop();
    tls_broker.stop();
}
