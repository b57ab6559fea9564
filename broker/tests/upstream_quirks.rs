//! Per-type quirks of the provider client, checked on the wire: a loopback server records each
//! request the broker sends and answers as the provider would. (Azure DevOps, Entra, JFrog and
//! GitHub cannot run here; what matters is the exact request, which this captures.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use extauth_broker::upstream::{Revocation, Upstream, UpstreamError, Validity};
use extauth_providers::{AccessToken, ProviderConfig, Providers, RefreshToken};

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }

    fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Responder = Arc<dyn Fn(&Seen) -> Response + Send + Sync>;

#[derive(Clone)]
struct Capture {
    seen: Arc<Mutex<Vec<Seen>>>,
    respond: Responder,
}

async fn record(
    State(c): State<Capture>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let response = (c.respond)(&seen);
    c.seen.lock().unwrap().push(seen);
    response
}

fn tokens_json() -> Response {
    (
        [("content-type", "application/json")],
        r#"{"access_token":"new-access","refresh_token":"new-refresh","expires_in":3600,"token_type":"bearer","authed_user":{"id":"U1"}}"#,
    )
        .into_response()
}

/// A recording provider on 127.0.0.1; returns its base URL and what it saw.
async fn provider_server(
    respond: impl Fn(&Seen) -> Response + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let capture = Capture {
        seen: Arc::default(),
        respond: Arc::new(respond),
    };
    let seen = capture.seen.clone();
    let app = Router::new().fallback(record).with_state(capture);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

fn provider(settings: &[(&str, String)]) -> ProviderConfig {
    let vars: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (format!("CODER_EXTERNAL_AUTH_0_{k}"), v.clone()))
        .collect();
    Providers::from_vars(vars)
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .clone()
}

fn upstream() -> Upstream {
    Upstream::new(Duration::from_secs(5)).unwrap()
}

fn callback() -> url::Url {
    url::Url::parse("https://extauth.example.com/external-auth/p/callback").unwrap()
}

#[tokio::test]
async fn azure_devops_exchanges_a_jwt_assertion() {
    let (base, seen) = provider_server(|_| tokens_json()).await;
    let p = provider(&[
        ("TYPE", "azure-devops".into()),
        ("CLIENT_ID", "app-id".into()),
        ("CLIENT_SECRET", "the-client-assertion".into()),
        ("TOKEN_URL", format!("{base}/oauth2/token")),
    ]);
    let authorize = upstream().authorize_url(&p, &callback(), "st", None);
    let query: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    assert!(
        query.contains(&("response_type".into(), "Assertion".into())),
        "{authorize}"
    );

    let tokens = upstream()
        .exchange_code(&p, "the-code", &callback(), None)
        .await
        .unwrap();
    assert_eq!(tokens.access_token.secret(), "new-access");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.method, Method::POST);
    let mut form = req.form();
    form.sort();
    assert_eq!(
        form,
        [
            ("assertion".to_owned(), "the-code".to_owned()),
            (
                "client_assertion".to_owned(),
                "the-client-assertion".to_owned()
            ),
            (
                "client_assertion_type".to_owned(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned()
            ),
            (
                "grant_type".to_owned(),
                "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned()
            ),
            ("redirect_uri".to_owned(), callback().to_string()),
        ]
    );
    assert!(req.header("authorization").is_none());
}

#[tokio::test]
async fn entra_sends_the_azure_devops_resource_and_scopes_on_refresh() {
    let (base, seen) = provider_server(|_| tokens_json()).await;
    let p = provider(&[
        ("TYPE", "azure-devops-entra".into()),
        ("CLIENT_ID", "app".into()),
        ("CLIENT_SECRET", "s".into()),
        ("AUTH_URL", format!("{base}/my-tenant/oauth2/authorize")),
        ("TOKEN_URL", format!("{base}/my-tenant/oauth2/token")),
        (
            "SCOPES",
            "499b84ac-1321-427f-aa17-267ca6975798/.default offline_access".into(),
        ),
    ]);
    let authorize = upstream().authorize_url(&p, &callback(), "st", None);
    assert!(
        authorize
            .query_pairs()
            .any(|(k, v)| k == "resource" && v == "499b84ac-1321-427f-aa17-267ca6975798")
    );

    upstream()
        .exchange_code(&p, "c", &callback(), None)
        .await
        .unwrap();
    upstream()
        .refresh(&p, &RefreshToken::new("old"), &callback())
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].field("resource").as_deref(),
        Some("499b84ac-1321-427f-aa17-267ca6975798")
    );
    assert_eq!(
        seen[0].field("grant_type").as_deref(),
        Some("authorization_code")
    );
    assert_eq!(
        seen[1].field("grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(seen[1].field("refresh_token").as_deref(), Some("old"));
    assert_eq!(
        seen[1].field("resource").as_deref(),
        Some("499b84ac-1321-427f-aa17-267ca6975798")
    );
    assert_eq!(
        seen[1].field("scope").as_deref(),
        Some("499b84ac-1321-427f-aa17-267ca6975798/.default offline_access")
    );
}

#[tokio::test]
async fn jfrog_bearer_header_only_on_the_code_exchange() {
    let (base, seen) = provider_server(|_| tokens_json()).await;
    let p = provider(&[
        ("TYPE", "jfrog".into()),
        ("CLIENT_ID", "int-42".into()),
        ("CLIENT_SECRET", "jfrog-secret".into()),
        ("AUTH_URL", format!("{base}/ui/authorization")),
    ]);
    let client = upstream();
    client
        .exchange_code(&p, "c", &callback(), None)
        .await
        .unwrap();
    client
        .refresh(&p, &RefreshToken::new("r"), &callback())
        .await
        .unwrap();
    client.validate(&p, &AccessToken::new("tok")).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/access/api/v1/integrations/int-42/token");
    assert_eq!(seen[0].header("authorization"), Some("Bearer jfrog-secret"));
    // Not on the refresh, and the validation carries the user's token, not the secret.
    assert_ne!(seen[1].header("authorization"), Some("Bearer jfrog-secret"));
    assert_eq!(seen[2].path, "/access/api/v1/system/ping");
    assert_eq!(seen[2].header("authorization"), Some("Bearer tok"));
}

#[tokio::test]
async fn github_revocation_is_a_delete_with_basic_credentials() {
    let (base, seen) = provider_server(|_| StatusCode::NO_CONTENT.into_response()).await;
    let p = provider(&[
        ("TYPE", "github".into()),
        ("CLIENT_ID", "Iv1.abc".into()),
        ("CLIENT_SECRET", "gh-secret".into()),
        ("REVOKE_URL", format!("{base}/applications/Iv1.abc/grant")),
    ]);
    let outcome = upstream()
        .revoke(
            &p,
            &AccessToken::new("gho_tok"),
            Some(&RefreshToken::new("ghr")),
        )
        .await;
    assert_eq!(outcome.unwrap(), Revocation::Revoked);
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.method, Method::DELETE);
    assert_eq!(req.path, "/applications/Iv1.abc/grant");
    // Basic base64("Iv1.abc:gh-secret")
    assert_eq!(
        req.header("authorization"),
        Some("Basic SXYxLmFiYzpnaC1zZWNyZXQ=")
    );
    assert_eq!(req.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(req.header("x-github-api-version"), Some("2022-11-28"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&req.body).unwrap(),
        serde_json::json!({"access_token": "gho_tok"})
    );
}

#[tokio::test]
async fn rfc7009_revokes_refresh_then_access_token() {
    let (base, seen) = provider_server(|_| StatusCode::OK.into_response()).await;
    let p = provider(&[
        ("TYPE", "gitlab".into()),
        ("CLIENT_ID", "c".into()),
        ("CLIENT_SECRET", "s".into()),
        ("AUTH_URL", format!("{base}/oauth/authorize")),
    ]);
    assert_eq!(
        p.revoke_url.as_ref().unwrap().as_str(),
        format!("{base}/oauth/revoke")
    );
    let outcome = upstream()
        .revoke(&p, &AccessToken::new("at"), Some(&RefreshToken::new("rt")))
        .await;
    assert_eq!(outcome.unwrap(), Revocation::Revoked);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].field("token").as_deref(), Some("rt"));
    assert_eq!(
        seen[0].field("token_type_hint").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(seen[1].field("token").as_deref(), Some("at"));
    assert_eq!(
        seen[1].field("token_type_hint").as_deref(),
        Some("access_token")
    );
    assert!(
        seen[0]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );

    let no_url = provider(&[("TYPE", "bitbucket".into()), ("CLIENT_ID", "c".into())]);
    assert_eq!(
        upstream()
            .revoke(&no_url, &AccessToken::new("a"), None)
            .await
            .unwrap(),
        Revocation::Unsupported
    );
}

#[tokio::test]
async fn client_authentication_falls_back_to_parameters_and_remembers() {
    let (base, seen) = provider_server(|req| {
        if req.header("authorization").is_some() {
            (
                StatusCode::UNAUTHORIZED,
                [("content-type", "application/json")],
                r#"{"error":"invalid_client"}"#,
            )
                .into_response()
        } else {
            tokens_json()
        }
    })
    .await;
    let p = provider(&[
        ("TYPE", "gitea".into()),
        ("CLIENT_ID", "cid".into()),
        ("CLIENT_SECRET", "csecret".into()),
        ("AUTH_URL", format!("{base}/login/oauth/authorize")),
    ]);
    let client = upstream();
    let verifier = "v".repeat(43);
    client
        .exchange_code(&p, "c", &callback(), Some(&verifier))
        .await
        .unwrap();
    client
        .refresh(&p, &RefreshToken::new("r"), &callback())
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        3,
        "basic once, then parameters, then parameters straight away"
    );
    assert!(
        seen[0]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    assert_eq!(seen[1].field("client_id").as_deref(), Some("cid"));
    assert_eq!(seen[1].field("client_secret").as_deref(), Some("csecret"));
    assert_eq!(seen[1].field("code_verifier"), Some(verifier));
    assert!(seen[2].header("authorization").is_none());
    assert_eq!(seen[2].field("client_secret").as_deref(), Some("csecret"));
}

#[tokio::test]
async fn errors_with_http_200_and_form_encoded_answers() {
    let (base, _) = provider_server(|req| {
        if req.field("grant_type").as_deref() == Some("refresh_token") {
            (
                [("content-type", "application/json")],
                r#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired."}"#,
            )
                .into_response()
        } else {
            ([("content-type", "application/x-www-form-urlencoded")], "access_token=gho_1&scope=repo&token_type=bearer").into_response()
        }
    })
    .await;
    let p = provider(&[
        ("TYPE", "github".into()),
        ("CLIENT_ID", "c".into()),
        ("CLIENT_SECRET", "s".into()),
        ("TOKEN_URL", format!("{base}/login/oauth/access_token")),
    ]);
    let tokens = upstream()
        .exchange_code(&p, "c", &callback(), None)
        .await
        .unwrap();
    assert_eq!(tokens.access_token.secret(), "gho_1");
    assert_eq!(
        tokens.expires_in, None,
        "no expires_in = a token that does not expire"
    );
    let err = upstream()
        .refresh(&p, &RefreshToken::new("r"), &callback())
        .await
        .unwrap_err();
    assert_eq!(err.oauth_code(), Some("bad_refresh_token"));
    assert!(matches!(err, UpstreamError::OAuth { status: 200, .. }));
}

#[tokio::test]
async fn validation_statuses() {
    let (base, _) = provider_server(|req| {
        let status = req.query.parse::<u16>().unwrap_or(200);
        let mut response = (StatusCode::from_u16(status).unwrap(), "{}").into_response();
        if req.path == "/limited" {
            response
                .headers_mut()
                .insert("x-ratelimit-remaining", "0".parse().unwrap());
        }
        response
    })
    .await;
    for (path, status, expected) in [
        ("/user", 200, Some(true)),
        ("/user", 401, Some(false)),
        ("/user", 403, Some(false)),
        ("/limited", 403, Some(true)),
        ("/user", 429, Some(true)),
        ("/user", 500, None),
        ("/user", 404, None),
    ] {
        let p = provider(&[
            ("TYPE", "github".into()),
            ("CLIENT_ID", "c".into()),
            ("VALIDATE_URL", format!("{base}{path}?{status}")),
        ]);
        let result = upstream().validate(&p, &AccessToken::new("t")).await;
        let verdict = match result {
            Ok(Validity::Valid { .. } | Validity::RateLimited) => Some(true),
            Ok(Validity::Invalid) => Some(false),
            Err(_) => None,
        };
        assert_eq!(verdict, expected, "{path} {status}");
    }
}
