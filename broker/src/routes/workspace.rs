//! The workspace API: the token for a repository URL or a provider ID, in Coder's agent shapes.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use extauth_providers::ProviderConfig;
use extauth_providers::wire::ExternalAuthResponse;
use serde::Deserialize;

use crate::error::ApiError;
use crate::identity::WorkspaceCaller;
use crate::links;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct ExternalAuthQuery {
    #[serde(rename = "match")]
    match_url: Option<String>,
    /// Legacy name of `match`.
    url: Option<String>,
    id: Option<String>,
    /// Present (any value) = wait until linked.
    listen: Option<String>,
    /// extauth's: the account to use when several are linked (a preference).
    account: Option<String>,
    /// extauth's: the HTTP schemes the git server offered (`basic,bearer`, from git's
    /// `wwwauth[]`): among several providers for one URL, one whose `GIT_AUTH` is offered.
    schemes: Option<String>,
}

/// Picks the provider from `id` or `match`, with Coder's errors.
fn choose<'a>(
    state: &'a AppState,
    id: Option<&str>,
    match_url: Option<&str>,
) -> Result<&'a ProviderConfig, ApiError> {
    choose_offered(state, id, match_url, None)
}

/// [`choose`], preferring among several providers for one URL the first whose git
/// authentication scheme the server `offered` (comma-separated, any case).
fn choose_offered<'a>(
    state: &'a AppState,
    id: Option<&str>,
    match_url: Option<&str>,
    offered: Option<&str>,
) -> Result<&'a ProviderConfig, ApiError> {
    match (id, match_url) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "'url' and 'id' cannot be provided together!",
            "",
        )),
        (None, None) => Err(ApiError::bad_request("'url' or 'id' must be provided!", "")),
        (Some(id), None) => Ok(links::provider(state, id)?),
        (None, Some(url)) => {
            let matched = state.providers.match_url(url).map_err(|e| {
                ApiError::bad_request(format!("Cannot match {url:?}."), e.to_string())
            })?;
            if matched.candidates.len() > 1 {
                let ids: Vec<&str> = matched.candidates.iter().map(|p| p.id.as_str()).collect();
                tracing::debug!(url = matched.normalized, candidates = ?ids, "several providers match; the first wins");
                let offers = |p: &&&ProviderConfig| {
                    offered.is_some_and(|o| {
                        o.split(',')
                            .any(|s| s.trim().eq_ignore_ascii_case(p.git_auth.as_str()))
                    })
                };
                if let Some(preferred) = matched.candidates.iter().find(offers) {
                    return Ok(*preferred);
                }
            }
            matched.chosen.ok_or_else(|| {
                let regexes: Vec<String> = state
                    .providers
                    .iter()
                    .filter_map(|p| p.regex.as_ref().map(|r| format!("{}={:?}", p.id, r.as_str())))
                    .collect();
                ApiError::not_found(
                    format!("No matching external auth provider found for the url {:?}.", matched.normalized),
                    if regexes.is_empty() {
                        "no provider has a regex to match git URLs".to_owned()
                    } else {
                        format!(
                            "The configured external auth providers have regex filters that do not match the url. Provider filters: {}",
                            regexes.join(", ")
                        )
                    },
                )
            })
        }
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// `GET /api/v2/workspaceagents/me/external-auth` (and the legacy `/gitauth`).
pub async fn external_auth_get(
    State(state): State<AppState>,
    caller: WorkspaceCaller,
    Query(query): Query<ExternalAuthQuery>,
) -> Result<Json<ExternalAuthResponse>, ApiError> {
    let id = non_empty(query.id);
    let match_url = non_empty(query.match_url).or(non_empty(query.url));
    let provider = choose_offered(
        &state,
        id.as_deref(),
        match_url.as_deref(),
        query.schemes.as_deref(),
    )?;
    if !caller.may_use_provider(provider.id.as_str()) {
        return Err(ApiError::forbidden(format!(
            "This workspace token may not use provider {:?}.",
            provider.id.as_str()
        )));
    }
    let account = non_empty(query.account);
    let choice = links::Choice {
        account: account.as_deref(),
        url: match_url.as_deref(),
    };
    let linked = links::wait_until_linked(
        &state,
        &caller.user.id,
        provider,
        choice,
        query.listen.is_some(),
    )
    .await?;
    let linked_account = linked
        .as_ref()
        .map(|fresh| fresh.account.clone())
        .unwrap_or_default();
    let notice = match (&linked, match_url.as_deref()) {
        (Some(fresh), Some(url)) => {
            crate::app_installations::uncovered(
                &state,
                &caller.user.id,
                provider,
                url,
                &fresh.access_token,
            )
            .await
        }
        _ => None,
    }
    .or_else(|| {
        let relink_by = linked.as_ref().and_then(|fresh| fresh.relink_by);
        links::relink_notice(provider, relink_by, crate::clock::now())
    });
    Ok(Json(
        match linked {
            Some(fresh) => ExternalAuthResponse::linked(
                &provider.provider_type,
                fresh.access_token,
                fresh.extra,
                fresh.expires_at,
            )
            .with_notice(notice),
            None => ExternalAuthResponse::not_linked(
                &provider.provider_type,
                provider.link_url(&state.settings.access_url).to_string(),
            ),
        }
        .for_git(provider.id.as_str(), provider.git_auth)
        .for_account(&linked_account),
    ))
}

#[derive(Deserialize)]
pub struct Rejected {
    id: Option<String>,
    #[serde(rename = "match")]
    match_url: Option<String>,
    /// The account the refused token was for, when several are linked.
    account: Option<String>,
}

/// `POST /api/v2/workspaceagents/me/external-auth/rejected`: git was refused with the current
/// token; the next lookup validates (and refreshes) it first.
pub async fn rejected_post(
    State(state): State<AppState>,
    caller: WorkspaceCaller,
    Json(body): Json<Rejected>,
) -> Result<StatusCode, ApiError> {
    let match_url = non_empty(body.match_url);
    let provider = choose(&state, non_empty(body.id).as_deref(), match_url.as_deref())?;
    if !caller.may_use_provider(provider.id.as_str()) {
        return Err(ApiError::forbidden(format!(
            "This workspace token may not use provider {:?}.",
            provider.id.as_str()
        )));
    }
    let account = non_empty(body.account);
    let choice = links::Choice {
        account: account.as_deref(),
        url: match_url.as_deref(),
    };
    links::mark_rejected(&state, &caller.user.id, provider.id.as_str(), choice).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v2/workspaceagents/me/git-config`: what `extauth setup-git` needs to configure git
/// per host — each provider's host and whether the repository path must be sent to choose it.
pub async fn git_config_get(
    State(state): State<AppState>,
    _caller: WorkspaceCaller,
) -> Json<serde_json::Value> {
    let providers: Vec<_> = state
        .providers
        .iter()
        .filter(|p| p.regex.is_some())
        .collect();
    let hosts: Vec<Option<String>> = providers.iter().map(|p| p.git_host()).collect();
    let entries: Vec<serde_json::Value> = providers
        .iter()
        .zip(&hosts)
        .map(|(p, host)| {
            // Two providers on one host can only be told apart by path.
            let shared = host.is_some() && hosts.iter().filter(|h| *h == host).count() > 1;
            serde_json::json!({
                "id": p.id.as_str(),
                "type": p.provider_type.as_str(),
                "host": host,
                "use_http_path": shared || p.needs_http_path(),
                "display_name": p.display_name,
                "ssh_keys_url": p.ssh_keys_page(),
            })
        })
        .collect();
    Json(serde_json::json!({ "providers": entries }))
}

/// `GET /api/v2/workspaceagents/me/setup`: the calling workspace token's setup (for
/// `extauth wait-for-auth`).
pub async fn setup_get(
    State(state): State<AppState>,
    caller: WorkspaceCaller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(token) = caller.workspace_token() else {
        return Err(ApiError::forbidden(
            "Only a workspace token has a setup; this credential is not one.",
        ));
    };
    let setup = crate::workspace_setup::of_token(&state, &caller.user.id, token.clone()).await?;
    let mut body = super::api::setup_json(&state, &setup);
    // What this workspace may ask for (ids and types, never tokens): `extauth exec` and
    // `setup-cli` pick providers from it.
    body["providers"] = serde_json::json!(
        state
            .providers
            .iter()
            .filter(|p| caller.may_use_provider(p.id.as_str()))
            .map(|p| serde_json::json!({"id": p.id.as_str(), "type": p.provider_type.as_str()}))
            .collect::<Vec<_>>()
    );
    Ok(Json(body))
}
