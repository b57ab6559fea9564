//! The broker as an OAuth2 authorization server and OpenID Provider, driven over HTTP as apps
//! drive it: seed 002's walkthrough command by command, the attacks it must refuse, the switch,
//! client credentials, introspection and revocation, key rotation, the pace, and a refresh race
//! over two replicas on PostgreSQL.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use extauth_tests::{Broker, TestDatabase, answer, binary, free_port};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CALLBACK: &str = "https://app.example/cb";

struct Site {
    broker: Broker,
    session: String,
    api_token: String,
    _data: tempfile::TempDir,
}

fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn site(env: &[(&str, &str)]) -> Site {
    let data = tempfile::tempdir().unwrap();
    site_in(data, env).await
}

async fn site_in(data: tempfile::TempDir, env: &[(&str, &str)]) -> Site {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let broker = Broker::start(free_port(), data.path(), &env);
    let session = broker.session_cookie().await;
    let (admin, csrf) = broker.admin().await;
    let created = answer(
        admin
            .post(format!("{}/api/v2/users/me/keys/tokens", broker.url))
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"name": "oauth2-test"})),
    )
    .await;
    Site {
        api_token: created["token"].as_str().unwrap().to_owned(),
        broker,
        session,
        _data: data,
    }
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.broker.url)
    }

    /// Seed 002: `POST /api/v2/oauth2-provider/apps` with an API token as Bearer.
    async fn create_app(&self, body: Value) -> Value {
        let response = plain()
            .post(self.url("/api/v2/oauth2-provider/apps"))
            .bearer_auth(&self.api_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// Seed 002: a secret with an empty POST.
    async fn create_secret(&self, app: &str) -> (String, String) {
        let response = plain()
            .post(self.url(&format!("/api/v2/oauth2-provider/apps/{app}/secrets")))
            .bearer_auth(&self.api_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["client_secret_full"].as_str().unwrap().to_owned(),
        )
    }

    /// A confidential app and its secret.
    async fn confidential(&self, name: &str) -> (String, String) {
        let app = self
            .create_app(json!({"name": name, "callback_url": CALLBACK}))
            .await;
        let id = app["id"].as_str().unwrap().to_owned();
        let (_, secret) = self.create_secret(&id).await;
        (id, secret)
    }

    /// Registers a protected resource with the admin's API token.
    async fn create_resource(&self, name: &str, url: &str, scopes: &[&str]) -> Value {
        let response = plain()
            .post(self.url("/api/v2/oauth2-provider/resources"))
            .bearer_auth(&self.api_token)
            .json(&json!({"name": name, "url": url, "scopes": scopes}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// `GET /oauth2/authorize` as the signed-in admin's browser, redirects not followed.
    async fn authorize(&self, query: &[(&str, &str)]) -> reqwest::Response {
        plain()
            .get(self.url("/oauth2/authorize"))
            .query(query)
            .header("Cookie", &self.session)
            .send()
            .await
            .unwrap()
    }

    /// Answers the consent page with `decision` (its hidden fields and CSRF token echoed).
    async fn consent(&self, page: &str, decision: &str) -> reqwest::Response {
        let mut form = hidden_fields(page);
        form.insert("decision".into(), decision.into());
        plain()
            .post(self.url("/oauth2/authorize"))
            .header("Cookie", &self.session)
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Authorize through the consent page (or a remembered consent); the redirect's query.
    async fn code(&self, query: &[(&str, &str)]) -> BTreeMap<String, String> {
        let response = self.authorize(query).await;
        let response = if response.status() == StatusCode::OK {
            let page = response.text().await.unwrap();
            assert!(page.contains("wants to use your account"), "{page}");
            self.consent(&page, "allow").await
        } else {
            response
        };
        assert_eq!(response.status(), StatusCode::FOUND);
        redirect_query(&response)
    }

    async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = plain()
            .post(self.url("/oauth2/tokens"))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        if status == StatusCode::OK {
            assert_eq!(
                response.headers()["cache-control"],
                "no-store",
                "token answers are never cached"
            );
        }
        (status, response.json().await.unwrap())
    }

    /// `GET path` with a bearer token: status and body.
    async fn api(
        &self,
        token: &str,
        path: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let response = plain()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap_or_default())
    }

    /// The standard flow of a confidential app: a code, then tokens.
    async fn tokens(&self, client_id: &str, secret: &str, scope: Option<&str>) -> Value {
        let mut query = vec![
            ("client_id", client_id),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
            ("state", "s"),
        ];
        if let Some(scope) = scope {
            query.push(("scope", scope));
        }
        let code = self.code(&query).await["code"].clone();
        let (status, body) = self
            .token(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", client_id),
                ("client_secret", secret),
                ("redirect_uri", CALLBACK),
            ])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// The hidden fields of a page's form (HTML entities undone).
fn hidden_fields(page: &str) -> BTreeMap<String, String> {
    let re = regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)">"#).unwrap();
    re.captures_iter(page)
        .map(|c| (c[1].to_owned(), unescape(&c[2])))
        .collect()
}

fn unescape(text: &str) -> String {
    let numeric = regex::Regex::new(r"&#(x?)([0-9a-fA-F]+);").unwrap();
    let text = numeric.replace_all(text, |c: &regex::Captures<'_>| {
        let radix = if c[1].is_empty() { 10 } else { 16 };
        char::from_u32(u32::from_str_radix(&c[2], radix).unwrap())
            .unwrap()
            .to_string()
    });
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

fn redirect_query(response: &reqwest::Response) -> BTreeMap<String, String> {
    let url = url::Url::parse(&location(response)).unwrap();
    url.query_pairs().into_owned().collect()
}

fn pkce() -> (String, String) {
    let verifier = extauth_broker::random::hex_token::<32>();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn access(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_owned()
}

fn refresh(tokens: &Value) -> String {
    tokens["refresh_token"].as_str().unwrap().to_owned()
}

/// Seed 002's walkthrough as the document shows it, command by command.
#[tokio::test]
async fn seed_002_walkthrough() {
    let site = site(&[]).await;
    // Create an application with {name, callback_url, icon}, the API token as Bearer.
    let app = site
        .create_app(json!({
            "name": "My Application",
            "callback_url": CALLBACK,
            "icon": "https://app.example/icon.png",
        }))
        .await;
    let client_id = app["id"].as_str().unwrap().to_owned();
    assert_eq!(app["callback_url"], CALLBACK);
    assert_eq!(app["redirect_uris"], json!([CALLBACK]));
    assert_eq!(app["client_type"], "confidential");
    assert!(
        app["endpoints"]["token"]
            .as_str()
            .unwrap()
            .ends_with("/oauth2/tokens")
    );
    // Generate a client secret: an empty POST; shown once, then only truncated.
    let (secret_id, secret) = site.create_secret(&client_id).await;
    assert!(secret.starts_with("extauth_cs_"), "scanner-friendly prefix");
    let listed = answer(
        plain()
            .get(site.url(&format!("/api/v2/oauth2-provider/apps/{client_id}/secrets")))
            .bearer_auth(&site.api_token),
    )
    .await;
    assert_eq!(listed[0]["id"], secret_id.as_str());
    assert_eq!(
        listed[0]["client_secret_truncated"],
        &secret[secret.len() - 6..]
    );
    assert!(!listed.to_string().contains(&secret));

    // Standard OAuth2 flow: authorize (no scope), consent, the code and state come back.
    let back = site
        .code(&[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
            ("state", "random-string"),
        ])
        .await;
    assert_eq!(back["state"], "random-string");
    assert_eq!(back["iss"], site.broker.url, "RFC 9207 iss");
    // Token exchange, exactly as the document's curl.
    let (status, tokens) = site
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &back["code"]),
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("redirect_uri", CALLBACK),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["expires_in"].as_u64().unwrap() > 3000);
    assert_eq!(
        tokens["scope"], "email offline_access openid profile user:read",
        "no scope asked: the app's defaults"
    );
    assert!(tokens["id_token"].is_string());
    // API access with the access token.
    let (status, _, me) = site.api(&access(&tokens), "/api/v2/users/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["username"], "admin");
    // The access token is an RFC 9068 JWT.
    let header = access(&tokens).split('.').next().unwrap().to_owned();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");

    // Refresh tokens, as the document's curl.
    let (status, refreshed) = site
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh(&tokens)),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_ne!(refresh(&refreshed), refresh(&tokens), "rotated");
    let (status, _, _) = site.api(&access(&refreshed), "/api/v2/users/me").await;
    assert_eq!(status, StatusCode::OK);

    // PKCE flow of a public client.
    let public = site
        .create_app(json!({
            "name": "CLI", "callback_url": "http://127.0.0.1:8123/callback", "client_type": "public",
        }))
        .await;
    let public_id = public["id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let back = site
        .code(&[
            ("client_id", public_id),
            ("response_type", "code"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("redirect_uri", "http://127.0.0.1:8123/callback"),
        ])
        .await;
    let (status, public_tokens) = site
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &back["code"]),
            ("client_id", public_id),
            ("code_verifier", &verifier),
            ("redirect_uri", "http://127.0.0.1:8123/callback"),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{public_tokens}");

    // Revoke access: every token of the app for this user ends.
    let response = plain()
        .delete(site.url("/oauth2/tokens"))
        .query(&[("client_id", &client_id)])
        .bearer_auth(&site.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _, _) = site.api(&access(&refreshed), "/api/v2/users/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked at once");
    let (status, body) = site
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh(&refreshed)),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // The public client's tokens are untouched.
    let (status, _, _) = site.api(&access(&public_tokens), "/api/v2/users/me").await;
    assert_eq!(status, StatusCode::OK);
    assert!(site.broker.stop());
}

#[tokio::test]
async fn pkce_and_redirect_attacks_are_refused() {
    let site = site(&[]).await;
    let (client_id, secret) = site.confidential("Web").await;
    let public = site
        .create_app(json!({"name": "Native", "redirect_uris": ["http://127.0.0.1:9000/cb", "vscode://extauth.test/cb"], "client_type": "public"}))
        .await;
    let public_id = public["id"].as_str().unwrap().to_owned();
    let (verifier, challenge) = pkce();

    // A public client without PKCE, and `plain`: sent back to the (valid) redirect with state.
    for extra in [
        vec![],
        vec![
            ("code_challenge", verifier.as_str()),
            ("code_challenge_method", "plain"),
        ],
    ] {
        let mut query = vec![
            ("client_id", public_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", "http://127.0.0.1:9000/cb"),
            ("state", "st"),
        ];
        query.extend(extra);
        let response = site.authorize(&query).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        let back = redirect_query(&response);
        assert_eq!(back["error"], "invalid_request", "{back:?}");
        assert_eq!(back["state"], "st");
        assert!(!back.contains_key("code"));
    }

    // Redirect URIs not registered exactly: refused on the broker's page, never redirected.
    for bad in [
        "https://app.example.evil/cb",
        "https://app.example/cb/more",
        "https://app.example/cb#fragment",
        "https://app.example/cb?extra=1",
        "http://app.example/cb",
    ] {
        let response = site
            .authorize(&[
                ("client_id", &client_id),
                ("response_type", "code"),
                ("redirect_uri", bad),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(response.headers().get("location").is_none(), "{bad}");
    }
    // An unknown client: the same.
    let response = site
        .authorize(&[
            ("client_id", "nope"),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A loopback redirect on another port (RFC 8252) and a custom scheme work for a public app.
    for redirect in ["http://127.0.0.1:51234/cb", "vscode://extauth.test/cb"] {
        let back = site
            .code(&[
                ("client_id", &public_id),
                ("response_type", "code"),
                ("redirect_uri", redirect),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
            .await;
        let (status, body) = site
            .token(&[
                ("grant_type", "authorization_code"),
                ("code", &back["code"]),
                ("client_id", &public_id),
                ("code_verifier", &verifier),
                ("redirect_uri", redirect),
            ])
            .await;
        assert_eq!(status, StatusCode::OK, "{redirect}: {body}");
    }

    // Downgrade one way: a code issued with a challenge, redeemed without its verifier.
    let with = site
        .code(&[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
            ("code_challenge", &challenge),
        ])
        .await;
    let redeem = |code: String, verifier: Option<String>| {
        let client_id = client_id.clone();
        let secret = secret.clone();
        let site = &site;
        async move {
            let mut form = vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", code),
                ("client_id", client_id),
                ("client_secret", secret),
                ("redirect_uri", CALLBACK.to_owned()),
            ];
            if let Some(v) = verifier {
                form.push(("code_verifier", v));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            site.token(&form).await
        }
    };
    let (status, body) = redeem(with["code"].clone(), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // The other way: a code issued without a challenge, redeemed with a verifier.
    let without = site
        .code(&[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
        ])
        .await;
    let (status, body) = redeem(without["code"].clone(), Some(verifier.clone())).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // A wrong verifier.
    let with = site
        .code(&[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .await;
    let (wrong, _) = pkce();
    let (status, body) = redeem(with["code"].clone(), Some(wrong)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // A redirect URI at the token endpoint other than the authorization's.
    let fresh = site
        .code(&[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
        ])
        .await;
    let (status, body) = site
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &fresh["code"]),
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("redirect_uri", "https://app.example/other"),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // EXTAUTH_OAUTH2_REQUIRE_PKCE is not set: the confidential flow without PKCE works
    // (seed 002's standard flow), covered by `seed_002_walkthrough`.
    assert!(site.broker.stop());
}

#[tokio::test]
async fn code_and_refresh_reuse_revoke_and_scopes_never_widen() {
    let site = site(&[]).await;
    let (client_id, secret) = site.confidential("Web").await;
    let (other_id, other_secret) = site.confidential("Other").await;

    // A code used twice: the second use fails and ends what the first one gave.
    let back = site
        .code(&[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
        ])
        .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", back["code"].as_str()),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("redirect_uri", CALLBACK),
    ];
    let (status, first) = site.token(&form).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = site.token(&form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, _, _) = site.api(&access(&first), "/api/v2/users/me").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the first use's tokens are revoked"
    );

    // Consent is remembered: the next authorization answers at once, no page.
    let response = site
        .authorize(&[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
            ("state", "again"),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::FOUND, "remembered consent");
    assert_eq!(redirect_query(&response)["state"], "again");

    // Refresh: an identical retry within the grace window gets the same answer back.
    let tokens = site.tokens(&client_id, &secret, None).await;
    let r1 = refresh(&tokens);
    let refresh_form = |token: &str, scope: Option<&str>| {
        let mut form = vec![
            ("grant_type".to_owned(), "refresh_token".to_owned()),
            ("refresh_token".to_owned(), token.to_owned()),
            ("client_id".to_owned(), client_id.clone()),
            ("client_secret".to_owned(), secret.clone()),
        ];
        if let Some(scope) = scope {
            form.push(("scope".to_owned(), scope.to_owned()));
        }
        form
    };
    let send = |form: Vec<(String, String)>| {
        let site = &site;
        async move {
            let form: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            site.token(&form).await
        }
    };
    let (status, second) = send(refresh_form(&r1, None)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, retried) = send(refresh_form(&r1, None)).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried, second, "a lost answer is given again");
    // A scope on refresh may narrow the access token...
    let r2 = refresh(&second);
    let (status, narrowed) = send(refresh_form(&r2, Some("user:read offline_access"))).await;
    assert_eq!(status, StatusCode::OK, "{narrowed}");
    assert_eq!(narrowed["scope"], "offline_access user:read");
    let r3 = refresh(&narrowed);
    // ...never widen it.
    let (status, body) = send(refresh_form(&r3, Some("user:read all"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    // Another client's refresh token.
    let (status, body) = site
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r3),
            ("client_id", &other_id),
            ("client_secret", &other_secret),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // A replaced refresh token presented again (not an identical retry): the family ends.
    let (status, body) = send(refresh_form(&r1, Some("openid"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, body) = send(refresh_form(&r3, None)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "the current refresh token died with its family"
    );
    let (status, _, _) = site.api(&access(&narrowed), "/api/v2/users/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A scope the app may not ask for: back to the app with invalid_scope.
    let response = site
        .authorize(&[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
            ("scope", "openid workspace-tokens:write"),
            ("state", "x"),
        ])
        .await;
    assert_eq!(redirect_query(&response)["error"], "invalid_scope");

    // A token without the scope a route needs: 403 naming the scope.
    let app = site
        .create_app(json!({"name": "Narrow", "callback_url": CALLBACK, "scopes": ["openid", "external-auth:read"]}))
        .await;
    let narrow_id = app["id"].as_str().unwrap().to_owned();
    let (_, narrow_secret) = site.create_secret(&narrow_id).await;
    let narrow = site
        .tokens(&narrow_id, &narrow_secret, Some("openid"))
        .await;
    assert!(
        narrow.get("refresh_token").is_none(),
        "no offline_access, no refresh token"
    );
    let (status, headers, _) = site.api(&access(&narrow), "/api/v2/users/me").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer error=\"insufficient_scope\", scope=\"user:read\""
    );
    // The same token reads the user's provider tokens' list: what its scope allows.
    let narrow = site
        .tokens(&narrow_id, &narrow_secret, Some("external-auth:read"))
        .await;
    let (status, _, _) = site.api(&access(&narrow), "/api/v2/external-auth").await;
    assert_eq!(status, StatusCode::OK);
    assert!(site.broker.stop());
}

#[tokio::test]
async fn consent_state_csrf_secrets_and_app_lifecycle() {
    let site = site(&[]).await;
    let (client_id, secret) = site.confidential("Web").await;
    // The consent page: app name, redirect host, scopes in words; Cancel → access_denied.
    let state = "a b&c=d/é\"'<x>";
    let response = site
        .authorize(&[
            ("client_id", &client_id),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
            ("state", state),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("Web wants to use your account"));
    assert!(page.contains("https://app.example"));
    assert!(page.contains("Read your account"));
    assert!(!page.contains("<x>"), "state is escaped in the form");
    let denied = site.consent(&page, "deny").await;
    let back = redirect_query(&denied);
    assert_eq!(back["error"], "access_denied");
    assert_eq!(back["state"], state, "state echoed exactly");
    // The consent POST without its CSRF token.
    let mut form = hidden_fields(&page);
    form.remove("csrf");
    form.insert("decision".into(), "allow".into());
    let response = plain()
        .post(site.url("/oauth2/authorize"))
        .header("Cookie", &site.session)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get("location").is_none());
    // Allowed: state echoed exactly with the code.
    let allowed = site.consent(&page, "allow").await;
    assert_eq!(redirect_query(&allowed)["state"], state);

    // Not signed in: the sign-in page first, then back to the same request.
    let response = plain()
        .get(site.url("/oauth2/authorize"))
        .query(&[
            ("client_id", client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let login = location(&response);
    assert!(
        login.starts_with("/login?redirect=%2Foauth2%2Fauthorize%3Fclient_id%3D"),
        "{login}"
    );

    // Client authentication: a secret in the URL, a wrong secret (401 + Basic challenge),
    // HTTP Basic works.
    let response = plain()
        .post(site.url(&format!("/oauth2/tokens?client_secret={secret}")))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = plain()
        .post(site.url("/oauth2/tokens"))
        .basic_auth(&client_id, Some("extauth_cs_00_wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    // Secret rotation: a second secret works; deleting the first ends its tokens only.
    let tokens_first = site.tokens(&client_id, &secret, None).await;
    let secrets = answer(
        plain()
            .get(site.url(&format!("/api/v2/oauth2-provider/apps/{client_id}/secrets")))
            .bearer_auth(&site.api_token),
    )
    .await;
    let first_id = secrets[0]["id"].as_str().unwrap().to_owned();
    let (_, second) = site.create_secret(&client_id).await;
    let tokens_second = site.tokens(&client_id, &second, None).await;
    let response = plain()
        .delete(site.url(&format!(
            "/api/v2/oauth2-provider/apps/{client_id}/secrets/{first_id}"
        )))
        .bearer_auth(&site.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        site.api(&access(&tokens_first), "/api/v2/users/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        site.api(&access(&tokens_second), "/api/v2/users/me")
            .await
            .0,
        StatusCode::OK
    );

    // Connected apps: listed for the user; the app changed by PUT; deleting it ends its tokens.
    let connected = answer(
        plain()
            .get(site.url("/api/v2/users/me/oauth2-apps"))
            .bearer_auth(&site.api_token),
    )
    .await;
    assert_eq!(connected[0]["id"], client_id.as_str());
    let response = plain()
        .put(site.url(&format!("/api/v2/oauth2-provider/apps/{client_id}")))
        .bearer_auth(&site.api_token)
        .json(&json!({"name": "Web 2", "redirect_uris": [CALLBACK, "https://app.example/cb2"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let changed: Value = response.json().await.unwrap();
    assert_eq!(changed["name"], "Web 2");
    assert_eq!(changed["redirect_uris"][1], "https://app.example/cb2");
    let response = plain()
        .delete(site.url(&format!("/api/v2/oauth2-provider/apps/{client_id}")))
        .bearer_auth(&site.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        site.api(&access(&tokens_second), "/api/v2/users/me")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Registration is checked: an http redirect off loopback, a custom scheme for a
    // confidential app, javascript: never.
    for bad in [
        json!({"name": "x", "callback_url": "http://app.example/cb"}),
        json!({"name": "x", "callback_url": "vscode://ext/cb"}),
        json!({"name": "x", "callback_url": "javascript:alert(1)", "client_type": "public"}),
        json!({"name": "x", "callback_url": CALLBACK, "scopes": ["nope"]}),
    ] {
        let response = plain()
            .post(site.url("/api/v2/oauth2-provider/apps"))
            .bearer_auth(&site.api_token)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].is_string() && body["detail"].is_string());
    }
    assert!(site.broker.stop());
}

#[tokio::test]
async fn client_credentials_introspection_revocation_and_metadata() {
    let site = site(&[]).await;
    let service = site
        .create_app(json!({"name": "Bot", "callback_url": CALLBACK, "scopes": ["openid", "user:read", "external-auth:read"]}))
        .await;
    let service_id = service["id"].as_str().unwrap().to_owned();
    let (_, service_secret) = site.create_secret(&service_id).await;
    let response = plain()
        .post(site.url("/oauth2/tokens"))
        .basic_auth(&service_id, Some(&service_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let service_tokens: Value = response.json().await.unwrap();
    assert_eq!(
        service_tokens["scope"], "external-auth:read user:read",
        "no identity scopes"
    );
    assert!(service_tokens.get("refresh_token").is_none());
    // A service acts as no user on the API.
    let (status, _, body) = site.api(&access(&service_tokens), "/api/v2/users/me").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Introspection (a client with credentials): active, with its claims.
    let introspect = |token: String| {
        let site = &site;
        let (id, secret) = (service_id.clone(), service_secret.clone());
        async move {
            answer(
                plain()
                    .post(site.url("/oauth2/introspect"))
                    .basic_auth(id, Some(secret))
                    .form(&[("token", token)]),
            )
            .await
        }
    };
    let info = introspect(access(&service_tokens)).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], service_id.as_str());
    assert_eq!(info["sub"], format!("app:{service_id}"));

    let (client_id, secret) = site.confidential("Web").await;
    let tokens = site.tokens(&client_id, &secret, None).await;
    assert_eq!(introspect(access(&tokens)).await["username"], "admin");
    assert_eq!(introspect(refresh(&tokens)).await["active"], true);
    assert_eq!(introspect("garbage".into()).await, json!({"active": false}));
    // Revocation (RFC 7009) of the refresh token: the family ends, introspection says so at once.
    let response = plain()
        .post(site.url("/oauth2/revoke"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("token", refresh(&tokens))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(introspect(refresh(&tokens)).await["active"], false);
    assert_eq!(introspect(access(&tokens)).await["active"], false);
    // Unknown tokens are fine to revoke (nothing learnt).
    let response = plain()
        .post(site.url("/oauth2/revoke"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("token", "extauth_rt_nope_nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Userinfo with an openid token.
    let tokens = site.tokens(&client_id, &secret, None).await;
    let (status, _, info) = site.api(&access(&tokens), "/oauth2/userinfo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["preferred_username"], "admin");

    // Discovery: every grant, method and scope; the JWKS holds the signing key.
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server/some/path",
    ] {
        let meta = answer(plain().get(site.url(path))).await;
        assert_eq!(meta["issuer"], site.broker.url, "{path}");
        assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
        for grant in ["authorization_code", "refresh_token", "client_credentials"] {
            assert!(
                meta["grant_types_supported"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(grant))
            );
        }
        for scope in ["openid", "offline_access", "external-auth:read", "all"] {
            assert!(
                meta["scopes_supported"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(scope))
            );
        }
    }
    let jwks = answer(plain().get(site.url("/oauth2/jwks"))).await;
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert!(jwks["keys"][0].get("d").is_none(), "no private part");
    assert!(site.broker.stop());
}

#[tokio::test]
async fn the_switch_turns_every_endpoint_into_404() {
    let site = site(&[("CODER_OAUTH2_PROVIDER_ENABLE", "false")]).await;
    for (method, path) in [
        ("GET", "/.well-known/openid-configuration"),
        ("GET", "/.well-known/oauth-authorization-server"),
        ("GET", "/oauth2/authorize?client_id=x&response_type=code"),
        ("POST", "/oauth2/tokens"),
        ("POST", "/oauth2/revoke"),
        ("POST", "/oauth2/introspect"),
        ("GET", "/oauth2/jwks"),
        ("GET", "/oauth2/userinfo"),
        ("GET", "/api/v2/oauth2-provider/apps"),
        ("GET", "/api/v2/users/me/oauth2-apps"),
        ("GET", "/.well-known/oauth-protected-resource"),
        ("POST", "/oauth2/device/authorize"),
    ] {
        let response = plain()
            .request(method.parse().unwrap(), site.url(path))
            .bearer_auth(&site.api_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    // The pages are gone from the navigation too, and the API's 401 names no metadata.
    for path in ["/connected-apps", "/oauth2-apps", "/oauth2/device"] {
        let response = plain()
            .get(site.url(path))
            .header("Cookie", &site.session)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let home = plain()
        .get(site.url("/"))
        .header("Cookie", &site.session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !home.contains("Connected apps") && !home.contains("OAuth2 apps"),
        "{home}"
    );
    let response = plain()
        .get(site.url("/api/v2/users/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert!(site.broker.stop());
}

#[tokio::test]
async fn requests_over_the_pace_wait() {
    let site = site(&[("EXTAUTH_OAUTH2_RATE_LIMIT", "5")]).await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let response = plain()
            .post(site.url("/oauth2/tokens"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
            ])
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "temporarily_unavailable");
        }
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(statuses[5..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    assert!(site.broker.stop());
}

#[tokio::test]
async fn a_rotated_key_keeps_earlier_tokens_valid() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().to_owned();
    let site = site_in(data, &[]).await;
    let (client_id, secret) = site.confidential("Web").await;
    let before = site.tokens(&client_id, &secret, None).await;
    let header_of = |token: &str| -> Value {
        let header = token.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .unwrap(),
        )
        .unwrap()
    };
    let kid_of = |token: &str| header_of(token)["kid"].as_str().unwrap().to_owned();
    let Site {
        broker,
        api_token,
        _data,
        ..
    } = site;
    let port: u16 = broker.url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(broker.stop());
    // The embedded store belongs to one process: rotate while the broker is stopped, to an RSA
    // key (the algorithm can change at a rotation).
    let out = Command::new(binary("extauth-broker"))
        .args(["keys", "rotate"])
        .env_clear()
        .env("EXTAUTH_DATA_DIR", &path)
        .env("EXTAUTH_OAUTH2_SIGNING_ALGORITHM", "RS256")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rotated: key "));
    let site = Site {
        session: String::new(),
        api_token,
        broker: Broker::start(
            port,
            &path,
            &[(
                "EXTAUTH_OAUTH2_SIGNING_ALGORITHM".to_owned(),
                "RS256".to_owned(),
            )],
        ),
        _data,
    };
    let session = site.broker.session_cookie().await;
    let site = Site { session, ..site };
    let jwks = answer(plain().get(site.url("/oauth2/jwks"))).await;
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "the old key stays published"
    );
    // Both published; their order is not part of the contract (keys made within the same
    // second tie on their creation time).
    let mut types: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kty"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["EC", "RSA"]);
    // A token signed before the rotation still works; new ones are signed with the new key.
    let (status, _, _) = site.api(&access(&before), "/api/v2/users/me").await;
    assert_eq!(status, StatusCode::OK);
    let after = site.tokens(&client_id, &secret, None).await;
    assert_ne!(
        kid_of(&access(&after)),
        kid_of(&access(&before)),
        "the new key signs"
    );
    assert_eq!(header_of(&access(&after))["alg"], "RS256");
    assert_eq!(header_of(&access(&before))["alg"], "ES256");
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(published.contains(&kid_of(&access(&before)).as_str()));
    assert!(published.contains(&kid_of(&access(&after)).as_str()));
    assert!(site.broker.stop());
}

/// Two replicas on PostgreSQL, the same refresh token sent to both at once: one rotation, and
/// both callers get the same new pair (the second is an identical retry of the first).
#[tokio::test]
async fn one_refresh_token_at_two_replicas_rotates_once() {
    let db = TestDatabase::create().await;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let env = vec![
        ("CODER_PG_CONNECTION_URL".to_owned(), db.url.clone()),
        ("CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS".to_owned(), key),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Broker::start(free_port(), dir_a.path(), &env);
    let b = Broker::start(free_port(), dir_b.path(), &env);
    let session = a.session_cookie().await;
    let (admin, csrf) = a.admin().await;
    let api_token = answer(
        admin
            .post(format!("{}/api/v2/users/me/keys/tokens", a.url))
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"name": "replicas"})),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let site = Site {
        broker: a,
        session,
        api_token,
        _data: dir_a,
    };
    let (client_id, secret) = site.confidential("Web").await;
    for round in 0..5 {
        let tokens = site.tokens(&client_id, &secret, None).await;
        let form = [
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh(&tokens)),
            ("client_id", client_id.clone()),
            ("client_secret", secret.clone()),
        ];
        let send = |base: String| {
            let form = form.clone();
            async move {
                let response = plain()
                    .post(format!("{base}/oauth2/tokens"))
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
                (response.status(), response.json::<Value>().await.unwrap())
            }
        };
        let ((sa, ja), (sb, jb)) = tokio::join!(send(site.broker.url.clone()), send(b.url.clone()));
        assert_eq!(
            (sa, sb),
            (StatusCode::OK, StatusCode::OK),
            "round {round}: {ja} {jb}"
        );
        assert_eq!(refresh(&ja), refresh(&jb), "round {round}: one rotation");
        // The rotated token works on either replica; the family lives on.
        let (status, next) = site
            .token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh(&ja)),
                ("client_id", &client_id),
                ("client_secret", &secret),
            ])
            .await;
        assert_eq!(status, StatusCode::OK, "round {round}: {next}");
    }
    // Keys: both replicas publish the same one (made once).
    let ja = answer(plain().get(format!("{}/oauth2/jwks", site.broker.url))).await;
    let jb = answer(plain().get(format!("{}/oauth2/jwks", b.url))).await;
    assert_eq!(ja, jb);
    assert_eq!(ja["keys"].as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(b.stop());
    assert!(site.broker.stop());
}

/// openid-client, a certified relying party, as a third-party app (`tests/idp/relying-party.mjs`).
#[tokio::test]
async fn a_certified_relying_party_works_against_the_broker() {
    relying_party(&[], "ES256").await;
}

/// The same with RSA keys, for relying parties that know only RS256.
#[tokio::test]
async fn a_certified_relying_party_works_with_rs256_keys() {
    relying_party(&[("EXTAUTH_OAUTH2_SIGNING_ALGORITHM", "RS256")], "RS256").await;
}

async fn relying_party(env: &[(&str, &str)], algorithm: &str) {
    let site = site(env).await;
    let jwks = answer(plain().get(site.url("/oauth2/jwks"))).await;
    assert_eq!(jwks["keys"][0]["alg"], algorithm);
    let meta = answer(plain().get(site.url("/.well-known/openid-configuration"))).await;
    assert_eq!(
        meta["id_token_signing_alg_values_supported"],
        json!([algorithm])
    );
    let (client_id, secret) = site.confidential("Relying party").await;
    let public_callback = "http://127.0.0.1:8400/callback";
    let public = site
        .create_app(
            json!({"name": "Native RP", "callback_url": public_callback, "client_type": "public"}),
        )
        .await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("idp");
    let env = [
        ("BROKER_URL", site.broker.url.clone()),
        ("SESSION_COOKIE", site.session.clone()),
        ("CLIENT_ID", client_id.clone()),
        ("CLIENT_SECRET", secret),
        ("CALLBACK", CALLBACK.to_owned()),
        (
            "PUBLIC_CLIENT_ID",
            public["id"].as_str().unwrap().to_owned(),
        ),
        ("PUBLIC_CALLBACK", public_callback.to_owned()),
        ("EXPECTED_ALG", algorithm.to_owned()),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("relying-party.mjs"))
            .current_dir(&dir)
            .envs(env)
            .output()
            .expect("node runs the relying party (tests/run installs its packages)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(seen["steps"].as_array().unwrap().len(), 10, "{seen}");
    assert_eq!(seen["public_ok"], true);
    assert_eq!(
        seen["access_scope"],
        "email offline_access openid profile user:read"
    );
    assert!(site.broker.stop());
}

/// An app's icon shows on its consent page: its origin joins `img-src` there, and nowhere else.
#[tokio::test]
async fn an_apps_icon_is_allowed_on_its_pages_only() {
    let site = site(&[]).await;
    let app = site
        .create_app(json!({"name": "Iconic", "callback_url": CALLBACK, "icon": "https://icons.example/app.png"}))
        .await;
    let response = site
        .authorize(&[
            ("client_id", app["id"].as_str().unwrap()),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("img-src 'self' https://icons.example;"),
        "{csp}"
    );
    assert!(csp.contains("script-src 'self';"), "{csp}");
    let page = response.text().await.unwrap();
    assert!(
        page.contains(r#"src="https://icons.example/app.png""#)
            || page.contains("icons.example&#x2f;app.png")
            || page.contains("https:&#x2f;&#x2f;icons.example"),
        "{page}"
    );
    let home = plain()
        .get(site.url("/"))
        .header("Cookie", &site.session)
        .send()
        .await
        .unwrap();
    let csp = home.headers()["content-security-policy"].to_str().unwrap();
    assert!(!csp.contains("icons.example"), "{csp}");
    assert!(site.broker.stop());
}

/// A client meeting the API without a token learns where to get one (RFC 9728), and a token
/// issued for another resource (RFC 8707 `resource`) is not taken by extauth's API.
#[tokio::test]
async fn the_api_points_at_its_authorization_server_and_checks_audiences() {
    let site = site(&[]).await;
    let response = plain()
        .get(site.url("/api/v2/users/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        format!(
            "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource\", scope=\"user:read\"",
            site.broker.url
        )
    );
    let meta = answer(plain().get(site.url("/.well-known/oauth-protected-resource"))).await;
    assert_eq!(meta["resource"], site.broker.url);
    assert_eq!(meta["authorization_servers"], json!([site.broker.url]));
    assert_eq!(meta["bearer_methods_supported"], json!(["header"]));
    let suffixed =
        answer(plain().get(site.url("/.well-known/oauth-protected-resource/api/v2"))).await;
    assert_eq!(suffixed["resource"], format!("{}/api/v2", site.broker.url));

    // Tokens for a resource: under this API taken, elsewhere not.
    let (client_id, secret) = site.confidential("Web").await;
    let for_resource = |resource: String| {
        let (site, client_id, secret) = (&site, client_id.clone(), secret.clone());
        async move {
            let back = site
                .code(&[
                    ("client_id", client_id.as_str()),
                    ("response_type", "code"),
                    ("redirect_uri", CALLBACK),
                    ("resource", resource.as_str()),
                ])
                .await;
            let (status, tokens) = site
                .token(&[
                    ("grant_type", "authorization_code"),
                    ("code", &back["code"]),
                    ("client_id", &client_id),
                    ("client_secret", &secret),
                    ("redirect_uri", CALLBACK),
                    ("resource", &resource),
                ])
                .await;
            assert_eq!(status, StatusCode::OK, "{tokens}");
            access(&tokens)
        }
    };
    let ours = for_resource(format!("{}/api/v2", site.broker.url)).await;
    assert_eq!(site.api(&ours, "/api/v2/users/me").await.0, StatusCode::OK);
    site.create_resource("MCP", "https://mcp.example/mcp", &["tools:call"])
        .await;
    site.create_resource("Other", "https://other.example/", &[])
        .await;
    let theirs = for_resource("https://mcp.example/mcp".to_owned()).await;
    assert_eq!(
        site.api(&theirs, "/api/v2/users/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    // The resource given at the authorization must be the one at the token endpoint.
    let back = site
        .code(&[
            ("client_id", client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
            ("resource", "https://mcp.example/mcp"),
        ])
        .await;
    let (status, body) = site
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &back["code"]),
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("redirect_uri", CALLBACK),
            ("resource", "https://other.example/"),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    assert!(site.broker.stop());
}

/// `extauth oauth2-app create|list|secret create|secret delete|delete`, as an admin runs them.
#[tokio::test]
async fn apps_are_managed_from_the_cli() {
    let site = site(&[]).await;
    let home = tempfile::tempdir().unwrap();
    let extauth = |args: &[&str]| {
        let out = Command::new(binary("extauth"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "extauth {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    extauth(&["login", &site.broker.url, "--token", &site.api_token]);
    let created = extauth(&[
        "oauth2-app",
        "create",
        "Deploy bot",
        "--redirect-uri",
        CALLBACK,
        "--scope",
        "user:read",
    ]);
    let field = |name: &str| {
        regex::Regex::new(&format!(r"(?m)^{name}:\s+(\S+)$"))
            .unwrap()
            .captures(&created)
            .unwrap_or_else(|| panic!("no {name} in {created}"))[1]
            .to_owned()
    };
    let (client_id, secret) = (field("client_id"), field("client_secret"));
    assert!(created.contains("shown only this once"));
    let listed: Value =
        serde_json::from_str(&extauth(&["oauth2-app", "list", "--output", "json"])).unwrap();
    let ours = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == client_id.as_str())
        .unwrap();
    assert_eq!(ours["scopes"], json!(["user:read"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == "extauth-cli"),
        "the CLI's own app is built in"
    );
    assert!(extauth(&["oauth2-app", "list"]).contains("Deploy bot"));
    let service = |secret: &str| {
        let (site, client_id, secret) = (&site, client_id.clone(), secret.to_owned());
        async move {
            plain()
                .post(site.url("/oauth2/tokens"))
                .basic_auth(client_id, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(service(&secret).await, StatusCode::OK);
    // Rotation: a second secret, then the first one deleted.
    let second = extauth(&["oauth2-app", "secret", "create", &client_id]);
    let second = second.trim();
    assert!(second.starts_with("extauth_cs_"));
    let first_id = secret.split('_').nth(2).unwrap();
    extauth(&["oauth2-app", "secret", "delete", &client_id, first_id]);
    assert_eq!(service(&secret).await, StatusCode::UNAUTHORIZED);
    assert_eq!(service(second).await, StatusCode::OK);
    assert!(extauth(&["oauth2-app", "delete", &client_id]).starts_with("Deleted app"));
    assert_eq!(service(second).await, StatusCode::UNAUTHORIZED);
    assert!(site.broker.stop());
}

/// The device authorization grant (RFC 8628): the device polls, the user answers on the page.
#[tokio::test]
async fn a_device_is_authorized_by_its_user_code() {
    let site = site(&[]).await;
    let app = site
        .create_app(json!({"name": "Terminal", "callback_url": "http://127.0.0.1/cb", "client_type": "public",
                           "scopes": ["openid", "offline_access", "user:read"]}))
        .await;
    let client_id = app["id"].as_str().unwrap().to_owned();
    let meta = answer(plain().get(site.url("/.well-known/openid-configuration"))).await;
    assert_eq!(
        meta["device_authorization_endpoint"],
        format!("{}/oauth2/device/authorize", site.broker.url)
    );
    let start = || {
        let (site, client_id) = (&site, client_id.clone());
        async move {
            answer(plain().post(site.url("/oauth2/device/authorize")).form(&[
                ("client_id", client_id.as_str()),
                ("scope", "openid offline_access user:read"),
            ]))
            .await
        }
    };
    let poll = |device_code: String| {
        let (site, client_id) = (&site, client_id.clone());
        async move {
            site.token(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", &device_code),
                ("client_id", &client_id),
            ])
            .await
        }
    };
    let started = start().await;
    let device_code = started["device_code"].as_str().unwrap().to_owned();
    let user_code = started["user_code"].as_str().unwrap().to_owned();
    assert!(
        regex::Regex::new("^[B-Z]{4}-[B-Z]{4}$")
            .unwrap()
            .is_match(&user_code),
        "{started}"
    );
    assert_eq!(started["interval"], 5);
    assert_eq!(
        started["verification_uri"],
        format!("{}/oauth2/device", site.broker.url)
    );
    // Polling before the user answers; too fast is told to slow down.
    let (status, body) = poll(device_code.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending"))
    );
    let (_, body) = poll(device_code.clone()).await;
    assert_eq!(body["error"], "slow_down");

    // The page: a wrong code, then the right one typed loosely; the answer needs the CSRF token.
    let page = |code: &str| {
        let site = &site;
        let code = code.to_owned();
        async move {
            plain()
                .get(site.url("/oauth2/device"))
                .query(&[("user_code", code.as_str())])
                .header("Cookie", &site.session)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert!(page("BBBB-BBBB").await.contains("unknown, used or expired"));
    let shown = page(&user_code.to_lowercase().replace('-', " ")).await;
    assert!(
        shown.contains("Terminal wants to use your account"),
        "{shown}"
    );
    assert!(shown.contains("Read your account"));
    let mut form = hidden_fields(&shown);
    form.insert("decision".into(), "allow".into());
    let mut forged = form.clone();
    forged.remove("csrf");
    let refused = plain()
        .post(site.url("/oauth2/device"))
        .header("Cookie", &site.session)
        .form(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let done = plain()
        .post(site.url("/oauth2/device"))
        .header("Cookie", &site.session)
        .form(&form)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(done.contains("Terminal is connected"), "{done}");
    // The device gets its tokens once.
    let (status, tokens) = poll(device_code.clone()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert!(tokens["refresh_token"].is_string() && tokens["id_token"].is_string());
    assert_eq!(
        site.api(&access(&tokens), "/api/v2/users/me").await.0,
        StatusCode::OK
    );
    let (_, body) = poll(device_code).await;
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        page(&user_code).await.contains("unknown, used or expired"),
        "answered codes are not shown again"
    );

    // Denied, and unknown codes.
    let started = start().await;
    let mut form = hidden_fields(&page(started["user_code"].as_str().unwrap()).await);
    form.insert("decision".into(), "deny".into());
    plain()
        .post(site.url("/oauth2/device"))
        .header("Cookie", &site.session)
        .form(&form)
        .send()
        .await
        .unwrap();
    let (_, body) = poll(started["device_code"].as_str().unwrap().to_owned()).await;
    assert_eq!(body["error"], "access_denied");
    let (_, body) = poll("extauth_dc_nope".to_owned()).await;
    assert_eq!(body["error"], "expired_token");
    assert!(site.broker.stop());
}

/// `extauth login <url>` by the device authorization grant: the user confirms the code on the
/// page, the CLI keeps the refresh token, refreshes by itself, and `logout` revokes it.
#[tokio::test]
async fn the_cli_signs_in_by_device_code_and_refreshes_itself() {
    // Tokens of 61 s: the CLI refreshes a token that expires within a minute, so at once.
    let site = site(&[("EXTAUTH_OAUTH2_ACCESS_TOKEN_LIFETIME", "61s")]).await;
    let home = tempfile::tempdir().unwrap();
    let extauth = |args: &[&str]| {
        let mut command = Command::new(binary("extauth"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .args(args);
        command
    };
    let mut login = extauth(&["login", &site.broker.url]);
    login
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = login.spawn().unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    let code = regex::Regex::new(r"Confirm the code ([A-Z]{4}-[A-Z]{4}) in your browser")
        .unwrap()
        .captures(&line)
        .unwrap_or_else(|| panic!("the CLI shows a code: {line}"))[1]
        .to_owned();
    // The user confirms on the page.
    let page = plain()
        .get(site.url("/oauth2/device"))
        .query(&[("user_code", code.as_str())])
        .header("Cookie", &site.session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("extauth CLI wants to use your account"),
        "{page}"
    );
    let mut form = hidden_fields(&page);
    form.insert("decision".into(), "allow".into());
    let done = plain()
        .post(site.url("/oauth2/device"))
        .header("Cookie", &site.session)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("Logged in to {} as admin;", site.broker.url)),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let config = home.path().join(".config/extauth/config.json");
    let stored = |path: &std::path::Path| -> Value {
        let config: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        serde_json::from_str(config["token"].as_str().unwrap()).unwrap()
    };
    let first = stored(&config);
    assert!(
        first["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("extauth_rt_")
    );

    // The next command refreshes the (nearly expired) token by itself.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let whoami = extauth(&["whoami"]).output().unwrap();
    assert!(
        whoami.status.success(),
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    assert!(String::from_utf8_lossy(&whoami.stdout).starts_with("admin (admin) on"));
    let second = stored(&config);
    assert_ne!(
        second["refresh_token"], first["refresh_token"],
        "rotated and saved"
    );

    // Logout revokes the sign-in at the broker.
    let out = extauth(&["logout"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Logged out.\n");
    let (status, body) = site
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", second["refresh_token"].as_str().unwrap()),
            ("client_id", "extauth-cli"),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert!(site.broker.stop());
}

/// Claims of a JWT, unverified (the test reads what the broker put in).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// An admin registers an MCP server as a protected resource: extauth serves its metadata, tokens
/// for it carry its URL and scopes (and a refresh token), apps may be limited to some resources,
/// unknown resources are `invalid_target`, and deleting one ends refreshes for it.
#[tokio::test]
async fn admins_register_protected_resources_and_apps_are_limited_to_them() {
    let site = site(&[]).await;
    let mcp = site
        .create_resource(
            "Team MCP",
            "https://mcp.example/mcp",
            &["tools:call", "tools:read"],
        )
        .await;
    assert_eq!(
        mcp["metadata_url"],
        format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            site.broker.url
        )
    );
    let root = site
        .create_resource("Docs API", "https://docs.example", &["docs:read"])
        .await;
    let root_id = root["id"].as_str().unwrap();
    assert_eq!(
        root["metadata_url"],
        format!(
            "{}/.well-known/oauth-protected-resource/{root_id}",
            site.broker.url
        ),
        "a resource at a host's root is named by its id"
    );
    // Refusals name the field.
    for (body, words) in [
        (
            json!({"name": "Again", "url": "https://mcp.example/mcp"}),
            "registered already",
        ),
        (
            json!({"name": "Same path", "url": "https://elsewhere.example/mcp"}),
            "another resource has the path",
        ),
        (
            json!({"name": "Plain", "url": "http://api.example/x"}),
            "https://",
        ),
        (
            json!({"name": "Ours", "url": format!("{}/api/v2", site.broker.url)}),
            "extauth's own API",
        ),
        (
            json!({"name": "Clash", "url": "https://c.example/x", "scopes": ["openid"]}),
            "extauth's own scopes",
        ),
        (
            json!({"name": "Query", "url": "https://q.example/x?a=1"}),
            "no query",
        ),
    ] {
        let response = plain()
            .post(site.url("/api/v2/oauth2-provider/resources"))
            .bearer_auth(&site.api_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["detail"].as_str().unwrap().contains(words),
            "{body}: {error}"
        );
    }
    let listed = answer(
        plain()
            .get(site.url("/api/v2/oauth2-provider/resources"))
            .bearer_auth(&site.api_token),
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // Its own metadata document, for its server to point 401s at.
    let meta = answer(plain().get(mcp["metadata_url"].as_str().unwrap())).await;
    assert_eq!(meta["resource"], "https://mcp.example/mcp");
    assert_eq!(meta["authorization_servers"], json!([site.broker.url]));
    assert_eq!(
        meta["scopes_supported"],
        json!(["tools:call", "tools:read"])
    );
    assert_eq!(meta["resource_name"], "Team MCP");
    let by_id = answer(plain().get(root["metadata_url"].as_str().unwrap())).await;
    assert_eq!(by_id["resource"], "https://docs.example");

    // Tokens for it: its URL as audience, its scope, a refresh token; the consent page names it.
    let (client_id, secret) = site.confidential("Agent").await;
    let query = [
        ("client_id", client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", CALLBACK),
        ("resource", "https://mcp.example/mcp"),
        ("scope", "tools:call"),
    ];
    let page = site.authorize(&query).await.text().await.unwrap();
    assert!(page.contains("Team MCP"), "{page}");
    assert!(
        page.contains("Use the resource&#39;s scope tools:call")
            || page.contains("Use the resource's scope tools:call"),
        "{page}"
    );
    let back = site.code(&query).await;
    let (status, tokens) = site
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &back["code"]),
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("redirect_uri", CALLBACK),
            ("resource", "https://mcp.example/mcp/"),
        ])
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a trailing slash names the same resource: {tokens}"
    );
    let token_claims = claims(&access(&tokens));
    assert_eq!(token_claims["aud"], "https://mcp.example/mcp");
    assert_eq!(token_claims["scope"], "offline_access tools:call");
    // extauth's own API refuses a token for another resource.
    assert_eq!(
        site.api(&access(&tokens), "/api/v2/users/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    // Introspection tells a resource server what the token is for.
    let introspected = answer(
        plain()
            .post(site.url("/oauth2/introspect"))
            .basic_auth(&client_id, Some(&secret))
            .form(&[("token", access(&tokens))]),
    )
    .await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["aud"], "https://mcp.example/mcp");

    // A scope of another resource, or a resource nobody registered: refused.
    for (resource, scope, error) in [
        ("https://mcp.example/mcp", "docs:read", "invalid_scope"),
        ("https://unknown.example/mcp", "openid", "invalid_target"),
    ] {
        let response = site
            .authorize(&[
                ("client_id", client_id.as_str()),
                ("response_type", "code"),
                ("redirect_uri", CALLBACK),
                ("resource", resource),
                ("scope", scope),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(redirect_query(&response)["error"], error);
    }

    // An app limited to the docs API may not ask for the MCP server.
    let limited = site
        .create_app(json!({"name": "Docs only", "callback_url": CALLBACK, "resources": [root_id]}))
        .await;
    assert_eq!(limited["resources"], json!([root_id]));
    let limited_id = limited["id"].as_str().unwrap();
    let response = site
        .authorize(&[
            ("client_id", limited_id),
            ("response_type", "code"),
            ("redirect_uri", CALLBACK),
            ("resource", "https://mcp.example/mcp"),
        ])
        .await;
    let refused = redirect_query(&response);
    assert_eq!(refused["error"], "invalid_target");
    assert!(
        refused["error_description"].contains("Docs only may not"),
        "{refused:?}"
    );
    let response = plain()
        .post(site.url("/api/v2/oauth2-provider/apps"))
        .bearer_auth(&site.api_token)
        .json(&json!({"name": "Bad", "callback_url": CALLBACK, "resources": ["nope"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Deleting the resource ends refreshes for it.
    let deleted = plain()
        .delete(site.url(&format!(
            "/api/v2/oauth2-provider/resources/{}",
            mcp["id"].as_str().unwrap()
        )))
        .bearer_auth(&site.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, body) = site
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh(&tokens)),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );

    // The same from the CLI and the page.
    let cli = |args: &[&str]| {
        let out = Command::new(binary("extauth"))
            .args(args)
            .env("EXTAUTH_URL", &site.broker.url)
            .env("EXTAUTH_TOKEN", &site.api_token)
            .env("HOME", site._data.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&[
        "oauth2-app",
        "resource",
        "create",
        "Wiki MCP",
        "--url",
        "https://wiki.example/mcp",
        "--scope",
        "pages:read",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("/.well-known/oauth-protected-resource/mcp"),
        "{out}"
    );
    assert!(out.contains("resource_metadata="), "{out}");
    let (ok, out, _) = cli(&["oauth2-app", "resource", "list"]);
    assert!(
        ok && out.contains("Wiki MCP") && out.contains("pages:read"),
        "{out}"
    );
    let id = out
        .lines()
        .find(|l| l.contains("Wiki MCP"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let page = plain()
        .get(site.url("/oauth2-apps"))
        .header("Cookie", &site.session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<dt>Resources</dt><dd>Docs API</dd>"),
        "an app's resources show by name: {page}"
    );
    assert!(
        page.contains("Wiki MCP") && page.contains("https://wiki.example/mcp"),
        "{page}"
    );
    let (ok, out, err) = cli(&["oauth2-app", "resource", "delete", &id]);
    assert!(ok && out.contains("Deleted resource"), "{err}");
    let (_, out, _) = cli(&["oauth2-app", "resource", "list"]);
    assert!(!out.contains("Wiki MCP"), "{out}");
    assert!(site.broker.stop());
}

/// A small site publishing client metadata documents on loopback, counting fetches.
struct DocumentSite {
    url: String,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl DocumentSite {
    async fn start(cache_control: &'static str) -> Self {
        use axum::response::IntoResponse;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = fetches.clone();
        let base = url.clone();
        let app = axum::Router::new().route(
            "/{name}",
            axum::routing::get(
                move |axum::extract::Path(name): axum::extract::Path<String>| {
                    let counted = counted.clone();
                    let base = base.clone();
                    async move {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let id = format!("{base}/{name}");
                        let document = match name.as_str() {
                            "client.json" => json!({
                                "client_id": id, "client_name": "Inspector",
                                "redirect_uris": ["http://127.0.0.1:6274/oauth/callback"],
                                "token_endpoint_auth_method": "none",
                            }),
                            "impostor.json" => json!({
                                "client_id": "http://127.0.0.1:1/other.json",
                                "redirect_uris": ["http://127.0.0.1:6274/oauth/callback"],
                            }),
                            "secret.json" => json!({
                                "client_id": id, "client_secret": "s",
                                "redirect_uris": ["http://127.0.0.1:6274/oauth/callback"],
                            }),
                            "moved.json" => {
                                return (
                                    StatusCode::FOUND,
                                    [("location", format!("{base}/client.json"))],
                                )
                                    .into_response();
                            }
                            "big.json" => json!({
                                "client_id": id, "client_name": "x".repeat(20_000),
                                "redirect_uris": ["http://127.0.0.1:6274/oauth/callback"],
                            }),
                            _ => return StatusCode::NOT_FOUND.into_response(),
                        };
                        (
                            [
                                ("content-type", "application/json"),
                                ("cache-control", cache_control),
                            ],
                            document.to_string(),
                        )
                            .into_response()
                    }
                },
            ),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, fetches, task }
    }

    fn fetched(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for DocumentSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// MCP's client ID metadata documents: a `client_id` that is a URL is fetched, checked and
/// cached; its redirect URIs are the only ones; documents that lie, hold a secret, redirect, are
/// too large or live at private addresses are refused; admins deny hosts.
#[tokio::test]
async fn clients_are_known_by_their_metadata_documents() {
    let docs = DocumentSite::start("public, max-age=3600").await;
    let site = site(&[]).await;
    let meta = answer(plain().get(site.url("/.well-known/oauth-authorization-server"))).await;
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    assert!(
        meta.get("registration_endpoint").is_none(),
        "registration is off by default"
    );

    let client_id = format!("{}/client.json", docs.url);
    let (verifier, challenge) = pkce();
    let redirect = "http://127.0.0.1:51234/oauth/callback";
    let query = [
        ("client_id", client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", redirect),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", "st"),
    ];
    let response = site.authorize(&query).await;
    let status = response.status();
    let page = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Inspector wants to use your account"),
        "{page}"
    );
    assert!(
        page.contains("its own metadata document at 127.0.0.1"),
        "{page}"
    );
    assert!(
        page.contains("a program on this computer (localhost)"),
        "{page}"
    );
    let back = redirect_query(&site.consent(&page, "allow").await);
    let (status, tokens) = site
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &back["code"]),
            ("client_id", &client_id),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(
        site.api(&access(&tokens), "/api/v2/users/me").await.0,
        StatusCode::OK
    );
    let (status, refreshed) = site
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh(&tokens)),
            ("client_id", &client_id),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(
        docs.fetched(),
        1,
        "kept for its max-age, not fetched per request"
    );

    // A redirect URI not in the document is refused on this site's page.
    let response = site
        .authorize(&[
            ("client_id", client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", "https://evil.example/cb"),
            ("code_challenge", challenge.as_str()),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Documents that cannot be used: the page says why.
    for (name, words) in [
        ("impostor.json", "client_id is not the URL"),
        ("secret.json", "client_secret"),
        ("moved.json", "redirect"),
        ("big.json", "larger than"),
        ("missing.json", "404"),
    ] {
        let response = site
            .authorize(&[
                ("client_id", format!("{}/{name}", docs.url).as_str()),
                ("response_type", "code"),
                ("redirect_uri", "http://127.0.0.1:6274/oauth/callback"),
                ("code_challenge", challenge.as_str()),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
        let page = response.text().await.unwrap();
        assert!(page.contains(words), "{name}: {page}");
    }
    // Private and link-local addresses over https are never fetched unless allowed.
    for client in [
        "https://169.254.169.254/latest/meta-data.json",
        "https://127.0.0.1:9/client.json",
        "https://localhost:9/client.json",
        "https://[::1]:9/client.json",
    ] {
        let response = site
            .authorize(&[
                ("client_id", client),
                ("response_type", "code"),
                ("code_challenge", challenge.as_str()),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{client}");
        let page = response.text().await.unwrap();
        assert!(
            page.contains("EXTAUTH_OAUTH2_CLIENT_METADATA_ALLOW_PRIVATE"),
            "{client}: {page}"
        );
    }
    // The document client is listed for admins, as its origin says.
    let apps = answer(
        plain()
            .get(site.url("/api/v2/oauth2-provider/apps"))
            .bearer_auth(&site.api_token),
    )
    .await;
    let known = apps
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == client_id.as_str())
        .unwrap();
    assert_eq!(known["origin"], "metadata_document");
    assert!(site.broker.stop());

    // Admins deny a host; a document saying no-store is read again at each authorization.
    let fresh = DocumentSite::start("no-store").await;
    let denied = site_in(
        tempfile::tempdir().unwrap(),
        &[(
            "EXTAUTH_OAUTH2_CLIENT_METADATA_DENY_HOSTS",
            "evil.example,*.evil.example",
        )],
    )
    .await;
    let response = denied
        .authorize(&[
            ("client_id", "https://app.evil.example/client.json"),
            ("response_type", "code"),
            ("code_challenge", challenge.as_str()),
        ])
        .await;
    let page = response.text().await.unwrap();
    assert!(
        page.contains("EXTAUTH_OAUTH2_CLIENT_METADATA_DENY_HOSTS"),
        "{page}"
    );
    let fresh_id = format!("{}/client.json", fresh.url);
    for _ in 0..2 {
        let response = denied
            .authorize(&[
                ("client_id", fresh_id.as_str()),
                ("response_type", "code"),
                ("redirect_uri", redirect),
                ("code_challenge", challenge.as_str()),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(
        fresh.fetched(),
        1,
        "kept at least a minute even when no-store"
    );
    assert!(denied.broker.stop());
}

/// Dynamic client registration as VS Code, Cursor and Claude Code send it: off by default, then
/// opened by an admin; several redirect URIs at once, custom schemes and loopback ports; the
/// URIs a policy refuses left out, not the whole request; RFC 7592 management.
#[tokio::test]
async fn clients_register_themselves_when_an_admin_allows_it() {
    let site = site(&[]).await;
    let register = |body: Value| {
        let url = site.url("/oauth2/register");
        async move {
            let response = plain().post(url).json(&body).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap_or_default())
        }
    };
    let vscode = json!({
        "client_name": "Visual Studio Code",
        "redirect_uris": ["http://127.0.0.1:33418/", "https://vscode.dev/redirect",
                          "vscode://vscode.github-authentication/did-authenticate"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    assert_eq!(
        register(vscode.clone()).await.0,
        StatusCode::NOT_FOUND,
        "off by default"
    );

    // An admin opens it on the page.
    let page = plain()
        .get(site.url("/oauth2-apps"))
        .header("Cookie", &site.session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Open registration"), "{page}");
    let opened = plain()
        .post(site.url("/oauth2-apps/registration"))
        .header("Cookie", &site.session)
        .form(&[
            ("csrf", extauth_tests::csrf_of(&page)),
            ("open", "true".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::OK);
    assert!(opened.text().await.unwrap().contains("Close registration"));
    let meta = answer(plain().get(site.url("/.well-known/openid-configuration"))).await;
    assert_eq!(meta["registration_endpoint"], site.url("/oauth2/register"));

    let (status, vs) = register(vscode).await;
    assert_eq!(status, StatusCode::CREATED, "{vs}");
    assert_eq!(vs["redirect_uris"].as_array().unwrap().len(), 3, "{vs}");
    assert_eq!(vs["token_endpoint_auth_method"], "none");
    assert!(vs.get("client_secret").is_none());
    let cursor = json!({
        "client_name": "Cursor",
        "redirect_uris": ["cursor://anysphere.cursor-retrieval/oauth/user-abc/callback"],
        "token_endpoint_auth_method": "none",
    });
    let (status, body) = register(cursor).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let claude = json!({
        "client_name": "Claude Code",
        "redirect_uris": ["http://localhost:54212/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
        "scope": "openid user:read",
    });
    let (status, claude) = register(claude).await;
    assert_eq!(status, StatusCode::CREATED, "{claude}");
    assert_eq!(claude["scope"], "openid user:read");

    // One refused URI among good ones is left out; only refused ones fail.
    let (status, mixed) = register(json!({
        "client_name": "Mixed",
        "redirect_uris": ["http://127.0.0.1/cb", "javascript:alert(1)", "http://evil.example/cb"],
        "token_endpoint_auth_method": "none",
    }))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{mixed}");
    assert_eq!(mixed["redirect_uris"], json!(["http://127.0.0.1/cb"]));
    assert_eq!(
        mixed["extauth_redirect_uris_left_out"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (status, bad) = register(
        json!({"redirect_uris": ["http://evil.example/cb"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_redirect_uri"))
    );
    let (status, bad) = register(json!({"redirect_uris": "not a list"})).await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_client_metadata"))
    );
    let (status, bad) = register(json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "tls_client_auth"})).await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_client_metadata"))
    );

    // A registered public client completes the flow from a loopback port of its choosing.
    let client_id = claude["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let redirect = "http://localhost:60001/callback";
    let response = site
        .authorize(&[
            ("client_id", client_id),
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .await;
    let page = response.text().await.unwrap();
    assert!(page.contains("registered itself"), "{page}");
    let back = redirect_query(&site.consent(&page, "allow").await);
    let (status, tokens) = site
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &back["code"]),
            ("client_id", client_id),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");

    // A confidential registration gets a secret and may act as a service.
    let (status, service) = register(json!({
        "client_name": "Indexer", "redirect_uris": ["https://indexer.example/cb"],
        "grant_types": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
    }))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{service}");
    let secret = service["client_secret"].as_str().unwrap();
    assert!(secret.starts_with("extauth_cs_"));
    let service_id = service["client_id"].as_str().unwrap();
    let (status, body) = site
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", service_id),
            ("client_secret", secret),
            ("scope", "user:read"),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // RFC 7592: read, change and delete with the registration access token only.
    let manage = vs["registration_client_uri"].as_str().unwrap().to_owned();
    let rat = vs["registration_access_token"].as_str().unwrap().to_owned();
    let read = plain().get(&manage).bearer_auth(&rat).send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let wrong = plain()
        .get(&manage)
        .bearer_auth("extauth_rat_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let other = plain()
        .get(mixed["registration_client_uri"].as_str().unwrap())
        .bearer_auth(&rat)
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        StatusCode::UNAUTHORIZED,
        "one client's token is not another's"
    );
    let changed: Value = plain()
        .put(&manage)
        .bearer_auth(&rat)
        .json(&json!({"client_name": "VS Code Insiders", "redirect_uris": ["http://127.0.0.1/"], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(changed["client_name"], "VS Code Insiders");
    let gone = plain()
        .delete(&manage)
        .bearer_auth(&rat)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let apps = answer(
        plain()
            .get(site.url("/api/v2/oauth2-provider/apps"))
            .bearer_auth(&site.api_token),
    )
    .await;
    let origins: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["origin"] == "registered")
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        origins.contains(&"Claude Code") && !origins.contains(&"VS Code Insiders"),
        "{origins:?}"
    );

    // Closed again: the endpoint and its mention disappear.
    let page = plain()
        .get(site.url("/oauth2-apps"))
        .header("Cookie", &site.session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    plain()
        .post(site.url("/oauth2-apps/registration"))
        .header("Cookie", &site.session)
        .form(&[
            ("csrf", extauth_tests::csrf_of(&page)),
            ("open", "false".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    let meta = answer(plain().get(site.url("/.well-known/openid-configuration"))).await;
    assert!(meta.get("registration_endpoint").is_none());
    assert_eq!(
        register(json!({"redirect_uris": ["http://127.0.0.1/cb"]}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert!(site.broker.stop());
}

/// `extauth login` with a browser at hand: the CLI listens on a loopback port, the browser
/// (here a `$BROWSER` that hands the page to the test, which plays the user) signs in and
/// consents, and the redirect brings the code back; no code to confirm, no token to paste.
#[tokio::test]
async fn the_cli_signs_in_through_a_browser_on_a_loopback_port() {
    let site = site(&[]).await;
    let home = tempfile::tempdir().unwrap();
    let opened = home.path().join("opened-url");
    let browser = home.path().join("browser");
    std::fs::write(
        &browser,
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > {}.tmp && mv {0}.tmp {0}\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &browser,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let extauth = |args: &[&str]| {
        let mut command = Command::new(binary("extauth"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("BROWSER", &browser)
            .args(args);
        command
    };
    let mut login = extauth(&["login", &site.broker.url]);
    login
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = login.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !opened.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the CLI opened no page"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page_url = std::fs::read_to_string(&opened).unwrap();
    let authorize = url::Url::parse(&page_url).unwrap();
    let query: BTreeMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(authorize.path(), "/oauth2/authorize");
    assert_eq!(query["client_id"], "extauth-cli");
    assert_eq!(query["code_challenge_method"], "S256");
    assert!(query["redirect_uri"].starts_with("http://127.0.0.1:"));
    // The user's browser: the consent page, then the redirect to the CLI's port.
    let page = plain()
        .get(&page_url)
        .header("Cookie", &site.session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("extauth CLI wants to use your account"),
        "{page}"
    );
    assert!(
        page.contains("a program on this computer (localhost)"),
        "{page}"
    );
    let allowed = site.consent(&page, "allow").await;
    assert_eq!(allowed.status(), StatusCode::FOUND);
    let back = location(&allowed);
    assert!(back.starts_with(&query["redirect_uri"]), "{back}");
    let landing = plain()
        .get(&back)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        landing.contains("Signed in. You can close this tab"),
        "{landing}"
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("Logged in to {} as admin;", site.broker.url)),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let whoami = extauth(&["whoami"]).output().unwrap();
    assert!(String::from_utf8_lossy(&whoami.stdout).starts_with("admin (admin) on"));

    // --device asks for a code even with a browser at hand.
    let mut device = extauth(&["login", "--device", &site.broker.url]);
    device.stderr(std::process::Stdio::piped());
    let mut child = device.spawn().unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.starts_with("Confirm the code "), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(site.broker.stop());
}

/// The README's `extauth oauth2-app …` examples, run against a broker standing in for
/// `https://extauth.example.com`: the CLI prints what the README shows.
#[tokio::test]
async fn the_readme_s_oauth2_cli_examples_are_what_the_cli_prints() {
    let site = site(&[]).await;
    let readme = extauth_tests::readme::text();
    let mut examples = extauth_tests::readme::console_examples(&readme, "extauth oauth2-app");
    assert!(examples.len() >= 2, "{examples:?}");
    // The API's own examples, the second with the app id the first one makes.
    let curls: Vec<_> = extauth_tests::readme::console_examples(&readme, "curl -X POST")
        .into_iter()
        .filter(|(c, _)| c.contains("/api/v2/oauth2-provider/apps"))
        .collect();
    assert_eq!(curls.len(), 2, "{curls:?}");
    examples.extend(curls);
    let mut app_id = String::new();
    for (command, shown) in examples {
        let command = command.replace("https://extauth.example.com", &site.broker.url);
        let out = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    extauth_tests::bin_dir().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("HOME", site._data.path())
            .env("EXTAUTH_URL", &site.broker.url)
            .env("EXTAUTH_TOKEN", &site.api_token)
            .env("EXTAUTH_API_TOKEN", &site.api_token)
            .env("APP_ID", &app_id)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Ok(created) = serde_json::from_slice::<Value>(&out.stdout) {
            if created["name"] == "My Application" {
                app_id = created["id"].as_str().unwrap().to_owned();
            }
        }
        let printed = String::from_utf8_lossy(&out.stdout)
            .replace(&site.broker.url, "https://extauth.example.com");
        let printed: Vec<&str> = printed.lines().collect();
        assert_eq!(
            printed.len(),
            shown.len(),
            "{command}\nREADME: {shown:#?}\nprinted: {printed:#?}"
        );
        for (want, got) in shown.iter().zip(&printed) {
            assert!(
                extauth_tests::readme::matches(want, got),
                "{command}\nREADME: {want}\nprinted: {got}"
            );
        }
    }
    assert!(site.broker.stop());
}
