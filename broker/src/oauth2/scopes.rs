//! The scopes an app may be granted, what each means in words (the consent page), and which
//! one each API route needs. Coder shipped years without scopes (every token could do
//! everything); here a token does only what its scopes say.

use std::collections::BTreeSet;

/// Every scope: its name and what it lets an app do, in the words of the consent page.
pub const CATALOG: &[(&str, &str)] = &[
    ("openid", "Know who you are on this site"),
    ("profile", "See your name and username"),
    ("email", "See your email address"),
    (
        "offline_access",
        "Keep this access when you are away (a refresh token)",
    ),
    ("user:read", "Read your account"),
    (
        "external-auth:read",
        "Use the tokens of your linked accounts (GitHub, GitLab, …)",
    ),
    ("external-auth:write", "Link and unlink your accounts"),
    (
        "workspace-tokens:write",
        "Create and revoke your workspace tokens",
    ),
    ("all", "Everything you can do on this site"),
];

/// What an app may ask for when its admin chose nothing, and what a request without `scope`
/// gets: seed 002's flow (no scope, then `/api/v2/users/me`, then a refresh) needs these.
pub const DEFAULT: &[&str] = &["openid", "profile", "email", "offline_access", "user:read"];

/// Scopes about the user's identity (OpenID Connect), meaningless without a user.
const IDENTITY: &[&str] = &["openid", "profile", "email", "offline_access"];

/// A set of scope names, kept sorted.
pub type Scopes = BTreeSet<String>;

/// A space-separated scope parameter, each name checked against the catalog.
pub fn parse(text: &str) -> Result<Scopes, String> {
    parse_with(text, &Scopes::new())
}

/// The same, also knowing `extra` (the scopes of the resource a token is for).
pub fn parse_with(text: &str, extra: &Scopes) -> Result<Scopes, String> {
    let mut scopes = Scopes::new();
    for name in text.split(' ').filter(|s| !s.is_empty()) {
        if !CATALOG.iter().any(|(n, _)| *n == name) && !extra.contains(name) {
            return Err(name.to_owned());
        }
        scopes.insert(name.to_owned());
    }
    Ok(scopes)
}

/// Every scope in the catalog (what apps that describe themselves may ask for).
pub fn every() -> Vec<String> {
    CATALOG.iter().map(|(n, _)| (*n).to_owned()).collect()
}

/// The default scopes of an app that describes itself: the catalog scopes its own `scope`
/// names (those of resources are asked for per request), else [`DEFAULT`].
pub fn claimed_defaults(scope: Option<&str>) -> Vec<String> {
    let asked: Vec<String> = scope
        .unwrap_or_default()
        .split(' ')
        .filter(|s| CATALOG.iter().any(|(n, _)| n == s))
        .map(str::to_owned)
        .collect();
    if asked.is_empty() {
        DEFAULT.iter().map(|s| (*s).to_owned()).collect()
    } else {
        asked
    }
}

/// Names from stored strings.
pub fn set(names: &[String]) -> Scopes {
    names.iter().cloned().collect()
}

/// The scope parameter form: names separated by spaces.
pub fn join(scopes: &Scopes) -> String {
    scopes
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The consent page's words for each scope; a scope of a registered resource (not in the
/// catalog) is shown by its name.
pub fn words(scopes: &Scopes) -> Vec<String> {
    let known = CATALOG
        .iter()
        .filter(|(name, _)| scopes.contains(*name))
        .map(|(_, words)| (*words).to_owned());
    let others = scopes
        .iter()
        .filter(|s| !CATALOG.iter().any(|(n, _)| n == s))
        .map(|s| format!("Use the resource's scope {s}"));
    known.chain(others).collect()
}

/// Whether `granted` lets a token do what `needed` names (`all` covers every API scope, not
/// the identity ones, which say what an ID token holds).
pub fn covers(granted: &Scopes, needed: &str) -> bool {
    granted.contains(needed) || (granted.contains("all") && !IDENTITY.contains(&needed))
}

/// What a service (client credentials) may hold: the app's scopes without the identity ones.
pub fn without_identity(scopes: &Scopes) -> Scopes {
    scopes
        .iter()
        .filter(|s| !IDENTITY.contains(&s.as_str()))
        .cloned()
        .collect()
}

/// The scope an API request needs: read or change one's account, use or change links, manage
/// workspace tokens; anything else (admin routes, API tokens, apps) needs `all`.
pub fn needed_for(method: &str, path: &str) -> &'static str {
    let read = matches!(method, "GET" | "HEAD");
    let rest = |prefix: &str| path.strip_prefix(prefix);
    if path.starts_with("/api/v2/workspaceagents/me/") {
        return "external-auth:read";
    }
    if path == "/api/v2/external-auth" || path.starts_with("/api/v2/external-auth/") {
        return if read {
            "external-auth:read"
        } else {
            "external-auth:write"
        };
    }
    if path.starts_with("/api/v2/oauth2-provider/") {
        return "all";
    }
    if let Some(user_path) = rest("/api/v2/users/") {
        let mut segments = user_path.split('/');
        let _user = segments.next();
        return match (segments.next(), read) {
            (None, true) => "user:read",
            (Some("oauth2-apps"), true) => "user:read",
            (Some("oidc-claims"), true) => "user:read",
            (Some("workspace-tokens"), true) => "user:read",
            (Some("workspace-tokens"), false) => "workspace-tokens:write",
            _ => "all",
        };
    }
    "all"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_covers_the_api_but_not_identity() {
        let all = parse("all").unwrap();
        assert!(covers(&all, "external-auth:read"));
        assert!(covers(&all, "workspace-tokens:write"));
        assert!(!covers(&all, "openid"));
        assert!(!covers(&all, "offline_access"));
    }

    #[test]
    fn unknown_scopes_are_named() {
        assert_eq!(parse("openid bogus").unwrap_err(), "bogus");
        assert_eq!(join(&parse("  email openid ").unwrap()), "email openid");
    }

    #[test]
    fn routes_need_the_narrowest_scope() {
        assert_eq!(needed_for("GET", "/api/v2/users/me"), "user:read");
        assert_eq!(needed_for("GET", "/api/v2/users/me/keys/tokens"), "all");
        assert_eq!(
            needed_for("POST", "/api/v2/users/me/workspace-tokens"),
            "workspace-tokens:write"
        );
        assert_eq!(
            needed_for("GET", "/api/v2/workspaceagents/me/external-auth"),
            "external-auth:read"
        );
        assert_eq!(
            needed_for("DELETE", "/api/v2/external-auth/github"),
            "external-auth:write"
        );
        assert_eq!(needed_for("POST", "/api/v2/users"), "all");
        assert_eq!(needed_for("GET", "/api/v2/oauth2-provider/apps"), "all");
    }
}
