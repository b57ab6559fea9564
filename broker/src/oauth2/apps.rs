//! Apps registered by admins: their redirect URIs (checked when registered, matched exactly
//! when used), their client secrets (shown once, stored hashed) and what ends with them.

use crate::clock::now;
use crate::failure::Failure;
use crate::identity::hash;
use crate::random;
use crate::state::AppState;
pub use crate::store::{AppOrigin, ClientType, OAuth2App};
use crate::store::{AppSecret, FamilyFilter};

pub use super::redirect_policy::{glob, loopback};
use super::scopes;

/// At most this many redirect URIs per app, each at most this long (Coder's limits).
const MAX_REDIRECTS: usize = 32;
const MAX_REDIRECT_LEN: usize = 2048;

/// Schemes never allowed as a redirect: they run code or reach files or other programs.
const BLOCKED_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "ftp",
    "vbscript",
    "blob",
    "mailto",
    "tel",
    "sms",
    "about",
];

/// What an admin gives to create or change an app.
#[derive(Debug, Clone, Default)]
pub struct AppInput {
    /// Display name.
    pub name: String,
    /// Icon URL (may be empty).
    pub icon: String,
    /// Redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Confidential unless said.
    pub client_type: Option<ClientType>,
    /// Scopes it may ask for (`None`: the defaults).
    pub scopes: Option<Vec<String>>,
    /// What a request without `scope` gets (`None`: the defaults it may ask for).
    pub default_scopes: Option<Vec<String>>,
    /// The protected resources (ids) it may ask tokens for (`None`: as before, or all).
    pub resources: Option<Vec<String>>,
}

/// Checks one redirect URI for an app of `client_type`; the reason if refused.
pub fn check_redirect(uri: &str, client_type: ClientType) -> Result<(), String> {
    if uri.len() > MAX_REDIRECT_LEN {
        return Err(format!("longer than {MAX_REDIRECT_LEN} characters"));
    }
    let url = url::Url::parse(uri).map_err(|e| format!("not an absolute URL ({e})"))?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err("has a fragment (#…), which redirects may not carry".to_owned());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback(&url) || url.host_str().is_some_and(|h| h.ends_with(".localhost")) => {
            Ok(())
        }
        "http" => Err("http:// only for loopback (127.0.0.1, [::1], localhost); use https://".to_owned()),
        scheme if BLOCKED_SCHEMES.contains(&scheme) => {
            Err(format!("the scheme {scheme}: is never allowed"))
        }
        _ if client_type == ClientType::Confidential => Err(
            "custom schemes (e.g. vscode://) only for public clients; make the app public or use https://"
                .to_owned(),
        ),
        _ if url.cannot_be_a_base() && !uri.contains(":/") => Err(
            "a custom scheme needs a path or authority (e.g. vscode://publisher.ext/callback)"
                .to_owned(),
        ),
        _ => Ok(()),
    }
}

/// Whether `presented` is one of the app's redirect URIs: exactly, or a loopback one on
/// another port (native apps listen on whatever port is free).
pub fn redirect_matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    let (Ok(a), Ok(b)) = (url::Url::parse(registered), url::Url::parse(presented)) else {
        return false;
    };
    a.scheme() == "http"
        && b.scheme() == "http"
        && loopback(&a)
        && a.host_str() == b.host_str()
        && a.path() == b.path()
        && a.query() == b.query()
        && a.username() == b.username()
        && a.password().is_none()
        && b.password().is_none()
        && b.fragment().is_none()
}

fn validate(
    input: &AppInput,
    client_type: ClientType,
) -> Result<(Vec<String>, Vec<String>), Failure> {
    fn invalid<T>(what: String) -> Result<T, Failure> {
        Err(Failure::InvalidApp(what))
    }
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return invalid("name: give 1 to 64 characters".to_owned());
    }
    if !input.icon.is_empty() {
        match url::Url::parse(&input.icon) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => {}
            _ => return invalid(format!("icon: {:?} is not an http(s) URL", input.icon)),
        }
    }
    if input.redirect_uris.is_empty() {
        return invalid("redirect_uris: give at least one (or callback_url)".to_owned());
    }
    if input.redirect_uris.len() > MAX_REDIRECTS {
        return invalid(format!("redirect_uris: at most {MAX_REDIRECTS}"));
    }
    for uri in &input.redirect_uris {
        check_redirect(uri, client_type)
            .map_err(|why| Failure::InvalidApp(format!("redirect_uris: {uri:?} {why}")))?;
    }
    let allowed = match &input.scopes {
        Some(s) => s.clone(),
        None => scopes::DEFAULT.iter().map(|s| (*s).to_owned()).collect(),
    };
    let allowed_set = scopes::parse(&allowed.join(" "))
        .map_err(|bad| Failure::InvalidApp(format!("scopes: unknown scope {bad:?}")))?;
    let defaults = match &input.default_scopes {
        Some(d) => d.clone(),
        None => scopes::DEFAULT
            .iter()
            .filter(|s| allowed_set.contains(**s))
            .map(|s| (*s).to_owned())
            .collect(),
    };
    let default_set = scopes::parse(&defaults.join(" "))
        .map_err(|bad| Failure::InvalidApp(format!("default_scopes: unknown scope {bad:?}")))?;
    if let Some(extra) = default_set.difference(&allowed_set).next() {
        return invalid(format!(
            "default_scopes: {extra:?} is not among the app's scopes"
        ));
    }
    Ok((
        allowed_set.into_iter().collect(),
        default_set.into_iter().collect(),
    ))
}

/// Registers an app.
pub async fn create(state: &AppState, input: AppInput) -> Result<OAuth2App, Failure> {
    let client_type = input.client_type.unwrap_or(ClientType::Confidential);
    let (allowed, defaults) = validate(&input, client_type)?;
    let resources = input.resources.unwrap_or_default();
    super::resources::check_ids(state, &resources).await?;
    let app = OAuth2App {
        id: random::hex_token::<16>(),
        name: input.name.trim().to_owned(),
        icon: input.icon,
        redirect_uris: input.redirect_uris,
        client_type,
        scopes: allowed,
        default_scopes: defaults,
        secrets: Vec::new(),
        created_at: now(),
        updated_at: now(),
        origin: AppOrigin::Admin,
        resources,
        registration_hash: None,
        stale_ms: None,
        granted: false,
    };
    state.store.put_oauth2_app(&app).await?;
    tracing::info!(target: "extauth::audit", event = "oauth2.app.created", app = %app.id, name = %app.name, "registered an OAuth2 app");
    Ok(app)
}

/// The `client_id` of the `extauth` CLI, a public app every broker has: `extauth login` signs
/// in with the device authorization grant, nothing to register.
pub const CLI_APP: &str = "extauth-cli";

/// Makes the CLI's app if it is missing (first start, or an admin deleted it).
pub async fn ensure_cli_app(store: &dyn crate::store::Store) -> Result<(), Failure> {
    if store.oauth2_app(CLI_APP).await?.is_some() {
        return Ok(());
    }
    let every = scopes::every();
    store
        .put_oauth2_app(&OAuth2App {
            id: CLI_APP.to_owned(),
            name: "extauth CLI".to_owned(),
            icon: String::new(),
            redirect_uris: vec!["http://127.0.0.1/callback".to_owned()],
            client_type: ClientType::Public,
            scopes: every,
            default_scopes: ["openid", "offline_access", "all"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            secrets: Vec::new(),
            created_at: now(),
            updated_at: now(),
            origin: AppOrigin::Admin,
            resources: Vec::new(),
            registration_hash: None,
            stale_ms: None,
            granted: false,
        })
        .await?;
    Ok(())
}

/// Every app, oldest first.
pub async fn list(state: &AppState) -> Result<Vec<OAuth2App>, Failure> {
    Ok(state.store.oauth2_apps().await?)
}

/// An app by id, or `UnknownApp`.
pub async fn find(state: &AppState, id: &str) -> Result<OAuth2App, Failure> {
    state
        .store
        .oauth2_app(id)
        .await?
        .ok_or_else(|| Failure::UnknownApp(id.to_owned()))
}

/// Changes an app (its type stays: a secret-holding app does not become public or back).
pub async fn update(state: &AppState, id: &str, input: AppInput) -> Result<OAuth2App, Failure> {
    let mut app = find(state, id).await?;
    if input.client_type.is_some_and(|t| t != app.client_type) {
        return Err(Failure::InvalidApp(
            "client_type: an app's type cannot change; register a new app".to_owned(),
        ));
    }
    let input = AppInput {
        scopes: input.scopes.or_else(|| Some(app.scopes.clone())),
        default_scopes: input
            .default_scopes
            .or_else(|| Some(app.default_scopes.clone())),
        ..input
    };
    let (allowed, defaults) = validate(&input, app.client_type)?;
    if let Some(resources) = &input.resources {
        super::resources::check_ids(state, resources).await?;
        app.resources = resources.clone();
    }
    app.name = input.name.trim().to_owned();
    app.icon = input.icon;
    app.redirect_uris = input.redirect_uris;
    app.scopes = allowed;
    app.default_scopes = defaults;
    app.updated_at = now();
    state.store.put_oauth2_app(&app).await?;
    tracing::info!(target: "extauth::audit", event = "oauth2.app.updated", app = %app.id, "changed an OAuth2 app");
    Ok(app)
}

/// Deletes an app; every token issued through it ends.
pub async fn delete(state: &AppState, id: &str) -> Result<(), Failure> {
    if !state.store.delete_oauth2_app(id).await? {
        return Err(Failure::UnknownApp(id.to_owned()));
    }
    tracing::info!(target: "extauth::audit", event = "oauth2.app.deleted", app = %id, "deleted an OAuth2 app and ended its tokens");
    Ok(())
}

/// A client secret just made: shown once.
pub struct NewSecret {
    /// Its record.
    pub record: AppSecret,
    /// The whole secret.
    pub secret: String,
}

/// A new client secret `extauth_cs_<id>_<secret>` (the prefix lets secret scanners spot it),
/// and its record (the hash only).
pub fn new_secret() -> NewSecret {
    let id = random::hex_token::<8>();
    let secret = format!("extauth_cs_{id}_{}", random::hex_token::<32>());
    let record = AppSecret {
        id,
        secret_hash: hash(&secret),
        truncated: secret[secret.len() - 6..].to_owned(),
        created_at: now(),
        last_used_at: None,
    };
    NewSecret { record, secret }
}

/// The name an app gives itself (a registration or a metadata document): trimmed, no control
/// characters, at most 64 characters; `fallback` when it gives none.
pub fn claimed_name(name: Option<&str>, fallback: &str) -> String {
    name.map(|n| {
        n.trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect::<String>()
    })
    .filter(|n| !n.is_empty())
    .unwrap_or_else(|| fallback.to_owned())
}

/// The icon an app gives itself: an https URL, else none.
pub fn claimed_icon(url: Option<&str>) -> String {
    url.filter(|u| u.starts_with("https://") && u.len() <= MAX_REDIRECT_LEN)
        .unwrap_or_default()
        .to_owned()
}

/// Makes a client secret for an app: shown once.
pub async fn create_secret(state: &AppState, app_id: &str) -> Result<NewSecret, Failure> {
    let mut app = find(state, app_id).await?;
    if app.client_type == ClientType::Public {
        return Err(Failure::InvalidApp(
            "client_type: a public app has no secret; it proves itself with PKCE".to_owned(),
        ));
    }
    let NewSecret { record, secret } = new_secret();
    app.secrets.push(record.clone());
    state.store.put_oauth2_app(&app).await?;
    tracing::info!(target: "extauth::audit", event = "oauth2.secret.created", app = %app.id, secret = %record.id, "made a client secret");
    Ok(NewSecret { record, secret })
}

/// Deletes a client secret and every token issued under it.
pub async fn delete_secret(state: &AppState, app_id: &str, secret_id: &str) -> Result<(), Failure> {
    let mut app = find(state, app_id).await?;
    let before = app.secrets.len();
    app.secrets.retain(|s| s.id != secret_id);
    if app.secrets.len() == before {
        return Err(Failure::UnknownAppSecret(secret_id.to_owned()));
    }
    state.store.put_oauth2_app(&app).await?;
    let ended = state
        .store
        .delete_oauth2_families(FamilyFilter {
            app_id,
            user_id: None,
            secret_id: Some(secret_id),
        })
        .await?;
    tracing::info!(target: "extauth::audit", event = "oauth2.secret.deleted", app = %app_id, secret = %secret_id, families = ended, "deleted a client secret and ended its tokens");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_registered() {
        let c = ClientType::Confidential;
        let p = ClientType::Public;
        assert!(check_redirect("https://app.example.com/cb", c).is_ok());
        assert!(check_redirect("http://127.0.0.1/cb", c).is_ok());
        assert!(check_redirect("http://app.example.com/cb", c).is_err());
        assert!(check_redirect("https://app.example.com/cb#x", c).is_err());
        assert!(check_redirect("javascript:alert(1)", p).is_err());
        assert!(check_redirect("vscode://publisher.ext/callback", p).is_ok());
        assert!(check_redirect("vscode://publisher.ext/callback", c).is_err());
        assert!(check_redirect("relative/path", p).is_err());
    }

    #[test]
    fn redirects_matched() {
        let reg = "https://app.example/cb";
        assert!(redirect_matches(reg, reg));
        assert!(!redirect_matches(reg, "https://app.example.evil/cb"));
        assert!(!redirect_matches(reg, "https://app.example/cb/more"));
        assert!(!redirect_matches(reg, "https://app.example/cb#frag"));
        assert!(!redirect_matches(reg, "https://app.example/cb?x=1"));
        let loop_reg = "http://127.0.0.1:8000/cb";
        assert!(redirect_matches(loop_reg, "http://127.0.0.1:51234/cb"));
        assert!(!redirect_matches(loop_reg, "http://127.0.0.1:51234/other"));
        assert!(!redirect_matches(loop_reg, "http://localhost:51234/cb"));
        assert!(!redirect_matches(
            "https://127.0.0.1:1/cb",
            "https://127.0.0.1:2/cb"
        ));
    }
}
