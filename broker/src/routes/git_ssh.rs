//! Git over SSH: Coder's `gitsshkey` routes (the user's public key; the pair for their
//! workspaces) and the "Git SSH key" page.

use axum::Json;
use axum::extract::{Path, RawForm, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::error::{ApiError, PageError};
use crate::git_ssh::{self, fingerprint};
use crate::identity::{BrowserUser, Caller, WorkspaceCaller};
use crate::pages::{self, GitSshKeyPage};
use crate::state::AppState;

use super::api::{rfc3339, target_user};
use super::browser::chrome;

/// Coder's `GitSSHKey`: `{user_id, created_at, updated_at, public_key}`.
fn key_json(key: &git_ssh::GitSshKey) -> Value {
    json!({
        "user_id": key.user_id,
        "created_at": rfc3339(key.created_at),
        "updated_at": rfc3339(key.updated_at),
        "public_key": key.public_key,
    })
}

/// `GET /api/v2/users/{user}/gitsshkey`: made on first use.
pub async fn key_get(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = target_user(&state, &caller, &user).await?;
    Ok(Json(key_json(&git_ssh::key_of(&state, &user).await?)))
}

/// `PUT /api/v2/users/{user}/gitsshkey`: a new key; the old one stops working.
pub async fn key_put(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = target_user(&state, &caller, &user).await?;
    Ok(Json(key_json(&git_ssh::regenerate(&state, &user).await?)))
}

/// `GET /api/v2/workspaceagents/me/gitsshkey`: the pair, for a workspace token only.
pub async fn agent_key_get(
    State(state): State<AppState>,
    caller: WorkspaceCaller,
) -> Result<Json<Value>, ApiError> {
    if !caller.is_workspace_token() {
        return Err(ApiError::forbidden(
            "Only a workspace token may fetch the private git SSH key; create one under Workspace tokens.",
        ));
    }
    let (key, private) = git_ssh::pair_of(&state, &caller.user).await?;
    tracing::info!(target: "extauth::audit", event = "gitsshkey.fetched", user = %caller.user.id, fingerprint = %fingerprint(&key.public_key), "a workspace fetched the git SSH key");
    Ok(Json(json!({
        "public_key": key.public_key,
        "private_key": private.0,
    })))
}

async fn page(
    state: &AppState,
    user: &BrowserUser,
    notice: Option<String>,
) -> Result<Response, PageError> {
    let key = git_ssh::key_of(state, &user.user).await?;
    Ok(pages::render(
        StatusCode::OK,
        &GitSshKeyPage {
            chrome: chrome(state, user, "git-ssh-key"),
            fingerprint: fingerprint(&key.public_key),
            algorithm: key.algorithm,
            public_key: key.public_key,
            notice,
            forges: forge_pages(state),
        },
    ))
}

/// Where each configured forge takes SSH keys: (provider name, settings page).
fn forge_pages(state: &AppState) -> Vec<(String, String)> {
    state
        .providers
        .iter()
        .filter_map(|p| p.ssh_keys_page().map(|url| (p.display_name.clone(), url)))
        .collect()
}

/// `GET /git-ssh-key`.
pub async fn page_get(
    State(state): State<AppState>,
    user: BrowserUser,
) -> Result<Response, PageError> {
    page(&state, &user, None).await
}

/// `POST /git-ssh-key/regenerate`: only with the confirmation ticked.
pub async fn regenerate_post(
    State(state): State<AppState>,
    user: BrowserUser,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    user.check_csrf(field("csrf"))?;
    if field("confirm") != "yes" {
        return page(
            &state,
            &user,
            Some(
                "Nothing changed: tick the box to confirm that the old key stops working."
                    .to_owned(),
            ),
        )
        .await;
    }
    git_ssh::regenerate(&state, &user.user).await?;
    page(
        &state,
        &user,
        Some("A new key is made. Add it at your forge in place of the old one, which no longer works from your workspaces.".to_owned()),
    )
    .await
}
