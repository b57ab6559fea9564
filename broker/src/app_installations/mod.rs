//! GitHub Apps done right (coder/coder#25188): a GitHub App's token reaches only the accounts
//! that installed the app, and for any other owner git gets a bare 403. For a provider with both
//! `APP_INSTALLATIONS_URL` and `APP_INSTALL_URL`, the broker knows which owners the user's
//! token covers, and says where to install the app when a repository's owner is not one.
//!
//! The list is asked of the provider at most once a minute per user and provider, not on every
//! lookup; a failure to ask is never an error for the lookup (the token is handed out as ever).

pub mod cache;

use extauth_providers::{AccessToken, ProviderConfig};

use crate::state::AppState;

/// Whether `provider` is a GitHub App whose coverage can be told.
pub fn applies(provider: &ProviderConfig) -> bool {
    provider.app_installations_url.is_some() && provider.app_install_url.is_some()
}

/// The owners whose installation `token` reaches (cached), `None` when unknown.
pub async fn owners(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
    token: &AccessToken,
) -> Option<Vec<String>> {
    let url = provider.app_installations_url.as_ref()?;
    if let Some(known) = state.installations.get(user_id, provider.id.as_str()) {
        return known;
    }
    let owners = match state.upstream.installations(provider, url, token).await {
        Ok(owners) => owners,
        Err(e) => {
            tracing::warn!(provider = provider.id.as_str(), error = %e, "cannot list the app's installations");
            return None;
        }
    };
    state
        .installations
        .put(user_id, provider.id.as_str(), owners.clone());
    owners
}

/// The owner of the repository at `url` (`https://github.com/acme/app.git` → `acme`).
pub fn owner_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let owner = parsed.path_segments()?.find(|s| !s.is_empty())?;
    Some(owner.to_owned())
}

/// What to tell a workspace asking for `match_url`'s token when the app is not installed for
/// its owner: where to install it. `None` when it is, or when that cannot be told.
pub async fn uncovered(
    state: &AppState,
    user_id: &str,
    provider: &ProviderConfig,
    match_url: &str,
    token: &AccessToken,
) -> Option<String> {
    if !applies(provider) {
        return None;
    }
    let owner = owner_of(match_url)?;
    let owners = owners(state, user_id, provider, token).await?;
    if owners.iter().any(|o| o.eq_ignore_ascii_case(&owner)) {
        return None;
    }
    let install = provider.app_install_url.as_ref()?;
    Some(format!(
        "the {} app is not installed for {owner}, so its repositories will refuse this token; install it at {install}",
        provider.display_name
    ))
}

#[cfg(test)]
mod tests {
    use super::owner_of;

    #[test]
    fn the_owner_is_the_first_path_segment() {
        assert_eq!(
            owner_of("https://github.com/acme/app.git").as_deref(),
            Some("acme")
        );
        assert_eq!(
            owner_of("http://127.0.0.1:9/gh/org/repo.git").as_deref(),
            Some("gh")
        );
        assert_eq!(owner_of("https://github.com"), None);
        assert_eq!(owner_of("not a url"), None);
    }
}
