//! The broker at scale on the embedded store: 100 000 users with 3 links each (and a workspace
//! token each), seeded straight into a sled store, then served. Reports the broker's resident
//! memory after start and after the load, and lookup latency for random users (DESIGN.md §10:
//! RSS ≤ 200 MB, p99 ≤ 2 ms).
//!
//! Run through `tests/perf/scale-bench.sh [users] [lookups]` (release build). The load is
//! bounded: `lookups` / 5 requests from 4 clients, then `lookups` (default 50 000) from 32, on
//! 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use extauth_broker::crypto::KeyRing;
use extauth_broker::identity::mint;
use extauth_broker::link_secrets::purpose;
use extauth_broker::store::{LinkRecord, SledStore, Snapshot, Store, TokenKind, User};
use extauth_tests::{Broker, free_port};

const PROVIDERS: [&str; 3] = ["github", "gitlab", "forge"];

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Run {
    count: usize,
    errors: usize,
    rate: f64,
    p50: f64,
    p99: f64,
}

/// `lookups` requests for random users and providers from `clients` concurrent clients.
async fn load(url: &str, tokens: &Arc<Vec<String>>, lookups: usize, clients: usize) -> Run {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients * 2)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|w| {
            let (http, tokens, next, url) =
                (http.clone(), tokens.clone(), next.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                // A cheap spread over all users and providers (no two workers in step).
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1);
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < lookups {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let user = (x % tokens.len() as u64) as usize;
                    let provider = PROVIDERS[(x >> 32) as usize % 3];
                    let at = Instant::now();
                    let ok = match http
                        .get(format!(
                            "{url}/api/v2/workspaceagents/me/external-auth?id={provider}"
                        ))
                        .bearer_auth(&tokens[user])
                        .send()
                        .await
                    {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                    errors += usize::from(!ok);
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    Run {
        count: latencies.len(),
        errors,
        rate: latencies.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let users: usize = args.next().map_or(100_000, |a| a.parse().expect("users"));
    let lookups: usize = args.next().map_or(50_000, |a| a.parse().expect("lookups"));

    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let ring = KeyRing::parse(&key).unwrap();
    let data = tempfile::tempdir().unwrap();

    // Seed: users, one workspace token each, three links each, tokens sealed as the broker
    // seals them.
    let seeding = Instant::now();
    let mut snapshot = Snapshot::default();
    let mut tokens = Vec::with_capacity(users);
    for n in 0..users {
        let id = format!("{n:032x}");
        snapshot.users.push(User {
            id: id.clone(),
            username: format!("user{n}"),
            email: format!("user{n}@example.com"),
            name: format!("User {n}"),
            is_admin: false,
            oidc: None,
            created_at: 1,
        });
        let minted = mint(TokenKind::Workspace, &id, "ws", None, None);
        tokens.push(minted.token);
        snapshot.tokens.push(minted.record);
        for provider in PROVIDERS {
            let seal = |field: &str, value: String| {
                ring.seal(&purpose(&id, provider, field), value.as_bytes())
            };
            snapshot.links.push(LinkRecord {
                user_id: id.clone(),
                provider_id: provider.to_owned(),
                account: String::new(),
                is_default: true,
                owners: Vec::new(),
                access_token: seal("access", format!("gho_{n:036}")),
                refresh_token: Some(seal("refresh", format!("ghr_{n:076}"))),
                expires_at: None,
                extra: None,
                refresh_failure: None,
                needs_validation: false,
                created_at: 1,
                updated_at: 1,
                refresh_expires_at: None,
            });
        }
    }
    {
        let store = SledStore::open(&data.path().join("store")).unwrap();
        store.import(&snapshot).await.unwrap();
    }
    let seeded = seeding.elapsed();
    drop(snapshot);

    let port = free_port();
    let key_of = |n: usize| format!("CODER_EXTERNAL_AUTH_{n}_");
    let mut env: Vec<(String, String)> = vec![
        ("CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS".into(), key),
        ("EXTAUTH_LOG".into(), "warn".into()),
    ];
    if let Ok(v) = std::env::var("MALLOC_ARENA_MAX") {
        env.push(("MALLOC_ARENA_MAX".into(), v));
    }
    for (n, provider) in PROVIDERS.iter().enumerate() {
        env.push((format!("{}ID", key_of(n)), (*provider).to_owned()));
        env.push((format!("{}TYPE", key_of(n)), (*provider).to_owned()));
        env.push((format!("{}CLIENT_ID", key_of(n)), "client".to_owned()));
        env.push((format!("{}CLIENT_SECRET", key_of(n)), "secret".to_owned()));
        if *provider == "forge" {
            env.push((
                format!("{}AUTH_URL", key_of(n)),
                "https://forge.test/auth".to_owned(),
            ));
            env.push((
                format!("{}TOKEN_URL", key_of(n)),
                "https://forge.test/token".to_owned(),
            ));
        }
    }
    let started = Instant::now();
    let broker = Broker::start(port, data.path(), &env);
    let start_time = started.elapsed();
    let pid = broker.pid();
    let rss_start = rss_mb(pid);

    let tokens = Arc::new(tokens);
    // A light load (4 clients), then a heavy one (32): the latency target is about the first;
    // the second shows throughput and what a saturated 2-core machine does to the tail.
    let light = load(&broker.url, &tokens, lookups / 5, 4).await;
    let heavy = load(&broker.url, &tokens, lookups, 32).await;
    let rss_after = rss_mb(pid);
    broker.stop();

    println!(
        "{users} users × 3 links (+ a workspace token each), seeded in {:.1} s; broker ready in {:.2} s\n",
        seeded.as_secs_f64(),
        start_time.as_secs_f64()
    );
    println!("| measure | value | target |");
    println!("|---|---:|---:|");
    println!("| RSS after start | {rss_start:.0} MB | ≤ 200 MB |");
    println!(
        "| RSS after {} lookups | {rss_after:.0} MB | ≤ 200 MB |",
        light.count + heavy.count
    );
    for (name, run, target) in [
        ("4 clients", &light, "p99 ≤ 2 ms"),
        ("32 clients", &heavy, ""),
    ] {
        println!(
            "| {name}: lookups/s, p50 / p99 ms, errors | {:.0}, {:.2} / {:.2}, {} | {target} |",
            run.rate, run.p50, run.p99, run.errors
        );
    }
}
