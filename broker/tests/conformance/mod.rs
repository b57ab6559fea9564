//! The behaviour every [`Store`] backend must have, as one function per behaviour.
//!
//! A backend's tests (`store_sled.rs`, `store_postgres.rs`) include this module and instantiate
//! every behaviour with `store_conformance_tests!`, giving it a factory that makes a fresh,
//! empty store. Test code: it lives with the tests, not in the broker.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]

use std::time::Duration;

#[path = "../../../tests/src/database.rs"]
mod database;

#[allow(unused_imports)]
pub use database::TestDatabase;
use extauth_broker::crypto::Sealed;
use extauth_broker::store::*;

pub fn sealed(key_id: &str, data: &str) -> Sealed {
    Sealed {
        key_id: key_id.to_owned(),
        data: data.to_owned(),
    }
}

fn user(id: &str, username: &str) -> User {
    User {
        id: id.to_owned(),
        username: username.to_owned(),
        email: format!("{username}@example.com"),
        name: username.to_uppercase(),
        is_admin: false,
        oidc: Some(OidcIdentity {
            issuer: "https://idp.example.com/".to_owned(),
            subject: format!("sub-{id}"),
        }),
        created_at: 1,
    }
}

pub fn link(user_id: &str, provider_id: &str, refresh: Option<&str>) -> LinkRecord {
    LinkRecord {
        user_id: user_id.to_owned(),
        provider_id: provider_id.to_owned(),
        account: String::new(),
        is_default: true,
        owners: Vec::new(),
        access_token: sealed("k1", &format!("access-{user_id}-{provider_id}")),
        refresh_token: refresh.map(|r| sealed("k1", r)),
        expires_at: Some(1_000),
        extra: None,
        refresh_failure: None,
        needs_validation: false,
        created_at: 10,
        updated_at: 10,
        refresh_expires_at: None,
    }
}

fn token(id: &str, user_id: &str, kind: TokenKind, created_at: i64) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        kind,
        user_id: user_id.to_owned(),
        name: format!("token {id}"),
        secret_hash: format!("hash-{id}"),
        providers: None,
        created_at,
        expires_at: None,
    }
}

pub async fn users(store: &dyn Store) {
    assert_eq!(store.count_users().await.unwrap(), 0);
    let alice = user("u1", "alice");
    store.create_user(&alice).await.unwrap();
    store.create_user(&user("u2", "bob")).await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 2);
    assert_eq!(store.user("u1").await.unwrap(), Some(alice.clone()));
    assert_eq!(
        store.user_by_username("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store
            .user_by_oidc("https://idp.example.com/", "sub-u1")
            .await
            .unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.user("nope").await.unwrap(), None);
    assert_eq!(store.user_by_username("carol").await.unwrap(), None);
    assert_eq!(
        store
            .user_by_oidc("https://other/", "sub-u1")
            .await
            .unwrap(),
        None
    );

    let updated = User {
        email: "new@example.com".to_owned(),
        is_admin: true,
        ..alice.clone()
    };
    store.update_user(&updated).await.unwrap();
    assert_eq!(store.user("u1").await.unwrap(), Some(updated));
}

pub async fn unique_users(store: &dyn Store) {
    store.create_user(&user("u1", "alice")).await.unwrap();
    let same_name = User {
        oidc: None,
        ..user("u2", "alice")
    };
    assert!(matches!(
        store.create_user(&same_name).await,
        Err(StoreError::Conflict(_))
    ));
    let same_identity = User {
        username: "alice2".to_owned(),
        ..user("u3", "x")
    };
    let same_identity = User {
        oidc: user("u1", "alice").oidc,
        ..same_identity
    };
    assert!(matches!(
        store.create_user(&same_identity).await,
        Err(StoreError::Conflict(_))
    ));
    // A refused user leaves nothing behind.
    assert_eq!(store.count_users().await.unwrap(), 1);
    assert_eq!(store.user_by_username("alice2").await.unwrap(), None);
}

pub async fn sessions(store: &dyn Store) {
    let session = |id: &str, user_id: &str| Session {
        id_hash: id.to_owned(),
        user_id: user_id.to_owned(),
        csrf: format!("csrf-{id}"),
        created_at: 1,
        expires_at: 2,
        oidc: None,
    };
    store.put_session(&session("s1", "u1")).await.unwrap();
    store.put_session(&session("s2", "u1")).await.unwrap();
    store.put_session(&session("s3", "u2")).await.unwrap();
    assert_eq!(
        store.session("s1").await.unwrap(),
        Some(session("s1", "u1"))
    );
    store.delete_session("s1").await.unwrap();
    assert_eq!(store.session("s1").await.unwrap(), None);
    assert_eq!(store.delete_user_sessions("u1").await.unwrap(), 1);
    assert_eq!(store.session("s2").await.unwrap(), None);
    assert_eq!(
        store.session("s3").await.unwrap(),
        Some(session("s3", "u2"))
    );
}

pub async fn tokens(store: &dyn Store) {
    store
        .create_token(&token("t2", "u1", TokenKind::Workspace, 2))
        .await
        .unwrap();
    store
        .create_token(&token("t1", "u1", TokenKind::Workspace, 1))
        .await
        .unwrap();
    store
        .create_token(&token("t3", "u1", TokenKind::Api, 3))
        .await
        .unwrap();
    store
        .create_token(&token("t4", "u2", TokenKind::Workspace, 4))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_token(&token("t1", "u2", TokenKind::Api, 5))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let narrowed = TokenRecord {
        providers: Some(vec!["github".to_owned()]),
        expires_at: Some(99),
        ..token("t5", "u2", TokenKind::Workspace, 6)
    };
    store.create_token(&narrowed).await.unwrap();
    assert_eq!(store.token("t5").await.unwrap(), Some(narrowed.clone()));
    assert_eq!(store.token("t1").await.unwrap().unwrap().user_id, "u1");

    // With its user, in one read where the backend can; a token whose user is gone has none.
    let alice = user("u2", "alice");
    store.create_user(&alice).await.unwrap();
    assert_eq!(
        store.token_with_user("t5").await.unwrap(),
        Some((narrowed, Some(alice)))
    );
    let (orphan, nobody) = store.token_with_user("t1").await.unwrap().unwrap();
    assert_eq!((orphan.id.as_str(), nobody), ("t1", None));
    assert_eq!(store.token_with_user("t9").await.unwrap(), None);

    let ids = |tokens: Vec<TokenRecord>| tokens.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store
            .tokens_of_user("u1", TokenKind::Workspace)
            .await
            .unwrap()),
        ["t1", "t2"]
    );
    assert_eq!(
        ids(store.tokens_of_user("u1", TokenKind::Api).await.unwrap()),
        ["t3"]
    );
    assert_eq!(
        ids(store
            .tokens_of_user("u2", TokenKind::Workspace)
            .await
            .unwrap()),
        ["t4", "t5"]
    );

    assert!(store.delete_token("t1").await.unwrap());
    assert!(!store.delete_token("t1").await.unwrap());
    assert_eq!(store.token("t1").await.unwrap(), None);
}

pub async fn links(store: &dyn Store) {
    store
        .put_link(&link("u1", "github", Some("r1")))
        .await
        .unwrap();
    store.put_link(&link("u1", "gitlab", None)).await.unwrap();
    // A user id that is a prefix of another must not see its links.
    store.put_link(&link("u", "github", None)).await.unwrap();
    store.put_link(&link("u10", "github", None)).await.unwrap();

    assert_eq!(
        store.link("u1", "github").await.unwrap(),
        Some(link("u1", "github", Some("r1")))
    );
    assert_eq!(store.link("u2", "github").await.unwrap(), None);
    // When the refresh token itself runs out is kept.
    let expiring = LinkRecord {
        refresh_expires_at: Some(15_552_000),
        ..link("u1", "gitlab", Some("r2"))
    };
    store.put_link(&expiring).await.unwrap();
    assert_eq!(store.link("u1", "gitlab").await.unwrap(), Some(expiring));
    store.put_link(&link("u1", "gitlab", None)).await.unwrap();
    let providers = |links: Vec<LinkRecord>| {
        links
            .into_iter()
            .map(|l| format!("{}/{}", l.user_id, l.provider_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        providers(store.links_of_user("u1").await.unwrap()),
        ["u1/github", "u1/gitlab"]
    );
    assert_eq!(
        providers(store.links_of_user("u").await.unwrap()),
        ["u/github"]
    );

    // Insert or update: a relink replaces everything, including a cached failure.
    let failed = LinkRecord {
        refresh_token: None,
        refresh_failure: Some("invalid_grant".to_owned()),
        ..link("u1", "github", None)
    };
    store.put_link(&failed).await.unwrap();
    assert_eq!(store.link("u1", "github").await.unwrap(), Some(failed));
    let relinked = link("u1", "github", Some("r2"));
    store.put_link(&relinked).await.unwrap();
    assert_eq!(
        store
            .link("u1", "github")
            .await
            .unwrap()
            .unwrap()
            .refresh_failure,
        None
    );

    assert_eq!(
        store.delete_link("u1", "github", "").await.unwrap(),
        Some(relinked)
    );
    assert_eq!(store.delete_link("u1", "github", "").await.unwrap(), None);
    assert_eq!(store.link("u1", "github").await.unwrap(), None);
}

/// The optimistic check that keeps two refreshes from both being stored.
/// Several accounts of one provider: each its own record, the default found by `link`, one
/// replaced or deleted without touching the others, and routing data kept.
pub async fn link_accounts(store: &dyn Store) {
    let account = |name: &str, default: bool, owners: &[&str]| LinkRecord {
        account: name.to_owned(),
        is_default: default,
        owners: owners.iter().map(|o| (*o).to_owned()).collect(),
        access_token: sealed("k1", &format!("access-{name}")),
        ..link("u1", "github", Some(&format!("refresh-{name}")))
    };
    store
        .put_link(&account("personal", false, &[]))
        .await
        .unwrap();
    store
        .put_link(&account("work", true, &["acme", "acme-*"]))
        .await
        .unwrap();
    store.put_link(&link("u1", "gitlab", None)).await.unwrap();
    // The default, whatever the order.
    assert_eq!(
        store.link("u1", "github").await.unwrap(),
        Some(account("work", true, &["acme", "acme-*"]))
    );
    assert_eq!(
        store
            .link_account("u1", "github", "personal")
            .await
            .unwrap(),
        Some(account("personal", false, &[]))
    );
    assert_eq!(
        store.link_account("u1", "github", "nobody").await.unwrap(),
        None
    );
    let names = |links: Vec<LinkRecord>| {
        links
            .into_iter()
            .map(|l| format!("{}/{}", l.provider_id, l.account))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.links_of_provider("u1", "github").await.unwrap()),
        ["github/personal", "github/work"]
    );
    assert_eq!(
        names(store.links_of_user("u1").await.unwrap()),
        ["github/personal", "github/work", "gitlab/"]
    );
    // One account's refresh leaves the other alone.
    let refreshed = LinkRecord {
        access_token: sealed("k1", "access-personal-2"),
        refresh_token: Some(sealed("k1", "refresh-personal-2")),
        ..account("personal", false, &[])
    };
    assert!(
        store
            .replace_link_if(&refreshed, Some(&sealed("k1", "refresh-personal")))
            .await
            .unwrap()
    );
    assert_eq!(
        store.link_account("u1", "github", "work").await.unwrap(),
        Some(account("work", true, &["acme", "acme-*"]))
    );
    // Deleting one account keeps the other.
    assert_eq!(
        store.delete_link("u1", "github", "work").await.unwrap(),
        Some(account("work", true, &["acme", "acme-*"]))
    );
    assert_eq!(store.link("u1", "github").await.unwrap(), Some(refreshed));
    store.delete_link("u1", "github", "personal").await.unwrap();
    store.delete_link("u1", "gitlab", "").await.unwrap();
    assert_eq!(store.links_of_user("u1").await.unwrap(), []);
}

pub async fn replace_link_if(store: &dyn Store) {
    store
        .put_link(&link("u1", "github", Some("r1")))
        .await
        .unwrap();
    let refreshed = LinkRecord {
        access_token: sealed("k1", "new-access"),
        ..link("u1", "github", Some("r2"))
    };
    let r1 = sealed("k1", "r1");
    assert!(store.replace_link_if(&refreshed, Some(&r1)).await.unwrap());
    assert_eq!(
        store.link("u1", "github").await.unwrap(),
        Some(refreshed.clone())
    );

    // A loser of the race still holds the old refresh token: refused, nothing changes.
    let loser = link("u1", "github", Some("r3"));
    assert!(!store.replace_link_if(&loser, Some(&r1)).await.unwrap());
    assert_eq!(store.link("u1", "github").await.unwrap(), Some(refreshed));

    // No link at all (unlinked meanwhile): refused, not recreated.
    assert!(
        !store
            .replace_link_if(&link("u2", "github", None), None)
            .await
            .unwrap()
    );
    assert_eq!(store.link("u2", "github").await.unwrap(), None);
}

pub async fn link_notifications(store: &dyn Store) {
    let mut events = store.subscribe_links();
    store
        .put_link(&link("u1", "github", Some("r1")))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .expect("put_link notifies")
        .unwrap();
    assert_eq!(
        event,
        LinkChanged {
            user_id: "u1".to_owned(),
            provider_id: "github".to_owned()
        }
    );
    store.delete_link("u1", "github", "").await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .expect("delete_link notifies")
        .unwrap();
    assert_eq!(event.provider_id, "github");
}

fn pending(id: &str, user_id: &str, next_attempt_at: i64) -> PendingRevocation {
    PendingRevocation {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        provider_id: "github".to_owned(),
        access_token: sealed("k1", "a"),
        refresh_token: Some(sealed("k4", "r")),
        attempts: 1,
        next_attempt_at,
        last_error: "provider answered HTTP 503".to_owned(),
        created_at: next_attempt_at - 100,
    }
}

pub async fn pending_revocations(store: &dyn Store) {
    store
        .put_pending_revocation(&pending("p1", "u1", 100))
        .await
        .unwrap();
    store
        .put_pending_revocation(&pending("p2", "u1", 300))
        .await
        .unwrap();
    store
        .put_pending_revocation(&pending("p3", "u2", 200))
        .await
        .unwrap();
    let ids = |v: Vec<PendingRevocation>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.pending_revocations_due(99).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(store.pending_revocations_due(250).await.unwrap()),
        ["p1", "p3"]
    );
    assert_eq!(
        ids(store.pending_revocations_of_user("u1").await.unwrap()),
        ["p1", "p2"]
    );

    // A failed attempt reschedules it.
    let retried = PendingRevocation {
        attempts: 2,
        next_attempt_at: 1_000,
        ..pending("p1", "u1", 100)
    };
    store.put_pending_revocation(&retried).await.unwrap();
    assert_eq!(
        ids(store.pending_revocations_due(250).await.unwrap()),
        ["p3"]
    );
    assert_eq!(
        store.pending_revocations_of_user("u1").await.unwrap()[0],
        retried
    );

    assert!(store.delete_pending_revocation("p3").await.unwrap());
    assert!(!store.delete_pending_revocation("p3").await.unwrap());
    assert!(
        store
            .pending_revocations_of_user("u2")
            .await
            .unwrap()
            .is_empty()
    );
    // Their keys count as in use.
    assert!(store.encryption_key_ids().await.unwrap().contains("k4"));
}

/// The reads of the lookup path (a token with its user, a user's links of a provider), which a
/// backend may serve from a cache, see every write made before them.
pub async fn cached_reads_follow_writes(store: &dyn Store) {
    // A token read while its user did not exist yet, then the user created: it has one.
    store
        .create_token(&token("t1", "u1", TokenKind::Workspace, 1))
        .await
        .unwrap();
    assert_eq!(store.token_with_user("t1").await.unwrap().unwrap().1, None);
    store.create_user(&user("u1", "bob")).await.unwrap();
    let (_, bob) = store.token_with_user("t1").await.unwrap().unwrap();
    assert_eq!(bob.unwrap().name, "BOB");
    let renamed = User {
        name: "Robert".to_owned(),
        ..user("u1", "bob")
    };
    store.update_user(&renamed).await.unwrap();
    let (_, robert) = store.token_with_user("t1").await.unwrap().unwrap();
    assert_eq!(robert.unwrap().name, "Robert");
    assert!(store.delete_token("t1").await.unwrap());
    assert_eq!(store.token_with_user("t1").await.unwrap(), None);

    assert_eq!(store.link("u1", "github").await.unwrap(), None);
    let first = link("u1", "github", Some("r1"));
    store.put_link(&first).await.unwrap();
    assert_eq!(
        store.link("u1", "github").await.unwrap(),
        Some(first.clone())
    );
    let second = link("u1", "github", Some("r2"));
    store.put_link(&second).await.unwrap();
    assert_eq!(
        store.link("u1", "github").await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(
        store.links_of_provider("u1", "github").await.unwrap(),
        vec![second.clone()]
    );
    let third = link("u1", "github", Some("r3"));
    assert!(
        store
            .replace_link_if(&third, second.refresh_token.as_ref())
            .await
            .unwrap()
    );
    assert_eq!(
        store.link("u1", "github").await.unwrap(),
        Some(third.clone())
    );
    store
        .delete_link("u1", "github", &third.account)
        .await
        .unwrap();
    assert_eq!(store.link("u1", "github").await.unwrap(), None);
    assert_eq!(
        store.links_of_provider("u1", "github").await.unwrap(),
        vec![]
    );

    // A token read brings its user's links along (PostgreSQL keeps them for the lookup that
    // follows): every field comes back, several accounts in order, and writes after it are seen.
    let work = LinkRecord {
        account: "work".to_owned(),
        is_default: false,
        owners: vec!["acme".to_owned()],
        extra: Some(sealed("k1", "extra")),
        refresh_failure: Some("failed once".to_owned()),
        needs_validation: true,
        refresh_expires_at: Some(9_000),
        ..link("u1", "gitlab", Some("w1"))
    };
    let home = link("u1", "gitlab", Some("h1"));
    store.put_link(&work).await.unwrap();
    store.put_link(&home).await.unwrap();
    store
        .create_token(&token("t2", "u1", TokenKind::Workspace, 1))
        .await
        .unwrap();
    assert!(store.token_with_user("t2").await.unwrap().is_some());
    assert_eq!(
        store.links_of_provider("u1", "gitlab").await.unwrap(),
        vec![home.clone(), work.clone()]
    );
    assert_eq!(
        store.link("u1", "gitlab").await.unwrap(),
        Some(home.clone())
    );
    let renewed = link("u1", "gitlab", Some("h2"));
    store.put_link(&renewed).await.unwrap();
    assert!(store.token_with_user("t2").await.unwrap().is_some());
    assert_eq!(
        store.link("u1", "gitlab").await.unwrap(),
        Some(renewed.clone())
    );
    store.delete_link("u1", "gitlab", "work").await.unwrap();
    assert!(store.token_with_user("t2").await.unwrap().is_some());
    assert_eq!(
        store.links_of_provider("u1", "gitlab").await.unwrap(),
        vec![renewed]
    );
}

pub async fn key_ids(store: &dyn Store) {
    assert!(store.encryption_key_ids().await.unwrap().is_empty());
    assert_eq!(store.plaintext_values().await.unwrap(), 0);
    store.put_link(&link("u1", "github", None)).await.unwrap();
    let other = LinkRecord {
        refresh_token: Some(sealed("k2", "r")),
        extra: Some(sealed("k3", "{}")),
        ..link("u2", "github", None)
    };
    store.put_link(&other).await.unwrap();
    let ids: Vec<String> = store
        .encryption_key_ids()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ids, ["k1", "k2", "k3"]);

    // Sealed values of OIDC sessions count; plaintext (after `dbcrypt decrypt`) is no key.
    let mut session = oidc_session("s1", "u1");
    session.oidc.as_mut().unwrap().refresh_token = Some(sealed("k5", "r"));
    store.put_session(&session).await.unwrap();
    let plain = LinkRecord {
        access_token: sealed("", "cGxhaW4="),
        ..link("u3", "github", None)
    };
    store.put_link(&plain).await.unwrap();
    assert_eq!(store.link("u3", "github").await.unwrap(), Some(plain));
    assert_eq!(store.plaintext_values().await.unwrap(), 1);
    let ids: Vec<String> = store
        .encryption_key_ids()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ids, ["k1", "k2", "k3", "k4", "k5"]);

    // The authorization server's sealed values count too: signing keys, kept answers.
    store
        .put_signing_key(&signing_key("kid1", 1))
        .await
        .unwrap();
    store
        .create_oauth2_family(&OAuth2Family {
            retry_answer: Some(sealed("k7", "answer")),
            ..family("f1", "a1", "u1", None)
        })
        .await
        .unwrap();
    store
        .put_signing_key(&SigningKey {
            private_key: sealed("", "cGxhaW4="),
            ..signing_key("kid2", 2)
        })
        .await
        .unwrap();
    let ids: Vec<String> = store
        .encryption_key_ids()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ids, ["k1", "k2", "k3", "k4", "k5", "k6", "k7"]);
    assert_eq!(store.plaintext_values().await.unwrap(), 2);

    // A key no stored value uses is gone from the list once dbcrypt has revoked it (a store
    // may list it until then: sled keeps the links' keys as a summary).
    let other = store.link("u2", "github").await.unwrap().unwrap();
    store
        .delete_link("u2", "github", &other.account)
        .await
        .unwrap();
    store
        .revoke_key_ids(&["k2".to_owned(), "k3".to_owned()], 1)
        .await
        .unwrap();
    let ids = store.encryption_key_ids().await.unwrap();
    assert!(!ids.contains("k2") && !ids.contains("k3"), "{ids:?}");
    assert!(ids.contains("k1"), "{ids:?}");
    store.ping().await.unwrap();
}

pub fn app(id: &str, created_at: i64) -> OAuth2App {
    OAuth2App {
        id: id.to_owned(),
        name: format!("App {id}"),
        icon: String::new(),
        redirect_uris: vec!["https://app.example/cb".into()],
        client_type: ClientType::Confidential,
        scopes: vec!["openid".into(), "user:read".into()],
        default_scopes: vec!["openid".into()],
        secrets: vec![AppSecret {
            id: format!("{id}-s1"),
            secret_hash: "hash".into(),
            truncated: "abc123".into(),
            created_at,
            last_used_at: None,
        }],
        created_at,
        updated_at: created_at,
        origin: Default::default(),
        resources: Vec::new(),
        registration_hash: None,
        stale_ms: None,
        granted: false,
    }
}

pub fn resource(id: &str, created_at: i64) -> ProtectedResource {
    ProtectedResource {
        id: id.to_owned(),
        name: format!("Resource {id}"),
        url: format!("https://{id}.example/mcp"),
        scopes: vec!["tools:read".into(), "tools:call".into()],
        created_at,
    }
}

pub async fn oauth2_resources(store: &dyn Store) {
    assert!(store.oauth2_resources().await.unwrap().is_empty());
    store
        .put_oauth2_resource(&resource("new", 2))
        .await
        .unwrap();
    store
        .put_oauth2_resource(&resource("old", 1))
        .await
        .unwrap();
    let renamed = ProtectedResource {
        name: "Renamed".into(),
        ..resource("old", 1)
    };
    store.put_oauth2_resource(&renamed).await.unwrap();
    assert_eq!(
        store.oauth2_resources().await.unwrap(),
        [renamed, resource("new", 2)],
        "oldest first, replaced by id"
    );
    assert!(store.delete_oauth2_resource("old").await.unwrap());
    assert!(!store.delete_oauth2_resource("old").await.unwrap());
    assert_eq!(
        store.oauth2_resources().await.unwrap(),
        [resource("new", 2)]
    );
}

fn git_ssh_key(user_id: &str, public: &str) -> GitSshKey {
    GitSshKey {
        user_id: user_id.to_owned(),
        algorithm: "ed25519".into(),
        public_key: format!("ssh-ed25519 {public} extauth:{user_id}"),
        private_key: sealed("k1", "-----BEGIN OPENSSH PRIVATE KEY-----"),
        created_at: 1,
        updated_at: 1,
    }
}

pub async fn git_ssh_keys(store: &dyn Store) {
    assert_eq!(store.git_ssh_key("u1").await.unwrap(), None);
    assert!(
        store
            .insert_git_ssh_key(&git_ssh_key("u1", "A"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_git_ssh_key(&git_ssh_key("u1", "B"))
            .await
            .unwrap(),
        "the first key stays; the second insert writes nothing"
    );
    assert_eq!(
        store.git_ssh_key("u1").await.unwrap(),
        Some(git_ssh_key("u1", "A"))
    );
    let regenerated = GitSshKey {
        updated_at: 2,
        ..git_ssh_key("u1", "C")
    };
    store.put_git_ssh_key(&regenerated).await.unwrap();
    assert_eq!(store.git_ssh_key("u1").await.unwrap(), Some(regenerated));
    assert!(store.encryption_key_ids().await.unwrap().contains("k1"));
    assert!(store.delete_git_ssh_key("u1").await.unwrap());
    assert!(!store.delete_git_ssh_key("u1").await.unwrap());
    assert_eq!(store.git_ssh_key("u1").await.unwrap(), None);
}

pub async fn used_once(store: &dyn Store) {
    assert!(store.use_once("iss:jti-1", 200, 100).await.unwrap());
    assert!(
        !store.use_once("iss:jti-1", 300, 150).await.unwrap(),
        "a live mark refuses a second use"
    );
    assert!(
        store.use_once("iss:jti-2", 200, 150).await.unwrap(),
        "another key is its own"
    );
    assert!(
        store.use_once("iss:jti-1", 400, 200).await.unwrap(),
        "a mark past its time may be taken again"
    );
    assert!(!store.use_once("iss:jti-1", 500, 300).await.unwrap());
    // Four writers at once: exactly one wins.
    let (a, b, c, d) = tokio::join!(
        store.use_once("iss:jti-race", 900, 300),
        store.use_once("iss:jti-race", 900, 300),
        store.use_once("iss:jti-race", 900, 300),
        store.use_once("iss:jti-race", 900, 300),
    );
    let won = [a, b, c, d]
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(won, 1, "exactly one of four concurrent uses wins");
}

pub async fn runtime_settings(store: &dyn Store) {
    assert_eq!(store.runtime_setting("oauth2.dcr").await.unwrap(), None);
    store
        .put_runtime_setting("oauth2.dcr", "true")
        .await
        .unwrap();
    store.put_runtime_setting("other", "x").await.unwrap();
    store
        .put_runtime_setting("oauth2.dcr", "false")
        .await
        .unwrap();
    assert_eq!(
        store
            .runtime_setting("oauth2.dcr")
            .await
            .unwrap()
            .as_deref(),
        Some("false")
    );
}

/// A self-registered app keeps what only such apps have.
pub async fn self_registered_apps(store: &dyn Store) {
    let registered = OAuth2App {
        origin: extauth_broker::store::AppOrigin::Registered,
        resources: vec!["r1".into()],
        registration_hash: Some("rat-hash".into()),
        stale_ms: Some(5),
        granted: true,
        ..app("dyn_1", 1)
    };
    store.put_oauth2_app(&registered).await.unwrap();
    assert_eq!(store.oauth2_app("dyn_1").await.unwrap(), Some(registered));
}

pub fn family(id: &str, app_id: &str, user_id: &str, secret_id: Option<&str>) -> OAuth2Family {
    OAuth2Family {
        id: id.to_owned(),
        app_id: app_id.to_owned(),
        user_id: user_id.to_owned(),
        secret_id: secret_id.map(str::to_owned),
        scopes: vec!["openid".into(), "offline_access".into()],
        resource: None,
        auth_time: 1,
        refresh_hash: format!("h-{id}-1"),
        previous_hash: None,
        earlier_hashes: Vec::new(),
        rotated_ms: 1,
        retry_answer: None,
        created_at: 1,
        expires_at: 100,
    }
}

pub fn signing_key(kid: &str, created_at: i64) -> SigningKey {
    SigningKey {
        kid: kid.to_owned(),
        algorithm: "ES256".into(),
        private_key: sealed("k6", "pkcs8"),
        public_jwk: format!(r#"{{"kid":"{kid}"}}"#),
        created_at,
        retired_at: None,
    }
}

fn grant(user_id: &str, app_id: &str) -> OAuth2Grant {
    OAuth2Grant {
        user_id: user_id.to_owned(),
        app_id: app_id.to_owned(),
        scopes: vec!["openid".into()],
        created_at: 1,
        updated_at: 1,
    }
}

pub async fn oauth2_apps(store: &dyn Store) {
    assert!(store.oauth2_apps().await.unwrap().is_empty());
    store.put_oauth2_app(&app("b", 2)).await.unwrap();
    store.put_oauth2_app(&app("a", 1)).await.unwrap();
    assert_eq!(store.oauth2_app("b").await.unwrap(), Some(app("b", 2)));
    let ids: Vec<String> = store
        .oauth2_apps()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, ["a", "b"], "oldest first");
    // Replaced by id (a secret added).
    let mut changed = app("a", 1);
    changed.secrets[0].last_used_at = Some(9);
    store.put_oauth2_app(&changed).await.unwrap();
    assert_eq!(store.oauth2_app("a").await.unwrap(), Some(changed));
    // A use is recorded on the secret only while it exists.
    store.touch_app_secret("b", "b-s1", 42).await.unwrap();
    assert_eq!(
        store.oauth2_app("b").await.unwrap().unwrap().secrets[0].last_used_at,
        Some(42)
    );
    let mut without = app("b", 2);
    without.secrets.clear();
    store.put_oauth2_app(&without).await.unwrap();
    store.touch_app_secret("b", "b-s1", 43).await.unwrap();
    store.touch_app_secret("ghost", "x", 43).await.unwrap();
    assert_eq!(
        store.oauth2_app("b").await.unwrap(),
        Some(without),
        "not brought back"
    );
    // Deleting an app deletes its consents and token families, not other apps'.
    store.put_oauth2_grant(&grant("u1", "a")).await.unwrap();
    store.put_oauth2_grant(&grant("u1", "b")).await.unwrap();
    store
        .create_oauth2_family(&family("fa", "a", "u1", None))
        .await
        .unwrap();
    store
        .create_oauth2_family(&family("fb", "b", "u1", None))
        .await
        .unwrap();
    assert!(store.delete_oauth2_app("a").await.unwrap());
    assert!(!store.delete_oauth2_app("a").await.unwrap());
    assert_eq!(store.oauth2_app("a").await.unwrap(), None);
    assert_eq!(store.oauth2_family("fa").await.unwrap(), None);
    assert_eq!(store.oauth2_grant("u1", "a").await.unwrap(), None);
    assert!(store.oauth2_family("fb").await.unwrap().is_some());
    assert_eq!(
        store.oauth2_grants_of_user("u1").await.unwrap(),
        [grant("u1", "b")]
    );
}

pub async fn oauth2_codes(store: &dyn Store) {
    let now = extauth_broker::clock::now_millis();
    let code = OAuth2Code {
        code_hash: "c1".into(),
        app_id: "a".into(),
        user_id: "u1".into(),
        redirect_uri: "https://app.example/cb".into(),
        scopes: vec!["openid".into()],
        challenge: Some("challenge".into()),
        nonce: Some("n".into()),
        resource: None,
        auth_time: 5,
        family_id: "f1".into(),
        used: false,
        expires_ms: now + 60_000,
    };
    store.put_oauth2_code(&code).await.unwrap();
    assert_eq!(store.use_oauth2_code("nope").await.unwrap(), None);
    // The first use sees it unused, every later one sees it used.
    assert_eq!(
        store.use_oauth2_code("c1").await.unwrap(),
        Some(code.clone())
    );
    let again = store.use_oauth2_code("c1").await.unwrap().unwrap();
    assert!(again.used);
    // Expired: gone for every use, and dropped when the next code is stored.
    store
        .put_oauth2_code(&OAuth2Code {
            code_hash: "old".into(),
            expires_ms: now - 1,
            ..code.clone()
        })
        .await
        .unwrap();
    assert_eq!(store.use_oauth2_code("old").await.unwrap(), None);
}

pub async fn oauth2_codes_are_used_once_under_concurrency(store: &dyn Store) {
    let now = extauth_broker::clock::now_millis();
    for round in 0..10 {
        let hash = format!("race-{round}");
        store
            .put_oauth2_code(&OAuth2Code {
                code_hash: hash.clone(),
                app_id: "a".into(),
                user_id: "u1".into(),
                redirect_uri: String::new(),
                scopes: Vec::new(),
                challenge: None,
                nonce: None,
                resource: None,
                auth_time: 0,
                family_id: "f".into(),
                used: false,
                expires_ms: now + 60_000,
            })
            .await
            .unwrap();
        let uses = futures_join(store, &hash).await;
        assert_eq!(uses, 1, "round {round}: exactly one first use");
    }
}

async fn futures_join(store: &dyn Store, hash: &str) -> usize {
    let (a, b, c, d) = tokio::join!(
        store.use_oauth2_code(hash),
        store.use_oauth2_code(hash),
        store.use_oauth2_code(hash),
        store.use_oauth2_code(hash),
    );
    [a, b, c, d]
        .into_iter()
        .filter(|r| r.as_ref().unwrap().as_ref().is_some_and(|c| !c.used))
        .count()
}

pub async fn oauth2_families(store: &dyn Store) {
    let f = family("f1", "a", "u1", Some("s1"));
    store.create_oauth2_family(&f).await.unwrap();
    assert!(matches!(
        store.create_oauth2_family(&f).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.oauth2_family("f1").await.unwrap(), Some(f.clone()));
    // A rotation replaces it only while the refresh hash is still the expected one.
    let rotated = OAuth2Family {
        refresh_hash: "h-f1-2".into(),
        previous_hash: Some("h-f1-1".into()),
        retry_answer: Some(sealed("k1", "answer")),
        ..f.clone()
    };
    assert!(
        store
            .replace_oauth2_family_if(&rotated, "h-f1-1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .replace_oauth2_family_if(&rotated, "h-f1-1")
            .await
            .unwrap()
    );
    assert_eq!(store.oauth2_family("f1").await.unwrap(), Some(rotated));
    assert!(
        !store
            .replace_oauth2_family_if(&family("ghost", "a", "u1", None), "x")
            .await
            .unwrap()
    );
    // Ending families: by user, by secret, one by one.
    store
        .create_oauth2_family(&family("f2", "a", "u2", Some("s1")))
        .await
        .unwrap();
    store
        .create_oauth2_family(&family("f3", "a", "u2", Some("s2")))
        .await
        .unwrap();
    store
        .create_oauth2_family(&family("f4", "b", "u2", Some("s1")))
        .await
        .unwrap();
    let by_secret = FamilyFilter {
        app_id: "a",
        user_id: None,
        secret_id: Some("s1"),
    };
    assert_eq!(store.delete_oauth2_families(by_secret).await.unwrap(), 2);
    assert_eq!(store.oauth2_family("f1").await.unwrap(), None);
    assert!(
        store.oauth2_family("f4").await.unwrap().is_some(),
        "another app's"
    );
    let by_user = FamilyFilter {
        app_id: "a",
        user_id: Some("u2"),
        secret_id: None,
    };
    assert_eq!(store.delete_oauth2_families(by_user).await.unwrap(), 1);
    assert!(store.delete_oauth2_family("f4").await.unwrap());
    assert!(!store.delete_oauth2_family("f4").await.unwrap());
    // Expired families go; a rotation that moved the end keeps its family.
    store
        .create_oauth2_family(&OAuth2Family {
            expires_at: 50,
            ..family("old", "a", "u1", None)
        })
        .await
        .unwrap();
    let young = family("young", "a", "u1", None);
    store.create_oauth2_family(&young).await.unwrap();
    let extended = OAuth2Family {
        expires_at: 500,
        refresh_hash: "h2".into(),
        ..young.clone()
    };
    assert!(
        store
            .replace_oauth2_family_if(&extended, &young.refresh_hash)
            .await
            .unwrap()
    );
    assert_eq!(store.delete_expired_oauth2_families(120).await.unwrap(), 1);
    assert_eq!(store.oauth2_family("old").await.unwrap(), None);
    assert_eq!(store.delete_expired_oauth2_families(400).await.unwrap(), 0);
    assert_eq!(store.oauth2_family("young").await.unwrap(), Some(extended));
}

pub async fn oauth2_grants(store: &dyn Store) {
    assert_eq!(store.oauth2_grant("u1", "a").await.unwrap(), None);
    store.put_oauth2_grant(&grant("u1", "b")).await.unwrap();
    store.put_oauth2_grant(&grant("u1", "a")).await.unwrap();
    store.put_oauth2_grant(&grant("u2", "a")).await.unwrap();
    let wider = OAuth2Grant {
        scopes: vec!["openid".into(), "email".into()],
        updated_at: 2,
        ..grant("u1", "a")
    };
    store.put_oauth2_grant(&wider).await.unwrap();
    assert_eq!(
        store.oauth2_grant("u1", "a").await.unwrap(),
        Some(wider.clone())
    );
    assert_eq!(
        store.oauth2_grants_of_user("u1").await.unwrap(),
        [wider, grant("u1", "b")]
    );
    assert!(store.delete_oauth2_grant("u1", "a").await.unwrap());
    assert!(!store.delete_oauth2_grant("u1", "a").await.unwrap());
    assert_eq!(
        store.oauth2_grants_of_user("u2").await.unwrap(),
        [grant("u2", "a")]
    );
}

fn device_grant(hash: &str, user_code: &str, expires_ms: i64) -> DeviceGrant {
    DeviceGrant {
        code_hash: hash.to_owned(),
        user_code: user_code.to_owned(),
        app_id: "a".into(),
        scopes: vec!["openid".into()],
        resource: None,
        user_id: None,
        auth_time: 0,
        decision: DeviceDecision::Pending,
        interval_ms: 5_000,
        next_poll_ms: 10,
        expires_ms,
    }
}

pub async fn device_grants(store: &dyn Store) {
    let now = extauth_broker::clock::now_millis();
    let grant = device_grant("d1", "ABCDEFGH", now + 60_000);
    store.put_device_grant(&grant).await.unwrap();
    assert_eq!(store.device_grant("d1").await.unwrap(), Some(grant.clone()));
    assert_eq!(
        store.device_grant_by_user_code("ABCDEFGH").await.unwrap(),
        Some(grant.clone())
    );
    assert_eq!(
        store.device_grant_by_user_code("ZZZZZZZZ").await.unwrap(),
        None
    );
    // A user code names one running grant.
    assert!(matches!(
        store
            .put_device_grant(&device_grant("d2", "ABCDEFGH", now + 60_000))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // An answer and a poll race: the one that saw the state first wins.
    let approved = DeviceGrant {
        decision: DeviceDecision::Approved,
        user_id: Some("u1".into()),
        ..grant.clone()
    };
    assert!(
        store
            .replace_device_grant_if(&approved, (DeviceDecision::Pending, 10))
            .await
            .unwrap()
    );
    let polled = DeviceGrant {
        next_poll_ms: 20,
        ..grant.clone()
    };
    assert!(
        !store
            .replace_device_grant_if(&polled, (DeviceDecision::Pending, 10))
            .await
            .unwrap()
    );
    assert_eq!(store.device_grant("d1").await.unwrap(), Some(approved));
    // Expired grants are gone for every reader and free their user code.
    store
        .put_device_grant(&device_grant("old", "OLDOLDOL", now - 1))
        .await
        .unwrap();
    assert_eq!(store.device_grant("old").await.unwrap(), None);
    assert_eq!(
        store.device_grant_by_user_code("OLDOLDOL").await.unwrap(),
        None
    );
    store
        .put_device_grant(&device_grant("new", "OLDOLDOL", now + 60_000))
        .await
        .unwrap();
    assert_eq!(
        store
            .device_grant_by_user_code("OLDOLDOL")
            .await
            .unwrap()
            .unwrap()
            .code_hash,
        "new"
    );
}

pub async fn signing_keys(store: &dyn Store) {
    assert!(store.signing_keys().await.unwrap().is_empty());
    store.put_signing_key(&signing_key("new", 2)).await.unwrap();
    store.put_signing_key(&signing_key("old", 1)).await.unwrap();
    let retired = SigningKey {
        retired_at: Some(3),
        ..signing_key("old", 1)
    };
    store.put_signing_key(&retired).await.unwrap();
    assert_eq!(
        store.signing_keys().await.unwrap(),
        [retired, signing_key("new", 2)],
        "oldest first, replaced by kid"
    );
    store.delete_signing_key("old").await.unwrap();
    assert_eq!(store.signing_keys().await.unwrap(), [signing_key("new", 2)]);
}

fn oidc_session(id: &str, user_id: &str) -> Session {
    Session {
        id_hash: id.to_owned(),
        user_id: user_id.to_owned(),
        csrf: format!("csrf-{id}"),
        created_at: 1,
        expires_at: 2,
        oidc: Some(OidcSession {
            sid: Some(format!("sid-{id}")),
            id_token: Some(sealed("k4", "id-token")),
            refresh_token: None,
        }),
    }
}

/// A store with one of everything (and both kinds of most things).
async fn populate(store: &dyn Store) {
    store.create_user(&user("u1", "alice")).await.unwrap();
    store
        .create_user(&User {
            oidc: None,
            is_admin: true,
            ..user("u2", "admin")
        })
        .await
        .unwrap();
    store.put_session(&oidc_session("s1", "u1")).await.unwrap();
    store
        .put_session(&Session {
            oidc: None,
            ..oidc_session("s2", "u2")
        })
        .await
        .unwrap();
    store
        .create_token(&token("t1", "u1", TokenKind::Api, 1))
        .await
        .unwrap();
    store
        .create_token(&TokenRecord {
            providers: Some(vec!["github".into(), "gitlab".into()]),
            expires_at: Some(99),
            ..token("t2", "u1", TokenKind::Workspace, 2)
        })
        .await
        .unwrap();
    store
        .put_link(&LinkRecord {
            extra: Some(sealed("k1", "{}")),
            refresh_failure: Some("invalid_grant".into()),
            needs_validation: true,
            expires_at: None,
            ..link("u1", "github", Some("r1"))
        })
        .await
        .unwrap();
    store.put_link(&link("u2", "gitlab", None)).await.unwrap();
    store
        .put_pending_revocation(&pending("p1", "u1", 5))
        .await
        .unwrap();
    store.revoke_key_ids(&["old".into()], 7).await.unwrap();
    store
        .put_oidc_claims(&OidcClaims {
            user_id: "u1".into(),
            claims: r#"{"sub":"sub-u1","groups":["dev"]}"#.into(),
            updated_at: 8,
        })
        .await
        .unwrap();
    store.put_oauth2_app(&app("a1", 3)).await.unwrap();
    store.put_oauth2_grant(&grant("u1", "a1")).await.unwrap();
    store
        .create_oauth2_family(&OAuth2Family {
            retry_answer: Some(sealed("k1", "answer")),
            earlier_hashes: vec!["h0".into()],
            ..family("f1", "a1", "u1", Some("a1-s1"))
        })
        .await
        .unwrap();
    store
        .put_signing_key(&signing_key("kid1", 4))
        .await
        .unwrap();
    store.put_oauth2_resource(&resource("r1", 5)).await.unwrap();
    store
        .put_runtime_setting("oauth2.dcr", "true")
        .await
        .unwrap();
    store
        .put_git_ssh_key(&git_ssh_key("u1", "A"))
        .await
        .unwrap();
}

pub async fn snapshot_and_import(store: &dyn Store) {
    assert_eq!(store.snapshot().await.unwrap(), Snapshot::default());
    populate(store).await;
    let before = store.snapshot().await.unwrap();
    assert_eq!(
        before.counts(),
        "users 2, sessions 2, tokens 2, links 2, pending revocations 1, revoked keys 1, OIDC claims 1, OAuth2 apps 1, grants 1, token families 1, signing keys 1, protected resources 1, runtime settings 1, git SSH keys 1"
    );
    assert_eq!(
        before.links[0].refresh_failure.as_deref(),
        Some("invalid_grant")
    );
    assert_eq!(
        before.tokens[1].providers,
        Some(vec!["github".to_owned(), "gitlab".to_owned()])
    );

    // Importing what is there changes nothing: a migration can be run again.
    store.import(&before).await.unwrap();
    assert_eq!(store.snapshot().await.unwrap(), before);

    // Importing replaces records by key.
    let mut changed = before.clone();
    changed.links[1].access_token = sealed("k2", "rotated");
    changed.users[0].email = "new@example.com".into();
    store.import(&changed).await.unwrap();
    assert_eq!(store.snapshot().await.unwrap(), changed);
    assert_eq!(
        store
            .link("u2", "gitlab")
            .await
            .unwrap()
            .unwrap()
            .access_token,
        sealed("k2", "rotated")
    );

    // A user renamed (or given another OIDC identity) between two imports is found by the new
    // name only: the old one is free again.
    let mut renamed = changed.clone();
    renamed.users[0].username = "alice-renamed".into();
    store.import(&renamed).await.unwrap();
    let id = renamed.users[0].id.clone();
    assert_eq!(store.user_by_username("alice").await.unwrap(), None);
    assert_eq!(
        store
            .user_by_username("alice-renamed")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(id.clone())
    );
    let old = renamed.users[0]
        .oidc
        .clone()
        .expect("populated users have an OIDC identity");
    renamed.users[0].oidc = Some(OidcIdentity {
        subject: "sub-new".into(),
        ..old.clone()
    });
    store.import(&renamed).await.unwrap();
    assert_eq!(
        store.user_by_oidc(&old.issuer, &old.subject).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .user_by_oidc(&old.issuer, "sub-new")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(id)
    );
    renamed.users[0].username = "alice".into();
    store.import(&renamed).await.unwrap();

    // A username that belongs to another user id is a conflict, not a silent merge.
    let mut clash = Snapshot::default();
    clash.users.push(User {
        oidc: None,
        ..user("u9", "alice")
    });
    assert!(matches!(
        store.import(&clash).await,
        Err(StoreError::Conflict("username"))
    ));
    assert_eq!(store.user("u9").await.unwrap(), None);
}

pub async fn oidc_claims(store: &dyn Store) {
    assert_eq!(store.oidc_claims("u1").await.unwrap(), None);
    let first = OidcClaims {
        user_id: "u1".into(),
        claims: r#"{"sub":"a","email":"a@example.com"}"#.into(),
        updated_at: 1,
    };
    store.put_oidc_claims(&first).await.unwrap();
    assert_eq!(store.oidc_claims("u1").await.unwrap(), Some(first));
    // The latest sign-in replaces what was kept.
    let latest = OidcClaims {
        user_id: "u1".into(),
        claims: r#"{"sub":"a","groups":["ops"]}"#.into(),
        updated_at: 2,
    };
    store.put_oidc_claims(&latest).await.unwrap();
    assert_eq!(store.oidc_claims("u1").await.unwrap(), Some(latest));
    assert_eq!(store.oidc_claims("u2").await.unwrap(), None);
}

pub async fn revoked_keys(store: &dyn Store) {
    assert!(store.revoked_key_ids().await.unwrap().is_empty());
    store
        .revoke_key_ids(&["a".into(), "b".into()], 1)
        .await
        .unwrap();
    store.revoke_key_ids(&["a".into()], 2).await.unwrap();
    let ids: Vec<String> = store.revoked_key_ids().await.unwrap().into_iter().collect();
    assert_eq!(ids, ["a", "b"]);
}

pub async fn locks(store: &dyn Store) {
    // Whatever the backend, a lock can be taken, released and taken again.
    let held = store.lock("refresh:u1:github").await.unwrap();
    held.release().await;
    let again = store.try_lock("refresh:u1:github").await.unwrap();
    assert!(again.is_some());
    again.unwrap().release().await;
    // A lock dropped without release does not stay held.
    drop(store.lock("refresh:u1:github").await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(lock) = store.try_lock("refresh:u1:github").await.unwrap() {
            lock.release().await;
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a dropped lock stays held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn device_flows(store: &dyn Store) {
    let now = extauth_broker::clock::now_millis();
    let flow = DeviceFlowRecord {
        code_hash: "h1".into(),
        user_id: "u1".into(),
        provider_id: "github".into(),
        interval_ms: 5_000,
        next_poll_ms: now,
        expires_ms: now + 600_000,
    };
    store.put_device_flow(&flow).await.unwrap();
    assert_eq!(store.device_flow("h1").await.unwrap(), Some(flow.clone()));
    assert_eq!(store.device_flow("h2").await.unwrap(), None);

    // Booking a slot is a compare-and-swap on next_poll_ms: the second booker loses.
    let booked = DeviceFlowRecord {
        next_poll_ms: now + 5_000,
        ..flow.clone()
    };
    assert!(store.replace_device_flow_if(&booked, now).await.unwrap());
    let late = DeviceFlowRecord {
        next_poll_ms: now + 6_000,
        ..flow.clone()
    };
    assert!(!store.replace_device_flow_if(&late, now).await.unwrap());
    assert_eq!(store.device_flow("h1").await.unwrap(), Some(booked));
    assert!(
        !store
            .replace_device_flow_if(
                &DeviceFlowRecord {
                    code_hash: "h9".into(),
                    ..flow.clone()
                },
                now
            )
            .await
            .unwrap(),
        "no flow, nothing replaced"
    );

    // Expired flows go when another is stored.
    let expired = DeviceFlowRecord {
        code_hash: "old".into(),
        expires_ms: now - 1,
        ..flow.clone()
    };
    store.put_device_flow(&expired).await.unwrap();
    store
        .put_device_flow(&DeviceFlowRecord {
            code_hash: "h3".into(),
            ..flow.clone()
        })
        .await
        .unwrap();
    assert_eq!(store.device_flow("old").await.unwrap(), None);

    store.delete_device_flow("h1").await.unwrap();
    assert_eq!(store.device_flow("h1").await.unwrap(), None);
    assert!(store.device_flow("h3").await.unwrap().is_some());
}

/// A login flow finishes once: the first taker gets it, a replay gets nothing, and an expired
/// one is never handed out.
pub async fn login_flows(store: &dyn Store) {
    let now = extauth_broker::clock::now_millis();
    let flow = LoginFlow {
        state_hash: "s1".into(),
        binding_hash: "b1".into(),
        user_id: "u1".into(),
        purpose: "link:github".into(),
        verifier: Some(Sealed {
            key_id: "k1".into(),
            data: "c2VhbGVk".into(),
        }),
        nonce: String::new(),
        redirect: "/after".into(),
        expires_ms: now + 600_000,
    };
    store.put_login_flow(&flow).await.unwrap();
    let signin = LoginFlow {
        state_hash: "s2".into(),
        user_id: String::new(),
        purpose: "oidc".into(),
        verifier: None,
        nonce: "n".into(),
        ..flow.clone()
    };
    store.put_login_flow(&signin).await.unwrap();
    assert_eq!(
        store.take_login_flow("s1").await.unwrap(),
        Some(flow.clone())
    );
    assert_eq!(
        store.take_login_flow("s1").await.unwrap(),
        None,
        "used once"
    );
    assert_eq!(store.take_login_flow("nope").await.unwrap(), None);
    assert_eq!(store.take_login_flow("s2").await.unwrap(), Some(signin));

    let expired = LoginFlow {
        state_hash: "old".into(),
        expires_ms: now - 1,
        ..flow.clone()
    };
    store.put_login_flow(&expired).await.unwrap();
    assert_eq!(store.take_login_flow("old").await.unwrap(), None, "expired");
}

/// Generates one `#[tokio::test]` per conformance behaviour. `$factory` is an async expression
/// giving `(store, guard)`: the guard (e.g. a temporary directory) lives as long as the test.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@tests $factory;
            users, unique_users, sessions, tokens, links, link_accounts, replace_link_if, link_notifications, pending_revocations, key_ids,
            snapshot_and_import, revoked_keys, locks, device_flows, oidc_claims, login_flows,
            oauth2_apps, oauth2_codes, oauth2_codes_are_used_once_under_concurrency, oauth2_families,
            oauth2_grants, signing_keys, device_grants, oauth2_resources, runtime_settings,
            self_registered_apps, git_ssh_keys, used_once, cached_reads_follow_writes);
    };
    (@tests $factory:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $factory.await;
                $crate::conformance::$name(&*store).await;
            }
        )*
    };
}
