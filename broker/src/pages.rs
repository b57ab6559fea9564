//! Server-rendered pages (askama templates in `broker/templates/`), their stylesheet and the
//! provider icons, all built into the binary.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::error::ApiError;

/// Fields the layout needs on every page.
pub struct Chrome {
    /// Path prefix of every link (`/` or `/prefix/`).
    pub base: String,
    /// Signed-in user's name, if any.
    pub user: Option<String>,
    /// CSRF token for the forms of the page.
    pub csrf: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    /// Whether the signed-in user is an admin (for the admin pages' entry).
    pub admin: bool,
    /// Whether the authorization server is on (its pages' entries).
    pub oauth2: bool,
}

impl Chrome {
    /// For a page seen before signing in.
    pub fn anonymous(base: String) -> Self {
        Self {
            base,
            user: None,
            csrf: String::new(),
            nav: "",
            admin: false,
            oauth2: false,
        }
    }
}

/// One provider on the start page.
pub struct ProviderRow {
    pub id: String,
    pub name: String,
    pub icon: String,
    pub linked: bool,
    pub error: Option<String>,
    pub expires: Option<String>,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub chrome: Chrome,
    pub providers: Vec<ProviderRow>,
    pub notice: Option<String>,
}

#[derive(Template)]
#[template(path = "provider.html")]
pub struct ProviderPage {
    pub chrome: Chrome,
    pub id: String,
    pub name: String,
    pub icon: String,
    pub linked: bool,
    /// The accounts linked (shown when there is more than one, or one with a name).
    pub accounts: Vec<AccountRow>,
    pub error: Option<String>,
    /// When the token expires with no refresh token (formatted).
    pub expires_without_refresh: Option<String>,
    /// "Link again before …", when near.
    pub relink: Option<String>,
    /// A GitHub App's installations: the owners, and where to install it.
    pub installed_for: Option<String>,
    pub install_url: Option<String>,
}

/// One linked account of a provider, on its page.
pub struct AccountRow {
    /// The login, or "(unnamed)".
    pub label: String,
    /// The account as a form value (empty for the unnamed one).
    pub account: String,
    pub is_default: bool,
    /// Owners routed to it, comma-separated.
    pub owners: String,
}

#[derive(Template)]
#[template(path = "device.html")]
pub struct DevicePage {
    pub chrome: Chrome,
    pub id: String,
    pub name: String,
    pub icon: String,
    pub next: String,
}

/// A token just created, shown once.
pub struct CreatedToken {
    pub name: String,
    pub token: String,
}

/// One row of the token list.
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub providers: String,
    pub created: String,
    pub expires: String,
}

/// A provider that a token may be narrowed to.
pub struct ProviderChoice {
    pub id: String,
    pub name: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    pub chrome: Chrome,
    pub access_url: String,
    pub created: Option<CreatedToken>,
    pub tokens: Vec<TokenRow>,
    pub providers: Vec<ProviderChoice>,
}

#[derive(Template)]
#[template(path = "cli_auth.html")]
pub struct CliAuthPage {
    pub chrome: Chrome,
    pub token: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub dev: bool,
    /// Where the OIDC button goes, when OIDC is configured.
    pub oidc_start: Option<String>,
    pub oidc_text: String,
    pub oidc_icon: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    title: String,
    message: String,
    detail: String,
}

/// Renders a template as a response with `status`.
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => ApiError::internal(format!("template: {e}")).into_response(),
    }
}

/// The HTML page for an error on a browser route, with the navigation of `chrome`.
pub fn error_page(error: &ApiError, chrome: Chrome) -> Response {
    let title = match error.status {
        StatusCode::BAD_REQUEST => "Something is wrong with this request",
        StatusCode::UNAUTHORIZED => "Not signed in or not allowed",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::METHOD_NOT_ALLOWED => "This page cannot be used that way",
        StatusCode::BAD_GATEWAY => "The provider did not answer as expected",
        _ => "Something went wrong",
    };
    render(
        error.status,
        &ErrorPage {
            chrome,
            title: title.to_owned(),
            message: error.message.clone(),
            detail: error.detail.clone(),
        },
    )
}

/// The stylesheet.
pub fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../assets/style.css"),
    )
        .into_response()
}

/// The pages' script (no page has inline script: the CSP forbids it).
pub fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../assets/pages.js"),
    )
        .into_response()
}

/// The icon tile of one provider type, or the generic key.
#[derive(Template)]
#[template(path = "icon.svg")]
struct IconSvg {
    label: &'static str,
    color: &'static str,
    initials: Option<&'static str>,
}

/// The icons the broker has: a fixed set built into the binary. Nothing of the request is ever
/// written into an answer (a file name reflected into an SVG ran script as the broker).
const ICONS: &[(&str, IconSvg)] = &[
    (
        "github",
        IconSvg {
            label: "GitHub",
            color: "#24292f",
            initials: Some("GH"),
        },
    ),
    (
        "gitlab",
        IconSvg {
            label: "GitLab",
            color: "#e24329",
            initials: Some("GL"),
        },
    ),
    (
        "bitbucket",
        IconSvg {
            label: "Bitbucket",
            color: "#2684ff",
            initials: Some("BB"),
        },
    ),
    (
        "azure-devops",
        IconSvg {
            label: "Azure DevOps",
            color: "#0078d4",
            initials: Some("AZ"),
        },
    ),
    (
        "gitea",
        IconSvg {
            label: "Gitea",
            color: "#609926",
            initials: Some("Gt"),
        },
    ),
    (
        "jfrog",
        IconSvg {
            label: "JFrog",
            color: "#40be46",
            initials: Some("JF"),
        },
    ),
    (
        "slack",
        IconSvg {
            label: "Slack",
            color: "#4a154b",
            initials: Some("Sl"),
        },
    ),
];

/// Generic providers get a drawn key: no font on the system needs to have a key glyph.
const KEY_ICON: IconSvg = IconSvg {
    label: "Provider",
    color: "#6b7280",
    initials: None,
};

/// A provider icon: a rounded tile in the provider's colour with its initials. Answers Coder's
/// built-in paths (`/icon/github.svg`, `/emojis/1f511.png`) so configured `DISPLAY_ICON`s work;
/// any other `.svg`/`.png` name gets the key, anything else is not found.
pub fn icon(file: &str) -> Response {
    let Some(name) = file
        .strip_suffix(".svg")
        .or_else(|| file.strip_suffix(".png"))
    else {
        return ApiError::not_found("No such icon.", "icons are .svg or .png files")
            .into_response();
    };
    let svg = ICONS
        .iter()
        .find(|(known, _)| *known == name)
        .map_or(&KEY_ICON, |(_, svg)| svg);
    match svg.render() {
        Ok(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            svg,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("template: {e}")).into_response(),
    }
}

/// Where a provider's icon is served from: absolute URLs as configured, paths under the base.
pub fn icon_src(base: &str, display_icon: &str) -> String {
    if display_icon.starts_with("http://") || display_icon.starts_with("https://") {
        display_icon.to_owned()
    } else {
        format!("{base}{}", display_icon.trim_start_matches('/'))
    }
}

/// A unix time as `YYYY-MM-DD HH:MM UTC`.
pub fn when(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// The consent page of the authorization endpoint.
#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage {
    pub chrome: Chrome,
    pub app_name: String,
    pub app_icon: String,
    pub username: String,
    /// Where the browser goes afterwards (scheme and host of the redirect URI).
    pub redirect_host: String,
    /// What the scopes allow, in words.
    pub scopes: Vec<String>,
    /// The request, echoed as hidden fields.
    pub fields: Vec<(String, String)>,
    /// The resource the access is for (a registered API or MCP server: name and URL).
    pub resource: Option<(String, String)>,
    /// Where the app's name comes from when no admin registered it (its own document or
    /// registration): said so, with the host that vouches for it.
    pub unverified: Option<String>,
    /// The redirect goes to this computer only (loopback).
    pub local_only: bool,
}

/// One app a user connected.
pub struct ConnectedRow {
    pub id: String,
    pub name: String,
    pub icon: String,
    pub scopes: Vec<String>,
    pub since: String,
}

#[derive(Template)]
#[template(path = "connected_apps.html")]
pub struct ConnectedAppsPage {
    pub chrome: Chrome,
    pub apps: Vec<ConnectedRow>,
    pub notice: Option<String>,
}

/// One client secret of an app.
pub struct SecretRow {
    pub id: String,
    pub truncated: String,
    pub last_used: String,
}

/// One registered app.
pub struct AppRow {
    pub id: String,
    pub name: String,
    pub icon: String,
    pub client_type: String,
    pub redirect_uris: Vec<String>,
    pub scopes: String,
    pub secrets: Vec<SecretRow>,
    pub confidential: bool,
    /// Who made it known: an admin, itself (registration), its metadata document.
    pub origin: String,
    /// The protected resources it may ask tokens for, by name (empty: every one).
    pub resources: String,
}

/// A secret just made, shown once.
pub struct CreatedSecret {
    pub app_name: String,
    pub secret: String,
}

/// A scope an admin may allow.
pub struct ScopeChoice {
    pub name: &'static str,
    pub words: &'static str,
    pub default: bool,
}

#[derive(Template)]
#[template(path = "oauth2_apps.html")]
pub struct OAuth2AppsPage {
    pub chrome: Chrome,
    pub apps: Vec<AppRow>,
    pub created: Option<CreatedSecret>,
    pub scopes: Vec<ScopeChoice>,
    pub issuer: String,
    pub resources: Vec<ResourceRow>,
    /// Whether dynamic client registration is open.
    pub registration_open: bool,
    /// Whether client ID metadata documents are accepted.
    pub client_metadata: bool,
    /// A refusal of the last form (registering a resource), shown above the lists.
    pub problem: Option<String>,
}

/// A protected resource on the admin page.
pub struct ResourceRow {
    pub id: String,
    pub name: String,
    pub url: String,
    pub scopes: String,
    pub metadata_url: String,
}

/// The page of the device authorization grant: enter a code, answer, or done.
#[derive(Template)]
#[template(path = "device_grant.html")]
pub struct DeviceGrantPage {
    pub chrome: Chrome,
    /// The app asking, once a valid code was entered.
    pub app: Option<String>,
    pub app_icon: String,
    pub username: String,
    /// As typed, or as shown (`BCDF-GHJK`).
    pub user_code: String,
    pub scopes: Vec<String>,
    /// A code that is unknown, used or expired.
    pub problem: Option<String>,
    /// The answer was taken: what happened.
    pub done: Option<String>,
}

/// The user's git SSH key.
#[derive(Template)]
#[template(path = "git_ssh_key.html")]
pub struct GitSshKeyPage {
    pub chrome: Chrome,
    /// The `authorized_keys` line.
    pub public_key: String,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// `ed25519`, `ecdsa` or `rsa4096`.
    pub algorithm: String,
    /// What the last action did.
    pub notice: Option<String>,
    /// The configured forges' SSH key pages: (name, URL).
    pub forges: Vec<(String, String)>,
}

/// A workspace token's setup: the providers its workspace requires.
#[derive(Template)]
#[template(path = "workspace_setup.html")]
pub struct WorkspaceSetupPage {
    pub chrome: Chrome,
    /// The token's name.
    pub name: String,
    /// Each required provider.
    pub required: Vec<SetupRow>,
    /// Every required provider is linked.
    pub ready: bool,
}

/// One required provider on the setup page.
pub struct SetupRow {
    pub id: String,
    pub name: String,
    pub linked: bool,
    /// The provider's page, coming back here once linked.
    pub connect_url: String,
}
