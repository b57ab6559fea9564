//! `CODER_OIDC_*`: read once, every problem listed with its variable.

use std::collections::HashMap;

use extauth_providers::ClientSecret;
use serde_json::{Map, Value};

/// Validated `CODER_OIDC_*` settings.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `CODER_OIDC_ISSUER_URL`, exactly as the IdP writes it (authentik's trailing slash kept).
    pub issuer: String,
    /// `CODER_OIDC_CLIENT_ID`.
    pub client_id: String,
    client_secret: ClientSecret,
    /// `CODER_OIDC_EMAIL_DOMAIN`: `example.com` (exactly) or `*.example.com` (subdomains).
    pub email_domains: Vec<String>,
    /// `CODER_OIDC_SCOPES`.
    pub scopes: Vec<String>,
    /// `CODER_OIDC_AUTH_URL_PARAMS`.
    pub auth_url_params: Vec<(String, String)>,
    /// `CODER_OIDC_ALLOW_SIGNUPS`.
    pub allow_signups: bool,
    /// `CODER_OIDC_SIGNUPS_DISABLED_TEXT`.
    pub signups_disabled_text: Option<String>,
    /// `CODER_OIDC_IGNORE_EMAIL_VERIFIED`.
    pub ignore_email_verified: bool,
    /// `CODER_OIDC_IGNORE_USERINFO`.
    pub ignore_userinfo: bool,
    /// Claim names.
    pub username_field: String,
    /// Claim names.
    pub email_field: String,
    /// Claim names.
    pub name_field: String,
    /// Claim names.
    pub group_field: String,
    /// `CODER_OIDC_ALLOWED_GROUPS`.
    pub allowed_groups: Vec<String>,
    /// `CODER_OIDC_SIGN_IN_TEXT`.
    pub sign_in_text: String,
    /// `CODER_OIDC_ICON_URL`.
    pub icon_url: Option<String>,
    /// `CODER_DANGEROUS_OIDC_SKIP_ISSUER_CHECKS`.
    pub skip_issuer_checks: bool,
    /// `EXTAUTH_OIDC_INTERNAL_URL`: where the broker itself reaches the IdP when that differs
    /// from the address browsers use (Docker service names, cluster DNS). Only its origin.
    pub internal_origin: Option<String>,
}

impl OidcSettings {
    /// `url` for a browser: an endpoint the IdP described on the internal origin (IdPs build
    /// their discovery URLs from the address they were asked at) goes back to the issuer's.
    pub fn public(&self, url: &str) -> String {
        let Some(internal) = &self.internal_origin else {
            return url.to_owned();
        };
        let public = url::Url::parse(&self.issuer)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        match url.strip_prefix(internal.as_str()) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') => {
                format!("{public}{rest}")
            }
            _ => url.to_owned(),
        }
    }

    /// `url` for a server-to-server call: on the issuer's origin, sent to the internal origin
    /// instead when one is set (the path stays); anything else as it is.
    pub fn internal(&self, url: &str) -> String {
        let Some(internal) = &self.internal_origin else {
            return url.to_owned();
        };
        let public = url::Url::parse(&self.issuer)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        match url.strip_prefix(&public) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') => {
                format!("{internal}{rest}")
            }
            _ => url.to_owned(),
        }
    }
}

/// Coder settings extauth reads but does not implement: accepted with a warning.
const IGNORED: &[&str] = &[
    "CODER_OIDC_CLIENT_KEY_FILE",
    "CODER_OIDC_CLIENT_CERT_FILE",
    "CODER_OIDC_GROUP_MAPPING",
    "CODER_OIDC_GROUP_AUTO_CREATE",
    "CODER_OIDC_GROUP_REGEX_FILTER",
    "CODER_OIDC_USER_ROLE_FIELD",
    "CODER_OIDC_USER_ROLE_MAPPING",
    "CODER_OIDC_USER_ROLE_DEFAULT",
    "CODER_OIDC_ORGANIZATION_FIELD",
    "CODER_OIDC_ORGANIZATION_MAPPING",
    "CODER_OIDC_ORGANIZATION_ASSIGN_DEFAULT",
    "CODER_OIDC_ACCESS_TOKEN_CLAIMS",
    "CODER_OIDC_REDIRECT_ALLOWED_HOSTS",
];

const KNOWN: &[&str] = &[
    "CODER_OIDC_ISSUER_URL",
    "CODER_OIDC_CLIENT_ID",
    "CODER_OIDC_CLIENT_SECRET",
    "CODER_OIDC_EMAIL_DOMAIN",
    "CODER_OIDC_SCOPES",
    "CODER_OIDC_AUTH_URL_PARAMS",
    "CODER_OIDC_ALLOW_SIGNUPS",
    "CODER_OIDC_SIGNUPS_DISABLED_TEXT",
    "CODER_OIDC_IGNORE_EMAIL_VERIFIED",
    "CODER_OIDC_IGNORE_USERINFO",
    "CODER_OIDC_USERNAME_FIELD",
    "CODER_OIDC_EMAIL_FIELD",
    "CODER_OIDC_NAME_FIELD",
    "CODER_OIDC_GROUP_FIELD",
    "CODER_OIDC_ALLOWED_GROUPS",
    "CODER_OIDC_SIGN_IN_TEXT",
    "CODER_OIDC_ICON_URL",
];

/// What an OIDC session's sealed `field` (`id_token`, `refresh_token`) is bound to.
pub fn session_purpose(user_id: &str, field: &str) -> String {
    format!("oidc:{user_id}:{field}")
}

fn go_bool(variable: &str, value: &str, errors: &mut Vec<String>) -> bool {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
        other => {
            errors.push(format!(
                "{variable}: {other:?} is not a boolean; use true or false"
            ));
            false
        }
    }
}

pub(super) fn list(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl OidcSettings {
    /// Reads `CODER_OIDC_*` from `(name, value)` pairs. `Ok(None)` when OIDC is not configured;
    /// every problem is listed, each naming its variable. Warnings go to `warnings`.
    pub fn from_vars(
        vars: &[(String, String)],
        warnings: &mut Vec<String>,
    ) -> Result<Option<Self>, Vec<String>> {
        let map: HashMap<&str, &str> = vars
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k.as_str(), v.trim()))
            .collect();
        let mut errors = Vec::new();
        for name in map.keys().filter(|k| k.starts_with("CODER_OIDC_")) {
            if IGNORED.contains(name) {
                warnings.push(format!("{name}: not supported by extauth; ignored"));
            } else if !KNOWN.contains(name) {
                errors.push(format!(
                    "{name}: unknown setting; the OIDC settings are {}",
                    KNOWN.join(", ")
                ));
            }
        }
        let Some(issuer) = map.get("CODER_OIDC_ISSUER_URL").map(|s| (*s).to_owned()) else {
            if map.keys().any(|k| KNOWN.contains(k)) && errors.is_empty() {
                errors.push("CODER_OIDC_ISSUER_URL: required when other CODER_OIDC_* settings are set; set it to the IdP's issuer, e.g. https://authentik.example.com/application/o/extauth/".to_owned());
            }
            return if errors.is_empty() {
                Ok(None)
            } else {
                Err(errors)
            };
        };
        if url::Url::parse(&issuer).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
            errors.push(format!(
                "CODER_OIDC_ISSUER_URL: {issuer:?} is not an http(s) URL"
            ));
        }
        let get = |k: &str| map.get(k).map(|s| (*s).to_owned());
        let client_id = get("CODER_OIDC_CLIENT_ID").unwrap_or_default();
        if client_id.is_empty() {
            errors.push("CODER_OIDC_CLIENT_ID: required; set it to the client ID of the broker's application at the IdP".to_owned());
        }
        let client_secret = get("CODER_OIDC_CLIENT_SECRET").unwrap_or_default();
        if client_secret.is_empty() {
            errors.push("CODER_OIDC_CLIENT_SECRET: required; set it to the client secret of the broker's application at the IdP".to_owned());
        }
        let flag = |k: &str, default: bool, errors: &mut Vec<String>| {
            get(k).map_or(default, |v| go_bool(k, &v, errors))
        };
        let allow_signups = flag("CODER_OIDC_ALLOW_SIGNUPS", true, &mut errors);
        let ignore_email_verified = flag("CODER_OIDC_IGNORE_EMAIL_VERIFIED", false, &mut errors);
        let ignore_userinfo = flag("CODER_OIDC_IGNORE_USERINFO", false, &mut errors);
        let skip_issuer_checks = map
            .get("CODER_DANGEROUS_OIDC_SKIP_ISSUER_CHECKS")
            .is_some_and(|v| go_bool("CODER_DANGEROUS_OIDC_SKIP_ISSUER_CHECKS", v, &mut errors));
        let internal_origin = match get("EXTAUTH_OIDC_INTERNAL_URL")
            .filter(|v| !v.trim().is_empty())
        {
            None => None,
            Some(text) => match url::Url::parse(text.trim()) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && matches!(u.path(), "" | "/")
                        && u.query().is_none() =>
                {
                    Some(u.origin().ascii_serialization())
                }
                _ => {
                    errors.push(format!(
                        "EXTAUTH_OIDC_INTERNAL_URL: {text:?} is not an http(s) origin; give only scheme, host and port, e.g. http://authentik-server:9000 (the issuer's path is kept)"
                    ));
                    None
                }
            },
        };
        let scopes = get("CODER_OIDC_SCOPES").map_or_else(
            || {
                ["openid", "profile", "email", "offline_access"]
                    .map(str::to_owned)
                    .to_vec()
            },
            |v| list(&v),
        );
        if !scopes.iter().any(|s| s == "openid") {
            errors.push("CODER_OIDC_SCOPES: must include openid".to_owned());
        }
        if !scopes.iter().any(|s| s == "offline_access") {
            warnings.push("CODER_OIDC_SCOPES: offline_access is not requested, so the IdP may issue no refresh token".to_owned());
        }
        let auth_url_params = match get("CODER_OIDC_AUTH_URL_PARAMS") {
            None => Vec::new(),
            Some(text) => match serde_json::from_str::<Map<String, Value>>(&text) {
                Ok(map) => map
                    .into_iter()
                    .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect(),
                Err(e) => {
                    errors.push(format!("CODER_OIDC_AUTH_URL_PARAMS: not a JSON object ({e}); write e.g. {{\"prompt\":\"login\"}}"));
                    Vec::new()
                }
            },
        };
        let email_domains: Vec<String> = get("CODER_OIDC_EMAIL_DOMAIN")
            .map(|v| {
                list(&v)
                    .into_iter()
                    .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(Self {
            internal_origin,
            issuer,
            client_id,
            client_secret: ClientSecret::new(client_secret),
            email_domains,
            scopes,
            auth_url_params,
            allow_signups,
            signups_disabled_text: get("CODER_OIDC_SIGNUPS_DISABLED_TEXT"),
            ignore_email_verified,
            ignore_userinfo,
            username_field: get("CODER_OIDC_USERNAME_FIELD")
                .unwrap_or_else(|| "preferred_username".to_owned()),
            email_field: get("CODER_OIDC_EMAIL_FIELD").unwrap_or_else(|| "email".to_owned()),
            name_field: get("CODER_OIDC_NAME_FIELD").unwrap_or_else(|| "name".to_owned()),
            group_field: get("CODER_OIDC_GROUP_FIELD").unwrap_or_else(|| "groups".to_owned()),
            allowed_groups: get("CODER_OIDC_ALLOWED_GROUPS")
                .map(|v| list(&v))
                .unwrap_or_default(),
            sign_in_text: get("CODER_OIDC_SIGN_IN_TEXT")
                .unwrap_or_else(|| "OpenID Connect".to_owned()),
            icon_url: get("CODER_OIDC_ICON_URL"),
            skip_issuer_checks,
        }))
    }

    /// The client secret (token endpoint authentication, HS256 verification).
    pub fn client_secret(&self) -> &str {
        self.client_secret.secret()
    }

    /// Whether `email`'s domain is allowed: exact domains, or `*.domain` for its subdomains.
    pub fn email_allowed(&self, email: &str) -> bool {
        if self.email_domains.is_empty() {
            return true;
        }
        let Some((_, domain)) = email.rsplit_once('@') else {
            return false;
        };
        let domain = domain.to_ascii_lowercase();
        self.email_domains
            .iter()
            .any(|allowed| match allowed.strip_prefix("*.") {
                Some(parent) => domain.ends_with(&format!(".{parent}")),
                None => domain == *allowed,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn debug_never_shows_the_client_secret() {
        let mut v = base();
        v.retain(|(k, _)| k != "CODER_OIDC_CLIENT_SECRET");
        v.push((
            "CODER_OIDC_CLIENT_SECRET".to_owned(),
            "very-secret-value".to_owned(),
        ));
        let s = OidcSettings::from_vars(&v, &mut Vec::new())
            .unwrap()
            .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert_eq!(s.client_secret(), "very-secret-value");
    }

    fn base() -> Vec<(String, String)> {
        vars(&[
            (
                "CODER_OIDC_ISSUER_URL",
                "https://ak.example.com/application/o/extauth/",
            ),
            ("CODER_OIDC_CLIENT_ID", "c"),
            ("CODER_OIDC_CLIENT_SECRET", "s"),
        ])
    }

    #[test]
    fn settings_defaults_and_errors() {
        let mut warnings = Vec::new();
        let s = OidcSettings::from_vars(&base(), &mut warnings)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.issuer, "https://ak.example.com/application/o/extauth/",
            "trailing slash kept"
        );
        assert_eq!(s.scopes, ["openid", "profile", "email", "offline_access"]);
        assert!(s.allow_signups && !s.ignore_email_verified);
        assert!(
            OidcSettings::from_vars(&[], &mut warnings)
                .unwrap()
                .is_none()
        );

        let mut bad = base();
        bad.extend(vars(&[
            ("CODER_OIDC_ALLOW_SIGNUPS", "yes"),
            ("CODER_OIDC_SCOPE", "x"),
            ("CODER_OIDC_GROUP_MAPPING", "{}"),
        ]));
        let errors = OidcSettings::from_vars(&bad, &mut warnings).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e
                    == "CODER_OIDC_ALLOW_SIGNUPS: \"yes\" is not a boolean; use true or false"),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("CODER_OIDC_SCOPE: unknown setting")),
            "{errors:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w == "CODER_OIDC_GROUP_MAPPING: not supported by extauth; ignored")
        );
        let only_id = vars(&[("CODER_OIDC_CLIENT_ID", "c")]);
        assert!(
            OidcSettings::from_vars(&only_id, &mut warnings).unwrap_err()[0]
                .starts_with("CODER_OIDC_ISSUER_URL: required")
        );
    }

    #[test]
    fn email_domains_with_subdomain_rule() {
        let mut v = base();
        v.extend(vars(&[(
            "CODER_OIDC_EMAIL_DOMAIN",
            "example.com, @Corp.Example ,*.dev.example.org",
        )]));
        let s = OidcSettings::from_vars(&v, &mut Vec::new())
            .unwrap()
            .unwrap();
        for (email, ok) in [
            ("a@example.com", true),
            ("a@EXAMPLE.com", true),
            ("a@sub.example.com", false),
            ("a@corp.example", true),
            ("a@x.dev.example.org", true),
            ("a@dev.example.org", false),
            ("a@evil-example.com", false),
            ("a@example.com.evil", false),
            ("no-at-sign", false),
        ] {
            assert_eq!(s.email_allowed(email), ok, "{email}");
        }
    }
}
