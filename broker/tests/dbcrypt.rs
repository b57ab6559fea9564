//! `dbcrypt rotate|decrypt|delete` on both stores: every sealed value is rewritten and still
//! opens to the same plaintext, keys are revoked, and running again changes nothing.

use std::sync::Arc;

use base64::Engine as _;
use extauth_broker::crypto::{KeyRing, Sealed, key_id};
use extauth_broker::dbcrypt;
use extauth_broker::link_secrets::purpose;
use extauth_broker::oauth2::{retry_purpose, signing_key_purpose};
use extauth_broker::oidc::session_purpose;
mod conformance;

use conformance::TestDatabase;
use extauth_broker::store::{
    GitSshKey, LinkRecord, OAuth2Family, OidcSession, PendingRevocation, PgStore, Session,
    SigningKey, SledStore, Store,
};

fn ring(keys: &[u8]) -> KeyRing {
    let text: Vec<String> = keys
        .iter()
        .map(|k| base64::engine::general_purpose::STANDARD.encode([*k; 32]))
        .collect();
    KeyRing::parse(&text.join(",")).unwrap()
}

/// A link, an OIDC session and a pending revocation, sealed with `keys`.
async fn populate(store: &dyn Store, keys: &KeyRing) {
    let seal = |p: String, v: &str| keys.seal(&p, v.as_bytes());
    store
        .put_link(&LinkRecord {
            user_id: "u1".into(),
            provider_id: "github".into(),
            account: "octocat".into(),
            is_default: true,
            owners: vec!["acme".into()],
            access_token: seal(purpose("u1", "github", "access"), "gho_access"),
            refresh_token: Some(seal(purpose("u1", "github", "refresh"), "ghr_refresh")),
            expires_at: Some(10),
            extra: Some(seal(purpose("u1", "github", "extra"), "{\"a\":1}")),
            refresh_failure: None,
            needs_validation: false,
            created_at: 1,
            updated_at: 1,
            refresh_expires_at: Some(20),
        })
        .await
        .unwrap();
    store
        .put_session(&Session {
            id_hash: "s1".into(),
            user_id: "u1".into(),
            csrf: "c".into(),
            created_at: 1,
            expires_at: 2,
            oidc: Some(OidcSession {
                sid: Some("sid".into()),
                id_token: Some(seal(session_purpose("u1", "id_token"), "eyJ.id.token")),
                refresh_token: Some(seal(session_purpose("u1", "refresh_token"), "idp-refresh")),
            }),
        })
        .await
        .unwrap();
    store
        .put_pending_revocation(&PendingRevocation {
            id: "p1".into(),
            user_id: "u2".into(),
            provider_id: "gitlab".into(),
            access_token: seal(purpose("u2", "gitlab", "access"), "glpat"),
            refresh_token: None,
            attempts: 1,
            next_attempt_at: 5,
            last_error: "503".into(),
            created_at: 1,
        })
        .await
        .unwrap();
    // The authorization server's: a signing key and a refresh family's kept answer.
    store
        .put_signing_key(&SigningKey {
            kid: "kid1".into(),
            algorithm: "ES256".into(),
            private_key: seal(signing_key_purpose("kid1"), "pkcs8-bytes"),
            public_jwk: "{}".into(),
            created_at: 1,
            retired_at: None,
        })
        .await
        .unwrap();
    // A user's git SSH key.
    store
        .put_git_ssh_key(&GitSshKey {
            user_id: "u1".into(),
            algorithm: "ed25519".into(),
            public_key: "ssh-ed25519 AAAA extauth:u1".into(),
            private_key: seal(
                extauth_broker::git_ssh::private_key_purpose("u1"),
                "-----BEGIN OPENSSH PRIVATE KEY-----",
            ),
            created_at: 1,
            updated_at: 1,
        })
        .await
        .unwrap();
    store
        .create_oauth2_family(&OAuth2Family {
            id: "f1".into(),
            app_id: "a1".into(),
            user_id: "u1".into(),
            secret_id: None,
            scopes: vec!["openid".into()],
            resource: None,
            auth_time: 1,
            refresh_hash: "h1".into(),
            previous_hash: None,
            earlier_hashes: Vec::new(),
            rotated_ms: 1,
            retry_answer: Some(seal(retry_purpose("f1"), "{\"answer\":1}")),
            created_at: 1,
            expires_at: 10,
        })
        .await
        .unwrap();
}

/// Every value opens with `keys` to what `populate` sealed; the key ids they carry.
async fn check(store: &dyn Store, keys: &KeyRing) -> Vec<String> {
    let open = |p: String, s: &Sealed| String::from_utf8(keys.open(&p, s).unwrap()).unwrap();
    let link = store.link("u1", "github").await.unwrap().unwrap();
    assert_eq!(
        open(purpose("u1", "github", "access"), &link.access_token),
        "gho_access"
    );
    assert_eq!(
        open(
            purpose("u1", "github", "refresh"),
            link.refresh_token.as_ref().unwrap()
        ),
        "ghr_refresh"
    );
    assert_eq!(
        open(
            purpose("u1", "github", "extra"),
            link.extra.as_ref().unwrap()
        ),
        "{\"a\":1}"
    );
    let session = store.session("s1").await.unwrap().unwrap();
    let oidc = session.oidc.unwrap();
    assert_eq!(
        open(
            session_purpose("u1", "id_token"),
            oidc.id_token.as_ref().unwrap()
        ),
        "eyJ.id.token"
    );
    let pending = store.pending_revocations_of_user("u2").await.unwrap();
    assert_eq!(
        open(purpose("u2", "gitlab", "access"), &pending[0].access_token),
        "glpat"
    );
    let key = store.signing_keys().await.unwrap().remove(0);
    assert_eq!(
        open(signing_key_purpose("kid1"), &key.private_key),
        "pkcs8-bytes"
    );
    let family = store.oauth2_family("f1").await.unwrap().unwrap();
    let kept = family.retry_answer.unwrap();
    assert_eq!(open(retry_purpose("f1"), &kept), "{\"answer\":1}");
    let ssh = store.git_ssh_key("u1").await.unwrap().unwrap();
    assert_eq!(
        open(
            extauth_broker::git_ssh::private_key_purpose("u1"),
            &ssh.private_key
        ),
        "-----BEGIN OPENSSH PRIVATE KEY-----"
    );
    let mut ids = vec![
        ssh.private_key.key_id,
        key.private_key.key_id,
        kept.key_id,
        link.access_token.key_id,
        link.refresh_token.unwrap().key_id,
        link.extra.unwrap().key_id,
        oidc.id_token.unwrap().key_id,
        oidc.refresh_token.unwrap().key_id,
        pending[0].access_token.key_id.clone(),
    ];
    ids.dedup();
    ids
}

async fn rotate_decrypt_delete(store: Arc<dyn Store>) {
    let (old, new) = (key_id(&[1; 32]), key_id(&[2; 32]));
    populate(&*store, &ring(&[1])).await;
    assert_eq!(check(&*store, &ring(&[1])).await, [old.as_str()]);

    let report = dbcrypt::rotate(&*store, &ring(&[2, 1]), 100).await.unwrap();
    assert_eq!((report.changed, report.unchanged), (9, 0));
    assert_eq!(report.revoked, [old.as_str()]);
    // Only the new key is needed now.
    assert_eq!(check(&*store, &ring(&[2])).await, [new.as_str()]);
    assert!(store.revoked_key_ids().await.unwrap().contains(&old));
    assert_eq!(store.plaintext_values().await.unwrap(), 0);
    let again = dbcrypt::rotate(&*store, &ring(&[2, 1]), 101).await.unwrap();
    assert_eq!((again.changed, again.unchanged), (0, 9));

    // A key that cannot open the data: a clear error, nothing changed.
    let wrong = dbcrypt::decrypt(&*store, &ring(&[3]), 102)
        .await
        .unwrap_err();
    assert!(
        wrong
            .to_string()
            .contains("not in CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS"),
        "{wrong}"
    );
    assert_eq!(check(&*store, &ring(&[2])).await, [new.as_str()]);

    let report = dbcrypt::decrypt(&*store, &ring(&[2]), 103).await.unwrap();
    assert_eq!(report.changed, 9);
    assert_eq!(
        check(&*store, &ring(&[9])).await,
        [""],
        "plaintext opens without keys"
    );
    assert!(store.encryption_key_ids().await.unwrap().is_empty());
    assert_eq!(store.plaintext_values().await.unwrap(), 9);

    let report = dbcrypt::delete(&*store, None, 104).await.unwrap();
    assert_eq!(
        report.changed, 6,
        "the link, the OIDC session, the pending revocation, the family's kept answer, the signing key, the git SSH key"
    );
    assert!(store.signing_keys().await.unwrap().is_empty());
    assert_eq!(store.git_ssh_key("u1").await.unwrap(), None);
    let family = store.oauth2_family("f1").await.unwrap().unwrap();
    assert_eq!(
        family.retry_answer, None,
        "the family stays, its kept answer goes"
    );
    assert_eq!(store.link("u1", "github").await.unwrap(), None);
    assert_eq!(store.session("s1").await.unwrap(), None);
    assert!(
        store
            .pending_revocations_of_user("u2")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    rotate_decrypt_delete(Arc::new(store)).await;
}

#[tokio::test]
async fn on_postgres() {
    let db = TestDatabase::create().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    rotate_decrypt_delete(Arc::new(store)).await;
}
