//! The container image (deploy/Dockerfile) as an operator runs it: built by `tests/image/build`
//! with podman (which `./tests/run` does first), started with a read-only root filesystem and
//! its data in a volume, it answers `/readyz`, its own health check, a provider link and a
//! workspace lookup, its credential helper answers git, and it stops cleanly on SIGTERM.

use std::process::Command;
use std::time::Duration;

use extauth_tests::{Broker, Idp, client, free_port, provider_env};
use serde_json::json;

const IMAGE: &str = "localhost/extauth:test";

/// podman as this machine allows it: runc, and resource limits no higher than the current ones
/// (tests/image/build says why).
fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--runtime", "runc"]);
    command
}

fn limits() -> [String; 4] {
    let hard = |flag: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("ulimit -H{flag}")])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    [
        "--ulimit".to_owned(),
        format!("nofile={0}:{0}", hard("n")),
        "--ulimit".to_owned(),
        "nproc=4096:4096".to_owned(),
    ]
}

/// Removes the container and its volume however the test ends.
struct Cleanup {
    container: String,
    volume: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "-f", "-t", "2", &self.container])
            .output();
        let _ = podman().args(["volume", "rm", "-f", &self.volume]).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_serves_a_workspace_lookup_read_only_as_a_non_root_user() {
    let exists = Command::new("podman")
        .args(["image", "exists", IMAGE])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        exists,
        "{IMAGE} is missing: tests/image/build makes it (./tests/run runs it first; it needs podman, runc and mmdebstrap)"
    );
    let port = free_port();
    let idp = Idp::start(json!({
        "clients": [client(
            "broker",
            "broker-secret",
            &[format!("http://127.0.0.1:{port}/external-auth/forge/callback")],
            false,
        )]
    }));
    let name = format!("extauth-image-test-{port}");
    let cleanup = Cleanup {
        container: name.clone(),
        volume: format!("{name}-data"),
    };
    let mut run = podman();
    run.args(["run", "--rm", "--name", &name])
        .args(limits())
        // Loopback only: the container shares the host's network and binds 127.0.0.1.
        .args([
            "--network",
            "host",
            "--read-only",
            "--health-interval",
            "disable",
        ])
        .args(["-v", &format!("{}:/var/lib/extauth", cleanup.volume)])
        .args(["-e", &format!("CODER_HTTP_ADDRESS=127.0.0.1:{port}")])
        .args(["-e", &format!("CODER_ACCESS_URL=http://127.0.0.1:{port}")]);
    for (key, value) in provider_env(
        0,
        "forge",
        &idp.issuer,
        "broker",
        "broker-secret",
        "git.forge.test",
    ) {
        run.args(["-e", &format!("{key}={value}")]);
    }
    run.arg(IMAGE).arg("--dev");
    let broker = Broker::start_with(port, "podman run extauth", run);

    // Ready, by HTTP and by the image's own HEALTHCHECK (no shell or curl in the image).
    let ready = reqwest::get(format!("{}/readyz", broker.url))
        .await
        .unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    let health = podman()
        .args(["healthcheck", "run", &name])
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );

    // As configured: a non-root user, a read-only root filesystem, the data in the volume.
    let inspect = podman()
        .args([
            "inspect",
            &name,
            "--format",
            "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.Config.StopSignal}}",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(inspect.stdout).unwrap().trim(),
        "65532:65532 true 15"
    );

    // A user links the provider in the browser flow, and a workspace looks the token up.
    let (admin, csrf) = broker.admin().await;
    broker.link(&admin, "forge").await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "image"}))
        .await;
    let (status, answer) = broker.lookup(&token, "id=forge").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    let access_token = answer["access_token"].as_str().unwrap().to_owned();
    assert!(!access_token.is_empty());

    // The image's git credential helper answers git's question with the same token.
    let mut helper = podman();
    helper
        .args(["run", "--rm", "-i"])
        .args(limits())
        .args([
            "--network",
            "host",
            "--read-only",
            "--entrypoint",
            "/usr/local/bin/git-credential-extauth",
        ])
        .args(["-e", &format!("EXTAUTH_URL={}", broker.url)])
        .args(["-e", &format!("EXTAUTH_TOKEN={token}")])
        .arg(IMAGE)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = helper.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"protocol=https\nhost=git.forge.test\npath=org/repo.git\n\n")
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let reply = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{reply}");
    assert!(
        reply
            .lines()
            .any(|l| l == format!("username={access_token}")
                || l == format!("password={access_token}")),
        "the helper's answer lacks the token: {:?}; stderr {}",
        reply
            .lines()
            .map(|l| l
                .split_once('=')
                .map_or(l.to_owned(), |(k, v)| format!("{k}=<{} bytes>", v.len())))
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&output.stderr)
    );

    // SIGTERM (the image's STOPSIGNAL): the broker drains and exits 0.
    let stop = podman().args(["stop", "-t", "20", &name]).output().unwrap();
    assert!(stop.status.success());
    let status = broker.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    drop(cleanup);
}
