//! Workspace lookup throughput and latency on each store, side by side in one run: the
//! embedded sled store, PostgreSQL with one replica, PostgreSQL with two replicas (requests
//! alternate between them), and the peer, nginx serving a static file as large as a lookup's
//! answer. Ratios are against nginx and against sled in the same run.
//!
//! Run through `tests/perf/store-bench.sh` (release build). Arguments: seconds per setup
//! (default 5) and concurrent clients (default 32). The load is `wrk` (keep-alive, bounded in
//! time), the same for every setup; everything listens on 127.0.0.1. With
//! `EXTAUTH_BENCH_OUT=dir` the results also go to `dir/lookup.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Duration;

use base64::Engine as _;
use extauth_tests::{Broker, Idp, TestDatabase, client, free_port, provider_env};
use serde_json::json;

/// What `wrk` measured for one URL.
struct Measured {
    requests: f64,
    errors: f64,
    seconds: f64,
    /// (percentile, ms) from 50 to 99.9.
    percentiles: Vec<(f64, f64)>,
}

/// wrk's report, as JSON from its `done` hook: the totals and the latency percentiles.
const REPORT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout + e.status
  io.write(string.format('{"requests":%d,"errors":%d,"micros":%d,"percentiles":[',
    summary.requests, errors, summary.duration))
  for i, p in ipairs({50, 75, 90, 95, 99, 99.9}) do
    if i > 1 then io.write(",") end
    io.write(string.format("[%g,%g]", p, latency:percentile(p) / 1000.0))
  end
  io.write("]}\n")
end
"#;

/// Loads `urls` with wrk (keep-alive, 2 threads; the clients split between the URLs, each URL
/// its own wrk, all at once) for `seconds`; the load generator is not in this process, so it
/// costs the same whatever answers.
fn load(urls: &[String], token: &str, seconds: u64, concurrency: usize) -> Measured {
    // The token goes in the script (a private temporary directory), not on wrk's command line,
    // where any local user could read it.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("report.lua");
    let header = if token.is_empty() {
        String::new()
    } else {
        format!("wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n")
    };
    std::fs::write(&script, header + REPORT).unwrap();
    let per_url = (concurrency / urls.len()).max(2);
    let children: Vec<_> = urls
        .iter()
        .map(|url| {
            let mut wrk = std::process::Command::new("wrk");
            wrk.args(["-t2", &format!("-c{per_url}"), &format!("-d{seconds}s")])
                .arg("-s")
                .arg(&script);
            wrk.arg(url)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("wrk is the load generator: apt-get install wrk")
        })
        .collect();
    let mut total = Measured {
        requests: 0.0,
        errors: 0.0,
        seconds: 0.0,
        percentiles: Vec::new(),
    };
    for child in children {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| l.starts_with('{')).unwrap();
        let report: serde_json::Value = serde_json::from_str(line).unwrap();
        total.requests += report["requests"].as_f64().unwrap();
        total.errors += report["errors"].as_f64().unwrap();
        total.seconds = f64::max(total.seconds, report["micros"].as_f64().unwrap() / 1e6);
        // With several URLs, the worse tail of the two stands for the setup.
        let percentiles: Vec<(f64, f64)> = report["percentiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
            .collect();
        if total.percentiles.is_empty() {
            total.percentiles = percentiles;
        } else {
            for (mine, theirs) in total.percentiles.iter_mut().zip(percentiles) {
                mine.1 = mine.1.max(theirs.1);
            }
        }
    }
    total
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
        // Warm-up: connections, caches, the database's plans.
        load(&urls, &token, 1, concurrency);
        outcomes.push((name, load(&urls, &token, seconds, concurrency)));
        for b in brokers {
            b.stop();
        }
    }

    // The peer: nginx serving a static file as large as a lookup's answer, same client, same
    // run. DESIGN.md §10 asks sled lookups for at least half its rate.
    {
        let nginx = Nginx::start(&answer, free_port());
        let urls = [nginx.url.clone()];
        load(&urls, "", 1, concurrency);
        outcomes.push((
            "nginx, static file of the same size",
            load(&urls, "", seconds, concurrency),
        ));
    }

    println!(
        "{concurrency} concurrent clients, {seconds} s per setup, same run; answers of {} bytes:\n",
        answer.len()
    );
    println!(
        "| setup | requests | errors | req/s | vs nginx | vs sled | p50 ms | p99 ms | p99 vs sled |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let rate = |o: &Measured| o.requests / o.seconds;
    let p = |o: &Measured, at: f64| {
        o.percentiles
            .iter()
            .find(|(q, _)| *q == at)
            .map_or(f64::NAN, |(_, ms)| *ms)
    };
    let sled = &outcomes[0].1;
    let nginx = &outcomes[outcomes.len() - 1].1;
    let mut rows = Vec::new();
    for (name, o) in &outcomes {
        println!(
            "| {name} | {} | {} | {:.0} | {:.2}× | {:.2}× | {:.2} | {:.2} | {:.2}× |",
            o.requests,
            o.errors,
            rate(o),
            rate(o) / rate(nginx),
            rate(o) / rate(sled),
            p(o, 50.0),
            p(o, 99.0),
            p(o, 99.0) / p(sled, 99.0)
        );
        rows.push(json!({
            "setup": name,
            "requests": o.requests,
            "errors": o.errors,
            "per_second": rate(o),
            "vs_nginx": rate(o) / rate(nginx),
            "vs_sled": rate(o) / rate(sled),
            "percentiles_ms": o.percentiles,
        }));
    }
    if let Ok(out) = std::env::var("EXTAUTH_BENCH_OUT") {
        std::fs::create_dir_all(&out).unwrap();
        let doc = json!({ "clients": concurrency, "seconds": seconds, "answer_bytes": answer.len(), "setups": rows });
        std::fs::write(
            std::path::Path::new(&out).join("lookup.json"),
            serde_json::to_string_pretty(&doc).unwrap(),
        )
        .unwrap();
    }
}
