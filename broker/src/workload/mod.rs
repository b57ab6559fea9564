//! Workload identity: a pod, a CI job or a bot proves who it is with a JWT its platform signed
//! (a Kubernetes service-account token, a GitHub Actions or GitLab CI ID token, a SPIFFE
//! JWT-SVID) and exchanges it at the token endpoint (RFC 8693 token exchange, RFC 7523 JWT
//! bearer) for a short-lived extauth token limited by the trust policy it matched — or, when
//! the policy says so, for a GitHub App installation token narrowed to some repositories.
//! Nothing long-lived sits in the workload.
//!
//! `policy.rs` is the file's shape and the claim rules, `keys.rs` the issuers' keys and the
//! signature check; here are the loaded set (reloaded when the file changes, the old set kept
//! when the new one is wrong), the checks in order, replay refusal through the store (so it
//! holds across replicas), minting and the audit trail.

pub mod keys;
pub mod policy;
pub mod trust;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::clock::now;
use crate::failure::Failure;
use crate::oauth2::OAuthError;
use crate::oauth2::scopes::{self, Scopes};
use crate::random;
use crate::state::AppState;

pub use policy::{ActAs, Known, Policy};
use trust::LEEWAY;
pub use trust::{Evaluation, Policies, PolicySummary, Reason, Summary, client_id, summarize};

/// RFC 8693's grant.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 7523's grant.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// A JWT subject token (RFC 8693 §3).
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// An ID token subject token (GitHub Actions and GitLab CI call theirs that).
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// An access token: what the exchange issues, and the subject type of an extauth token
/// exchanged again for a GitHub App installation token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// How often the policy file is looked at.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Watches the policy file and takes its changes (every two seconds; a wrong file is logged
/// and the set in force stays).
pub fn watch(state: AppState) {
    if !state.workload.watched() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.tick().await;
        let mut last_error: Option<String> = None;
        loop {
            tick.tick().await;
            let workload = state.clone();
            let result = tokio::task::spawn_blocking(move || workload.workload.reload())
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match result {
                Ok(true) => {
                    last_error = None;
                    tracing::info!(
                        policies = state.workload.count(),
                        "workload policies reloaded"
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::error!(error = %e, "the workload policy file changed but is wrong; the policies in force stay");
                        last_error = Some(e);
                    }
                }
            }
        }
    });
}

/// What a policy file may name: the configured providers, those with a GitHub App key, and
/// the catalog's scopes but the identity ones (an exchanged token has no ID token).
pub fn known(providers: &extauth_providers::Providers) -> Known {
    Known {
        providers: providers.iter().map(|p| p.id.as_str().to_owned()).collect(),
        apps: providers
            .iter()
            .filter(|p| p.app_key.is_some())
            .map(|p| p.id.as_str().to_owned())
            .collect(),
        scopes: scopes::without_identity(&scopes::set(&scopes::every()))
            .into_iter()
            .collect(),
    }
}

/// A successful exchange: the token endpoint's answer (RFC 8693 §2.2.1).
#[derive(Debug, Clone, Serialize)]
pub struct Exchanged {
    pub access_token: String,
    pub issued_token_type: &'static str,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
    /// A GitHub App installation token: its provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extauth_provider: Option<String>,
    /// A GitHub App installation token: where to `DELETE` it when done (with it as bearer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extauth_revoke_url: Option<String>,
}

/// The audit and metric of one exchange.
fn record(
    policy: Option<&str>,
    evaluation: Option<&Evaluation>,
    token: &str,
    outcome: &'static str,
    reason: &str,
) {
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    let policy = policy.unwrap_or("");
    tracing::info!(
        target: "extauth::audit",
        event = "workload.exchange",
        policy,
        issuer = evaluation.and_then(|e| e.issuer.as_deref()).unwrap_or(""),
        subject = evaluation.and_then(|e| e.subject.as_deref()).unwrap_or(""),
        token_sha256 = %digest,
        outcome,
        reason,
        "workload token exchange"
    );
    let label = if policy.is_empty() { "none" } else { policy };
    metrics::counter!("extauth_workload_exchanges_total", "policy" => label.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// The token endpoint's two workload grants. `fields` is the form; no client authenticates
/// (the workload's own token is the proof).
pub async fn exchange(
    state: &AppState,
    fields: &BTreeMap<String, String>,
) -> Result<Exchanged, OAuthError> {
    let field = |name: &str| {
        fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let grant = field("grant_type").unwrap_or_default();
    let (token, token_type) = if grant == JWT_BEARER {
        let Some(assertion) = field("assertion") else {
            return Err(OAuthError::InvalidRequest(
                "assertion is missing".to_owned(),
            ));
        };
        (assertion, JWT_TYPE)
    } else {
        let Some(subject) = field("subject_token") else {
            return Err(OAuthError::InvalidRequest(
                "subject_token is missing".to_owned(),
            ));
        };
        let Some(kind) = field("subject_token_type") else {
            return Err(OAuthError::InvalidRequest(
                "subject_token_type is missing".to_owned(),
            ));
        };
        if ![JWT_TYPE, ID_TOKEN_TYPE, ACCESS_TOKEN_TYPE].contains(&kind) {
            return Err(OAuthError::InvalidRequest(format!(
                "subject_token_type {kind:?} is not taken; send {JWT_TYPE}"
            )));
        }
        if field("actor_token").is_some() {
            return Err(OAuthError::InvalidRequest(
                "actor_token (delegation) is not supported; send the workload's own token as subject_token".to_owned(),
            ));
        }
        if let Some(wanted) = field("requested_token_type") {
            if wanted != ACCESS_TOKEN_TYPE && wanted != JWT_TYPE {
                return Err(OAuthError::InvalidRequest(format!(
                    "requested_token_type {wanted:?} cannot be issued; ask for {ACCESS_TOKEN_TYPE}"
                )));
            }
        }
        (subject, kind)
    };
    if token_type == ACCESS_TOKEN_TYPE {
        return exchange_own(state, token, field("audience")).await;
    }
    if !state.workload.any() {
        return Err(OAuthError::UnsupportedGrantType(
            "workload identity is not configured here (EXTAUTH_WORKLOAD_POLICIES)".to_owned(),
        ));
    }
    let evaluation = state.workload.evaluate(token).await;
    let refused = || {
        OAuthError::InvalidGrant(
            "no trust policy accepts this token; an admin finds why in the broker's log".to_owned(),
        )
    };
    let Some(policy) = evaluation.accepted.clone() else {
        for (name, reason) in &evaluation.refusals {
            tracing::warn!(
                policy = %name,
                issuer = evaluation.issuer.as_deref().unwrap_or(""),
                subject = evaluation.subject.as_deref().unwrap_or(""),
                reason = %reason,
                "a workload token missed a trust policy"
            );
        }
        let why = evaluation
            .refusals
            .iter()
            .map(|(n, r)| {
                if n.is_empty() {
                    r.to_string()
                } else {
                    format!("{n}: {r}")
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        record(None, Some(&evaluation), token, evaluation.label(), &why);
        return Err(refused());
    };
    for (name, reason) in &evaluation.refusals {
        tracing::debug!(policy = %name, accepted = %policy.name, reason = %reason, "an earlier trust policy did not accept the token");
    }
    let fail = |outcome: &'static str, why: String, error: OAuthError| {
        record(Some(&policy.name), Some(&evaluation), token, outcome, &why);
        error
    };
    let claims = evaluation.seen.as_ref().map(|s| &s.claims);
    let claims = claims.cloned().unwrap_or_default();
    // Used once, while it lives: on every replica, since the mark is in the store.
    let issuer = evaluation.issuer.clone().unwrap_or_default();
    // Hashed: a fixed length whatever the token holds (a jti may hold anything, NUL too).
    let mut marked = Sha256::new();
    marked.update(issuer.as_bytes());
    marked.update([0]);
    match claims.get("jti").and_then(Value::as_str) {
        Some(jti) => marked.update(jti.as_bytes()),
        None => marked.update(Sha256::digest(token.as_bytes())),
    }
    let once = format!("workload:{}", hex::encode(marked.finalize()));
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .unwrap_or_else(now);
    if !state.store.use_once(&once, exp + LEEWAY, now()).await? {
        return Err(fail(
            "replayed",
            "this token was exchanged before".to_owned(),
            OAuthError::InvalidGrant(
                "this token was exchanged already; each workload token is exchanged once (a policy's lifetime should cover the workload token's)".to_owned(),
            ),
        ));
    }
    let username = match &policy.act_as {
        ActAs::User(name) => Some(name.clone()),
        ActAs::Claim(claim) => policy::claim(&claims, claim)
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    let user = match username {
        Some(name) => state.store.user_by_username(&name).await?,
        None => None,
    };
    let Some(user) = user else {
        return Err(fail(
            "no_user",
            "the extauth user the policy acts as does not exist".to_owned(),
            refused(),
        ));
    };
    let allowed = scopes::set(&policy.scopes);
    let granted = match field("scope") {
        None => allowed.clone(),
        Some(asked) => {
            let asked: Scopes = asked
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(extra) = asked.iter().find(|s| !allowed.contains(*s)) {
                return Err(fail(
                    "scope",
                    format!("scope {extra} asked beyond the policy"),
                    OAuthError::InvalidScope(format!(
                        "{extra} is beyond what this workload may have ({})",
                        scopes::join(&allowed)
                    )),
                ));
            }
            asked
        }
    };
    // `audience` naming a provider with a GitHub App: an installation token.
    if let Some(app) = policy
        .github_app
        .as_ref()
        .filter(|g| field("audience") == Some(g.provider.as_str()))
    {
        let result = installation_token(state, app).await;
        return match result {
            Ok(answer) => {
                record(
                    Some(&policy.name),
                    Some(&evaluation),
                    token,
                    "app_token",
                    "",
                );
                Ok(answer)
            }
            Err(e) => Err(fail("app_failed", e.to_string(), e)),
        };
    }
    let resource = match (field("resource"), field("audience")) {
        (Some(r), _) => Some(r),
        (None, Some(a)) if url::Url::parse(a).is_ok() => Some(a),
        (None, Some(a)) => {
            return Err(fail(
                "target",
                format!("audience {a:?} is neither a URL nor a provider with a GitHub App grant"),
                OAuthError::InvalidTarget(format!(
                    "audience {a:?} names no resource and no GitHub App this policy grants"
                )),
            ));
        }
        (None, None) => None,
    };
    let target = match crate::oauth2::resources::target_for(state, None, resource).await {
        Ok(t) => t,
        Err(e) => return Err(fail("target", e.to_string(), e)),
    };
    let (access_token, lifetime) = mint(
        state,
        &policy,
        &user.id,
        &claims,
        &granted,
        target.url.as_deref(),
    )?;
    record(Some(&policy.name), Some(&evaluation), token, "issued", "");
    Ok(Exchanged {
        access_token,
        issued_token_type: ACCESS_TOKEN_TYPE,
        token_type: "Bearer",
        expires_in: lifetime,
        scope: scopes::join(&granted),
        extauth_provider: None,
        extauth_revoke_url: None,
    })
}

/// The claims of an exchanged token: an RFC 9068 access token naming its policy (which must
/// still be in force when it is used) and the workload it acts for (`act`, RFC 8693 §4.1).
#[derive(Serialize)]
struct WorkloadClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    scope: &'a str,
    jti: &'a str,
    iat: i64,
    exp: i64,
    extauth_policy: &'a str,
    extauth_providers: &'a [String],
    act: Value,
}

fn mint(
    state: &AppState,
    policy: &Policy,
    user_id: &str,
    workload: &Map<String, Value>,
    granted: &Scopes,
    resource: Option<&str>,
) -> Result<(String, u64), Failure> {
    let issuer = crate::oauth2::tokens::issuer(state);
    let iat = now();
    let lifetime = policy.lifetime.as_secs();
    let claims = WorkloadClaims {
        iss: &issuer,
        sub: user_id,
        aud: resource.unwrap_or(&issuer),
        client_id: &client_id(&policy.name),
        scope: &scopes::join(granted),
        jti: &random::hex_token::<16>(),
        iat,
        exp: iat.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX)),
        extauth_policy: &policy.name,
        extauth_providers: &policy.providers,
        act: json!({
            "iss": workload.get("iss").cloned().unwrap_or(Value::Null),
            "sub": workload.get("sub").cloned().unwrap_or(Value::Null),
        }),
    };
    Ok((state.oauth2_keys.sign("at+jwt", &claims)?, lifetime))
}

/// An extauth token issued under a policy, exchanged again (`subject_token_type` access
/// token) for the GitHub App installation token its policy grants: a workload whose own token
/// was already used once (the credential helper exchanged it) still gets a bot token.
async fn exchange_own(
    state: &AppState,
    token: &str,
    audience: Option<&str>,
) -> Result<Exchanged, OAuthError> {
    let refused = |why: &str| OAuthError::InvalidGrant(why.to_owned());
    let Some(access) = crate::oauth2::tokens::check(state, token).await? else {
        return Err(refused("the subject token is not a valid extauth token"));
    };
    let Some(policy) = access.policy.as_deref().and_then(|p| state.workload.get(p)) else {
        return Err(refused(
            "only a token from a workload exchange may be exchanged again",
        ));
    };
    let Some(app) = policy
        .github_app
        .as_ref()
        .filter(|g| audience == Some(g.provider.as_str()))
    else {
        return Err(OAuthError::InvalidTarget(format!(
            "policy {} grants no GitHub App token for {:?}",
            policy.name,
            audience.unwrap_or("")
        )));
    };
    let result = installation_token(state, app).await;
    let outcome = if result.is_ok() {
        "app_token"
    } else {
        "app_failed"
    };
    let reason = result
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    record(Some(&policy.name), None, token, outcome, &reason);
    result
}

/// A GitHub App installation token narrowed to what `app` lists.
async fn installation_token(
    state: &AppState,
    app: &policy::AppGrant,
) -> Result<Exchanged, OAuthError> {
    let server = |why: String| OAuthError::Server(Failure::Internal(why));
    let Some(provider) = state.providers.get(&app.provider) else {
        return Err(server(format!("provider {} is gone", app.provider)));
    };
    let (Some((app_id, key_file)), Some(api)) = (&provider.app_key, &provider.api_base_url) else {
        return Err(server(format!(
            "provider {} has no GitHub App key or API URL",
            app.provider
        )));
    };
    let jwt = app_jwt(app_id, key_file).map_err(server)?;
    let installation = match (app.installation_id, &app.owner) {
        (Some(id), _) => id,
        (None, Some(owner)) => state
            .upstream
            .app_installation(provider, api, &jwt, owner)
            .await
            .map_err(|e| server(format!("GitHub App installations: {e}")))?
            .ok_or_else(|| {
                OAuthError::InvalidTarget(format!(
                    "the GitHub App of {} is not installed on {owner}",
                    app.provider
                ))
            })?,
        (None, None) => return Err(server("the policy names no installation".to_owned())),
    };
    let mut narrowed = Map::new();
    if !app.repositories.is_empty() {
        narrowed.insert("repositories".to_owned(), json!(app.repositories));
    }
    if !app.permissions.is_empty() {
        narrowed.insert("permissions".to_owned(), json!(app.permissions));
    }
    let (token, expires_at) = state
        .upstream
        .app_installation_token(provider, api, &jwt, installation, &Value::Object(narrowed))
        .await
        .map_err(|e| server(format!("GitHub App installation token: {e}")))?;
    Ok(Exchanged {
        access_token: token.secret().to_owned(),
        issued_token_type: ACCESS_TOKEN_TYPE,
        token_type: "Bearer",
        expires_in: u64::try_from(expires_at - now()).unwrap_or(0),
        scope: String::new(),
        extauth_provider: Some(app.provider.clone()),
        extauth_revoke_url: Some(crate::upstream::join_api(api, "installation/token").to_string()),
    })
}

/// A GitHub App's JWT (RS256, `iss` the app id, ten minutes at most, a minute back for
/// clock drift), signed with the private key read from its file each time (so a rotated key
/// is taken without a restart).
fn app_jwt(app_id: &str, key_file: &std::path::Path) -> Result<String, String> {
    let pem = std::fs::read_to_string(key_file).map_err(|e| {
        format!(
            "the GitHub App key {} cannot be read ({e})",
            key_file.display()
        )
    })?;
    let (label, der) = keys::pem_blocks(&pem)
        .map_err(|e| format!("{}: {e}", key_file.display()))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{} holds no PEM private key", key_file.display()))?;
    let pair = match label.as_str() {
        "RSA PRIVATE KEY" => ring::signature::RsaKeyPair::from_der(&der),
        "PRIVATE KEY" => ring::signature::RsaKeyPair::from_pkcs8(&der),
        other => {
            return Err(format!(
                "{} holds a {other}, not an RSA private key",
                key_file.display()
            ));
        }
    }
    .map_err(|e| format!("{} is not a usable RSA key ({e})", key_file.display()))?;
    let iat = now() - 60;
    let header = B64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = B64.encode(json!({"iss": app_id, "iat": iat, "exp": iat + 540}).to_string());
    let signing_input = format!("{header}.{claims}");
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "signing the GitHub App JWT failed".to_owned())?;
    Ok(format!("{signing_input}.{}", B64.encode(signature)))
}
