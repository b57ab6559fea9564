//! The broker as an attacker meets it: hostile input on every route (read from the router, so a
//! new route is covered without anyone adding it here), the security headers of every answer,
//! slow and idle clients, token guessing, and what a workspace token may reach.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use extauth_tests::{Broker, answer, free_port, provider_env};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Shows up in an answer only if something wrote input into markup without escaping it.
const MARK: &str = "<x-hostile-7f3a";
/// Hostile values for every kind of place: element, attribute (both quotes), URL, script.
const HOSTILE: &[&str] = &[
    "x\"'><x-hostile-7f3a id=a>",
    "</title></script><x-hostile-7f3a>",
    "javascript:<x-hostile-7f3a>",
    "/x?a=<x-hostile-7f3a>&b=\"'\r\n",
];

/// Every query parameter and form field the routes read: the fields of the routes' deserialized
/// structs, their renames, and the fields of raw forms, read from the routes' source so a new
/// field is covered too.
fn field_names() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../broker/src/routes");
    let struct_re = regex::Regex::new(
        r"(?s)#\[derive\([^)]*Deserialize[^)]*\)\]\s*(?:#\[[^\]]*\]\s*)*pub struct \w+ \{(.*?)\n\}",
    )
    .unwrap();
    let field_re = regex::Regex::new(r"(?m)^\s*(?:pub )?(\w+):").unwrap();
    let rename_re = regex::Regex::new(r#"rename = "(\w+)""#).unwrap();
    let raw_re = regex::Regex::new(r#"(?:get\(|== )"(\w+)"\)?"#).unwrap();
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for s in struct_re.captures_iter(&source) {
            names.extend(field_re.captures_iter(&s[1]).map(|c| c[1].to_owned()));
            names.extend(rename_re.captures_iter(&s[1]).map(|c| c[1].to_owned()));
        }
        names.extend(raw_re.captures_iter(&source).map(|c| c[1].to_owned()));
    }
    assert!(
        ["redirect", "error_description", "unlinked", "name", "match"]
            .iter()
            .all(|n| names.contains(*n)),
        "the source scan lost fields: {names:?}"
    );
    names
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `path` with each `{parameter}` replaced by `value` (percent-encoded).
fn fill(path: &str, value: &str) -> String {
    regex::Regex::new(r"\{\w+\}")
        .unwrap()
        .replace_all(path, encode(value).as_str())
        .into_owned()
}

/// `path` with harmless values: the configured provider, the caller.
fn benign(path: &str) -> String {
    path.replace("{id}", "forge")
        .replace("{user}", "me")
        .replace("{file}", "github.svg")
}

struct Site {
    broker: Broker,
    session: String,
    csrf: String,
    api_token: String,
    _data: tempfile::TempDir,
}

/// A broker with one provider (never contacted: nothing here links) and OIDC sign-in configured
/// against a closed port, so that every route has something to do.
async fn site(extra: &[(&str, &str)]) -> Site {
    let port = free_port();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut env = provider_env(0, "forge", &closed, "c", "s", "git.forge.test");
    for (k, v) in [
        ("CODER_OIDC_ISSUER_URL", closed.as_str()),
        ("CODER_OIDC_CLIENT_ID", "extauth"),
        ("CODER_OIDC_CLIENT_SECRET", "oidc-secret"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        env.push((k.to_owned(), v.to_owned()));
    }
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    let session = broker.session_cookie().await;
    let (admin, csrf) = broker.admin().await;
    let created = answer(
        admin
            .post(format!("{}/api/v2/users/me/keys/tokens", broker.url))
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"name": "walker"})),
    )
    .await;
    let api_token = created["token"].as_str().unwrap().to_owned();
    Site {
        broker,
        session,
        csrf,
        api_token,
        _data: data,
    }
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The body of a page fetched with the session `cookie`.
async fn page_text(url: String, cookie: &str) -> String {
    plain_client()
        .get(url)
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Fails if `response` is markup that carries the mark unescaped.
async fn assert_escaped(response: reqwest::Response, what: &str) {
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(!location.contains(MARK), "{what}: redirect to {location}");
    let body = response.text().await.unwrap();
    if kind.contains("html") || kind.contains("svg") || kind.contains("xml") {
        assert!(
            !body.contains(MARK),
            "{what} ({kind}) reflects input unescaped:\n{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_input_on_every_route_never_comes_back_as_markup() {
    let site = site(&[]).await;
    let fields = field_names();
    let http = plain_client();
    let mut paths = extauth_broker::routes::paths();
    // Signing out ends the session the rest of the walk uses: last.
    paths.sort_by_key(|p| *p == "/logout");
    let mut requests = 0;
    for path in &paths {
        for hostile in HOSTILE {
            let query: String = fields
                .iter()
                .map(|f| format!("{f}={}", encode(hostile)))
                .collect::<Vec<_>>()
                .join("&");
            let mut form: Vec<(String, String)> = fields
                .iter()
                .filter(|f| *f != "csrf")
                .map(|f| (f.clone(), (*hostile).to_owned()))
                .collect();
            form.push(("csrf".to_owned(), site.csrf.clone()));
            for target in [fill(path, hostile), benign(path)] {
                let url = format!("{}{target}?{query}", site.broker.url);
                for method in ["GET", "POST", "PUT", "DELETE"] {
                    let credentials: [(&str, String); 3] = [
                        ("Cookie", site.session.clone()),
                        ("Authorization", format!("Bearer {}", site.api_token)),
                        ("X-Nobody", String::new()),
                    ];
                    for (header, value) in credentials {
                        let request = http
                            .request(method.parse().unwrap(), &url)
                            .header(header, value)
                            .header("X-CSRF-Token", &site.csrf)
                            .header("Accept", "text/html,application/json");
                        let request = if method == "GET" {
                            request
                        } else {
                            request.form(&form)
                        };
                        let response = request.send().await.unwrap();
                        assert_escaped(response, &format!("{method} {target} ({header})")).await;
                        requests += 1;
                    }
                }
            }
        }
    }
    // Stored hostile values (a token's name) are shown escaped on every page afterwards.
    let stored = plain_client()
        .post(format!(
            "{}/api/v2/users/me/workspace-tokens",
            site.broker.url
        ))
        .bearer_auth(&site.api_token)
        .json(&json!({"name": HOSTILE[0], "providers": ["forge"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), StatusCode::CREATED);
    let broker = {
        // The walk signed out last; a restart gives a new one-time sign-in.
        let Site { broker, _data, .. } = site;
        let port: u16 = broker.url.rsplit(':').next().unwrap().parse().unwrap();
        assert!(broker.stop());
        let env = provider_env(0, "forge", "http://127.0.0.1:9", "c", "s", "git.forge.test");
        let broker = Broker::start(port, _data.path(), &env);
        let session = broker.session_cookie().await;
        for path in &paths {
            let response = plain_client()
                .get(format!("{}{}", broker.url, benign(path)))
                .header("Cookie", &session)
                .send()
                .await
                .unwrap();
            assert_escaped(response, &format!("GET {path} after the walk")).await;
        }
        let listed = page_text(format!("{}/workspace-tokens", broker.url), &session).await;
        assert!(
            listed.contains("x-hostile-7f3a"),
            "the token with a hostile name is listed, escaped: {listed}"
        );
        broker
    };
    drop(broker);
    assert!(requests > 1000, "{requests} requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_the_security_headers() {
    let site = site(&[]).await;
    let http = plain_client();
    let mut pages = 0;
    let handler = regex::Regex::new(r#"\son[a-z]+="#).unwrap();
    for path in extauth_broker::routes::paths() {
        if path == "/logout" {
            continue;
        }
        let response = http
            .get(format!("{}{}", site.broker.url, benign(path)))
            .header("Cookie", &site.session)
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let h = response.headers();
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let kind = get("content-type");
        let csp = get("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(get("x-frame-options"), "DENY", "{path}");
        assert_eq!(get("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(get("referrer-policy"), "no-referrer", "{path}");
        assert!(
            get("strict-transport-security").is_empty(),
            "plain http: no HSTS"
        );
        // Static assets, and the authorization server's public documents (keys, metadata),
        // which clients cache.
        let static_asset = path.starts_with("/assets/")
            || path.starts_with("/icon/")
            || path.starts_with("/emojis/")
            || (path.starts_with("/.well-known/") && status == StatusCode::OK)
            || (path == "/oauth2/jwks" && status == StatusCode::OK);
        if static_asset {
            assert!(get("cache-control").starts_with("public"), "{path}");
        } else {
            assert_eq!(get("cache-control"), "no-store", "{path}");
        }
        if kind.starts_with("text/html") {
            pages += 1;
            assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
            let body = response.text().await.unwrap();
            assert!(
                !body.contains("<script>")
                    && !body.contains(" style=\"")
                    && !handler.is_match(&body),
                "{path}: inline script or style, which the CSP refuses:\n{body}"
            );
        } else {
            assert!(
                csp.starts_with("default-src 'none'") && csp.contains("sandbox"),
                "{path}: {csp}"
            );
        }
    }
    assert!(pages >= 5, "only {pages} pages seen");

    // The answers that carry a token are never cached.
    let (admin, csrf) = site.broker.admin().await;
    let created = admin
        .post(format!("{}/workspace-tokens", site.broker.url))
        .form(&[("csrf", csrf.as_str()), ("name", "w"), ("lifetime", "1d")])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["cache-control"], "no-store");
}

#[tokio::test(flavor = "multi_thread")]
async fn icons_come_from_a_fixed_set() {
    let site = site(&[]).await;
    let http = plain_client();
    for path in [
        "/icon/x%22%3E%3Cscript%3Ealert(document.domain)%3C%2Fscript%3E.svg",
        "/emojis/%22%3E%3Cx-hostile-7f3a%3E.png",
        "/icon/github.svg",
    ] {
        let response = http
            .get(format!("{}{path}", site.broker.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], "image/svg+xml");
        let body = response.text().await.unwrap();
        assert!(
            body.starts_with("<svg") && !body.contains("<script") && !body.contains("x-hostile"),
            "{body}"
        );
    }
    let other = http
        .get(format!("{}/icon/x.html", site.broker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    // The notice after an unlink names only a configured provider.
    let page = page_text(
        format!(
            "{}/?unlinked=%3Cx-hostile-7f3a%3EEvil+Corp&revoked=yes",
            site.broker.url
        ),
        &site.session,
    )
    .await;
    assert!(
        !page.contains("Evil Corp") && !page.contains("x-hostile"),
        "{page}"
    );
}

/// Reads until the broker closes the connection; false if it is still open after `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_connections_are_closed_and_their_number_is_limited() {
    let site = site(&[
        ("EXTAUTH_HTTP_HEADER_TIMEOUT", "1s"),
        ("EXTAUTH_HTTP_IDLE_TIMEOUT", "2s"),
        ("EXTAUTH_HTTP_MAX_CONNECTIONS", "50"),
    ])
    .await;
    let address = site.broker.url.trim_start_matches("http://").to_owned();
    let connect = || TcpStream::connect(&address).unwrap();

    // 200 connections that say nothing: more than the limit; all are closed (those over the
    // limit once they get their turn), none holds the broker.
    let mut idle: Vec<TcpStream> = (0..200).map(|_| connect()).collect();
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(30)),
            "silent connection {i} still open"
        );
    }
    // A header sent a byte at a time is cut off too.
    let mut slow = connect();
    let mut cut = false;
    for _ in 0..40 {
        if slow.write_all(b"G").is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        cut || closed_within(&mut slow, Duration::from_secs(5)),
        "a trickled header kept the connection"
    );

    // A kept-alive connection answers several requests, then is closed once idle.
    let mut kept = connect();
    for _ in 0..3 {
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = kept.read(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        closed_within(&mut kept, Duration::from_secs(30)),
        "idle keep-alive connection still open"
    );

    // The broker still serves, and says what it closed.
    let metrics = site.broker.metrics().await;
    assert!(
        metrics.contains("extauth_http_connections_timed_out_total{reason=\"header_timeout\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("extauth_http_connections_timed_out_total{reason=\"idle_timeout\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let site = site(&[
        ("EXTAUTH_HTTP_HEADER_TIMEOUT", "60s"),
        ("EXTAUTH_HTTP_MAX_CONNECTIONS", "3"),
    ])
    .await;
    let address = site.broker.url.trim_start_matches("http://").to_owned();
    let holders: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut waiting = TcpStream::connect(&address).unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(
        waiting.read(&mut buf).is_err(),
        "served past the limit of 3"
    );
    drop(holders);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = waiting.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "served once a slot is free"
    );
}

fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_token_checks_are_counted_logged_and_limited_per_client() {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("broker.log");
    let env: Vec<(String, String)> = [
        ("EXTAUTH_AUTH_FAILURE_LIMIT", "5"),
        ("CODER_PROXY_TRUSTED_HEADERS", "X-Forwarded-For"),
        ("CODER_PROXY_TRUSTED_ORIGINS", "127.0.0.3"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let broker = Broker::start_logging_to(port, data.path(), &env, &log);
    let (admin, csrf) = broker.admin().await;
    let valid = answer(
        admin
            .post(format!("{}/api/v2/users/me/keys/tokens", broker.url))
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"name": "good"})),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = format!("{}/api/v2/users/me", broker.url);
    let guess = "extauth_api_0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    let attacker = client_from("127.0.0.1");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = attacker.get(&me).bearer_auth(guess).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let wait: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    let throttled = attacker.get(&me).bearer_auth(&valid).send().await.unwrap();
    assert_eq!(
        throttled.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address is held back, valid token or not"
    );

    // Another client's valid token keeps working.
    let other = client_from("127.0.0.2");
    let ok = other.get(&me).bearer_auth(&valid).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    // Behind a trusted proxy the forwarded address counts; a forwarded address from anyone
    // else is the client's own claim and ignored.
    let proxy = client_from("127.0.0.3");
    for _ in 0..6 {
        proxy
            .get(&me)
            .bearer_auth(guess)
            .header("X-Forwarded-For", "192.0.2.1")
            .send()
            .await
            .unwrap();
    }
    let blocked = proxy
        .get(&me)
        .bearer_auth(&valid)
        .header("X-Forwarded-For", "192.0.2.1")
        .send()
        .await
        .unwrap();
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    let neighbour = proxy
        .get(&me)
        .bearer_auth(&valid)
        .header("X-Forwarded-For", "192.0.2.2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        neighbour.status(),
        StatusCode::OK,
        "another client behind the same proxy"
    );
    let spoofed = attacker
        .get(&me)
        .bearer_auth(&valid)
        .header("X-Forwarded-For", "192.0.2.99")
        .send()
        .await
        .unwrap();
    assert_eq!(
        spoofed.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "an untrusted X-Forwarded-For changes nothing"
    );

    // Counted, and logged without the secret.
    let metrics = broker.metrics().await;
    assert!(
        metrics.contains("extauth_auth_failures_total{reason=\"unknown\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("extauth_auth_throttled_total"),
        "{metrics}"
    );
    assert!(broker.stop());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("token authentication failed"), "{logged}");
    assert!(logged.contains("token_id_prefix=\"012345\""), "{logged}");
    assert!(
        !logged.contains("0123456789abcdef") && !logged.contains("aaaaaaaaaaaa"),
        "{logged}"
    );
    let lines = logged
        .lines()
        .filter(|l| l.contains("token authentication failed"))
        .count();
    assert!(
        lines <= 2,
        "rate-limited: {lines} lines for 14 failures from two addresses"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workspace_tokens_fetch_provider_tokens_and_nothing_else() {
    let site = site(&[]).await;
    let (admin, csrf) = site.broker.admin().await;
    let create = |body: Value| {
        admin
            .post(format!(
                "{}/api/v2/users/me/workspace-tokens",
                site.broker.url
            ))
            .header("X-CSRF-Token", &csrf)
            .json(&body)
    };
    let workspace = site
        .broker
        .workspace_token(
            &admin,
            &csrf,
            "me",
            json!({"name": "ws", "providers": ["forge"]}),
        )
        .await;
    let http = plain_client();
    for path in [
        "/api/v2/users/me",
        "/api/v2/users/admin",
        "/api/v2/users/me/workspace-tokens",
        "/api/v2/users/me/keys/tokens",
        "/api/v2/external-auth",
        "/api/v2/external-auth/forge",
        "/api/v2/users/oidc-claims",
    ] {
        let response = http
            .get(format!("{}{path}", site.broker.url))
            .bearer_auth(&workspace)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let (status, _) = site.broker.lookup(&workspace, "id=forge").await;
    assert_eq!(status, StatusCode::OK, "the workspace API takes it");

    // Narrowing to no provider is refused rather than meaning "all"; so are lifetimes that
    // overflow and names a terminal would run.
    for (body, says) in [
        (
            json!({"name": "n", "providers": []}),
            "narrowed to no provider",
        ),
        (
            json!({"name": "n", "lifetime": "99999999999999d"}),
            "Invalid lifetime",
        ),
        (
            json!({"name": "n", "lifetime": "36600000d"}),
            "Invalid lifetime",
        ),
        (
            json!({"name": "evil\u{1b}]0;pwned\u{7}"}),
            "Invalid token name",
        ),
        (json!({"name": "two\nlines"}), "Invalid token name"),
    ] {
        let response = create(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{body}: {error}"
        );
    }
}
