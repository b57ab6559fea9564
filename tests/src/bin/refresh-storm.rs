//! Refresh storm benchmark: N concurrent workspace lookups of one expired token, against the
//! real broker and `oidc-provider` on loopback. Reports the refresh grants the IdP served
//! (the target is exactly 1 at every size), latency percentiles and errors.
//!
//! Run through `tests/perf/refresh-storm.sh` (release build). Sizes are arguments (default
//! 500 2000); each storm is one bounded burst.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use extauth_tests::{Broker, Idp, client, free_port, provider_env};
use serde_json::json;

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are numbers"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![500, 2000]
    } else {
        sizes
    };

    let port = free_port();
    let idp = Idp::start(json!({
        "clients": [client("broker", "broker-secret", &[format!("http://127.0.0.1:{port}/external-auth/forge/callback")], false)]
    }));
    let mut env = provider_env(
        0,
        "forge",
        &idp.issuer,
        "broker",
        "broker-secret",
        "git.forge.test",
    );
    env.push(("EXTAUTH_REFRESH_MARGIN".into(), "0s".into()));
    env.push(("EXTAUTH_LOG".into(), "warn".into()));
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    let (admin, csrf) = broker.admin().await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "storm"}))
        .await;

    println!(
        "| concurrent lookups | upstream refreshes | distinct tokens | errors | p50 ms | p99 ms | max ms | wall ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for (n, size) in sizes.into_iter().enumerate() {
        // A fresh link whose token lives 1 s, while the token the refresh will issue lives an
        // hour: waiting 1.3 s makes the stored one expired, and nothing in the storm can expire
        // again (token expiry is kept in whole seconds, so a 1 s token may look expired at the
        // next second boundary).
        if n > 0 {
            let unlinked = admin
                .delete(format!("{}/api/v2/external-auth/forge", broker.url))
                .header("X-CSRF-Token", &csrf)
                .send()
                .await
                .unwrap();
            assert!(unlinked.status().is_success());
        }
        idp.set_access_token_ttl(1).await;
        broker.link(&admin, "forge").await;
        idp.set_access_token_ttl(3600).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let before = idp.refreshes().await;
        let url = format!(
            "{}/api/v2/workspaceagents/me/external-auth?id=forge",
            broker.url
        );
        let started = Instant::now();
        let tasks: Vec<_> = (0..size)
            .map(|_| {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let reply = http.get(url).bearer_auth(token).send().await;
                    let body = match reply {
                        Ok(r) if r.status().is_success() => {
                            r.json::<serde_json::Value>().await.ok()
                        }
                        _ => None,
                    };
                    (
                        sent.elapsed(),
                        body.and_then(|b| b["access_token"].as_str().map(str::to_owned)),
                    )
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(size);
        let mut tokens = std::collections::BTreeSet::new();
        let mut errors = 0;
        for task in tasks {
            let (latency, token) = task.await.unwrap();
            latencies.push(latency);
            match token {
                Some(t) if !t.is_empty() => {
                    tokens.insert(t);
                }
                _ => errors += 1,
            }
        }
        let wall = started.elapsed();
        let refreshes = idp.refreshes().await - before;
        latencies.sort();
        let pct = |p: f64| {
            latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]
                .as_secs_f64()
                * 1000.0
        };
        println!(
            "| {size} | {refreshes} | {} | {errors} | {:.1} | {:.1} | {:.1} | {:.0} |",
            tokens.len(),
            pct(0.50),
            pct(0.99),
            pct(1.0),
            wall.as_secs_f64() * 1000.0
        );
    }
    broker.stop();
}
