//! Protected resources: extauth's own API, and the APIs and MCP servers admins put behind
//! extauth. A token names one in its audience (RFC 8707); a registered one brings its own
//! scopes, may be limited to some apps, and has its metadata (RFC 9728) served here, so its
//! server only points its 401 at that document and checks extauth's JWTs.

use crate::clock::now;
use crate::failure::Failure;
use crate::random;
use crate::state::AppState;
use crate::store::OAuth2App;
pub use crate::store::ProtectedResource;

use super::OAuthError;
use super::scopes::{self, Scopes};
use super::tokens::issuer;

/// At most this many scopes per resource.
const MAX_SCOPES: usize = 32;

/// What an admin gives to register a resource.
#[derive(Debug, Clone, Default)]
pub struct ResourceInput {
    /// Display name.
    pub name: String,
    /// The URL clients connect to.
    pub url: String,
    /// The scopes it defines.
    pub scopes: Vec<String>,
}

/// What a token is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audience {
    /// The `resource` as it goes in `aud` (`None`: extauth's own API, by its issuer).
    pub url: Option<String>,
    /// A registered resource's name (`None`: extauth's own API).
    pub name: Option<String>,
    /// The scopes the resource defines beyond extauth's catalog.
    pub scopes: Scopes,
}

/// Whether `audience` names extauth's own API: its issuer, its access URL, or a URL under its
/// API (a client that formed its resource from the URL it called, RFC 9728 §3.1).
pub fn is_own(state: &AppState, audience: &str) -> bool {
    let issuer = issuer(state);
    audience == issuer
        || audience == state.settings.access_url.as_url().as_str()
        || audience
            .strip_prefix(&issuer)
            .is_some_and(|rest| rest == "/api" || rest.starts_with("/api/"))
}

/// A resource identifier compared without a trailing slash (`https://mcp.example` and
/// `https://mcp.example/` are one resource to every client in practice).
fn canonical(url: &str) -> &str {
    url.strip_suffix('/').unwrap_or(url)
}

/// Whether two resource identifiers name one resource.
pub fn same(a: &str, b: &str) -> bool {
    canonical(a) == canonical(b)
}

/// A `resource` (RFC 8707 §2): an absolute URI without a fragment.
pub fn check_shape(resource: &str) -> Result<(), String> {
    match url::Url::parse(resource) {
        Ok(u) if u.fragment().is_none() && !resource.contains('#') => Ok(()),
        _ => Err("resource must be an absolute URI without a fragment".to_owned()),
    }
}

/// What `resource` (as a client sent it) is for `app`: extauth's API, or a registered resource
/// the app may use; anything else is `invalid_target`.
pub async fn target(
    state: &AppState,
    app: &OAuth2App,
    resource: Option<&str>,
) -> Result<Audience, OAuthError> {
    target_for(state, Some(app), resource).await
}

/// The same for a caller that is no app (a workload's exchange): any registered resource.
pub async fn target_for(
    state: &AppState,
    app: Option<&OAuth2App>,
    resource: Option<&str>,
) -> Result<Audience, OAuthError> {
    let Some(resource) = resource.filter(|r| !r.is_empty()) else {
        return Ok(Audience::default());
    };
    check_shape(resource).map_err(OAuthError::InvalidTarget)?;
    if is_own(state, resource) {
        return Ok(Audience {
            url: Some(resource.to_owned()),
            ..Audience::default()
        });
    }
    let registered = state
        .store
        .oauth2_resources()
        .await?
        .into_iter()
        .find(|r| canonical(&r.url) == canonical(resource));
    let Some(registered) = registered else {
        return Err(OAuthError::InvalidTarget(format!(
            "no protected resource is registered at {resource}; an admin registers it first"
        )));
    };
    if let Some(app) =
        app.filter(|a| !a.resources.is_empty() && !a.resources.contains(&registered.id))
    {
        return Err(OAuthError::InvalidTarget(format!(
            "{} may not ask for tokens for {}",
            app.name, registered.name
        )));
    }
    Ok(Audience {
        scopes: scopes::set(&registered.scopes),
        name: Some(registered.name),
        url: Some(registered.url),
    })
}

/// The same for a resource already granted (a code or a refresh): a resource deleted or taken
/// from the app since ends the grant.
pub async fn still_target(
    state: &AppState,
    app: &OAuth2App,
    resource: Option<&str>,
) -> Result<Audience, OAuthError> {
    target(state, app, resource).await.map_err(|e| match e {
        OAuthError::InvalidTarget(why) => OAuthError::InvalidGrant(why),
        other => other,
    })
}

fn validate(input: &ResourceInput, existing: &[ProtectedResource]) -> Result<(), Failure> {
    let invalid = |what: String| Err(Failure::InvalidResource(what));
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return invalid("name: give 1 to 64 characters".to_owned());
    }
    let url = match url::Url::parse(&input.url) {
        Ok(u) => u,
        Err(e) => return invalid(format!("url: {:?} is not an absolute URL ({e})", input.url)),
    };
    let loopback = super::redirect_policy::loopback(&url);
    if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
        return invalid(
            "url: use https:// (http:// only for loopback: 127.0.0.1, [::1], localhost)".to_owned(),
        );
    }
    if url.fragment().is_some() || url.query().is_some() || input.url.contains('#') {
        return invalid(
            "url: a resource identifier has no query and no fragment (RFC 8707 §2)".to_owned(),
        );
    }
    if existing
        .iter()
        .any(|r| canonical(&r.url) == canonical(&input.url))
    {
        return invalid(format!("url: {} is registered already", input.url));
    }
    let path = url.path().trim_matches('/');
    if !path.is_empty()
        && existing
            .iter()
            .any(|r| url::Url::parse(&r.url).is_ok_and(|u| u.path().trim_matches('/') == path))
    {
        return invalid(format!(
            "url: another resource has the path /{path}, which names its metadata document here; give this one another path"
        ));
    }
    if input.scopes.len() > MAX_SCOPES {
        return invalid(format!("scopes: at most {MAX_SCOPES}"));
    }
    for scope in &input.scopes {
        let shaped = !scope.is_empty()
            && scope.len() <= 64
            && scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":._-/".contains(&b));
        if !shaped {
            return invalid(format!(
                "scopes: {scope:?} must be 1 to 64 characters of A-Z a-z 0-9 : . _ - /"
            ));
        }
        if scopes::CATALOG.iter().any(|(n, _)| n == scope) {
            return invalid(format!(
                "scopes: {scope:?} is one of extauth's own scopes; name the resource's scopes apart (e.g. tools:read)"
            ));
        }
    }
    Ok(())
}

/// Registers a resource (refusing extauth's own API: that one is built in).
pub async fn create(state: &AppState, input: ResourceInput) -> Result<ProtectedResource, Failure> {
    if is_own(state, &input.url) {
        return Err(Failure::InvalidResource(
            "url: extauth's own API is a protected resource already".to_owned(),
        ));
    }
    let existing = state.store.oauth2_resources().await?;
    validate(&input, &existing)?;
    let mut scopes: Vec<String> = input.scopes;
    scopes.sort();
    scopes.dedup();
    let resource = ProtectedResource {
        id: random::hex_token::<8>(),
        name: input.name.trim().to_owned(),
        url: input.url,
        scopes,
        created_at: now(),
    };
    state.store.put_oauth2_resource(&resource).await?;
    tracing::info!(target: "extauth::audit", event = "oauth2.resource.created", resource = %resource.id, url = %resource.url, "registered a protected resource");
    Ok(resource)
}

/// Every registered resource, oldest first.
pub async fn list(state: &AppState) -> Result<Vec<ProtectedResource>, Failure> {
    Ok(state.store.oauth2_resources().await?)
}

/// Deletes a resource: no new token is issued for it, and refreshing one for it fails.
pub async fn delete(state: &AppState, id: &str) -> Result<(), Failure> {
    if !state.store.delete_oauth2_resource(id).await? {
        return Err(Failure::UnknownResource(id.to_owned()));
    }
    tracing::info!(target: "extauth::audit", event = "oauth2.resource.deleted", resource = %id, "deleted a protected resource");
    Ok(())
}

/// The resource whose metadata document is `/.well-known/oauth-protected-resource/<suffix>`:
/// the one whose URL has that path, or whose id it is (a resource at a host's root).
pub async fn by_metadata_path(
    state: &AppState,
    suffix: &str,
) -> Result<Option<ProtectedResource>, Failure> {
    let suffix = suffix.trim_matches('/');
    Ok(state.store.oauth2_resources().await?.into_iter().find(|r| {
        r.id == suffix
            || url::Url::parse(&r.url).is_ok_and(|u| {
                let path = u.path().trim_matches('/');
                !path.is_empty() && path == suffix
            })
    }))
}

/// Where a resource's metadata document is served here.
pub fn metadata_url(state: &AppState, resource: &ProtectedResource) -> String {
    let path = url::Url::parse(&resource.url)
        .map(|u| u.path().trim_matches('/').to_owned())
        .unwrap_or_default();
    let suffix = if path.is_empty() { &resource.id } else { &path };
    format!(
        "{}/.well-known/oauth-protected-resource/{suffix}",
        issuer(state)
    )
}

/// Checks that every id in `ids` is a registered resource (an app's allow-list).
pub async fn check_ids(state: &AppState, ids: &[String]) -> Result<(), Failure> {
    if ids.is_empty() {
        return Ok(());
    }
    let known = state.store.oauth2_resources().await?;
    if let Some(unknown) = ids.iter().find(|id| !known.iter().any(|r| &r.id == *id)) {
        return Err(Failure::InvalidApp(format!(
            "resources: no protected resource has the id {unknown:?}"
        )));
    }
    Ok(())
}
