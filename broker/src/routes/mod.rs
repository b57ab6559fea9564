//! The HTTP surface: one router, built outside `main` so tests serve the very same thing.

mod api;
pub(crate) mod browser;
mod git_ssh;
mod oauth2;
mod oauth2_apps;
mod oidc;
mod request_id;
mod request_metrics;
pub(crate) mod security_headers;
mod workload;
mod workspace;

use axum::Router;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};

use crate::error::{ApiError, PageError, PageErrorMark};
use crate::identity::session_of;
use crate::pages::Chrome;
use crate::state::AppState;

/// Every route: the paths and what answers them. The router is built from this list, and tests
/// walk it (hostile input, security headers), so a new route is covered without anyone
/// remembering to add it there.
fn table() -> Vec<(&'static str, MethodRouter<AppState>)> {
    use axum::routing::delete;
    vec![
        ("/healthz", get(|| async { "ok" })),
        ("/readyz", get(api::readyz)),
        ("/metrics", get(api::metrics_get)),
        // Browser.
        ("/", get(browser::home_get)),
        ("/login", get(browser::login_get)),
        ("/login/dev", get(browser::dev_login_get)),
        ("/logout", post(browser::logout_post)),
        ("/external-auth/{id}", get(browser::provider_get)),
        ("/external-auth/{id}/callback", get(browser::callback_get)),
        ("/gitauth/{id}/callback", get(browser::callback_get)),
        ("/external-auth/{id}/unlink", post(browser::unlink_post)),
        ("/external-auth/{id}/accounts", post(browser::account_post)),
        (
            "/workspace-tokens",
            get(browser::tokens_get).post(browser::tokens_post),
        ),
        ("/workspace-tokens/{id}", get(browser::token_setup_get)),
        (
            "/workspace-tokens/{id}/revoke",
            post(browser::token_revoke_post),
        ),
        (
            "/assets/style.css",
            get(|| async { crate::pages::stylesheet() }),
        ),
        ("/assets/pages.js", get(|| async { crate::pages::script() })),
        ("/icon/{file}", get(browser::icon_get)),
        ("/emojis/{file}", get(browser::icon_get)),
        // User API.
        ("/api/v2/users", post(api::user_create_post)),
        ("/api/v2/users/{user}", get(api::user_get)),
        ("/api/v2/users/oidc-claims", get(api::oidc_claims_get)),
        (
            "/api/v2/users/{user}/oidc-claims",
            get(api::oidc_claims_get),
        ),
        (
            "/api/v2/users/{user}/gitsshkey",
            get(git_ssh::key_get).put(git_ssh::key_put),
        ),
        (
            "/api/v2/workspaceagents/me/gitsshkey",
            get(git_ssh::agent_key_get),
        ),
        ("/git-ssh-key", get(git_ssh::page_get)),
        ("/git-ssh-key/regenerate", post(git_ssh::regenerate_post)),
        (
            "/api/v2/users/{user}/workspace-tokens",
            get(api::workspace_tokens_get).post(api::workspace_tokens_post),
        ),
        (
            "/api/v2/users/{user}/workspace-tokens/{id}",
            get(api::workspace_token_get).delete(api::workspace_token_delete),
        ),
        (
            "/api/v2/workspaceagents/me/setup",
            get(workspace::setup_get),
        ),
        (
            "/api/v2/users/{user}/keys/tokens",
            get(api::api_tokens_get).post(api::api_tokens_post),
        ),
        (
            "/api/v2/users/{user}/keys/tokens/{id}",
            delete(api::api_token_delete),
        ),
        ("/api/v2/external-auth", get(api::external_auth_list_get)),
        (
            "/api/v2/external-auth/{id}",
            get(api::external_auth_get).delete(api::external_auth_delete),
        ),
        (
            "/api/v2/external-auth/{id}/accounts/{account}",
            put(api::external_auth_account_put).delete(api::external_auth_account_delete),
        ),
        (
            "/api/v2/external-auth/{id}/device",
            get(api::device_get).post(api::device_post),
        ),
        // Workspace API.
        (
            "/api/v2/workspaceagents/me/external-auth",
            get(workspace::external_auth_get),
        ),
        (
            "/api/v2/workspaceagents/me/gitauth",
            get(workspace::external_auth_get),
        ),
        (
            "/api/v2/workspaceagents/me/external-auth/rejected",
            post(workspace::rejected_post),
        ),
        (
            "/api/v2/workspaceagents/me/git-config",
            get(workspace::git_config_get),
        ),
        // OIDC sign-in.
        ("/api/v2/users/oidc/callback", get(oidc::callback_get)),
        (
            "/api/v2/users/oidc/backchannel-logout",
            post(oidc::backchannel_post),
        ),
        ("/api/v2/users/authmethods", get(oidc::authmethods_get)),
        (
            "/cli-auth",
            get(browser::cli_auth_get).post(browser::cli_auth_post),
        ),
        // The authorization server (404 when CODER_OAUTH2_PROVIDER_ENABLE=false).
        (
            "/oauth2/authorize",
            get(oauth2::authorize_get).post(oauth2::authorize_post),
        ),
        (
            "/oauth2/tokens",
            post(oauth2::tokens_post).delete(oauth2::tokens_delete),
        ),
        ("/oauth2/token", post(oauth2::tokens_post)),
        ("/oauth2/revoke", post(oauth2::revoke_post)),
        (
            "/oauth2/device/authorize",
            post(oauth2::device_authorize_post),
        ),
        (
            "/oauth2/device",
            get(oauth2::device_get).post(oauth2::device_post),
        ),
        ("/oauth2/introspect", post(oauth2::introspect_post)),
        (
            "/oauth2/userinfo",
            get(oauth2::userinfo).post(oauth2::userinfo),
        ),
        ("/oauth2/jwks", get(oauth2::jwks_get)),
        (
            "/.well-known/openid-configuration",
            get(oauth2::metadata_get),
        ),
        (
            "/.well-known/oauth-authorization-server",
            get(oauth2::metadata_get),
        ),
        (
            "/.well-known/oauth-authorization-server/{*suffix}",
            get(oauth2::metadata_suffixed_get),
        ),
        (
            "/.well-known/openid-configuration/{*suffix}",
            get(oauth2::metadata_suffixed_get),
        ),
        (
            "/.well-known/oauth-protected-resource",
            get(oauth2::resource_metadata_get),
        ),
        (
            "/.well-known/oauth-protected-resource/{*suffix}",
            get(oauth2::resource_metadata_suffixed_get),
        ),
        (
            "/api/v2/oauth2-provider/apps",
            get(oauth2_apps::apps_get).post(oauth2_apps::apps_post),
        ),
        (
            "/api/v2/oauth2-provider/apps/{id}",
            get(oauth2_apps::app_get)
                .put(oauth2_apps::app_put)
                .delete(oauth2_apps::app_delete),
        ),
        (
            "/api/v2/oauth2-provider/apps/{id}/secrets",
            get(oauth2_apps::secrets_get).post(oauth2_apps::secrets_post),
        ),
        (
            "/api/v2/oauth2-provider/apps/{id}/secrets/{secret}",
            delete(oauth2_apps::secret_delete),
        ),
        ("/oauth2/register", post(oauth2::register_post)),
        (
            "/oauth2/clients/{id}",
            get(oauth2::client_get)
                .put(oauth2::client_put)
                .delete(oauth2::client_delete),
        ),
        (
            "/api/v2/oauth2-provider/resources",
            get(oauth2_apps::resources_get).post(oauth2_apps::resources_post),
        ),
        (
            "/api/v2/oauth2-provider/resources/{id}",
            delete(oauth2_apps::resource_delete),
        ),
        ("/api/v2/workload-policies", get(workload::policies_get)),
        (
            "/api/v2/workload-policies/reload",
            axum::routing::post(workload::reload_post),
        ),
        (
            "/api/v2/workload-policies/test",
            axum::routing::post(workload::test_post),
        ),
        (
            "/api/v2/users/{user}/oauth2-apps",
            get(oauth2::connected_api_get),
        ),
        ("/connected-apps", get(oauth2::connected_get)),
        (
            "/connected-apps/{id}/disconnect",
            post(oauth2::disconnect_post),
        ),
        (
            "/oauth2-apps",
            get(oauth2_apps::page_get).post(oauth2_apps::page_post),
        ),
        (
            "/oauth2-apps/{id}/secrets",
            post(oauth2_apps::page_secret_post),
        ),
        (
            "/oauth2-apps/{id}/secrets/{secret}/delete",
            post(oauth2_apps::page_secret_delete_post),
        ),
        (
            "/oauth2-apps/{id}/delete",
            post(oauth2_apps::page_delete_post),
        ),
        (
            "/oauth2-apps/registration",
            post(oauth2_apps::page_registration_post),
        ),
        (
            "/oauth2-apps/resources",
            post(oauth2_apps::page_resource_post),
        ),
        (
            "/oauth2-apps/resources/{id}/delete",
            post(oauth2_apps::page_resource_delete_post),
        ),
    ]
}

/// The paths of every route, as the router has them (without the access URL's prefix).
pub fn paths() -> Vec<&'static str> {
    table().into_iter().map(|(path, _)| path).collect()
}

/// Every route, mounted under the access URL's path prefix.
pub fn router(state: AppState) -> Router {
    let routes = table()
        .into_iter()
        .fold(Router::new(), |router, (path, answer)| {
            router.route(path, answer)
        })
        .method_not_allowed_fallback(unsupported_method)
        .route_layer(axum::middleware::from_fn(request_metrics::record))
        .with_state(state.clone());
    let base = state.settings.base_path().trim_end_matches('/');
    let site = if base.is_empty() {
        routes
    } else {
        Router::new().nest(base, routes)
    };
    let headers = security_headers::Policy::new(&state);
    site.fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(state, error_answers))
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(headers),
            security_headers::apply,
        ))
        .layer(axum::middleware::from_fn(request_id::tag))
}

/// Nothing is served at this path: a page for a browser, JSON for an API client, never an
/// empty answer.
async fn unknown_route(method: Method, headers: HeaderMap, uri: Uri) -> Response {
    let error = ApiError::not_found(
        "There is nothing at this address.",
        format!("{method} {}", uri.path()),
    );
    answer_as_asked(&headers, error)
}

/// A known path asked with a method it does not serve.
async fn unsupported_method(
    method: Method,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not answer {method}.", uri.path()),
        "",
    );
    answer_as_asked(&headers, error)
}

/// Whether the client is a browser asking for a page.
fn wants_page(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

fn answer_as_asked(headers: &HeaderMap, error: ApiError) -> Response {
    if wants_page(headers) {
        PageError(error).into_response()
    } else {
        error.into_response()
    }
}

/// Every error answer takes one of the site's two shapes here, in one place. A browser route's
/// error ([`PageErrorMark`]) becomes the site's error page: this is where the path prefix and
/// the signed-in user (for the navigation) are known; the session is looked up only for an
/// error. axum's own rejections of a request it cannot read (bad JSON, a wrong content type, a
/// missing form field or query parameter: plain text) become `{message, detail}`, or that page
/// for a browser.
async fn error_answers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut cookies = HeaderMap::new();
    for value in request.headers().get_all(header::COOKIE) {
        cookies.append(header::COOKIE, value.clone());
    }
    let wants_page = wants_page(request.headers());
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let mut response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED && state.settings.oauth2.enabled {
        point_at_the_authorization_server(&state, &mut response, method.as_str(), &path);
    }
    let error = if let Some(PageErrorMark(error)) = response.extensions_mut().remove() {
        error
    } else if is_rejection(&response) {
        let status = response.status();
        let body = std::mem::take(response.body_mut());
        let detail = axum::body::to_bytes(body, 4096)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let message = match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "The request's content type is not accepted here."
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                "The request's fields are not what this route takes."
            }
            _ => "The request could not be read.",
        };
        let error = ApiError::new(status, message, detail);
        if !wants_page {
            return with_headers_of(response, error.into_response());
        }
        error
    } else {
        return response;
    };
    let mut chrome = Chrome::anonymous(state.settings.base_path().to_owned());
    if let Ok(Some((user, session))) = session_of(&state, &cookies).await {
        chrome.admin = user.is_admin;
        chrome.oauth2 = state.settings.oauth2.enabled;
        chrome.user = Some(user.username);
        chrome.csrf = session.csrf;
    }
    with_headers_of(response, crate::pages::error_page(&error, chrome))
}

/// A 401's bare `Bearer` challenge names the protected resource metadata, so an OAuth client
/// (an MCP client, an IDE) that meets the API without a token finds the authorization server.
fn point_at_the_authorization_server(
    state: &AppState,
    response: &mut Response,
    method: &str,
    path: &str,
) {
    let bare = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .is_some_and(|v| v.as_bytes() == b"Bearer");
    let base = state.settings.base_path().trim_end_matches('/');
    let route = path.strip_prefix(base).unwrap_or(path);
    if bare {
        if let Ok(value) = oauth2::bearer_challenge(state, method, route).parse() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
    }
}

/// An error answer of axum itself: a client error in plain text (ours are JSON or HTML).
fn is_rejection(response: &Response) -> bool {
    response.status().is_client_error()
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/plain"))
}

/// `answer`, keeping the headers `original` set (cookies, `Allow`), but not its body's.
fn with_headers_of(original: Response, mut answer: Response) -> Response {
    for (name, value) in original.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name, value.clone());
        }
    }
    answer
}
