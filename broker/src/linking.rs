//! Linking a provider in the browser: the login at the provider started with a state bound to
//! the user's session, and finished by exchanging the code it sent back and storing the tokens.

use extauth_providers::{PkceMethod, ProviderConfig};
use url::Url;

use crate::failure::Failure;
pub use crate::links::Linking;
use crate::login_flow::{self, Purpose};
use crate::redirects::safe_redirect;
use crate::state::AppState;
use crate::upstream::UpstreamError;

/// Starts linking `provider` for `user_id` in the browser session `binding` (its id hash):
/// where to send the browser.
pub async fn start(
    state: &AppState,
    user_id: &str,
    binding: &str,
    provider: &ProviderConfig,
    redirect: &str,
    linking: Linking,
) -> Result<Url, Failure> {
    let purpose = match linking {
        Linking::Replace => Purpose::Link(provider.id.as_str()),
        Linking::AddAccount => Purpose::AddAccount(provider.id.as_str()),
    };
    let started = login_flow::start(
        state,
        purpose,
        binding,
        user_id,
        provider.pkce == PkceMethod::S256,
        redirect,
    )
    .await?;
    let mut url = state.upstream.authorize_url(
        provider,
        &provider.callback_url(&state.settings.access_url),
        &started.state,
        started.challenge.as_deref(),
    );
    if linking == Linking::AddAccount {
        // The browser is likely signed in to the provider as the account already linked: ask
        // it to let the user pick (GitHub) or sign in again (OIDC providers).
        let prompt = match provider.provider_type {
            extauth_providers::ProviderType::Github => "select_account",
            _ => "login",
        };
        url.query_pairs_mut().append_pair("prompt", prompt);
    }
    Ok(url)
}

/// Finishes linking with the `code` and `state` the provider sent back, if this session started
/// it: exchanges the code and stores the link. Where to go next, if the start said.
pub async fn finish(
    state: &AppState,
    user_id: &str,
    binding: &str,
    provider: &ProviderConfig,
    code: &str,
    returned_state: &str,
) -> Result<Option<String>, Failure> {
    let finished = login_flow::finish(
        state,
        Purpose::Link(provider.id.as_str()),
        binding,
        user_id,
        returned_state,
    )
    .await?;
    let callback = provider.callback_url(&state.settings.access_url);
    let tokens = state
        .upstream
        .exchange_code(provider, code, &callback, finished.verifier.as_deref())
        .await
        .map_err(|e| match e {
            UpstreamError::OAuth { .. } => Failure::CodeRefused(e),
            _ => Failure::CodeExchange(e),
        })?;
    let linking = if finished.adds_account {
        Linking::AddAccount
    } else {
        Linking::Replace
    };
    crate::links::save_account(state, user_id, provider, &tokens, linking).await?;
    Ok(safe_redirect(&finished.redirect))
}
