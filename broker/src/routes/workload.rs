//! The admin API of workload identity: the trust policies in force (and why the file's latest
//! change was not taken), a dry run of a token against them, and a reload on demand.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

use super::oauth2_apps::admin;

/// `GET /api/v2/workload-policies`.
pub async fn policies_get(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<crate::workload::Summary>, ApiError> {
    admin(&caller)?;
    Ok(Json(state.workload.summary()))
}

/// `POST /api/v2/workload-policies/reload`: reads the file now rather than within two seconds.
pub async fn reload_post(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<crate::workload::Summary>, ApiError> {
    admin(&caller)?;
    if let Err(e) = state.workload.reload() {
        return Err(ApiError::bad_request(
            "The policy file is wrong; the policies in force stay.",
            e,
        ));
    }
    Ok(Json(state.workload.summary()))
}

#[derive(Deserialize)]
pub struct DryRun {
    token: String,
}

/// `POST /api/v2/workload-policies/test`: which policy would accept a workload token and why
/// the others would not. Nothing is issued and the token is not spent.
pub async fn test_post(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<DryRun>,
) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    let evaluation = state.workload.evaluate(body.token.trim()).await;
    Ok(Json(json!({
        "issuer": evaluation.issuer,
        "subject": evaluation.subject,
        "accepted": evaluation.accepted.as_ref().map(|p| p.name.clone()),
        "refusals": evaluation.refusals.iter().map(|(policy, reason)| json!({
            "policy": if policy.is_empty() { None } else { Some(policy) },
            "reason": reason.to_string(),
            "label": reason.label(),
        })).collect::<Vec<_>>(),
    })))
}
