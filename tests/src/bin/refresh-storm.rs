//! Refresh storm benchmark: N concurrent workspace lookups of one expired token, against the
//! real broker and `oidc-provider` on loopback. Reports the refresh grants the IdP served
//! (the target is exactly 1 at every size), latency percentiles and errors.
//!
//! Run through `tests/perf/refresh-storm.sh` (release build). Sizes are arguments (default
//! 500 2000); each storm is one bounded burst. `--replicas` runs two brokers on one PostgreSQL
//! database (the local one, `EXTAUTH_TEST_PG_URL`) and sends the storm's lookups to both in
//! turn: still exactly one refresh. `EXTAUTH_BENCH_OUT=dir` also writes
//! `dir/refresh-storm-<1-broker|2-replicas>.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use base64::Engine as _;

use extauth_tests::{Broker, Idp, TestDatabase, client, free_port, provider_env};
use serde_json::json;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let replicas = args.iter().any(|a| a == "--replicas");
    let sizes: Vec<usize> = args
        .iter()
        .filter(|a| *a != "--replicas")
        .map(|a| {
            a.parse()
                .expect("sizes are numbers; the one flag is --replicas")
        })
        .collect();
    let sizes = if sizes.is_empty() {
        vec![500, 2000]
    } else {
        sizes
    };

    let ports: Vec<u16> = (0..if replicas { 2 } else { 1 })
        .map(|_| free_port())
        .collect();
    let callbacks: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}/external-auth/forge/callback"))
        .collect();
    let idp = Idp::start(json!({
        "clients": [client("broker", "broker-secret", &callbacks, false)]
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
    let database = if replicas {
        let db = TestDatabase::create().await;
        env.push(("CODER_PG_CONNECTION_URL".into(), db.url.clone()));
        // Replicas share the database and so the key that encrypts what is in it.
        env.push((
            "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS".into(),
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        ));
        Some(db)
    } else {
        None
    };
    let dirs: Vec<_> = ports.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let brokers: Vec<Broker> = ports
        .iter()
        .zip(&dirs)
        .map(|(port, dir)| Broker::start(*port, dir.path(), &env))
        .collect();
    let broker = &brokers[0];
    let (admin, csrf) = broker.admin().await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "storm"}))
        .await;
    let setup = if replicas { "2-replicas" } else { "1-broker" };
    println!(
        "{}\n",
        if replicas {
            "two replicas on one PostgreSQL database, lookups sent to each in turn"
        } else {
            "one broker, embedded store"
        }
    );
    println!(
        "| concurrent lookups | upstream refreshes | distinct tokens | errors | p50 ms | p99 ms | max ms | wall ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut rows = Vec::new();
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
        let urls: Vec<String> = brokers
            .iter()
            .map(|b| format!("{}/api/v2/workspaceagents/me/external-auth?id=forge", b.url))
            .collect();
        let started = Instant::now();
        let tasks: Vec<_> = (0..size)
            .map(|i| {
                let url = urls[i % urls.len()].clone();
                let (http, token) = (http.clone(), token.clone());
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
        rows.push(json!({
            "lookups": size,
            "refreshes": refreshes,
            "distinct_tokens": tokens.len(),
            "errors": errors,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        }));
    }
    for broker in brokers {
        broker.stop();
    }
    drop(database);
    if let Ok(out) = std::env::var("EXTAUTH_BENCH_OUT") {
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(
            std::path::Path::new(&out).join(format!("refresh-storm-{setup}.json")),
            serde_json::to_string_pretty(&json!({ "setup": setup, "storms": rows })).unwrap(),
        )
        .unwrap();
    }
}
