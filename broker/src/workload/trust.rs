//! The trust policies in force: the loaded set (reloaded when the file changes, the old set
//! kept when the new one is wrong), the checks a workload token goes through against each
//! policy of its issuer, and what the admin API shows. Kept apart from the exchange so that
//! the shared state and the token check can hold and ask it without depending on the exchange.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::clock::now;

use super::keys::{self, IssuerKeys, KeyRefusal, Unverified};
use super::policy::{self, ActAs, Known, Policy};

/// Clocks differ between the workload's platform and the broker by this much at most.
pub(crate) const LEEWAY: i64 = 30;

/// Why a workload token did not meet a policy: for the admin's log and the metric's label,
/// never for the caller (who learns only that no policy accepted it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// No policy names the token's `iss`.
    #[error("no policy trusts issuer {0:?}")]
    UnknownIssuer(String),
    /// The signature, algorithm or key.
    #[error(transparent)]
    Key(#[from] KeyRefusal),
    /// No `exp`.
    #[error("the token has no exp")]
    NoExpiry,
    /// `exp` passed.
    #[error("the token expired {0} s ago")]
    Expired(i64),
    /// `nbf` ahead.
    #[error("the token is not valid for another {0} s (nbf)")]
    NotYetValid(i64),
    /// No `iat`.
    #[error("the token has no iat, so its age is unknown")]
    NoIssuedAt,
    /// Older than the policy's `max_age`.
    #[error("the token is {age} s old; the policy takes tokens up to {max} s old")]
    TooOld {
        /// Its age.
        age: i64,
        /// The policy's limit.
        max: u64,
    },
    /// `aud` names none of the policy's audiences.
    #[error("aud is {found} and must name one of {wanted:?}")]
    Audience {
        /// What the token holds.
        found: String,
        /// What the policy takes.
        wanted: Vec<String>,
    },
    /// A claim rule.
    #[error("{0}")]
    Claim(policy::Miss),
}

impl Reason {
    /// The metric's label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnknownIssuer(_) => "unknown_issuer",
            Self::Key(k) => k.label(),
            Self::NoExpiry | Self::Expired(_) => "expired",
            Self::NotYetValid(_) => "not_yet_valid",
            Self::NoIssuedAt | Self::TooOld { .. } => "too_old",
            Self::Audience { .. } => "audience",
            Self::Claim(_) => "claim",
        }
    }
}

/// The loaded policies and their issuers' keys.
struct Loaded {
    policies: Vec<Arc<Policy>>,
    /// One key cache per (issuer, key source, CA), shared by policies and kept across reloads.
    keys: HashMap<policy::KeyId, Arc<IssuerKeys>>,
    digest: [u8; 32],
    loaded_at: i64,
}

/// The trust policies of `EXTAUTH_WORKLOAD_POLICIES`.
pub struct Policies {
    path: Option<PathBuf>,
    known: Known,
    roots: Vec<reqwest::Certificate>,
    timeout: Duration,
    loaded: RwLock<Arc<Loaded>>,
    /// Why the file's last change was not taken (the previous set stays in force).
    last_error: RwLock<Option<String>>,
}

/// What the admin API shows of the loaded set.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The file.
    pub path: Option<String>,
    /// When the set in force was read (unix).
    pub loaded_at: i64,
    /// Why the file's latest change was not taken.
    pub last_error: Option<String>,
    /// The policies in force.
    pub policies: Vec<PolicySummary>,
}

/// One policy as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    pub name: String,
    pub issuer: String,
    pub keys: String,
    pub audiences: Vec<String>,
    pub max_age_seconds: u64,
    pub claims: BTreeMap<String, String>,
    pub act_as: String,
    pub providers: Vec<String>,
    pub scopes: Vec<String>,
    pub lifetime_seconds: u64,
    pub algorithms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github_app: Option<Value>,
}

impl Policies {
    /// No policies: the exchange grants are refused.
    pub fn none() -> Self {
        Self {
            path: None,
            known: Known::default(),
            roots: Vec::new(),
            timeout: Duration::from_secs(10),
            loaded: RwLock::new(Arc::new(Loaded {
                policies: Vec::new(),
                keys: HashMap::new(),
                digest: [0; 32],
                loaded_at: now(),
            })),
            last_error: RwLock::new(None),
        }
    }

    /// Reads the policy file at `path`; a problem is the start's error, naming the policy,
    /// the field and the fix.
    pub fn load(
        path: PathBuf,
        known: Known,
        roots: Vec<reqwest::Certificate>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let policies = Self {
            path: Some(path),
            known,
            roots,
            timeout,
            ..Self::none()
        };
        policies.reload()?;
        Ok(policies)
    }

    /// Reads the file again if it changed. On a mistake the set in force stays and the
    /// mistake is kept for the admin API.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let text = std::fs::read(path).map_err(|e| {
            format!(
                "EXTAUTH_WORKLOAD_POLICIES: {} cannot be read ({e}); give the path of a readable YAML file",
                path.display()
            )
        });
        let result = text.and_then(|bytes| {
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            let current = self.current();
            if current.digest == digest {
                return Ok(false);
            }
            let text = String::from_utf8(bytes).map_err(|_| {
                format!(
                    "EXTAUTH_WORKLOAD_POLICIES: {} is not UTF-8 text",
                    path.display()
                )
            })?;
            let parsed = policy::parse(&text, &self.known)
                .map_err(|e| format!("EXTAUTH_WORKLOAD_POLICIES: {}: {e}", path.display()))?;
            let mut keys = HashMap::new();
            for p in &parsed {
                let id = p.key_id();
                if keys.contains_key(&id) {
                    continue;
                }
                let cache = match current.keys.get(&id) {
                    Some(kept) => kept.clone(),
                    None => Arc::new(IssuerKeys::new(
                        &p.issuer,
                        p.keys.clone(),
                        self.client(p).map_err(|e| {
                            format!("EXTAUTH_WORKLOAD_POLICIES: policy {:?}: {e}", p.name)
                        })?,
                    )),
                };
                keys.insert(id, cache);
            }
            let loaded = Loaded {
                policies: parsed.into_iter().map(Arc::new).collect(),
                keys,
                digest,
                loaded_at: now(),
            };
            *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
            Ok(true)
        });
        *self.last_error.write().unwrap_or_else(|e| e.into_inner()) =
            result.as_ref().err().cloned();
        result
    }

    /// The HTTP client for a policy's issuer: the broker's roots, the policy's CA file.
    fn client(&self, p: &Policy) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("extauth/", env!("CARGO_PKG_VERSION")));
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        if let Some(ca) = &p.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("ca_file {} cannot be read ({e})", ca.display()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            if roots.is_empty() {
                return Err(format!("ca_file {} holds no PEM certificate", ca.display()));
            }
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        builder.build().map_err(|e| e.to_string())
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a file is read (and so watched).
    pub fn watched(&self) -> bool {
        self.path.is_some()
    }

    /// How many policies are in force.
    pub fn count(&self) -> usize {
        self.current().policies.len()
    }

    /// Whether any policy is in force.
    pub fn any(&self) -> bool {
        !self.current().policies.is_empty()
    }

    /// The policy named `name`, if in force.
    pub fn get(&self, name: &str) -> Option<Arc<Policy>> {
        self.current()
            .policies
            .iter()
            .find(|p| p.name == name)
            .cloned()
    }

    /// The set in force, for the admin API and `config check`.
    pub fn summary(&self) -> Summary {
        let loaded = self.current();
        Summary {
            path: self.path.as_ref().map(|p| p.display().to_string()),
            loaded_at: loaded.loaded_at,
            last_error: self
                .last_error
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            policies: loaded.policies.iter().map(|p| summarize(p)).collect(),
        }
    }

    /// Checks `token` against every policy of its issuer, in the file's order: the first that
    /// accepts it, and why each one before it did not.
    pub async fn evaluate(&self, token: &str) -> Evaluation {
        let loaded = self.current();
        let seen = match keys::peek(token) {
            Ok(seen) => seen,
            Err(e) => {
                return Evaluation {
                    issuer: None,
                    subject: None,
                    accepted: None,
                    refusals: vec![(String::new(), Reason::Key(e))],
                    seen: None,
                };
            }
        };
        let issuer = seen
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let subject = seen
            .claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut evaluation = Evaluation {
            issuer: issuer.clone(),
            subject,
            accepted: None,
            refusals: Vec::new(),
            seen: None,
        };
        let candidates: Vec<&Arc<Policy>> = loaded
            .policies
            .iter()
            .filter(|p| Some(&p.issuer) == issuer.as_ref())
            .collect();
        if candidates.is_empty() {
            evaluation.refusals.push((
                String::new(),
                Reason::UnknownIssuer(issuer.unwrap_or_default()),
            ));
            return evaluation;
        }
        // One signature check per key source, whatever number of policies share it.
        let mut verified: HashMap<(policy::KeyId, &[String]), Result<(), KeyRefusal>> =
            HashMap::new();
        for policy in candidates {
            let id = (policy.key_id(), policy.algorithms.as_slice());
            let signature = match verified.get(&id) {
                Some(done) => done.clone(),
                None => {
                    let result = match loaded.keys.get(&id.0) {
                        Some(cache) => cache.verify(token, &seen, &policy.algorithms).await,
                        None => Err(KeyRefusal::Unavailable("no key cache".to_owned())),
                    };
                    verified.insert(id, result.clone());
                    result
                }
            };
            let outcome = signature
                .map_err(Reason::Key)
                .and_then(|()| check_claims(policy, &seen.claims, now()));
            match outcome {
                Ok(()) => {
                    evaluation.accepted = Some(policy.clone());
                    break;
                }
                Err(reason) => evaluation.refusals.push((policy.name.clone(), reason)),
            }
        }
        evaluation.seen = Some(seen);
        evaluation
    }
}

/// What [`Policies::evaluate`] found.
pub struct Evaluation {
    /// The token's `iss`.
    pub issuer: Option<String>,
    /// The token's `sub`.
    pub subject: Option<String>,
    /// The policy that accepted it.
    pub accepted: Option<Arc<Policy>>,
    /// Each policy that did not, and why (the policy is empty when none was tried).
    pub refusals: Vec<(String, Reason)>,
    /// The token's header and claims, once read.
    pub seen: Option<Unverified>,
}

impl Evaluation {
    /// The label of why it was refused: the reason of the last policy tried.
    pub fn label(&self) -> &'static str {
        self.refusals.last().map_or("refused", |(_, r)| r.label())
    }
}

/// The time, audience and claim checks of a token whose signature verified.
fn check_claims(policy: &Policy, claims: &Map<String, Value>, now: i64) -> Result<(), Reason> {
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    let exp = number("exp").ok_or(Reason::NoExpiry)?;
    if exp + LEEWAY <= now {
        return Err(Reason::Expired(now - exp));
    }
    if let Some(nbf) = number("nbf") {
        if nbf > now + LEEWAY {
            return Err(Reason::NotYetValid(nbf - now));
        }
    }
    let iat = number("iat").ok_or(Reason::NoIssuedAt)?;
    let max = policy.max_age.as_secs();
    let age = now - iat;
    if iat > now + LEEWAY || age > i64::try_from(max).unwrap_or(i64::MAX) + LEEWAY {
        return Err(Reason::TooOld { age, max });
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences
        .iter()
        .any(|a| policy.audiences.iter().any(|w| w == a))
    {
        return Err(Reason::Audience {
            found: claims
                .get("aud")
                .map_or_else(|| "missing".to_owned(), Value::to_string),
            wanted: policy.audiences.clone(),
        });
    }
    match policy::first_miss(policy, claims) {
        Some(miss) => Err(Reason::Claim(miss)),
        None => Ok(()),
    }
}

/// What the admin API and `config check` show of a policy.
pub fn summarize(p: &Policy) -> PolicySummary {
    PolicySummary {
        name: p.name.clone(),
        issuer: p.issuer.clone(),
        keys: match &p.keys {
            policy::KeySource::Discovery => "discovery".to_owned(),
            policy::KeySource::JwksUrl(url) => url.clone(),
            policy::KeySource::File(path) => path.display().to_string(),
        },
        audiences: p.audiences.clone(),
        max_age_seconds: p.max_age.as_secs(),
        claims: p
            .claims
            .iter()
            .map(|(c, r)| (c.clone(), r.to_string()))
            .collect(),
        act_as: match &p.act_as {
            ActAs::User(u) => format!("user {u}"),
            ActAs::Claim(c) => format!("the user named by claim {c}"),
        },
        providers: p.providers.clone(),
        scopes: p.scopes.clone(),
        lifetime_seconds: p.lifetime.as_secs(),
        algorithms: p.algorithms.clone(),
        github_app: p.github_app.as_ref().map(|g| {
            json!({
                "provider": g.provider,
                "installation_id": g.installation_id,
                "owner": g.owner,
                "repositories": g.repositories,
                "permissions": g.permissions,
            })
        }),
    }
}

/// The `client_id` of tokens issued under a policy.
pub fn client_id(policy: &str) -> String {
    format!("workload:{policy}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let known = Known {
            providers: vec!["github".into()],
            apps: vec![],
            scopes: vec!["external-auth:read".into()],
        };
        policy::parse(
            r#"
policies:
  - name: k8s
    issuer: https://kubernetes.default.svc
    jwks_url: https://kubernetes.default.svc/openid/v1/jwks
    audience: [extauth, other]
    max_age: 10m
    claims: { sub: "system:serviceaccount:dev:*" }
    act_as: ci-bot
"#,
            &known,
        )
        .unwrap()
        .remove(0)
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn time_audience_and_claims_are_checked_in_order() {
        let p = policy();
        let now = 1_000_000;
        let good = json!({"iss": "x", "sub": "system:serviceaccount:dev:sa", "aud": ["other"], "iat": now - 60, "exp": now + 600});
        assert_eq!(check_claims(&p, &claims(good.clone()), now), Ok(()));
        let mut v = good.clone();
        v["exp"] = json!(now - 31);
        assert_eq!(
            check_claims(&p, &claims(v), now).unwrap_err().label(),
            "expired"
        );
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove("exp");
        assert_eq!(check_claims(&p, &claims(v), now), Err(Reason::NoExpiry));
        let mut v = good.clone();
        v["iat"] = json!(now - 700);
        assert_eq!(
            check_claims(&p, &claims(v), now),
            Err(Reason::TooOld { age: 700, max: 600 })
        );
        let mut v = good.clone();
        v["nbf"] = json!(now + 120);
        assert_eq!(
            check_claims(&p, &claims(v), now),
            Err(Reason::NotYetValid(120))
        );
        let mut v = good.clone();
        v["aud"] = json!("extauth-staging");
        assert_eq!(
            check_claims(&p, &claims(v), now).unwrap_err().label(),
            "audience"
        );
        let mut v = good;
        v["sub"] = json!("system:serviceaccount:prod:sa");
        assert_eq!(
            check_claims(&p, &claims(v), now).unwrap_err().label(),
            "claim"
        );
    }
}
