//! The first ten minutes: `extauth-broker --dev --demo` started as a newcomer starts it (the
//! binary, its printed lines), the printed sign-in link followed, Connect clicked through the
//! demo forge's own consent page, the token fetched with the printed curl command, and the demo
//! repository cloned with the printed git command through `git-credential-extauth`.

use std::process::Command;
use std::time::Duration;

use extauth_tests::{Broker, free_port};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn a_newcomer_connects_the_demo_forge_gets_a_token_and_clones() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(
        free_port(),
        data.path(),
        &[("EXTAUTH_DEMO".to_owned(), "true".to_owned())],
    );
    let wait = Duration::from_secs(10);
    // The banner after the sign-in link, as printed.
    let mut banner = Vec::new();
    loop {
        let line = broker.output_line(wait, |_| true);
        let last = line.trim_start().starts_with("git ");
        banner.push(line);
        if last {
            break;
        }
    }
    let curl_line = banner
        .iter()
        .find(|l| l.trim_start().starts_with("curl "))
        .unwrap()
        .clone();
    let clone_line = banner.last().unwrap().clone();
    // The README shows the same lines (ports as the defaults, `…` for what varies).
    let port = broker.url.rsplit(':').next().unwrap().to_owned();
    let forge_port = clone_line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    let shown = extauth_tests::readme::blocks(&extauth_tests::readme::text())
        .into_iter()
        .find(|(_, lines)| lines.iter().any(|l| l.starts_with("Demo forge (a demo")))
        .expect("the README shows the demo banner")
        .1;
    let printed: Vec<String> = banner
        .iter()
        .map(|l| {
            l.replace(&format!("127.0.0.1:{forge_port}"), "127.0.0.1:3001")
                .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:3000")
        })
        .collect();
    assert_eq!(shown.len() - 1, printed.len(), "{shown:?}\n{printed:?}");
    for (want, got) in shown[1..].iter().zip(&printed) {
        assert!(
            extauth_tests::readme::matches(want, got),
            "README: {want}\nprinted: {got}"
        );
    }

    // 1. The sign-in link, then Connect: the demo forge's consent page, marked as a demo.
    let (admin, csrf) = broker.admin().await;
    let home = admin
        .get(&broker.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("Demo forge (not a real forge)"), "{home}");
    let (page, connected) = broker.connect_demo(&admin).await;
    assert!(page.contains("DEMO"), "{page}");
    assert!(page.contains("not a real forge"), "{page}");
    assert_eq!(
        connected.url().as_str(),
        format!("{}/external-auth/demo?redirected=true", broker.url)
    );
    assert!(connected.text().await.unwrap().contains("Connected."));

    // 2. A workspace token, and the printed curl command.
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "demo"}))
        .await;
    let out = Command::new("sh")
        .arg("-c")
        .arg(curl_line.trim())
        .env("EXTAUTH_URL", &broker.url)
        .env("EXTAUTH_TOKEN", &token)
        .output()
        .expect("curl runs");
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert!(
        answer["access_token"]
            .as_str()
            .unwrap()
            .starts_with("demo_at_"),
        "{answer}"
    );
    assert_eq!(answer["type"], "demo-forge");
    for field in [
        "access_token",
        "username",
        "password",
        "expires_at",
        "type",
        "url",
    ] {
        assert!(
            answer.get(field).is_some(),
            "the README's fields: {field} in {answer}"
        );
    }

    // 3. The printed git command clones through the credential helper.
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(clone_line.trim())
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", work.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("EXTAUTH_URL", &broker.url)
        .env("EXTAUTH_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        clone_line.trim(),
        String::from_utf8_lossy(&out.stderr)
    );
    let readme = std::fs::read_to_string(work.path().join("hello/README.md")).unwrap();
    assert!(
        readme.contains("git got its credentials from extauth"),
        "{readme}"
    );
    assert!(broker.stop());
}

/// The demo forge trusts whoever reaches it: refused on an address others can reach.
#[test]
fn the_demo_is_refused_on_a_non_loopback_address() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(extauth_tests::binary("extauth-broker"))
        .args(["--dev", "--demo"])
        .env_clear()
        .env("CODER_HTTP_ADDRESS", "0.0.0.0:0")
        .env("CODER_ACCESS_URL", "https://extauth.example.com")
        .env("EXTAUTH_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("EXTAUTH_DEMO: the demo forge is for trying extauth on this machine"),
        "{said}"
    );
}
