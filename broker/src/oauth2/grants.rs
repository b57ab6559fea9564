//! The token endpoint: client authentication, the three grants (authorization code, refresh
//! token, client credentials), and what else a client does with its tokens (revoke,
//! introspect) and a user with their consents (list, disconnect).
//!
//! Refresh tokens rotate on every use. Presenting a replaced one means two parties hold the
//! family, so the whole family ends (RFC 9700 §4.14.2) — except the same request repeated
//! within a few seconds, which gets the answer it lost back. A rotation is single-flight across
//! replicas: the in-process lock, then the store's lock, then a compare-and-swap.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use extauth_providers::constant_time_eq;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::clock::{now, now_millis};
use crate::failure::Failure;
use crate::identity::hash;
use crate::random;
use crate::state::AppState;
use crate::store::{ClientType, FamilyFilter, OAuth2App, OAuth2Family, OAuth2Grant};

use super::OAuthError;
use super::authorize::pkce_shaped;
use super::resources;
use super::scopes::{self, Scopes};
use super::tokens::{self, Subject};

/// How long after a rotation the same refresh request gets the same answer again (its answer
/// was lost on the way) instead of ending the family.
const RETRY_GRACE_MS: i64 = 10_000;

/// How many replaced refresh tokens a family remembers besides the last (a replay of an older
/// one is then only an unknown token).
const MAX_EARLIER: usize = 32;

/// What binds a family's kept answer to it.
pub fn retry_purpose(family_id: &str) -> String {
    format!("oauth2-retry:{family_id}")
}

/// The form of a token request (RFC 6749 §4.1.3, §6, §4.4).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub device_code: Option<String>,
}

/// The grant type of RFC 8628 §3.4.
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How a client proves itself: HTTP Basic (`client_secret_basic`), or the form
/// (`client_secret_post`, or `none` for a public client: the id alone).
#[derive(Debug, Clone, Default)]
pub struct ClientCredentials {
    /// From `Authorization: Basic` (already form-decoded).
    pub basic: Option<(String, String)>,
    /// `client_id` of the form.
    pub client_id: Option<String>,
    /// `client_secret` of the form.
    pub client_secret: Option<String>,
}

/// A client that proved itself.
#[derive(Debug, Clone)]
pub struct Client {
    /// Its app.
    pub app: OAuth2App,
    /// The secret it used (`None` for a public client).
    pub secret_id: Option<String>,
}

/// A successful token answer (RFC 6749 §5.1; `expiry` is Coder's field).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub expiry: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    pub scope: String,
}

fn answer(
    access_token: String,
    expires_in: u64,
    refresh_token: Option<String>,
    id_token: Option<String>,
    granted: &Scopes,
) -> TokenAnswer {
    let expiry = time::OffsetDateTime::now_utc()
        + time::Duration::seconds(i64::try_from(expires_in).unwrap_or(0));
    TokenAnswer {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in,
        expiry: expiry
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        refresh_token,
        id_token,
        scope: scopes::join(granted),
    }
}

/// Authenticates a client. Unknown clients and wrong secrets are `invalid_client`, alike.
pub async fn authenticate(
    state: &AppState,
    credentials: &ClientCredentials,
) -> Result<Client, OAuthError> {
    let (client_id, secret) = match (&credentials.basic, &credentials.client_id) {
        (Some((id, secret)), form_id) => {
            if form_id.as_ref().is_some_and(|f| f != id) || credentials.client_secret.is_some() {
                return Err(OAuthError::InvalidRequest(
                    "client credentials both in the Authorization header and the form; send them once".to_owned(),
                ));
            }
            (id.clone(), Some(secret.clone()))
        }
        (None, Some(id)) => (id.clone(), credentials.client_secret.clone()),
        (None, None) => {
            return Err(OAuthError::InvalidClient(
                "no client authentication (client_id, and client_secret for a confidential client)"
                    .to_owned(),
            ));
        }
    };
    let unknown = || OAuthError::InvalidClient("unknown client or wrong client secret".to_owned());
    let Some(app) = super::client_ids::resolve(state, &client_id).await? else {
        return Err(unknown());
    };
    let secret = secret.filter(|s| !s.is_empty());
    match (app.client_type, secret) {
        (ClientType::Public, None) => Ok(Client {
            app,
            secret_id: None,
        }),
        (ClientType::Public, Some(_)) => Err(OAuthError::InvalidClient(
            "a public client has no secret; send only client_id".to_owned(),
        )),
        (ClientType::Confidential, None) => Err(OAuthError::InvalidClient(
            "this client is confidential: authenticate with its client secret".to_owned(),
        )),
        (ClientType::Confidential, Some(secret)) => {
            let presented = hash(&secret);
            let secret_id = secret
                .strip_prefix("extauth_cs_")
                .and_then(|rest| rest.split_once('_'))
                .map(|(id, _)| id)
                .unwrap_or_default();
            let Some(index) = app.secrets.iter().position(|s| {
                s.id == secret_id
                    && constant_time_eq(presented.as_bytes(), s.secret_hash.as_bytes())
            }) else {
                return Err(unknown());
            };
            let id = app.secrets[index].id.clone();
            // Recorded at most once a minute: not a write per token request.
            if app.secrets[index]
                .last_used_at
                .is_none_or(|at| at + 60 <= now())
            {
                state.store.touch_app_secret(&app.id, &id, now()).await?;
            }
            Ok(Client {
                app,
                secret_id: Some(id),
            })
        }
    }
}

/// The token endpoint's grants but the device code (`device::poll`, which issues through
/// [`issue_for_user`] here).
pub async fn exchange(
    state: &AppState,
    client: &Client,
    request: &TokenRequest,
) -> Result<TokenAnswer, OAuthError> {
    match request.grant_type.as_deref() {
        Some("authorization_code") => redeem_code(state, client, request).await,
        Some("refresh_token") => refresh(state, client, request).await,
        Some("client_credentials") => client_credentials(state, client, request).await,
        Some(other) => Err(OAuthError::UnsupportedGrantType(format!(
            "grant_type {other:?} is not supported; use authorization_code, refresh_token, client_credentials or the device code"
        ))),
        None => Err(OAuthError::InvalidRequest(
            "grant_type is missing".to_owned(),
        )),
    }
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, OAuthError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is missing")))
}

/// A requested `scope` within `ceiling` (`None`: all of it).
fn narrowed(requested: Option<&str>, ceiling: &Scopes, widen: &str) -> Result<Scopes, OAuthError> {
    let Some(text) = requested.filter(|t| !t.is_empty()) else {
        return Ok(ceiling.clone());
    };
    let asked = scopes::parse_with(text, ceiling)
        .map_err(|bad| OAuthError::InvalidScope(format!("unknown scope {bad:?}")))?;
    if let Some(extra) = asked.difference(ceiling).next() {
        return Err(OAuthError::InvalidScope(format!("{extra:?}: {widen}")));
    }
    Ok(asked)
}

/// A `resource` sent with a code or a refresh must be the authorization's (RFC 8707 §2.2).
fn same_resource(authorized: Option<&str>, asked: Option<&str>) -> Result<(), OAuthError> {
    match (authorized, asked.filter(|r| !r.is_empty())) {
        (Some(a), Some(b)) if !resources::same(a, b) => Err(OAuthError::InvalidTarget(
            "resource differs from the authorization's".to_owned(),
        )),
        (None, Some(_)) => Err(OAuthError::InvalidTarget(
            "the authorization was for no resource".to_owned(),
        )),
        _ => Ok(()),
    }
}

/// What was granted that the app may still have: its admin may have narrowed it since.
/// A resource deleted since, or taken from the app, ends what was granted for it.
pub(super) async fn still_allowed(
    state: &AppState,
    granted: &[String],
    app: &OAuth2App,
    resource: Option<&str>,
) -> Result<Scopes, OAuthError> {
    let audience = resources::still_target(state, app, resource).await?;
    let mut allowed = scopes::set(&app.scopes);
    allowed.extend(audience.scopes);
    Ok(scopes::set(granted)
        .intersection(&allowed)
        .cloned()
        .collect())
}

fn new_refresh_token(family_id: &str) -> String {
    format!("extauth_rt_{family_id}_{}", random::hex_token::<32>())
}

async fn redeem_code(
    state: &AppState,
    client: &Client,
    request: &TokenRequest,
) -> Result<TokenAnswer, OAuthError> {
    let code = required(&request.code, "code")?;
    let Some(record) = state.store.use_oauth2_code(&hash(code)).await? else {
        return Err(OAuthError::InvalidGrant(
            "unknown or expired code".to_owned(),
        ));
    };
    let app = &client.app;
    if record.used {
        // Someone else has the code: what its first use gave is ended too.
        let ended = state.store.delete_oauth2_family(&record.family_id).await?;
        tracing::warn!(target: "extauth::audit", event = "oauth2.code.reused", app = %record.app_id, user = %record.user_id, tokens_revoked = ended, "an authorization code was presented twice; its tokens are revoked");
        return Err(OAuthError::InvalidGrant(
            "the code was already used; the tokens it gave are revoked".to_owned(),
        ));
    }
    if record.app_id != app.id {
        return Err(OAuthError::InvalidGrant(
            "the code was issued to another client".to_owned(),
        ));
    }
    match request.redirect_uri.as_deref() {
        Some(uri) if uri == record.redirect_uri => {}
        Some(_) => {
            return Err(OAuthError::InvalidGrant(
                "redirect_uri differs from the authorization request's".to_owned(),
            ));
        }
        None if app.redirect_uris.first() == Some(&record.redirect_uri) => {}
        None => {
            return Err(OAuthError::InvalidRequest(
                "redirect_uri is missing".to_owned(),
            ));
        }
    }
    match (&record.challenge, request.code_verifier.as_deref()) {
        (Some(challenge), Some(verifier)) => {
            let computed = B64.encode(Sha256::digest(verifier.as_bytes()));
            if !pkce_shaped(verifier)
                || !constant_time_eq(computed.as_bytes(), challenge.as_bytes())
            {
                return Err(OAuthError::InvalidGrant(
                    "PKCE verification failed".to_owned(),
                ));
            }
        }
        (Some(_), None) => {
            return Err(OAuthError::InvalidGrant(
                "code_verifier is missing: the code was issued with a code_challenge".to_owned(),
            ));
        }
        (None, Some(_)) => {
            return Err(OAuthError::InvalidGrant(
                "code_verifier sent for a code issued without a code_challenge".to_owned(),
            ));
        }
        (None, None) if app.client_type == ClientType::Public => {
            return Err(OAuthError::InvalidGrant(
                "a public client must use PKCE".to_owned(),
            ));
        }
        (None, None) => {}
    }
    same_resource(record.resource.as_deref(), request.resource.as_deref())?;
    let granted = still_allowed(state, &record.scopes, app, record.resource.as_deref()).await?;
    let Some(user) = state.store.user(&record.user_id).await? else {
        return Err(OAuthError::InvalidGrant(
            "the user no longer exists".to_owned(),
        ));
    };
    let family = OAuth2Family {
        id: record.family_id.clone(),
        app_id: app.id.clone(),
        user_id: user.id.clone(),
        secret_id: client.secret_id.clone(),
        scopes: granted.iter().cloned().collect(),
        resource: record.resource.clone(),
        auth_time: record.auth_time,
        refresh_hash: String::new(),
        previous_hash: None,
        earlier_hashes: Vec::new(),
        rotated_ms: now_millis(),
        retry_answer: None,
        created_at: now(),
        expires_at: 0,
    };
    issue_for_user(
        state,
        client,
        &user,
        family,
        &granted,
        record.nonce.as_deref(),
        "authorization_code",
    )
    .await
}

/// The first tokens of an authorization (a code redeemed, a device approved): its family is
/// stored (with a refresh token when `offline_access` was granted), then the access token and,
/// for `openid`, the ID token are signed.
pub(super) async fn issue_for_user(
    state: &AppState,
    client: &Client,
    user: &crate::store::User,
    mut family: OAuth2Family,
    granted: &Scopes,
    nonce: Option<&str>,
    grant: &str,
) -> Result<TokenAnswer, OAuthError> {
    let settings = &state.settings.oauth2;
    let refresh = granted
        .contains("offline_access")
        .then(|| new_refresh_token(&family.id));
    let lifetime = if refresh.is_some() {
        settings.refresh_lifetime
    } else {
        settings.access_lifetime
    };
    family.refresh_hash = refresh.as_deref().map(hash).unwrap_or_default();
    family.expires_at = now().saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
    state.store.create_oauth2_family(&family).await?;
    if !client.app.granted {
        // A self-registered app that completed a grant is kept: marked once, on the record as
        // it is now (an admin may have just changed it).
        if let Some(mut app) = state.store.oauth2_app(&client.app.id).await? {
            if !app.granted {
                app.granted = true;
                state.store.put_oauth2_app(&app).await?;
            }
        }
    }
    let app_id = &client.app.id;
    let (access, expires_in) = tokens::mint_access(
        state,
        Subject::User {
            user_id: &user.id,
            family_id: &family.id,
            auth_time: family.auth_time,
        },
        app_id,
        granted,
        family.resource.as_deref(),
    )?;
    let id_token = granted
        .contains("openid")
        .then(|| {
            tokens::mint_id_token(
                state,
                user,
                app_id,
                granted,
                nonce,
                family.auth_time,
                &access,
            )
        })
        .transpose()?;
    tracing::info!(target: "extauth::audit", event = "oauth2.token", grant, app = %app_id, user = %user.id, scope = %scopes::join(granted), outcome = "issued", "issued tokens");
    Ok(answer(access, expires_in, refresh, id_token, granted))
}

/// The family id inside `extauth_rt_<id>_<secret>`.
fn family_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("extauth_rt_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some(id)
}

async fn refresh(
    state: &AppState,
    client: &Client,
    request: &TokenRequest,
) -> Result<TokenAnswer, OAuthError> {
    let token = required(&request.refresh_token, "refresh_token")?;
    let Some(family_id) = family_of(token) else {
        return Err(OAuthError::InvalidGrant("unknown refresh token".to_owned()));
    };
    // One rotation at a time per family: here, then across replicas.
    let local = state.refresh_locks.get("oauth2", family_id);
    let _held = local.lock().await;
    let lock = state
        .store
        .lock(&format!("oauth2-family:{family_id}"))
        .await?;
    let result = rotate(state, client, request, family_id, token).await;
    lock.release().await;
    result
}

/// What a rotation keeps for an identical retry.
#[derive(Serialize, Deserialize)]
struct Kept {
    scope: Option<String>,
    resource: Option<String>,
    answer: TokenAnswer,
}

async fn rotate(
    state: &AppState,
    client: &Client,
    request: &TokenRequest,
    family_id: &str,
    token: &str,
) -> Result<TokenAnswer, OAuthError> {
    let app = &client.app;
    let Some(family) = state.store.oauth2_family(family_id).await? else {
        return Err(OAuthError::InvalidGrant(
            "unknown or revoked refresh token".to_owned(),
        ));
    };
    if family.app_id != app.id {
        return Err(OAuthError::InvalidGrant(
            "the refresh token was issued to another client".to_owned(),
        ));
    }
    let presented = hash(token);
    if family.refresh_hash.is_empty()
        || !constant_time_eq(presented.as_bytes(), family.refresh_hash.as_bytes())
    {
        let retry_window = family.previous_hash.as_deref() == Some(presented.as_str())
            && now_millis() - family.rotated_ms <= RETRY_GRACE_MS;
        if retry_window {
            if let Some(kept) = &family.retry_answer {
                let kept: Kept = serde_json::from_slice(
                    &state
                        .keys
                        .open(&retry_purpose(&family.id), kept)
                        .map_err(Failure::from)?,
                )
                .map_err(|e| Failure::Internal(format!("kept answer unreadable: {e}")))?;
                if kept.scope == request.scope && kept.resource == request.resource {
                    tracing::info!(target: "extauth::audit", event = "oauth2.token", grant = "refresh_token", app = %app.id, user = %family.user_id, outcome = "retry answered again", "a refresh was retried within the grace window");
                    return Ok(kept.answer);
                }
            }
        }
        let replayed = family.previous_hash.as_deref() == Some(presented.as_str())
            || family.earlier_hashes.contains(&presented);
        if !replayed {
            return Err(OAuthError::InvalidGrant("unknown refresh token".to_owned()));
        }
        // An earlier token of the family: two parties hold it (RFC 9700 §4.14.2).
        state.store.delete_oauth2_family(&family.id).await?;
        tracing::warn!(target: "extauth::audit", event = "oauth2.family.revoked", app = %app.id, user = %family.user_id, family = %family.id, reason = "refresh token reused", "a replaced refresh token was presented; every token of its authorization is revoked");
        return Err(OAuthError::InvalidGrant(
            "the refresh token was already used; every token of this authorization is revoked"
                .to_owned(),
        ));
    }
    if family.expires_at <= now() {
        return Err(OAuthError::InvalidGrant(
            "the refresh token has expired".to_owned(),
        ));
    }
    let ceiling = still_allowed(state, &family.scopes, app, family.resource.as_deref()).await?;
    let granted = narrowed(
        request.scope.as_deref(),
        &ceiling,
        "a refresh may narrow the scope, never widen it",
    )?;
    same_resource(family.resource.as_deref(), request.resource.as_deref())?;
    let Some(user) = state.store.user(&family.user_id).await? else {
        return Err(OAuthError::InvalidGrant(
            "the user no longer exists".to_owned(),
        ));
    };
    let refresh = new_refresh_token(&family.id);
    let (access, expires_in) = tokens::mint_access(
        state,
        Subject::User {
            user_id: &user.id,
            family_id: &family.id,
            auth_time: family.auth_time,
        },
        &app.id,
        &granted,
        family.resource.as_deref(),
    )?;
    let id_token = granted
        .contains("openid")
        .then(|| {
            tokens::mint_id_token(
                state,
                &user,
                &app.id,
                &granted,
                None,
                family.auth_time,
                &access,
            )
        })
        .transpose()?;
    let answer = answer(
        access,
        expires_in,
        Some(refresh.clone()),
        id_token,
        &granted,
    );
    let kept = serde_json::to_vec(&Kept {
        scope: request.scope.clone(),
        resource: request.resource.clone(),
        answer: answer.clone(),
    })
    .map_err(|e| Failure::Internal(e.to_string()))?;
    let lifetime =
        i64::try_from(state.settings.oauth2.refresh_lifetime.as_secs()).unwrap_or(i64::MAX);
    let mut earlier_hashes = family.earlier_hashes.clone();
    earlier_hashes.extend(family.previous_hash.clone());
    let excess = earlier_hashes.len().saturating_sub(MAX_EARLIER);
    earlier_hashes.drain(..excess);
    let rotated = OAuth2Family {
        refresh_hash: hash(&refresh),
        previous_hash: Some(presented.clone()),
        earlier_hashes,
        rotated_ms: now_millis(),
        retry_answer: Some(state.keys.seal(&retry_purpose(&family.id), &kept)),
        expires_at: now().saturating_add(lifetime),
        ..family.clone()
    };
    if !state
        .store
        .replace_oauth2_family_if(&rotated, &presented)
        .await?
    {
        return Err(OAuthError::InvalidGrant(
            "the refresh token was used at the same moment elsewhere; retry".to_owned(),
        ));
    }
    tracing::info!(target: "extauth::audit", event = "oauth2.token", grant = "refresh_token", app = %app.id, user = %user.id, scope = %scopes::join(&granted), outcome = "rotated", "refreshed tokens");
    Ok(answer)
}

async fn client_credentials(
    state: &AppState,
    client: &Client,
    request: &TokenRequest,
) -> Result<TokenAnswer, OAuthError> {
    let Some(secret_id) = client
        .secret_id
        .as_deref()
        .filter(|_| client.app.client_type == ClientType::Confidential)
    else {
        return Err(OAuthError::UnauthorizedClient(
            "client_credentials is for confidential clients".to_owned(),
        ));
    };
    let audience = resources::target(state, &client.app, request.resource.as_deref()).await?;
    let mut ceiling = scopes::without_identity(&scopes::set(&client.app.scopes));
    ceiling.extend(audience.scopes.iter().cloned());
    let granted = narrowed(
        request.scope.as_deref(),
        &ceiling,
        "not among the scopes this app may use as a service",
    )?;
    if granted.is_empty() {
        return Err(OAuthError::InvalidScope(
            "the app has no API scope to use as a service; its admin can add one".to_owned(),
        ));
    }
    let (access, expires_in) = tokens::mint_access(
        state,
        Subject::Service { secret_id },
        &client.app.id,
        &granted,
        audience.url.as_deref(),
    )?;
    tracing::debug!(target: "extauth::audit", event = "oauth2.token", grant = "client_credentials", app = %client.app.id, outcome = "issued", "issued a service token");
    Ok(answer(access, expires_in, None, None, &granted))
}

/// RFC 7009: ends a refresh token's family, or an access token's. Tokens unknown or of another
/// client are ignored (the answer is the same, so nothing is learnt from it).
pub async fn revoke(state: &AppState, client: &Client, token: &str) -> Result<(), OAuthError> {
    let family_id = if let Some(id) = family_of(token) {
        let family = state.store.oauth2_family(id).await?;
        family
            .filter(|f| {
                f.app_id == client.app.id
                    && constant_time_eq(hash(token).as_bytes(), f.refresh_hash.as_bytes())
            })
            .map(|f| f.id)
    } else if tokens::looks_like_jwt(token) {
        state
            .oauth2_keys
            .verify(token)
            .ok()
            .flatten()
            .filter(|c| c["client_id"] == client.app.id.as_str())
            .and_then(|c| c["extauth_family"].as_str().map(str::to_owned))
    } else {
        None
    };
    if let Some(id) = family_id {
        if state.store.delete_oauth2_family(&id).await? {
            tracing::info!(target: "extauth::audit", event = "oauth2.family.revoked", app = %client.app.id, family = %id, reason = "revoked by the client", "a client revoked its tokens");
        }
    }
    Ok(())
}

/// RFC 7662: whether a token is active now, and its claims.
pub async fn introspect(state: &AppState, token: &str) -> Result<Value, OAuthError> {
    if let Some(id) = family_of(token) {
        let family = state.store.oauth2_family(id).await?.filter(|f| {
            !f.refresh_hash.is_empty()
                && constant_time_eq(hash(token).as_bytes(), f.refresh_hash.as_bytes())
                && f.expires_at > now()
        });
        return Ok(match family {
            Some(f) => json!({
                "active": true, "token_type": "refresh_token", "client_id": f.app_id,
                "sub": f.user_id, "scope": f.scopes.join(" "), "exp": f.expires_at,
                "iss": tokens::issuer(state),
            }),
            None => json!({"active": false}),
        });
    }
    if tokens::looks_like_jwt(token) {
        if let Some(checked) = tokens::check(state, token).await? {
            let mut claims = checked.claims;
            claims["active"] = json!(true);
            claims["token_type"] = json!("Bearer");
            if let Some(user_id) = &checked.user_id {
                if let Some(user) = state.store.user(user_id).await? {
                    claims["username"] = json!(user.username);
                }
            }
            return Ok(claims);
        }
    }
    Ok(json!({"active": false}))
}

/// An app a user has connected, for the list.
pub struct Connected {
    /// The consent.
    pub grant: OAuth2Grant,
    /// The app.
    pub app: OAuth2App,
}

/// The apps a user has connected.
pub async fn connected_apps(state: &AppState, user_id: &str) -> Result<Vec<Connected>, Failure> {
    let mut out = Vec::new();
    for grant in state.store.oauth2_grants_of_user(user_id).await? {
        if let Some(app) = state.store.oauth2_app(&grant.app_id).await? {
            out.push(Connected { grant, app });
        }
    }
    Ok(out)
}

/// The user disconnects an app: its consent and every token it holds for them end.
pub async fn disconnect(state: &AppState, user_id: &str, app_id: &str) -> Result<(), Failure> {
    if state.store.oauth2_app(app_id).await?.is_none() {
        return Err(Failure::UnknownApp(app_id.to_owned()));
    }
    let ended = state
        .store
        .delete_oauth2_families(FamilyFilter {
            app_id,
            user_id: Some(user_id),
            secret_id: None,
        })
        .await?;
    state.store.delete_oauth2_grant(user_id, app_id).await?;
    tracing::info!(target: "extauth::audit", event = "oauth2.app.disconnected", app = %app_id, user = %user_id, families = ended, "a user disconnected an app");
    Ok(())
}
