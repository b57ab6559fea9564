//! A workspace's setup (seed 001, "add an authentication button to the workspace template"): a
//! workspace token may name the providers its workspace requires; until each is linked the
//! token's page shows a Connect button for it, and the workspace can wait (`extauth
//! wait-for-auth`) until all are.

use crate::failure::Failure;
use crate::links::link_state;
use crate::state::AppState;
use crate::store::{TokenKind, TokenRecord};

/// One provider a workspace requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Linked and usable (now or after a refresh).
    pub linked: bool,
    /// Where the user links it.
    pub link_url: String,
}

/// Where a workspace token's setup stands.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The token (its secret is not here).
    pub token: TokenRecord,
    /// The providers it requires (none when it names none: it may use any linked one).
    pub required: Vec<Requirement>,
}

impl Setup {
    /// Every required provider is linked.
    pub fn ready(&self) -> bool {
        self.required.iter().all(|r| r.linked)
    }
}

/// The setup of `token`, a workspace token of `user_id`.
pub async fn of_token(
    state: &AppState,
    user_id: &str,
    token: TokenRecord,
) -> Result<Setup, Failure> {
    let mut required = Vec::new();
    for id in token.providers.iter().flatten() {
        let provider = state.providers.get(id);
        let linked = match state.store.link(user_id, id).await? {
            Some(link) => link_state(provider, &link).authenticated,
            None => false,
        };
        required.push(Requirement {
            id: id.clone(),
            name: provider.map_or_else(|| id.clone(), |p| p.display_name.clone()),
            linked,
            link_url: provider
                .map(|p| p.link_url(&state.settings.access_url).to_string())
                .unwrap_or_default(),
        });
    }
    Ok(Setup { token, required })
}

/// The setup of the workspace token `token_id` of `user_id`, if it is one of theirs.
pub async fn of(state: &AppState, user_id: &str, token_id: &str) -> Result<Option<Setup>, Failure> {
    let token = state
        .store
        .tokens_of_user(user_id, TokenKind::Workspace)
        .await?
        .into_iter()
        .find(|t| t.id == token_id);
    match token {
        Some(token) => Ok(Some(of_token(state, user_id, token).await?)),
        None => Ok(None),
    }
}

/// Where the user sees a token's setup.
pub fn page_url(state: &AppState, token_id: &str) -> String {
    state
        .settings
        .access_url
        .join(&format!("workspace-tokens/{token_id}"))
        .to_string()
}
