//! Per-type defaults, cloud and self-hosted, resolved from environment-shaped input.

use extauth_providers::{
    AccessUrl, GitUsername, PkceMethod, ProviderConfig, ProviderType, Providers,
};

fn load(vars: &[(&str, &str)]) -> Providers {
    Providers::from_vars(vars.iter().copied()).unwrap_or_else(|e| panic!("{e}"))
}

/// One provider from `CODER_EXTERNAL_AUTH_0_<KEY>=<value>` pairs.
fn one(settings: &[(&str, &str)]) -> ProviderConfig {
    let vars: Vec<(String, &str)> = settings
        .iter()
        .map(|(k, v)| (format!("CODER_EXTERNAL_AUTH_0_{k}"), *v))
        .collect();
    let providers = Providers::from_vars(vars.iter().map(|(k, v)| (k.as_str(), *v)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(providers.len(), 1);
    providers.iter().next().unwrap().clone()
}

fn url(u: &Option<url::Url>) -> Option<&str> {
    u.as_ref().map(url::Url::as_str)
}

#[track_caller]
fn check(
    p: &ProviderConfig,
    auth: &str,
    token: &str,
    validate: Option<&str>,
    revoke: Option<&str>,
    regex: Option<&str>,
) {
    assert_eq!(p.auth_url.as_str(), auth, "auth URL");
    assert_eq!(p.token_url.as_str(), token, "token URL");
    assert_eq!(url(&p.validate_url), validate, "validate URL");
    assert_eq!(url(&p.revoke_url), revoke, "revoke URL");
    assert_eq!(p.regex.as_ref().map(regex::Regex::as_str), regex, "regex");
}

#[test]
fn github_cloud() {
    let p = one(&[
        ("TYPE", "github"),
        ("CLIENT_ID", "Iv1.abc"),
        ("CLIENT_SECRET", "s"),
    ]);
    assert_eq!(p.id.as_str(), "github");
    assert_eq!(p.provider_type, ProviderType::Github);
    check(
        &p,
        "https://github.com/login/oauth/authorize",
        "https://github.com/login/oauth/access_token",
        Some("https://api.github.com/user"),
        Some("https://api.github.com/applications/Iv1.abc/grant"),
        Some(r"^(https?://)?github\.com(/.*)?$"),
    );
    assert_eq!(p.scopes, ["repo", "workflow"]);
    assert_eq!(
        url(&p.device_code_url),
        Some("https://github.com/login/device/code")
    );
    assert_eq!(
        url(&p.app_installations_url),
        Some("https://api.github.com/user/installations")
    );
    assert_eq!(url(&p.api_base_url), Some("https://api.github.com/"));
    assert_eq!(p.pkce, PkceMethod::S256);
    assert_eq!(p.display_name, "GitHub");
    assert_eq!(p.display_icon, "/icon/github.svg");
    assert_eq!(p.git_username(), GitUsername::Token);
    assert!(!p.device_flow && !p.no_refresh);
}

#[test]
fn github_enterprise_server_is_derived_from_auth_url() {
    let p = one(&[
        ("TYPE", "github"),
        ("ID", "ghe"),
        ("CLIENT_ID", "abc"),
        ("AUTH_URL", "https://ghe.example.com/login/oauth/authorize"),
    ]);
    check(
        &p,
        "https://ghe.example.com/login/oauth/authorize",
        "https://ghe.example.com/login/oauth/access_token",
        Some("https://ghe.example.com/api/v3/user"),
        Some("https://ghe.example.com/api/v3/applications/abc/grant"),
        Some(r"^(https?://)?ghe\.example\.com(/.*)?$"),
    );
    assert_eq!(url(&p.api_base_url), Some("https://ghe.example.com/api/v3"));
    assert_eq!(
        url(&p.device_code_url),
        Some("https://ghe.example.com/login/device/code")
    );
}

#[test]
fn gitlab_cloud() {
    let p = one(&[
        ("TYPE", "gitlab"),
        ("CLIENT_ID", "c"),
        ("CLIENT_SECRET", "s"),
    ]);
    check(
        &p,
        "https://gitlab.com/oauth/authorize",
        "https://gitlab.com/oauth/token",
        Some("https://gitlab.com/oauth/token/info"),
        Some("https://gitlab.com/oauth/revoke"),
        Some(r"^(https?://)?gitlab\.com(/.*)?$"),
    );
    assert_eq!(url(&p.api_base_url), Some("https://gitlab.com/api/v4"));
    assert_eq!(p.scopes, ["write_repository", "read_api"]);
    assert_eq!(p.git_username(), GitUsername::OAuth2);
    assert_eq!(p.display_name, "GitLab");
    // The cloud authorize URL given explicitly changes nothing.
    let explicit = one(&[
        ("TYPE", "gitlab"),
        ("CLIENT_ID", "c"),
        ("AUTH_URL", "https://gitlab.com/oauth/authorize"),
    ]);
    assert_eq!(
        explicit.token_url.as_str(),
        "https://gitlab.com/oauth/token"
    );
}

#[test]
fn gitlab_self_managed_derives_everything_from_auth_url_host() {
    let p = one(&[
        ("TYPE", "gitlab"),
        ("CLIENT_ID", "c"),
        (
            "AUTH_URL",
            "https://gitlab.example.com:8443/oauth/authorize",
        ),
    ]);
    check(
        &p,
        "https://gitlab.example.com:8443/oauth/authorize",
        "https://gitlab.example.com:8443/oauth/token",
        Some("https://gitlab.example.com:8443/oauth/token/info"),
        Some("https://gitlab.example.com:8443/oauth/revoke"),
        Some(r"^(https?://)?gitlab\.example\.com:8443(/.*)?$"),
    );
    assert_eq!(
        url(&p.api_base_url),
        Some("https://gitlab.example.com:8443/api/v4")
    );

    // Under a path prefix, the prefix is kept (Coder drops it).
    let prefixed = one(&[
        ("TYPE", "gitlab"),
        ("CLIENT_ID", "c"),
        ("AUTH_URL", "https://example.com/gitlab/oauth/authorize"),
    ]);
    assert_eq!(
        prefixed.token_url.as_str(),
        "https://example.com/gitlab/oauth/token"
    );
    assert_eq!(
        url(&prefixed.api_base_url),
        Some("https://example.com/gitlab/api/v4")
    );

    // Only the instance's address: the authorize URL is derived too, with a warning.
    let providers = load(&[
        ("CODER_EXTERNAL_AUTH_0_TYPE", "gitlab"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_SECRET", "s"),
        ("CODER_EXTERNAL_AUTH_0_AUTH_URL", "https://git.example.com"),
    ]);
    let p = providers.get("gitlab").unwrap();
    assert_eq!(
        p.auth_url.as_str(),
        "https://git.example.com/oauth/authorize"
    );
    assert_eq!(
        providers
            .warnings()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "CODER_EXTERNAL_AUTH_0_AUTH_URL: https://git.example.com/ has no path, so it is taken as the instance's base URL; the authorize URL is https://git.example.com/oauth/authorize"
        ]
    );
}

#[test]
fn bitbucket_legacy_alias_keeps_its_id() {
    let p = one(&[("TYPE", "bitbucket"), ("CLIENT_ID", "c")]);
    assert_eq!(p.id.as_str(), "bitbucket");
    assert_eq!(p.provider_type, ProviderType::BitbucketCloud);
    assert_eq!(p.provider_type.as_str(), "bitbucket-cloud");
    check(
        &p,
        "https://bitbucket.org/site/oauth2/authorize",
        "https://bitbucket.org/site/oauth2/access_token",
        Some("https://api.bitbucket.org/2.0/user"),
        None,
        Some(r"^(https?://)?bitbucket\.org(/.*)?$"),
    );
    assert_eq!(p.scopes, ["account", "repository:write"]);
    assert_eq!(p.pkce, PkceMethod::Disabled);
    assert_eq!(p.git_username(), GitUsername::XTokenAuth);

    let cloud = one(&[("TYPE", "bitbucket-cloud"), ("CLIENT_ID", "c")]);
    assert_eq!(cloud.id.as_str(), "bitbucket-cloud");
}

#[test]
fn bitbucket_server_is_derived_from_auth_url() {
    let p = one(&[
        ("TYPE", "bitbucket-server"),
        ("CLIENT_ID", "c"),
        (
            "AUTH_URL",
            "https://bb.example.com/rest/oauth2/latest/authorize",
        ),
    ]);
    check(
        &p,
        "https://bb.example.com/rest/oauth2/latest/authorize",
        "https://bb.example.com/rest/oauth2/latest/token",
        Some("https://bb.example.com/rest/api/latest/inbox/pull-requests/count"),
        None,
        Some(r"^(https?://)?bb\.example\.com(/.*)?$"),
    );
    assert_eq!(p.scopes, ["PUBLIC_REPOS", "REPO_READ", "REPO_WRITE"]);
    assert_eq!(p.pkce, PkceMethod::Disabled);
    assert_eq!(p.git_username(), GitUsername::XTokenAuth);
    assert_eq!(p.display_name, "Bitbucket Server");
}

#[test]
fn azure_devops() {
    let p = one(&[
        ("TYPE", "azure-devops"),
        ("CLIENT_ID", "c"),
        ("CLIENT_SECRET", "assertion"),
    ]);
    check(
        &p,
        "https://app.vssps.visualstudio.com/oauth2/authorize",
        "https://app.vssps.visualstudio.com/oauth2/token",
        None,
        None,
        Some(r"^(https?://)?dev\.azure\.com(/.*)?$"),
    );
    assert_eq!(p.scopes, ["vso.code_write"]);
    assert_eq!(p.pkce, PkceMethod::Disabled);
    assert_eq!(p.git_username(), GitUsername::Token);
}

#[test]
fn azure_devops_entra_token_url_has_the_tenant() {
    let p = one(&[
        ("TYPE", "azure-devops-entra"),
        ("CLIENT_ID", "c"),
        (
            "AUTH_URL",
            "https://login.microsoftonline.com/f00-ba4/oauth2/authorize",
        ),
    ]);
    check(
        &p,
        "https://login.microsoftonline.com/f00-ba4/oauth2/authorize",
        "https://login.microsoftonline.com/f00-ba4/oauth2/token",
        None,
        None,
        Some(r"^(https?://)?dev\.azure\.com(/.*)?$"),
    );
    assert!(p.scopes.is_empty());
    assert_eq!(p.display_name, "Azure DevOps (Entra)");
}

#[test]
fn gitea_cloud_and_self_hosted() {
    let cloud = one(&[("TYPE", "gitea"), ("CLIENT_ID", "c")]);
    check(
        &cloud,
        "https://gitea.com/login/oauth/authorize",
        "https://gitea.com/login/oauth/access_token",
        Some("https://gitea.com/login/oauth/userinfo"),
        None,
        Some(r"^(https?://)?gitea\.com(/.*)?$"),
    );
    // No leading space in any scope (Coder's default has " write:repository").
    assert_eq!(
        cloud.scopes,
        ["read:repository", "write:repository", "read:user"]
    );
    assert_eq!(url(&cloud.api_base_url), Some("https://gitea.com/api/v1"));

    let own = one(&[
        ("TYPE", "gitea"),
        ("CLIENT_ID", "c"),
        ("AUTH_URL", "https://code.example.com/login/oauth/authorize"),
    ]);
    check(
        &own,
        "https://code.example.com/login/oauth/authorize",
        "https://code.example.com/login/oauth/access_token",
        Some("https://code.example.com/login/oauth/userinfo"),
        None,
        Some(r"^(https?://)?code\.example\.com(/.*)?$"),
    );
    // The API base follows the instance (Coder keeps gitea.com).
    assert_eq!(
        url(&own.api_base_url),
        Some("https://code.example.com/api/v1")
    );
}

#[test]
fn jfrog_token_url_contains_client_id() {
    let p = one(&[
        ("TYPE", "jfrog"),
        ("CLIENT_ID", "my-client"),
        ("AUTH_URL", "https://jfrog.example.com/ui/authorization"),
    ]);
    check(
        &p,
        "https://jfrog.example.com/ui/authorization",
        "https://jfrog.example.com/access/api/v1/integrations/my-client/token",
        Some("https://jfrog.example.com/access/api/v1/system/ping"),
        None,
        None,
    );
    assert_eq!(p.scopes, ["applied-permissions/user"]);
    assert_eq!(p.pkce, PkceMethod::Disabled);
    assert!(!p.provider_type.is_git());
}

#[test]
fn slack_keeps_authed_user() {
    let p = one(&[("TYPE", "slack"), ("CLIENT_ID", "c")]);
    check(
        &p,
        "https://slack.com/oauth/v2/authorize",
        "https://slack.com/api/oauth.v2.access",
        None,
        Some("https://slack.com/api/auth.revoke"),
        None,
    );
    assert_eq!(p.extra_token_keys, ["authed_user"]);
    assert!(p.scopes.is_empty());
}

#[test]
fn generic_provider_gets_global_defaults_only() {
    let p = one(&[
        ("TYPE", "Keycloak"),
        ("CLIENT_ID", "c"),
        ("AUTH_URL", "https://kc.example.com/auth"),
        ("TOKEN_URL", "https://kc.example.com/token"),
    ]);
    assert_eq!(p.id.as_str(), "Keycloak", "ID defaults to TYPE as written");
    assert_eq!(
        p.provider_type,
        ProviderType::Generic("keycloak".to_owned())
    );
    assert_eq!(p.display_name, "Keycloak");
    assert_eq!(p.display_icon, "/emojis/1f511.png");
    assert_eq!(p.pkce, PkceMethod::S256);
    assert!(p.regex.is_none() && p.validate_url.is_none() && p.revoke_url.is_none());
    assert!(p.scopes.is_empty());
    assert_eq!(p.git_username(), GitUsername::Token);
}

#[test]
fn type_is_case_insensitive() {
    let p = one(&[("TYPE", "GitHub"), ("CLIENT_ID", "c")]);
    assert_eq!(p.provider_type, ProviderType::Github);
    assert_eq!(p.id.as_str(), "GitHub");
    assert_eq!(
        url(&p.revoke_url),
        Some("https://api.github.com/applications/c/grant")
    );
}

#[test]
fn explicit_settings_override_defaults() {
    let p = one(&[
        ("TYPE", "github"),
        ("ID", "primary-github"),
        ("CLIENT_ID", "c"),
        ("CLIENT_SECRET", "s"),
        ("AUTH_URL", "https://github.com/login/oauth/authorize"),
        ("TOKEN_URL", "https://tokens.example.com/t"),
        ("VALIDATE_URL", "https://v.example.com/user"),
        ("REVOKE_URL", "https://r.example.com/revoke"),
        ("REGEX", r"^https://github\.com/my-org/.*$"),
        ("SCOPES", "  repo   read:org "),
        ("EXTRA_TOKEN_KEYS", "a b"),
        ("DEVICE_FLOW", "TRUE"),
        ("DEVICE_CODE_URL", "https://github.com/login/device/code"),
        ("NO_REFRESH", "1"),
        (
            "APP_INSTALL_URL",
            "https://github.com/apps/x/installations/new",
        ),
        ("DISPLAY_NAME", "GitHub (my-org)"),
        ("DISPLAY_ICON", "https://cdn.example.com/gh.svg"),
        ("PKCE_METHODS", "none"),
        ("API_BASE_URL", "https://api.example.com"),
    ]);
    assert_eq!(p.id.as_str(), "primary-github");
    check(
        &p,
        "https://github.com/login/oauth/authorize",
        "https://tokens.example.com/t",
        Some("https://v.example.com/user"),
        Some("https://r.example.com/revoke"),
        Some(r"^https://github\.com/my-org/.*$"),
    );
    assert_eq!(p.scopes, ["repo", "read:org"]);
    assert_eq!(p.extra_token_keys, ["a", "b"]);
    assert!(p.device_flow && p.no_refresh);
    assert_eq!(p.pkce, PkceMethod::Disabled);
    assert_eq!(p.display_name, "GitHub (my-org)");
    assert_eq!(p.display_icon, "https://cdn.example.com/gh.svg");
    assert_eq!(url(&p.api_base_url), Some("https://api.example.com/"));
    assert_eq!(
        url(&p.app_install_url),
        Some("https://github.com/apps/x/installations/new")
    );
    assert_eq!(p.client_secret.as_ref().unwrap().secret(), "s");
}

#[test]
fn callback_url_keeps_the_access_url_path_prefix() {
    let p = one(&[
        ("TYPE", "github"),
        ("ID", "primary-github"),
        ("CLIENT_ID", "c"),
    ]);
    for (access, callback) in [
        (
            "https://coder.example.com",
            "https://coder.example.com/external-auth/primary-github/callback",
        ),
        (
            "https://coder.example.com/",
            "https://coder.example.com/external-auth/primary-github/callback",
        ),
        (
            "https://example.com/extauth",
            "https://example.com/extauth/external-auth/primary-github/callback",
        ),
        (
            "https://example.com/extauth/",
            "https://example.com/extauth/external-auth/primary-github/callback",
        ),
        (
            "http://127.0.0.1:3000",
            "http://127.0.0.1:3000/external-auth/primary-github/callback",
        ),
    ] {
        let access = AccessUrl::parse(access).unwrap();
        assert_eq!(p.callback_url(&access).as_str(), callback);
    }
    let access = AccessUrl::parse("https://example.com/extauth").unwrap();
    assert_eq!(
        p.link_url(&access).as_str(),
        "https://example.com/extauth/external-auth/primary-github"
    );
}

#[test]
fn mcp_settings_are_accepted_with_a_warning() {
    let providers = load(&[
        ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_SECRET", "s"),
        ("CODER_EXTERNAL_AUTH_0_MCP_URL", "https://mcp.example.com"),
    ]);
    assert_eq!(
        providers
            .warnings()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["CODER_EXTERNAL_AUTH_0_MCP_URL: deprecated Coder AI Bridge setting; extauth ignores it"]
    );
}

#[test]
fn unrelated_variables_are_ignored() {
    let providers = load(&[
        ("PATH", "/usr/bin"),
        ("CODER_ACCESS_URL", "https://x"),
        ("CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS", "k"),
        ("CODER_EXTERNAL_AUTH_ACCESS_TOKEN_github", "t"),
    ]);
    assert!(providers.is_empty());
    assert!(providers.warnings().is_empty());
}

#[test]
fn near_miss_prefix_is_a_warning() {
    let providers = load(&[("CODER_EXTERNAL_AUTH0_TYPE", "github")]);
    assert!(providers.is_empty());
    assert_eq!(
        providers
            .warnings()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "CODER_EXTERNAL_AUTH0_TYPE: ignored: provider settings are named CODER_EXTERNAL_AUTH_<N>_<KEY> (or CODER_GITAUTH_<N>_<KEY>)"
        ]
    );
}
