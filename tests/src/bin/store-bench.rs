//! Workspace lookup throughput and latency on each store, side by side in one run: the
//! embedded sled store, PostgreSQL with one replica, PostgreSQL with two replicas (requests
//! alternate between them), and the peer, nginx serving a static file as large as a lookup's
//! answer. Ratios are against nginx and against sled in the same run.
//!
//! Run through `tests/perf/store-bench.sh` (release build). Arguments: seconds per setup
//! (default 5) and concurrent clients (default 32). Load is a closed loop, bounded in time and
//! in count (at most 500 000 requests per setup); everything listens on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use extauth_tests::{Broker, Idp, TestDatabase, client, free_port, provider_env};
use serde_json::json;

const MAX_REQUESTS: usize = 500_000;

struct Outcome {
    name: &'static str,
    requests: usize,
    errors: usize,
    seconds: f64,
    p50: f64,
    p99: f64,
}

async fn load(
    urls: Vec<String>,
    token: String,
    seconds: u64,
    concurrency: usize,
) -> (Vec<f64>, usize, f64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 2)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Warm-up: connections, caches, the database's plans.
    for i in 0..200 {
        let _ = http
            .get(&urls[i % urls.len()])
            .bearer_auth(&token)
            .send()
            .await;
    }
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (http, urls, token, sent) =
                (http.clone(), urls.clone(), token.clone(), sent.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut n = w;
                while Instant::now() < deadline
                    && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                {
                    let at = Instant::now();
                    let ok = match http
                        .get(&urls[n % urls.len()])
                        .bearer_auth(&token)
                        .send()
                        .await
                    {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                    if !ok {
                        errors += 1;
                    }
                    n += 1;
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
    (all, errors, started.elapsed().as_secs_f64())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// nginx in the foreground on 127.0.0.1, serving one file; stopped (by pid) when dropped.
struct Nginx {
    url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(body: &[u8], port: u16) -> Self {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is the peer of this benchmark: apt-get install nginx");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("www")).unwrap();
        std::fs::write(root.join("www/answer.json"), body).unwrap();
        let conf = format!(
            "daemon off;\nworker_processes auto;\npid {r}/nginx.pid;\nerror_log {r}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 1000000; \
             client_body_temp_path {r}; proxy_temp_path {r}; fastcgi_temp_path {r}; uwsgi_temp_path {r}; scgi_temp_path {r};\n\
             server {{ listen 127.0.0.1:{port}; root {r}/www; default_type application/json; }} }}\n",
            r = root.display()
        );
        std::fs::write(root.join("nginx.conf"), conf).unwrap();
        let child = std::process::Command::new(binary)
            .arg("-p")
            .arg(root)
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            url: format!("http://127.0.0.1:{port}/answer.json"),
            child,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: nginx's graceful stop; its workers leave with the master.
        let _ = std::process::Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(5, |a| a.parse().expect("seconds"));
    let concurrency: usize = args.next().map_or(32, |a| a.parse().expect("clients"));

    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let callbacks: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}/external-auth/forge/callback"))
        .collect();
    let idp =
        Idp::start(json!({ "clients": [client("broker", "broker-secret", &callbacks, false)] }));
    let mut base_env = provider_env(
        0,
        "forge",
        &idp.issuer,
        "broker",
        "broker-secret",
        "git.forge.test",
    );
    base_env.push(("EXTAUTH_LOG".into(), "warn".into()));
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);

    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut outcomes = Vec::new();
    let mut answer: Vec<u8> = Vec::new();
    let setups: [(&'static str, usize); 3] = [
        ("sled, 1 broker", 1),
        ("PostgreSQL, 1 replica", 1),
        ("PostgreSQL, 2 replicas", 2),
    ];
    for (i, (name, replicas)) in setups.into_iter().enumerate() {
        let pg = i > 0;
        // Each PostgreSQL setup starts from an empty database of its own.
        let db = TestDatabase::create().await;
        let mut pg_env = base_env.clone();
        pg_env.push(("CODER_PG_CONNECTION_URL".into(), db.url.clone()));
        pg_env.push(("CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS".into(), key.clone()));
        let brokers: Vec<Broker> = (0..replicas)
            .map(|r| {
                let slot = if pg { 1 + r } else { 0 };
                let env = if pg { &pg_env } else { &base_env };
                Broker::start(ports[slot], dirs[slot].path(), env)
            })
            .collect();
        let first = &brokers[0];
        let (admin, csrf) = first.admin().await;
        first.link(&admin, "forge").await;
        let token = first
            .workspace_token(&admin, &csrf, "me", json!({"name": "bench"}))
            .await;
        let urls: Vec<String> = brokers
            .iter()
            .map(|b| format!("{}/api/v2/workspaceagents/me/external-auth?id=forge", b.url))
            .collect();
        if answer.is_empty() {
            answer = reqwest::Client::new()
                .get(&urls[0])
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec();
        }
        let (mut latencies, errors, elapsed) = load(urls, token, seconds, concurrency).await;
        latencies.sort_by(f64::total_cmp);
        outcomes.push(Outcome {
            name,
            requests: latencies.len(),
            errors,
            seconds: elapsed,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
        });
        for b in brokers {
            b.stop();
        }
    }

    // The peer: nginx serving a static file as large as a lookup's answer, same client, same
    // run. DESIGN.md §10 asks sled lookups for at least half its rate.
    {
        let nginx = Nginx::start(&answer, free_port());
        let (mut latencies, errors, elapsed) =
            load(vec![nginx.url.clone()], String::new(), seconds, concurrency).await;
        latencies.sort_by(f64::total_cmp);
        outcomes.push(Outcome {
            name: "nginx, static file of the same size",
            requests: latencies.len(),
            errors,
            seconds: elapsed,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
        });
    }

    println!(
        "{concurrency} concurrent clients, {seconds} s per setup, same run; answers of {} bytes:\n",
        answer.len()
    );
    println!(
        "| setup | requests | errors | req/s | vs nginx | vs sled | p50 ms | p99 ms | p99 vs sled |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let rate = |o: &Outcome| o.requests as f64 / o.seconds;
    let sled_rate = rate(&outcomes[0]);
    let nginx_rate = outcomes.last().map_or(f64::NAN, rate);
    let sled_p99 = outcomes[0].p99;
    for o in &outcomes {
        println!(
            "| {} | {} | {} | {:.0} | {:.2}× | {:.2}× | {:.2} | {:.2} | {:.2}× |",
            o.name,
            o.requests,
            o.errors,
            rate(o),
            rate(o) / nginx_rate,
            rate(o) / sled_rate,
            o.p50,
            o.p99,
            o.p99 / sled_p99
        );
    }
}
