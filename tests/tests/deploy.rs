//! Running extauth as operators do: the systemd unit (checked by `systemd-analyze`), the
//! broker telling systemd it is ready, and the health check an image without a shell runs.

use std::process::Command;
use std::time::Duration;

use extauth_tests::{Broker, binary, free_port};

fn systemd_analyze() -> &'static str {
    assert!(
        std::path::Path::new("/usr/bin/systemd-analyze").is_file(),
        "the unit test needs systemd-analyze (apt-get install systemd; ./tests/run installs it as root)"
    );
    "/usr/bin/systemd-analyze"
}

/// The unit as installed: its `ExecStart` pointed at the built broker.
fn installed_unit(dir: &std::path::Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/systemd/extauth-broker.service"
    ))
    .unwrap();
    let env_file = dir.join("extauth.env");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/systemd/extauth.env.example"
        ),
        &env_file,
    )
    .unwrap();
    let unit = unit
        .replace(
            "ExecStart=/usr/local/bin/extauth-broker",
            &format!("ExecStart={}", binary("extauth-broker").display()),
        )
        .replace(
            "EnvironmentFile=/etc/extauth/extauth.env",
            &format!("EnvironmentFile={}", env_file.display()),
        );
    let path = dir.join("extauth-broker.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_is_well_confined() {
    let dir = tempfile::tempdir().unwrap();
    let unit = installed_unit(dir.path());
    let out = Command::new(systemd_analyze())
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    let out = Command::new(systemd_analyze())
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for extauth-broker.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{report}"));
    assert!(
        score <= 2.0,
        "exposure {score} (README states 1.2):\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_tells_systemd_it_is_ready_and_answers_its_health_check() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let port = free_port();
    let broker = Broker::start(
        port,
        &dir.path().join("data"),
        &[(
            "NOTIFY_SOCKET".to_owned(),
            socket_path.display().to_string(),
        )],
    );
    let mut buf = [0u8; 64];
    let n = socket
        .recv(&mut buf)
        .expect("READY=1 reaches the notify socket");
    assert_eq!(&buf[..n], b"READY=1");

    let health = |port: u16| {
        Command::new(binary("extauth-broker"))
            .arg("healthcheck")
            .env_clear()
            .env("CODER_HTTP_ADDRESS", format!("0.0.0.0:{port}"))
            .env("EXTAUTH_DATA_DIR", dir.path().join("unused"))
            .output()
            .unwrap()
    };
    let out = health(port);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(broker.stop());
    let out = health(port);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not ready"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// JSON logs carry the request id the answer names in `X-Request-Id` (a proxy's own id kept),
/// and never the token the request made.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("broker.log");
    let broker = Broker::start_logging_to(
        free_port(),
        &dir.path().join("data"),
        &[("EXTAUTH_LOG_FORMAT".to_owned(), "json".to_owned())],
        &log,
    );
    let (admin, csrf) = broker.admin().await;
    let made = admin
        .post(format!("{}/api/v2/users/me/workspace-tokens", broker.url))
        .header("X-CSRF-Token", &csrf)
        .header("X-Request-Id", "proxy-abc-123")
        .json(&serde_json::json!({"name": "logged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.headers()["x-request-id"], "proxy-abc-123");
    let token: serde_json::Value = made.json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let own = admin
        .get(format!("{}/api/v2/users/me", broker.url))
        .header("X-Request-Id", "not ok; <script>")
        .send()
        .await
        .unwrap();
    let made_here = own.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        made_here.len(),
        16,
        "an id of its own when the given one is unusable"
    );
    assert!(broker.stop());
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("token created"))
        .unwrap_or_else(|| panic!("{text}"));
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["span"]["request_id"], "proxy-abc-123", "{entry}");
    assert_eq!(entry["span"]["path"], "/api/v2/users/me/workspace-tokens");
    assert!(!text.contains(&token), "the token is never logged");
}

/// The extauth series a file's PromQL names (histogram parts folded into their histogram).
fn series_named(text: &str) -> std::collections::BTreeSet<String> {
    let re = regex::Regex::new(r"extauth_[a-z_]+").unwrap();
    re.find_iter(text)
        .map(|m| {
            let name = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// The alert rules and the dashboard ask only for series a broker really exports (seen on its
/// `/metrics` after the traffic that makes them), and the README documents every series.
#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_dashboard_use_real_series_and_the_readme_documents_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(
        free_port(),
        &dir.path().join("data"),
        &[
            ("EXTAUTH_DEMO".to_owned(), "true".to_owned()),
            // Every lookup refreshes (the demo's tokens live an hour): refreshes get counted.
            ("EXTAUTH_REFRESH_MARGIN".to_owned(), "2h".to_owned()),
            ("EXTAUTH_AUTH_FAILURE_LIMIT".to_owned(), "1".to_owned()),
        ],
    );
    let _ = broker.output_line(Duration::from_secs(10), |l| {
        l.trim_start().starts_with("git ")
    });
    let (admin, csrf) = broker.admin().await;
    // Link the demo forge through its consent page.
    let (_, linked) = broker.connect_demo(&admin).await;
    assert!(linked.text().await.unwrap().contains("Connected."));
    let token = broker
        .workspace_token(&admin, &csrf, "me", serde_json::json!({"name": "m"}))
        .await;
    let plain = reqwest::Client::new();
    let lookup = plain
        .get(format!(
            "{}/api/v2/workspaceagents/me/external-auth?id=demo",
            broker.url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), reqwest::StatusCode::OK);
    for _ in 0..3 {
        let _ = plain
            .get(format!(
                "{}/api/v2/workspaceagents/me/external-auth?id=demo",
                broker.url
            ))
            .bearer_auth("extauth_ws_0000000000000000_bad")
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let scraped = plain
        .get(format!("{}/metrics", broker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported = series_named(&scraped);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for file in [
        "deploy/monitoring/alerts.yml",
        "deploy/monitoring/dashboard.json",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        for name in series_named(&text) {
            assert!(
                exported.contains(&name),
                "{file} asks for {name}, which /metrics does not export:\n{scraped}"
            );
        }
    }
    let readme = extauth_tests::readme::text();
    for name in &exported {
        assert!(
            readme.contains(&format!("`{name}`")),
            "the README's metrics table does not document {name}"
        );
    }
    assert!(broker.stop());
}
