//! A user's links to providers and the token lifecycle: storing what a provider issued,
//! handing out a token that is fresh (refreshing ahead of expiry), validating on request,
//! unlinking with revocation.
//!
//! Refreshes of one (user, provider) are serialised: the first caller refreshes in a task of its
//! own (so it completes even if that caller goes away), later callers wait for it and get its
//! result; the store only accepts the new pair if the refresh token is still the one that was
//! used, so a second refresher — in this process or another — can never overwrite the winner.

use extauth_providers::ProviderConfig;

use serde_json::Value;

use crate::clock::now;
use crate::failure::Failure;
pub use crate::link_secrets::Fresh;
use crate::link_secrets::{open_fresh, open_tokens, seal};
use crate::refresh::{self, RefreshFailure};
use crate::state::AppState;
use crate::store::LinkRecord;
use crate::upstream::{Revocation, TokenResponse, Validity};
use tokio::sync::broadcast::error::RecvError;

/// The outcome of asking for a user's token.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Here it is.
    Linked(Fresh),
    /// The user must link (again).
    NotLinked,
}

/// Stores tokens from a completed link (browser or device flow): insert or replace, which
/// clears any cached refresh failure. Waiters (`listen`) are woken by the store.
/// How a new link relates to the accounts already linked at its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linking {
    /// Connect (again): replaces the account of the same login, or the one account there is.
    Replace,
    /// "Add another account": kept beside the others unless it is one of them.
    AddAccount,
}

/// The account's login in the provider's user document (validation's answer): `login`
/// (GitHub, Gitea), `username` (GitLab, Bitbucket), `preferred_username` (OIDC), `sub`.
fn login_of(user: &Value) -> Option<String> {
    ["login", "username", "preferred_username", "nickname", "sub"]
        .iter()
        .find_map(|k| {
            user[*k]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        })
}

/// Which account the new tokens are for: the login the provider says (asked once, at link
/// time), or empty when it cannot be told.
async fn account_of(state: &AppState, provider: &ProviderConfig, tokens: &TokenResponse) -> String {
    match state
        .upstream
        .validate(provider, &tokens.access_token)
        .await
    {
        Ok(Validity::Valid { user: Some(user) }) => login_of(&user).unwrap_or_default(),
        _ => String::new(),
    }
}

pub async fn save_link(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
    tokens: &TokenResponse,
) -> Result<(), Failure> {
    save_account(state, user_id, provider, tokens, Linking::Replace).await
}

/// Stores new tokens as an account's link: the login's own account when linked before, else
/// (Replace) the one account the provider has, else a new account, the default when first.
pub async fn save_account(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
    tokens: &TokenResponse,
    linking: Linking,
) -> Result<(), Failure> {
    let login = account_of(state, provider, tokens).await;
    let accounts = state
        .store
        .links_of_provider(user_id, provider.id.as_str())
        .await?;
    let same = accounts
        .iter()
        .find(|l| !login.is_empty() && l.account == login);
    let replaced = same.or_else(|| match (linking, accounts.as_slice()) {
        (Linking::Replace, [only]) => Some(only),
        (Linking::Replace, _) => accounts.iter().find(|l| l.is_default),
        (Linking::AddAccount, _) => None,
    });
    let created_at = replaced.map_or_else(now, |l| l.created_at);
    let mut link = seal(&state.keys, user_id, provider, tokens, None, created_at);
    link.account = login;
    link.is_default = replaced.map_or(accounts.is_empty(), |l| l.is_default);
    link.owners = replaced.map(|l| l.owners.clone()).unwrap_or_default();
    if let Some(old) = replaced.filter(|old| old.account != link.account) {
        // The same slot under a new name (a link made before accounts had names, or the
        // user signed in as someone else): the old record goes.
        state
            .store
            .delete_link(user_id, provider.id.as_str(), &old.account)
            .await?;
    }
    state.store.put_link(&link).await?;
    if link.refresh_token.is_none() && link.expires_at.is_some() && !provider.no_refresh {
        // coder/coder#17754: e.g. Entra without offline_access; the user is logged out of the
        // provider at expiry, which is better said now than found out then.
        tracing::warn!(
            user = user_id,
            provider = provider.id.as_str(),
            expires_at = link.expires_at,
            "the provider issued an expiring token without a refresh token; the user must link again when it expires (missing offline_access scope?)"
        );
    }
    tracing::info!(
        user = user_id,
        provider = provider.id.as_str(),
        account = link.account.as_str(),
        has_refresh = link.refresh_token.is_some(),
        expires_at = link.expires_at,
        "linked"
    );
    Ok(())
}

/// How far ahead of a refresh token's end the user is told to link again.
pub const RELINK_WARNING: i64 = 14 * 24 * 3600;

/// "Link again before …" when the refresh token (GitHub's six-month one) runs out within
/// [`RELINK_WARNING`]: said to workspaces (the lookup's notice) and on the provider's page.
pub fn relink_notice(
    provider: &ProviderConfig,
    relink_by: Option<i64>,
    now: i64,
) -> Option<String> {
    let by = relink_by.filter(|by| by - now < RELINK_WARNING)?;
    let date = time::OffsetDateTime::from_unix_timestamp(by)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(format!(
        "link {} again before {date}: its refresh token runs out then",
        provider.display_name
    ))
}

/// What the user should know about their link to `provider`, for its page: a token that will
/// expire with no way to refresh it, and which owners a GitHub App's installations cover.
pub struct LinkNotes {
    /// When the token expires with no refresh token to renew it (unix seconds).
    pub expires_without_refresh: Option<i64>,
    /// "Link again before …", when that time is near.
    pub relink: Option<String>,
    /// The owners the app is installed for, when the provider is a GitHub App and says.
    pub installed_for: Option<Vec<String>>,
}

/// The notes for `user_id`'s link to `provider` (none when not linked).
pub async fn notes(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
) -> Result<Option<LinkNotes>, Failure> {
    let Some(link) = state.store.link(user_id, provider.id.as_str()).await? else {
        return Ok(None);
    };
    let expires_without_refresh = link
        .expires_at
        .filter(|_| link.refresh_token.is_none() && !provider.no_refresh);
    let installed_for = if crate::app_installations::applies(provider) {
        let token = open_fresh(&state.keys, &link)?.access_token;
        crate::app_installations::owners(state, user_id, provider, &token).await
    } else {
        None
    };
    Ok(Some(LinkNotes {
        expires_without_refresh,
        relink: relink_notice(provider, link.refresh_expires_at, now()),
        installed_for,
    }))
}

/// Which of a user's accounts at a provider a request means (several accounts per provider:
/// work and personal GitHub).
#[derive(Debug, Default, Clone, Copy)]
pub struct Choice<'a> {
    /// An account named outright (`access-token --account`, `user@` in a remote URL). Only a
    /// preference: when no such account is linked, the others decide.
    pub account: Option<&'a str>,
    /// The repository's URL, whose owner may be routed to an account.
    pub url: Option<&'a str>,
}

/// Whether a routing pattern (`acme`, `acme-*`, `*`) takes `owner` (case-insensitive, as
/// forges compare owner names).
fn owner_matches(pattern: &str, owner: &str) -> bool {
    let (pattern, owner) = (pattern.to_ascii_lowercase(), owner.to_ascii_lowercase());
    match pattern.split_once('*') {
        None => pattern == owner,
        Some((prefix, suffix)) => {
            owner.len() >= prefix.len() + suffix.len()
                && owner.starts_with(prefix)
                && owner.ends_with(suffix)
        }
    }
}

/// The account `choice` picks among `accounts`: the one named, else the one whose owners take
/// the URL's owner, else the default, else the first.
pub fn pick<'a>(accounts: &'a [LinkRecord], choice: Choice<'_>) -> Option<&'a LinkRecord> {
    let named = choice
        .account
        .filter(|a| !a.is_empty())
        .and_then(|a| accounts.iter().find(|l| l.account.eq_ignore_ascii_case(a)));
    let owner = choice.url.and_then(crate::app_installations::owner_of);
    let routed = owner.and_then(|owner| {
        accounts
            .iter()
            .find(|l| l.owners.iter().any(|p| owner_matches(p, &owner)))
    });
    named
        .or(routed)
        .or_else(|| accounts.iter().find(|l| l.is_default))
        .or(accounts.first())
}

/// The link `choice` picks (one store read when nothing is chosen).
pub async fn chosen_link(
    state: &AppState,
    user_id: &str,
    provider_id: &str,
    choice: Choice<'_>,
) -> Result<Option<LinkRecord>, Failure> {
    if choice.account.is_none() && choice.url.is_none() {
        return Ok(state.store.link(user_id, provider_id).await?);
    }
    let accounts = state.store.links_of_provider(user_id, provider_id).await?;
    Ok(pick(&accounts, choice).cloned())
}

/// The user's token for `provider` (its default account), fresh.
pub async fn lookup(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
) -> Result<Lookup, Failure> {
    lookup_chosen(state, user_id, provider, Choice::default()).await
}

/// The user's token for the account of `provider` that `choice` picks, fresh: refreshed ahead
/// of expiry where possible, validated first when a workspace reported it rejected.
pub async fn lookup_chosen(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
    choice: Choice<'_>,
) -> Result<Lookup, Failure> {
    let Some(mut link) = chosen_link(state, user_id, provider.id.as_str(), choice).await? else {
        return Ok(Lookup::NotLinked);
    };
    let can_refresh = |link: &LinkRecord| !provider.no_refresh && link.refresh_token.is_some();
    let refreshed =
        |outcome: Result<refresh::Refreshed, RefreshFailure>, expired: bool| match outcome {
            Ok(r) if r.valid => Ok(Some(Lookup::Linked(open_fresh(&state.keys, &r.link)?))),
            Ok(_) => Ok(Some(Lookup::NotLinked)),
            Err(RefreshFailure::Transient(e)) if expired => Err(Failure::RefreshUnavailable(e)),
            Err(RefreshFailure::Internal(e)) => Err(e),
            Err(RefreshFailure::Gone) => Ok(Some(Lookup::NotLinked)),
            // Not expired yet: the current token still works for a while.
            Err(RefreshFailure::Transient(_) | RefreshFailure::Permanent) if !expired => Ok(None),
            Err(RefreshFailure::Transient(_) | RefreshFailure::Permanent) => {
                Ok(Some(Lookup::NotLinked))
            }
        };

    if link.needs_validation {
        let current = open_fresh(&state.keys, &link)?;
        match refresh::validate(state, provider, &current.access_token).await {
            Ok(Validity::Valid { .. } | Validity::RateLimited) => {
                let cleared = LinkRecord {
                    needs_validation: false,
                    ..link.clone()
                };
                if state
                    .store
                    .replace_link_if(&cleared, link.refresh_token.as_ref())
                    .await?
                {
                    link = cleared;
                }
            }
            Ok(Validity::Invalid) if can_refresh(&link) => {
                let outcome = refresh::refresh(state, &link).await;
                return Ok(refreshed(outcome, true)?.unwrap_or(Lookup::NotLinked));
            }
            Ok(Validity::Invalid) => return Ok(Lookup::NotLinked),
            // The provider could not say; the token is not known to be bad.
            Err(e) => {
                tracing::warn!(provider = provider.id.as_str(), error = %e, "validation failed; handing out the token unconfirmed")
            }
        }
    }

    let margin = i64::try_from(state.settings.refresh_margin.as_secs()).unwrap_or(i64::MAX);
    let now = now();
    let expired = link.expires_at.is_some_and(|at| at <= now);
    let expiring = link
        .expires_at
        .is_some_and(|at| at.saturating_sub(now) <= margin);
    if expiring && can_refresh(&link) {
        if let Some(answer) = refreshed(refresh::refresh(state, &link).await, expired)? {
            return Ok(answer);
        }
    } else if expired {
        // NO_REFRESH or no refresh token: an expired token means linking again, without asking.
        return Ok(Lookup::NotLinked);
    }
    Ok(Lookup::Linked(open_fresh(&state.keys, &link)?))
}

/// Writes `link` with its default flag set to `value`, unless a refresh replaced it meanwhile
/// (then again on the new one).
async fn set_default_flag(state: &AppState, link: &LinkRecord, value: bool) -> Result<(), Failure> {
    let mut link = link.clone();
    loop {
        let flagged = LinkRecord {
            is_default: value,
            ..link.clone()
        };
        if state
            .store
            .replace_link_if(&flagged, link.refresh_token.as_ref())
            .await?
        {
            return Ok(());
        }
        match state
            .store
            .link_account(&link.user_id, &link.provider_id, &link.account)
            .await?
        {
            Some(current) => link = current,
            None => return Ok(()),
        }
    }
}

/// Every account the user linked at the provider, by account.
pub async fn accounts_of(
    state: &AppState,
    user_id: &str,
    provider_id: &str,
) -> Result<Vec<LinkRecord>, Failure> {
    Ok(state.store.links_of_provider(user_id, provider_id).await?)
}

/// The account named in a URL path: `-` stands for the unnamed account (a link made before
/// accounts had names, or at a provider that does not say).
pub fn account_from_path(segment: &str) -> &str {
    if segment == "-" { "" } else { segment }
}

/// Makes `account` the user's default account at the provider. Whether it is linked.
pub async fn set_default_account(
    state: &AppState,
    user_id: &str,
    provider_id: &str,
    account: &str,
) -> Result<bool, Failure> {
    let accounts = state.store.links_of_provider(user_id, provider_id).await?;
    let Some(chosen) = accounts.iter().find(|l| l.account == account) else {
        return Ok(false);
    };
    set_default_flag(state, chosen, true).await?;
    for other in accounts
        .iter()
        .filter(|l| l.account != account && l.is_default)
    {
        set_default_flag(state, other, false).await?;
    }
    Ok(true)
}

/// Routes repositories of `owners` (names or `prefix*` globs) to `account`. Whether it is
/// linked.
pub async fn set_account_owners(
    state: &AppState,
    user_id: &str,
    provider_id: &str,
    account: &str,
    owners: Vec<String>,
) -> Result<bool, Failure> {
    loop {
        let Some(link) = state
            .store
            .link_account(user_id, provider_id, account)
            .await?
        else {
            return Ok(false);
        };
        let routed = LinkRecord {
            owners: owners.clone(),
            ..link.clone()
        };
        if state
            .store
            .replace_link_if(&routed, link.refresh_token.as_ref())
            .await?
        {
            return Ok(true);
        }
    }
}

/// How long a listing waits for the refreshes it started.
const LIST_REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A user's links for listing (API list, CLI `external-auth list`, the home page), with every
/// link that expires within the refresh margin refreshed first, concurrently: the states shown
/// are then the ones a workspace would meet, and a link that can no longer be refreshed says so
/// now rather than at the next `git fetch`. (Coder refreshes one link after another here.) A
/// refresh that fails leaves the link as stored; the state judged from it tells.
pub async fn refreshed_links_of_user(
    state: &AppState,
    user_id: &str,
) -> Result<Vec<LinkRecord>, Failure> {
    let links = state.store.links_of_user(user_id).await?;
    let margin = i64::try_from(state.settings.refresh_margin.as_secs()).unwrap_or(i64::MAX);
    let now = now();
    let mut refreshing = tokio::task::JoinSet::new();
    for link in &links {
        let refreshable = state
            .providers
            .get(&link.provider_id)
            .is_some_and(|p| !p.no_refresh)
            && link.refresh_token.is_some();
        let expiring = link
            .expires_at
            .is_some_and(|at| at.saturating_sub(now) <= margin);
        if refreshable && expiring {
            let (state, link) = (state.clone(), link.clone());
            refreshing.spawn(async move {
                let _ = refresh::refresh(&state, &link).await;
            });
        }
    }
    if refreshing.is_empty() {
        return Ok(links);
    }
    // A provider that is down would hold the list for the whole retry budget; past this wait
    // the refreshes go on in the background and the list shows the links as stored.
    let waited = tokio::time::timeout(LIST_REFRESH_WAIT, async {
        while refreshing.join_next().await.is_some() {}
    })
    .await;
    if waited.is_err() {
        refreshing.detach_all();
    }
    Ok(state.store.links_of_user(user_id).await?)
}

/// Records that git was refused with the current token, so the next lookup validates (and
/// refreshes) it first. Whether there was a link.
pub async fn mark_rejected(
    state: &AppState,
    user_id: &str,
    provider_id: &str,
    choice: Choice<'_>,
) -> Result<bool, Failure> {
    loop {
        let Some(link) = chosen_link(state, user_id, provider_id, choice).await? else {
            return Ok(false);
        };
        if link.needs_validation {
            return Ok(true);
        }
        let flagged = LinkRecord {
            needs_validation: true,
            ..link.clone()
        };
        if state
            .store
            .replace_link_if(&flagged, link.refresh_token.as_ref())
            .await?
        {
            return Ok(true);
        }
    }
}

/// What unlinking did at the provider.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unlinked {
    /// The provider confirmed revocation.
    pub token_revoked: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_revocation_error: Option<String>,
    /// The revocation failed for a passing reason and is retried in the background.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub revocation_pending: bool,
}

/// Deletes the link, then revokes its tokens at the provider. A revocation that fails for a
/// passing reason is kept and retried in the background ([`crate::revocations`]), never
/// forgotten. `None` when there was no link.
pub async fn unlink(
    state: &AppState,
    user_id: &str,
    provider_id: &str,
) -> Result<Option<Unlinked>, Failure> {
    let mut outcome = None;
    for link in state.store.links_of_provider(user_id, provider_id).await? {
        let unlinked = unlink_account(state, user_id, provider_id, &link.account).await?;
        // The first trouble is the one reported; every account is unlinked regardless.
        outcome = match (outcome, unlinked) {
            (
                Some(
                    o @ Unlinked {
                        token_revoked: false,
                        ..
                    },
                ),
                _,
            ) => Some(o),
            (_, next) => next,
        };
    }
    Ok(outcome)
}

/// Unlinks one account of a provider (revoking its tokens as [`unlink`] does). When it was
/// the default, the next account becomes the default.
pub async fn unlink_account(
    state: &AppState,
    user_id: &str,
    provider_id: &str,
    account: &str,
) -> Result<Option<Unlinked>, Failure> {
    let Some(link) = state
        .store
        .delete_link(user_id, provider_id, account)
        .await?
    else {
        return Ok(None);
    };
    if link.is_default {
        let rest = state.store.links_of_provider(user_id, provider_id).await?;
        if let Some(next) = rest.first().filter(|_| !rest.iter().any(|l| l.is_default)) {
            set_default_flag(state, next, true).await?;
        }
    }
    let Some(provider) = state.providers.get(provider_id) else {
        return Ok(Some(Unlinked {
            token_revoked: false,
            token_revocation_error: Some("the provider is no longer configured".to_owned()),
            revocation_pending: false,
        }));
    };
    let (access, refresh_token) = open_tokens(&state.keys, &link)?;
    let outcome = match state
        .upstream
        .revoke(provider, &access, refresh_token.as_ref())
        .await
    {
        Ok(Revocation::Revoked) => Unlinked {
            token_revoked: true,
            token_revocation_error: None,
            revocation_pending: false,
        },
        Ok(Revocation::Unsupported) => Unlinked {
            token_revoked: false,
            token_revocation_error: Some(
                "the provider has no revocation URL; revoke the grant in the provider's settings"
                    .to_owned(),
            ),
            revocation_pending: false,
        },
        Err(e) if refresh::classify_revocation(&e) == refresh::Lasting::Transient => {
            crate::revocations::keep(state, &link, &e).await?;
            Unlinked {
                token_revoked: false,
                token_revocation_error: Some(format!(
                    "{}; extauth keeps retrying in the background",
                    e.reason()
                )),
                revocation_pending: true,
            }
        }
        Err(e) => Unlinked {
            token_revoked: false,
            token_revocation_error: Some(e.reason()),
            revocation_pending: false,
        },
    };
    tracing::info!(
        user = user_id,
        provider = provider_id,
        revoked = outcome.token_revoked,
        pending = outcome.revocation_pending,
        "unlinked"
    );
    Ok(Some(outcome))
}

/// How a link looks to its user, without calling the provider.
#[derive(Debug, Clone)]
pub struct LinkState {
    /// Usable now or after a refresh.
    pub authenticated: bool,
    /// Why not, when known.
    pub error: Option<String>,
}

/// The state of a stored link, judged locally.
pub fn link_state(provider: Option<&ProviderConfig>, link: &LinkRecord) -> LinkState {
    let expired = link.expires_at.is_some_and(|at| at <= now());
    let refreshable = provider.is_some_and(|p| !p.no_refresh) && link.refresh_token.is_some();
    match (provider, expired, refreshable) {
        (None, ..) => LinkState {
            authenticated: false,
            error: Some("the provider is no longer configured".to_owned()),
        },
        (_, false, _) | (_, true, true) => LinkState {
            authenticated: true,
            error: None,
        },
        (_, true, false) => LinkState {
            authenticated: false,
            error: Some(link.refresh_failure.clone().unwrap_or_else(|| {
                "the token expired and cannot be refreshed; link again".to_owned()
            })),
        },
    }
}

/// The user's token for `provider`; when not linked and `listen`, waits (until the listen
/// timeout) for a link to be made or replaced. `None`: still not linked.
pub async fn wait_until_linked(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
    choice: Choice<'_>,
    listen: bool,
) -> Result<Option<Fresh>, Failure> {
    // Subscribe before looking, so a link completed in between is not missed.
    let mut events = listen.then(|| state.store.subscribe_links());
    let deadline = tokio::time::Instant::now() + state.settings.listen_timeout;
    let id = provider.id.as_str();
    loop {
        if let Lookup::Linked(fresh) = lookup_chosen(state, user_id, provider, choice).await? {
            return Ok(Some(fresh));
        }
        let Some(events) = events.as_mut() else {
            return Ok(None);
        };
        // The token that was just judged unusable: never looked at again while listening, so a
        // bad token costs the provider one validation, not one per wake-up.
        let bad = state.store.link(user_id, id).await?.map(|l| l.access_token);
        // Wait for this user's link to this provider to change to something new, or give up at
        // the deadline (the client asks anew).
        loop {
            let woke = match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_elapsed) => return Ok(None),
                Ok(Ok(event)) => event.concerns(user_id, id),
                Ok(Err(RecvError::Lagged(_))) => true,
                Ok(Err(RecvError::Closed)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    true
                }
            };
            if !woke {
                continue;
            }
            let current = state.store.link(user_id, id).await?;
            if current.is_some() && current.map(|l| l.access_token) != bad {
                break;
            }
        }
    }
}

/// Whether a user's link works now, as the provider says.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Not linked, or the provider refuses the token.
    NotWorking,
    /// Works; the provider's user document when its validation answered one.
    Works(Option<Value>),
}

/// Whether the user's link to `provider` works now: refreshed if needed, then validated with
/// the provider (a rate-limited validation counts as working).
pub async fn check(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
) -> Result<Check, Failure> {
    let Lookup::Linked(fresh) = lookup(state, user_id, provider).await? else {
        return Ok(Check::NotWorking);
    };
    match state.upstream.validate(provider, &fresh.access_token).await {
        Ok(Validity::Valid { user }) => Ok(Check::Works(user)),
        Ok(Validity::RateLimited) => Ok(Check::Works(None)),
        Ok(Validity::Invalid) => Ok(Check::NotWorking),
        Err(e) => Err(Failure::Validation(e)),
    }
}

/// Why the user's stored link to `provider` cannot be used, if it is stored and cannot.
pub async fn link_error(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
) -> Result<Option<String>, Failure> {
    let link = state.store.link(user_id, provider.id.as_str()).await?;
    Ok(link.and_then(|l| link_state(Some(provider), &l).error))
}

/// The configured provider `id`, or 404 naming the configured ones.
pub fn provider<'a>(state: &'a AppState, id: &str) -> Result<&'a ProviderConfig, Failure> {
    state
        .providers
        .get(id)
        .ok_or_else(|| Failure::UnknownProvider {
            id: id.to_owned(),
            known: state.providers.iter().map(|p| p.id.to_string()).collect(),
        })
}
