//! `--demo`: a small forge inside the broker's process, so a newcomer sees the whole thing work
//! offline with no OAuth app of their own — Connect completes, a workspace gets a token, and
//! `git clone` goes through `git-credential-extauth`. It is an OAuth2 provider (authorize with a
//! consent page, code and refresh grants, a user endpoint to validate tokens) and a git server
//! over smart HTTP (`git http-backend`) with one repository, on its own loopback port. Its
//! tokens live in memory: after a restart, Connect again. Marked as a demo wherever it shows;
//! refused unless the broker itself is on loopback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, RawForm, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine as _;

use crate::random;

/// The demo provider's id (its URLs on the broker are `/external-auth/demo…`).
pub const PROVIDER_ID: &str = "demo";
/// What it is called everywhere it shows.
pub const DISPLAY_NAME: &str = "Demo forge (not a real forge)";
/// The demo repository, as its URL path names it.
pub const REPOSITORY: &str = "demo/hello.git";
const CLIENT_ID: &str = "extauth-demo";
/// Access tokens live this long (a refresh shows itself within a session).
const ACCESS_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Tokens {
    codes: HashMap<String, (String, Instant)>,
    access: HashMap<String, Instant>,
    refresh: HashMap<String, ()>,
}

/// The demo forge: where it listens, its client secret, its repository, its tokens.
pub struct DemoForge {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    client_secret: String,
    /// The directory holding `demo/hello.git`.
    repositories: PathBuf,
    tokens: Mutex<Tokens>,
}

impl std::fmt::Debug for DemoForge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoForge").field("url", &self.url).finish()
    }
}

impl DemoForge {
    /// A forge to serve at `url`, its repository under `data_dir`.
    pub fn new(url: String, data_dir: &Path) -> Self {
        Self {
            url,
            client_secret: random::hex_token::<16>(),
            repositories: data_dir.join("demo-forge"),
            tokens: Mutex::new(Tokens::default()),
        }
    }

    /// The provider settings that make the broker use this forge, as the `index`-th provider.
    pub fn provider_vars(&self, index: usize) -> Vec<(String, String)> {
        let var = |name: &str| format!("CODER_EXTERNAL_AUTH_{index}_{name}");
        let url = &self.url;
        vec![
            (var("ID"), PROVIDER_ID.to_owned()),
            (var("TYPE"), "demo-forge".to_owned()),
            (var("CLIENT_ID"), CLIENT_ID.to_owned()),
            (var("CLIENT_SECRET"), self.client_secret.clone()),
            (var("AUTH_URL"), format!("{url}/login/oauth/authorize")),
            (var("TOKEN_URL"), format!("{url}/login/oauth/access_token")),
            (var("VALIDATE_URL"), format!("{url}/api/user")),
            (var("REGEX"), format!("^{}(/.*)?$", regex::escape(url))),
            (var("DISPLAY_NAME"), DISPLAY_NAME.to_owned()),
        ]
    }

    /// The clone URL of the demo repository.
    pub fn clone_url(&self) -> String {
        format!("{}/{REPOSITORY}", self.url)
    }

    /// Makes the demo repository (once): a bare repository with one commit.
    pub fn prepare_repository(&self) -> Result<(), String> {
        let bare = self.repositories.join(REPOSITORY);
        if bare.join("HEAD").is_file() {
            return Ok(());
        }
        let git = |dir: &Path, args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .output()
                .map_err(|e| format!("git is needed for the demo repository: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "git {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        std::fs::create_dir_all(&bare).map_err(|e| e.to_string())?;
        git(&bare, &["init", "-q", "--bare", "-b", "main"])?;
        let work = self.repositories.join(".seed");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        git(&work, &["init", "-q", "-b", "main"])?;
        std::fs::write(
            work.join("README.md"),
            "# hello\n\nThis repository lives on extauth's demo forge. If you can read this in a\n\
             clone, git got its credentials from extauth: no token was typed or stored.\n",
        )
        .map_err(|e| e.to_string())?;
        git(&work, &["add", "README.md"])?;
        git(
            &work,
            &[
                "-c",
                "user.name=Demo",
                "-c",
                "user.email=demo@demo-forge.invalid",
                "commit",
                "-q",
                "-m",
                "Hello from the demo forge",
            ],
        )?;
        git(
            &work,
            &["push", "-q", bare.to_str().unwrap_or_default(), "main"],
        )?;
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }

    fn valid_access(&self, token: &str) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .access
            .get(token)
            .is_some_and(|expires| *expires > Instant::now())
    }

    fn issue(&self) -> serde_json::Value {
        let access = format!("demo_at_{}", random::hex_token::<16>());
        let refresh = format!("demo_rt_{}", random::hex_token::<16>());
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .access
            .insert(access.clone(), Instant::now() + ACCESS_LIFETIME);
        tokens.refresh.insert(refresh.clone(), ());
        serde_json::json!({
            "access_token": access,
            "token_type": "bearer",
            "expires_in": ACCESS_LIFETIME.as_secs(),
            "refresh_token": refresh,
            "scope": "repo",
        })
    }
}

/// The consent page of the demo forge.
#[derive(Template)]
#[template(path = "demo_forge.html")]
struct ConsentPage {
    client_id: String,
    redirect_uri: String,
    state: String,
    host: String,
}

#[derive(serde::Deserialize)]
struct AuthorizeQuery {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
}

fn page(html: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action *; frame-ancestors 'none'",
            ),
        ],
        html,
    )
        .into_response()
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

async fn authorize_get(
    State(forge): State<Arc<DemoForge>>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    if q.client_id.as_deref() != Some(CLIENT_ID) {
        return plain(StatusCode::BAD_REQUEST, "demo forge: unknown client_id");
    }
    let Some(redirect_uri) = q.redirect_uri else {
        return plain(StatusCode::BAD_REQUEST, "demo forge: no redirect_uri");
    };
    let rendered = ConsentPage {
        client_id: CLIENT_ID.to_owned(),
        redirect_uri,
        state: q.state.unwrap_or_default(),
        host: forge.url.clone(),
    }
    .render();
    match rendered {
        Ok(html) => page(html),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "demo forge: page failed"),
    }
}

async fn authorize_post(State(forge): State<Arc<DemoForge>>, RawForm(body): RawForm) -> Response {
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let Some(Ok(mut back)) = fields.get("redirect_uri").map(|u| url::Url::parse(u)) else {
        return plain(StatusCode::BAD_REQUEST, "demo forge: no redirect_uri");
    };
    {
        let mut query = back.query_pairs_mut();
        if fields.get("decision").map(String::as_str) == Some("allow") {
            let code = format!("demo_code_{}", random::hex_token::<16>());
            forge
                .tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .codes
                .insert(
                    code.clone(),
                    (
                        fields.get("redirect_uri").cloned().unwrap_or_default(),
                        Instant::now() + Duration::from_secs(60),
                    ),
                );
            query.append_pair("code", &code);
        } else {
            query.append_pair("error", "access_denied");
        }
        if let Some(state) = fields.get("state") {
            query.append_pair("state", state);
        }
    }
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(location) = HeaderValue::from_str(back.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn oauth_error(code: &'static str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({"error": code})),
    )
        .into_response()
}

/// Client credentials by HTTP Basic or in the form.
fn client_ok(forge: &DemoForge, headers: &HeaderMap, fields: &HashMap<String, String>) -> bool {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let (id, secret) = match &basic {
        Some(pair) => match pair.split_once(':') {
            Some((id, secret)) => (id.to_owned(), secret.to_owned()),
            None => return false,
        },
        None => (
            fields.get("client_id").cloned().unwrap_or_default(),
            fields.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    id == CLIENT_ID
        && extauth_providers::constant_time_eq(secret.as_bytes(), forge.client_secret.as_bytes())
}

async fn token_post(
    State(forge): State<Arc<DemoForge>>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if !client_ok(&forge, &headers, &fields) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let granted = {
        let mut tokens = forge.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match fields.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                let code = fields.get("code").cloned().unwrap_or_default();
                matches!(
                    tokens.codes.remove(&code),
                    Some((redirect, expires)) if expires > Instant::now()
                        && fields.get("redirect_uri").is_none_or(|r| *r == redirect)
                )
            }
            Some("refresh_token") => {
                let refresh = fields.get("refresh_token").cloned().unwrap_or_default();
                tokens.refresh.remove(&refresh).is_some()
            }
            _ => return oauth_error("unsupported_grant_type"),
        }
    };
    if !granted {
        return oauth_error("invalid_grant");
    }
    axum::Json(forge.issue()).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
}

async fn user_get(State(forge): State<Arc<DemoForge>>, headers: HeaderMap) -> Response {
    match bearer(&headers) {
        Some(token) if forge.valid_access(token) => axum::Json(serde_json::json!({
            "login": "demo", "name": "Demo user (demo forge)", "id": 1,
        }))
        .into_response(),
        _ => plain(StatusCode::UNAUTHORIZED, "demo forge: bad token"),
    }
}

/// Whether a git request carries a token of this forge (as the username or the password).
fn git_authorized(forge: &DemoForge, headers: &HeaderMap) -> bool {
    let Some(pair) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return false;
    };
    let (user, password) = pair.split_once(':').unwrap_or((pair.as_str(), ""));
    forge.valid_access(user) || forge.valid_access(password)
}

/// Git over smart HTTP through `git http-backend` (CGI), for the one repository.
async fn git_any(
    State(forge): State<Arc<DemoForge>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if !path.starts_with(&format!("/{REPOSITORY}/")) {
        return plain(StatusCode::NOT_FOUND, "demo forge: no such repository");
    }
    if !git_authorized(&forge, &headers) {
        let mut response = plain(StatusCode::UNAUTHORIZED, "demo forge: sign in with a token");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"extauth demo forge\""),
        );
        return response;
    }
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &forge.repositories)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("REMOTE_USER", "demo")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", path)
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header_text(header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            header_text(header::CONTENT_ENCODING),
        )
        .env(
            "GIT_PROTOCOL",
            headers
                .get("git-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let Ok(mut child) = command.spawn() else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "demo forge: git is not installed",
        );
    };
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt as _;
        let _ = stdin.write_all(&body).await;
    }
    let Ok(output) = child.wait_with_output().await else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "demo forge: git failed");
    };
    cgi_response(&output.stdout)
}

/// A CGI answer (headers, a blank line, the body) as an HTTP response.
fn cgi_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2)));
    let Some((at, gap)) = split else {
        return plain(
            StatusCode::BAD_GATEWAY,
            "demo forge: git answered nothing usable",
        );
    };
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let mut response = Response::new(axum::body::Body::from(raw[at + gap..].to_vec()));
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse::<u16>().ok());
            if let Some(status) = code.and_then(|c| StatusCode::from_u16(c).ok()) {
                *response.status_mut() = status;
            }
        } else if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// The forge's routes.
pub fn router(forge: Arc<DemoForge>) -> Router {
    Router::new()
        .route(
            "/login/oauth/authorize",
            get(authorize_get).post(authorize_post),
        )
        .route("/login/oauth/access_token", axum::routing::post(token_post))
        .route("/api/user", get(user_get))
        .fallback(any(git_any))
        .with_state(forge)
}

/// Serves the forge on `listener` until the process ends.
pub fn spawn(forge: Arc<DemoForge>, listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(forge)).await {
            tracing::error!(error = %e, "the demo forge stopped");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_answers_become_responses() {
        let response =
            cgi_response(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response =
            cgi_response(b"Content-Type: application/x-git-upload-pack-advertisement\n\n0000");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/x-git-upload-pack-advertisement"
        );
    }

    #[test]
    fn the_regex_matches_only_the_forge() {
        let forge = DemoForge::new("http://127.0.0.1:3001".to_owned(), Path::new("/tmp"));
        let vars = forge.provider_vars(0);
        let regex = &vars.iter().find(|(k, _)| k.ends_with("_REGEX")).unwrap().1;
        let re = regex::Regex::new(regex).unwrap();
        assert!(re.is_match("http://127.0.0.1:3001/demo/hello.git"));
        assert!(
            re.is_match("http://127.0.0.1:3001"),
            "git sends no path by default"
        );
        assert!(!re.is_match("http://127.0.0.1:30011/demo/hello.git"));
        assert!(!re.is_match("https://github.com/org/repo"));
    }
}
