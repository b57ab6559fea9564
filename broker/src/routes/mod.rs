//! The HTTP surface: one router, built outside `main` so tests serve the very same thing.

mod api;
pub(crate) mod browser;
mod oidc;
mod workspace;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// The OIDC redirect URI to register at the IdP.
pub fn oidc_redirect_uri(state: &AppState) -> String {
    oidc::redirect_uri(state)
}

/// Every route, mounted under the access URL's path prefix.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics_get))
        // Browser.
        .route("/", get(browser::home_get))
        .route("/login", get(browser::login_get))
        .route("/login/dev", get(browser::dev_login_get))
        .route("/logout", post(browser::logout_post))
        .route("/external-auth/{id}", get(browser::provider_get))
        .route("/external-auth/{id}/callback", get(browser::callback_get))
        .route("/gitauth/{id}/callback", get(browser::callback_get))
        .route("/external-auth/{id}/unlink", post(browser::unlink_post))
        .route(
            "/workspace-tokens",
            get(browser::tokens_get).post(browser::tokens_post),
        )
        .route(
            "/workspace-tokens/{id}/revoke",
            post(browser::token_revoke_post),
        )
        .route(
            "/assets/style.css",
            get(|| async { crate::pages::stylesheet() }),
        )
        .route("/icon/{file}", get(browser::icon_get))
        .route("/emojis/{file}", get(browser::icon_get))
        // User API.
        .route("/api/v2/users", post(api::user_create_post))
        .route("/api/v2/users/{user}", get(api::user_get))
        .route(
            "/api/v2/users/{user}/workspace-tokens",
            get(api::workspace_tokens_get).post(api::workspace_tokens_post),
        )
        .route(
            "/api/v2/users/{user}/workspace-tokens/{id}",
            axum::routing::delete(api::workspace_token_delete),
        )
        .route(
            "/api/v2/users/{user}/keys/tokens",
            get(api::api_tokens_get).post(api::api_tokens_post),
        )
        .route(
            "/api/v2/users/{user}/keys/tokens/{id}",
            axum::routing::delete(api::api_token_delete),
        )
        .route("/api/v2/external-auth", get(api::external_auth_list_get))
        .route(
            "/api/v2/external-auth/{id}",
            get(api::external_auth_get).delete(api::external_auth_delete),
        )
        .route(
            "/api/v2/external-auth/{id}/device",
            get(api::device_get).post(api::device_post),
        )
        // Workspace API.
        .route(
            "/api/v2/workspaceagents/me/external-auth",
            get(workspace::external_auth_get),
        )
        .route(
            "/api/v2/workspaceagents/me/gitauth",
            get(workspace::external_auth_get),
        )
        .route(
            "/api/v2/workspaceagents/me/external-auth/rejected",
            post(workspace::rejected_post),
        )
        .route(
            "/api/v2/workspaceagents/me/git-config",
            get(workspace::git_config_get),
        )
        .route("/api/v2/users/oidc/callback", get(oidc::callback_get))
        .route(
            "/api/v2/users/oidc/backchannel-logout",
            post(oidc::backchannel_post),
        )
        .route("/api/v2/users/authmethods", get(oidc::authmethods_get))
        .route(
            "/cli-auth",
            get(browser::cli_auth_get).post(browser::cli_auth_post),
        )
        .with_state(state.clone());
    let base = state.settings.base_path().trim_end_matches('/');
    if base.is_empty() {
        routes
    } else {
        Router::new().nest(base, routes)
    }
}
