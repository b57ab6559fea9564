//! The device authorization grant (RFC 8628), for apps with no browser of their own (CLIs on a
//! server, TVs, an SSH session): the app shows a short code, the user enters it on a page of
//! this site and answers, the app polls the token endpoint. The pace of the polling is kept in
//! the store, so a poll reaching any replica is paced the same.

use crate::clock::{now, now_millis};
use crate::failure::Failure;
use crate::identity::hash;
use crate::random;
use crate::state::AppState;
use crate::store::{
    DeviceDecision, DeviceGrant, OAuth2App, OAuth2Family, Session, StoreError, User,
};

use super::OAuthError;
use super::grants::{Client, TokenAnswer, issue_for_user, still_allowed};
use super::resources;
use super::scopes::{self, Scopes};

/// How long a user has to answer.
const LIFETIME_MS: i64 = 600_000;
/// The polling interval asked for, and what `slow_down` adds to it (RFC 8628 §3.5).
const INTERVAL_MS: i64 = 5_000;
const SLOW_DOWN_MS: i64 = 5_000;
/// Letters that cannot be mistaken for one another (no vowels: no words either).
const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// What the device shows and polls with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceAnswer {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// `XXXX-XXXX`, as shown.
pub fn shown(user_code: &str) -> String {
    if user_code.len() == 8 {
        format!("{}-{}", &user_code[..4], &user_code[4..])
    } else {
        user_code.to_owned()
    }
}

/// A user code as typed (any case, dashes and spaces) in its stored form.
pub fn normalized(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn new_user_code() -> String {
    random::bytes::<8>()
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// `POST /oauth2/device/authorize`: starts a device authorization for `client`.
pub async fn begin(
    state: &AppState,
    client: &Client,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Result<DeviceAnswer, OAuthError> {
    let app = &client.app;
    let audience = resources::target(state, app, resource).await?;
    let mut allowed = scopes::set(&app.scopes);
    allowed.extend(audience.scopes.iter().cloned());
    let requested = match scope.filter(|s| !s.is_empty()) {
        None => {
            let mut defaults = scopes::set(&app.default_scopes);
            defaults.extend(audience.scopes.iter().cloned());
            defaults
        }
        Some(text) => scopes::parse_with(text, &audience.scopes)
            .map_err(|bad| OAuthError::InvalidScope(format!("unknown scope {bad:?}")))?,
    };
    if let Some(bad) = requested.difference(&allowed).next() {
        return Err(OAuthError::InvalidScope(format!(
            "this app may not ask for {bad:?}"
        )));
    }
    let requested = super::authorize::with_offline_access(requested, app, &audience);
    let resource = audience.url.as_deref();
    let device_code = format!("extauth_dc_{}", random::hex_token::<32>());
    // A clash of user codes among the few running ones is rare; try again then.
    for _ in 0..5 {
        let grant = DeviceGrant {
            code_hash: hash(&device_code),
            user_code: new_user_code(),
            app_id: app.id.clone(),
            scopes: requested.iter().cloned().collect(),
            resource: resource.map(str::to_owned),
            user_id: None,
            auth_time: 0,
            decision: DeviceDecision::Pending,
            interval_ms: INTERVAL_MS,
            next_poll_ms: 0,
            expires_ms: now_millis().saturating_add(LIFETIME_MS),
        };
        match state.store.put_device_grant(&grant).await {
            Ok(()) => {
                let page = state.settings.access_url.join("oauth2/device");
                let mut complete = page.clone();
                complete
                    .query_pairs_mut()
                    .append_pair("user_code", &shown(&grant.user_code));
                tracing::info!(target: "extauth::audit", event = "oauth2.device.started", app = %app.id, "a device authorization started");
                return Ok(DeviceAnswer {
                    device_code,
                    user_code: shown(&grant.user_code),
                    verification_uri: page.to_string(),
                    verification_uri_complete: complete.to_string(),
                    expires_in: LIFETIME_MS / 1000,
                    interval: INTERVAL_MS / 1000,
                });
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Failure::Internal("no free user code".to_owned()).into())
}

/// A device authorization waiting for the user's answer, for the page.
pub struct Waiting {
    /// Its grant.
    pub grant: DeviceGrant,
    /// The app asking.
    pub app: OAuth2App,
    /// What it asks for.
    pub scopes: Scopes,
}

/// The pending authorization a typed user code names, if any.
pub async fn find(state: &AppState, typed: &str) -> Result<Option<Waiting>, Failure> {
    let code = normalized(typed);
    if code.len() != 8 {
        return Ok(None);
    }
    let Some(grant) = state.store.device_grant_by_user_code(&code).await? else {
        return Ok(None);
    };
    if grant.decision != DeviceDecision::Pending {
        return Ok(None);
    }
    let Some(app) = state.store.oauth2_app(&grant.app_id).await? else {
        return Ok(None);
    };
    Ok(Some(Waiting {
        scopes: scopes::set(&grant.scopes),
        grant,
        app,
    }))
}

/// The user answers on the page; whether the answer was taken (the code may have expired or
/// been answered meanwhile).
pub async fn answer(
    state: &AppState,
    user: &User,
    session: &Session,
    typed: &str,
    allow: bool,
) -> Result<Option<OAuth2App>, Failure> {
    let Some(waiting) = find(state, typed).await? else {
        return Ok(None);
    };
    let grant = &waiting.grant;
    let answered = DeviceGrant {
        decision: if allow {
            DeviceDecision::Approved
        } else {
            DeviceDecision::Denied
        },
        user_id: Some(user.id.clone()),
        auth_time: session.created_at,
        ..grant.clone()
    };
    // A poll may move `next_poll_ms` at the same moment: read again and retry a few times.
    let mut expected = (grant.decision, grant.next_poll_ms);
    for _ in 0..5 {
        if state
            .store
            .replace_device_grant_if(&answered_at(&answered, expected.1), expected)
            .await?
        {
            tracing::info!(target: "extauth::audit", event = "oauth2.device.answered", app = %grant.app_id, user = %user.id, outcome = if allow { "allowed" } else { "denied" }, "a user answered a device authorization");
            return Ok(Some(waiting.app));
        }
        match state.store.device_grant(&grant.code_hash).await? {
            Some(now) if now.decision == DeviceDecision::Pending => {
                expected = (now.decision, now.next_poll_ms);
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
}

fn answered_at(answered: &DeviceGrant, next_poll_ms: i64) -> DeviceGrant {
    DeviceGrant {
        next_poll_ms,
        ..answered.clone()
    }
}

/// The token endpoint's `urn:ietf:params:oauth:grant-type:device_code`.
pub async fn poll(
    state: &AppState,
    client: &Client,
    device_code: &str,
) -> Result<TokenAnswer, OAuthError> {
    let Some(grant) = state.store.device_grant(&hash(device_code)).await? else {
        return Err(OAuthError::ExpiredToken);
    };
    if grant.app_id != client.app.id {
        return Err(OAuthError::InvalidGrant(
            "the device code was issued to another client".to_owned(),
        ));
    }
    let at = now_millis();
    match grant.decision {
        DeviceDecision::Pending => {
            // Too early: slower from now on. In time: the next slot is booked. Either way the
            // store decides, so two replicas answering polls agree.
            let too_early = at < grant.next_poll_ms;
            let interval = if too_early {
                grant.interval_ms + SLOW_DOWN_MS
            } else {
                grant.interval_ms
            };
            let next = DeviceGrant {
                interval_ms: interval,
                next_poll_ms: at + interval,
                ..grant.clone()
            };
            let booked = state
                .store
                .replace_device_grant_if(&next, (grant.decision, grant.next_poll_ms))
                .await?;
            if too_early || !booked {
                Err(OAuthError::PollTooFast)
            } else {
                Err(OAuthError::AuthorizationPending)
            }
        }
        DeviceDecision::Denied => Err(OAuthError::AccessDenied),
        DeviceDecision::Redeemed => Err(OAuthError::InvalidGrant(
            "the device code was already used".to_owned(),
        )),
        DeviceDecision::Approved => {
            let redeemed = DeviceGrant {
                decision: DeviceDecision::Redeemed,
                ..grant.clone()
            };
            if !state
                .store
                .replace_device_grant_if(&redeemed, (grant.decision, grant.next_poll_ms))
                .await?
            {
                return Err(OAuthError::InvalidGrant(
                    "the device code was already used".to_owned(),
                ));
            }
            let Some(user_id) = &grant.user_id else {
                return Err(
                    Failure::Internal("an approved grant without a user".to_owned()).into(),
                );
            };
            let Some(user) = state.store.user(user_id).await? else {
                return Err(OAuthError::InvalidGrant(
                    "the user no longer exists".to_owned(),
                ));
            };
            let granted =
                still_allowed(state, &grant.scopes, &client.app, grant.resource.as_deref()).await?;
            let family = OAuth2Family {
                id: random::hex_token::<16>(),
                app_id: client.app.id.clone(),
                user_id: user.id.clone(),
                secret_id: client.secret_id.clone(),
                scopes: granted.iter().cloned().collect(),
                resource: grant.resource.clone(),
                auth_time: grant.auth_time,
                refresh_hash: String::new(),
                previous_hash: None,
                earlier_hashes: Vec::new(),
                rotated_ms: at,
                retry_answer: None,
                created_at: now(),
                expires_at: 0,
            };
            issue_for_user(state, client, &user, family, &granted, None, "device_code").await
        }
    }
}
