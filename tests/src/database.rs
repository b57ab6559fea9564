//! A PostgreSQL database of its own for one test or benchmark (also included by the broker's
//! own store tests, `broker/tests/conformance/`, which cannot depend on this crate).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// A database of its own for one test, on the local PostgreSQL (`EXTAUTH_TEST_PG_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards. Panics, never skips, when
/// the server cannot be reached: these tests must run in CI.
pub struct TestDatabase {
    /// The URL of the new database.
    pub url: String,
    admin: String,
    name: String,
}

impl TestDatabase {
    /// Creates an empty database.
    pub async fn create() -> Self {
        let admin = std::env::var("EXTAUTH_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!("extauth_test_{}", extauth_broker::random::hex_token::<6>());
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {admin} is required by this test (set EXTAUTH_TEST_PG_URL): {e}"
                )
            });
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin).expect("EXTAUTH_TEST_PG_URL is a URL");
        url.set_path(&format!("/{name}"));
        Self {
            url: url.to_string(),
            admin,
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
