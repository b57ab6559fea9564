//! Signing in with OIDC against `oidc-provider` as the IdP: the flow, every refusal with its
//! message, back-channel and RP-initiated logout.

use extauth_tests::{Broker, Idp, free_port};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct World {
    idp: Idp,
    broker: Broker,
    _data: tempfile::TempDir,
}

fn login_client(id: &str, secret: &str, port: u16, hs256: bool) -> Value {
    let mut client = json!({
        "client_id": id, "client_secret": secret,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "redirect_uris": [format!("http://127.0.0.1:{port}/api/v2/users/oidc/callback")],
        "post_logout_redirect_uris": [format!("http://127.0.0.1:{port}/login")],
        "token_endpoint_auth_method": "client_secret_basic",
    });
    if hs256 {
        client["id_token_signed_response_alg"] = json!("HS256");
    }
    client
}

/// An IdP and a broker signing in with client `extauth` (or the HS256 one); `settings` are extra
/// broker variables; `issuer_suffix` is appended to the configured issuer (to get it wrong).
async fn world_with(settings: &[(&str, &str)], hs256: bool, issuer_suffix: &str) -> World {
    let port = free_port();
    let idp = Idp::start(json!({
        "clients": [
            login_client("extauth", "extauth-secret", port, false),
            login_client("extauth-hs", "a-long-shared-secret-for-hs256-tokens", port, true),
        ]
    }));
    let (id, secret) = if hs256 {
        ("extauth-hs", "a-long-shared-secret-for-hs256-tokens")
    } else {
        ("extauth", "extauth-secret")
    };
    let mut env: Vec<(String, String)> = vec![
        (
            "CODER_OIDC_ISSUER_URL".into(),
            format!("{}{issuer_suffix}", idp.issuer),
        ),
        ("CODER_OIDC_CLIENT_ID".into(), id.into()),
        ("CODER_OIDC_CLIENT_SECRET".into(), secret.into()),
        ("CODER_OIDC_SIGN_IN_TEXT".into(), "Company SSO".into()),
    ];
    env.extend(
        settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    World {
        idp,
        broker,
        _data: data,
    }
}

async fn world(settings: &[(&str, &str)]) -> World {
    world_with(settings, false, "").await
}

/// Signs in through the IdP as a browser would; the final response and the browser.
async fn sign_in(w: &World) -> (reqwest::Client, StatusCode, String, String) {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::limited(20))
        .build()
        .unwrap();
    let login = browser
        .get(format!("{}/login", w.broker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login.contains("Sign in with Company SSO"), "{login}");
    let response = browser
        .get(format!("{}/api/v2/users/oidc/callback", w.broker.url))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let url = response.url().to_string();
    (
        browser,
        status,
        url,
        unescape(&response.text().await.unwrap()),
    )
}

/// The page's text as a person reads it (HTML character references resolved).
fn unescape(html: &str) -> String {
    html.replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

async fn me(browser: &reqwest::Client, w: &World) -> (StatusCode, Value) {
    get(browser, w, "/api/v2/users/me").await
}

async fn get(browser: &reqwest::Client, w: &World, path: &str) -> (StatusCode, Value) {
    let response = browser
        .get(format!("{}{path}", w.broker.url))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_in_creates_the_user_linked_by_issuer_and_subject() {
    let w = world(&[]).await;
    let (browser, status, url, page) = sign_in(&w).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(url, format!("{}/", w.broker.url));
    assert!(
        page.contains("External authentication") && page.contains("alice"),
        "{page}"
    );
    let (_, alice) = me(&browser, &w).await;
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["email"], "alice@example.com");
    assert_eq!(alice["name"], "Alice Tester");
    assert_eq!(alice["is_admin"], true, "the first user is an admin");

    // Signing in again finds the same user; another account becomes another user.
    let (again, ..) = sign_in(&w).await;
    assert_eq!(me(&again, &w).await.1["id"], alice["id"]);
    w.idp.set_account("bob").await;
    let (bob, ..) = sign_in(&w).await;
    let (_, bob_user) = me(&bob, &w).await;
    assert_eq!(bob_user["username"], "bob");
    assert_eq!(bob_user["is_admin"], false);

    // The claims of each one's latest sign-in (ID token and userinfo merged) are kept for
    // troubleshooting: each user sees their own, an admin anyone's.
    let (status, mine) = get(&again, &w, "/api/v2/users/oidc-claims").await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(mine["username"], "alice");
    assert_eq!(mine["claims"]["email"], "alice@example.com");
    assert_eq!(mine["claims"]["iss"], w.idp.issuer);
    assert!(
        mine["claims"]["sub"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(mine["signed_in_at"].is_string());
    let (status, bobs) = get(&again, &w, "/api/v2/users/bob/oidc-claims").await;
    assert_eq!(status, StatusCode::OK, "{bobs}");
    assert_eq!(bobs["claims"]["preferred_username"], "bob");
    let (status, refused) = get(&bob, &w, "/api/v2/users/alice/oidc-claims").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_or_stale_id_tokens_are_refused() {
    let w = world(&[]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (claims, hs256_secret, message) in [
        (
            json!({"nonce": "not-the-nonce"}),
            None,
            "The ID token's nonce does not match this sign-in.",
        ),
        (
            json!({"aud": "someone-else"}),
            None,
            "The ID token was issued for another client.",
        ),
        (
            json!({"exp": now - 3600, "iat": now - 7200}),
            None,
            "The ID token has expired.",
        ),
        (
            json!({"iss": "https://evil.example"}),
            None,
            "The ID token comes from another issuer.",
        ),
        (
            json!({}),
            Some("not-the-client-secret"),
            "The ID token's HS256 signature does not match CODER_OIDC_CLIENT_SECRET.",
        ),
        (
            json!({"at_hash": "QzRbTr0Pcs3XtGpL2hI2wQ"}),
            None,
            "The ID token does not belong to the access token sent with it.",
        ),
    ] {
        let mut fault = json!({"path": "/token", "mode": "id_token", "claims": claims, "count": 1});
        if let Some(secret) = hs256_secret {
            fault["hs256Secret"] = json!(secret);
        }
        w.idp.fault(fault).await;
        let (browser, status, _, page) = sign_in(&w).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{claims}: {page}");
        assert!(
            page.contains(message),
            "{claims}: expected {message:?} in {page}"
        );
        assert_eq!(
            me(&browser, &w).await.0,
            StatusCode::UNAUTHORIZED,
            "no session after a refusal"
        );
    }
    // The right at_hash passes.
    w.idp
        .fault(json!({"path": "/token", "mode": "id_token", "claims": {"at_hash": "computed"}, "count": 1}))
        .await;
    let (browser, status, _, page) = sign_in(&w).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(me(&browser, &w).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_mismatch_shows_both_values() {
    let w = world_with(&[], false, "/").await;
    let (_, status, _, page) = sign_in(&w).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(page.contains("Issuer mismatch."), "{page}");
    assert!(
        page.contains(&format!(
            "CODER_OIDC_ISSUER_URL is \"{}/\" but the IdP says its issuer is \"{}\"",
            w.idp.issuer, w.idp.issuer
        )),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_rules_refuse_with_clear_messages() {
    let w = world(&[("CODER_OIDC_EMAIL_DOMAIN", "corp.example")]).await;
    let (_, status, _, page) = sign_in(&w).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        page.contains("Your email address \"alice@example.com\" is not in an allowed domain."),
        "{page}"
    );

    let w = world(&[]).await;
    w.idp.set_account("unverified-dan").await;
    let (_, status, _, page) = sign_in(&w).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("Your email address unverified-dan@example.com is not verified by the identity provider."), "{page}");
    let lenient = world(&[("CODER_OIDC_IGNORE_EMAIL_VERIFIED", "true")]).await;
    lenient.idp.set_account("unverified-dan").await;
    assert_eq!(sign_in(&lenient).await.1, StatusCode::OK);

    let w = world(&[("CODER_OIDC_ALLOWED_GROUPS", "ops")]).await;
    let (_, status, _, page) = sign_in(&w).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        page.contains("You are not in a group allowed to sign in."),
        "{page}"
    );
    w.idp.set_account("ops-olga").await;
    assert_eq!(sign_in(&w).await.1, StatusCode::OK);

    let w = world(&[
        ("CODER_OIDC_ALLOW_SIGNUPS", "false"),
        ("CODER_OIDC_SIGNUPS_DISABLED_TEXT", "Ask IT for an account."),
    ])
    .await;
    assert_eq!(
        sign_in(&w).await.1,
        StatusCode::OK,
        "the first user may always sign up"
    );
    w.idp.set_account("bob").await;
    let (_, status, _, page) = sign_in(&w).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("Ask IT for an account."), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_sign_in_of_a_known_user_keeps_its_claims() {
    let w = world(&[]).await;
    let (alice, status, ..) = sign_in(&w).await;
    assert_eq!(status, StatusCode::OK);
    // The IdP starts reporting alice's email as unverified: her next sign-in is refused, and
    // what the IdP said is there to see why.
    w.idp.set_claims(json!({"email_verified": false})).await;
    let (_, status, _, page) = sign_in(&w).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    let (status, kept) = get(&alice, &w, "/api/v2/users/oidc-claims").await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["claims"]["email_verified"], false);
    // An unknown account refused leaves nothing behind.
    w.idp.set_account("nobody").await;
    w.idp
        .set_claims(json!({"email": "nobody@elsewhere.example", "email_verified": false}))
        .await;
    let (_, status, ..) = sign_in(&w).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = get(&alice, &w, "/api/v2/users/nobody/oidc-claims").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn hs256_id_tokens_verify_with_the_client_secret() {
    let w = world_with(&[], true, "").await;
    let (browser, status, _, page) = sign_in(&w).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(me(&browser, &w).await.1["username"], "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn back_channel_logout_ends_the_session() {
    let w = world(&[]).await;
    let (browser, ..) = sign_in(&w).await;
    assert_eq!(me(&browser, &w).await.0, StatusCode::OK);
    let post = |token: String| {
        let url = format!("{}/api/v2/users/oidc/backchannel-logout", w.broker.url);
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&[("logout_token", token)])
                .send()
                .await
                .unwrap()
        }
    };

    // For another client: refused, the session lives on.
    let foreign = w
        .idp
        .logout_token(json!({"aud": "someone-else", "sub": "alice"}))
        .await;
    assert_eq!(post(foreign).await.status(), StatusCode::BAD_REQUEST);
    // Signed with a wrong secret: refused.
    let forged = w
        .idp
        .logout_token(json!({"aud": "extauth", "sub": "alice", "hs256Secret": "guess"}))
        .await;
    assert_eq!(post(forged).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(me(&browser, &w).await.0, StatusCode::OK);

    let real = w
        .idp
        .logout_token(json!({"aud": "extauth", "sub": "alice"}))
        .await;
    assert_eq!(post(real).await.status(), StatusCode::OK);
    assert_eq!(
        me(&browser, &w).await.0,
        StatusCode::UNAUTHORIZED,
        "the session ended"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_out_reaches_the_idps_end_session_endpoint() {
    let w = world(&[]).await;
    let (browser, ..) = sign_in(&w).await;
    let home = browser
        .get(format!("{}/", w.broker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = extauth_tests::csrf_of(&home);
    let out = browser
        .post(format!("{}/logout", w.broker.url))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let landed = out.url().clone();
    assert!(
        landed
            .as_str()
            .starts_with(&format!("{}/session/end", w.idp.issuer)),
        "{landed}"
    );
    let query: Vec<(String, String)> = landed.query_pairs().into_owned().collect();
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert!(
        param("id_token_hint").is_some_and(|t| t.split('.').count() == 3),
        "{landed}"
    );
    assert_eq!(
        param("post_logout_redirect_uri").as_deref(),
        Some(format!("{}/login", w.broker.url).as_str())
    );
    assert_eq!(
        out.status(),
        StatusCode::OK,
        "the IdP shows its sign-out confirmation"
    );
    assert_eq!(me(&browser, &w).await.0, StatusCode::UNAUTHORIZED);
}

/// `extauth-broker oidc check` with `env` (and nothing else from the test's environment).
fn oidc_check(env: &[(&str, String)]) -> (bool, String, String) {
    let out = std::process::Command::new(extauth_tests::binary("extauth-broker"))
        .args(["oidc", "check"])
        .env_clear()
        .env("CODER_ACCESS_URL", "https://extauth.example.com/sub/")
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn oidc_check_shows_discovery_keys_scopes_and_the_uris_to_register() {
    let idp = Idp::start(json!({ "clients": [login_client("extauth", "s", free_port(), false)] }));
    let base = [
        ("CODER_OIDC_CLIENT_ID", "extauth".to_owned()),
        ("CODER_OIDC_CLIENT_SECRET", "s".to_owned()),
    ];
    let with = |issuer: String, extra: &[(&'static str, &str)]| {
        let mut env = base.to_vec();
        env.push(("CODER_OIDC_ISSUER_URL", issuer));
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    };

    let (ok, out, err) = oidc_check(&with(idp.issuer.clone(), &[]));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("issuer             {} (matches", idp.issuer)),
        "{out}"
    );
    assert!(out.contains("1 key(s): test-key (RS256)"), "{out}");
    assert!(
        out.contains(&format!("end session        {}/session/end", idp.issuer)),
        "{out}"
    );
    assert!(
        out.contains("scopes requested   openid profile email offline_access"),
        "{out}"
    );
    assert!(
        out.contains(
            "redirect URI       https://extauth.example.com/sub/api/v2/users/oidc/callback"
        ),
        "{out}"
    );
    assert!(out.contains("back-channel       supported"), "{out}");

    // Without offline_access: a warning; with a scope the IdP does not list: a warning.
    let (ok, out, err) = oidc_check(&with(
        idp.issuer.clone(),
        &[("CODER_OIDC_SCOPES", "openid,email,groups-nope")],
    ));
    assert!(ok, "{out}{err}");
    assert!(err.contains("offline_access is not requested"), "{err}");
    assert!(out.contains("groups-nope"), "{out}");

    // The usual mistake, a trailing slash: both values, and a non-zero exit.
    let (ok, out, err) = oidc_check(&with(format!("{}/", idp.issuer), &[]));
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("{:?}", format!("{}/", idp.issuer)))
            && err.contains(&format!("{:?}", idp.issuer)),
        "{err}"
    );

    // Not configured at all.
    let (ok, _, err) = oidc_check(&[]);
    assert!(!ok);
    assert!(err.contains("set CODER_OIDC_ISSUER_URL"), "{err}");
}

/// Follows the sign-in from the broker through the IdP with `browser` (cookies, no redirects
/// followed) until the IdP sends it back: that callback URL, not yet visited.
async fn callback_url(browser: &reqwest::Client, w: &World) -> String {
    let mut url = format!("{}/api/v2/users/oidc/callback", w.broker.url);
    for step in 0..20 {
        if step > 0 && url.starts_with(&w.broker.url) {
            return url;
        }
        let response = browser.get(&url).send().await.unwrap();
        let location = response
            .headers()
            .get("location")
            .unwrap_or_else(|| panic!("no redirect from {url}"))
            .to_str()
            .unwrap()
            .to_owned();
        url = reqwest::Url::parse(&url)
            .unwrap()
            .join(&location)
            .unwrap()
            .to_string();
    }
    panic!("the IdP never sent the browser back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_finishes_once_and_only_in_the_browser_that_started_it() {
    let w = world(&[]).await;
    let exchanges = || async {
        w.idp.counters().await["grants"]["authorization_code"]
            .as_u64()
            .unwrap_or(0)
    };
    let browser = || {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let status_of = |client: reqwest::Client, url: String| async move {
        let response = client.get(url).send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    };

    // Signed in once; the same callback again is refused before its code reaches the IdP.
    let alice = browser();
    let finish = callback_url(&alice, &w).await;
    let (status, page) = status_of(alice.clone(), finish.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    assert_eq!(exchanges().await, 1);
    let (status, page) = status_of(alice.clone(), finish).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a replay: {page}");
    assert_eq!(
        exchanges().await,
        1,
        "the replayed code never reached the IdP"
    );

    // A callback carried to another browser (login CSRF: signing a victim in as the attacker)
    // does not finish there.
    let attacker = browser();
    let finish = callback_url(&attacker, &w).await;
    let (status, page) = status_of(browser(), finish).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");
    assert!(
        page.contains("This login was not started in this browser session."),
        "{page}"
    );
    assert_eq!(exchanges().await, 1);
}

/// An app sends a signed-out browser to the authorization endpoint: it signs in at the IdP and
/// comes back to the same authorization request, now at the consent page.
#[tokio::test]
async fn an_app_authorization_survives_signing_in() {
    let w = world(&[]).await;
    let (admin, csrf) = w.broker.admin().await;
    let app: Value = admin
        .post(format!("{}/api/v2/oauth2-provider/apps", w.broker.url))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({"name": "Dashboard", "callback_url": "https://dash.example/cb"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::limited(20))
        .build()
        .unwrap();
    let authorize = format!(
        "{}/oauth2/authorize?client_id={}&response_type=code&redirect_uri=https%3A%2F%2Fdash.example%2Fcb&state=s1",
        w.broker.url,
        app["id"].as_str().unwrap()
    );
    let login = browser.get(&authorize).send().await.unwrap();
    assert!(login.url().path().ends_with("/login"), "{}", login.url());
    let page = unescape(&login.text().await.unwrap());
    let start = regex::Regex::new(r#"href="([^"]*oidc/callback\?redirect=[^"]+)""#)
        .unwrap()
        .captures(&page)
        .unwrap_or_else(|| panic!("the sign-in button keeps the request: {page}"))[1]
        .to_owned();
    let back = browser
        .get(format!("{}{start}", w.broker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::OK);
    assert_eq!(back.url().path(), "/oauth2/authorize", "{}", back.url());
    assert_eq!(
        back.url()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1,
        "s1"
    );
    let consent = back.text().await.unwrap();
    assert!(
        consent.contains("Dashboard wants to use your account"),
        "{consent}"
    );
    assert!(consent.contains("alice"), "signed in as the IdP's user");
}

/// Split-horizon DNS (seed 003: "the browser can't resolve Docker service names"): browsers know
/// the IdP as `idp.test`, which the broker cannot resolve; the broker reaches it at its internal
/// address for discovery, keys, token, userinfo — for sign-in and for a provider alike — while
/// the issuer is still compared exactly and browsers still go to the public name.
#[tokio::test(flavor = "multi_thread")]
async fn the_broker_reaches_the_idp_at_its_internal_address() {
    let port = free_port();
    let idp = Idp::start(json!({
        "publicHost": "idp.test",
        "clients": [
            login_client("extauth", "extauth-secret", port, false),
            extauth_tests::client(
                "broker",
                "broker-secret",
                &[format!("http://127.0.0.1:{port}/external-auth/forge/callback")],
                false,
            ),
        ]
    }));
    let idp_port = idp.issuer.rsplit(':').next().unwrap().to_owned();
    assert_eq!(idp.issuer, format!("http://idp.test:{idp_port}"));
    let internal = format!("http://127.0.0.1:{idp_port}");

    // Without the internal address the broker cannot reach the public name at all.
    let (ok, _, said) = oidc_check(&[
        ("CODER_OIDC_ISSUER_URL", idp.issuer.clone()),
        ("CODER_OIDC_CLIENT_ID", "extauth".to_owned()),
        ("CODER_OIDC_CLIENT_SECRET", "extauth-secret".to_owned()),
    ]);
    assert!(!ok, "{said}");
    let (ok, out, said) = oidc_check(&[
        ("CODER_OIDC_ISSUER_URL", idp.issuer.clone()),
        ("CODER_OIDC_CLIENT_ID", "extauth".to_owned()),
        ("CODER_OIDC_CLIENT_SECRET", "extauth-secret".to_owned()),
        ("EXTAUTH_OIDC_INTERNAL_URL", internal.clone()),
    ]);
    assert!(ok, "{out}{said}");

    let mut env: Vec<(String, String)> = vec![
        ("CODER_OIDC_ISSUER_URL".into(), idp.issuer.clone()),
        ("CODER_OIDC_CLIENT_ID".into(), "extauth".into()),
        ("CODER_OIDC_CLIENT_SECRET".into(), "extauth-secret".into()),
        ("CODER_OIDC_SIGN_IN_TEXT".into(), "Company SSO".into()),
        ("EXTAUTH_OIDC_INTERNAL_URL".into(), internal.clone()),
        (
            "CODER_EXTERNAL_AUTH_0_INTERNAL_URL".into(),
            internal.clone(),
        ),
    ];
    env.extend(extauth_tests::provider_env(
        0,
        "forge",
        &idp.issuer,
        "broker",
        "broker-secret",
        "git.forge.test",
    ));
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    // The browser resolves the public name (as a user's machine would).
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::limited(20))
        .resolve("idp.test", format!("127.0.0.1:{idp_port}").parse().unwrap())
        .build()
        .unwrap();
    let signed_in = browser
        .get(format!("{}/api/v2/users/oidc/callback", broker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        signed_in.status(),
        StatusCode::OK,
        "{}",
        signed_in.text().await.unwrap()
    );
    let me: Value = browser
        .get(format!("{}/api/v2/users/me", broker.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "alice");
    // The sign-in page sent the browser to the public name.
    let start = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/api/v2/users/oidc/callback", broker.url))
        .send()
        .await
        .unwrap();
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("http://idp.test:"), "{location}");

    // A provider on the same IdP: the browser goes to the public name, the code exchange and
    // validation go to the internal one.
    let linked = browser
        .get(format!("{}/external-auth/forge", broker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        linked.url().as_str(),
        format!("{}/external-auth/forge?redirected=true", broker.url)
    );
    assert!(linked.text().await.unwrap().contains("Connected."));
    assert!(broker.stop());
}
