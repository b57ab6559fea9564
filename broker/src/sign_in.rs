//! Signing in with OIDC, the parts that outlive the callback: ending the IdP's session with the
//! broker's (RP-initiated logout).

use crate::state::AppState;
use crate::store::OidcSession;

/// Where RP-initiated logout sends the browser: the IdP's end-session endpoint with
/// `id_token_hint` and `post_logout_redirect_uri`, when both are known.
pub async fn end_session_url(
    state: &AppState,
    user_id: &str,
    session: Option<&OidcSession>,
) -> Option<String> {
    let oidc = state.oidc.as_ref()?;
    let sealed = session?.id_token.as_ref()?;
    let id_token = state
        .keys
        .open_string(&crate::oidc::session_purpose(user_id, "id_token"), sealed)
        .ok()?;
    let endpoint = oidc.discovery().await.ok()?.end_session_endpoint?;
    let mut url = url::Url::parse(&endpoint).ok()?;
    url.query_pairs_mut()
        .append_pair("id_token_hint", &id_token)
        .append_pair(
            "post_logout_redirect_uri",
            state.settings.access_url.join("login").as_str(),
        )
        .append_pair("client_id", &oidc.settings.client_id);
    Some(url.to_string())
}
