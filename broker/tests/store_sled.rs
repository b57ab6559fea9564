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
        .get("u1\0github")
        .unwrap()
        .unwrap();
    assert_eq!(raw[0], 1, "rewritten in the compact encoding");
    assert!(raw.len() < serde_json::to_vec(&old_json(&old)).unwrap().len() / 2);
}

/// A link as JSON, the way the first versions stored it.
fn old_json(link: &extauth_broker::store::LinkRecord) -> serde_json::Value {
    serde_json::to_value(link).unwrap()
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
