//! The sign-in rules: who an ID token and userinfo say the user is, and whether they may sign in
//! (email domains, `email_verified`, groups).

use serde_json::{Map, Value};

use super::OidcSettings;
use super::settings::list;
use super::verify::refused;
use crate::failure::{Failure, Refusal};

/// The identity an OIDC sign-in establishes, after the rules.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// Preferred username (sanitised).
    pub username: String,
    /// Email (may be empty).
    pub email: String,
    /// Display name.
    pub name: String,
    /// `sid`, when the IdP sent one.
    pub sid: Option<String>,
}

fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

/// A username made of `[a-z0-9._-]`, from the username claim, else the email's local part.
pub fn username_from(candidate: Option<&str>, email: &str) -> String {
    let raw = candidate.unwrap_or_else(|| email.split('@').next().unwrap_or_default());
    let cleaned: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let cleaned = cleaned.trim_matches('-').to_owned();
    if cleaned.is_empty() || cleaned == "me" {
        "user".to_owned()
    } else {
        cleaned
    }
}

/// Applies the sign-in rules to the merged claims (ID token, then userinfo on top).
pub fn identity(
    settings: &OidcSettings,
    id_claims: &Map<String, Value>,
    userinfo: &Map<String, Value>,
) -> Result<Identity, Failure> {
    let mut claims = id_claims.clone();
    for (k, v) in userinfo {
        claims.insert(k.clone(), v.clone());
    }
    let subject = claim_str(id_claims, "sub").ok_or_else(|| refused(Refusal::NoSubject))?;
    let issuer = claim_str(id_claims, "iss").unwrap_or_else(|| settings.issuer.clone());
    let email = claim_str(&claims, &settings.email_field).unwrap_or_default();
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => Some(s == "true"),
        _ => None,
    };
    if verified == Some(false) && !settings.ignore_email_verified {
        return Err(refused(Refusal::EmailUnverified { email }));
    }
    if !settings.email_domains.is_empty() && !settings.email_allowed(&email) {
        return Err(refused(Refusal::EmailDomain {
            email,
            allowed: settings.email_domains.clone(),
        }));
    }
    if !settings.allowed_groups.is_empty() {
        let groups: Vec<String> = match claims.get(&settings.group_field) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => list(s),
            _ => Vec::new(),
        };
        if !groups.iter().any(|g| settings.allowed_groups.contains(g)) {
            return Err(refused(Refusal::Group {
                allowed: settings.allowed_groups.clone(),
            }));
        }
    }
    Ok(Identity {
        issuer,
        username: username_from(
            claim_str(&claims, &settings.username_field).as_deref(),
            &email,
        ),
        name: claim_str(&claims, &settings.name_field).unwrap_or_default(),
        sid: claim_str(id_claims, "sid"),
        email,
        subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(username_from(Some("Alice Smith"), ""), "alice-smith");
        assert_eq!(username_from(None, "bob.jones@example.com"), "bob.jones");
        assert_eq!(username_from(Some("!!!"), ""), "user");
        assert_eq!(username_from(Some("me"), ""), "user");
    }
}
