//! Who is calling: browser sessions, API tokens and workspace tokens, and the `--dev` sign-in.
//!
//! Tokens look like `extauth_<kind>_<id>_<secret>` (kind `api` or `ws`) so secret scanners can
//! spot them; the store keeps the id and the sha256 of the secret, compared in constant time.
//! Handlers state what they need by taking an extractor: [`Caller`] (any credential, for the
//! API), [`BrowserUser`] (a session, for pages; redirects to sign-in otherwise).

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use extauth_providers::constant_time_eq;
use sha2::{Digest, Sha256};

use std::net::IpAddr;

use crate::auth_failures::Refusal;
use crate::clock::now;
use crate::error::ApiError;
use crate::failure::Failure;
use crate::random;
use crate::state::AppState;
use crate::store::{Session, TokenKind, TokenRecord, User};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "extauth_session";
/// Coder's header for session and agent tokens.
pub const CODER_TOKEN_HEADER: &str = "Coder-Session-Token";
/// Header carrying the CSRF token on cookie-authenticated API writes.
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// sha256, hex.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl TokenKind {
    fn tag(self) -> &'static str {
        match self {
            TokenKind::Api => "api",
            TokenKind::Workspace => "ws",
        }
    }
}

/// A newly minted token: the record to store and the secret to show once.
pub struct Minted {
    /// What the store keeps.
    pub record: TokenRecord,
    /// The whole token, shown to the user once and never again.
    pub token: String,
}

/// Mints a token for `user_id`.
pub fn mint(
    kind: TokenKind,
    user_id: &str,
    name: &str,
    providers: Option<Vec<String>>,
    expires_at: Option<i64>,
) -> Minted {
    let id = random::hex_token::<8>();
    let secret = random::hex_token::<32>();
    Minted {
        token: format!("extauth_{}_{id}_{secret}", kind.tag()),
        record: TokenRecord {
            id,
            kind,
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            secret_hash: hash(&secret),
            providers,
            created_at: now(),
            expires_at,
        },
    }
}

/// Splits `extauth_<kind>_<id>_<secret>`.
fn parse_token(token: &str) -> Option<(TokenKind, &str, &str)> {
    let rest = token.strip_prefix("extauth_")?;
    let (kind, rest) = rest.split_once('_')?;
    let kind = match kind {
        "api" => TokenKind::Api,
        "ws" => TokenKind::Workspace,
        _ => return None,
    };
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id) && hex(secret)).then_some((kind, id, secret))
}

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A browser session cookie.
    Session(Session),
    /// An API or workspace token.
    Token(TokenRecord),
    /// An access token the authorization server issued to an app: limited to its scopes.
    OAuth2(crate::oauth2::tokens::AccessToken),
}

/// An authenticated caller of the API.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub user: User,
    /// With what.
    pub credential: Credential,
}

impl Caller {
    /// The workspace token the caller presented, if that is what it presented.
    pub fn workspace_token(&self) -> Option<&TokenRecord> {
        match &self.credential {
            Credential::Token(record) if record.kind == TokenKind::Workspace => Some(record),
            _ => None,
        }
    }

    /// Whether the caller presented a workspace token (what a workspace holds; the only
    /// credential that may fetch the user's private git SSH key).
    pub fn is_workspace_token(&self) -> bool {
        matches!(
            &self.credential,
            Credential::Token(TokenRecord {
                kind: TokenKind::Workspace,
                ..
            })
        )
    }

    /// Whether this caller may fetch tokens of `provider_id` (workspace tokens may be narrowed).
    pub fn may_use_provider(&self, provider_id: &str) -> bool {
        match &self.credential {
            Credential::Token(TokenRecord {
                kind: TokenKind::Workspace,
                providers: Some(allowed),
                ..
            }) => allowed.iter().any(|p| p == provider_id),
            Credential::OAuth2(crate::oauth2::tokens::AccessToken {
                providers: Some(allowed),
                ..
            }) => allowed.iter().any(|p| p == provider_id),
            _ => true,
        }
    }
}

/// The bearer token of a request, from `Authorization: Bearer` or `Coder-Session-Token`.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| {
            headers
                .get(CODER_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
        })
        .map(str::trim)
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Checks a presented token; a refusal says why, for the failure count.
async fn check_token(
    state: &AppState,
    token: &str,
) -> Result<Result<Caller, (Refusal, Option<String>)>, Failure> {
    if crate::oauth2::tokens::looks_like_jwt(token) {
        return check_access_token(state, token).await;
    }
    let Some((kind, id, secret)) = parse_token(token) else {
        return Ok(Err((Refusal::Malformed, None)));
    };
    let refused = |why: Refusal| Ok(Err((why, Some(id.to_owned()))));
    let Some((record, user)) = state.store.token_with_user(id).await? else {
        return refused(Refusal::Unknown);
    };
    if record.kind != kind
        || !constant_time_eq(hash(secret).as_bytes(), record.secret_hash.as_bytes())
    {
        return refused(Refusal::WrongSecret);
    }
    if record.expires_at.is_some_and(|at| at <= now()) {
        return refused(Refusal::Expired);
    }
    let Some(user) = user else {
        return refused(Refusal::NoUser);
    };
    Ok(Ok(Caller {
        user,
        credential: Credential::Token(record),
    }))
}

/// Checks an app's access token for extauth's own API: issued for it (its audience is this
/// site, not another resource), not revoked, acting for a user who still exists.
async fn check_access_token(
    state: &AppState,
    token: &str,
) -> Result<Result<Caller, (Refusal, Option<String>)>, Failure> {
    let Some(access) = crate::oauth2::tokens::check(state, token).await? else {
        return Ok(Err((Refusal::Unknown, None)));
    };
    // This API is the resource the issuer names, or one under its API (a client that formed
    // its resource from the URL it called, RFC 9728 §3.1). A token for another resource is not
    // taken here.
    let ours = access
        .audience
        .iter()
        .any(|aud| crate::oauth2::resources::is_own(state, aud));
    if !ours {
        return Ok(Err((Refusal::WrongSecret, access.family_id.clone())));
    }
    let Some(user_id) = &access.user_id else {
        return Err(Failure::ServiceToken);
    };
    let Some(user) = state.store.user(user_id).await? else {
        return Ok(Err((Refusal::NoUser, access.family_id.clone())));
    };
    Ok(Ok(Caller {
        user,
        credential: Credential::OAuth2(access),
    }))
}

/// Checks a token presented by `client` (when known): a client that failed too often is
/// refused with 429 before any lookup, and each failure is counted against it.
pub async fn authenticate_token(
    state: &AppState,
    token: &str,
    client: Option<IpAddr>,
) -> Result<Caller, Failure> {
    if let Some(wait) = client.and_then(|c| state.auth_failures.throttled(c)) {
        return Err(Failure::TooManyFailures { wait });
    }
    match check_token(state, token).await? {
        Ok(caller) => Ok(caller),
        Err((refusal, id)) => {
            state.auth_failures.failed(client, refusal, id.as_deref());
            Err(Failure::InvalidToken)
        }
    }
}

/// The client address of a request: its connection's peer, or what a trusted proxy says.
pub fn client_of(state: &AppState, parts: &Parts) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<crate::connections::Peer>>()?;
    Some(
        state
            .settings
            .client_address
            .of(peer.0.0.ip(), &parts.headers),
    )
}

/// The session of a request's cookie, if valid.
pub async fn session_of(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(User, Session)>, Failure> {
    let Some(value) = site_cookie(state, headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some(session) = state.store.session(&hash(value)).await? else {
        return Ok(None);
    };
    if session.expires_at <= now() {
        state.store.delete_session(&session.id_hash).await?;
        return Ok(None);
    }
    Ok(state
        .store
        .user(&session.user_id)
        .await?
        .map(|user| (user, session)))
}

/// The caller of a workspace route (`/api/v2/workspaceagents/me/…`): any credential, workspace
/// tokens included. Every other API route takes a [`Caller`], which refuses workspace tokens:
/// the type decides, so no handler can forget to.
#[derive(Debug, Clone)]
pub struct WorkspaceCaller(pub Caller);

impl std::ops::Deref for WorkspaceCaller {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

/// Whoever the request's token or session says, with no check of what it may do.
async fn any_caller(parts: &Parts, state: &AppState) -> Result<Caller, Failure> {
    if let Some(token) = presented_token(&parts.headers) {
        let caller = authenticate_token(state, token, client_of(state, parts)).await?;
        if let Credential::OAuth2(access) = &caller.credential {
            let needed = crate::oauth2::scopes::needed_for(parts.method.as_str(), parts.uri.path());
            if !crate::oauth2::scopes::covers(&access.scopes, needed) {
                return Err(Failure::InsufficientScope(needed));
            }
        }
        return Ok(caller);
    }
    let Some((user, session)) = session_of(state, &parts.headers).await? else {
        return Err(Failure::AuthenticationRequired);
    };
    // Cookies ride along on cross-site requests; writes must also prove the page's token.
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let presented = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !constant_time_eq(presented.as_bytes(), session.csrf.as_bytes()) {
            return Err(Failure::CsrfHeader);
        }
    }
    Ok(Caller {
        user,
        credential: Credential::Session(session),
    })
}

impl FromRequestParts<AppState> for WorkspaceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Self(any_caller(parts, state).await?))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// A session or an API token: a workspace token fetches provider tokens and nothing else.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = any_caller(parts, state).await?;
        if let Credential::Token(TokenRecord {
            kind: TokenKind::Workspace,
            ..
        }) = &caller.credential
        {
            return Err(Failure::WorkspaceTokenOnly.into());
        }
        Ok(caller)
    }
}

/// A signed-in browser user. Without a session, pages redirect to sign-in and come back.
#[derive(Debug, Clone)]
pub struct BrowserUser {
    /// Who.
    pub user: User,
    /// Their session (for its CSRF token).
    pub session: Session,
}

impl BrowserUser {
    /// Checks the CSRF token a form echoed.
    pub fn check_csrf(&self, presented: &str) -> Result<(), Failure> {
        if constant_time_eq(presented.as_bytes(), self.session.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(Failure::CsrfForm)
        }
    }
}

/// Redirect to the sign-in page, remembering where to come back to.
pub struct SignInRedirect(String);

impl IntoResponse for SignInRedirect {
    fn into_response(self) -> Response {
        Redirect::to(&self.0).into_response()
    }
}

impl FromRequestParts<AppState> for BrowserUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match session_of(state, &parts.headers).await {
            Ok(Some((user, session))) => Ok(Self { user, session }),
            Ok(None) => {
                let back = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let mut login = state.settings.access_url.join("login");
                login.query_pairs_mut().append_pair("redirect", back);
                Err(SignInRedirect(
                    login.path().to_owned() + "?" + login.query().unwrap_or_default(),
                )
                .into_response())
            }
            Err(e) => Err(crate::error::PageError(e.into()).into_response()),
        }
    }
}

impl OptionalFromRequestParts<AppState> for BrowserUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Response> {
        match session_of(state, &parts.headers).await {
            Ok(found) => Ok(found.map(|(user, session)| Self { user, session })),
            Err(e) => Err(crate::error::PageError(e.into()).into_response()),
        }
    }
}

/// Ends the session whose cookie value is `value`.
pub async fn end_session(state: &AppState, value: &str) -> Result<(), Failure> {
    state.store.delete_session(&hash(value)).await?;
    Ok(())
}

/// Starts a session for `user`; returns the `Set-Cookie` value.
pub async fn start_session(state: &AppState, user: &User) -> Result<String, Failure> {
    start_session_with(state, user, None).await
}

/// Starts a session, keeping what an OIDC sign-in needs for logout.
pub async fn start_session_with(
    state: &AppState,
    user: &User,
    oidc: Option<crate::store::OidcSession>,
) -> Result<String, Failure> {
    let value = random::hex_token::<32>();
    let lifetime = i64::try_from(state.settings.session_duration.as_secs()).unwrap_or(i64::MAX);
    let session = Session {
        id_hash: hash(&value),
        user_id: user.id.clone(),
        csrf: random::hex_token::<16>(),
        created_at: now(),
        expires_at: now().saturating_add(lifetime),
        oidc,
    };
    state.store.put_session(&session).await?;
    Ok(cookie_header(state, SESSION_COOKIE, &value, Some(lifetime)))
}

/// The name cookie `name` goes by: `__Host-<name>` where the access URL allows it (https, the
/// site at the host's root). Browsers then refuse the cookie from anything but this origin over
/// https, so neither another site on the host nor a sibling subdomain can plant or overwrite it.
pub fn cookie_name(state: &AppState, name: &str) -> String {
    if state.settings.secure_cookies && state.settings.base_path() == "/" {
        format!("__Host-{name}")
    } else {
        name.to_owned()
    }
}

/// The value of this site's cookie `name` (under [`cookie_name`]).
pub fn site_cookie<'a>(state: &AppState, headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookie(headers, &cookie_name(state, name))
}

/// A `Set-Cookie` value for this site's cookie `name` (under [`cookie_name`]): HttpOnly,
/// SameSite=Lax, scoped to the access URL's path, Secure behind https. `max_age` `None` =
/// session cookie; `Some(0)` deletes it.
pub fn cookie_header(state: &AppState, name: &str, value: &str, max_age: Option<i64>) -> String {
    let mut cookie = format!(
        "{}={value}; Path={}; HttpOnly; SameSite=Lax",
        cookie_name(state, name),
        state.settings.base_path()
    );
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if state.settings.secure_cookies {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Creates (once) the local admin of `--dev` and a one-time sign-in secret for it.
pub async fn prepare_dev_login(state: &AppState) -> Result<String, Failure> {
    let admin = match state.store.user_by_username("admin").await? {
        Some(user) => user,
        None => {
            let user = User {
                id: random::hex_token::<16>(),
                username: "admin".to_owned(),
                email: String::new(),
                name: "Local admin".to_owned(),
                is_admin: true,
                oidc: None,
                created_at: now(),
            };
            match state.store.create_user(&user).await {
                Ok(()) => user,
                // Another replica created it at the same moment.
                Err(crate::store::StoreError::Conflict(_)) => state
                    .store
                    .user_by_username("admin")
                    .await?
                    .ok_or_else(|| Failure::Internal("the local admin vanished".to_owned()))?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let secret = random::hex_token::<24>();
    state.dev_login.offer(hash(&secret), admin.id);
    Ok(secret)
}

/// Consumes the one-time sign-in secret; the user it signs in.
pub async fn redeem_dev_login(state: &AppState, secret: &str) -> Result<User, Failure> {
    let Some(user_id) = state.dev_login.redeem(&hash(secret)) else {
        return Err(Failure::DevLinkUsed);
    };
    state
        .store
        .user(&user_id)
        .await?
        .ok_or(Failure::DevAdminGone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_back() {
        let minted = mint(TokenKind::Workspace, "u1", "laptop", None, None);
        assert!(minted.token.starts_with("extauth_ws_"));
        let (kind, id, secret) = parse_token(&minted.token).unwrap();
        assert_eq!(kind, TokenKind::Workspace);
        assert_eq!(id, minted.record.id);
        assert_eq!(hash(secret), minted.record.secret_hash);
        assert!(!minted.record.secret_hash.contains(secret));
        for bad in [
            "",
            "extauth_ws_",
            "extauth_xx_ab_cd",
            "extauth_ws_zz_cd",
            "gho_abc",
            "extauth_api_ab",
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; extauth_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
