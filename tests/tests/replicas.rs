//! Several broker replicas on one PostgreSQL database behave as one: one refresh across
//! replicas, `listen` woken by a link completed elsewhere, a replica killed mid-refresh loses
//! nothing; `dbcrypt` and `store migrate` on real data; start-up while the database is away.
//!
//! Each test has a database of its own on the local PostgreSQL (`EXTAUTH_TEST_PG_URL`); the
//! tests fail, never skip, when it cannot be reached.

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use extauth_tests::TestDatabase;
use extauth_tests::{Broker, Idp, answer, binary, client, free_port, provider_env, spawn_listen};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

fn forge(issuer: &str) -> Vec<(String, String)> {
    let mut env = provider_env(
        0,
        "forge",
        issuer,
        "broker",
        "broker-secret",
        "git.forge.test",
    );
    env.push(("EXTAUTH_REFRESH_MARGIN".into(), "0s".into()));
    env
}

/// An IdP, a database, and the settings replicas share.
struct Cluster {
    idp: Idp,
    db: TestDatabase,
    env: Vec<(String, String)>,
    ports: Vec<u16>,
    dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn new(replicas: usize, keys: &str) -> Self {
        let ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
        let callbacks: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}/external-auth/forge/callback"))
            .collect();
        let idp = Idp::start(json!({ "clients": [
            client("broker", "broker-secret", &callbacks, false),
            client("broker-device", "device-secret", &[], true),
        ] }));
        let db = TestDatabase::create().await;
        let mut env = forge(&idp.issuer);
        // A second provider linked by device code.
        env.extend(provider_env(
            1,
            "tracker",
            &idp.issuer,
            "broker-device",
            "device-secret",
            "tracker.test",
        ));
        env.push(("CODER_EXTERNAL_AUTH_1_DEVICE_FLOW".into(), "true".into()));
        env.push((
            "CODER_EXTERNAL_AUTH_1_DEVICE_CODE_URL".into(),
            format!("{}/device/auth", idp.issuer),
        ));
        env.push(("CODER_PG_CONNECTION_URL".into(), db.url.clone()));
        env.push((
            "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS".into(),
            keys.to_owned(),
        ));
        let dirs = (0..replicas)
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        Self {
            idp,
            db,
            env,
            ports,
            dirs,
        }
    }

    fn start(&self, n: usize) -> Broker {
        Broker::start(self.ports[n], self.dirs[n].path(), &self.env)
    }

    fn start_with(&self, n: usize, extra: &[(&str, &str)]) -> Broker {
        let mut env = self.env.clone();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Broker::start(self.ports[n], self.dirs[n].path(), &env)
    }

    async fn sql(&self, query: &str) -> Vec<tokio_postgres::Row> {
        let (client, connection) = tokio_postgres::connect(&self.db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.query(query, &[]).await.unwrap()
    }
}

/// Signs in on `broker`, links `forge` with access tokens living `ttl` seconds, and returns a
/// workspace token and the linked access token.
async fn link(cluster: &Cluster, broker: &Broker, ttl: u64) -> (String, String) {
    let (admin, csrf) = broker.admin().await;
    cluster.idp.set_access_token_ttl(ttl).await;
    broker.link(&admin, "forge").await;
    cluster.idp.set_access_token_ttl(3600).await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "ws"}))
        .await;
    let (status, reply) = broker.lookup(&token, "id=forge").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    (token, access(&reply))
}

fn access(reply: &Value) -> String {
    reply["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn broker_command(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("extauth-broker"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("EXTAUTH_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_lookups_over_two_replicas_refresh_once() {
    let cluster = Cluster::new(2, &key(1)).await;
    let a = cluster.start(0);
    let b = cluster.start(1);
    let (token, _) = link(&cluster, &a, 2).await;
    // The workspace token made on A works on B: tokens and users are shared.
    let (status, reply) = b.lookup(&token, "id=forge").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let old = access(&reply);
    assert!(!old.is_empty());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // Counted from here (a loaded machine may have refreshed once during the set-up).
    let before = cluster.idp.refreshes().await;

    let http = reqwest::Client::new();
    let lookups: Vec<_> = (0..500)
        .map(|i| {
            let base = if i % 2 == 0 { &a.url } else { &b.url };
            let url = format!("{base}/api/v2/workspaceagents/me/external-auth?match=https://git.forge.test/o/r.git");
            let (http, token) = (http.clone(), token.clone());
            tokio::spawn(async move {
                let response = http.get(url).bearer_auth(token).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                access(&response.json().await.unwrap())
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for lookup in lookups {
        tokens.push(lookup.await.unwrap());
    }
    let new = &tokens[0];
    assert!(!new.is_empty() && *new != old);
    assert!(
        tokens.iter().all(|t| t == new),
        "both replicas hand out the one new token"
    );
    assert_eq!(
        cluster.idp.refreshes().await - before,
        1,
        "exactly one refresh grant across replicas"
    );
    assert_eq!(
        cluster.idp.introspect("broker", "broker-secret", new).await["active"],
        true
    );
    assert!(a.stop() && b.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_completed_on_one_replica_wakes_a_listen_on_another() {
    let cluster = Cluster::new(2, &key(1)).await;
    let a = cluster.start(0);
    let b = cluster.start(1);
    let (admin, csrf) = a.admin().await;
    let token = a
        .workspace_token(&admin, &csrf, "me", json!({"name": "ws"}))
        .await;
    let (_, before) = b.lookup(&token, "id=forge").await;
    assert!(before["url"].is_string(), "not linked yet: {before}");

    let listening = spawn_listen(&b.url, &token, "id=forge");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!listening.is_finished(), "B waits for the link");
    a.link(&admin, "forge").await;
    let linked_at = Instant::now();
    let (reply, answered_at) = tokio::time::timeout(Duration::from_secs(5), listening)
        .await
        .expect("B's listen was woken")
        .unwrap();
    assert!(!access(&reply).is_empty(), "{reply}");
    let delay = answered_at.saturating_duration_since(linked_at);
    assert!(delay < Duration::from_secs(1), "woken after {delay:?}");
    assert!(a.stop() && b.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_refresh_loses_nothing_and_the_other_serves() {
    let cluster = Cluster::new(2, &key(1)).await;
    let a = cluster.start(0);
    let b = cluster.start(1);
    // Two seconds, not one: expiry is counted in whole seconds, so a one-second token issued
    // at a second's end is already due at the set-up's own lookup, which then refreshes it.
    let (token, old) = link(&cluster, &a, 2).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let before = cluster.idp.refreshes().await;
    // A's refresh request is held by the IdP and never processed.
    cluster
        .idp
        .fault(json!({"path": "/token", "mode": "hang", "delayMs": 20000, "count": 1}))
        .await;
    let stuck = tokio::spawn({
        let (url, token) = (a.url.clone(), token.clone());
        async move {
            let _ = reqwest::Client::new()
                .get(format!(
                    "{url}/api/v2/workspaceagents/me/external-auth?id=forge"
                ))
                .bearer_auth(token)
                .timeout(Duration::from_secs(30))
                .send()
                .await;
        }
    });
    // Wait until A holds the refresh lock of this link (it is refreshing), then kill it.
    let admin: String = cluster
        .sql("SELECT id FROM users WHERE username = 'admin'")
        .await[0]
        .get(0);
    // The link's account is the IdP login (alice): one refresh lock per account.
    let lock = extauth_broker::store::lock_key(&format!("refresh:{admin}:forge/alice"));
    let held = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
         AND ((classid::bigint << 32) | objid::bigint) = {lock}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.sql(&held).await[0].get::<_, i64>(0) == 0 {
        assert!(Instant::now() < deadline, "A never took the refresh lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Kill it only once its request has reached the IdP (where it hangs): killed earlier, A
    // would leave the hanging fault for B's refresh.
    while cluster.idp.faulted("/token").await == 0 {
        assert!(
            Instant::now() < deadline,
            "A's refresh never reached the IdP"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill_hard();
    let _ = stuck.await;

    // The stored pair is intact and B refreshes it: the lock died with A's connection.
    let started = Instant::now();
    let (status, reply) = b.lookup(&token, "id=forge").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let new = access(&reply);
    assert!(!new.is_empty() && new != old, "{reply}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        cluster.idp.refreshes().await - before,
        1,
        "A's refresh was never served; B's was"
    );
    assert_eq!(
        cluster
            .idp
            .introspect("broker", "broker-secret", &new)
            .await["active"],
        true
    );
    assert!(b.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_revocation_is_retried_by_one_replica_only() {
    let cluster = Cluster::new(2, &key(1)).await;
    let a = cluster.start(0);
    let b = cluster.start(1);
    let (_, linked) = link(&cluster, &a, 3600).await;
    let (admin, csrf) = a.admin().await;
    cluster
        .idp
        .fault(json!({"path": "/token/revocation", "mode": "status", "status": 503}))
        .await;
    let unlinked: Value = answer(
        admin
            .delete(format!("{}/api/v2/external-auth/forge", a.url))
            .header("X-CSRF-Token", &csrf),
    )
    .await;
    assert_eq!(unlinked["revocation_pending"], true, "{unlinked}");

    // The provider recovers but answers slowly (1.5 s a request; two requests, the refresh and
    // the access token): a pass takes long enough that both replicas' one-second workers come
    // round while it runs, and only the lock keeps the second from revoking too.
    cluster
        .idp
        .fault(json!({"path": "/token/revocation", "mode": "slow", "delayMs": 1500}))
        .await;
    let pending = || async {
        let state: Value = answer(admin.get(format!("{}/api/v2/external-auth", b.url))).await;
        state["pending_revocations"].as_array().unwrap().len()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while pending().await > 0 {
        assert!(Instant::now() < deadline, "the revocation is still pending");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Long enough for a second replica's late duplicate to have arrived.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        cluster.idp.requests("/token/revocation").await,
        2,
        "one pass (refresh token, then access token) by one replica"
    );
    assert_eq!(
        cluster
            .idp
            .introspect("broker", "broker-secret", &linked)
            .await["active"],
        false
    );
    assert!(a.stop() && b.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_starting_during_dbcrypt_waits_for_it() {
    let cluster = Cluster::new(1, &key(1)).await;
    // The test plays the running dbcrypt: it holds the lock such a command holds.
    let (maintenance, connection) = tokio_postgres::connect(&cluster.db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let lock = extauth_broker::store::lock_key(extauth_broker::store::SERVING_LOCK);
    maintenance
        .execute("SELECT pg_advisory_lock($1)", &[&lock])
        .await
        .unwrap();
    let mut waiting = Broker::spawn(cluster.ports[0], cluster.dirs[0].path(), &cluster.env);
    // It asks for the lock shared, and waits.
    let queued = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
         AND mode = 'ShareLock' AND ((classid::bigint << 32) | objid::bigint) = {lock}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.sql(&queued).await[0].get::<_, i64>(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "the replica never asked for the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Alive, not ready, and saying why (a load balancer sends it nothing yet).
    let site = format!("http://127.0.0.1:{}", cluster.ports[0]);
    let status = |path: &'static str| {
        let url = format!("{site}{path}");
        async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (ready, why) = loop {
        match reqwest::get(format!("{site}/readyz")).await {
            Ok(response) => break (response.status(), response.text().await.unwrap()),
            Err(_) => {
                assert!(
                    Instant::now() < deadline,
                    "the replica answers while it waits"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        why.contains("a maintenance command (dbcrypt) runs on its database"),
        "{why}"
    );
    assert_eq!(status("/healthz").await.0, StatusCode::OK);

    maintenance
        .execute("SELECT pg_advisory_unlock($1)", &[&lock])
        .await
        .unwrap();
    waiting.wait_line(Duration::from_secs(30), |l| {
        l.starts_with("Sign in as the local admin: ")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while status("/readyz").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "ready once the command ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting.terminate());
}

#[tokio::test(flavor = "multi_thread")]
async fn dbcrypt_rotate_then_the_old_key_can_go() {
    let (old_key, new_key) = (key(1), key(2));
    let cluster = Cluster::new(1, &old_key).await;
    let a = cluster.start(0);
    let (token, linked) = link(&cluster, &a, 3600).await;
    let old_id = extauth_broker::crypto::key_id(&[1; 32]);
    let new_id = extauth_broker::crypto::key_id(&[2; 32]);
    let key_ids = |rows: Vec<tokio_postgres::Row>| -> Vec<Option<String>> {
        rows.iter().map(|r| r.get(0)).collect()
    };
    assert_eq!(
        key_ids(
            cluster
                .sql("SELECT access_token_key_id FROM external_auth_links")
                .await
        ),
        [Some(old_id.clone())]
    );

    let mut env: Vec<(String, String)> = cluster
        .env
        .iter()
        .filter(|(k, _)| k != "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS")
        .cloned()
        .collect();
    env.push((
        "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS".into(),
        format!("{new_key},{old_key}"),
    ));
    // Refused while a replica serves: it would go on writing with the key being revoked.
    let (ok, out, err) = broker_command(&env, &["dbcrypt", "rotate"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("broker replicas are running on this database; stop every one of them"),
        "{err}"
    );
    assert_eq!(
        key_ids(
            cluster
                .sql("SELECT access_token_key_id FROM external_auth_links")
                .await
        ),
        [Some(old_id.clone())],
        "nothing was rewritten"
    );
    assert!(a.stop());

    let (ok, out, err) = broker_command(&env, &["dbcrypt", "rotate"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("encrypted with key {new_id}")),
        "{out}"
    );
    assert!(out.contains(&format!("revoked: {old_id}")), "{out}");
    assert_eq!(
        key_ids(
            cluster
                .sql("SELECT access_token_key_id FROM external_auth_links")
                .await
        ),
        [Some(new_id.clone())]
    );
    let refresh = cluster
        .sql("SELECT refresh_token_key_id FROM external_auth_links")
        .await;
    assert_eq!(key_ids(refresh), [Some(new_id.clone())]);
    // Running it again finds nothing to do.
    let (ok, out, _) = broker_command(&env, &["dbcrypt", "rotate"]);
    assert!(ok && out.contains("rotated: 0 value(s)"), "{out}");

    // The old key removed: the broker starts and hands out the same token.
    let b = cluster.start_with(0, &[("CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS", &new_key)]);
    let (status, reply) = b.lookup(&token, "id=forge").await;
    assert_eq!((status, access(&reply)), (StatusCode::OK, linked.clone()));
    assert!(b.stop());

    // Only the old, revoked key: refused, with the reason.
    let mut only_old = cluster.env.clone();
    only_old.push((
        "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS".into(),
        old_key.clone(),
    ));
    let mut refused = Broker::spawn(cluster.ports[0], cluster.dirs[0].path(), &only_old);
    let status = refused
        .wait_exit(Duration::from_secs(20))
        .expect("start refused");
    assert!(!status.success());

    // decrypt: plaintext in the database, every key revoked; delete: nothing left.
    let mut decrypt_env = env.clone();
    decrypt_env.push((
        "CODER_EXTERNAL_TOKEN_ENCRYPTION_DECRYPT_KEYS".into(),
        new_key.clone(),
    ));
    let (ok, out, err) = broker_command(&decrypt_env, &["dbcrypt", "decrypt"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&new_id), "{out}");
    assert_eq!(
        key_ids(
            cluster
                .sql("SELECT access_token_key_id FROM external_auth_links")
                .await
        ),
        [None]
    );
    let (ok, _, err) = broker_command(&env, &["dbcrypt", "delete"]);
    assert!(!ok && err.contains("--yes"), "{err}");
    let (ok, out, err) = broker_command(&env, &["dbcrypt", "delete", "--yes"]);
    // The link and the token-signing key (sealed too; made anew at the next start).
    assert!(ok && out.contains("deleted: 2 record(s)"), "{out}{err}");
    assert!(
        cluster
            .sql("SELECT 1 FROM external_auth_links")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn store_migrate_copies_an_embedded_store_to_postgres_and_can_run_again() {
    let cluster = Cluster::new(1, "").await;
    // A broker on the embedded store (no PostgreSQL, generated key).
    let sled_env: Vec<(String, String)> = cluster
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with("CODER_PG") && !k.starts_with("CODER_EXTERNAL_TOKEN"))
        .cloned()
        .collect();
    let data = tempfile::tempdir().unwrap();
    let embedded = Broker::start(cluster.ports[0], data.path(), &sled_env);
    let (token, linked) = link(&cluster, &embedded, 3600).await;
    assert!(embedded.stop());

    let from = data.path().display().to_string();
    let args = ["store", "migrate", "--from", &from, "--to", &cluster.db.url];
    let (ok, out, err) = broker_command(&[], &args);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("copied and verified: users 1, sessions 1, tokens 1, links 1"),
        "{out}"
    );
    assert!(out.contains("token-encryption.key"), "{out}");
    let (ok, out, err) = broker_command(&[], &args);
    assert!(ok, "running it again is safe: {out}{err}");
    assert!(
        out.contains("destination now holds: users 1, sessions 1, tokens 1, links 1"),
        "{out}"
    );

    // The PostgreSQL broker, given the embedded store's key, serves the same token to the
    // same workspace token.
    let key = std::fs::read_to_string(data.path().join("token-encryption.key")).unwrap();
    let pg = cluster.start_with(0, &[("CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS", key.trim())]);
    let (status, reply) = pg.lookup(&token, "id=forge").await;
    assert_eq!((status, access(&reply)), (StatusCode::OK, linked));
    assert!(pg.stop());

    let (ok, _, err) = broker_command(
        &[],
        &[
            "store",
            "migrate",
            "--from",
            "/nonexistent",
            "--to",
            &cluster.db.url,
        ],
    );
    assert!(!ok && err.contains("no embedded store there"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_waits_for_its_database_and_reports_it_not_ready() {
    let cluster = Cluster::new(1, &key(1)).await;
    // A database that does not exist yet, as when the broker starts before PostgreSQL is up.
    let later = format!("{}_later", cluster.db.url.rsplit('/').next().unwrap());
    let url = format!("{}/{later}", cluster.db.url.rsplit_once('/').unwrap().0);
    let mut env = cluster.env.clone();
    env.push(("CODER_PG_CONNECTION_URL".into(), url));
    let port = cluster.ports[0];
    let mut process = Broker::spawn(port, cluster.dirs[0].path(), &env);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            break r;
        }
        assert!(Instant::now() < deadline, "the broker never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("PostgreSQL"),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains(&later), "{body}");
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "alive while waiting");

    // The database appears: the broker comes up by itself.
    cluster.sql(&format!("CREATE DATABASE {later}")).await;
    process.wait_line(Duration::from_secs(30), |l| {
        l.starts_with("Sign in as the local admin")
    });
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    // The database goes away under a running broker: not ready, still alive, no crash.
    cluster
        .sql(&format!("DROP DATABASE {later} WITH (FORCE)"))
        .await;
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["message"], "Store unreachable.", "{body}");
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(process.terminate(), "it still shuts down cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_flow_started_on_one_replica_completes_on_another() {
    let cluster = Cluster::new(2, &key(1)).await;
    let a = cluster.start(0);
    let b = cluster.start(1);
    // One browser session; the cookie and its CSRF token are valid on both replicas.
    let (browser, csrf) = a.admin().await;
    let started: Value =
        answer(browser.get(format!("{}/api/v2/external-auth/tracker/device", a.url))).await;
    let device_code = started["device_code"].as_str().unwrap().to_owned();
    cluster
        .idp
        .approve_device(started["user_code"].as_str().unwrap())
        .await;

    let poll = |base: String| {
        let (browser, csrf, device_code) = (browser.clone(), csrf.clone(), device_code.clone());
        async move {
            let response = browser
                .post(format!("{base}/api/v2/external-auth/tracker/device"))
                .header("X-CSRF-Token", csrf)
                .json(&json!({ "device_code": device_code }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.text().await.unwrap())
        }
    };
    let (status, body) = poll(b.url.clone()).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "B knows the flow A started: {body}"
    );
    // The flow is over everywhere.
    let (status, body) = poll(a.url.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Unknown device code"), "{body}");

    let token = a
        .workspace_token(&browser, &csrf, "me", json!({"name": "ws"}))
        .await;
    let (status, reply) = b.lookup(&token, "id=tracker").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!access(&reply).is_empty(), "{reply}");
    assert!(a.stop() && b.stop());
}

/// The id part of `extauth_<kind>_<id>_<secret>`.
fn token_id(token: &str) -> String {
    token.split('_').nth(2).unwrap().to_owned()
}

fn cache_hits(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("extauth_store_cache_lookups_total{result=\"hit\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `b` until `refused` says its answer changed; how long that took, or `None` after 2 s.
async fn seen_after(
    b: &Broker,
    token: &str,
    refused: impl Fn(StatusCode, &Value) -> bool,
) -> Option<Duration> {
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(2) {
        let (status, reply) = b.lookup(token, "id=forge").await;
        if refused(status, &reply) {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_or_unlink_on_one_replica_is_seen_by_the_other_within_100_ms() {
    let cluster = Cluster::new(2, &key(1)).await;
    let a = cluster.start(0);
    let b = cluster.start(1);
    let (token, _) = link(&cluster, &a, 3600).await;
    // B answers from its cache once it has read the token and the link.
    for _ in 0..5 {
        let (status, reply) = b.lookup(&token, "id=forge").await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    let hits = cache_hits(&b.metrics().await);
    assert!(
        hits >= 8.0,
        "B's lookups were answered from its cache: {hits} hits"
    );

    // Unlinking on A: B no longer hands out the provider token.
    let (admin, csrf) = a.admin().await;
    let unlinked = admin
        .delete(format!("{}/api/v2/external-auth/forge", a.url))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(unlinked.status().is_success(), "{}", unlinked.status());
    let after = seen_after(&b, &token, |_, reply| access(reply).is_empty()).await;
    assert!(
        after.is_some_and(|d| d < Duration::from_millis(100)),
        "B saw the unlink after {after:?}"
    );

    // Revoking the workspace token on A: B refuses it.
    let revoked = admin
        .delete(format!(
            "{}/api/v2/users/me/workspace-tokens/{}",
            a.url,
            token_id(&token)
        ))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    let after = seen_after(&b, &token, |status, _| status == StatusCode::UNAUTHORIZED).await;
    assert!(
        after.is_some_and(|d| d < Duration::from_millis(100)),
        "B refused the revoked token after {after:?}"
    );
    assert!(a.stop() && b.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_lost_its_listen_connection_never_serves_from_its_cache() {
    let cluster = Cluster::new(2, &key(1)).await;
    let a = cluster.start(0);
    let b = cluster.start(1);
    let (token, _) = link(&cluster, &a, 3600).await;
    for _ in 0..3 {
        assert_eq!(b.lookup(&token, "id=forge").await.0, StatusCode::OK);
    }
    // Every LISTEN connection is cut (A's and B's): notifications sent now would be lost.
    cluster
        .sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE query LIKE 'LISTEN extauth_links%' AND pid <> pg_backend_pid()",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A revokes directly in the database, as if its notification were lost.
    cluster
        .sql(&format!(
            "DELETE FROM api_tokens WHERE id = '{}'",
            token_id(&token)
        ))
        .await;
    // Either B knows it is not listening and reads the database, or it has listened again and
    // dropped its cache on the way: both refuse.
    let (status, reply) = b.lookup(&token, "id=forge").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "B answered a revoked token (linked: {})",
        !access(&reply).is_empty()
    );
    assert!(a.stop() && b.stop());
}
