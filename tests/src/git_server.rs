//! A smart-HTTP git server for the tests: `git http-backend` behind HTTP Basic or Bearer
//! (Azure DevOps takes both), accepting only a token that the test IdP's introspection says is
//! active (like a forge does). It records the scheme of every accepted request.
//!
//! With Basic, the token is the password, or the username when the password is empty
//! (GitHub's token-as-username convention).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::io::AsyncWriteExt;

#[derive(Clone)]
struct Backend {
    root: PathBuf,
    introspection: String,
    /// (client id, secret) pairs; a token is active when the IdP says so to any of them.
    clients: Vec<(String, String)>,
    /// The scheme (`Basic`, `Bearer`) of each request let in, in order.
    schemes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// A running git server on 127.0.0.1.
pub struct GitServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Where the bare repositories are.
    pub root: PathBuf,
    schemes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitServer {
    /// Serves the bare repositories under `root`, checking tokens with `issuer`'s introspection.
    pub async fn start(root: &Path, issuer: &str, clients: &[(&str, &str)]) -> Self {
        let backend = Backend {
            root: root.to_path_buf(),
            introspection: format!("{issuer}/token/introspection"),
            clients: clients
                .iter()
                .map(|(i, s)| ((*i).to_owned(), (*s).to_owned()))
                .collect(),
            schemes: std::sync::Arc::default(),
        };
        let schemes = backend.schemes.clone();
        let app = Router::new().fallback(serve).with_state(backend);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            root: root.to_path_buf(),
            schemes,
            task,
        }
    }

    /// The authentication scheme of each request let in so far, and forgets them.
    pub fn take_schemes(&self) -> Vec<String> {
        std::mem::take(&mut *self.schemes.lock().unwrap())
    }

    /// Creates a bare repository at `path` (e.g. `gh/org/repo.git`) with one commit.
    pub fn create_repo(&self, path: &str) {
        let bare = self.root.join(path);
        std::fs::create_dir_all(&bare).unwrap();
        crate::git(
            &bare,
            &["init", "--bare", "--quiet", "--initial-branch=main", "."],
        );
        let work = tempfile::tempdir().unwrap();
        crate::git(
            work.path(),
            &["init", "--quiet", "--initial-branch=main", "."],
        );
        std::fs::write(work.path().join("README"), format!("{path}\n")).unwrap();
        crate::git(work.path(), &["add", "README"]);
        crate::git(
            work.path(),
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "commit",
                "--quiet",
                "-m",
                "first",
            ],
        );
        crate::git(
            work.path(),
            &["push", "--quiet", bare.to_str().unwrap(), "main"],
        );
    }
}

fn unauthorized() -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    for challenge in [
        "Bearer realm=\"extauth test forge\"",
        "Basic realm=\"extauth test forge\"",
    ] {
        response
            .headers_mut()
            .append("www-authenticate", HeaderValue::from_static(challenge));
    }
    response
}

/// The scheme and the (user, token) in `Authorization`, by the forge rules above.
fn token_of(headers: &HeaderMap) -> Option<(&'static str, String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(("Bearer", String::new(), token.to_owned()));
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?,
    )
    .ok()?;
    let (user, password) = decoded.split_once(':')?;
    let token = if password.is_empty() { user } else { password };
    Some(("Basic", user.to_owned(), token.to_owned()))
}

async fn active(backend: &Backend, token: &str) -> bool {
    for (id, secret) in &backend.clients {
        let answer = reqwest::Client::new()
            .post(&backend.introspection)
            .basic_auth(id, Some(secret))
            .form(&[("token", token)])
            .send()
            .await;
        if let Ok(r) = answer {
            if r.json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["active"] == true)
            {
                return true;
            }
        }
    }
    false
}

async fn serve(
    State(backend): State<Backend>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((scheme, user, token)) = token_of(&headers) else {
        return unauthorized();
    };
    if !active(&backend, &token).await {
        return unauthorized();
    }
    backend.schemes.lock().unwrap().push(scheme.to_owned());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &backend.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", uri.path())
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    cgi_response(&output.stdout)
}

/// A CGI answer (headers, blank line, body) as an HTTP response.
fn cgi_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, gap)) = split else {
        return (StatusCode::BAD_GATEWAY, "bad CGI answer").into_response();
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut response = raw[end + gap..].to_vec().into_response();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(200);
            *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
