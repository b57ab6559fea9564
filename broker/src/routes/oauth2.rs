//! The authorization server's HTTP surface: the protocol endpoints (`/oauth2/*`), the discovery
//! documents, the consent page, and the apps a user connected. Each handler reads the request,
//! calls `oauth2::…`, and answers in the protocol's shape (RFC 6749 §5.2 JSON for the token,
//! revocation and introspection endpoints; `{message, detail}` elsewhere).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{FromRequestParts, OriginalUri, Path, Query, RawForm, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, PageError};
use crate::identity::{BrowserUser, Caller, client_of};
use crate::oauth2::authorize::{self, AuthorizeRequest, Refused};
use crate::oauth2::device;
use crate::oauth2::grants::{self, ClientCredentials, TokenRequest};
use crate::oauth2::registration::{self, ClientMetadata, Registered, RegistrationError};
use crate::oauth2::{OAuthError, resources, scopes, tokens};
use crate::pages::{self, ConnectedAppsPage, ConnectedRow, ConsentPage, DeviceGrantPage};
use crate::state::AppState;
use crate::workload;

use super::browser::chrome;
use super::security_headers::ImageOrigins;

/// Present on every handler of the authorization server: with `CODER_OAUTH2_PROVIDER_ENABLE`
/// false they all answer 404, as if they did not exist (clients probe the discovery documents
/// to tell).
pub struct ProviderOn;

impl FromRequestParts<AppState> for ProviderOn {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.settings.oauth2.enabled {
            Ok(Self)
        } else {
            Err(crate::failure::Failure::OAuth2Off.into())
        }
    }
}

/// The per-address pace of `/oauth2/*`.
pub struct Paced;

impl FromRequestParts<AppState> for Paced {
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OAuthError> {
        if state.settings.oauth2.rate_limit == 0 {
            return Ok(Self);
        }
        let key = match client_of(state, parts) {
            Some(address) => format!("ip:{address}"),
            None => "ip:unknown".to_owned(),
        };
        state
            .oauth2_pace
            .admit(&key, state.settings.oauth2.rate_limit)
            .map_err(OAuthError::SlowDown)?;
        Ok(Self)
    }
}

/// A form's fields; a field given twice is refused (RFC 6749 §3.1: parameters are sent once).
fn fields(body: &[u8]) -> Result<BTreeMap<String, String>, OAuthError> {
    let mut out = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if out
            .insert(name.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(OAuthError::InvalidRequest(format!(
                "the parameter {name} is given more than once"
            )));
        }
    }
    Ok(out)
}

/// A request type (every field an optional string) from a form whose fields were checked by
/// [`fields`] (so it cannot fail).
fn typed<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> T {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// HTTP Basic client credentials (RFC 6749 §2.3.1: each part form-encoded).
fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return Ok(None);
    };
    let bad = || OAuthError::InvalidClient("malformed Basic credentials".to_owned());
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

/// Client credentials of a request, paced per client.
fn credentials(
    state: &AppState,
    headers: &HeaderMap,
    fields: &BTreeMap<String, String>,
) -> Result<ClientCredentials, OAuthError> {
    let credentials = ClientCredentials {
        basic: basic(headers)?,
        client_id: fields.get("client_id").cloned(),
        client_secret: fields.get("client_secret").cloned(),
    };
    let limit = state.settings.oauth2.rate_limit;
    if limit > 0 {
        let id = credentials
            .basic
            .as_ref()
            .map(|(id, _)| id.as_str())
            .or(credentials.client_id.as_deref())
            .unwrap_or_default();
        state
            .oauth2_pace
            .admit(&format!("client:{id}"), limit)
            .map_err(OAuthError::SlowDown)?;
    }
    Ok(credentials)
}

/// What every client-authenticated endpoint reads first: the form (each field once), the
/// client it proves to be (paced per client), and no secret in the URL.
async fn client_form(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(grants::Client, BTreeMap<String, String>), OAuthError> {
    no_secret_in_query(uri)?;
    let fields = fields(body)?;
    let credentials = credentials(state, headers, &fields)?;
    let client = grants::authenticate(state, &credentials).await?;
    Ok((client, fields))
}

/// The `token` of a revocation or introspection request.
fn token_field(fields: &BTreeMap<String, String>) -> Result<&String, OAuthError> {
    fields
        .get("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest("token is missing".to_owned()))
}

/// A secret in the URL ends up in logs and histories: refused at the endpoints that take one.
fn no_secret_in_query(uri: &axum::http::Uri) -> Result<(), OAuthError> {
    let leaked = uri.query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "client_secret")
    });
    if leaked {
        return Err(OAuthError::InvalidRequest(
            "client_secret must not be in the URL; send it in the Authorization header or the form body".to_owned(),
        ));
    }
    Ok(())
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /oauth2/tokens` (and `/oauth2/token`).
pub async fn tokens_post(
    _: ProviderOn,
    _: Paced,
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Result<Response, OAuthError> {
    no_secret_in_query(&uri)?;
    let fields = fields(&body)?;
    // The workload grants (RFC 8693, RFC 7523): the workload's signed token is the proof, no
    // client authenticates.
    let grant = fields.get("grant_type").map(String::as_str);
    if grant == Some(workload::TOKEN_EXCHANGE) || grant == Some(workload::JWT_BEARER) {
        let answer = workload::exchange(&state, &fields).await?;
        return Ok(no_store(Json(answer).into_response()));
    }
    let credentials = credentials(&state, &headers, &fields)?;
    let client = grants::authenticate(&state, &credentials).await?;
    let request: TokenRequest = typed(&body);
    let answer = match (
        request.grant_type.as_deref(),
        request.device_code.as_deref(),
    ) {
        (Some(grants::DEVICE_GRANT), Some(code)) if !code.is_empty() => {
            device::poll(&state, &client, code).await
        }
        (Some(grants::DEVICE_GRANT), _) => Err(OAuthError::InvalidRequest(
            "device_code is missing".to_owned(),
        )),
        _ => grants::exchange(&state, &client, &request).await,
    };
    if let Err(e) = &answer {
        tracing::info!(target: "extauth::audit", event = "oauth2.token", app = %client.app.id, grant = request.grant_type.as_deref().unwrap_or(""), outcome = e.code(), reason = %e, "refused a token request");
    }
    Ok(no_store(Json(answer?).into_response()))
}

#[derive(Deserialize)]
pub struct ClientQuery {
    client_id: String,
}

/// `POST /oauth2/device/authorize` (RFC 8628 §3.1).
pub async fn device_authorize_post(
    _: ProviderOn,
    _: Paced,
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Result<Response, OAuthError> {
    let (client, fields) = client_form(&state, &uri, &headers, &body).await?;
    let started = device::begin(
        &state,
        &client,
        fields.get("scope").map(String::as_str),
        fields.get("resource").map(String::as_str),
    )
    .await?;
    Ok(no_store(Json(started).into_response()))
}

#[derive(Deserialize)]
pub struct DeviceQuery {
    #[serde(default)]
    user_code: String,
}

fn device_page(state: &AppState, user: &BrowserUser) -> DeviceGrantPage {
    DeviceGrantPage {
        chrome: chrome(state, user, ""),
        app: None,
        app_icon: String::new(),
        username: user.user.username.clone(),
        user_code: String::new(),
        scopes: Vec::new(),
        problem: None,
        done: None,
    }
}

/// `GET /oauth2/device[?user_code=]`: the code entered (or to enter), and what it asks.
pub async fn device_get(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
    Query(q): Query<DeviceQuery>,
) -> Result<Response, PageError> {
    let mut page = device_page(&state, &user);
    if q.user_code.trim().is_empty() {
        return Ok(pages::render(StatusCode::OK, &page));
    }
    match device::find(&state, &q.user_code).await? {
        Some(waiting) => {
            let icons = ImageOrigins::of([waiting.app.icon.as_str()]);
            page.app = Some(waiting.app.name);
            page.app_icon = waiting.app.icon;
            page.user_code = device::shown(&waiting.grant.user_code);
            page.scopes = scopes::words(&waiting.scopes);
            Ok(with_images(pages::render(StatusCode::OK, &page), icons))
        }
        None => {
            page.user_code = q.user_code.chars().take(16).collect();
            page.problem = Some(
                "That code is unknown, used or expired. Check it, or start again on the device."
                    .to_owned(),
            );
            Ok(pages::render(StatusCode::OK, &page))
        }
    }
}

/// `POST /oauth2/device`: the user's answer.
pub async fn device_post(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    let fields = fields(&body).map_err(|e| refused_here(e.to_string()))?;
    user.check_csrf(fields.get("csrf").map(String::as_str).unwrap_or_default())?;
    let typed = fields
        .get("user_code")
        .map(String::as_str)
        .unwrap_or_default();
    let allow = fields.get("decision").map(String::as_str) == Some("allow");
    let mut page = device_page(&state, &user);
    match device::answer(&state, &user.user, &user.session, typed, allow).await? {
        Some(app) => {
            page.done = Some(if allow {
                format!("{} is connected", app.name)
            } else {
                format!("{} was denied", app.name)
            });
        }
        None => {
            page.problem = Some(
                "That code is unknown, used or expired. Check it, or start again on the device."
                    .to_owned(),
            );
        }
    }
    Ok(pages::render(StatusCode::OK, &page))
}

/// `DELETE /oauth2/tokens?client_id=`: the caller disconnects an app (Coder's route).
pub async fn tokens_delete(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ClientQuery>,
) -> Result<StatusCode, ApiError> {
    crate::oauth2::grants::disconnect(&state, &caller.user.id, &q.client_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /oauth2/revoke` (RFC 7009).
pub async fn revoke_post(
    _: ProviderOn,
    _: Paced,
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Result<Response, OAuthError> {
    let (client, fields) = client_form(&state, &uri, &headers, &body).await?;
    let token = token_field(&fields)?;
    grants::revoke(&state, &client, token).await?;
    Ok(no_store(StatusCode::OK.into_response()))
}

/// `POST /oauth2/introspect` (RFC 7662): for apps and resource servers with a secret.
pub async fn introspect_post(
    _: ProviderOn,
    _: Paced,
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Result<Response, OAuthError> {
    let (client, fields) = client_form(&state, &uri, &headers, &body).await?;
    if client.secret_id.is_none() {
        return Err(OAuthError::InvalidClient(
            "introspection needs a confidential client's credentials".to_owned(),
        ));
    }
    let token = token_field(&fields)?;
    let answer = grants::introspect(&state, token).await?;
    Ok(no_store(Json(answer).into_response()))
}

/// A 401 of a bearer-token endpoint (RFC 6750 §3).
fn invalid_token(description: &str) -> ApiError {
    ApiError {
        www_authenticate: Some(format!(
            "Bearer error=\"invalid_token\", error_description=\"{description}\""
        )),
        ..ApiError::unauthorized("Invalid or expired access token.")
    }
}

/// `GET/POST /oauth2/userinfo` (OpenID Connect Core §5.3).
pub async fn userinfo(
    _: ProviderOn,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| invalid_token("no bearer token"))?;
    let access = tokens::check(&state, token)
        .await?
        .ok_or_else(|| invalid_token("the token is invalid, expired or revoked"))?;
    if !access.scopes.contains("openid") {
        return Err(crate::failure::Failure::InsufficientScope("openid").into());
    }
    let Some(user) = tokens::user_of(&state, &access).await? else {
        return Err(invalid_token("the token acts for no user"));
    };
    Ok(no_store(
        Json(Value::Object(tokens::user_claims(&user, &access.scopes))).into_response(),
    ))
}

fn cacheable(body: Value) -> Response {
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    // Browser-based clients read these across origins.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// `GET /oauth2/jwks`.
pub async fn jwks_get(_: ProviderOn, State(state): State<AppState>) -> Response {
    cacheable(state.oauth2_keys.jwks())
}

/// The endpoints of the authorization server, by name.
pub fn endpoints(state: &AppState) -> Value {
    let issuer = tokens::issuer(state);
    json!({
        "authorization": format!("{issuer}/oauth2/authorize"),
        "token": format!("{issuer}/oauth2/tokens"),
        "device_authorization": format!("{issuer}/oauth2/device/authorize"),
        "revocation": format!("{issuer}/oauth2/revoke"),
        "introspection": format!("{issuer}/oauth2/introspect"),
        "userinfo": format!("{issuer}/oauth2/userinfo"),
        "jwks": format!("{issuer}/oauth2/jwks"),
    })
}

/// The metadata document (RFC 8414; OpenID Connect Discovery 1.0 §3).
fn metadata(state: &AppState, registration_open: bool) -> Value {
    let issuer = tokens::issuer(state);
    let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
    let mut document = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
        "token_endpoint": format!("{issuer}/oauth2/tokens"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "userinfo_endpoint": format!("{issuer}/oauth2/userinfo"),
        "jwks_uri": format!("{issuer}/oauth2/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
            grants::DEVICE_GRANT, workload::TOKEN_EXCHANGE, workload::JWT_BEARER],
        "device_authorization_endpoint": format!("{issuer}/oauth2/device/authorize"),
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": scopes::CATALOG.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": state.oauth2_keys.algorithms(),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash",
            "azp", "name", "preferred_username", "email", "email_verified"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "client_id_metadata_document_supported": state.settings.oauth2.client_metadata,
    });
    if registration_open {
        document["registration_endpoint"] = json!(format!("{issuer}/oauth2/register"));
    }
    document
}

/// `GET /.well-known/openid-configuration` and `/.well-known/oauth-authorization-server`
/// (also with a path suffix, RFC 8414 §3.1).
pub async fn metadata_get(
    _: ProviderOn,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let open = registration::enabled(&state).await?;
    Ok(cacheable(metadata(&state, open)))
}

/// The same for a path-suffixed request.
pub async fn metadata_suffixed_get(
    on: ProviderOn,
    State(state): State<AppState>,
    Path(_suffix): Path<String>,
) -> Result<Response, ApiError> {
    metadata_get(on, State(state)).await
}

/// The protected resource metadata (RFC 9728) of extauth's own API, whose resource is
/// `resource`: where its tokens come from, what scopes it knows, how to present them.
fn resource_metadata(state: &AppState, resource: String) -> Value {
    json!({
        "resource": resource,
        "authorization_servers": [tokens::issuer(state)],
        "scopes_supported": scopes::CATALOG.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": state.oauth2_keys.algorithms(),
        "resource_name": "extauth",
    })
}

/// `GET /.well-known/oauth-protected-resource`: the API as a whole (the issuer's URL).
pub async fn resource_metadata_get(_: ProviderOn, State(state): State<AppState>) -> Response {
    let resource = tokens::issuer(&state);
    cacheable(resource_metadata(&state, resource))
}

/// `GET /.well-known/oauth-protected-resource/<path>`: the resource `<issuer>/<path>`, the URL a
/// client used (RFC 9728 §3.1 forms this address from it; clients check `resource` equals it).
///
/// A registered resource whose path (or id) this is gets its own document instead: its URL,
/// its scopes, its name.
pub async fn resource_metadata_suffixed_get(
    _: ProviderOn,
    State(state): State<AppState>,
    Path(suffix): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(registered) = resources::by_metadata_path(&state, &suffix).await? {
        return Ok(cacheable(json!({
            "resource": registered.url,
            "authorization_servers": [tokens::issuer(&state)],
            "scopes_supported": registered.scopes,
            "bearer_methods_supported": ["header"],
            "resource_signing_alg_values_supported": state.oauth2_keys.algorithms(),
            "resource_name": registered.name,
        })));
    }
    let resource = format!(
        "{}/{}",
        tokens::issuer(&state),
        suffix.trim_start_matches('/')
    );
    Ok(cacheable(resource_metadata(&state, resource)))
}

/// The `WWW-Authenticate` challenge of a 401 from the API: where the client learns how to get a
/// token (RFC 9728 §5.1), and the one scope the route needs when there is one.
pub fn bearer_challenge(state: &AppState, method: &str, path: &str) -> String {
    let needed = scopes::needed_for(method, path);
    format!(
        "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource\", scope=\"{needed}\"",
        tokens::issuer(state)
    )
}

/// A 302 to `location` (clients expect 302 from the authorization endpoint).
fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut response = StatusCode::FOUND.into_response();
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => ApiError::internal("an unusable redirect location").into_response(),
    }
}

fn refused_here(message: String) -> PageError {
    PageError(ApiError::bad_request(
        "This authorization request cannot be used.",
        message,
    ))
}

/// The request's parameters, as hidden fields of the consent form.
fn echoed(request: &AuthorizeRequest) -> Vec<(String, String)> {
    let pairs = [
        ("client_id", &request.client_id),
        ("response_type", &request.response_type),
        ("redirect_uri", &request.redirect_uri),
        ("scope", &request.scope),
        ("state", &request.state),
        ("code_challenge", &request.code_challenge),
        ("code_challenge_method", &request.code_challenge_method),
        ("nonce", &request.nonce),
        ("resource", &request.resource),
    ];
    pairs
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_owned(), v)))
        .collect()
}

/// `GET /oauth2/authorize`: checks the request, then sends a visitor to sign in and back, asks a
/// signed-in user for consent, or (consent remembered) answers at once.
pub async fn authorize_get(
    _: ProviderOn,
    _: Paced,
    State(state): State<AppState>,
    user: Option<BrowserUser>,
    OriginalUri(uri): OriginalUri,
    Query(request): Query<AuthorizeRequest>,
) -> Result<Response, PageError> {
    let valid = match authorize::validate(&state, &request).await {
        Ok(valid) => valid,
        Err(Refused::Here(message)) => return Err(refused_here(message)),
        Err(Refused::Back(location)) => return Ok(found(&location)),
    };
    let Some(user) = user else {
        let back = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut login = state.settings.access_url.join("login");
        login.query_pairs_mut().append_pair("redirect", back);
        let location = login.path().to_owned() + "?" + login.query().unwrap_or_default();
        return Ok(found(&location));
    };
    if authorize::remembered(&state, &user.user, &valid).await? {
        let location = authorize::approve(&state, &user.user, &user.session, &valid).await?;
        return Ok(found(&location));
    }
    let redirect_host = url::Url::parse(&valid.redirect_uri)
        .map(|u| match u.host_str() {
            Some(host) => format!("{}://{host}", u.scheme()),
            None => format!("{}:", u.scheme()),
        })
        .unwrap_or_default();
    let icons = ImageOrigins::of([valid.app.icon.as_str()]);
    let redirect = url::Url::parse(&valid.redirect_uri).ok();
    let local_only = redirect
        .as_ref()
        .is_some_and(|u| u.scheme() == "http" && crate::oauth2::apps::loopback(u));
    let unverified = match valid.app.origin {
        crate::oauth2::apps::AppOrigin::Admin => None,
        crate::oauth2::apps::AppOrigin::Registered => Some(
            "This app registered itself: no admin of this site checked it, and its name is what it says about itself.".to_owned(),
        ),
        crate::oauth2::apps::AppOrigin::MetadataDocument => Some(format!(
            "This app is known by its own metadata document at {}: its name is what that site says, not checked by an admin here.",
            url::Url::parse(&valid.app.id)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default()
        )),
    };
    let resource = valid.audience.name.clone().zip(valid.audience.url.clone());
    Ok(with_images(
        pages::render(
            StatusCode::OK,
            &ConsentPage {
                chrome: chrome(&state, &user, ""),
                app_name: valid.app.name.clone(),
                app_icon: valid.app.icon.clone(),
                username: user.user.username.clone(),
                redirect_host,
                scopes: scopes::words(&valid.scopes),
                fields: echoed(&request),
                resource,
                unverified,
                local_only,
            },
        ),
        icons,
    ))
}

/// A page showing images from `origins` (apps' icons).
pub(super) fn with_images(mut page: Response, origins: ImageOrigins) -> Response {
    page.extensions_mut().insert(origins);
    page
}

/// `POST /oauth2/authorize`: the consent form's answer.
pub async fn authorize_post(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    let fields = fields(&body).map_err(|e| refused_here(e.to_string()))?;
    user.check_csrf(fields.get("csrf").map(String::as_str).unwrap_or_default())?;
    let request: AuthorizeRequest = typed(&body);
    let valid = match authorize::validate(&state, &request).await {
        Ok(valid) => valid,
        Err(Refused::Here(message)) => return Err(refused_here(message)),
        Err(Refused::Back(location)) => return Ok(found(&location)),
    };
    let location = match fields.get("decision").map(String::as_str) {
        Some("allow") => authorize::approve(&state, &user.user, &user.session, &valid).await?,
        _ => authorize::deny(&state, &user.user, &valid),
    };
    Ok(found(&location))
}

fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!("[year]-[month]-[day]"))
                .ok()
        })
        .unwrap_or_default()
}

async fn connected_page(
    state: &AppState,
    user: &BrowserUser,
    notice: Option<String>,
) -> Result<Response, PageError> {
    let connected = grants::connected_apps(state, &user.user.id).await?;
    let icons = ImageOrigins::of(connected.iter().map(|c| c.app.icon.as_str()));
    let apps = connected
        .into_iter()
        .map(|c| ConnectedRow {
            id: c.app.id,
            name: c.app.name,
            icon: c.app.icon,
            scopes: scopes::words(&scopes::set(&c.grant.scopes)),
            since: date(c.grant.created_at),
        })
        .collect();
    Ok(with_images(
        pages::render(
            StatusCode::OK,
            &ConnectedAppsPage {
                chrome: chrome(state, user, "connected-apps"),
                apps,
                notice,
            },
        ),
        icons,
    ))
}

/// `GET /connected-apps`.
pub async fn connected_get(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
) -> Result<Response, PageError> {
    connected_page(&state, &user, None).await
}

/// `POST /connected-apps/{id}/disconnect`.
pub async fn disconnect_post(
    _: ProviderOn,
    State(state): State<AppState>,
    user: BrowserUser,
    Path(app_id): Path<String>,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    let csrf = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    user.check_csrf(&csrf)?;
    let name = crate::oauth2::apps::find(&state, &app_id).await?.name;
    grants::disconnect(&state, &user.user.id, &app_id).await?;
    connected_page(
        &state,
        &user,
        Some(format!(
            "{name} is disconnected; its tokens no longer work."
        )),
    )
    .await
}

/// `GET /api/v2/users/{user}/oauth2-apps`: the apps the caller connected.
pub async fn connected_api_get(
    _: ProviderOn,
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if user != "me" && user != caller.user.id && user != caller.user.username {
        return Err(ApiError::forbidden(
            "Only your own connected apps can be listed.",
        ));
    }
    let apps: Vec<Value> = grants::connected_apps(&state, &caller.user.id)
        .await?
        .into_iter()
        .map(|c| {
            json!({
                "id": c.app.id, "name": c.app.name, "icon": c.app.icon,
                "scopes": c.grant.scopes, "authorized_at": c.grant.created_at,
            })
        })
        .collect();
    Ok(Json(Value::Array(apps)))
}

/// A self-registered client as RFC 7591 §3.2.1 and RFC 7592 §3 answer it.
fn registration_json(
    state: &AppState,
    app: &crate::oauth2::apps::OAuth2App,
    echo: &registration::Echo,
) -> Value {
    let mut body = json!({
        "client_id": app.id,
        "client_id_issued_at": app.created_at,
        "client_name": app.name,
        "redirect_uris": app.redirect_uris,
        "grant_types": echo.grant_types,
        "response_types": echo.response_types,
        "token_endpoint_auth_method": echo.token_endpoint_auth_method,
        "application_type": echo.application_type,
        "scope": app.default_scopes.join(" "),
        "registration_client_uri": format!("{}/oauth2/clients/{}", tokens::issuer(state), app.id),
    });
    if !app.icon.is_empty() {
        body["logo_uri"] = json!(app.icon);
    }
    if let Some(uri) = &echo.client_uri {
        body["client_uri"] = json!(uri);
    }
    if !echo.left_out.is_empty() {
        // Not in the RFC: says which redirect URIs the policy left out, and why.
        body["extauth_redirect_uris_left_out"] = json!(echo.left_out);
    }
    body
}

/// The client metadata of a registration request; a body that is not that JSON is
/// `invalid_client_metadata`.
fn client_metadata(body: &[u8]) -> Result<ClientMetadata, RegistrationError> {
    serde_json::from_slice(body).map_err(|e| {
        RegistrationError::InvalidMetadata(format!("the body is not client metadata JSON ({e})"))
    })
}

/// The registration access token of an RFC 7592 request.
fn registration_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// `POST /oauth2/register` (RFC 7591).
pub async fn register_post(
    _: ProviderOn,
    _: Paced,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, RegistrationError> {
    let metadata = client_metadata(&body)?;
    let Registered {
        app,
        client_secret,
        access_token,
        echo,
    } = registration::register(&state, &metadata).await?;
    let mut answer = registration_json(&state, &app, &echo);
    answer["registration_access_token"] = json!(access_token);
    if let Some(secret) = client_secret {
        answer["client_secret"] = json!(secret);
        answer["client_secret_expires_at"] = json!(0);
    }
    Ok(no_store(
        (StatusCode::CREATED, Json(answer)).into_response(),
    ))
}

/// `GET /oauth2/clients/{id}` (RFC 7592 §2.1).
pub async fn client_get(
    _: ProviderOn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, RegistrationError> {
    let app = registration::authorized(&state, &id, registration_token(&headers)).await?;
    let echo = registration::Echo {
        grant_types: vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
        response_types: vec!["code".to_owned()],
        token_endpoint_auth_method: match app.client_type {
            crate::oauth2::apps::ClientType::Public => "none",
            crate::oauth2::apps::ClientType::Confidential => "client_secret_basic",
        }
        .to_owned(),
        application_type: "web".to_owned(),
        client_uri: None,
        left_out: Vec::new(),
    };
    Ok(no_store(
        Json(registration_json(&state, &app, &echo)).into_response(),
    ))
}

/// `PUT /oauth2/clients/{id}` (RFC 7592 §2.2).
pub async fn client_put(
    _: ProviderOn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, RegistrationError> {
    let metadata = client_metadata(&body)?;
    let (app, echo) =
        registration::update(&state, &id, registration_token(&headers), &metadata).await?;
    Ok(no_store(
        Json(registration_json(&state, &app, &echo)).into_response(),
    ))
}

/// `DELETE /oauth2/clients/{id}` (RFC 7592 §2.3).
pub async fn client_delete(
    _: ProviderOn,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, RegistrationError> {
    registration::delete(&state, &id, registration_token(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}
