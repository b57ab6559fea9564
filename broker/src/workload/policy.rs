//! Trust policies (`EXTAUTH_WORKLOAD_POLICIES`): the file's shape, validated once into
//! [`Policy`], and the rules a workload's claims must meet. Pure: no I/O but reading the file
//! named, no clock.
//!
//! A policy without a claim rule would trust every workload its issuer vouches for — for
//! GitHub Actions, every repository on GitHub — so one is required. Globs are strict by
//! default: `*` stops at `/` and `:` (the separators of `sub` in Kubernetes and GitHub
//! Actions), `**` crosses them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// The algorithms a workload token may be signed with: asymmetric only (no `none`, no HMAC —
/// an HMAC "verified" with a public key is a forgery anyone can make).
pub const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// The longest an exchanged token may live.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The file: `policies:` and nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    policies: Vec<RawPolicy>,
}

/// One policy as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    issuer: String,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    keys_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    audience: OneOrMany,
    #[serde(default)]
    max_age: Option<String>,
    #[serde(default)]
    claims: BTreeMap<String, RawRule>,
    #[serde(default)]
    act_as: Option<String>,
    #[serde(default)]
    act_as_claim: Option<String>,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    lifetime: Option<String>,
    #[serde(default)]
    algorithms: Option<Vec<String>>,
    #[serde(default)]
    github_app: Option<RawAppGrant>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A claim rule as written: a glob, a list (any of), or `{regex|exact|glob: …}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRule {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
    Any(Vec<RawRule>),
    Form(RawForm),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForm {
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    glob: Option<String>,
}

/// `github_app:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppGrant {
    provider: String,
    #[serde(default)]
    installation_id: Option<u64>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default)]
    permissions: BTreeMap<String, String>,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// `<issuer>/.well-known/openid-configuration` → `jwks_uri`.
    Discovery,
    /// A JWKS URL.
    JwksUrl(String),
    /// A file: a JWKS document, or PEM public keys.
    File(PathBuf),
}

/// What identifies one cache of an issuer's keys: the issuer, where its keys come from, the CA.
pub type KeyId = (String, KeySource, Option<PathBuf>);

/// How a claim must look.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Equal.
    Exact(String),
    /// A glob, kept as written and compiled.
    Glob(String, regex::Regex),
    /// A regular expression, anchored at both ends.
    Regex(String, regex::Regex),
    /// Any of these.
    Any(Vec<Rule>),
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Exact(v) => write!(f, "{v:?}"),
            Rule::Glob(g, _) => write!(f, "glob {g:?}"),
            Rule::Regex(r, _) => write!(f, "regex {r:?}"),
            Rule::Any(rules) => {
                f.write_str("any of [")?;
                for (i, r) in rules.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{r}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl Rule {
    fn matches_text(&self, value: &str) -> bool {
        match self {
            Rule::Exact(v) => v == value,
            Rule::Glob(_, re) | Rule::Regex(_, re) => re.is_match(value),
            Rule::Any(rules) => rules.iter().any(|r| r.matches_text(value)),
        }
    }

    /// Whether a claim's value meets the rule: a string as it is, a number or boolean as
    /// written, a list when any of its items does.
    pub fn matches(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => self.matches_text(s),
            Value::Number(n) => self.matches_text(&n.to_string()),
            Value::Bool(b) => self.matches_text(if *b { "true" } else { "false" }),
            Value::Array(items) => items.iter().any(|v| self.matches(v)),
            Value::Null | Value::Object(_) => false,
        }
    }
}

/// Who the exchanged token acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActAs {
    /// This extauth username.
    User(String),
    /// The extauth username the named claim holds.
    Claim(String),
}

/// A GitHub App installation token a policy grants, narrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppGrant {
    /// The provider (with `APP_ID` and `APP_PRIVATE_KEY_FILE`).
    pub provider: String,
    /// The installation, when fixed.
    pub installation_id: Option<u64>,
    /// Or the account it is installed on.
    pub owner: Option<String>,
    /// Only these repositories (names without the owner); empty: all the installation has.
    pub repositories: Vec<String>,
    /// Only these permissions (`contents: read`); empty: all the installation has.
    pub permissions: BTreeMap<String, String>,
}

/// A validated trust policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its name (audit, metrics).
    pub name: String,
    /// The `iss` a token must carry, compared exactly.
    pub issuer: String,
    /// Where the issuer's keys come from.
    pub keys: KeySource,
    /// More CA certificates for the issuer's HTTPS.
    pub ca_file: Option<PathBuf>,
    /// A token's `aud` must name one of these.
    pub audiences: Vec<String>,
    /// How old (`iat`) a token may be.
    pub max_age: Duration,
    /// Claim rules, all of which must hold, by claim path.
    pub claims: Vec<(String, Rule)>,
    /// Who the exchanged token acts for.
    pub act_as: ActAs,
    /// The providers whose tokens the exchanged token may fetch (empty: none).
    pub providers: Vec<String>,
    /// Its scopes (the most a request may ask for).
    pub scopes: Vec<String>,
    /// Its lifetime.
    pub lifetime: Duration,
    /// Allowed signing algorithms.
    pub algorithms: Vec<String>,
    /// A GitHub App installation token this policy may grant.
    pub github_app: Option<AppGrant>,
}

impl Policy {
    /// Whether the issuer's keys come from the same place as `other`'s (one cache for both).
    pub fn key_id(&self) -> KeyId {
        (self.issuer.clone(), self.keys.clone(), self.ca_file.clone())
    }
}

/// What the rest of the broker must know to validate a policy: the providers configured, and
/// which of them can mint GitHub App installation tokens.
#[derive(Debug, Default, Clone)]
pub struct Known {
    /// Provider ids.
    pub providers: Vec<String>,
    /// Provider ids with an app id and private key.
    pub apps: Vec<String>,
    /// Scope names an exchanged token may carry.
    pub scopes: Vec<String>,
}

/// Reads and validates a policy file; every problem is listed, each naming the policy and the
/// field, with the fix.
pub fn load(path: &Path, known: &Known) -> Result<Vec<Policy>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "EXTAUTH_WORKLOAD_POLICIES: {} cannot be read ({e}); give the path of a readable YAML file",
            path.display()
        )
    })?;
    parse(&text, known).map_err(|e| format!("EXTAUTH_WORKLOAD_POLICIES: {}: {e}", path.display()))
}

/// Parses and validates a policy document (YAML, so JSON too).
pub fn parse(text: &str, known: &Known) -> Result<Vec<Policy>, String> {
    let file: File = serde_norway::from_str(text).map_err(|e| {
        format!(
            "not a policy file ({e}); see the README's \"Workload identity\" section for its shape"
        )
    })?;
    let mut errors = Vec::new();
    let mut policies = Vec::new();
    for (i, raw) in file.policies.into_iter().enumerate() {
        let label = if raw.name.trim().is_empty() {
            format!("policy #{}", i + 1)
        } else {
            format!("policy {:?}", raw.name)
        };
        match validate(raw, known) {
            Ok(p) => {
                if policies.iter().any(|q: &Policy| q.name == p.name) {
                    errors.push(format!(
                        "{label}: the name is used twice; give each policy its own name"
                    ));
                }
                policies.push(p);
            }
            Err(problems) => {
                errors.extend(problems.into_iter().map(|p| format!("{label}: {p}")));
            }
        }
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(errors.join("; "))
    }
}

fn duration(
    field: &str,
    value: Option<&str>,
    default: Duration,
    errors: &mut Vec<String>,
) -> Duration {
    match value {
        None => default,
        Some(text) => match crate::settings::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                errors.push(format!(
                    "{field}: {text:?} is not a duration longer than 0; write e.g. 15m or 1h"
                ));
                default
            }
        },
    }
}

fn validate(raw: RawPolicy, known: &Known) -> Result<Policy, Vec<String>> {
    let mut errors = Vec::new();
    let name = raw.name.trim().to_owned();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        errors.push(format!(
            "name: {:?} must be letters, digits, '-', '_' or '.'",
            raw.name
        ));
    }
    let issuer = raw.issuer.trim().to_owned();
    match url::Url::parse(&issuer) {
        Ok(u) if u.scheme() == "https" => {}
        Ok(u) if u.scheme() == "http" && crate::oauth2::redirect_policy::loopback(&u) => {}
        _ => errors.push(format!(
            "issuer: {issuer:?} must be the https:// URL the tokens' iss claim holds (http only on loopback)"
        )),
    }
    let keys = match (raw.jwks_url, raw.keys_file) {
        (None, None) => KeySource::Discovery,
        (Some(url), None) => {
            if url::Url::parse(&url).is_err() {
                errors.push(format!("jwks_url: {url:?} is not a URL"));
            }
            KeySource::JwksUrl(url)
        }
        (None, Some(path)) => {
            if !path.is_file() {
                errors.push(format!(
                    "keys_file: {} is not a readable file; give a JWKS document or PEM public keys",
                    path.display()
                ));
            }
            KeySource::File(path)
        }
        (Some(_), Some(_)) => {
            errors.push(
                "jwks_url and keys_file are both set; keep one (or neither, for discovery)"
                    .to_owned(),
            );
            KeySource::Discovery
        }
    };
    if let Some(ca) = &raw.ca_file {
        if !ca.is_file() {
            errors.push(format!(
                "ca_file: {} is not a readable file; give the issuer's CA certificate (PEM)",
                ca.display()
            ));
        }
    }
    let audiences: Vec<String> = match raw.audience {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(list) => list,
    }
    .into_iter()
    .map(|a| a.trim().to_owned())
    .filter(|a| !a.is_empty())
    .collect();
    if audiences.is_empty() {
        errors.push(
            "audience: required; the aud the workload's tokens are issued for (e.g. extauth)"
                .to_owned(),
        );
    }
    let max_age = duration(
        "max_age",
        raw.max_age.as_deref(),
        Duration::from_secs(3600),
        &mut errors,
    );
    let lifetime = duration(
        "lifetime",
        raw.lifetime.as_deref(),
        Duration::from_secs(900),
        &mut errors,
    );
    if lifetime > MAX_LIFETIME {
        errors.push(
            "lifetime: at most 24h; the workload exchanges its token again when it runs out"
                .to_owned(),
        );
    }
    let mut claims = Vec::new();
    for (claim, rule) in raw.claims {
        match rule_of(rule) {
            Ok(rule) => claims.push((claim, rule)),
            Err(e) => errors.push(format!("claims.{claim}: {e}")),
        }
    }
    if claims.is_empty() {
        errors.push(
            "claims: at least one rule is required (e.g. sub: \"system:serviceaccount:ns:sa\"); without one the policy trusts every workload of its issuer".to_owned(),
        );
    }
    let act_as = match (raw.act_as, raw.act_as_claim) {
        (Some(user), None) if !user.trim().is_empty() => ActAs::User(user.trim().to_owned()),
        (None, Some(claim)) if !claim.trim().is_empty() => ActAs::Claim(claim.trim().to_owned()),
        _ => {
            errors.push(
                "act_as or act_as_claim: exactly one is required (the extauth username the token acts for, or the claim that holds it)".to_owned(),
            );
            ActAs::User(String::new())
        }
    };
    for provider in &raw.providers {
        if !known.providers.contains(provider) {
            errors.push(format!(
                "providers: {provider:?} is not a configured provider; known: {}",
                list(&known.providers)
            ));
        }
    }
    let scopes = raw
        .scopes
        .unwrap_or_else(|| vec!["external-auth:read".to_owned()]);
    for scope in &scopes {
        if !known.scopes.contains(scope) {
            errors.push(format!(
                "scopes: {scope:?} is not a scope an exchanged token may carry; known: {}",
                list(&known.scopes)
            ));
        }
    }
    let algorithms = raw
        .algorithms
        .unwrap_or_else(|| ALGORITHMS.iter().map(|a| (*a).to_owned()).collect());
    for alg in &algorithms {
        if !ALGORITHMS.contains(&alg.as_str()) {
            errors.push(format!(
                "algorithms: {alg:?} is not allowed; choose from {}",
                ALGORITHMS.join(", ")
            ));
        }
    }
    let github_app = raw.github_app.map(|g| {
        if !known.apps.contains(&g.provider) {
            errors.push(format!(
                "github_app.provider: {:?} is not a provider with CODER_EXTERNAL_AUTH_<N>_APP_ID and _APP_PRIVATE_KEY_FILE; known: {}",
                g.provider,
                list(&known.apps)
            ));
        }
        if g.installation_id.is_none() == g.owner.is_none() {
            errors.push(
                "github_app: give installation_id or owner (the account the app is installed on), one of them".to_owned(),
            );
        }
        for r in &g.repositories {
            if r.is_empty() || r.contains('/') {
                errors.push(format!(
                    "github_app.repositories: {r:?} must be a repository name without its owner"
                ));
            }
        }
        for (permission, level) in &g.permissions {
            if !["read", "write", "admin"].contains(&level.as_str()) {
                errors.push(format!(
                    "github_app.permissions.{permission}: {level:?} must be read, write or admin"
                ));
            }
        }
        AppGrant {
            provider: g.provider,
            installation_id: g.installation_id,
            owner: g.owner,
            repositories: g.repositories,
            permissions: g.permissions,
        }
    });
    if errors.is_empty() {
        Ok(Policy {
            name,
            issuer,
            keys,
            ca_file: raw.ca_file,
            audiences,
            max_age,
            claims,
            act_as,
            providers: raw.providers,
            scopes,
            lifetime,
            algorithms,
            github_app,
        })
    } else {
        Err(errors)
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn rule_of(raw: RawRule) -> Result<Rule, String> {
    Ok(match raw {
        RawRule::Text(text) => glob(&text)?,
        RawRule::Number(n) => Rule::Exact(n.to_string()),
        RawRule::Bool(b) => Rule::Exact(b.to_string()),
        RawRule::Any(rules) => {
            if rules.is_empty() {
                return Err("an empty list matches nothing; give at least one value".to_owned());
            }
            Rule::Any(rules.into_iter().map(rule_of).collect::<Result<_, _>>()?)
        }
        RawRule::Form(form) => match (form.regex, form.exact, form.glob) {
            (Some(re), None, None) => {
                let compiled = regex::Regex::new(&format!("^(?:{re})$"))
                    .map_err(|e| format!("regex {re:?} does not compile ({e})"))?;
                Rule::Regex(re, compiled)
            }
            (None, Some(exact), None) => Rule::Exact(exact),
            (None, None, Some(g)) => glob(&g)?,
            _ => return Err("write one of regex:, exact: or glob:".to_owned()),
        },
    })
}

/// A glob: `*` any run within one `/`- or `:`-separated part, `**` anything, `?` one
/// character; no wildcard, an exact match.
fn glob(text: &str) -> Result<Rule, String> {
    if !text.contains(['*', '?']) {
        return Ok(Rule::Exact(text.to_owned()));
    }
    let mut pattern = String::from("^");
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                pattern.push_str(".*");
            }
            '*' => pattern.push_str("[^/:]*"),
            '?' => pattern.push_str("[^/:]"),
            other => pattern.push_str(&regex::escape(&other.to_string())),
        }
    }
    pattern.push('$');
    let compiled = regex::Regex::new(&pattern).map_err(|e| format!("glob {text:?}: {e}"))?;
    Ok(Rule::Glob(text.to_owned(), compiled))
}

/// A claim by its path: the whole name first, then split at dots, longest key first, so
/// `kubernetes.io.namespace` finds `{"kubernetes.io": {"namespace": …}}`.
pub fn claim<'a>(claims: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let dots: Vec<usize> = path.match_indices('.').map(|(i, _)| i).collect();
    for &i in dots.iter().rev() {
        let (head, rest) = (&path[..i], &path[i + 1..]);
        if let Some(Value::Object(inner)) = claims.get(head) {
            if let Some(v) = claim(inner, rest) {
                return Some(v);
            }
        }
    }
    None
}

/// Why a token's claims miss a policy's rules (for the admin's log; no secret in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    /// The claim.
    pub claim: String,
    /// The rule, as written.
    pub rule: String,
    /// What the token holds there, shortened.
    pub found: Option<String>,
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.found {
            Some(found) => write!(
                f,
                "claim {} is {found} and must match {}",
                self.claim, self.rule
            ),
            None => write!(
                f,
                "claim {} is missing and must match {}",
                self.claim, self.rule
            ),
        }
    }
}

/// The first rule of `policy` the claims miss, if any.
pub fn first_miss(policy: &Policy, claims: &serde_json::Map<String, Value>) -> Option<Miss> {
    policy.claims.iter().find_map(|(path, rule)| {
        let value = claim(claims, path);
        if value.is_some_and(|v| rule.matches(v)) {
            return None;
        }
        Some(Miss {
            claim: path.clone(),
            rule: rule.to_string(),
            found: value.map(|v| {
                let text = v.to_string();
                if text.chars().count() > 120 {
                    format!("{}…", text.chars().take(120).collect::<String>())
                } else {
                    text
                }
            }),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn known() -> Known {
        Known {
            providers: vec!["github".into(), "gitlab".into()],
            apps: vec!["github".into()],
            scopes: vec!["external-auth:read".into(), "user:read".into()],
        }
    }

    const EXAMPLE: &str = r#"
policies:
  - name: ci-deploy
    issuer: https://token.actions.githubusercontent.com
    audience: extauth
    max_age: 1h
    claims: { sub: "repo:acme/*:ref:refs/heads/main", repository: acme/app }
    act_as: ci-bot
    providers: [github]
    scopes: [external-auth:read]
    lifetime: 15m
  - name: pods
    issuer: https://kubernetes.default.svc
    jwks_url: https://kubernetes.default.svc/openid/v1/jwks
    audience: [extauth, https://extauth.example.com]
    claims:
      kubernetes.io.namespace: { regex: "team-(a|b)" }
      sub: ["system:serviceaccount:team-a:*", "system:serviceaccount:team-b:builder"]
    act_as_claim: kubernetes.io.serviceaccount.name
"#;

    #[test]
    fn the_issues_example_reads_with_its_defaults() {
        let policies = parse(EXAMPLE, &known()).unwrap();
        assert_eq!(policies.len(), 2);
        let ci = &policies[0];
        assert_eq!(ci.keys, KeySource::Discovery);
        assert_eq!(ci.max_age, Duration::from_secs(3600));
        assert_eq!(ci.lifetime, Duration::from_secs(900));
        assert_eq!(ci.act_as, ActAs::User("ci-bot".into()));
        let pods = &policies[1];
        assert_eq!(pods.audiences.len(), 2);
        assert_eq!(
            pods.scopes,
            vec!["external-auth:read".to_owned()],
            "default scope"
        );
        assert_eq!(pods.lifetime, Duration::from_secs(900), "default lifetime");
        assert!(pods.providers.is_empty());
    }

    #[test]
    fn globs_stop_at_separators_unless_doubled() {
        let Rule::Glob(_, re) = glob("repo:acme/*:ref:refs/heads/main").unwrap() else {
            panic!("a glob")
        };
        assert!(re.is_match("repo:acme/app:ref:refs/heads/main"));
        assert!(!re.is_match("repo:acme/app:pull_request:ref:refs/heads/main"));
        assert!(!re.is_match("repo:evil/acme/app:ref:refs/heads/main"));
        let rule = glob("repo:acme/app:ref:refs/heads/**").unwrap();
        assert!(rule.matches(&json!("repo:acme/app:ref:refs/heads/feature/x")));
        assert!(matches!(glob("plain").unwrap(), Rule::Exact(_)));
        assert!(glob("a.b+c?").unwrap().matches(&json!("a.b+cd")));
        assert!(!glob("a.b+c?").unwrap().matches(&json!("axb+cd")));
    }

    #[test]
    fn claims_are_found_through_dotted_names() {
        let claims = json!({
            "sub": "system:serviceaccount:team-a:builder",
            "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "builder"}},
            "groups": ["dev", "ops"],
            "n": 7,
        });
        let claims = claims.as_object().unwrap();
        assert_eq!(
            claim(claims, "kubernetes.io.namespace"),
            Some(&json!("team-a"))
        );
        assert_eq!(
            claim(claims, "kubernetes.io.serviceaccount.name"),
            Some(&json!("builder"))
        );
        assert_eq!(claim(claims, "kubernetes.io.nothing"), None);
        let policies = parse(EXAMPLE, &known()).unwrap();
        assert_eq!(first_miss(&policies[1], claims), None);
        let mut other = claims.clone();
        other.insert("kubernetes.io".into(), json!({"namespace": "team-c"}));
        let miss = first_miss(&policies[1], &other).unwrap();
        assert_eq!(miss.claim, "kubernetes.io.namespace");
        assert_eq!(
            miss.to_string(),
            "claim kubernetes.io.namespace is \"team-c\" and must match regex \"team-(a|b)\""
        );
        assert!(Rule::Exact("ops".into()).matches(&json!(["dev", "ops"])));
        assert!(Rule::Exact("7".into()).matches(&json!(7)));
    }

    #[test]
    fn every_mistake_is_named_with_its_fix() {
        let bad = r#"
policies:
  - name: loose
    issuer: http://issuer.example.com
    audience: []
    act_as: a
    act_as_claim: b
    providers: [bitbucket]
    scopes: [all]
    lifetime: 48h
    algorithms: [HS256, none]
    jwks_url: https://x/jwks
    keys_file: /nonexistent
    github_app: { provider: gitlab }
"#;
        let e = parse(bad, &known()).unwrap_err();
        for needle in [
            "policy \"loose\": issuer:",
            "audience: required",
            "claims: at least one rule is required",
            "act_as or act_as_claim: exactly one",
            "\"bitbucket\" is not a configured provider; known: github, gitlab",
            "scopes: \"all\" is not a scope",
            "lifetime: at most 24h",
            "algorithms: \"HS256\" is not allowed",
            "algorithms: \"none\" is not allowed",
            "jwks_url and keys_file are both set",
            "github_app.provider: \"gitlab\"",
            "give installation_id or owner",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from: {e}");
        }
        let unknown = parse("policies:\n  - name: x\n    isuer: y\n", &known()).unwrap_err();
        assert!(unknown.contains("isuer"), "{unknown}");
        let twice = format!(
            "{EXAMPLE}  - name: pods\n    issuer: https://a\n    audience: x\n    claims: {{sub: y}}\n    act_as: z\n"
        );
        assert!(
            parse(&twice, &known())
                .unwrap_err()
                .contains("the name is used twice")
        );
    }
}
