//! Access tokens (RFC 9068 JWTs) and ID tokens: minting, and the checks a request bearing one
//! goes through. A JWT verifies offline anywhere; here it is also checked against what ended
//! it early (its family revoked, its secret or app deleted), so revocation takes effect at once
//! on extauth's own API and in introspection.

use serde_json::{Map, Value, json};

use crate::clock::now;
use crate::failure::Failure;
use crate::random;
use crate::state::AppState;
use crate::store::User;

use super::scopes::{self, Scopes};
use super::signing::half_hash;

/// The issuer: the access URL without its trailing slash.
pub fn issuer(state: &AppState) -> String {
    state
        .settings
        .access_url
        .as_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned()
}

/// Whom a token acts for.
pub enum Subject<'a> {
    /// A user, through an authorization (a family of tokens).
    User {
        /// The user.
        user_id: &'a str,
        /// The family, whose end ends the token.
        family_id: &'a str,
        /// When the user signed in.
        auth_time: i64,
    },
    /// The app itself (client credentials), through one of its secrets.
    Service {
        /// The secret it authenticated with.
        secret_id: &'a str,
    },
}

/// The `sub` of a service token: never a user id.
pub fn service_subject(app_id: &str) -> String {
    format!("app:{app_id}")
}

/// The claims of an access token (RFC 9068 §2.2), with what ends it early: its family (a
/// user's authorization) or the secret it was issued under (a service).
#[derive(serde::Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    scope: &'a str,
    jti: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extauth_family: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extauth_secret: Option<&'a str>,
}

/// A signed access token and its lifetime in seconds.
pub fn mint_access(
    state: &AppState,
    subject: Subject<'_>,
    app_id: &str,
    granted: &Scopes,
    resource: Option<&str>,
) -> Result<(String, u64), Failure> {
    let lifetime = state.settings.oauth2.access_lifetime.as_secs();
    let iat = now();
    let issuer = issuer(state);
    let service;
    let (sub, auth_time, family, secret) = match subject {
        Subject::User {
            user_id,
            family_id,
            auth_time,
        } => (user_id, Some(auth_time), Some(family_id), None),
        Subject::Service { secret_id } => {
            service = service_subject(app_id);
            (service.as_str(), None, None, Some(secret_id))
        }
    };
    let claims = AccessClaims {
        iss: &issuer,
        sub,
        aud: resource.unwrap_or(&issuer),
        client_id: app_id,
        scope: &scopes::join(granted),
        jti: &random::hex_token::<16>(),
        iat,
        exp: iat.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX)),
        auth_time,
        extauth_family: family,
        extauth_secret: secret,
    };
    Ok((state.oauth2_keys.sign("at+jwt", &claims)?, lifetime))
}

/// What the scopes let an app know about `user` (userinfo, ID token).
pub fn user_claims(user: &User, granted: &Scopes) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("sub".to_owned(), json!(user.id));
    if granted.contains("profile") {
        claims.insert("preferred_username".to_owned(), json!(user.username));
        claims.insert(
            "name".to_owned(),
            json!(if user.name.is_empty() {
                &user.username
            } else {
                &user.name
            }),
        );
    }
    if granted.contains("email") && !user.email.is_empty() {
        claims.insert("email".to_owned(), json!(user.email));
        // Sign-in rules only admit verified addresses when the IdP says so; the local ones
        // are set by admins.
        claims.insert("email_verified".to_owned(), json!(true));
    }
    claims
}

/// An ID token for `user`, bound to the access token it comes with (`at_hash`).
pub fn mint_id_token(
    state: &AppState,
    user: &User,
    app_id: &str,
    granted: &Scopes,
    nonce: Option<&str>,
    auth_time: i64,
    access_token: &str,
) -> Result<String, Failure> {
    let iat = now();
    let lifetime = i64::try_from(state.settings.oauth2.access_lifetime.as_secs()).unwrap_or(3600);
    let mut claims = user_claims(user, granted);
    claims.insert("iss".to_owned(), json!(issuer(state)));
    claims.insert("aud".to_owned(), json!(app_id));
    claims.insert("azp".to_owned(), json!(app_id));
    claims.insert("iat".to_owned(), json!(iat));
    claims.insert("exp".to_owned(), json!(iat.saturating_add(lifetime)));
    claims.insert("auth_time".to_owned(), json!(auth_time));
    claims.insert("at_hash".to_owned(), json!(half_hash(access_token)));
    if let Some(nonce) = nonce {
        claims.insert("nonce".to_owned(), json!(nonce));
    }
    state.oauth2_keys.sign("JWT", &claims)
}

/// An access token that checked out.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// Every claim, for introspection.
    pub claims: Value,
    /// Its scopes.
    pub scopes: Scopes,
    /// The app it was issued to.
    pub client_id: String,
    /// The user it acts for; `None` for a service token.
    pub user_id: Option<String>,
    /// Its family (user tokens).
    pub family_id: Option<String>,
    /// Its audiences.
    pub audience: Vec<String>,
    /// The workload trust policy it was issued under (a workload exchange).
    pub policy: Option<String>,
    /// The providers whose tokens it may fetch; `None`: all the user's.
    pub providers: Option<Vec<String>>,
}

/// The user an access token acts for, if it acts for one who still exists.
pub async fn user_of(state: &AppState, access: &AccessToken) -> Result<Option<User>, Failure> {
    match &access.user_id {
        Some(id) => Ok(state.store.user(id).await?),
        None => Ok(None),
    }
}

/// Whether `token` looks like a JWT (and not one of extauth's own opaque tokens).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

/// Checks an access token: signature, issuer, expiry, type, and that nothing ended it (its
/// family, secret or app). `None` when it is not (or no longer) valid.
pub async fn check(state: &AppState, token: &str) -> Result<Option<AccessToken>, Failure> {
    let claims = match state.oauth2_keys.verify(token) {
        Ok(Some(claims)) => claims,
        Ok(None) => return Ok(None),
        Err(_unknown_kid) => {
            // Perhaps another replica rotated: read the keys again, once.
            state
                .oauth2_keys
                .load(
                    state.store.as_ref(),
                    &state.keys,
                    state.settings.oauth2.key_overlap(),
                )
                .await?;
            match state.oauth2_keys.verify(token) {
                Ok(Some(claims)) => claims,
                _ => return Ok(None),
            }
        }
    };
    let text = |name: &str| claims[name].as_str().map(str::to_owned);
    if text("iss").as_deref() != Some(issuer(state).as_str())
        || claims["exp"].as_i64().is_none_or(|exp| exp <= now())
        || claims["jti"].is_null()
    {
        return Ok(None);
    }
    let Some(client_id) = text("client_id") else {
        return Ok(None);
    };
    if let Some(policy) = text("extauth_policy") {
        return Ok(check_workload(state, &claims, client_id, &policy));
    }
    let Some(app) = state.store.oauth2_app(&client_id).await? else {
        return Ok(None);
    };
    let family_id = text("extauth_family");
    let user_id = match (&family_id, text("extauth_secret")) {
        (Some(family_id), _) => {
            let Some(family) = state.store.oauth2_family(family_id).await? else {
                return Ok(None);
            };
            if family.app_id != client_id || Some(&family.user_id) != text("sub").as_ref() {
                return Ok(None);
            }
            Some(family.user_id)
        }
        (None, Some(secret_id)) => {
            if !app.secrets.iter().any(|s| s.id == secret_id) {
                return Ok(None);
            }
            None
        }
        (None, None) => return Ok(None),
    };
    // A token for a registered resource carries that resource's scopes too: kept as they are.
    let granted = scopes_of(&claims, |_| true);
    Ok(Some(AccessToken {
        scopes: granted,
        client_id,
        user_id,
        family_id,
        audience: audiences(&claims),
        claims,
        policy: None,
        providers: None,
    }))
}

/// The token's `scope` claim, those `keep` takes.
fn scopes_of(claims: &Value, keep: impl Fn(&str) -> bool) -> Scopes {
    claims["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty() && keep(s))
        .map(str::to_owned)
        .collect()
}

fn audiences(claims: &Value) -> Vec<String> {
    match &claims["aud"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(list) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// A token from a workload exchange: its policy must still be in force (taking a policy out
/// of the file ends its tokens), and it reaches the providers both the token and the policy
/// as it is now name.
fn check_workload(
    state: &AppState,
    claims: &Value,
    client_id: String,
    policy: &str,
) -> Option<AccessToken> {
    let current = state.workload.get(policy)?;
    if client_id != crate::workload::trust::client_id(policy) {
        return None;
    }
    let user_id = claims["sub"].as_str()?.to_owned();
    let providers = claims["extauth_providers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .filter(|p| current.providers.iter().any(|c| c == p))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let granted = scopes_of(claims, |s| current.scopes.iter().any(|c| c == s));
    Some(AccessToken {
        scopes: granted,
        client_id,
        user_id: Some(user_id),
        family_id: None,
        audience: audiences(claims),
        claims: claims.clone(),
        policy: Some(policy.to_owned()),
        providers: Some(providers),
    })
}
