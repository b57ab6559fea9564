//! Managing the authorization server's apps: the admin API (Coder's paths and JSON, plus
//! ours) and the admin page.

use axum::Json;
use axum::extract::{Path, RawForm, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, PageError};
use crate::failure::Failure;
use crate::identity::{BrowserUser, Caller};
use crate::oauth2::apps::{self, AppInput, AppOrigin, ClientType, OAuth2App};
use crate::oauth2::registration;
use crate::oauth2::resources::{self, ResourceInput};
use crate::oauth2::{scopes, tokens};
use crate::pages::{
    self, AppRow, CreatedSecret, OAuth2AppsPage, ResourceRow, ScopeChoice, SecretRow,
};
use crate::state::AppState;

use super::browser::chrome;
use super::oauth2::{ProviderOn, endpoints, with_images};
use super::security_headers::ImageOrigins;

fn rfc3339(unix: i64) -> String {
    super::api::rfc3339(unix).unwrap_or_default()
}

pub(super) fn admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.user.is_admin {
        Ok(())
    } else {
        Err(Failure::AdminOnly.into())
    }
}

/// An app as the API shows it: Coder's fields (`callback_url` is the first redirect URI) and
/// ours.
fn app_json(state: &AppState, app: &OAuth2App) -> Value {
    json!({
        "id": app.id,
        "name": app.name,
        "icon": app.icon,
        "callback_url": app.redirect_uris.first().cloned().unwrap_or_default(),
        "redirect_uris": app.redirect_uris,
        "client_type": app.client_type,
        "scopes": app.scopes,
        "default_scopes": app.default_scopes,
        "resources": app.resources,
        "origin": app.origin,
        "created_at": rfc3339(app.created_at),
        "endpoints": endpoints(state),
    })
}

/// A create or update request: `callback_url` or `redirect_uris` (or both: the callback first).
#[derive(Debug, Deserialize)]
pub struct AppBody {
    name: String,
    #[serde(default)]
    icon: String,
    #[serde(default)]
    callback_url: Option<String>,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
    #[serde(default)]
    client_type: Option<ClientType>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    default_scopes: Option<Vec<String>>,
    #[serde(default)]
    resources: Option<Vec<String>>,
}

impl From<AppBody> for AppInput {
    fn from(body: AppBody) -> Self {
        let mut redirect_uris = body.redirect_uris.unwrap_or_default();
        if let Some(callback) = body.callback_url.filter(|c| !c.is_empty()) {
            redirect_uris.retain(|u| *u != callback);
            redirect_uris.insert(0, callback);
        }
        AppInput {
            name: body.name,
            icon: body.icon,
            redirect_uris,
            client_type: body.client_type,
            scopes: body.scopes,
            default_scopes: body.default_scopes,
            resources: body.resources,
        }
    }
}

/// `GET /api/v2/oauth2-provider/apps`.
pub async fn apps_get(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    let apps = apps::list(&state).await?;
    Ok(Json(Value::Array(
        apps.iter().map(|a| app_json(&state, a)).collect(),
    )))
}

/// `POST /api/v2/oauth2-provider/apps`.
pub async fn apps_post(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<AppBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    admin(&caller)?;
    let app = apps::create(&state, body.into()).await?;
    Ok((StatusCode::CREATED, Json(app_json(&state, &app))))
}

/// `GET /api/v2/oauth2-provider/apps/{id}`.
pub async fn app_get(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    Ok(Json(app_json(&state, &apps::find(&state, &id).await?)))
}

/// `PUT /api/v2/oauth2-provider/apps/{id}`.
pub async fn app_put(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<AppBody>,
) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    let app = apps::update(&state, &id, body.into()).await?;
    Ok(Json(app_json(&state, &app)))
}

/// `DELETE /api/v2/oauth2-provider/apps/{id}`: the app and every token issued through it.
pub async fn app_delete(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&caller)?;
    apps::delete(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v2/oauth2-provider/apps/{id}/secrets`.
pub async fn secrets_get(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    let app = apps::find(&state, &id).await?;
    Ok(Json(Value::Array(
        app.secrets
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "client_secret_truncated": s.truncated,
                    "last_used_at": s.last_used_at.map(rfc3339),
                })
            })
            .collect(),
    )))
}

/// `POST /api/v2/oauth2-provider/apps/{id}/secrets`: the secret, this once.
pub async fn secrets_post(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    admin(&caller)?;
    let new = apps::create_secret(&state, &id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": new.record.id, "client_secret_full": new.secret})),
    ))
}

/// `DELETE /api/v2/oauth2-provider/apps/{id}/secrets/{secret}`: and every token issued under it.
pub async fn secret_delete(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
    Path((id, secret)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    admin(&caller)?;
    apps::delete_secret(&state, &id, &secret).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn admin_page(user: &BrowserUser) -> Result<(), PageError> {
    if user.user.is_admin {
        Ok(())
    } else {
        Err(Failure::AdminOnly.into())
    }
}

async fn apps_page(
    state: &AppState,
    user: &BrowserUser,
    created: Option<CreatedSecret>,
) -> Result<Response, PageError> {
    apps_page_with(state, user, created, None).await
}

async fn apps_page_with(
    state: &AppState,
    user: &BrowserUser,
    created: Option<CreatedSecret>,
    problem: Option<String>,
) -> Result<Response, PageError> {
    let registered = apps::list(state).await?;
    let known = resources::list(state).await?;
    let resource_names = |ids: &[String]| -> String {
        if ids.is_empty() {
            return String::new();
        }
        ids.iter()
            .map(|id| {
                known
                    .iter()
                    .find(|r| &r.id == id)
                    .map_or_else(|| id.clone(), |r| r.name.clone())
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let resources = known
        .iter()
        .cloned()
        .map(|r| ResourceRow {
            metadata_url: resources::metadata_url(state, &r),
            scopes: r.scopes.join(" "),
            id: r.id,
            name: r.name,
            url: r.url,
        })
        .collect();
    let icons = ImageOrigins::of(registered.iter().map(|a| a.icon.as_str()));
    let apps = registered
        .into_iter()
        .map(|a| AppRow {
            confidential: a.client_type == ClientType::Confidential,
            client_type: match a.client_type {
                ClientType::Confidential => "confidential",
                ClientType::Public => "public",
            }
            .to_owned(),
            scopes: a.scopes.join(" "),
            secrets: a
                .secrets
                .iter()
                .map(|s| SecretRow {
                    id: s.id.clone(),
                    truncated: s.truncated.clone(),
                    last_used: s.last_used_at.map_or_else(|| "never".to_owned(), rfc3339),
                })
                .collect(),
            resources: resource_names(&a.resources),
            origin: match a.origin {
                AppOrigin::Admin => "",
                AppOrigin::Registered => "registered itself",
                AppOrigin::MetadataDocument => "metadata document",
            }
            .to_owned(),
            id: a.id,
            name: a.name,
            icon: a.icon,
            redirect_uris: a.redirect_uris,
        })
        .collect();
    let registration_open = registration::enabled(state).await?;
    Ok(with_images(
        pages::render(
            StatusCode::OK,
            &OAuth2AppsPage {
                chrome: chrome(state, user, "oauth2-apps"),
                apps,
                created,
                scopes: scopes::CATALOG
                    .iter()
                    .map(|(name, words)| ScopeChoice {
                        name,
                        words,
                        default: scopes::DEFAULT.contains(name),
                    })
                    .collect(),
                issuer: tokens::issuer(state),
                resources,
                registration_open,
                client_metadata: state.settings.oauth2.client_metadata,
                problem,
            },
        ),
        icons,
    ))
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// `GET /oauth2-apps`: the admin page.
pub async fn page_get(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
) -> Result<Response, PageError> {
    admin_page(&user)?;
    apps_page(&state, &user, None).await
}

/// `POST /oauth2-apps`: registers an app (and, when confidential, makes its first secret).
pub async fn page_post(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    admin_page(&user)?;
    let fields = form(&body);
    user.check_csrf(field(&fields, "csrf"))?;
    let client_type = match field(&fields, "client_type") {
        "public" => ClientType::Public,
        _ => ClientType::Confidential,
    };
    let app = apps::create(
        &state,
        AppInput {
            name: field(&fields, "name").to_owned(),
            icon: field(&fields, "icon").trim().to_owned(),
            redirect_uris: field(&fields, "redirect_uris")
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            client_type: Some(client_type),
            scopes: Some(
                fields
                    .iter()
                    .filter(|(k, _)| k == "scope")
                    .map(|(_, v)| v.clone())
                    .collect(),
            ),
            default_scopes: None,
            resources: None,
        },
    )
    .await?;
    let created = if client_type == ClientType::Confidential {
        let new = apps::create_secret(&state, &app.id).await?;
        Some(CreatedSecret {
            app_name: app.name,
            secret: new.secret,
        })
    } else {
        None
    };
    apps_page(&state, &user, created).await
}

/// `POST /oauth2-apps/{id}/secrets`.
pub async fn page_secret_post(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
    Path(id): Path<String>,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    admin_page(&user)?;
    user.check_csrf(field(&form(&body), "csrf"))?;
    let app = apps::find(&state, &id).await?;
    let new = apps::create_secret(&state, &id).await?;
    apps_page(
        &state,
        &user,
        Some(CreatedSecret {
            app_name: app.name,
            secret: new.secret,
        }),
    )
    .await
}

/// `POST /oauth2-apps/{id}/secrets/{secret}/delete`.
pub async fn page_secret_delete_post(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
    Path((id, secret)): Path<(String, String)>,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    admin_page(&user)?;
    user.check_csrf(field(&form(&body), "csrf"))?;
    apps::delete_secret(&state, &id, &secret).await?;
    apps_page(&state, &user, None).await
}

/// `POST /oauth2-apps/{id}/delete`.
pub async fn page_delete_post(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
    Path(id): Path<String>,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    admin_page(&user)?;
    user.check_csrf(field(&form(&body), "csrf"))?;
    apps::delete(&state, &id).await?;
    apps_page(&state, &user, None).await
}

/// A protected resource as the API shows it.
fn resource_json(state: &AppState, resource: &resources::ProtectedResource) -> Value {
    json!({
        "id": resource.id,
        "name": resource.name,
        "url": resource.url,
        "scopes": resource.scopes,
        "metadata_url": resources::metadata_url(state, resource),
        "created_at": rfc3339(resource.created_at),
    })
}

/// A request to register a protected resource.
#[derive(Debug, Deserialize)]
pub struct ResourceBody {
    name: String,
    url: String,
    #[serde(default)]
    scopes: Vec<String>,
}

/// `GET /api/v2/oauth2-provider/resources`.
pub async fn resources_get(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    let list = resources::list(&state).await?;
    Ok(Json(Value::Array(
        list.iter().map(|r| resource_json(&state, r)).collect(),
    )))
}

/// `POST /api/v2/oauth2-provider/resources`.
pub async fn resources_post(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<ResourceBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    admin(&caller)?;
    let resource = resources::create(
        &state,
        ResourceInput {
            name: body.name,
            url: body.url,
            scopes: body.scopes,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(resource_json(&state, &resource))))
}

/// `DELETE /api/v2/oauth2-provider/resources/{id}`.
pub async fn resource_delete(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&caller)?;
    resources::delete(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /oauth2-apps/resources`: registers a resource from the page; a refusal is said on it.
pub async fn page_resource_post(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    admin_page(&user)?;
    let fields = form(&body);
    user.check_csrf(field(&fields, "csrf"))?;
    let input = ResourceInput {
        name: field(&fields, "name").to_owned(),
        url: field(&fields, "url").trim().to_owned(),
        scopes: field(&fields, "scopes")
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    match resources::create(&state, input).await {
        Ok(_) => apps_page(&state, &user, None).await,
        Err(Failure::InvalidResource(why)) => apps_page_with(&state, &user, None, Some(why)).await,
        Err(other) => Err(other.into()),
    }
}

/// `POST /oauth2-apps/resources/{id}/delete`.
pub async fn page_resource_delete_post(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
    Path(id): Path<String>,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    admin_page(&user)?;
    user.check_csrf(field(&form(&body), "csrf"))?;
    resources::delete(&state, &id).await?;
    apps_page(&state, &user, None).await
}

/// `POST /oauth2-apps/registration`: opens or closes dynamic client registration.
pub async fn page_registration_post(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    admin_page(&user)?;
    let fields = form(&body);
    user.check_csrf(field(&fields, "csrf"))?;
    registration::set_enabled(&state, field(&fields, "open") == "true").await?;
    apps_page(&state, &user, None).await
}
