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
