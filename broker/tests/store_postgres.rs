//! The store conformance suite on PostgreSQL (each test in a database of its own), plus what
//! only a shared database must show: locks between processes, notifications between replicas,
//! migrations applied once.

use std::sync::Arc;
use std::time::Duration;

mod conformance;

use conformance::TestDatabase;
use extauth_broker::store::{PgStore, Store};

async fn fresh() -> (Arc<dyn Store>, TestDatabase) {
    let db = TestDatabase::create().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    (Arc::new(store), db)
}

store_conformance_tests!(fresh());

#[tokio::test]
async fn a_lock_held_by_one_replica_is_not_available_to_another() {
    let db = TestDatabase::create().await;
    let a = PgStore::connect(&db.url).await.unwrap();
    let b = PgStore::connect(&db.url).await.unwrap();
    let held = a.lock("refresh:u1:github").await.unwrap();
    assert!(b.try_lock("refresh:u1:github").await.unwrap().is_none());
    assert!(
        b.try_lock("refresh:u1:gitlab").await.unwrap().is_some(),
        "locks are per name"
    );
    // B waits for A's lock and gets it as soon as A releases it.
    let waiter = tokio::spawn(async move {
        let lock = b.lock("refresh:u1:github").await.unwrap();
        lock.release().await;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "B waited");
    held.release().await;
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("B got the lock after A released it")
        .unwrap();
}

#[tokio::test]
async fn a_link_written_by_one_replica_wakes_waiters_on_another() {
    let db = TestDatabase::create().await;
    let a = PgStore::connect(&db.url).await.unwrap();
    let b = PgStore::connect(&db.url).await.unwrap();
    let mut events = b.subscribe_links();
    // The LISTEN connection starts in the background; give it a moment to be up.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        a.put_link(&conformance::link("u1", "github", None))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
            Ok(Ok(event)) => {
                assert_eq!(
                    (event.user_id.as_str(), event.provider_id.as_str()),
                    ("u1", "github")
                );
                break;
            }
            _ => assert!(
                std::time::Instant::now() < deadline,
                "no notification reached the other replica"
            ),
        }
    }
    a.delete_link("u1", "github", "").await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .expect("the unlink is announced too")
        .unwrap();
    assert_eq!(event.user_id, "u1");
}

#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    let db = TestDatabase::create().await;
    let starts = (0..4).map(|_| {
        let url = db.url.clone();
        async move { PgStore::connect(&url).await.map(|_| ()) }
    });
    let stores = futures_join(starts).await;
    assert!(stores.iter().all(Result::is_ok), "every replica started");
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM extauth_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

/// Runs futures concurrently (without a futures crate).
async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    let Err(e) = PgStore::connect("postgres://postgres@127.0.0.1:1/none").await else {
        panic!("connected to nothing");
    };
    assert!(e.to_string().contains("PostgreSQL unreachable"), "{e}");
    let Err(e) = PgStore::connect("mysql://x").await else {
        panic!("accepted a MySQL URL");
    };
    assert!(e.to_string().contains("CODER_PG_CONNECTION_URL"), "{e}");
}

/// Whether the session of a connection made with `url` is encrypted (`pg_stat_ssl`), or the
/// connection error.
async fn encrypted(url: &str) -> Result<bool, String> {
    let prepared = extauth_broker::store::postgres_tls::prepare(url)?;
    let (client, connection) = prepared
        .config
        .connect(prepared.tls)
        .await
        .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// libpq's `sslmode` meanings against the local server (TLS with Debian's self-signed
/// certificate for `localhost`).
#[tokio::test]
async fn sslmode_means_what_it_means_to_libpq() {
    let db = TestDatabase::create().await;
    let with = |query: &str| format!("{}?{query}", db.url);
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(
        ssl, "on",
        "the local PostgreSQL serves TLS (Debian's default)"
    );

    assert_eq!(encrypted(&with("sslmode=disable")).await, Ok(false));
    assert_eq!(
        encrypted(&db.url).await,
        Ok(true),
        "prefer: TLS when offered"
    );
    assert_eq!(encrypted(&with("sslmode=require")).await, Ok(true));
    // The certificate is self-signed: not trusted without sslrootcert.
    let refused = encrypted(&with("sslmode=verify-ca")).await.unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    // With it, the chain is trusted; its name is localhost, not 127.0.0.1.
    let ca = with(&format!("sslmode=verify-ca&sslrootcert={snakeoil}"));
    assert_eq!(encrypted(&ca).await, Ok(true));
    let full = with(&format!("sslmode=verify-full&sslrootcert={snakeoil}"));
    let refused = encrypted(&full).await.unwrap_err();
    assert!(refused.contains("NotValidForName"), "{refused}");
    let by_name = full.replace("127.0.0.1", "localhost");
    assert_eq!(encrypted(&by_name).await, Ok(true));

    // The store itself over a fully checked connection.
    let store = PgStore::connect(&by_name).await.unwrap();
    store.ping().await.unwrap();
}

#[tokio::test]
async fn after_losing_its_listen_connection_a_replica_reconnects_and_waiters_look_again() {
    let db = TestDatabase::create().await;
    let a = PgStore::connect(&db.url).await.unwrap();
    let b = PgStore::connect(&db.url).await.unwrap();
    let mut events = b.subscribe_links();
    let (admin, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let listeners = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN extauth_links%'";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while admin.query(listeners, &[]).await.unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "both replicas listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Cut every LISTEN connection, as a database restart or a network blip would.
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN extauth_links%'",
            &[],
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a resync after reconnecting")
        .unwrap();
    assert!(event.concerns("anyone", "any-provider"), "{event:?}");
    // And notifications flow again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        a.put_link(&conformance::link("u2", "gitlab", None))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
            Ok(Ok(e)) if e.user_id == "u2" => break,
            _ => assert!(
                std::time::Instant::now() < deadline,
                "notifications resumed"
            ),
        }
    }
}
