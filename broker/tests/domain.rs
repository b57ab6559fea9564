//! The domain functions the routes call, tested on their own: an app state on an embedded store
//! in a temporary directory, no HTTP and no provider.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use extauth_broker::failure::{Failure, LoginKind};
use extauth_broker::login_flow::{self, Purpose};
use extauth_broker::settings::{ServeArgs, Settings};
use extauth_broker::state::AppState;
use extauth_broker::store::{SledStore, TokenKind};
use extauth_broker::upstream::TokenResponse;
use extauth_broker::{accounts, links, server};
use extauth_providers::{AccessToken, Providers};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

async fn app(dir: &std::path::Path) -> AppState {
    let args = Args::parse_from([
        "extauth-broker",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen-timeout",
        "3s",
    ]);
    let settings = Settings::from_args("http://127.0.0.1:3000", &args.serve).unwrap();
    let providers = Providers::from_vars([
        ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
    ])
    .unwrap();
    let store = Arc::new(SledStore::open(&dir.join("store")).unwrap());
    server::build_state(settings, providers, None, None, store)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_login_finishes_once_in_the_browser_that_started_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let link = Purpose::Link("github");
    let started = login_flow::start(&app, link, "session-a", "u1", true, "/after")
        .await
        .unwrap();
    let challenge = started.challenge.clone().unwrap();

    let elsewhere = login_flow::finish(&app, link, "session-b", "u1", &started.state).await;
    assert!(matches!(
        elsewhere,
        Err(Failure::LoginElsewhere(LoginKind::Link))
    ));
    let used = login_flow::finish(&app, link, "session-a", "u1", &started.state).await;
    assert!(
        matches!(used, Err(Failure::LoginUnknown(LoginKind::Link))),
        "the failed attempt used it up"
    );

    let started = login_flow::start(&app, link, "session-a", "u1", true, "/after")
        .await
        .unwrap();
    let finished = login_flow::finish(&app, link, "session-a", "u1", &started.state)
        .await
        .unwrap();
    assert_eq!(finished.redirect, "/after");
    let verifier = finished.verifier.unwrap();
    use base64::Engine as _;
    use sha2::Digest as _;
    let derived = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    assert_ne!(derived, challenge, "each login has its own verifier");
    assert_eq!(
        derived,
        started.challenge.unwrap(),
        "the verifier answers its challenge"
    );
    let missing = login_flow::finish(&app, Purpose::SignIn, "x", "", "").await;
    assert!(matches!(
        missing,
        Err(Failure::LoginStateMissing(LoginKind::SignIn))
    ));
}

#[tokio::test]
async fn tokens_are_refused_for_what_they_could_not_be() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let create = |name: &str, providers: Option<Vec<String>>, lifetime: Option<&str>| {
        let (app, name, lifetime) = (app.clone(), name.to_owned(), lifetime.map(str::to_owned));
        async move {
            accounts::create_token(
                &app,
                TokenKind::Workspace,
                "u1",
                &name,
                providers,
                lifetime.as_deref(),
            )
            .await
        }
    };
    assert!(matches!(
        create("n", Some(vec![]), None).await,
        Err(Failure::NarrowedToNothing)
    ));
    assert!(matches!(
        create("n", Some(vec!["gitlab".into()]), None).await,
        Err(Failure::UnknownProvider { .. })
    ));
    assert!(matches!(
        create("n", None, Some("99999999999999d")).await,
        Err(Failure::InvalidLifetime { .. })
    ));
    assert!(matches!(
        create("a\u{1b}b", None, None).await,
        Err(Failure::InvalidTokenName)
    ));
    let minted = create("ok", Some(vec!["github".into()]), Some("1d"))
        .await
        .unwrap();
    assert!(minted.token.starts_with("extauth_ws_"));
    assert!(
        accounts::revoke_token(&app, "u1", TokenKind::Workspace, &minted.record.id)
            .await
            .unwrap()
    );
    assert!(
        !accounts::revoke_token(&app, "u1", TokenKind::Workspace, &minted.record.id)
            .await
            .unwrap(),
        "already gone"
    );
}

#[tokio::test]
async fn waiting_until_linked_answers_when_the_link_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let github = links::provider(&app, "github").unwrap().clone();
    assert!(
        links::wait_until_linked(&app, "u1", &github, links::Choice::default(), false)
            .await
            .unwrap()
            .is_none(),
        "without listen: not linked, at once"
    );
    let linker = {
        let (app, github) = (app.clone(), github.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let tokens = TokenResponse {
                access_token: AccessToken::new("gho_fresh"),
                refresh_token: None,
                expires_in: None,
                refresh_expires_in: None,
                fields: Default::default(),
            };
            links::save_link(&app, "u1", &github, &tokens)
                .await
                .unwrap();
        })
    };
    let fresh = links::wait_until_linked(&app, "u1", &github, links::Choice::default(), true)
        .await
        .unwrap()
        .expect("linked while waiting");
    assert_eq!(fresh.access_token.secret(), "gho_fresh");
    linker.await.unwrap();
    assert!(matches!(
        links::provider(&app, "nope"),
        Err(Failure::UnknownProvider { known, .. }) if known == ["github"]
    ));
}

/// Self-registered apps that never completed a grant go after a day; admins' apps, used ones and
/// young ones stay.
#[tokio::test]
async fn unused_self_registered_apps_expire_after_a_day() {
    use extauth_broker::oauth2::registration;
    use extauth_broker::store::{AppOrigin, ClientType, OAuth2App};
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let now = extauth_broker::clock::now();
    let old = now - registration::UNUSED_LIFETIME_S - 60;
    let make = |id: &str, origin: AppOrigin, at: i64, granted: bool| OAuth2App {
        id: id.to_owned(),
        name: id.to_owned(),
        icon: String::new(),
        redirect_uris: vec!["http://127.0.0.1/cb".to_owned()],
        client_type: ClientType::Public,
        scopes: vec!["openid".to_owned()],
        default_scopes: vec!["openid".to_owned()],
        secrets: Vec::new(),
        created_at: at,
        updated_at: at,
        origin,
        resources: Vec::new(),
        registration_hash: None,
        stale_ms: None,
        granted,
    };
    for record in [
        make("dyn_old_unused", AppOrigin::Registered, old, false),
        make("dyn_old_used", AppOrigin::Registered, old, true),
        make("dyn_young", AppOrigin::Registered, now, false),
        make("admin_old", AppOrigin::Admin, old, false),
        make(
            "https://c.example/old.json",
            AppOrigin::MetadataDocument,
            old,
            false,
        ),
    ] {
        app.store.put_oauth2_app(&record).await.unwrap();
    }
    assert_eq!(registration::expire_unused(&app).await.unwrap(), 2);
    let mut left: Vec<String> = app
        .store
        .oauth2_apps()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .filter(|id| id != "extauth-cli")
        .collect();
    left.sort();
    assert_eq!(left, ["admin_old", "dyn_old_used", "dyn_young"]);
}
