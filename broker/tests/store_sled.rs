//! The store conformance suite on sled, plus what only an embedded store must show.

use std::sync::Arc;

mod conformance;

use extauth_broker::store::{SledStore, Store};

async fn fresh() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    (Arc::new(store), dir)
}

store_conformance_tests!(fresh());

#[tokio::test]
async fn writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = SledStore::open(&path).unwrap();
        store
            .put_link(&conformance::link("u1", "github", Some("r1")))
            .await
            .unwrap();
    }
    let store = reopen(&path);
    assert_eq!(
        store.link("u1", "github").await.unwrap(),
        Some(conformance::link("u1", "github", Some("r1")))
    );
}

#[tokio::test]
async fn records_written_as_json_by_earlier_versions_are_read_and_rewritten_compactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let old = conformance::link("u1", "github", Some("r1"));
    {
        // As the first versions wrote it: JSON.
        let db = sled::open(&path).unwrap();
        let links = db.open_tree("links").unwrap();
        links
            .insert("u1\0github", serde_json::to_vec(&old_json(&old)).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    {
        let store = reopen(&path);
        assert_eq!(store.link("u1", "github").await.unwrap(), Some(old.clone()));
        store.put_link(&old).await.unwrap();
    }
    let db = open_when_released(&path);
    let raw = db
        .open_tree("links")
        .unwrap()
        .get("u1\0github\0")
        .unwrap()
        .expect("the key gained its (unnamed) account at open");
    assert_eq!(
        raw[0], 2,
        "rewritten in the compact encoding (a link's second shape)"
    );
    assert!(raw.len() < serde_json::to_vec(&old_json(&old)).unwrap().len() / 2);
}

/// Start-up checks the key of every stored value; sled answers for links from a summary kept
/// beside them, built at the first open of a store written before it existed and kept across
/// restarts.
#[tokio::test]
async fn the_keys_of_stored_links_are_known_at_open() {
    use extauth_broker::store::LinkRecord;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let sealed_by = |user: &str, key: &str| LinkRecord {
        access_token: conformance::sealed(key, "t"),
        ..conformance::link(user, "github", None)
    };
    {
        let store = SledStore::open(&path).unwrap();
        store.put_link(&sealed_by("u1", "old-key")).await.unwrap();
    }
    {
        // As a store from before the summary: no summary, no record of it.
        let db = open_when_released(&path);
        db.drop_tree("link_key_ids").unwrap();
        db.drop_tree("meta").unwrap();
        db.flush().unwrap();
    }
    {
        let store = reopen(&path);
        let ids = store.encryption_key_ids().await.unwrap();
        assert!(ids.contains("old-key"), "built at open: {ids:?}");
        store.put_link(&sealed_by("u2", "new-key")).await.unwrap();
    }
    let store = reopen(&path);
    let ids: Vec<String> = store
        .encryption_key_ids()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ids, ["new-key", "old-key"], "kept across a restart");
    assert_eq!(store.plaintext_values().await.unwrap(), 0);
}

/// A link as JSON, the way the first versions stored it (before `refresh_expires_at`).
fn old_json(link: &extauth_broker::store::LinkRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(link).unwrap();
    value.as_object_mut().unwrap().remove("refresh_expires_at");
    value
}

/// A link in the first compact shape (version byte 1, postcard, without `refresh_expires_at`),
/// as versions before 2026-12 wrote it, is read as it was.
#[tokio::test]
async fn links_in_the_first_compact_shape_are_read() {
    #[derive(serde::Serialize)]
    struct FirstShape<'a> {
        user_id: &'a str,
        provider_id: &'a str,
        access_token: &'a extauth_broker::crypto::Sealed,
        refresh_token: Option<&'a extauth_broker::crypto::Sealed>,
        expires_at: Option<i64>,
        extra: Option<&'a extauth_broker::crypto::Sealed>,
        refresh_failure: Option<&'a str>,
        needs_validation: bool,
        created_at: i64,
        updated_at: i64,
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let old = conformance::link("u1", "github", Some("r1"));
    {
        let db = sled::open(&path).unwrap();
        let mut bytes = vec![1u8];
        bytes.extend(
            postcard::to_allocvec(&FirstShape {
                user_id: &old.user_id,
                provider_id: &old.provider_id,
                access_token: &old.access_token,
                refresh_token: old.refresh_token.as_ref(),
                expires_at: old.expires_at,
                extra: old.extra.as_ref(),
                refresh_failure: old.refresh_failure.as_deref(),
                needs_validation: old.needs_validation,
                created_at: old.created_at,
                updated_at: old.updated_at,
            })
            .unwrap(),
        );
        db.open_tree("links")
            .unwrap()
            .insert("u1\0github", bytes)
            .unwrap();
        db.flush().unwrap();
    }
    let store = reopen(&path);
    assert_eq!(store.link("u1", "github").await.unwrap(), Some(old.clone()));
    assert_eq!(store.links_of_user("u1").await.unwrap(), vec![old]);
}

/// sled releases its file lock when its background flusher has stopped, a moment after the
/// last handle is dropped: wait for it rather than fail.
fn open_when_released(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

fn reopen(path: &std::path::Path) -> SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStore::open(path) {
            Ok(store) => return store,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}
