//! Browser routes: pages, the provider login (start and callback), and form posts. Errors here
//! are HTML pages, not JSON.

use axum::extract::{Path, Query, RawForm, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::accounts::{self, TokenKind};
use crate::error::{ApiError, PageError};
use crate::identity::{self, BrowserUser, SESSION_COOKIE, cookie_header};
use crate::links::{self, Lookup};
use crate::pages::{self, Chrome};
use crate::redirects::safe_redirect;
use crate::state::AppState;
use crate::{linking, login_flow};

pub(super) fn chrome(state: &AppState, user: &BrowserUser, nav: &'static str) -> Chrome {
    Chrome {
        base: state.settings.base_path().to_owned(),
        user: Some(user.user.username.clone()),
        csrf: user.session.csrf.clone(),
        nav,
        admin: user.user.is_admin,
        oauth2: state.settings.oauth2.enabled,
    }
}

fn see_other(location: &str, cookies: Vec<String>) -> Response {
    let mut response = Redirect::to(location).into_response();
    for c in cookies {
        if let Ok(value) = c.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

pub async fn icon_get(Path(file): Path<String>) -> Response {
    pages::icon(&file)
}

pub async fn home_get(
    State(state): State<AppState>,
    user: BrowserUser,
    Query(q): Query<HomeQuery>,
) -> Result<Response, PageError> {
    let links = links::refreshed_links_of_user(&state, &user.user.id).await?;
    let base = state.settings.base_path().to_owned();
    let providers = state
        .providers
        .iter()
        .map(|p| {
            let link = links.iter().find(|l| l.provider_id == p.id.as_str());
            let judged = link.map(|l| links::link_state(Some(p), l));
            pages::ProviderRow {
                id: p.id.to_string(),
                name: p.display_name.clone(),
                icon: pages::icon_src(&base, &p.display_icon),
                linked: link.is_some(),
                error: judged.and_then(|j| j.error),
                expires: link.and_then(|l| {
                    let at = pages::when(l.expires_at?);
                    Some(if l.refresh_token.is_some() && !p.no_refresh {
                        format!("renewed automatically (current token valid until {at})")
                    } else {
                        format!("token valid until {at}, then link again")
                    })
                }),
            }
        })
        .collect();
    let c = chrome(&state, &user, "external-auth");
    Ok(pages::render(
        StatusCode::OK,
        &pages::HomePage {
            chrome: c,
            providers,
            notice: unlink_notice(&state, &q),
        },
    ))
}

pub async fn login_get(
    State(state): State<AppState>,
    user: Option<BrowserUser>,
    Query(q): Query<RedirectQuery>,
) -> Response {
    let redirect = q.redirect.as_deref().and_then(safe_redirect);
    if user.is_some() {
        let to = redirect.unwrap_or_else(|| state.settings.base_path().to_owned());
        return Redirect::to(&to).into_response();
    }
    let base = state.settings.base_path().to_owned();
    let oidc_start = state.oidc.as_ref().map(|_| {
        let mut start = format!("{base}api/v2/users/oidc/callback");
        if let Some(r) = &redirect {
            start.push_str("?redirect=");
            start.push_str(&url::form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>());
        }
        start
    });
    pages::render(
        StatusCode::OK,
        &pages::LoginPage {
            chrome: Chrome::anonymous(base),
            dev: state.settings.dev,
            oidc_start,
            oidc_text: state
                .oidc
                .as_ref()
                .map(|o| o.settings.sign_in_text.clone())
                .unwrap_or_default(),
            oidc_icon: state
                .oidc
                .as_ref()
                .and_then(|o| o.settings.icon_url.clone()),
        },
    )
}

#[derive(Deserialize)]
pub struct DevLoginQuery {
    token: String,
    redirect: Option<String>,
}

pub async fn dev_login_get(
    State(state): State<AppState>,
    Query(q): Query<DevLoginQuery>,
) -> Result<Response, PageError> {
    let user = identity::redeem_dev_login(&state, &q.token).await?;
    let session = identity::start_session(&state, &user).await?;
    tracing::info!(user = user.id, "signed in with the dev link");
    let to = q
        .redirect
        .as_deref()
        .and_then(safe_redirect)
        .unwrap_or_else(|| state.settings.base_path().to_owned());
    Ok(see_other(&to, vec![session]))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout_post(
    State(state): State<AppState>,
    user: BrowserUser,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    if let Some(value) = identity::site_cookie(&state, &headers, SESSION_COOKIE) {
        identity::end_session(&state, value).await?;
    }
    // Signed in with OIDC: end the IdP session too (RP-initiated logout), which comes back to
    // the sign-in page.
    let session = user.session.oidc.as_ref();
    let to = match crate::sign_in::end_session_url(&state, &user.user.id, session).await {
        Some(end_session) => end_session,
        None => format!("{}login", state.settings.base_path()),
    };
    tracing::info!(user = user.user.id, "signed out");
    Ok(see_other(
        &to,
        vec![cookie_header(&state, SESSION_COOKIE, "", Some(0))],
    ))
}

#[derive(Deserialize)]
pub struct RedirectQuery {
    redirect: Option<String>,
}

#[derive(Deserialize)]
pub struct ProviderQuery {
    redirect: Option<String>,
    redirected: Option<String>,
}

/// `GET /external-auth/<id>`: the page a workspace sends users to. Not linked: start the
/// provider login straight away (device providers show their code page instead).
pub async fn provider_get(
    State(state): State<AppState>,
    user: BrowserUser,
    Path(id): Path<String>,
    Query(q): Query<ProviderQuery>,
) -> Result<Response, PageError> {
    let provider = links::provider(&state, &id)?;
    let c = chrome(&state, &user, "external-auth");
    let icon = pages::icon_src(&c.base, &provider.display_icon);
    let lookup = links::lookup(&state, &user.user.id, provider).await?;
    let linked = matches!(lookup, Lookup::Linked(_));
    let redirect = q.redirect.as_deref().and_then(safe_redirect);
    if !linked && provider.device_flow {
        return Ok(pages::render(
            StatusCode::OK,
            &pages::DevicePage {
                next: redirect.unwrap_or_else(|| format!("{}external-auth/{id}", c.base)),
                chrome: c,
                id: id.clone(),
                name: provider.display_name.clone(),
                icon,
            },
        ));
    }
    if !linked && q.redirected.is_none() {
        let mut start = state
            .settings
            .access_url
            .join(&format!("external-auth/{id}/callback"));
        if let Some(redirect) = &redirect {
            start.query_pairs_mut().append_pair("redirect", redirect);
        }
        return Ok(Redirect::to(start.as_str()).into_response());
    }
    let error = if linked {
        None
    } else {
        links::link_error(&state, &user.user.id, provider).await?
    };
    let notes = if linked {
        links::notes(&state, &user.user.id, provider).await?
    } else {
        None
    };
    let expires_without_refresh = notes
        .as_ref()
        .and_then(|n| n.expires_without_refresh)
        .and_then(super::api::rfc3339);
    let relink = notes.as_ref().and_then(|n| n.relink.clone());
    let installed_for = notes
        .and_then(|n| n.installed_for)
        .map(|owners| owners.join(", "));
    let install_url = provider
        .app_install_url
        .as_ref()
        .map(|u| u.as_str().to_owned());
    let accounts = if linked {
        links::accounts_of(&state, &user.user.id, &id).await?
    } else {
        Vec::new()
    };
    // A single unnamed account is the plain "Connected" of before: no table for it.
    let accounts = if accounts.len() == 1 && accounts[0].account.is_empty() {
        Vec::new()
    } else {
        accounts
            .into_iter()
            .map(|l| pages::AccountRow {
                label: if l.account.is_empty() {
                    "(unnamed)".to_owned()
                } else {
                    l.account.clone()
                },
                account: l.account,
                is_default: l.is_default,
                owners: l.owners.join(", "),
            })
            .collect()
    };
    Ok(pages::render(
        StatusCode::OK,
        &pages::ProviderPage {
            chrome: c,
            id,
            name: provider.display_name.clone(),
            icon,
            linked,
            accounts,
            error,
            expires_without_refresh,
            relink,
            installed_for,
            install_url,
        },
    ))
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    error_uri: Option<String>,
    redirect: Option<String>,
    /// Present: link another account beside those linked.
    add_account: Option<String>,
}

/// `GET /external-auth/<id>/callback`: without `code`, starts the provider login (its state kept
/// on the server, bound to this session); with it, finishes: the state must be one this session
/// started and not used yet, then the code is exchanged and the link stored.
pub async fn callback_get(
    State(state): State<AppState>,
    user: BrowserUser,
    Path(id): Path<String>,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, PageError> {
    let provider = links::provider(&state, &id)?;
    if provider.device_flow {
        return Err(ApiError::bad_request(
            "This provider links with a device code, not a redirect.",
            format!("open {}", provider.link_url(&state.settings.access_url)),
        )
        .into());
    }
    // The session is what the login is bound to: its id hash never leaves the server.
    let binding = &user.session.id_hash;

    if let Some(error) = q.error {
        // The provider's words (and anyone's who crafted this link) go to the log, not the page.
        tracing::warn!(
            provider = id,
            error = %error.escape_debug(),
            description = %q.error_description.unwrap_or_default().escape_debug(),
            uri = %q.error_uri.unwrap_or_default().escape_debug(),
            "the provider refused the login"
        );
        return Err(ApiError::bad_request(
            format!(
                "{} refused the login ({}).",
                provider.display_name,
                login_flow::error_code(&error)
            ),
            "start linking again, or ask an admin to look at the broker's log",
        )
        .into());
    }

    let Some(code) = q.code else {
        let redirect = q
            .redirect
            .as_deref()
            .and_then(safe_redirect)
            .unwrap_or_default();
        let linking = if q.add_account.is_some() {
            linking::Linking::AddAccount
        } else {
            linking::Linking::Replace
        };
        let authorize =
            linking::start(&state, &user.user.id, binding, provider, &redirect, linking).await?;
        let mut response = Redirect::to(authorize.as_str()).into_response();
        *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        return Ok(response);
    };
    let q_state = q.state.as_deref().unwrap_or_default();
    let redirect = linking::finish(&state, &user.user.id, binding, provider, &code, q_state)
        .await?
        .unwrap_or_else(|| {
            format!(
                "{}external-auth/{id}?redirected=true",
                state.settings.base_path()
            )
        });
    Ok(see_other(&redirect, vec![]))
}

#[derive(Deserialize)]
pub struct AccountForm {
    csrf: String,
    account: String,
    /// `default`, `owners` or `unlink`.
    action: String,
    #[serde(default)]
    owners: String,
}

/// `POST /external-auth/<id>/accounts`: the provider page's account forms.
pub async fn account_post(
    State(state): State<AppState>,
    user: BrowserUser,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<AccountForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    links::provider(&state, &id)?;
    let (user_id, account) = (&user.user.id, form.account.as_str());
    let done = match form.action.as_str() {
        "default" => links::set_default_account(&state, user_id, &id, account).await?,
        "owners" => {
            let owners: Vec<String> = form
                .owners
                .split([',', ' '])
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(bad) = owners
                .iter()
                .find(|o| o.contains('/') || o.matches('*').count() > 1)
            {
                return Err(ApiError::bad_request(
                    format!("{bad:?} is not a repository owner."),
                    "give owner names such as acme, or one glob such as acme-*",
                )
                .into());
            }
            links::set_account_owners(&state, user_id, &id, account, owners).await?
        }
        "unlink" => links::unlink_account(&state, user_id, &id, account)
            .await?
            .is_some(),
        other => {
            return Err(ApiError::bad_request(
                format!("Unknown action {other:?}."),
                "use default, owners or unlink",
            )
            .into());
        }
    };
    if !done {
        return Err(
            ApiError::not_found(format!("You have no {id:?} account {account:?}."), "").into(),
        );
    }
    Ok(see_other(
        &format!(
            "{}external-auth/{id}?redirected=true",
            state.settings.base_path()
        ),
        vec![],
    ))
}

pub async fn unlink_post(
    State(state): State<AppState>,
    user: BrowserUser,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    let outcome = links::unlink(&state, &user.user.id, &id).await?;
    let revoked = match &outcome {
        None => "none",
        Some(o) if o.token_revoked => "yes",
        Some(o) if o.revocation_pending => "pending",
        Some(o) => {
            if let Some(error) = &o.token_revocation_error {
                tracing::warn!(provider = id, error, "revocation at the provider failed");
            }
            "no"
        }
    };
    // The outcome travels in the redirect so that a reload of the page does not unlink again.
    let to = format!(
        "{}?unlinked={}&revoked={revoked}",
        state.settings.base_path(),
        url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    );
    Ok(see_other(&to, vec![]))
}

#[derive(Deserialize)]
pub struct HomeQuery {
    unlinked: Option<String>,
    revoked: Option<String>,
}

/// What the home page says after an unlink: whether the provider still honours the old token.
fn unlink_notice(state: &AppState, q: &HomeQuery) -> Option<String> {
    // The query is anyone's to write into a link: only a configured provider's name is shown.
    let name = state
        .providers
        .get(q.unlinked.as_deref()?)?
        .display_name
        .clone();
    Some(match q.revoked.as_deref() {
        Some("yes") => format!("{name} unlinked, and its token revoked at {name}."),
        Some("pending") => format!(
            "{name} unlinked. {name} did not answer the revocation; extauth keeps retrying it in the background."
        ),
        Some("none") => format!("{name} was not linked."),
        _ => format!(
            "{name} unlinked. Its token could not be revoked at {name}: revoke the grant in your {name} settings."
        ),
    })
}

async fn tokens_page(
    state: &AppState,
    user: &BrowserUser,
    created: Option<pages::CreatedToken>,
) -> Result<Response, PageError> {
    let tokens = accounts::tokens_of(state, &user.user.id, TokenKind::Workspace).await?;
    let c = chrome(state, user, "tokens");
    let rows = tokens
        .iter()
        .map(|t| pages::TokenRow {
            id: t.id.clone(),
            name: t.name.clone(),
            providers: t
                .providers
                .as_ref()
                .map_or_else(|| "all".to_owned(), |p| p.join(", ")),
            created: pages::when(t.created_at),
            expires: t.expires_at.map_or_else(|| "never".to_owned(), pages::when),
        })
        .collect();
    Ok(pages::render(
        if created.is_some() {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &pages::TokensPage {
            chrome: c,
            access_url: state
                .settings
                .access_url
                .to_string()
                .trim_end_matches('/')
                .to_owned(),
            created,
            tokens: rows,
            providers: state
                .providers
                .iter()
                .map(|p| pages::ProviderChoice {
                    id: p.id.to_string(),
                    name: p.display_name.clone(),
                })
                .collect(),
        },
    ))
}

pub async fn tokens_get(
    State(state): State<AppState>,
    user: BrowserUser,
) -> Result<Response, PageError> {
    tokens_page(&state, &user, None).await
}

/// The token form: `name`, `lifetime`, `csrf` and repeated `provider` fields.
pub async fn tokens_post(
    State(state): State<AppState>,
    user: BrowserUser,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    user.check_csrf(get("csrf").unwrap_or_default())?;
    let providers: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "provider")
        .map(|(_, v)| v.clone())
        .collect();
    let minted = accounts::create_token(
        &state,
        TokenKind::Workspace,
        &user.user.id,
        get("name").unwrap_or_default(),
        (!providers.is_empty()).then_some(providers),
        get("lifetime"),
    )
    .await?;
    tokens_page(
        &state,
        &user,
        Some(pages::CreatedToken {
            name: minted.record.name,
            token: minted.token,
        }),
    )
    .await
}

pub async fn token_revoke_post(
    State(state): State<AppState>,
    user: BrowserUser,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    if !accounts::revoke_token(&state, &user.user.id, TokenKind::Workspace, &id).await? {
        return Err(ApiError::not_found("No such token.", "").into());
    }
    Ok(see_other(
        &format!("{}workspace-tokens", state.settings.base_path()),
        vec![],
    ))
}

/// `GET /workspace-tokens/{id}`: the token's setup, a Connect button per required provider
/// that is not linked yet.
pub async fn token_setup_get(
    State(state): State<AppState>,
    user: BrowserUser,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let Some(setup) = crate::workspace_setup::of(&state, &user.user.id, &id).await? else {
        return Err(ApiError::not_found("No such workspace token.", "").into());
    };
    let c = chrome(&state, &user, "tokens");
    let back = format!("{}workspace-tokens/{id}", c.base);
    let ready = setup.ready();
    let required = setup
        .required
        .into_iter()
        .map(|r| {
            let mut connect = url::Url::parse(&r.link_url)
                .map(|u| u.path().to_owned())
                .unwrap_or_default();
            connect.push_str("?redirect=");
            connect.push_str(
                &url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>(),
            );
            pages::SetupRow {
                id: r.id,
                name: r.name,
                linked: r.linked,
                connect_url: connect,
            }
        })
        .collect();
    Ok(pages::render(
        StatusCode::OK,
        &pages::WorkspaceSetupPage {
            chrome: c,
            name: setup.token.name,
            required,
            ready,
        },
    ))
}

/// `GET /cli-auth`: where `extauth login` sends the user to get an API token for the CLI.
pub async fn cli_auth_get(
    State(state): State<AppState>,
    user: BrowserUser,
) -> Result<Response, PageError> {
    cli_auth_page(&state, &user, None)
}

/// `POST /cli-auth`: creates the CLI's API token (30 days) and shows it once.
pub async fn cli_auth_post(
    State(state): State<AppState>,
    user: BrowserUser,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    let minted = accounts::create_token(
        &state,
        TokenKind::Api,
        &user.user.id,
        "extauth CLI",
        None,
        Some("30d"),
    )
    .await?;
    cli_auth_page(&state, &user, Some(minted.token))
}

fn cli_auth_page(
    state: &AppState,
    user: &BrowserUser,
    token: Option<String>,
) -> Result<Response, PageError> {
    let c = chrome(state, user, "");
    Ok(pages::render(
        if token.is_some() {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &pages::CliAuthPage { chrome: c, token },
    ))
}
