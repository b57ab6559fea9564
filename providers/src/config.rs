//! Validated provider configuration: defaults applied, URLs parsed, regexes compiled, IDs
//! checked. Once a [`Providers`] exists, nothing about it can be wrong in a way start-up could
//! have caught.

use regex::Regex;
use url::Url;

use crate::access_url::AccessUrl;
use crate::catalog::{self, DeriveError, GitUsername, KNOWN_TYPES, PkceMethod, ProviderType};
use crate::env::{self, RawProvider, Setting, Source};
use crate::error::{ConfigError, ConfigErrors, ConfigWarning};
use crate::secret::ClientSecret;

/// A provider ID: 1–32 ASCII letters and digits with single hyphens between them, as Coder's
/// `NameValid`, and neither `new` nor `create`. It appears in URLs, so it is kept as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId(String);

impl ProviderId {
    /// Validates an ID; the error says why it is not one.
    pub fn parse(id: &str) -> Result<Self, &'static str> {
        if id.is_empty() {
            return Err("it is empty");
        }
        if id.len() > 32 {
            return Err("it is longer than 32 characters");
        }
        if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("only letters, digits and hyphens are allowed");
        }
        if id.starts_with('-') || id.ends_with('-') || id.contains("--") {
            return Err("hyphens must stand between letters or digits, one at a time");
        }
        Ok(Self(id.to_owned()))
    }

    /// The ID as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_reserved(&self) -> bool {
        ["new", "create"]
            .iter()
            .any(|r| self.0.eq_ignore_ascii_case(r))
    }
}

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One provider, fully resolved. Built only by [`Providers::from_vars`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProviderConfig {
    /// Where its settings came from, for messages that point back at variables.
    pub source: Source,
    /// Unique among the configured providers; part of its URLs.
    pub id: ProviderId,
    /// The normalised type; every per-type behaviour switches on it.
    pub provider_type: ProviderType,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret, when set (public clients have none).
    pub client_secret: Option<ClientSecret>,
    /// Authorization endpoint.
    pub auth_url: Url,
    /// Token endpoint (also used for the device-code grant and refresh).
    pub token_url: Url,
    /// GET with the token answers 200 while the token is good; none = trusted until expiry.
    pub validate_url: Option<Url>,
    /// Where tokens are revoked on unlink.
    pub revoke_url: Option<Url>,
    /// RFC 8628 device authorization endpoint.
    pub device_code_url: Option<Url>,
    /// Matches repository URLs (`https://host[/path]`) this provider's tokens are for.
    pub regex: Option<Regex>,
    /// Scopes requested at authorization.
    pub scopes: Vec<String>,
    /// Fields of the token response kept alongside the token (`token_extra`).
    pub extra_token_keys: Vec<String>,
    /// Link with the device flow instead of the browser redirect flow.
    pub device_flow: bool,
    /// Never use refresh tokens: an expired token means "link again".
    pub no_refresh: bool,
    /// Where users install the GitHub App, shown in the UI.
    pub app_install_url: Option<Url>,
    /// API listing the user's app installations.
    pub app_installations_url: Option<Url>,
    /// A GitHub App's id and its private key file: installation tokens for workloads
    /// (`EXTAUTH_WORKLOAD_POLICIES`' `github_app`). The broker reads the file.
    pub app_key: Option<(String, std::path::PathBuf)>,
    /// Name shown to users.
    pub display_name: String,
    /// Icon URL or path shown to users.
    pub display_icon: String,
    /// PKCE for the authorization-code flow.
    pub pkce: PkceMethod,
    /// Base of the provider's REST API.
    pub api_base_url: Option<Url>,
    /// `INTERNAL_URL`: the origin the broker's own calls (token, validation, revocation,
    /// device authorization, API) go to instead of the public one, which browsers keep using.
    pub internal_origin: Option<String>,
    /// How git sends the token over HTTP, when git can be told (git 2.46+'s `authtype`).
    pub git_auth: GitAuth,
}

/// The HTTP authentication scheme git uses with a provider's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitAuth {
    /// `Authorization: Basic` with the git username and the token: every forge takes it.
    Basic,
    /// `Authorization: Bearer <token>`: Azure DevOps with Entra ID tokens (which, as Basic,
    /// need a PAT-shaped username dance), and any forge configured so.
    Bearer,
}

impl GitAuth {
    /// The value in the lookup answer and in `GIT_AUTH`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Bearer => "bearer",
        }
    }
}

impl ProviderConfig {
    /// The redirect URI to register with the provider: `<access>/external-auth/<id>/callback`.
    pub fn callback_url(&self, access: &AccessUrl) -> Url {
        access.join(&format!("external-auth/{}/callback", self.id))
    }

    /// The page where a user links this provider: `<access>/external-auth/<id>`.
    pub fn link_url(&self, access: &AccessUrl) -> Url {
        access.join(&format!("external-auth/{}", self.id))
    }

    /// Where a user adds an SSH public key at this forge (from its authorization URL's site),
    /// for the forges whose page is known.
    pub fn ssh_keys_page(&self) -> Option<String> {
        let origin = self.auth_url.origin().ascii_serialization();
        let page = match self.provider_type {
            ProviderType::Github => "/settings/ssh/new",
            ProviderType::Gitlab => "/-/user_settings/ssh_keys",
            ProviderType::BitbucketCloud => "/account/settings/ssh-keys/",
            ProviderType::Gitea => "/user/settings/keys",
            ProviderType::BitbucketServer => {
                let path = self.auth_url.path();
                let base = path.split("/rest/").next().unwrap_or_default();
                return Some(format!(
                    "{origin}{}/plugins/servlet/ssh/account/keys",
                    base.trim_end_matches('/')
                ));
            }
            _ => return None,
        };
        Some(format!("{origin}{page}"))
    }

    /// `url` as the broker itself calls it: on the authorization URL's origin, sent to
    /// `INTERNAL_URL`'s origin instead when set (the path stays).
    pub fn internal(&self, url: &Url) -> Url {
        let Some(internal) = &self.internal_origin else {
            return url.clone();
        };
        if url.origin() != self.auth_url.origin() {
            return url.clone();
        }
        let rest = &url.as_str()[url.origin().ascii_serialization().len()..];
        Url::parse(&format!("{internal}{rest}")).unwrap_or_else(|_| url.clone())
    }

    /// What git's username is alongside this provider's token.
    pub fn git_username(&self) -> GitUsername {
        self.provider_type.git_username()
    }

    /// The host (with `:port`) the regex is written for, read from its literal start, e.g.
    /// `github.com` for `^(https?://)?github\.com(/.*)?$`. `None` when the regex does not begin
    /// with a literal host. Used to configure git per host.
    pub fn git_host(&self) -> Option<String> {
        let source = self.regex.as_ref()?.as_str();
        let rest = source.strip_prefix('^').unwrap_or(source);
        let rest = [
            "(https?://)?",
            "(https?:\\/\\/)?",
            "https?://",
            "https://",
            "http://",
        ]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
        .unwrap_or(rest);
        let mut host = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped @ ('.' | '-' | ':')) => host.push(escaped),
                    _ => return None,
                },
                c if c.is_ascii_alphanumeric() || matches!(c, '-' | ':') => host.push(c),
                '/' | '(' | '$' => break,
                _ => return None,
            }
        }
        (!host.is_empty()).then_some(host)
    }

    /// Whether git must send the repository path for this provider to be chosen
    /// (`credential.useHttpPath`): its regex does not match the bare host.
    pub fn needs_http_path(&self) -> bool {
        match (self.git_host(), &self.regex) {
            (Some(host), Some(regex)) => {
                !regex.is_match(&format!("https://{host}"))
                    && !regex.is_match(&format!("http://{host}"))
            }
            _ => false,
        }
    }
}

/// All configured providers, in configuration order (which decides ties when matching URLs).
#[derive(Debug, Clone, Default)]
pub struct Providers {
    providers: Vec<ProviderConfig>,
    warnings: Vec<ConfigWarning>,
}

impl Providers {
    /// Reads and validates providers from `(name, value)` pairs, e.g. `std::env::vars()`.
    /// Variables without a provider prefix are ignored. Every problem is reported at once.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let raw = env::collect(vars, &mut errors, &mut warnings);

        let mut providers = Vec::new();
        let mut seen: Vec<(String, Source)> = Vec::new();
        for raw in &raw {
            let before = errors.len();
            let id = provider_id(raw, &mut errors);
            if let Some((id, from_type)) = &id {
                let key = id.as_str().to_ascii_lowercase();
                match seen.iter().find(|(k, _)| *k == key) {
                    Some((_, first)) => errors.push(ConfigError::DuplicateId {
                        variable: raw.variable(Setting::Id),
                        id: id.to_string(),
                        first: first.to_string(),
                        from_type: *from_type,
                    }),
                    None => seen.push((key, raw.source)),
                }
            }
            let resolved = resolve(raw, id.map(|(id, _)| id), &mut errors, &mut warnings);
            if let (Some(resolved), true) = (resolved, errors.len() == before) {
                providers.push(resolved);
            }
        }

        if errors.is_empty() {
            Ok(Self {
                providers,
                warnings,
            })
        } else {
            Err(ConfigErrors { errors, warnings })
        }
    }

    /// The providers in configuration order.
    pub fn iter(&self) -> std::slice::Iter<'_, ProviderConfig> {
        self.providers.iter()
    }

    /// The provider with exactly this ID.
    pub fn get(&self, id: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.id.as_str() == id)
    }

    /// How many providers are configured.
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// Whether no provider is configured.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Non-fatal findings, to be logged at start.
    pub fn warnings(&self) -> &[ConfigWarning] {
        &self.warnings
    }
}

impl<'a> IntoIterator for &'a Providers {
    type Item = &'a ProviderConfig;
    type IntoIter = std::slice::Iter<'a, ProviderConfig>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The ID of a raw provider (explicit, or defaulted from `TYPE` as written) and whether it was
/// defaulted. Pushes the error and returns `None` when it is not valid.
fn provider_id(raw: &RawProvider, errors: &mut Vec<ConfigError>) -> Option<(ProviderId, bool)> {
    let (id, from_type) = match (raw.get(Setting::Id), raw.get(Setting::Type)) {
        (Some(id), _) => (id, false),
        (None, Some(kind)) => (kind, true),
        (None, None) => return None, // MissingType already says what to do.
    };
    let variable = raw.variable(Setting::Id);
    match ProviderId::parse(id) {
        Ok(id) if id.is_reserved() => {
            errors.push(ConfigError::ReservedId {
                variable,
                id: id.to_string(),
            });
            None
        }
        Ok(id) => Some((id, from_type)),
        Err(reason) => {
            errors.push(ConfigError::InvalidId {
                variable,
                id: id.to_owned(),
                reason,
                from_type,
            });
            None
        }
    }
}

/// Applies defaults and validates every setting of one provider. `id` is `None` when the ID
/// was invalid (already reported); the other settings are still checked so that every problem
/// shows up in one run.
fn resolve(
    raw: &RawProvider,
    id: Option<ProviderId>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigWarning>,
) -> Option<ProviderConfig> {
    let before = errors.len();
    let var = |setting| raw.variable(setting);

    for setting in raw.deprecated_settings() {
        warnings.push(ConfigWarning::new(
            var(setting),
            "deprecated Coder AI Bridge setting; extauth ignores it",
        ));
    }

    let client_id = raw.get(Setting::ClientId).unwrap_or_default().to_owned();
    if client_id.is_empty() {
        errors.push(ConfigError::MissingClientId {
            variable: var(Setting::ClientId),
        });
    }
    let Some(type_name) = raw.get(Setting::Type) else {
        errors.push(ConfigError::MissingType {
            variable: var(Setting::Type),
        });
        return None;
    };
    let kind = ProviderType::parse(type_name);
    let type_hint = similar_known_type(&kind);
    if let (Some(known), Some(_)) = (type_hint, raw.get(Setting::AuthUrl)) {
        warnings.push(ConfigWarning::new(
            var(Setting::Type),
            format!(
                "{:?} is not a known type, so it is a generic OAuth2 provider; if you meant {known}, set TYPE={known}",
                kind.as_str()
            ),
        ));
    }

    let url = |setting: Setting, errors: &mut Vec<ConfigError>| -> Option<Url> {
        let value = raw.get(setting)?;
        match parse_http_url(value) {
            Ok(url) => Some(url),
            Err(reason) => {
                errors.push(ConfigError::InvalidUrl {
                    variable: var(setting),
                    value: value.to_owned(),
                    reason,
                });
                None
            }
        }
    };
    let auth_url = url(Setting::AuthUrl, errors);
    let token_url = url(Setting::TokenUrl, errors);
    let validate_url = url(Setting::ValidateUrl, errors);
    let revoke_url = url(Setting::RevokeUrl, errors);
    let device_code_url = url(Setting::DeviceCodeUrl, errors);
    let app_install_url = url(Setting::AppInstallUrl, errors);
    let app_installations_url = url(Setting::AppInstallationsUrl, errors);
    let api_base_url = url(Setting::ApiBaseUrl, errors);
    let internal_origin = url(Setting::InternalUrl, errors).and_then(|u| {
        if matches!(u.path(), "" | "/") && u.query().is_none() {
            Some(u.origin().ascii_serialization())
        } else {
            errors.push(ConfigError::InvalidUrl {
                variable: var(Setting::InternalUrl),
                value: u.to_string(),
                reason: "give only scheme, host and port (e.g. http://gitea:3000); the paths of the provider's URLs are kept".to_owned(),
            });
            None
        }
    });
    let auth_url_invalid = raw.get(Setting::AuthUrl).is_some() && auth_url.is_none();

    let defaults = match catalog::defaults(&kind, auth_url.as_ref(), &client_id) {
        Ok(defaults) => defaults,
        Err(DeriveError::AuthUrlRequired { example }) => {
            if !auth_url_invalid {
                errors.push(ConfigError::UrlRequired {
                    variable: var(Setting::AuthUrl),
                    provider_type: kind.to_string(),
                    example: example.to_owned(),
                    hint: Some("the other endpoints are derived from it".to_owned()),
                });
            }
            catalog::Defaults::default()
        }
        Err(DeriveError::EntraShape) => {
            errors.push(ConfigError::EntraAuthUrl {
                variable: var(Setting::AuthUrl),
                value: raw.get(Setting::AuthUrl).unwrap_or_default().to_owned(),
            });
            catalog::Defaults::default()
        }
    };
    let base_url_hint = defaults.auth_url_was_base;
    let auth_url = match (auth_url, defaults.auth_url) {
        (Some(given), Some(derived)) if base_url_hint => {
            warnings.push(ConfigWarning::new(
                var(Setting::AuthUrl),
                format!(
                    "{given} has no path, so it is taken as the instance's base URL; the authorize URL is {derived}"
                ),
            ));
            Some(derived)
        }
        (given, derived) => given.or(derived),
    };
    let token_url = token_url.or(defaults.token_url);
    let generic_hint = |setting: Setting| match (&kind, type_hint) {
        (ProviderType::Generic(name), Some(known)) => Some(format!(
            "{name:?} is not a known type, so it is a generic OAuth2 provider that needs every endpoint; did you mean TYPE={known}?"
        )),
        (ProviderType::Generic(_), None) => Some(format!(
            "generic OAuth2 providers have no default {}",
            setting.key()
        )),
        _ => None,
    };
    if auth_url.is_none() && !auth_url_invalid && matches!(kind, ProviderType::Generic(_)) {
        errors.push(ConfigError::UrlRequired {
            variable: var(Setting::AuthUrl),
            provider_type: kind.to_string(),
            example: "https://idp.example.com/oauth2/authorize".to_owned(),
            hint: generic_hint(Setting::AuthUrl),
        });
    }
    // Other types derive TOKEN_URL, and a missing AUTH_URL or CLIENT_ID is already reported.
    if token_url.is_none()
        && raw.get(Setting::TokenUrl).is_none()
        && matches!(kind, ProviderType::Generic(_))
    {
        errors.push(ConfigError::UrlRequired {
            variable: var(Setting::TokenUrl),
            provider_type: kind.to_string(),
            example: "https://idp.example.com/oauth2/token".to_owned(),
            hint: generic_hint(Setting::TokenUrl),
        });
    }

    let regex_source = raw
        .get(Setting::Regex)
        .map(str::to_owned)
        .or(defaults.regex);
    let regex = regex_source.and_then(|source| match Regex::new(&source) {
        Ok(regex) => Some(regex),
        Err(error) => {
            errors.push(ConfigError::InvalidRegex {
                variable: var(Setting::Regex),
                error: error.to_string().replace('\n', " "),
            });
            None
        }
    });

    let flag = |setting: Setting, errors: &mut Vec<ConfigError>| -> bool {
        let Some(value) = raw.get(setting) else {
            return false;
        };
        env::parse_bool(value).unwrap_or_else(|| {
            errors.push(ConfigError::InvalidBool {
                variable: var(setting),
                value: value.to_owned(),
            });
            false
        })
    };
    let device_flow = flag(Setting::DeviceFlow, errors);
    let no_refresh = flag(Setting::NoRefresh, errors);
    let device_code_url = device_code_url.or(defaults.device_code_url);
    if device_flow && device_code_url.is_none() && raw.get(Setting::DeviceCodeUrl).is_none() {
        errors.push(ConfigError::DeviceCodeUrlRequired {
            variable: var(Setting::DeviceCodeUrl),
        });
    }

    let git_auth = match raw
        .get(Setting::GitAuth)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None if kind == ProviderType::AzureDevopsEntra => GitAuth::Bearer,
        None | Some("basic") => GitAuth::Basic,
        Some("bearer") => GitAuth::Bearer,
        Some(_) => {
            errors.push(ConfigError::InvalidGitAuth {
                variable: var(Setting::GitAuth),
                value: raw.get(Setting::GitAuth).unwrap_or_default().to_owned(),
            });
            GitAuth::Basic
        }
    };

    let app_key = match (raw.get(Setting::AppId), raw.get(Setting::AppPrivateKeyFile)) {
        (Some(id), Some(path)) => {
            Some((id.trim().to_owned(), std::path::PathBuf::from(path.trim())))
        }
        (None, None) => None,
        (Some(_), None) => {
            errors.push(ConfigError::AppKeyPair {
                variable: var(Setting::AppId),
                other: var(Setting::AppPrivateKeyFile),
            });
            None
        }
        (None, Some(_)) => {
            errors.push(ConfigError::AppKeyPair {
                variable: var(Setting::AppPrivateKeyFile),
                other: var(Setting::AppId),
            });
            None
        }
    };

    let pkce = match raw.get(Setting::PkceMethods) {
        None => defaults.pkce.unwrap_or(PkceMethod::S256),
        Some(value) => parse_pkce(value).unwrap_or_else(|| {
            errors.push(ConfigError::InvalidPkce {
                variable: var(Setting::PkceMethods),
                value: value.to_owned(),
            });
            PkceMethod::S256
        }),
    };

    let list = |setting: Setting, default: &[&str]| -> Vec<String> {
        match raw.get(setting) {
            // Any run of whitespace separates; Coder splits on single spaces and sends empty scopes.
            Some(value) => value.split_whitespace().map(str::to_owned).collect(),
            None => default.iter().map(|s| (*s).to_owned()).collect(),
        }
    };
    let scopes = list(Setting::Scopes, defaults.scopes);
    let extra_token_keys = list(Setting::ExtraTokenKeys, defaults.extra_token_keys);

    let client_secret = raw.get(Setting::ClientSecret).map(ClientSecret::new);
    if client_secret.is_none() && !device_flow {
        warnings.push(ConfigWarning::new(
            var(Setting::ClientSecret),
            "unset; the code exchange will fail unless the provider accepts public clients",
        ));
    }

    let display_name = raw
        .get(Setting::DisplayName)
        .map(str::to_owned)
        .or(defaults.display_name.map(str::to_owned))
        .unwrap_or_else(|| type_name.trim().to_owned());
    let display_icon = raw
        .get(Setting::DisplayIcon)
        .or(defaults.display_icon)
        .unwrap_or("/emojis/1f511.png")
        .to_owned();

    let (Some(id), Some(auth_url), Some(token_url)) = (id, auth_url, token_url) else {
        return None;
    };
    if errors.len() != before {
        return None;
    }
    let validate_url = validate_url.or(defaults.validate_url);
    let revoke_url = revoke_url.or(defaults.revoke_url);
    let app_installations_url = app_installations_url.or(defaults.app_installations_url);
    let api_base_url = api_base_url.or(defaults.api_base_url);
    Some(ProviderConfig {
        source: raw.source,
        id,
        provider_type: kind,
        client_id,
        client_secret,
        auth_url,
        token_url,
        validate_url,
        revoke_url,
        device_code_url,
        regex,
        scopes,
        extra_token_keys,
        device_flow,
        no_refresh,
        app_install_url,
        app_installations_url,
        app_key,
        display_name,
        display_icon,
        pkce,
        api_base_url,
        internal_origin,
        git_auth,
    })
}

/// An absolute http(s) URL with a host.
fn parse_http_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".to_owned());
    }
    Ok(url)
}

/// `S256` (any case) or `none`; lists separated by spaces or commas may repeat `S256`.
fn parse_pkce(value: &str) -> Option<PkceMethod> {
    let methods: Vec<&str> = value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|m| !m.is_empty())
        .collect();
    if methods.iter().all(|m| m.eq_ignore_ascii_case("s256")) {
        Some(PkceMethod::S256)
    } else if methods.len() == 1 && methods.iter().all(|m| m.eq_ignore_ascii_case("none")) {
        Some(PkceMethod::Disabled)
    } else {
        None
    }
}

/// The known type a generic type name was probably meant to be (`github-enterprise` → `github`).
fn similar_known_type(kind: &ProviderType) -> Option<&'static str> {
    let ProviderType::Generic(name) = kind else {
        return None;
    };
    KNOWN_TYPES
        .iter()
        .copied()
        .map(|known| {
            let squashed = name.replace(['_', ' ', '.'], "-");
            let distance = env::levenshtein(&squashed, known);
            let contains =
                name.len() >= 4 && (squashed.contains(known) || known.contains(&squashed));
            (if contains { 0 } else { distance }, known)
        })
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in [
            "github",
            "primary-github",
            "GitHub",
            "a",
            "a1-b2-c3",
            &"x".repeat(32),
        ] {
            assert!(ProviderId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "a_b",
            "a b",
            "a/b",
            "ä",
            &"x".repeat(33),
        ] {
            assert!(ProviderId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pkce_values() {
        assert_eq!(parse_pkce("S256"), Some(PkceMethod::S256));
        assert_eq!(parse_pkce("s256"), Some(PkceMethod::S256));
        assert_eq!(parse_pkce("none"), Some(PkceMethod::Disabled));
        assert_eq!(parse_pkce("plain"), None);
        assert_eq!(parse_pkce("S256 none"), None);
    }

    #[test]
    fn similar_types() {
        let hint = |t: &str| similar_known_type(&ProviderType::parse(t));
        assert_eq!(hint("github-enterprise"), Some("github"));
        assert_eq!(hint("githbu"), Some("github"));
        assert_eq!(hint("azure_devops"), Some("azure-devops"));
        assert_eq!(hint("bitbucket_server"), Some("bitbucket-server"));
        assert_eq!(hint("oidc"), None);
        assert_eq!(hint("keycloak"), None);
        assert_eq!(hint("github"), None);
    }
}
