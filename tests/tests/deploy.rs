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

/// The repository's root.
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A tool from `tests/deploy/requirements.txt` (helm, hadolint, kubernetes-validate), which
/// `./tests/run` installs into `tests/.venv`.
fn venv_tool(name: &str) -> std::path::PathBuf {
    let path = root().join("tests/.venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: ./tests/run installs tests/deploy/requirements.txt into tests/.venv",
        path.display()
    );
    path
}

/// Runs a command; its stdout, or a failure with everything it printed.
fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_dockerfile_passes_hadolint_and_runs_unprivileged() {
    let dockerfile = root().join("deploy/Dockerfile");
    run_ok(
        Command::new(venv_tool("hadolint"))
            .arg("--failure-threshold")
            .arg("info")
            .arg(&dockerfile),
    );
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let last_stage = &text[text.rfind("\nFROM ").unwrap()..];
    for line in [
        "USER 65532:65532",
        "STOPSIGNAL SIGTERM",
        "VOLUME [\"/var/lib/extauth\"]",
        "CMD [\"/usr/local/bin/extauth-broker\", \"healthcheck\"]",
        "org.opencontainers.image.source",
    ] {
        assert!(last_stage.contains(line), "the runtime stage lacks {line}");
    }
    assert!(text.contains("--locked"), "the build uses Cargo.lock");
    // Only what the build needs goes into the context.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "*"));
    assert!(!ignore.contains("!target"));
}

#[test]
fn the_alert_rules_pass_promtool() {
    assert!(
        std::path::Path::new("/usr/bin/promtool").is_file(),
        "promtool is missing: apt-get install prometheus (./tests/run installs it as root)"
    );
    let out = run_ok(
        Command::new("/usr/bin/promtool")
            .arg("check")
            .arg("rules")
            .arg(root().join("deploy/monitoring/alerts.yml")),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // promtool fails on a broken rule: the check can fail.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(root().join("deploy/monitoring/alerts.yml"))
            .unwrap()
            .replacen("== 0", "== == 0", 1),
    )
    .unwrap();
    let status = Command::new("/usr/bin/promtool")
        .args(["check", "rules"])
        .arg(&broken)
        .output()
        .unwrap()
        .status;
    assert!(!status.success());
}

/// The chart rendered by the real `helm` with `values` (files under the chart's `ci/`) and
/// `sets`; the output, or helm's error.
fn helm_template(
    chart: &std::path::Path,
    values: &[&str],
    sets: &[&str],
) -> Result<String, String> {
    let mut command = Command::new(venv_tool("helm"));
    command.args(["template", "t"]).arg(chart);
    for file in values {
        command.arg("-f").arg(chart.join("ci").join(file));
    }
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Every object in `rendered` validated against the Kubernetes API schemas
/// (`kubernetes-validate --strict`) and, for custom resources, their CRDs' schemas
/// (kubernetes-models, tests/idp/k8s-crds.mjs); the custom resources' kinds.
fn validate_objects(rendered: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, rendered).unwrap();
    let core = run_ok(
        Command::new(venv_tool("kubernetes-validate"))
            .args(["--strict", "--no-warn"])
            .arg(&file),
    );
    assert!(!core.contains("ERROR"), "{core}");
    let custom = run_ok(
        Command::new("node")
            .arg(root().join("tests/idp/k8s-crds.mjs"))
            .arg(&file),
    );
    custom
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The documents of a YAML text, parsed (by PyYAML from the tools' environment).
fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut child = Command::new(venv_tool("python"))
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The rendered objects, parsed.
fn objects(rendered: &str) -> Vec<serde_json::Value> {
    yaml_documents(rendered)
}

#[test]
fn the_helm_chart_renders_valid_objects_for_one_replica_and_for_two_on_postgres() {
    let chart = root().join("deploy/helm/extauth");
    for values in [&[][..], &["replicas-postgres-values.yaml"][..]] {
        let mut lint = Command::new(venv_tool("helm"));
        lint.args(["lint", "--strict"]).arg(&chart);
        for file in values {
            lint.arg("-f").arg(chart.join("ci").join(file));
        }
        run_ok(&mut lint);
    }

    // Default values: one replica on the embedded store, its volume a claim.
    let one = helm_template(&chart, &[], &[]).unwrap();
    assert!(validate_objects(&one).is_empty());
    let kinds = |objects: &[serde_json::Value]| {
        objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let parsed = objects(&one);
    assert_eq!(
        kinds(&parsed),
        [
            "Deployment",
            "PersistentVolumeClaim",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into()
    );
    let deployment = parsed.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");

    // Two replicas on PostgreSQL with everything optional turned on.
    let two = helm_template(&chart, &["replicas-postgres-values.yaml"], &[]).unwrap();
    let custom = validate_objects(&two);
    assert_eq!(
        custom
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        ["HTTPRoute", "PrometheusRule", "ServiceMonitor"]
            .map(String::from)
            .into()
    );
    let parsed = objects(&two);
    for kind in ["PodDisruptionBudget", "Ingress", "ConfigMap"] {
        assert!(kinds(&parsed).contains(kind), "no {kind}");
    }
    assert!(!kinds(&parsed).contains("PersistentVolumeClaim"));
    let deployment = parsed.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    // Secrets only by reference: no secret value is in the rendered objects.
    for name in [
        "CODER_PG_CONNECTION_URL",
        "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS",
        "CODER_OIDC_CLIENT_SECRET",
        "CODER_EXTERNAL_AUTH_0_CLIENT_SECRET",
        "CODER_EXTERNAL_AUTH_1_CLIENT_SECRET",
    ] {
        let variable = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert!(
            variable["valueFrom"]["secretKeyRef"]["name"].is_string(),
            "{variable}"
        );
        assert!(variable.get("value").is_none());
    }
    // The PrometheusRule carries the rules promtool checks.
    let rule = parsed
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .unwrap();
    let alerts = yaml_documents(
        &std::fs::read_to_string(root().join("deploy/monitoring/alerts.yml")).unwrap(),
    );
    assert_eq!(rule["spec"], alerts[0]);

    // The broker accepts the environment the chart renders (secrets filled in as the kubelet
    // would), and the callback URLs NOTES.txt prints are the ones the broker uses.
    let mut check = Command::new(binary("extauth-broker"));
    check.args(["config", "check"]).env_clear();
    for variable in &env {
        let name = variable["name"].as_str().unwrap();
        let value = match variable["value"].as_str() {
            Some(value) => value.to_owned(),
            None if name == "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS" => {
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned()
            }
            None if name == "CODER_PG_CONNECTION_URL" => {
                "postgres://extauth@127.0.0.1:1/extauth".to_owned()
            }
            None => "a-secret-from-a-kubernetes-secret".to_owned(),
        };
        check.env(name, value);
    }
    let report = run_ok(&mut check);
    let notes = helm_notes(&chart, &["replicas-postgres-values.yaml"]);
    for provider in ["github", "gitea"] {
        let url = format!("https://extauth.example.com/external-auth/{provider}/callback");
        assert!(report.contains(&url), "{report}");
        assert!(notes.contains(&format!("{provider}: {url}")), "{notes}");
    }
    assert!(notes.contains("https://extauth.example.com/api/v2/users/oidc/callback"));
}

/// NOTES.txt as `helm install` would print it (rendered by helm through a copy of the chart
/// that includes it in a ConfigMap, since `helm template` leaves NOTES out and
/// `helm install --dry-run` wants a cluster).
fn helm_notes(chart: &std::path::Path, values: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("extauth");
    run_ok(Command::new("cp").arg("-rL").arg(chart).arg(&copy));
    std::fs::write(
        copy.join("templates/zz-notes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include \"extauth/templates/NOTES.txt\" . | quote }}\n",
    )
    .unwrap();
    let rendered = helm_template(&copy, values, &["metrics.prometheusRule.enabled=false"]).unwrap();
    objects(&rendered)
        .into_iter()
        .find(|o| o["metadata"]["name"] == "notes")
        .unwrap()["data"]["notes"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_helm_chart_refuses_values_that_would_break_a_deployment() {
    let chart = root().join("deploy/helm/extauth");
    // Two replicas on the embedded store would be two stores.
    let error = helm_template(&chart, &[], &["replicaCount=2"]).unwrap_err();
    assert!(
        error.contains("replicaCount: 2 replicas need PostgreSQL"),
        "{error}"
    );
    assert!(error.contains("postgres.existingSecret"), "{error}");
    // A typo in a value is refused by values.schema.json, naming it.
    let error = helm_template(&chart, &[], &["replcaCount=2"]).unwrap_err();
    assert!(error.contains("replcaCount"), "{error}");
    // A provider without a type.
    let error = helm_template(&chart, &[], &["externalAuth[0].id=github"]).unwrap_err();
    assert!(error.contains("type"), "{error}");
    // Sign-in without the client secret's Secret.
    let error =
        helm_template(&chart, &[], &["oidc.issuerURL=https://idp.example.com/"]).unwrap_err();
    assert!(
        error.contains("oidc.clientSecret.existingSecret"),
        "{error}"
    );
    // And the validators can fail: a Deployment with a field Kubernetes does not have.
    let one = helm_template(&chart, &[], &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        one.replace("  replicas: 1\n", "  replicas: 1\n  replica: 1\n"),
    )
    .unwrap();
    let output = Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "--no-warn"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// `docker-compose config` of deploy/compose with `env` as its `.env`: the resolved
/// configuration, or the tool's error.
fn compose_config(env: &str) -> Result<serde_json::Value, String> {
    assert!(
        Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok(),
        "docker-compose is missing: apt-get install docker-compose (./tests/run installs it as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    std::fs::write(&env_file, env).unwrap();
    let mut command = Command::new("docker-compose");
    command
        .current_dir(root().join("deploy/compose"))
        .arg("--env-file")
        .arg(&env_file);
    let output = command.arg("config").output().unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(yaml_documents(&String::from_utf8(output.stdout).unwrap()).remove(0))
}

/// The stack's shell scripts pass shellcheck.
#[test]
fn the_scripts_pass_shellcheck() {
    run_ok(
        Command::new("shellcheck")
            .arg(root().join("deploy/compose/gitea/setup.sh"))
            .arg(root().join("deploy/compose/postgres/10-extauth.sh"))
            .arg(root().join("tests/image/build"))
            .arg(root().join("tests/run")),
    );
}

#[test]
fn the_compose_stack_is_valid_and_the_broker_accepts_its_settings() {
    let example = std::fs::read_to_string(root().join("deploy/compose/.env.example")).unwrap();
    // Unfilled, it refuses to start and names the secret to set.
    let error = compose_config(&example).unwrap_err();
    assert!(error.contains("set PG_PASS in .env"), "{error}");
    // Every secret has a line telling how to make it.
    let lines: Vec<&str> = example.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.ends_with('=') && !line.starts_with("WORKSPACE_TOKEN") {
            assert!(
                lines[i - 1].starts_with('#'),
                "{line} has no comment saying how to make it"
            );
        }
    }
    let filled: String = example
        .lines()
        .map(|l| {
            if l == "EXTAUTH_ENCRYPTION_KEY=" {
                // What `openssl rand -base64 32` prints.
                format!("{l}MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")
            } else if l.ends_with('=') && !l.starts_with("WORKSPACE_TOKEN") {
                format!("{l}value-{}\n", l.len())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let config = compose_config(&filled).unwrap();
    let services = &config["services"];
    for name in [
        "postgresql",
        "authentik-server",
        "authentik-worker",
        "gitea",
        "gitea-setup",
        "extauth",
        "proxy",
        "workspace",
    ] {
        assert!(services.get(name).is_some(), "no service {name}");
    }
    // The second replica runs only with --profile replicas, configured like the first.
    assert_eq!(
        services["extauth-2"]["profiles"],
        serde_json::json!(["replicas"])
    );
    assert!(services["extauth"].get("profiles").is_none());
    assert_eq!(
        services["extauth-2"]["environment"], services["extauth"]["environment"],
        "both replicas are configured alike"
    );
    let proxy = std::fs::read_to_string(root().join("deploy/compose/proxy/extauth.conf")).unwrap();
    for replica in ["extauth", "extauth-2"] {
        assert!(
            proxy.contains(&format!("server {replica}:3000 resolve")),
            "{proxy}"
        );
    }

    // The broker accepts its environment, with the files gitea-setup writes.
    let extauth = &services["extauth"];
    assert_eq!(extauth["read_only"], true);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client-id"), "0b4e2e8e-gitea-app").unwrap();
    std::fs::write(dir.path().join("client-secret"), "gto_secret").unwrap();
    let mut check = Command::new(binary("extauth-broker"));
    check.args(["config", "check"]).env_clear();
    let env = extauth["environment"].as_object().unwrap();
    for (name, value) in env {
        let value = value
            .as_str()
            .unwrap()
            .replace("/run/forge-app", dir.path().to_str().unwrap())
            // `config` prints a compose file, where `$$` is how a `$` is written.
            .replace("$$", "$");
        check.env(name, value);
    }
    let report = run_ok(&mut check);
    let access_url = env["CODER_ACCESS_URL"].as_str().unwrap();
    let callback = format!("{access_url}/external-auth/gitea/callback");
    assert!(
        report.contains(&format!("callback URL     {callback}")),
        "{report}"
    );

    // The pieces agree: Gitea's OAuth2 app is registered with that callback, authentik's
    // blueprints with the broker's and Gitea's URLs, the issuer is the blueprint's application.
    let setup = &services["gitea-setup"]["environment"];
    assert_eq!(setup["EXTAUTH_URL"], access_url);
    let script = std::fs::read_to_string(root().join("deploy/compose/gitea/setup.sh")).unwrap();
    assert!(script.contains("$EXTAUTH_URL/external-auth/gitea/callback"));
    assert!(script.contains("--name authentik"));
    let authentik = &services["authentik-worker"]["environment"];
    assert_eq!(authentik["EXTAUTH_URL"], access_url);
    assert_eq!(
        authentik["EXTAUTH_CLIENT_SECRET"],
        env["CODER_OIDC_CLIENT_SECRET"]
    );
    let stack =
        std::fs::read_to_string(root().join("deploy/compose/authentik/stack.yaml")).unwrap();
    assert!(stack.contains("%s/user/oauth2/authentik/callback"));
    assert!(stack.contains("client_id: gitea"));
    assert_eq!(
        env["CODER_OIDC_ISSUER_URL"],
        format!(
            "{}/application/o/extauth/",
            authentik["GITEA_URL"]
                .as_str()
                .unwrap()
                .replace(":3001", ":9000")
        )
    );
    let volumes = services["authentik-worker"]["volumes"].to_string();
    assert!(volumes.contains("extauth-blueprint.yaml"), "{volumes}");
    assert!(volumes.contains("stack.yaml"), "{volumes}");
    // The workspace reaches the broker through the proxy, and git asks extauth.
    assert_eq!(
        services["workspace"]["environment"]["EXTAUTH_URL"],
        access_url
    );
    assert_eq!(services["workspace"]["build"]["target"], "workspace");
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("git config --system credential.helper extauth"));
}
