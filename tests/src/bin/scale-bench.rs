//! The broker at scale: users with 3 links each (and a workspace token each), seeded straight
//! into the store (the embedded sled store, or PostgreSQL with `--postgres`), then served.
//! Reports how long the broker took to be ready, its resident memory after start and after the
//! load, lookup latency for random users (issue 20: RSS ≤ 300 MB and p99 ≤ 2 ms at 4 clients
//! for a million users, ready ≤ 1 s), and lookups of 10 000 different tokens at random against
//! the same load with one token (≥ 0.7×: no cache luck).
//!
//! Run through `tests/perf/scale-bench.sh [users] [lookups] [--postgres]` (release build). The
//! load is bounded: `lookups` / 5 requests from 4 clients (random users, then 10 000 tokens,
//! then one token), then `lookups` (default 50 000) from 32, on 127.0.0.1. With
//! `EXTAUTH_BENCH_OUT=dir` the results also go to `dir/scale-<store>.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use extauth_broker::crypto::KeyRing;
use extauth_broker::identity::mint;
use extauth_broker::link_secrets::purpose;
use extauth_broker::store::{LinkRecord, SledStore, Snapshot, Store, TokenKind, User};
use extauth_tests::{Broker, TestDatabase, free_port, percentile};
use serde_json::json;

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
    /// Every 10th latency, sorted: enough for a percentile plot.
    latencies: Vec<f64>,
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
    let pct = |p: f64| percentile(&latencies, p);
    Run {
        latencies: latencies.iter().step_by(10).copied().collect(),
        count: latencies.len(),
        errors,
        rate: latencies.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

#[tokio::main]
async fn main() {
    let postgres = std::env::args().any(|a| a == "--postgres");
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let users: usize = args.next().map_or(100_000, |a| a.parse().expect("users"));
    let lookups: usize = args.next().map_or(50_000, |a| a.parse().expect("lookups"));
    let store_name = if postgres { "postgres" } else { "sled" };

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
    let database = if postgres {
        let db = TestDatabase::create().await;
        let store = extauth_broker::store::PgStore::connect(&db.url)
            .await
            .unwrap();
        // In slices: one transaction per slice keeps the database's memory flat.
        for chunk in 0..snapshot.users.len().div_ceil(50_000) {
            let range = |len: usize, per: usize| {
                (chunk * 50_000 * per).min(len)..((chunk + 1) * 50_000 * per).min(len)
            };
            let slice = Snapshot {
                users: snapshot.users[range(snapshot.users.len(), 1)].to_vec(),
                tokens: snapshot.tokens[range(snapshot.tokens.len(), 1)].to_vec(),
                links: snapshot.links[range(snapshot.links.len(), 3)].to_vec(),
                ..Snapshot::default()
            };
            store.import(&slice).await.unwrap();
        }
        Some(db)
    } else {
        let store = SledStore::open(&data.path().join("store")).unwrap();
        store.import(&snapshot).await.unwrap();
        None
    };
    let seeded = seeding.elapsed();
    // After a bulk import PostgreSQL has its own work to do (statistics, dirty pages): done
    // here, so lookups are measured on a database as it runs day to day, not during that.
    let settling = std::time::Instant::now();
    if let Some(db) = &database {
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        client.batch_execute("VACUUM ANALYZE").await.unwrap();
        client.batch_execute("CHECKPOINT").await.unwrap();
        drop(client);
        let _ = connection.await;
    }
    let settled = settling.elapsed();
    drop(snapshot);

    let port = free_port();
    let key_of = |n: usize| format!("CODER_EXTERNAL_AUTH_{n}_");
    let mut env: Vec<(String, String)> = vec![
        ("CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS".into(), key),
        ("EXTAUTH_LOG".into(), "warn".into()),
    ];
    if let Some(db) = &database {
        env.push(("CODER_PG_CONNECTION_URL".into(), db.url.clone()));
    }
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

    let ten_thousand = Arc::new(tokens[..tokens.len().min(10_000)].to_vec());
    let one = Arc::new(vec![tokens[0].clone()]);
    let tokens = Arc::new(tokens);
    // A light load (4 clients), then a heavy one (32): the latency target is about the first;
    // the second shows throughput and what a saturated 2-core machine does to the tail.
    let light = load(&broker.url, &tokens, lookups / 5, 4).await;
    // 10 000 tokens at random against one token, same load, back to back (and again in the
    // other order, so that neither gains from going second).
    let spread_1 = load(&broker.url, &ten_thousand, lookups / 5, 4).await;
    let single_1 = load(&broker.url, &one, lookups / 5, 4).await;
    let single_2 = load(&broker.url, &one, lookups / 5, 4).await;
    let spread_2 = load(&broker.url, &ten_thousand, lookups / 5, 4).await;
    let heavy = load(&broker.url, &tokens, lookups, 32).await;
    let rss_after = rss_mb(pid);
    broker.stop();
    drop(database);
    let spread_rate = (spread_1.rate + spread_2.rate) / 2.0;
    let single_rate = (single_1.rate + single_2.rate) / 2.0;

    println!(
        "{users} users × 3 links (+ a workspace token each) on {store_name}, seeded in {:.1} s, settled in {:.1} s (PostgreSQL: VACUUM ANALYZE, CHECKPOINT)\n",
        seeded.as_secs_f64(),
        settled.as_secs_f64(),
    );
    println!("| measure | value | target |");
    println!("|---|---:|---:|");
    println!(
        "| broker ready after start | {:.2} s | ≤ 1 s |",
        start_time.as_secs_f64()
    );
    println!("| RSS after start | {rss_start:.0} MB | ≤ 300 MB |");
    println!(
        "| RSS after {} lookups | {rss_after:.0} MB | ≤ 300 MB |",
        light.count + heavy.count + 2 * (spread_1.count + single_1.count)
    );
    println!(
        "| 10 000 tokens at random / one token (4 clients, lookups/s) | {spread_rate:.0} / {single_rate:.0} = {:.2}× | ≥ 0.7× |",
        spread_rate / single_rate
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
    if let Ok(out) = std::env::var("EXTAUTH_BENCH_OUT") {
        let run = |r: &Run| json!({"lookups": r.count, "errors": r.errors, "per_second": r.rate, "p50_ms": r.p50, "p99_ms": r.p99});
        let doc = json!({
            "store": store_name,
            "users": users,
            "seeded_s": seeded.as_secs_f64(),
            "settled_s": settled.as_secs_f64(),
            "ready_s": start_time.as_secs_f64(),
            "rss_start_mb": rss_start,
            "rss_after_mb": rss_after,
            "light": run(&light),
            "heavy": run(&heavy),
            "ten_thousand_tokens_per_second": spread_rate,
            "one_token_per_second": single_rate,
            "latencies_ms": light.latencies,
        });
        let path = std::path::Path::new(&out).join(format!("scale-{store_name}.json"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
}
