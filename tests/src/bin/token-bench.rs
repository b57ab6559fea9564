//! `/oauth2/tokens` throughput on one grant, client credentials, side by side in one run:
//! extauth's authorization server (release build, embedded store) and the peer, `oidc-provider`
//! (a certified OpenID Provider, the tests' IdP) on the same grant. DESIGN.md §10 asks extauth for
//! at least 5× the peer.
//!
//! Run through `tests/perf/token-bench.sh`. Arguments: seconds per server (default 5) and
//! concurrent clients (default 16). A closed loop bounded in time and in count (at most 200 000
//! requests per server); everything listens on 127.0.0.1. extauth's per-client pace
//! (`EXTAUTH_OAUTH2_RATE_LIMIT`) is turned off for the run, as the peer has none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use extauth_tests::{Broker, Idp, answer, free_port};
use serde_json::{Value, json};

const MAX_REQUESTS: usize = 200_000;

struct Outcome {
    name: &'static str,
    requests: usize,
    errors: usize,
    seconds: f64,
    p50: f64,
    p99: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        (self.requests - self.errors) as f64 / self.seconds
    }
}

/// Client-credentials requests to `url` with HTTP Basic, `concurrency` at a time.
async fn load(
    name: &'static str,
    url: String,
    id: String,
    secret: String,
    seconds: u64,
    concurrency: usize,
) -> Outcome {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 2)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let send = |http: reqwest::Client, url: String, id: String, secret: String| async move {
        match http
            .post(&url)
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["access_token"].is_string()),
            _ => false,
        }
    };
    for _ in 0..100 {
        assert!(
            send(http.clone(), url.clone(), id.clone(), secret.clone()).await,
            "{name} answers the grant"
        );
    }
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, id, secret, sent) = (
                http.clone(),
                url.clone(),
                id.clone(),
                secret.clone(),
                sent.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while Instant::now() < deadline
                    && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                {
                    let at = Instant::now();
                    if !send(http.clone(), url.clone(), id.clone(), secret.clone()).await {
                        errors += 1;
                    }
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let at = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize];
    Outcome {
        name,
        requests: all.len(),
        errors,
        seconds,
        p50: at(0.50),
        p99: at(0.99),
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

    // Alternating, twice each, so that a noisy neighbour hurts both alike.
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        outcomes.push(
            load(
                "extauth",
                format!("{}/oauth2/tokens", broker.url),
                id.clone(),
                secret.clone(),
                seconds,
                concurrency,
            )
            .await,
        );
        outcomes.push(
            load(
                "oidc-provider",
                format!("{}/token", idp.issuer),
                "bench".to_owned(),
                "bench-secret".to_owned(),
                seconds,
                concurrency,
            )
            .await,
        );
    }
    broker.stop();

    println!(
        "client_credentials at /oauth2/tokens, {concurrency} clients, {seconds} s per run, alternating\n"
    );
    println!(
        "{:<16} {:>10} {:>8} {:>10} {:>10}",
        "server", "req/s", "errors", "p50 ms", "p99 ms"
    );
    for o in &outcomes {
        println!(
            "{:<16} {:>10.0} {:>8} {:>10.2} {:>10.2}",
            o.name,
            o.rate(),
            o.errors,
            o.p50,
            o.p99
        );
    }
    let best = |name: &str| {
        outcomes
            .iter()
            .filter(|o| o.name == name)
            .map(Outcome::rate)
            .fold(0.0, f64::max)
    };
    let ratio = best("extauth") / best("oidc-provider");
    println!("\nextauth / oidc-provider (best of each): {ratio:.2}× (goal ≥ 5×)");
}
