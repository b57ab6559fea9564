//! `/oauth2/tokens` throughput on one grant, client credentials, side by side in one run:
//! extauth's authorization server (release build, embedded store) and the peer, `oidc-provider`
//! (a certified OpenID Provider, the tests' IdP) on the same grant. DESIGN.md §10 asks extauth for
//! at least 5× the peer.
//!
//! Run through `tests/perf/token-bench.sh`. Arguments: seconds per run (default 5) and
//! connections (default 16). The load is `wrk` (2 threads, keep-alive), bounded in time;
//! everything listens on 127.0.0.1. extauth's per-client pace (`EXTAUTH_OAUTH2_RATE_LIMIT`) is
//! turned off for the run, as the peer has none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::Command;

use base64::Engine as _;
use extauth_tests::{Broker, Idp, answer, free_port};
use serde_json::json;

struct Outcome {
    name: &'static str,
    rate: f64,
    errors: u64,
    p50: String,
    p99: String,
}

/// `wrk` posting the client-credentials grant with HTTP Basic to `url`; its report read back.
fn wrk(
    name: &'static str,
    url: &str,
    id: &str,
    secret: &str,
    seconds: u64,
    connections: usize,
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let script = dir.path().join("grant.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = \"grant_type=client_credentials\"\n\
             wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n\
             wrk.headers[\"Authorization\"] = \"Basic {basic}\"\n"
        ),
    )
    .unwrap();
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
    };
    Outcome {
        name,
        rate: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        errors: field("Non-2xx or 3xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        p50: field("50%").unwrap_or_default(),
        p99: field("99%").unwrap_or_default(),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(5, |a| a.parse().expect("seconds"));
    let concurrency: usize = args.next().map_or(16, |a| a.parse().expect("clients"));

    let idp = Idp::start(json!({ "clients": [{
        "client_id": "bench", "client_secret": "bench-secret",
        "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": [],
        "token_endpoint_auth_method": "client_secret_basic",
    }] }));
    let data = tempfile::tempdir().unwrap();
    let env = vec![
        ("EXTAUTH_LOG".to_owned(), "warn".to_owned()),
        ("EXTAUTH_OAUTH2_RATE_LIMIT".to_owned(), "0".to_owned()),
    ];
    let broker = Broker::start(free_port(), data.path(), &env);
    let (admin, csrf) = broker.admin().await;
    let app = answer(
        admin
            .post(format!("{}/api/v2/oauth2-provider/apps", broker.url))
            .header("X-CSRF-Token", &csrf)
            .json(
                &json!({"name": "bench", "callback_url": "https://app.example/cb",
                          "scopes": ["user:read"]}),
            ),
    )
    .await;
    let id = app["id"].as_str().unwrap().to_owned();
    let secret = answer(
        admin
            .post(format!(
                "{}/api/v2/oauth2-provider/apps/{id}/secrets",
                broker.url
            ))
            .header("X-CSRF-Token", &csrf),
    )
    .await["client_secret_full"]
        .as_str()
        .unwrap()
        .to_owned();

    let ours = format!("{}/oauth2/tokens", broker.url);
    let peer = format!("{}/token", idp.issuer);
    // Warm-up (the peer's JIT, connections), then alternating runs, twice each, so that a noisy
    // neighbour hurts both alike.
    wrk("warm-up", &ours, &id, &secret, 2, concurrency);
    wrk("warm-up", &peer, "bench", "bench-secret", 3, concurrency);
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        outcomes.push(wrk("extauth", &ours, &id, &secret, seconds, concurrency));
        outcomes.push(wrk(
            "oidc-provider",
            &peer,
            "bench",
            "bench-secret",
            seconds,
            concurrency,
        ));
    }
    broker.stop();

    println!(
        "client_credentials at /oauth2/tokens, {concurrency} clients, {seconds} s per run, alternating\n"
    );
    println!(
        "{:<16} {:>10} {:>8} {:>10} {:>10}",
        "server", "req/s", "non-2xx", "p50", "p99"
    );
    for o in &outcomes {
        println!(
            "{:<16} {:>10.0} {:>8} {:>10} {:>10}",
            o.name, o.rate, o.errors, o.p50, o.p99
        );
        assert_eq!(o.errors, 0, "{} answered errors", o.name);
    }
    let best = |name: &str| {
        outcomes
            .iter()
            .filter(|o| o.name == name)
            .map(|o| o.rate)
            .fold(0.0, f64::max)
    };
    let ratio = best("extauth") / best("oidc-provider");
    println!("\nextauth / oidc-provider (best of each): {ratio:.2}× (goal ≥ 5×)");
}
