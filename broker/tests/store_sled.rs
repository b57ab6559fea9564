//! The store conformance suite on sled, plus what only an embedded store must show.

use std::sync::Arc;

use extauth_broker::store::{SledStore, Store, conformance};

async fn fresh() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    (Arc::new(store), dir)
}

extauth_broker::store_conformance_tests!(fresh());

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
    let store = SledStore::open(&path).unwrap();
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
        let store = SledStore::open(&path).unwrap();
        assert_eq!(store.link("u1", "github").await.unwrap(), Some(old.clone()));
        store.put_link(&old).await.unwrap();
    }
    let db = sled::open(&path).unwrap();
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
