//! Credential latency benchmark: `git credential fill` answered by `git-credential-extauth`
//! (broker on loopback, over plain HTTP and over HTTPS with a private CA) against peers, side by side in one run: `git credential-store`,
//! `git-credential-oauth` behind a warm `git credential-cache`, and `gh auth git-credential`.
//! Prints medians and ratios to credential-store. `extauth` rows go through the helper's
//! connection agent (started by the warm-up's first run); the `no agent` rows are each helper
//! run on its own (`EXTAUTH_AGENT=off`), one connection (and over HTTPS one full handshake) each.
//!
//! Run through `tests/perf/credential-latency.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::process::Command;

use extauth_tests::{
    Broker, Idp, answer, binary, client, csrf_of, free_port, percentile, private_ca,
};
use serde_json::json;

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Fisher–Yates with xorshift: the order of one round (no need for a random crate here).
fn shuffle(order: &mut [usize], seed: &mut u64) {
    for i in (1..order.len()).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        order.swap(i, (*seed % (i as u64 + 1)) as usize);
    }
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
            "extauth (no agent)",
            format!(
                "HOME={} GIT_CONFIG_NOSYSTEM=1 EXTAUTH_AGENT=off EXTAUTH_URL={} EXTAUTH_TOKEN={} git -c credential.helper= -c credential.helper={} credential fill < {}",
                home("extauth"),
                broker.url,
                token,
                sh_quote(&helper.display().to_string()),
                sh_quote(&input.display().to_string())
            ),
        ),
        (
            "extauth (https, no agent)",
            format!(
                "HOME={} GIT_CONFIG_NOSYSTEM=1 EXTAUTH_AGENT=off EXTAUTH_URL={} EXTAUTH_TOKEN={} EXTAUTH_CA_FILE={} git -c credential.helper= -c credential.helper={} credential fill < {}",
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
    let baseline = std::env::var("EXTAUTH_BENCH_BASELINE_HELPER").ok();
    let has_baseline = baseline.is_some();
    if let Some(baseline) = baseline {
        commands.push((
            "extauth (baseline helper)",
            format!(
                "HOME={} GIT_CONFIG_NOSYSTEM=1 EXTAUTH_AGENT=off EXTAUTH_URL={} EXTAUTH_TOKEN={} git -c credential.helper= -c credential.helper={} credential fill < {}",
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

    // Timed in rounds, each command once per round in a shuffled order, rather than one
    // command's runs in a block (as hyperfine does): on a shared machine the speed drifts over
    // a minute, and blocks turn that drift into a difference between commands. Interleaving
    // makes the ratios fair; the instruction counts under callgrind agree with them.
    let warmup = 10;
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(runs as usize); commands.len()];
    let mut order: Vec<usize> = (0..commands.len()).collect();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    for round in 0..warmup + runs {
        shuffle(&mut order, &mut seed);
        for &i in &order {
            let at = std::time::Instant::now();
            let status = Command::new("sh")
                .arg("-c")
                .arg(&commands[i].1)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            let ms = at.elapsed().as_secs_f64() * 1000.0;
            assert!(
                status.success(),
                "{} failed in round {round}",
                commands[i].0
            );
            if round >= warmup {
                samples[i].push(ms);
            }
        }
    }
    for s in &mut samples {
        s.sort_by(f64::total_cmp);
    }
    let store = commands
        .iter()
        .position(|(name, _)| *name == "credential-store")
        .unwrap();
    let store_median = percentile(&samples[store], 0.5);
    println!("{runs} interleaved rounds (after {warmup} warm-up rounds), same run:\n");
    println!("| helper | median ms | p90 ms | ratio to credential-store (median) |");
    println!("|---|---:|---:|---:|");
    let mut rows = Vec::new();
    for ((name, _), s) in commands.iter().zip(&samples) {
        let (median, p90) = (percentile(s, 0.5), percentile(s, 0.9));
        println!(
            "| {name} | {median:.2} | {p90:.2} | {:.2}× |",
            median / store_median
        );
        rows.push(json!({
            "name": name,
            "median_ms": median,
            "p90_ms": p90,
            "ratio_to_credential_store": median / store_median,
            "samples_ms": s,
        }));
    }
    if let Some(baseline) = samples.get(commands.len() - 1).filter(|_| has_baseline) {
        println!(
            "\nthis helper / baseline helper, both without the agent (medians, same rounds): {:.3}×",
            percentile(&samples[2], 0.5) / percentile(baseline, 0.5)
        );
    }
    if let Ok(out) = std::env::var("EXTAUTH_BENCH_OUT") {
        let path = Path::new(&out).join("credential.json");
        write(
            &path,
            &serde_json::to_string_pretty(&json!({ "runs": runs, "helpers": rows })).unwrap(),
        );
    }
    let _ = Command::new("git")
        .args(["credential-cache", "exit"])
        .env("HOME", &cache_home)
        .status();
    // The helpers' connection agents (one per broker), stopped by the pids they wrote.
    for name in ["extauth", "extauth-https"] {
        let Ok(entries) = std::fs::read_dir(d.join(name).join(".cache/extauth")) else {
            continue;
        };
        for pid_file in entries.flatten().map(|e| e.path()) {
            if pid_file.extension().is_some_and(|x| x == "pid") {
                let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
    broker.stop();
    tls_broker.stop();
}
