//! GitHub Apps done right (coder/coder#25188, #17754): the broker knows which owners a GitHub
//! App's installations cover and says where to install it instead of leaving git with a bare
//! 403; a provider that issues expiring tokens without a refresh token is called out at link
//! time. The IdP serves `GET /user/installations` shaped like GitHub's.

use std::io::Write;
use std::process::{Command, Stdio};

use extauth_tests::{Broker, Idp, binary, client, free_port, provider_env};
use serde_json::json;

const INSTALL_URL: &str = "https://github.com/apps/extauth-test/installations/new";

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_whose_owner_lacks_the_app_gets_the_install_url_not_a_bare_403() {
    let port = free_port();
    let idp = Idp::start(json!({
        "clients": [client(
            "app",
            "app-secret",
            &[format!("http://127.0.0.1:{port}/external-auth/forge/callback")],
            false,
        )],
        "installations": { "alice": ["acme", "alice"] },
    }));
    let mut env = provider_env(
        0,
        "forge",
        &idp.issuer,
        "app",
        "app-secret",
        "git.forge.test",
    );
    env.extend([
        (
            "CODER_EXTERNAL_AUTH_0_APP_INSTALLATIONS_URL".to_owned(),
            format!("{}/user/installations", idp.issuer),
        ),
        (
            "CODER_EXTERNAL_AUTH_0_APP_INSTALL_URL".to_owned(),
            INSTALL_URL.to_owned(),
        ),
    ]);
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    let (admin, csrf) = broker.admin().await;
    broker.link(&admin, "forge").await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "ws"}))
        .await;

    // An owner the app is installed for: the token, nothing to say.
    let (status, covered) = broker
        .lookup(&token, "match=https://git.forge.test/acme/app.git")
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(covered.get("notice").is_none(), "{covered}");
    // Another owner: still the token (public repositories work), and where to install the app.
    let (_, uncovered) = broker
        .lookup(&token, "match=https://git.forge.test/globex/app.git")
        .await;
    let notice = uncovered["notice"].as_str().unwrap();
    assert!(notice.contains("not installed for globex"), "{notice}");
    assert!(notice.contains(INSTALL_URL), "{notice}");
    assert!(!uncovered["access_token"].as_str().unwrap().is_empty());
    // Asked of the provider once for both lookups (a minute's cache).
    assert_eq!(idp.requests("/user/installations").await, 1);

    // git's helper says it on stderr before git tries, and still answers.
    let mut helper = Command::new(binary("git-credential-extauth"))
        .arg("get")
        .env_clear()
        .env("EXTAUTH_URL", &broker.url)
        .env("EXTAUTH_TOKEN", &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    helper
        .stdin
        .take()
        .unwrap()
        .write_all(b"protocol=https\nhost=git.forge.test\npath=globex/app.git\n\n")
        .unwrap();
    let output = helper.wait_with_output().unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("not installed for globex") && stderr.contains(INSTALL_URL),
        "{stderr}"
    );
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("username=")
    );

    // The provider's page lists the owners and links the installation page.
    let page = admin
        .get(format!("{}/external-auth/forge", broker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("installed for: <strong>acme, alice</strong>"),
        "{page}"
    );
    assert!(page.contains(INSTALL_URL));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_token_without_a_refresh_token_is_called_out_when_linked() {
    let port = free_port();
    // A client the IdP gives no refresh token (as Entra does without offline_access).
    let idp = Idp::start(json!({
        "clients": [{
            "client_id": "no-refresh", "client_secret": "s",
            "grant_types": ["authorization_code"], "response_types": ["code"],
            "redirect_uris": [format!("http://127.0.0.1:{port}/external-auth/forge/callback")],
            "token_endpoint_auth_method": "client_secret_basic",
        }],
    }));
    let env = provider_env(0, "forge", &idp.issuer, "no-refresh", "s", "git.forge.test");
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("broker.log");
    let broker = Broker::start_logging_to(port, &data.path().join("store"), &env, &log);
    let (admin, _) = broker.admin().await;
    broker.link(&admin, "forge").await;
    let page = admin
        .get(format!("{}/external-auth/forge", broker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("This token cannot be renewed."), "{page}");
    assert!(page.contains("offline_access"));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("without a refresh token"),
        "the link is logged with the warning:\n{logged}"
    );
    assert!(broker.stop());
}

/// GitHub's refresh tokens last six months (`refresh_token_expires_in`): the broker keeps that
/// time and, within two weeks of it, tells workspaces and the provider's page to link again.
#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_token_near_its_end_asks_the_user_to_link_again() {
    let port = free_port();
    let idp = Idp::start(json!({
        "clients": [client(
            "app",
            "app-secret",
            &[format!("http://127.0.0.1:{port}/external-auth/forge/callback")],
            false,
        )],
    }));
    let env = provider_env(
        0,
        "forge",
        &idp.issuer,
        "app",
        "app-secret",
        "git.forge.test",
    );
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    let (admin, csrf) = broker.admin().await;
    // The code exchange's answer says the refresh token lives 3 more days.
    idp.fault(json!({
        "path": "/token", "mode": "add_fields", "count": 1,
        "fields": { "refresh_token_expires_in": 3 * 24 * 3600 },
    }))
    .await;
    broker.link(&admin, "forge").await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "ws"}))
        .await;
    let (status, answer) = broker.lookup(&token, "id=forge").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let notice = answer["notice"].as_str().unwrap_or_default();
    assert!(notice.contains("again before"), "{answer}");
    let page = admin
        .get(format!("{}/external-auth/forge", broker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Connect again soon."), "{page}");

    // Linked again with a fresh (long-lived) refresh token: nothing more to say.
    let relinked = admin
        .get(format!("{}/external-auth/forge/callback", broker.url))
        .send()
        .await
        .unwrap();
    assert!(relinked.text().await.unwrap().contains("Connected."));
    let (_, answer) = broker.lookup(&token, "id=forge").await;
    assert!(answer.get("notice").is_none(), "{answer}");
}
