//! The token lifecycle under concurrency and faults, against `oidc-provider` with refresh-token
//! rotation (a rotated refresh token used twice kills the grant, as with GitHub Apps) and a
//! fault layer in front of its endpoints. Refresh grants are counted at the IdP.

use std::time::{Duration, Instant};

use extauth_tests::{Broker, Idp, answer, client, free_port, provider_env};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct World {
    idp: Idp,
    broker: Broker,
    admin: reqwest::Client,
    csrf: String,
    token: String,
    /// Refresh grants served before the test's own (see `link_expiring`).
    baseline: std::sync::atomic::AtomicU64,
    _data: tempfile::TempDir,
}

/// One provider `forge` on the IdP; `settings` are extra broker variables.
async fn world(settings: &[(&str, &str)]) -> World {
    let port = free_port();
    let idp = Idp::start(json!({
        "clients": [client("broker", "broker-secret", &[format!("http://127.0.0.1:{port}/external-auth/forge/callback")], false)]
    }));
    let mut env = provider_env(
        0,
        "forge",
        &idp.issuer,
        "broker",
        "broker-secret",
        "git.forge.test",
    );
    // Tokens here live a second or an hour: refresh only once expired, so each test decides
    // exactly when a refresh is due.
    env.push(("EXTAUTH_REFRESH_MARGIN".into(), "0s".into()));
    env.extend(
        settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    let (admin, csrf) = broker.admin().await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "ws"}))
        .await;
    World {
        idp,
        broker,
        admin,
        csrf,
        token,
        baseline: std::sync::atomic::AtomicU64::new(0),
        _data: data,
    }
}

impl World {
    /// Links with access tokens that live `ttl` seconds, then issues long-lived ones.
    async fn link_expiring(&self, ttl: u64) -> String {
        self.idp.set_access_token_ttl(ttl).await;
        self.broker.link(&self.admin, "forge").await;
        let (_, reply) = self.broker.lookup(&self.token, "id=forge").await;
        self.idp.set_access_token_ttl(3600).await;
        // On a loaded machine more than `ttl` may pass between the link and that lookup, which
        // then refreshes once: count the test's refreshes from here.
        self.baseline.store(
            self.idp.refreshes().await,
            std::sync::atomic::Ordering::SeqCst,
        );
        reply["access_token"].as_str().unwrap().to_owned()
    }

    /// Refresh grants the IdP served since the link.
    async fn refreshes(&self) -> u64 {
        self.idp.refreshes().await - self.baseline.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn lookup(&self) -> (StatusCode, Value) {
        self.broker.lookup(&self.token, "id=forge").await
    }

    /// Unlinks `forge` through the API; its answer.
    async fn unlink(&self) -> Value {
        answer(
            self.admin
                .delete(format!("{}/api/v2/external-auth/forge", self.broker.url))
                .header("X-CSRF-Token", &self.csrf),
        )
        .await
    }

    async fn link_state(&self) -> Value {
        answer(
            self.admin
                .get(format!("{}/api/v2/external-auth", self.broker.url)),
        )
        .await
    }

    async fn reject(&self) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/api/v2/workspaceagents/me/external-auth/rejected",
                self.broker.url
            ))
            .bearer_auth(&self.token)
            .json(&json!({"id": "forge"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
}

fn access(reply: &Value) -> String {
    reply["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_concurrent_lookups_of_an_expired_token_refresh_once() {
    let w = world(&[]).await;
    let old = w.link_expiring(1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(w.refreshes().await, 0);

    let url = format!(
        "{}/api/v2/workspaceagents/me/external-auth?match=https://git.forge.test/o/r.git",
        w.broker.url
    );
    let client = reqwest::Client::new();
    let lookups = (0..500).map(|_| {
        let (client, url, token) = (client.clone(), url.clone(), w.token.clone());
        tokio::spawn(async move {
            let response = client.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            access(&response.json().await.unwrap())
        })
    });
    let tokens: Vec<String> = futures_join(lookups.collect()).await;
    assert_eq!(tokens.len(), 500);
    let new = &tokens[0];
    assert!(!new.is_empty() && *new != old);
    assert!(
        tokens.iter().all(|t| t == new),
        "every reply carries the one new token"
    );
    assert_eq!(
        w.refreshes().await,
        1,
        "exactly one refresh grant served by the IdP"
    );
    assert_eq!(
        w.idp.introspect("broker", "broker-secret", new).await["active"],
        true
    );
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<String>>) -> Vec<String> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_refresh_failures_keep_the_tokens() {
    let w = world(&[
        ("EXTAUTH_REFRESH_RETRY_TIMEOUT", "1s"),
        ("EXTAUTH_UPSTREAM_TIMEOUT", "1s"),
    ])
    .await;
    w.link_expiring(1).await;
    let faults = [
        json!({"path": "/token", "mode": "status", "status": 500}),
        json!({"path": "/token", "mode": "status", "status": 429, "headers": {"retry-after": "30"}}),
        json!({"path": "/token", "mode": "hang", "delayMs": 3000}),
        json!({"path": "/token", "mode": "reset"}),
    ];
    for (n, fault) in faults.into_iter().enumerate() {
        // The token issued last lives 1 s: let it expire.
        w.idp.set_access_token_ttl(1).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        w.idp.fault(fault.clone()).await;
        let started = Instant::now();
        let (status, failed) = w.lookup().await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{fault}: {failed}");
        assert_eq!(
            failed["message"],
            "The token expired and the provider could not refresh it; try again shortly."
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "retries are bounded"
        );
        // Nothing was destroyed.
        let state = w.link_state().await;
        assert_eq!(state["links"][0]["has_refresh_token"], true, "{fault}");
        assert_eq!(state["links"][0]["validate_error"], "", "{fault}");
        assert_eq!(
            w.refreshes().await,
            n as u64,
            "{fault}: no refresh reached the IdP"
        );

        w.idp.clear_faults().await;
        let (status, recovered) = w.lookup().await;
        assert_eq!(status, StatusCode::OK, "{fault}: {recovered}");
        assert!(!access(&recovered).is_empty());
        assert_eq!(
            w.refreshes().await,
            n as u64 + 1,
            "{fault}: the kept refresh token works"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_clears_the_refresh_token_and_stops_asking() {
    let w = world(&[]).await;
    w.link_expiring(1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    w.idp
        .fault(json!({"path": "/token", "mode": "oauth", "error": "invalid_grant", "count": 1}))
        .await;

    let (status, reply) = w.lookup().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        reply["url"],
        format!("{}/external-auth/forge", w.broker.url)
    );
    let state = w.link_state().await;
    assert_eq!(state["links"][0]["has_refresh_token"], false);
    assert_eq!(state["links"][0]["authenticated"], false);
    let reason = state["links"][0]["validate_error"].as_str().unwrap();
    assert!(reason.contains("invalid_grant"), "{reason}");

    let before = w.idp.counters().await;
    for _ in 0..3 {
        let (_, again) = w.lookup().await;
        assert_eq!(
            again["url"],
            format!("{}/external-auth/forge", w.broker.url)
        );
    }
    assert_eq!(
        w.idp.counters().await,
        before,
        "no call reaches the IdP any more"
    );

    // Linking again clears the cached reason.
    w.broker.link(&w.admin, "forge").await;
    let state = w.link_state().await;
    assert_eq!(state["links"][0]["authenticated"], true);
    assert_eq!(state["links"][0]["validate_error"], "");
    assert_eq!(state["links"][0]["has_refresh_token"], true);
    let (_, linked) = w.lookup().await;
    assert!(!access(&linked).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_pair_is_kept_when_validation_fails() {
    let w = world(&[]).await;
    let old = w.link_expiring(1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    w.idp
        .fault(json!({"path": "/me", "mode": "status", "status": 503}))
        .await;

    let (status, first) = w.lookup().await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let new = access(&first);
    assert!(!new.is_empty() && new != old);
    assert_eq!(w.refreshes().await, 1);

    let (_, second) = w.lookup().await;
    assert_eq!(
        access(&second),
        new,
        "the stored new pair is used next time"
    );
    assert_eq!(w.refreshes().await, 1, "without another refresh");
    w.idp.clear_faults().await;
    assert_eq!(
        w.idp.introspect("broker", "broker-secret", &new).await["active"],
        true
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_reads_rate_limits_right() {
    let w = world(&[]).await;
    let linked = w.link_expiring(3600).await;

    for (fault, still_valid) in [
        (
            json!({"path": "/me", "mode": "status", "status": 403, "count": 1, "headers": {"x-ratelimit-remaining": "0"}}),
            true,
        ),
        (
            json!({"path": "/me", "mode": "status", "status": 429, "count": 1}),
            true,
        ),
        (
            json!({"path": "/me", "mode": "status", "status": 403, "count": 1, "headers": {"x-ratelimit-remaining": "4999"}}),
            false,
        ),
    ] {
        let (_, before) = w.lookup().await;
        w.reject().await;
        w.idp.fault(fault.clone()).await;
        let refreshes = w.refreshes().await;
        let (status, after) = w.lookup().await;
        assert_eq!(status, StatusCode::OK, "{fault}");
        if still_valid {
            assert_eq!(access(&after), access(&before), "{fault}: kept as valid");
            assert_eq!(w.refreshes().await, refreshes);
        } else {
            assert_ne!(
                access(&after),
                access(&before),
                "{fault}: judged invalid, refreshed"
            );
            assert_eq!(w.refreshes().await, refreshes + 1);
        }
    }
    assert!(!linked.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_hanging_up_does_not_abort_the_refresh() {
    let w = world(&[]).await;
    let old = w.link_expiring(1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    w.idp
        .fault(json!({"path": "/token", "mode": "slow", "delayMs": 1500, "count": 1}))
        .await;

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .get(format!(
            "{}/api/v2/workspaceagents/me/external-auth?id=forge",
            w.broker.url
        ))
        .bearer_auth(&w.token)
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out mid-refresh");

    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        w.refreshes().await,
        1,
        "the refresh completed without its caller"
    );
    let (status, reply) = w.lookup().await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let new = access(&reply);
    assert!(!new.is_empty() && new != old);
    assert_eq!(w.refreshes().await, 1, "its result was stored and is used");
    assert_eq!(
        w.idp.introspect("broker", "broker-secret", &new).await["active"],
        true
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_revocation_is_retried_until_it_succeeds() {
    let w = world(&[]).await;
    let token = w.link_expiring(3600).await;
    w.idp
        .fault(json!({"path": "/token/revocation", "mode": "status", "status": 503}))
        .await;

    let unlinked = w.unlink().await;
    assert_eq!(unlinked["token_revoked"], false);
    assert_eq!(unlinked["revocation_pending"], true);
    assert!(
        unlinked["token_revocation_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{unlinked}"
    );
    let state = w.link_state().await;
    assert_eq!(state["links"], json!([]));
    assert_eq!(state["pending_revocations"][0]["provider_id"], "forge");
    assert_eq!(
        w.idp.introspect("broker", "broker-secret", &token).await["active"],
        true
    );

    w.idp.clear_faults().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = w.link_state().await;
        if state["pending_revocations"] == json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "still pending: {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        w.idp.introspect("broker", "broker-secret", &token).await["active"],
        false
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_upstream_requests_and_refreshes() {
    let w = world(&[]).await;
    // The value of one series (0 when absent).
    let value = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let exchange =
        r#"extauth_upstream_requests_total{provider="forge",kind="exchange",status="200"}"#;
    let refresh =
        r#"extauth_upstream_requests_total{provider="forge",kind="refresh",status="200"}"#;
    let refreshed = r#"extauth_refreshes_total{provider="forge",outcome="success"}"#;
    w.link_expiring(1).await;
    // On a loaded machine the link's own lookup may already have refreshed once: count from
    // here.
    let before = w.broker.metrics().await;
    assert_eq!(value(&before, exchange), 1, "{before}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _) = w.lookup().await;
    assert_eq!(status, StatusCode::OK);
    let after = w.broker.metrics().await;
    for series in [refresh, refreshed] {
        assert_eq!(
            value(&after, series),
            value(&before, series) + 1,
            "{series} counts the one refresh:\n{after}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_refresh_providers_ask_for_a_new_link_without_calling_the_provider() {
    let w = world(&[("CODER_EXTERNAL_AUTH_0_NO_REFRESH", "true")]).await;
    w.link_expiring(1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = w.idp.counters().await;
    let (status, reply) = w.lookup().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        reply["url"],
        format!("{}/external-auth/forge", w.broker.url)
    );
    assert_eq!(
        w.idp.counters().await,
        before,
        "an expired NO_REFRESH token costs no provider call"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_validates_a_bad_token_once() {
    let w = world(&[
        ("CODER_EXTERNAL_AUTH_0_NO_REFRESH", "true"),
        ("EXTAUTH_LISTEN_TIMEOUT", "2s"),
    ])
    .await;
    let token = w.link_expiring(3600).await;
    let destroyed = reqwest::Client::new()
        .post(format!("{}/test/access-token/destroy", w.idp.issuer))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(destroyed.status(), StatusCode::NO_CONTENT);
    w.reject().await;

    let validations = w.idp.requests("/me").await;
    let listen = tokio::spawn({
        let (url, token) = (w.broker.url.clone(), w.token.clone());
        async move {
            reqwest::Client::new()
                .get(format!(
                    "{url}/api/v2/workspaceagents/me/external-auth?id=forge&listen"
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    // Meanwhile the workspace reports the rejection again, as git retries would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.reject().await;
    let reply = listen.await.unwrap();
    assert_eq!(
        reply["url"],
        format!("{}/external-auth/forge", w.broker.url)
    );
    assert_eq!(
        w.idp.requests("/me").await,
        validations + 1,
        "one validation of the bad token, not one per wake-up"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_links_refreshes_the_expiring_ones_and_shows_what_failed() {
    let w = world(&[]).await;
    let old = w.link_expiring(1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Listed after expiry: refreshed on the spot (once), so the list shows the new expiry.
    let listed = w.link_state().await;
    assert_eq!(w.refreshes().await, 1);
    let link = &listed["links"][0];
    assert_eq!(link["authenticated"], true, "{listed}");
    let expires = time::OffsetDateTime::parse(
        link["expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        expires > time::OffsetDateTime::now_utc() + time::Duration::minutes(30),
        "{listed}"
    );
    let (_, reply) = w.lookup().await;
    let new = reply["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(w.refreshes().await, 1, "the lookup used the listed refresh");

    // A refresh the provider refuses for good shows in the list, with its reason, at once.
    w.unlink().await;
    w.link_expiring(1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    w.idp
        .fault(json!({"path": "/token", "mode": "oauth", "error": "invalid_grant", "count": 1}))
        .await;
    let listed = w.link_state().await;
    let link = &listed["links"][0];
    assert_eq!(link["authenticated"], false, "{listed}");
    assert_eq!(link["has_refresh_token"], false, "{listed}");
    assert!(
        link["validate_error"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{listed}"
    );

    // A provider that is down: the list answers without waiting out the refresh's retries
    // (10 s), the link as stored.
    w.unlink().await;
    w.link_expiring(1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    w.idp
        .fault(json!({"path": "/token", "mode": "status", "status": 503}))
        .await;
    let started = Instant::now();
    let listed = w.link_state().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(listed["links"][0]["has_refresh_token"], true, "{listed}");
    assert_eq!(listed["links"][0]["authenticated"], true, "{listed}");
    w.idp.clear_faults().await;
}
