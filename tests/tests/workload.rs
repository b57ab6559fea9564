//! Workload identity: a pod or a CI job exchanges the JWT its platform signed for an extauth
//! token (RFC 8693, RFC 7523) under a trust policy, and clones with nothing else. The issuer
//! here is a small one of the test's own — ES256 keys, a discovery document and a JWKS over
//! loopback HTTP — minting tokens shaped like Kubernetes service-account tokens and GitHub
//! Actions ID tokens; the GitHub App endpoints are a test server shaped like GitHub's.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use extauth_tests::git_server::GitServer;
use extauth_tests::{Broker, Idp, binary, client, free_port};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// An ES256 key with its id.
struct Key {
    kid: String,
    pair: EcdsaKeyPair,
}

impl Key {
    fn new(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self {
            kid: kid.to_owned(),
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        }
    }

    fn jwk(&self) -> Value {
        let public = self.pair.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": B64.encode(&public[1..33]), "y": B64.encode(&public[33..65]),
        })
    }

    fn sign(&self, claims: &Value) -> String {
        let header = B64.encode(json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}).to_string());
        let input = format!("{header}.{}", B64.encode(claims.to_string()));
        let signature = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", B64.encode(signature.as_ref()))
    }
}

/// The test's OIDC issuer: discovery and JWKS, keys that can rotate, fetches counted.
struct Issuer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<Mutex<u32>>,
    signing: Key,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct IssuerState {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<Mutex<u32>>,
}

impl Issuer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let signing = Key::new("key-1");
        let keys = Arc::new(Mutex::new(vec![signing.jwk()]));
        let fetches = Arc::new(Mutex::new(0));
        let state = IssuerState {
            url: url.clone(),
            keys: keys.clone(),
            fetches: fetches.clone(),
        };
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(|State(s): State<IssuerState>| async move {
                    Json(json!({"issuer": s.url, "jwks_uri": format!("{}/keys", s.url)}))
                }),
            )
            .route(
                "/keys",
                axum::routing::get(|State(s): State<IssuerState>| async move {
                    *s.fetches.lock().unwrap() += 1;
                    Json(json!({"keys": *s.keys.lock().unwrap()}))
                }),
            )
            .with_state(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            keys,
            fetches,
            signing,
            server,
        }
    }

    fn fetches(&self) -> u32 {
        *self.fetches.lock().unwrap()
    }

    /// A Kubernetes projected service-account token for `namespace`/`account`.
    fn kubernetes(&self, namespace: &str, account: &str, audience: &str) -> Value {
        let iat = now() - 5;
        json!({
            "iss": self.url,
            "sub": format!("system:serviceaccount:{namespace}:{account}"),
            "aud": [audience],
            "iat": iat, "nbf": iat, "exp": iat + 600,
            "jti": unique(),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": account, "uid": unique()},
                "pod": {"name": "dev-0", "uid": unique()},
            },
        })
    }

    /// A GitHub Actions ID token of `repository` at `git_ref`, run by `actor`.
    fn actions(&self, repository: &str, git_ref: &str, actor: &str) -> Value {
        let iat = now() - 5;
        json!({
            "iss": self.url,
            "sub": format!("repo:{repository}:ref:{git_ref}"),
            "aud": "extauth",
            "iat": iat, "nbf": iat, "exp": iat + 300,
            "jti": unique(),
            "repository": repository,
            "repository_owner": repository.split('/').next().unwrap(),
            "ref": git_ref,
            "actor": actor,
            "workflow": "deploy",
            "event_name": "push",
        })
    }
}

fn unique() -> String {
    let mut bytes = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    B64.encode(bytes)
}

fn policies(issuer: &str) -> String {
    format!(
        r#"policies:
  - name: dev-pods
    issuer: {issuer}
    audience: extauth
    max_age: 1h
    claims:
      sub: "system:serviceaccount:dev:*"
      kubernetes.io.namespace: dev
    act_as: admin
    providers: [gh]
    lifetime: 15m
  - name: ci-main
    issuer: {issuer}
    audience: extauth
    max_age: 10m
    claims: {{ sub: "repo:acme/*:ref:refs/heads/main", repository: acme/app }}
    act_as_claim: actor
    providers: [gh, gl]
    scopes: [external-auth:read]
    lifetime: 5m
"#
    )
}

struct World {
    issuer: Issuer,
    broker: Broker,
    git: GitServer,
    admin: reqwest::Client,
    csrf: String,
    policy_file: std::path::PathBuf,
    log: std::path::PathBuf,
    dir: tempfile::TempDir,
    _idp: Idp,
}

async fn world() -> World {
    world_with("", Vec::new()).await
}

/// The world with more policies (YAML list items) and broker settings.
async fn world_with(more_policies: &str, more_env: Vec<(String, String)>) -> World {
    let port = free_port();
    let callback = |id: &str| {
        vec![format!(
            "http://127.0.0.1:{port}/external-auth/{id}/callback"
        )]
    };
    let idp = Idp::start(json!({
        "clients": [
            client("gh-client", "gh-secret", &callback("gh"), false),
            client("gl-client", "gl-secret", &callback("gl"), false),
        ]
    }));
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let git = GitServer::start(
        &repos,
        &idp.issuer,
        &[("gh-client", "gh-secret"), ("gl-client", "gl-secret")],
    )
    .await;
    git.create_repo("gh/org/repo.git");
    git.create_repo("gl/group/project.git");
    let issuer = Issuer::start().await;
    let policy_file = dir.path().join("policies.yaml");
    std::fs::write(
        &policy_file,
        format!("{}{more_policies}", policies(&issuer.url)),
    )
    .unwrap();
    let git_host = regex::escape(git.url.trim_start_matches("http://"));
    let iss = idp.issuer.clone();
    let mut env: Vec<(String, String)> = vec![
        (
            "EXTAUTH_WORKLOAD_POLICIES".into(),
            policy_file.display().to_string(),
        ),
        (
            "EXTAUTH_LOG".into(),
            "warn,extauth_broker=info,extauth::audit=info".into(),
        ),
    ];
    for (n, (id, kind, client_id, secret)) in [
        ("gh", "github", "gh-client", "gh-secret"),
        ("gl", "gitlab", "gl-client", "gl-secret"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = |k: &str| format!("CODER_EXTERNAL_AUTH_{n}_{k}");
        env.extend([
            (key("ID"), id.to_owned()),
            (key("TYPE"), kind.to_owned()),
            (key("CLIENT_ID"), client_id.to_owned()),
            (key("CLIENT_SECRET"), secret.to_owned()),
            (key("AUTH_URL"), format!("{iss}/auth")),
            (key("TOKEN_URL"), format!("{iss}/token")),
            (key("VALIDATE_URL"), format!("{iss}/me")),
            (key("REGEX"), format!(r"^https?://{git_host}/{id}/.*$")),
            (key("SCOPES"), "openid".to_owned()),
        ]);
    }
    env.extend(more_env);
    let log = dir.path().join("broker.log");
    let broker = Broker::start_logging_to(port, &dir.path().join("store"), &env, &log);
    let (admin, csrf) = broker.admin().await;
    broker.link(&admin, "gh").await;
    broker.link(&admin, "gl").await;
    World {
        issuer,
        broker,
        git,
        admin,
        csrf,
        policy_file,
        log,
        dir,
        _idp: idp,
    }
}

impl World {
    async fn exchange(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/oauth2/tokens", self.broker.url))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        (status, response.json().await.unwrap())
    }

    async fn exchange_jwt(&self, jwt: &str) -> (StatusCode, Value) {
        self.exchange(&[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", jwt),
            ("subject_token_type", JWT_TYPE),
        ])
        .await
    }

    /// The admin's dry run of `token` against the policies.
    async fn dry_run(&self, token: &str) -> Value {
        self.admin
            .post(format!("{}/api/v2/workload-policies/test", self.broker.url))
            .header("X-CSRF-Token", &self.csrf)
            .json(&json!({ "token": token }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// git in a clean HOME with only the broker's URL and the identity token file.
    fn git(
        &self,
        dir: &Path,
        token_file: &Path,
        runtime: &Path,
        args: &[&str],
    ) -> std::process::Output {
        Command::new("git")
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("XDG_RUNTIME_DIR", runtime)
            .env("EXTAUTH_URL", &self.broker.url)
            .env("EXTAUTH_IDENTITY_TOKEN_FILE", token_file)
            .args(["-c", "credential.useHttpPath=true"])
            .args([
                "-c",
                &format!(
                    "credential.helper={}",
                    binary("git-credential-extauth").display()
                ),
            ])
            .args(args)
            .output()
            .unwrap()
    }
}

fn exchanges(metrics: &str, policy: &str, outcome: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("extauth_workload_exchanges_total{")
                && l.contains(&format!("policy=\"{policy}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_clones_with_only_its_service_account_token() {
    let w = world().await;
    let pod = tempfile::tempdir().unwrap();
    let token_file = pod.path().join("token");
    std::fs::write(&token_file, w.issuer.sign_k8s("dev", "builder")).unwrap();
    let runtime = pod.path().join("run");
    std::fs::create_dir(&runtime).unwrap();

    let output = w.git(
        pod.path(),
        &token_file,
        &runtime,
        &[
            "clone",
            "--quiet",
            &format!("{}/gh/org/repo.git", w.git.url),
            "repo",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(pod.path().join("repo/README").exists());
    // A second git process takes the exchanged token from the 0600 cache: no new exchange.
    let output = w.git(
        &pod.path().join("repo"),
        &token_file,
        &runtime,
        &["fetch", "--quiet"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metrics = w.broker.metrics().await;
    assert_eq!(exchanges(&metrics, "dev-pods", "issued"), 1, "{metrics}");
    let cached: Vec<_> = std::fs::read_dir(runtime.join("extauth"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(cached.len(), 1);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let exchanged: Value =
        serde_json::from_str(&std::fs::read_to_string(&cached[0]).unwrap()).unwrap();
    let bearer = exchanged["access_token"].as_str().unwrap();

    // The exchanged token is a bearer token like any: the policy's providers, nothing more.
    let (status, answer) = w.broker.lookup(bearer, "id=gh").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    assert!(!answer["access_token"].as_str().unwrap().is_empty());
    let (status, _) = w.broker.lookup(bearer, "id=gl").await;
    assert_eq!(
        status,
        reqwest::StatusCode::FORBIDDEN,
        "dev-pods grants gh only"
    );
    let other = tempfile::tempdir().unwrap();
    let output = w.git(
        other.path(),
        &token_file,
        &runtime,
        &[
            "clone",
            "--quiet",
            &format!("{}/gl/group/project.git", w.git.url),
            "p",
        ],
    );
    assert!(!output.status.success(), "gl is outside the pod's policy");
    // It names the workload in its act claim.
    let claims: Value =
        serde_json::from_slice(&B64.decode(bearer.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["act"]["sub"], "system:serviceaccount:dev:builder");
    assert_eq!(claims["extauth_policy"], "dev-pods");
    assert_eq!(claims["client_id"], "workload:dev-pods");
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() == 900);

    // The audit line names policy, subject and the token's hash, never the token.
    let log = w.log();
    let line = log
        .lines()
        .find(|l| l.contains("workload token exchange") && l.contains("issued"))
        .expect("an audit line");
    assert!(
        line.contains("dev-pods") && line.contains("system:serviceaccount:dev:builder"),
        "{line}"
    );
    assert!(line.contains("token_sha256"), "{line}");
    let jwt = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        !log.contains(jwt.trim()),
        "the workload token is never logged"
    );
    assert!(!log.contains(bearer), "the exchanged token is never logged");
}

impl Issuer {
    fn sign_k8s(&self, namespace: &str, account: &str) -> String {
        self.signing
            .sign(&self.kubernetes(namespace, account, "extauth"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ci_job_exchanges_its_id_token_by_jwt_bearer_and_policies_reload() {
    let w = world().await;
    // The metadata says both grants.
    let metadata: Value = reqwest::get(format!(
        "{}/.well-known/oauth-authorization-server",
        w.broker.url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let grants = metadata["grant_types_supported"].to_string();
    assert!(
        grants.contains(TOKEN_EXCHANGE) && grants.contains(JWT_BEARER),
        "{grants}"
    );

    let job = w
        .issuer
        .signing
        .sign(&w.issuer.actions("acme/app", "refs/heads/main", "admin"));
    let (status, answer) = w
        .exchange(&[("grant_type", JWT_BEARER), ("assertion", &job)])
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 300);
    assert_eq!(answer["scope"], "external-auth:read");
    assert_eq!(
        answer["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let bearer = answer["access_token"].as_str().unwrap().to_owned();
    for id in ["gh", "gl"] {
        let (status, _) = w.broker.lookup(&bearer, &format!("id={id}")).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{id}");
    }
    // Only the policy's scopes: the user API is out of reach.
    let me = reqwest::Client::new()
        .get(format!("{}/api/v2/users/me", w.broker.url))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), reqwest::StatusCode::FORBIDDEN);
    // A scope beyond the policy is refused.
    let job = w
        .issuer
        .signing
        .sign(&w.issuer.actions("acme/app", "refs/heads/main", "admin"));
    let (status, answer) = w
        .exchange(&[
            ("grant_type", JWT_BEARER),
            ("assertion", &job),
            ("scope", "external-auth:write"),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "invalid_scope");

    // The admin sees the policies, and a dry run names the rule a token misses.
    let summary: Value = w
        .admin
        .get(format!("{}/api/v2/workload-policies", w.broker.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["policies"][0]["name"], "dev-pods");
    assert_eq!(
        summary["policies"][1]["act_as"],
        "the user named by claim actor"
    );
    let feature =
        w.issuer
            .signing
            .sign(&w.issuer.actions("acme/app", "refs/heads/feature", "admin"));
    let dry = w.dry_run(&feature).await;
    assert_eq!(dry["accepted"], Value::Null, "{dry}");
    let reasons = dry["refusals"].to_string();
    assert!(
        reasons.contains("ci-main") && reasons.contains("refs/heads/feature"),
        "{reasons}"
    );

    // The file changes: ci-main goes. Its tokens end at once and new ones are refused.
    std::fs::write(
        &w.policy_file,
        policies(&w.issuer.url)
            .split("  - name: ci-main")
            .next()
            .unwrap(),
    )
    .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        let (status, _) = w.broker.lookup(&bearer, "id=gh").await;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "a token of a policy taken out of the file is refused");
    let job = w
        .issuer
        .signing
        .sign(&w.issuer.actions("acme/app", "refs/heads/main", "admin"));
    let (status, _) = w
        .exchange(&[("grant_type", JWT_BEARER), ("assertion", &job)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A wrong file is not taken: the policies in force stay, and the admin API says why.
    std::fs::write(&w.policy_file, "policies:\n  - name: broken\n").unwrap();
    let mut reported = Value::Null;
    for _ in 0..100 {
        reported = w
            .admin
            .get(format!("{}/api/v2/workload-policies", w.broker.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !reported["last_error"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        reported["last_error"]
            .as_str()
            .unwrap()
            .contains("policies"),
        "{reported}"
    );
    assert_eq!(reported["policies"][0]["name"], "dev-pods");
    let (status, _) = w.exchange_jwt(&w.issuer.sign_k8s("dev", "x")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_that_must_not_pass_are_refused_and_the_log_says_why() {
    let w = world().await;
    let i = &w.issuer;
    let refused = |answer: &Value| {
        assert_eq!(answer["error"], "invalid_grant", "{answer}");
        let description = answer["error_description"].as_str().unwrap();
        // Nothing about the policies leaks to the caller.
        assert!(
            !description.contains("dev-pods") && !description.contains("namespace"),
            "{description}"
        );
    };
    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    // A wrong audience.
    cases.push((
        "audience",
        i.signing
            .sign(&i.kubernetes("dev", "sa", "https://kubernetes.default.svc")),
        "aud is",
    ));
    // Expired.
    let mut claims = i.kubernetes("dev", "sa", "extauth");
    claims["iat"] = json!(now() - 1200);
    claims["nbf"] = json!(now() - 1200);
    claims["exp"] = json!(now() - 600);
    cases.push(("expired", i.signing.sign(&claims), "expired"));
    // Too old for the policy, though not expired.
    let mut claims = i.kubernetes("dev", "sa", "extauth");
    claims["iat"] = json!(now() - 7200);
    claims["exp"] = json!(now() + 600);
    cases.push(("too old", i.signing.sign(&claims), "s old"));
    // An issuer no policy names.
    let mut claims = i.kubernetes("dev", "sa", "extauth");
    claims["iss"] = json!("https://evil.example");
    cases.push((
        "unknown issuer",
        i.signing.sign(&claims),
        "no policy trusts issuer",
    ));
    // A claim that misses a rule.
    cases.push((
        "claim",
        i.signing.sign(&i.kubernetes("prod", "sa", "extauth")),
        "claim kubernetes.io.namespace is \"prod\" and must match \"dev\"",
    ));
    // alg none.
    let claims = i.kubernetes("dev", "sa", "extauth");
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims.to_string())
    );
    cases.push(("alg none", none, "algorithm \"none\" is not allowed"));
    // HS256 "signed" with the issuer's public key.
    let header = B64.encode(json!({"alg": "HS256", "kid": "key-1"}).to_string());
    let input = format!("{header}.{}", B64.encode(claims.to_string()));
    let public = i.signing.jwk().to_string();
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public.as_bytes()),
        input.as_bytes(),
    );
    cases.push((
        "HMAC with the public key",
        format!("{input}.{}", B64.encode(mac.as_ref())),
        "algorithm \"HS256\" is not allowed",
    ));
    // A key swap: another key signs, claiming the issuer's key id.
    let attacker = Key::new("key-1");
    cases.push((
        "key swap",
        attacker.sign(&i.kubernetes("dev", "sa", "extauth")),
        "the signature does not verify",
    ));
    for (name, token, logged) in &cases {
        let (status, answer) = w.exchange_jwt(token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {answer}");
        refused(&answer);
        let log = w.log();
        assert!(
            log.contains(logged),
            "{name}: the log should say {logged:?}:\n{log}"
        );
    }
    let metrics = w.broker.metrics().await;
    assert!(exchanges(&metrics, "none", "audience") >= 1, "{metrics}");
    assert!(exchanges(&metrics, "none", "algorithm") >= 2, "{metrics}");
    assert!(exchanges(&metrics, "none", "signature") >= 1, "{metrics}");

    // Replay: the first exchange wins, the same token again is refused while it lives.
    let token = i.sign_k8s("dev", "sa");
    let (status, _) = w.exchange_jwt(&token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = w.exchange_jwt(&token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "invalid_grant");
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("exchanged already")
    );
    assert_eq!(
        exchanges(&w.broker.metrics().await, "dev-pods", "replayed"),
        1
    );

    // The issuer rotates: a token under a new key id fetches the keys again, once.
    let before = i.fetches();
    let rotated = Key::new("key-2");
    i.keys.lock().unwrap().push(rotated.jwk());
    let (status, answer) = w
        .exchange_jwt(&rotated.sign(&i.kubernetes("dev", "sa", "extauth")))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(i.fetches(), before + 1);
    // Made-up key ids do not make the broker hammer the issuer.
    for n in 0..12 {
        let stranger = Key::new(&format!("made-up-{n}"));
        let (status, _) = w
            .exchange_jwt(&stranger.sign(&i.kubernetes("dev", "sa", "extauth")))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    assert!(
        i.fetches() <= before + 5,
        "at most five fetches a minute for unknown key ids, not {}",
        i.fetches() - before
    );

    // Malformed requests get invalid_request.
    let (status, answer) = w
        .exchange(&[("grant_type", TOKEN_EXCHANGE), ("subject_token", &token)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "invalid_request");
}

#[test]
fn config_check_names_a_wrong_policy_and_shows_a_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    let run = |text: &str| {
        std::fs::write(&file, text).unwrap();
        Command::new(binary("extauth-broker"))
            .args(["config", "check"])
            .env_clear()
            .env("CODER_EXTERNAL_AUTH_0_TYPE", "github")
            .env("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "x")
            .env("EXTAUTH_WORKLOAD_POLICIES", &file)
            .output()
            .unwrap()
    };
    let ok = run(
        "policies:\n  - name: pods\n    issuer: https://oidc.eks.example.com/id/ABC\n    audience: extauth\n    claims: { sub: 'system:serviceaccount:dev:*' }\n    act_as: ci-bot\n    providers: [github]\n",
    );
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        out.contains("workload policy pods") && out.contains("system:serviceaccount:dev:*"),
        "{out}"
    );
    let bad = run(
        "policies:\n  - name: pods\n    issuer: http://oidc.example.com\n    audience: extauth\n    act_as: ci-bot\n    providers: [gitlab]\n    lifetime: 2d\n",
    );
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    for expected in [
        "EXTAUTH_WORKLOAD_POLICIES",
        "issuer",
        "claims: at least one rule",
        "\"gitlab\" is not a configured provider",
        "lifetime: at most 24h",
    ] {
        assert!(err.contains(expected), "{expected:?} in {err}");
    }
}

/// A test server shaped like GitHub's App API: installations, installation tokens (narrowed as
/// asked), their revocation; every app JWT checked against the app's public key.
#[derive(Clone)]
struct FakeGitHub {
    public_key: Arc<Vec<u8>>,
    calls: Arc<Mutex<Vec<Value>>>,
    revoked: Arc<Mutex<Vec<String>>>,
}

impl FakeGitHub {
    fn app_jwt_ok(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(jwt) = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let parts: Vec<&str> = jwt.split('.').collect();
        if parts.len() != 3 {
            return false;
        }
        let input = format!("{}.{}", parts[0], parts[1]);
        let Ok(signature) = B64.decode(parts[2]) else {
            return false;
        };
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            self.public_key.as_slice(),
        );
        if key.verify(input.as_bytes(), &signature).is_err() {
            return false;
        }
        let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        claims["iss"] == "1234" && exp > now() && exp - iat <= 600 && iat <= now()
    }

    async fn start(public_key: Vec<u8>) -> (Self, String, tokio::task::JoinHandle<()>) {
        let fake = Self {
            public_key: Arc::new(public_key),
            calls: Arc::default(),
            revoked: Arc::default(),
        };
        let app = axum::Router::new()
            .route(
                "/app/installations",
                axum::routing::get(|State(f): State<FakeGitHub>, headers: axum::http::HeaderMap| async move {
                    if !f.app_jwt_ok(&headers) {
                        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Bad credentials"})));
                    }
                    f.calls.lock().unwrap().push(json!({"list": true}));
                    (StatusCode::OK, Json(json!([
                        {"id": 7, "account": {"login": "someone-else"}},
                        {"id": 42, "account": {"login": "Acme"}},
                    ])))
                }),
            )
            .route(
                "/app/installations/{id}/access_tokens",
                axum::routing::post(
                    |State(f): State<FakeGitHub>,
                     axum::extract::Path(id): axum::extract::Path<u64>,
                     headers: axum::http::HeaderMap,
                     Json(body): Json<Value>| async move {
                        if !f.app_jwt_ok(&headers) {
                            return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Bad credentials"})));
                        }
                        if id != 42 {
                            return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"})));
                        }
                        f.calls.lock().unwrap().push(json!({"installation": id, "body": body}));
                        let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
                        (StatusCode::CREATED, Json(json!({
                            "token": format!("ghs_{}", unique().replace(['-', '_'], "x")),
                            "expires_at": expires.format(&time::format_description::well_known::Rfc3339).unwrap(),
                            "permissions": body["permissions"],
                        })))
                    },
                ),
            )
            .route(
                "/installation/token",
                axum::routing::delete(|State(f): State<FakeGitHub>, headers: axum::http::HeaderMap| async move {
                    let token = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or_default()
                        .to_owned();
                    f.revoked.lock().unwrap().push(token);
                    StatusCode::NO_CONTENT
                }),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (fake, url, server)
    }
}

fn openssl(args: &[&str]) {
    let status = Command::new("openssl").args(args).status().unwrap();
    assert!(status.success(), "openssl {args:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_grants_a_narrowed_github_app_token_and_exec_revokes_it_at_exit() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("app.pem");
    let public = keys.path().join("app.der");
    // GitHub hands out PKCS#1 PEM keys.
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        key.to_str().unwrap(),
        "2048",
    ]);
    openssl(&[
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-RSAPublicKey_out",
        "-outform",
        "DER",
        "-out",
        public.to_str().unwrap(),
    ]);
    let (github, github_url, server) = FakeGitHub::start(std::fs::read(&public).unwrap()).await;
    let bot = |k: &str| format!("CODER_EXTERNAL_AUTH_2_{k}");
    let env = vec![
        (bot("ID"), "bot".to_owned()),
        (bot("TYPE"), "github".to_owned()),
        (bot("CLIENT_ID"), "Iv1.bot".to_owned()),
        (bot("CLIENT_SECRET"), "bot-secret".to_owned()),
        (bot("REGEX"), r"^https?://github\.example/.*$".to_owned()),
        (bot("API_BASE_URL"), format!("{github_url}/")),
        (bot("APP_ID"), "1234".to_owned()),
        (bot("APP_PRIVATE_KEY_FILE"), key.display().to_string()),
    ];
    let deploy = r#"  - name: deploy-bot
    issuer: ISSUER
    audience: extauth
    claims: { repository: acme/deployer, ref: refs/heads/main }
    act_as: admin
    github_app:
      provider: bot
      owner: acme
      repositories: [app]
      permissions: { contents: write, pull_requests: read }
"#;
    // The issuer's URL is known once it runs: the world writes the file, then it is rewritten.
    let w = world_with("", env).await;
    std::fs::write(
        &w.policy_file,
        format!(
            "{}{}",
            policies(&w.issuer.url),
            deploy.replace("ISSUER", &w.issuer.url)
        ),
    )
    .unwrap();
    let reloaded = w
        .admin
        .post(format!("{}/api/v2/workload-policies/reload", w.broker.url))
        .header("X-CSRF-Token", &w.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(
        reloaded.status(),
        reqwest::StatusCode::OK,
        "{}",
        reloaded.text().await.unwrap()
    );

    // The exchange with audience=bot: an installation token, narrowed as the policy says.
    let job = w.issuer.signing.sign(
        &w.issuer
            .actions("acme/deployer", "refs/heads/main", "admin"),
    );
    let (status, answer) = w
        .exchange(&[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", &job),
            ("subject_token_type", JWT_TYPE),
            ("audience", "bot"),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let installation_token = answer["access_token"].as_str().unwrap();
    assert!(installation_token.starts_with("ghs_"), "{answer}");
    assert_eq!(answer["extauth_provider"], "bot");
    assert_eq!(
        answer["extauth_revoke_url"],
        format!("{github_url}/installation/token")
    );
    assert!(answer["expires_in"].as_u64().unwrap() > 3000);
    let calls = github.calls.lock().unwrap().clone();
    assert_eq!(
        calls[0],
        json!({"list": true}),
        "the owner's installation is looked up"
    );
    assert_eq!(
        calls[1],
        json!({"installation": 42, "body": {
            "repositories": ["app"],
            "permissions": {"contents": "write", "pull_requests": "read"},
        }})
    );
    assert!(!w.log().contains(installation_token), "never logged");

    // A policy without a GitHub App grant cannot ask for one.
    let (status, answer) = w
        .exchange(&[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", &w.issuer.sign_k8s("dev", "sa")),
            ("subject_token_type", JWT_TYPE),
            ("audience", "bot"),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "invalid_target", "{answer}");

    // extauth exec --app: the token in GH_TOKEN for the command, revoked when it ends.
    let job_dir = tempfile::tempdir().unwrap();
    let token_file = job_dir.path().join("id-token");
    std::fs::write(
        &token_file,
        w.issuer.signing.sign(
            &w.issuer
                .actions("acme/deployer", "refs/heads/main", "admin"),
        ),
    )
    .unwrap();
    let exec = |script: &str| {
        Command::new(binary("extauth"))
            .args(["exec", "--app", "bot", "--", "sh", "-c", script])
            .current_dir(job_dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", job_dir.path())
            .env("XDG_RUNTIME_DIR", job_dir.path())
            .env("EXTAUTH_URL", &w.broker.url)
            .env("EXTAUTH_IDENTITY_TOKEN_FILE", &token_file)
            .output()
            .unwrap()
    };
    let output = exec(r#"printf %s "$GH_TOKEN" > gh; printf %s "$EXTAUTH_TOKEN_BOT" > generic"#);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let used = std::fs::read_to_string(job_dir.path().join("gh")).unwrap();
    assert!(used.starts_with("ghs_"), "{used}");
    assert_eq!(
        std::fs::read_to_string(job_dir.path().join("generic")).unwrap(),
        used
    );
    assert!(
        github.revoked.lock().unwrap().contains(&used),
        "revoked when the command ended"
    );
    // The command's status is passed on, and the token is revoked all the same.
    let output = exec(r#"printf %s "$GH_TOKEN" > gh; exit 3"#);
    assert_eq!(output.status.code(), Some(3));
    let used = std::fs::read_to_string(job_dir.path().join("gh")).unwrap();
    assert!(github.revoked.lock().unwrap().contains(&used));
    let metrics = w.broker.metrics().await;
    assert_eq!(
        exchanges(&metrics, "deploy-bot", "app_token"),
        3,
        "{metrics}"
    );
    server.abort();
}

/// Kills a child process when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_behind_a_private_ca_is_trusted_through_the_policy_s_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    extauth_tests::private_ca(certs.path());
    // A cluster's JWKS served over HTTPS by a real TLS server (openssl's), under a private CA.
    let key = Key::new("cluster-1");
    std::fs::write(
        certs.path().join("jwks.json"),
        json!({"keys": [key.jwk()]}).to_string(),
    )
    .unwrap();
    let port = free_port();
    let _server = Child(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-cert", "server.pem", "-key", "server.key"])
            .current_dir(certs.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let issuer = "https://cluster.example.internal";
    let policy = |name: &str, ca: Option<&Path>| {
        format!(
            "  - name: {name}\n    issuer: {issuer}\n    jwks_url: https://127.0.0.1:{port}/jwks.json\n{}    audience: extauth\n    claims: {{ sub: \"system:serviceaccount:dev:*\" }}\n    act_as: admin\n    providers: [gh]\n",
            ca.map(|c| format!("    ca_file: {}\n", c.display()))
                .unwrap_or_default()
        )
    };
    let w = world_with(
        &format!(
            "{}{}",
            policy("without-ca", None),
            policy("with-ca", Some(&certs.path().join("ca.pem")))
        ),
        Vec::new(),
    )
    .await;
    let mut claims = w.issuer.kubernetes("dev", "sa", "extauth");
    claims["iss"] = json!(issuer);
    let token = key.sign(&claims);
    let dry = w.dry_run(&token).await;
    assert_eq!(dry["accepted"], "with-ca", "{dry}");
    assert_eq!(dry["refusals"][0]["policy"], "without-ca", "{dry}");
    assert_eq!(dry["refusals"][0]["label"], "issuer_unavailable", "{dry}");
    let (status, answer) = w.exchange_jwt(&token).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(exchanges(&w.broker.metrics().await, "with-ca", "issued"), 1);
}
