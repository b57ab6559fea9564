//! The broker end to end against a real OAuth2 provider (`oidc-provider`): linking in the
//! browser and by device code, the workspace API, tokens, unlinking, restarts.

use std::time::{Duration, Instant};

use extauth_tests::{Broker, Idp, answer, client, csrf_of, free_port, provider_env, spawn_listen};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct World {
    idp: Idp,
    broker: Broker,
    port: u16,
    env: Vec<(String, String)>,
    data: tempfile::TempDir,
}

fn world() -> World {
    let port = free_port();
    let callback = |id: &str| {
        vec![format!(
            "http://127.0.0.1:{port}/external-auth/{id}/callback"
        )]
    };
    let idp = Idp::start(json!({
        "clients": [
            client("broker", "broker-secret", &callback("forge"), false),
            client("broker-other", "other-secret", &callback("other"), false),
            client("broker-device", "device-secret", &[], true),
        ]
    }));
    let mut env = provider_env(
        0,
        "forge",
        &idp.issuer,
        "broker",
        "broker-secret",
        "git.forge.test",
    );
    env.extend(provider_env(
        1,
        "other",
        &idp.issuer,
        "broker-other",
        "other-secret",
        "other.forge.test",
    ));
    env.extend(provider_env(
        2,
        "forge-device",
        &idp.issuer,
        "broker-device",
        "device-secret",
        "device.forge.test",
    ));
    env.push((
        "CODER_EXTERNAL_AUTH_2_DEVICE_FLOW".to_owned(),
        "true".to_owned(),
    ));
    env.push((
        "CODER_EXTERNAL_AUTH_2_DEVICE_CODE_URL".to_owned(),
        format!("{}/device/auth", idp.issuer),
    ));
    env.push(("EXTAUTH_LISTEN_TIMEOUT".to_owned(), "3s".to_owned()));
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    World {
        idp,
        broker,
        port,
        env,
        data,
    }
}

async fn link(client: &reqwest::Client, broker: &Broker, id: &str) {
    broker.link(client, id).await;
}

async fn workspace_token(
    client: &reqwest::Client,
    csrf: &str,
    broker: &Broker,
    user: &str,
    body: Value,
) -> String {
    broker.workspace_token(client, csrf, user, body).await
}

async fn lookup(broker: &Broker, token: &str, query: &str) -> (StatusCode, Value) {
    broker.lookup(token, query).await
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_flow_links_and_workspaces_get_the_token() {
    let w = world();
    let (admin, csrf) = w.broker.admin().await;
    let token = workspace_token(&admin, &csrf, &w.broker, "me", json!({"name": "ws"})).await;

    let (status, before) = lookup(
        &w.broker,
        &token,
        "match=https://git.forge.test/org/repo.git",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        before["url"],
        format!("{}/external-auth/forge", w.broker.url)
    );
    assert_eq!(before["access_token"], "");

    link(&admin, &w.broker, "forge").await;

    let (status, by_match) = lookup(
        &w.broker,
        &token,
        "match=https://me@git.forge.test/org/repo.git",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let access = by_match["access_token"].as_str().unwrap().to_owned();
    assert!(!access.is_empty());
    assert_eq!(by_match["url"], "");
    assert_eq!(by_match["type"], "forge");
    assert_eq!(
        by_match["username"],
        access.as_str(),
        "generic providers: the token is the username"
    );
    assert_eq!(by_match["password"], "");
    assert!(by_match["expires_at"].as_str().is_some(), "{by_match}");
    let introspection = w.idp.introspect("broker", "broker-secret", &access).await;
    assert_eq!(introspection["active"], true, "{introspection}");

    // Same token by id, by Coder's header, and on the legacy route with `url=`.
    let (_, by_id) = lookup(&w.broker, &token, "id=forge").await;
    assert_eq!(by_id["access_token"], access.as_str());
    let legacy: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v2/workspaceagents/me/gitauth?url=https://git.forge.test/x",
            w.broker.url
        ))
        .header("Coder-Session-Token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(legacy["access_token"], access.as_str());

    // The user API lists it.
    let list: Value = answer(admin.get(format!("{}/api/v2/external-auth", w.broker.url))).await;
    assert_eq!(list["links"][0]["provider_id"], "forge");
    assert_eq!(list["links"][0]["authenticated"], true);
    assert_eq!(list["links"][0]["has_refresh_token"], true);
    let one: Value =
        answer(admin.get(format!("{}/api/v2/external-auth/forge", w.broker.url))).await;
    assert_eq!(one["authenticated"], true, "{one}");
    assert_eq!(one["supports_revocation"], true);
}

/// A client that keeps cookies (the IdP's) but follows no redirect, sending `session`.
fn manual_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Starts linking `forge` with `session` without following redirects: the `state` sent to the
/// provider, and the authorization URL.
async fn start_flow(broker: &Broker, session: &str, redirect: Option<&str>) -> (String, String) {
    let mut url =
        reqwest::Url::parse(&format!("{}/external-auth/forge/callback", broker.url)).unwrap();
    if let Some(r) = redirect {
        url.query_pairs_mut().append_pair("redirect", r);
    }
    let response = manual_client()
        .get(url)
        .header("Cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert!(
        response.headers().get("set-cookie").is_none(),
        "the flow lives on the server, not in cookies"
    );
    let authorize: reqwest::Url = response.headers()["location"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert!(
        authorize.query_pairs().any(|(k, _)| k == "code_challenge"),
        "PKCE: {authorize}"
    );
    (state, authorize.to_string())
}

/// Follows the IdP's automatic login and consent from `authorize` until it redirects back to the broker's
/// callback; that callback URL (with `code` and `state`), not yet visited.
async fn callback_url(broker: &Broker, authorize: &str) -> String {
    let client = manual_client();
    let mut url = authorize.to_owned();
    for _ in 0..20 {
        if url.starts_with(&broker.url) {
            return url;
        }
        let response = client.get(&url).send().await.unwrap();
        let next = match response.headers().get("location") {
            Some(location) => location.to_str().unwrap().to_owned(),
            None => panic!(
                "the IdP stopped at {url} instead of signing in: {}",
                response.text().await.unwrap()
            ),
        };
        url = reqwest::Url::parse(&url)
            .unwrap()
            .join(&next)
            .unwrap()
            .to_string();
    }
    panic!("the IdP never redirected back to the broker");
}

#[tokio::test(flavor = "multi_thread")]
async fn callback_checks_state_before_anything_reaches_the_provider() {
    let w = world();
    let session = w.broker.session_cookie().await;
    let exchanges = || async {
        w.idp.counters().await["grants"]["authorization_code"]
            .as_u64()
            .unwrap_or(0)
    };
    let base = w.broker.url.clone();
    let callback = |query: &str| format!("{base}/external-auth/forge/callback?{query}");
    let get = |url: String, cookie: String| async move {
        let response = manual_client()
            .get(url)
            .header("Cookie", cookie)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    };

    // A state nobody started.
    let (status, page) = get(callback("code=abc&state=not-a-state"), session.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        page.contains("This login is unknown, was already finished or has expired."),
        "{page}"
    );
    let (status, _) = get(callback("code=abc"), session.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no state");

    // A whole login, finished once; the same callback again is refused before the provider
    // sees its code a second time.
    let (_, authorize) = start_flow(&w.broker, &session, None).await;
    let finish = callback_url(&w.broker, &authorize).await;
    let (status, _) = get(finish.clone(), session.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the first callback links");
    assert_eq!(exchanges().await, 1);
    let (status, page) = get(finish.clone(), session.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a replay: {page}");
    assert_eq!(
        exchanges().await,
        1,
        "the replayed code never reached the provider"
    );

    // A state started by another session (a second sign-in of the same admin after a restart)
    // cannot be finished by this one, and is used up by trying.
    let (_, authorize) = start_flow(&w.broker, &session, None).await;
    let finish = callback_url(&w.broker, &authorize).await;
    assert!(w.broker.stop());
    let broker = Broker::start(w.port, w.data.path(), &w.env);
    let other_session = broker.session_cookie().await;
    assert_ne!(other_session, session);
    let (status, page) = get(finish.clone(), other_session).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");
    assert!(
        page.contains("This login was not started in this browser session."),
        "{page}"
    );
    let (status, _) = get(finish, session.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "used up by the attempt");
    assert_eq!(exchanges().await, 1, "neither reached the provider");

    // A refusal shows the error code, never the text that came with it (anyone can craft it).
    let (status, page) = get(
        callback("error=access_denied&error_description=%3Cb%3EYour+account+is+locked%2C+call+555%3C%2Fb%3E"),
        session.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        page.contains("refused the login (access_denied)."),
        "{page}"
    );
    assert!(
        !page.contains("call 555") && !page.contains("locked"),
        "{page}"
    );
    let (_, page) = get(callback("error=%3Cscript%3Ex"), session).await;
    assert!(
        page.contains("refused the login (an unknown error)."),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_off_site_are_ignored() {
    let w = world();
    for evil in ["https://evil.example", "//evil.example", "/\\evil.example"] {
        // End to end: the flow lands on the broker, not on the other site.
        let (admin, _) = w.broker.admin().await;
        let mut start =
            reqwest::Url::parse(&format!("{}/external-auth/forge/callback", w.broker.url)).unwrap();
        start.query_pairs_mut().append_pair("redirect", evil);
        let response = admin.get(start).send().await.unwrap();
        assert_eq!(response.url().host_str(), Some("127.0.0.1"), "{evil}");
        assert_eq!(response.url().port(), Some(w.port), "{evil}");
        assert_eq!(response.url().path(), "/external-auth/forge", "{evil}");
    }
    let (admin, _) = w.broker.admin().await;
    let response = admin
        .get(format!(
            "{}/external-auth/other?redirect=/workspace-tokens",
            w.broker.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.url().path(), "/workspace-tokens");
}

#[tokio::test(flavor = "multi_thread")]
async fn device_flow_links() {
    let w = world();
    let (admin, csrf) = w.broker.admin().await;
    let api = format!("{}/api/v2/external-auth/forge-device/device", w.broker.url);
    let flow: Value = admin.get(&api).send().await.unwrap().json().await.unwrap();
    let device_code = flow["device_code"].as_str().unwrap().to_owned();
    let user_code = flow["user_code"].as_str().unwrap().to_owned();
    assert!(
        flow["verification_uri"]
            .as_str()
            .unwrap()
            .starts_with(&w.idp.issuer)
    );
    let interval = flow["interval"].as_u64().unwrap();

    let poll = || async {
        let response = admin
            .post(&api)
            .header("X-CSRF-Token", &csrf)
            .json(&json!({ "device_code": device_code }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = if status == StatusCode::NO_CONTENT {
            Value::Null
        } else {
            response.json().await.unwrap()
        };
        (status, body)
    };
    let (status, body) = poll().await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["detail"], "authorization_pending");
    // Polling faster than the interval is slowed down by the broker itself.
    let (_, body) = poll().await;
    assert_eq!(body["detail"], "slow_down");

    w.idp.approve_device(&user_code).await;
    // After slow_down the interval grew by 5 s.
    tokio::time::sleep(Duration::from_secs(interval + 5) + Duration::from_millis(300)).await;
    let (status, body) = poll().await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let token = workspace_token(&admin, &csrf, &w.broker, "me", json!({"name": "ws"})).await;
    let (_, reply) = lookup(&w.broker, &token, "id=forge-device").await;
    let access = reply["access_token"].as_str().unwrap();
    assert!(!access.is_empty(), "{reply}");
    assert_eq!(
        w.idp
            .introspect("broker-device", "device-secret", access)
            .await["active"],
        true
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unlink_revokes_at_the_provider() {
    let w = world();
    let (admin, csrf) = w.broker.admin().await;
    link(&admin, &w.broker, "forge").await;
    let token = workspace_token(&admin, &csrf, &w.broker, "me", json!({"name": "ws"})).await;
    let (_, reply) = lookup(&w.broker, &token, "id=forge").await;
    let access = reply["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        w.idp.introspect("broker", "broker-secret", &access).await["active"],
        true
    );

    // A cookie-authenticated write without the CSRF header is refused.
    let forged = admin
        .delete(format!("{}/api/v2/external-auth/forge", w.broker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    let unlinked: Value = answer(
        admin
            .delete(format!("{}/api/v2/external-auth/forge", w.broker.url))
            .header("X-CSRF-Token", &csrf),
    )
    .await;
    assert_eq!(unlinked, json!({"token_revoked": true}));
    assert_eq!(
        w.idp.introspect("broker", "broker-secret", &access).await["active"],
        false
    );
    let (_, after) = lookup(&w.broker, &token, "id=forge").await;
    assert_eq!(
        after["url"],
        format!("{}/external-auth/forge", w.broker.url)
    );
    let again = admin
        .delete(format!("{}/api/v2/external-auth/forge", w.broker.url))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn workspace_endpoint_errors() {
    let w = world();
    let (admin, csrf) = w.broker.admin().await;
    let token = workspace_token(&admin, &csrf, &w.broker, "me", json!({"name": "ws"})).await;

    let (status, both) = lookup(&w.broker, &token, "id=forge&match=https://git.forge.test").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        both["message"],
        "'url' and 'id' cannot be provided together!"
    );
    let (status, neither) = lookup(&w.broker, &token, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(neither["message"], "'url' or 'id' must be provided!");

    let (status, none) = lookup(&w.broker, &token, "match=https://github.com/org/repo").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        none["message"],
        "No matching external auth provider found for the url \"https://github.com/org/repo\"."
    );
    let detail = none["detail"].as_str().unwrap();
    for expected in [
        r#"forge="^(https?://)?git\\.forge\\.test(/.*)?$""#,
        r#"other="^(https?://)?other\\.forge\\.test(/.*)?$""#,
    ] {
        assert!(detail.contains(expected), "{detail} lacks {expected}");
    }
    let (status, unknown) = lookup(&w.broker, &token, "id=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown["message"],
        "No external auth provider with ID \"nope\"."
    );

    let (status, unauthenticated) = lookup(&w.broker, "extauth_ws_00_00", "id=forge").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(unauthenticated["message"], "Invalid or expired token.");
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_answers_within_a_second_of_linking() {
    let w = world();
    let (admin, csrf) = w.broker.admin().await;
    let token = workspace_token(&admin, &csrf, &w.broker, "me", json!({"name": "ws"})).await;

    // Nothing happens: the server-side limit (3 s here) ends the wait with the URL again.
    let started = Instant::now();
    let (_, timed_out) = lookup(&w.broker, &token, "id=forge&listen=true").await;
    assert_eq!(
        timed_out["url"],
        format!("{}/external-auth/forge", w.broker.url)
    );
    assert!(started.elapsed() >= Duration::from_secs(3));

    let waiter = spawn_listen(&w.broker.url, &token, "match=https://git.forge.test/o/r");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "listen must wait while not linked");
    link(&admin, &w.broker, "forge").await;
    let linked_at = Instant::now();
    let (reply, answered_at) = waiter.await.unwrap();
    assert!(
        !reply["access_token"].as_str().unwrap().is_empty(),
        "{reply}"
    );
    assert!(
        answered_at.saturating_duration_since(linked_at) < Duration::from_secs(1),
        "listen answered {:?} after the link completed",
        answered_at.saturating_duration_since(linked_at)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_scoped_to_their_user_and_providers() {
    let w = world();
    let (admin, csrf) = w.broker.admin().await;
    link(&admin, &w.broker, "forge").await;

    // The admin provisions bob and a workspace token for him.
    let created = admin
        .post(format!("{}/api/v2/users", w.broker.url))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({"username": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let bob = workspace_token(&admin, &csrf, &w.broker, "bob", json!({"name": "bob-ws"})).await;
    let (status, reply) = lookup(&w.broker, &bob, "id=forge").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        reply["access_token"], "",
        "bob must never get the admin's token"
    );
    assert_eq!(
        reply["url"],
        format!("{}/external-auth/forge", w.broker.url)
    );

    // Bob's workspace token cannot manage tokens or act for others.
    let escalate = reqwest::Client::new()
        .post(format!(
            "{}/api/v2/users/admin/workspace-tokens",
            w.broker.url
        ))
        .bearer_auth(&bob)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(escalate.status(), StatusCode::FORBIDDEN);

    // Narrowed to forge: forge yes, other no.
    let narrow = workspace_token(
        &admin,
        &csrf,
        &w.broker,
        "me",
        json!({"name": "narrow", "providers": ["forge"]}),
    )
    .await;
    let (status, _) = lookup(&w.broker, &narrow, "id=forge").await;
    assert_eq!(status, StatusCode::OK);
    let (status, denied) = lookup(&w.broker, &narrow, "match=https://other.forge.test/x").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        denied["message"],
        "This workspace token may not use provider \"other\"."
    );

    // Expired and revoked tokens are refused.
    let short = workspace_token(
        &admin,
        &csrf,
        &w.broker,
        "me",
        json!({"name": "short", "lifetime": "1s"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = lookup(&w.broker, &short, "id=forge").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let list: Value =
        answer(admin.get(format!("{}/api/v2/users/me/workspace-tokens", w.broker.url))).await;
    let narrow_id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "narrow")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("token").is_none()),
        "secrets are shown only once"
    );
    let revoked = admin
        .delete(format!(
            "{}/api/v2/users/me/workspace-tokens/{narrow_id}",
            w.broker.url
        ))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let (status, _) = lookup(&w.broker, &narrow, "id=forge").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn links_survive_a_restart_and_never_reach_disk_in_clear() {
    let World {
        idp,
        broker,
        port,
        env,
        data,
        ..
    } = world();
    let (admin, csrf) = broker.admin().await;
    link(&admin, &broker, "forge").await;
    let token = workspace_token(&admin, &csrf, &broker, "me", json!({"name": "ws"})).await;
    let (_, before) = lookup(&broker, &token, "id=forge").await;
    let access = before["access_token"].as_str().unwrap().to_owned();
    assert!(broker.stop(), "SIGTERM must shut the broker down cleanly");

    // Neither the provider's token nor the workspace token's secret is anywhere on disk.
    let secret = token.rsplit('_').next().unwrap();
    for entry in walk(data.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        for needle in [access.as_bytes(), secret.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} contains a secret in clear",
                entry.display()
            );
        }
    }

    let broker = Broker::start(port, data.path(), &env);
    let (status, after) = lookup(&broker, &token, "id=forge").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["access_token"], access.as_str());
    assert_eq!(
        idp.introspect("broker", "broker-secret", &access).await["active"],
        true
    );
    broker.stop();

    // Started with a key that did not encrypt the data: refused, naming the variable.
    let mut wrong = env.clone();
    wrong.push((
        "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS".to_owned(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
    ));
    let mut refused = Broker::spawn(free_port(), data.path(), &wrong);
    let status = refused
        .wait_exit(Duration::from_secs(20))
        .expect("the broker must exit");
    assert_eq!(status.code(), Some(1));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_render_for_a_signed_in_user() {
    let w = world();
    let (admin, csrf) = w.broker.admin().await;
    let home = admin
        .get(format!("{}/", w.broker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        home.contains("External authentication") && home.contains("Connect"),
        "{home}"
    );
    let created = admin
        .post(format!("{}/workspace-tokens", w.broker.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "laptop"),
            ("lifetime", "30d"),
            ("provider", "forge"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let page = created.text().await.unwrap();
    let exports =
        regex::Regex::new(r"export EXTAUTH_URL=(\S+)\nexport EXTAUTH_TOKEN=(extauth_ws_\S+)</pre>")
            .unwrap()
            .captures(&page)
            .unwrap_or_else(|| panic!("no export lines: {page}"));
    assert_eq!(&exports[1], w.broker.url.as_str());
    let (status, _) = lookup(&w.broker, &exports[2], "id=forge").await;
    assert_eq!(status, StatusCode::OK);
    // A form without the CSRF token is refused.
    let forged = admin
        .post(format!("{}/workspace-tokens", w.broker.url))
        .form(&[("name", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let _ = csrf_of(&home);
    let _ = w.data.path();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_token_is_validated_and_replaced_on_the_next_lookup() {
    let w = world();
    let (admin, csrf) = w.broker.admin().await;
    link(&admin, &w.broker, "forge").await;
    let token = workspace_token(&admin, &csrf, &w.broker, "me", json!({"name": "ws"})).await;
    let (_, first) = lookup(&w.broker, &token, "id=forge").await;
    let dead = first["access_token"].as_str().unwrap().to_owned();

    // The provider stops accepting the access token (the grant and refresh token live on).
    let revoked = reqwest::Client::new()
        .post(format!("{}/test/access-token/destroy", w.idp.issuer))
        .form(&[("token", dead.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        w.idp.introspect("broker", "broker-secret", &dead).await["active"],
        false
    );

    // Without a report the broker has no reason to ask the provider: same token.
    let (_, unchanged) = lookup(&w.broker, &token, "id=forge").await;
    assert_eq!(unchanged["access_token"], dead.as_str());

    // git was refused; the workspace says so.
    let reported = reqwest::Client::new()
        .post(format!(
            "{}/api/v2/workspaceagents/me/external-auth/rejected",
            w.broker.url
        ))
        .bearer_auth(&token)
        .json(&json!({"match": "https://git.forge.test/org/repo.git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reported.status(), StatusCode::NO_CONTENT);

    let (_, replaced) = lookup(&w.broker, &token, "id=forge").await;
    let fresh = replaced["access_token"].as_str().unwrap();
    assert!(!fresh.is_empty() && fresh != dead, "{replaced}");
    assert_eq!(
        w.idp.introspect("broker", "broker-secret", fresh).await["active"],
        true
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_pages_for_browsers_and_json_for_programs() {
    // Served under a path prefix: every link of an error page must carry it.
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let site = format!("http://127.0.0.1:{port}/extauth");
    // A provider that is never reached: only its refusal coming back to the callback is shown.
    let mut env = provider_env(0, "forge", "http://127.0.0.1:9", "c", "s", "git.forge.test");
    env.push(("CODER_ACCESS_URL".to_owned(), format!("{site}/")));
    let broker = Broker::start(port, data.path(), &env);
    let http = reqwest::Client::new();
    let html = |request: reqwest::RequestBuilder| async move {
        let response = request.header("Accept", "text/html").send().await.unwrap();
        let status = response.status();
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(kind.starts_with("text/html"), "{kind}");
        (status, response.text().await.unwrap())
    };

    // Programs get JSON `{message, detail}`, for an unknown path in or out of the prefix and
    // for a method a route does not serve.
    for path in [
        format!("{site}/no/such/thing"),
        format!("http://127.0.0.1:{port}/elsewhere"),
    ] {
        let response = http.get(&path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["message"], "There is nothing at this address.");
        let shown = path.trim_start_matches(&format!("http://127.0.0.1:{port}"));
        assert_eq!(body["detail"], format!("GET {shown}"));
    }
    let response = http.put(format!("{site}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET,HEAD");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "/extauth/healthz does not answer PUT.");

    // Browsers get a page of the site, its stylesheet under the prefix; no navigation when no
    // one is signed in.
    let (status, page) = html(http.get(format!("{site}/no/such/thing"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        page.contains(r#"href="/extauth/assets/style.css""#),
        "{page}"
    );
    assert!(page.contains("There is nothing at this address."), "{page}");
    assert!(!page.contains(r#"aria-label="Main""#), "{page}");

    // A signed-in user keeps the navigation (with its sign-out form) on an error page, whether
    // the error is an unknown provider or a provider's refusal coming back to the callback.
    let cookie = broker.session_cookie().await;
    for (path, status, says) in [
        (
            "/external-auth/no-such-provider",
            StatusCode::NOT_FOUND,
            "no-such-provider",
        ),
        (
            "/external-auth/forge/callback?error=access_denied&error_description=Denied+by+the+user",
            StatusCode::BAD_REQUEST,
            "refused the login (access_denied).",
        ),
    ] {
        let (got, page) = html(http.get(format!("{site}{path}")).header("Cookie", &cookie)).await;
        assert_eq!(got, status, "{path}: {page}");
        assert!(page.contains(says), "{path}: {page}");
        assert!(page.contains(r#"<nav aria-label="Main">"#), "{page}");
        assert!(
            page.contains(r#"href="/extauth/workspace-tokens""#),
            "{page}"
        );
        assert!(page.contains(r#"action="/extauth/logout""#), "{page}");
        let csrf = csrf_of(&page);
        assert!(
            csrf.len() >= 16,
            "the sign-out form carries the session's CSRF token"
        );
    }

    // A request axum cannot read (its own plain-text rejections) gets the same shapes: JSON
    // {message, detail} for a program, the page for a browser.
    let (_, home) = html(http.get(format!("{site}/")).header("Cookie", &cookie)).await;
    let csrf = csrf_of(&home);
    let tokens = format!("{site}/api/v2/users/me/workspace-tokens");
    for (content_type, body, status, message, detail) in [
        (
            "application/json",
            "{not json",
            StatusCode::BAD_REQUEST,
            "The request could not be read.",
            "Failed to parse the request body as JSON",
        ),
        (
            "text/plain",
            "name=x",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The request's content type is not accepted here.",
            "Content-Type: application/json",
        ),
        (
            "application/json",
            r#"{"name": 5}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "The request's fields are not what this route takes.",
            "invalid type: integer `5`, expected a string",
        ),
    ] {
        let response = http
            .post(&tokens)
            .header("Cookie", &cookie)
            .header("X-CSRF-Token", &csrf)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["message"], message, "{answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains(detail),
            "{answer}"
        );
    }
    let (status, page) = html(
        http.post(format!("{site}/logout"))
            .header("Cookie", &cookie)
            .form(&[("other", "x")]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("missing field `csrf`"), "{page}");
    assert!(page.contains(r#"<nav aria-label="Main">"#), "{page}");
    assert!(broker.stop());
}

/// A workspace token names the providers its workspace requires: the API and the token's page
/// say which are linked and when it is ready, and `extauth wait-for-auth` waits for them.
#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_waits_until_its_required_providers_are_linked() {
    let w = world();
    let (admin, csrf) = w.broker.admin().await;
    let created = answer(
        admin
            .post(format!("{}/api/v2/users/me/workspace-tokens", w.broker.url))
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"name": "needs-two", "providers": ["forge", "other"]})),
    )
    .await;
    let (id, token) = (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    );
    let setup = answer(admin.get(format!(
        "{}/api/v2/users/me/workspace-tokens/{id}",
        w.broker.url
    )))
    .await;
    assert_eq!(
        setup["required_providers"],
        json!([
            {"id": "forge", "linked": false, "url": format!("{}/external-auth/forge", w.broker.url)},
            {"id": "other", "linked": false, "url": format!("{}/external-auth/other", w.broker.url)},
        ])
    );
    assert_eq!(setup["ready"], false);
    assert_eq!(
        setup["setup_url"],
        format!("{}/workspace-tokens/{id}", w.broker.url)
    );
    let page = admin
        .get(format!("{}/workspace-tokens/{id}", w.broker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(page.matches(">Connect</a>").count(), 2, "{page}");
    assert!(page.contains(&format!(
        "/external-auth/forge?redirect=%2Fworkspace-tokens%2F{id}"
    )));

    let wait = |timeout: &str| {
        std::process::Command::new(extauth_tests::binary("extauth"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", w.data.path())
            .env("EXTAUTH_URL", &w.broker.url)
            .env("EXTAUTH_TOKEN", &token)
            .args(["wait-for-auth", "--timeout", timeout])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = wait("1").wait_with_output().unwrap();
    assert!(!out.status.success(), "not ready: it gives up");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("Waiting for forge, other to be connected")
            && said.contains(&format!("/workspace-tokens/{id}")),
        "{said}"
    );

    // A waiting workspace goes on once both are linked.
    let waiting = wait("60");
    link(&admin, &w.broker, "forge").await;
    let half = answer(admin.get(format!(
        "{}/api/v2/users/me/workspace-tokens/{id}",
        w.broker.url
    )))
    .await;
    assert_eq!(half["required_providers"][0]["linked"], true);
    assert_eq!(half["ready"], false);
    link(&admin, &w.broker, "other").await;
    let out = tokio::task::spawn_blocking(move || waiting.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Ready"));
    let page = admin
        .get(format!("{}/workspace-tokens/{id}", w.broker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("data-ready=\"true\"") && !page.contains(">Connect</a>"),
        "{page}"
    );
    // The workspace's own view says the same.
    let mine = answer(
        reqwest::Client::new()
            .get(format!("{}/api/v2/workspaceagents/me/setup", w.broker.url))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(mine["ready"], true);
    // Another user's token id is not found for this user.
    let missing = admin
        .get(format!(
            "{}/api/v2/users/me/workspace-tokens/nope",
            w.broker.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    drop(w.idp);
}
