//! The provider catalog: known types, their defaults, and the URLs derived for self-hosted ones.
//!
//! Defaults only fill settings the operator left empty; an explicit value always wins. For
//! self-hosted forges the instance base URL is read from `AUTH_URL` (its origin plus any path
//! prefix before the type's well-known authorize path), so a forge served under
//! `https://example.com/gitlab/` gets `https://example.com/gitlab/oauth/token`, where Coder
//! would drop the prefix.

use url::Url;

/// A provider type, normalised once from `TYPE` (trimmed, case-insensitive).
///
/// Every behaviour switch in extauth matches on this enum, never on the raw string, so
/// `TYPE=GitHub` behaves exactly like `TYPE=github` (Coder compares raw strings in places).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProviderType {
    /// github.com, or GitHub Enterprise Server when `AUTH_URL` points elsewhere.
    Github,
    /// gitlab.com, or a self-managed GitLab when `AUTH_URL` points elsewhere.
    Gitlab,
    /// Bitbucket Cloud (also the legacy type name `bitbucket`).
    BitbucketCloud,
    /// Bitbucket Server / Data Center; needs `AUTH_URL`.
    BitbucketServer,
    /// Azure DevOps with its own OAuth (JWT-bearer assertion exchange).
    AzureDevops,
    /// Azure DevOps through Entra ID v1; needs `AUTH_URL` with the tenant.
    AzureDevopsEntra,
    /// Gitea (gitea.com unless `AUTH_URL` points elsewhere).
    Gitea,
    /// JFrog Artifactory; needs `AUTH_URL`.
    Jfrog,
    /// Slack; keeps `authed_user` from the token response.
    Slack,
    /// Any other name: a generic OAuth2 provider. Holds the normalised (lower-case) name.
    Generic(String),
}

/// Names of the known types, as accepted in `TYPE` (plus the legacy alias `bitbucket`).
pub(crate) const KNOWN_TYPES: &[&str] = &[
    "github",
    "gitlab",
    "bitbucket-cloud",
    "bitbucket-server",
    "azure-devops",
    "azure-devops-entra",
    "gitea",
    "jfrog",
    "slack",
];

impl ProviderType {
    /// Normalises a `TYPE` value. The legacy `bitbucket` becomes [`ProviderType::BitbucketCloud`].
    pub fn parse(raw: &str) -> Self {
        let normalized = raw.trim().to_ascii_lowercase();
        match normalized.as_str() {
            "github" => Self::Github,
            "gitlab" => Self::Gitlab,
            "bitbucket" | "bitbucket-cloud" => Self::BitbucketCloud,
            "bitbucket-server" => Self::BitbucketServer,
            "azure-devops" => Self::AzureDevops,
            "azure-devops-entra" => Self::AzureDevopsEntra,
            "gitea" => Self::Gitea,
            "jfrog" => Self::Jfrog,
            "slack" => Self::Slack,
            _ => Self::Generic(normalized),
        }
    }

    /// The canonical name (`bitbucket-cloud` for the legacy alias).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::BitbucketCloud => "bitbucket-cloud",
            Self::BitbucketServer => "bitbucket-server",
            Self::AzureDevops => "azure-devops",
            Self::AzureDevopsEntra => "azure-devops-entra",
            Self::Gitea => "gitea",
            Self::Jfrog => "jfrog",
            Self::Slack => "slack",
            Self::Generic(name) => name,
        }
    }

    /// Whether this is a git forge (its tokens are meant for `git` over HTTPS).
    pub fn is_git(&self) -> bool {
        !matches!(self, Self::Jfrog | Self::Slack | Self::Generic(_))
    }

    /// The username git is given alongside the token (Coder's per-type rule).
    pub fn git_username(&self) -> GitUsername {
        match self {
            Self::Gitlab => GitUsername::OAuth2,
            Self::BitbucketCloud | Self::BitbucketServer => GitUsername::XTokenAuth,
            _ => GitUsername::Token,
        }
    }
}

impl std::fmt::Display for ProviderType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What git's username is for a provider's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitUsername {
    /// Username `oauth2`, password the token (GitLab).
    OAuth2,
    /// Username `x-token-auth`, password the token (Bitbucket).
    XTokenAuth,
    /// The token itself is the username, password empty (GitHub, Azure DevOps, Gitea, others).
    Token,
}

impl GitUsername {
    /// `oauth2`, `x-token-auth` or `token`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OAuth2 => "oauth2",
            Self::XTokenAuth => "x-token-auth",
            Self::Token => "token",
        }
    }
}

/// Which PKCE method the authorization-code flow uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PkceMethod {
    /// RFC 7636 S256 challenge (the default).
    S256,
    /// No PKCE (`PKCE_METHODS=none`), for providers that reject the parameters.
    Disabled,
}

impl PkceMethod {
    /// The list shape Coder exposes as `code_challenge_methods_supported`.
    pub fn as_list(self) -> &'static [&'static str] {
        match self {
            Self::S256 => &["S256"],
            Self::Disabled => &["none"],
        }
    }
}

/// Per-type defaults, already specialised for the operator's `AUTH_URL` and client id.
#[derive(Debug, Default)]
pub(crate) struct Defaults {
    pub auth_url: Option<Url>,
    pub token_url: Option<Url>,
    pub validate_url: Option<Url>,
    pub revoke_url: Option<Url>,
    pub device_code_url: Option<Url>,
    pub app_installations_url: Option<Url>,
    pub api_base_url: Option<Url>,
    pub regex: Option<String>,
    pub scopes: &'static [&'static str],
    pub extra_token_keys: &'static [&'static str],
    pub display_name: Option<&'static str>,
    pub display_icon: Option<&'static str>,
    pub pkce: Option<PkceMethod>,
    /// Set when `AUTH_URL` was only a base URL and the authorize URL was derived from it.
    pub auth_url_was_base: bool,
}

/// Why defaults could not be derived for a type.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DeriveError {
    /// The type has no fixed endpoints; `AUTH_URL` must name the instance.
    AuthUrlRequired { example: &'static str },
    /// `AUTH_URL` of azure-devops-entra is not `https://login.microsoftonline.com/<tenant>/oauth2/authorize`.
    EntraShape,
}

const ENTRA_EXAMPLE: &str = "https://login.microsoftonline.com/<tenant-id>/oauth2/authorize";

/// The defaults for `kind`, given the operator's `AUTH_URL` (already parsed) and client id.
pub(crate) fn defaults(
    kind: &ProviderType,
    auth_url: Option<&Url>,
    client_id: &str,
) -> Result<Defaults, DeriveError> {
    let mut d = Defaults {
        pkce: Some(PkceMethod::S256),
        ..Defaults::default()
    };
    match kind {
        ProviderType::Github => {
            d.display_name = Some("GitHub");
            d.display_icon = Some("/icon/github.svg");
            d.scopes = &["repo", "workflow"];
            match auth_url.filter(|u| u.host_str() != Some("github.com")) {
                None => {
                    d.auth_url = fixed("https://github.com/login/oauth/authorize");
                    d.token_url = fixed("https://github.com/login/oauth/access_token");
                    d.validate_url = fixed("https://api.github.com/user");
                    d.device_code_url = fixed("https://github.com/login/device/code");
                    d.app_installations_url = fixed("https://api.github.com/user/installations");
                    d.api_base_url = fixed("https://api.github.com");
                    d.regex = Some(r"^(https?://)?github\.com(/.*)?$".to_owned());
                    if !client_id.is_empty() {
                        d.revoke_url = Url::parse(&format!(
                            "https://api.github.com/applications/{}/grant",
                            path_segment(client_id)
                        ))
                        .ok();
                    }
                }
                Some(auth) => {
                    // GitHub Enterprise Server: web endpoints at the root, REST API under /api/v3.
                    let base = Instance::from_auth_url(auth, "/login/oauth/authorize");
                    d.auth_url_was_base = base.auth_url_was_base;
                    d.auth_url = base.join("/login/oauth/authorize");
                    d.token_url = base.join("/login/oauth/access_token");
                    d.validate_url = base.join("/api/v3/user");
                    d.device_code_url = base.join("/login/device/code");
                    d.app_installations_url = base.join("/api/v3/user/installations");
                    d.api_base_url = base.join("/api/v3");
                    d.regex = Some(base.host_regex());
                    if !client_id.is_empty() {
                        d.revoke_url = base.join(&format!(
                            "/api/v3/applications/{}/grant",
                            path_segment(client_id)
                        ));
                    }
                }
            }
        }
        ProviderType::Gitlab => {
            d.display_name = Some("GitLab");
            d.display_icon = Some("/icon/gitlab.svg");
            d.scopes = &["write_repository", "read_api"];
            let base = match auth_url.filter(|u| u.host_str() != Some("gitlab.com")) {
                None => Instance::fixed("https://gitlab.com"),
                Some(auth) => Instance::from_auth_url(auth, "/oauth/authorize"),
            };
            d.auth_url_was_base = base.auth_url_was_base;
            d.auth_url = base.join("/oauth/authorize");
            d.token_url = base.join("/oauth/token");
            d.validate_url = base.join("/oauth/token/info");
            d.revoke_url = base.join("/oauth/revoke");
            d.api_base_url = base.join("/api/v4");
            d.regex = Some(base.host_regex());
        }
        ProviderType::BitbucketCloud => {
            d.display_name = Some("BitBucket");
            d.display_icon = Some("/icon/bitbucket.svg");
            d.scopes = &["account", "repository:write"];
            d.pkce = Some(PkceMethod::Disabled);
            d.auth_url = fixed("https://bitbucket.org/site/oauth2/authorize");
            d.token_url = fixed("https://bitbucket.org/site/oauth2/access_token");
            d.validate_url = fixed("https://api.bitbucket.org/2.0/user");
            d.api_base_url = fixed("https://api.bitbucket.org/2.0");
            d.regex = Some(r"^(https?://)?bitbucket\.org(/.*)?$".to_owned());
        }
        ProviderType::BitbucketServer => {
            d.display_name = Some("Bitbucket Server");
            d.display_icon = Some("/icon/bitbucket.svg");
            d.scopes = &["PUBLIC_REPOS", "REPO_READ", "REPO_WRITE"];
            d.pkce = Some(PkceMethod::Disabled);
            let auth = auth_url.ok_or(DeriveError::AuthUrlRequired {
                example: "https://bitbucket.example.com/rest/oauth2/latest/authorize",
            })?;
            let base = Instance::from_auth_url(auth, "/rest/oauth2/latest/authorize");
            d.auth_url_was_base = base.auth_url_was_base;
            d.auth_url = base.join("/rest/oauth2/latest/authorize");
            d.token_url = base.join("/rest/oauth2/latest/token");
            // Answers 200 when the token is good and 401 when not, which is all validation needs.
            d.validate_url = base.join("/rest/api/latest/inbox/pull-requests/count");
            d.api_base_url = base.join("/rest/api/latest");
            d.regex = Some(base.host_regex());
        }
        ProviderType::AzureDevops => {
            d.display_name = Some("Azure DevOps");
            d.display_icon = Some("/icon/azure-devops.svg");
            d.scopes = &["vso.code_write"];
            d.pkce = Some(PkceMethod::Disabled);
            d.auth_url = fixed("https://app.vssps.visualstudio.com/oauth2/authorize");
            d.token_url = fixed("https://app.vssps.visualstudio.com/oauth2/token");
            d.regex = Some(r"^(https?://)?dev\.azure\.com(/.*)?$".to_owned());
        }
        ProviderType::AzureDevopsEntra => {
            d.display_name = Some("Azure DevOps (Entra)");
            d.display_icon = Some("/icon/azure-devops.svg");
            d.pkce = Some(PkceMethod::Disabled);
            d.regex = Some(r"^(https?://)?dev\.azure\.com(/.*)?$".to_owned());
            let auth = auth_url.ok_or(DeriveError::AuthUrlRequired {
                example: ENTRA_EXAMPLE,
            })?;
            let tenant = entra_tenant(auth).ok_or(DeriveError::EntraShape)?;
            d.token_url = Instance::origin(auth).join(&format!("/{tenant}/oauth2/token"));
        }
        ProviderType::Gitea => {
            d.display_name = Some("Gitea");
            d.display_icon = Some("/icon/gitea.svg");
            // Coder's list has " write:repository" with a leading space; Gitea rejects it.
            d.scopes = &["read:repository", "write:repository", "read:user"];
            let base = match auth_url {
                None => Instance::fixed("https://gitea.com"),
                Some(auth) => Instance::from_auth_url(auth, "/login/oauth/authorize"),
            };
            d.auth_url_was_base = base.auth_url_was_base;
            d.auth_url = base.join("/login/oauth/authorize");
            d.token_url = base.join("/login/oauth/access_token");
            d.validate_url = base.join("/login/oauth/userinfo");
            d.api_base_url = base.join("/api/v1");
            d.regex = Some(base.host_regex());
        }
        ProviderType::Jfrog => {
            d.display_name = Some("JFrog Artifactory");
            d.display_icon = Some("/icon/jfrog.svg");
            d.scopes = &["applied-permissions/user"];
            d.pkce = Some(PkceMethod::Disabled);
            let auth = auth_url.ok_or(DeriveError::AuthUrlRequired {
                example: "https://jfrog.example.com/ui/authorization",
            })?;
            let base = Instance::from_auth_url(auth, "/ui/authorization");
            d.auth_url_was_base = base.auth_url_was_base;
            d.auth_url = base.join("/ui/authorization");
            if !client_id.is_empty() {
                d.token_url = base.join(&format!(
                    "/access/api/v1/integrations/{}/token",
                    path_segment(client_id)
                ));
            }
            d.validate_url = base.join("/access/api/v1/system/ping");
            // No default regex on purpose: Artifactory serves every kind of package host.
        }
        ProviderType::Slack => {
            d.display_name = Some("Slack");
            d.display_icon = Some("/icon/slack.svg");
            d.pkce = Some(PkceMethod::Disabled);
            d.auth_url = fixed("https://slack.com/oauth/v2/authorize");
            d.token_url = fixed("https://slack.com/api/oauth.v2.access");
            d.revoke_url = fixed("https://slack.com/api/auth.revoke");
            d.extra_token_keys = &["authed_user"];
        }
        ProviderType::Generic(_) => {}
    }
    Ok(d)
}

/// The tenant of an Entra ID v1 authorize URL, `/<tenant>/oauth2/authorize`; `None` for any
/// other shape. Written with iterators so that no input can index out of bounds (Coder's
/// version can panic on short paths).
pub(crate) fn entra_tenant(auth: &Url) -> Option<&str> {
    let mut segments = auth.path().trim_end_matches('/').split('/');
    let (Some(""), Some(tenant), Some("oauth2"), Some("authorize"), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return None;
    };
    let valid = !tenant.is_empty()
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    valid.then_some(tenant)
}

/// A self-hosted instance: the origin plus an optional path prefix, without trailing slash.
struct Instance {
    base: String,
    host_port: String,
    auth_url_was_base: bool,
}

impl Instance {
    fn fixed(base: &'static str) -> Self {
        Self {
            base: base.to_owned(),
            host_port: base.trim_start_matches("https://").to_owned(),
            auth_url_was_base: false,
        }
    }

    fn origin(url: &Url) -> Self {
        Self {
            base: url.origin().ascii_serialization(),
            host_port: host_port(url),
            auth_url_was_base: false,
        }
    }

    /// Reads the instance from an `AUTH_URL`: the part before `authorize_path`, or the whole
    /// URL when it has no path at all (the operator gave just the instance's address).
    fn from_auth_url(auth: &Url, authorize_path: &str) -> Self {
        let mut instance = Self::origin(auth);
        let path = auth.path().trim_end_matches('/');
        if path.is_empty() {
            instance.auth_url_was_base = true;
        } else if let Some(prefix) = path.strip_suffix(authorize_path) {
            instance.base.push_str(prefix);
        }
        instance
    }

    fn join(&self, path: &str) -> Option<Url> {
        Url::parse(&format!("{}{}", self.base, path)).ok()
    }

    fn host_regex(&self) -> String {
        format!(r"^(https?://)?{}(/.*)?$", regex::escape(&self.host_port))
    }
}

fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

fn fixed(url: &'static str) -> Option<Url> {
    Url::parse(url).ok()
}

/// Percent-encodes a value placed in one URL path segment (client ids are usually safe, but
/// nothing guarantees it).
fn path_segment(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_tenant_accepts_only_the_v1_shape() {
        let tenant = |s: &str| entra_tenant(&Url::parse(s).unwrap()).map(str::to_owned);
        assert_eq!(
            tenant("https://login.microsoftonline.com/abc-123/oauth2/authorize"),
            Some("abc-123".to_owned())
        );
        assert_eq!(
            tenant("https://login.microsoftonline.com/abc/oauth2/authorize/"),
            Some("abc".to_owned())
        );
        for bad in [
            "https://login.microsoftonline.com",
            "https://login.microsoftonline.com/",
            "https://login.microsoftonline.com/abc",
            "https://login.microsoftonline.com/abc/oauth2",
            "https://login.microsoftonline.com//oauth2/authorize",
            "https://login.microsoftonline.com/abc/oauth2/v2.0/authorize",
            "https://login.microsoftonline.com/abc/oauth2/token",
            "https://login.microsoftonline.com/a/b/oauth2/authorize",
        ] {
            assert_eq!(tenant(bad), None, "{bad}");
        }
    }

    #[test]
    fn type_names_normalise_once() {
        assert_eq!(ProviderType::parse(" GitHub "), ProviderType::Github);
        assert_eq!(
            ProviderType::parse("BITBUCKET"),
            ProviderType::BitbucketCloud
        );
        assert_eq!(ProviderType::parse("bitbucket").as_str(), "bitbucket-cloud");
        assert_eq!(
            ProviderType::parse("My-OIDC"),
            ProviderType::Generic("my-oidc".to_owned())
        );
        for name in KNOWN_TYPES {
            assert_eq!(ProviderType::parse(name).as_str(), *name);
        }
    }

    #[test]
    fn client_id_is_escaped_in_paths() {
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(path_segment("Iv1.abc-DEF_0"), "Iv1.abc-DEF_0");
    }
}
