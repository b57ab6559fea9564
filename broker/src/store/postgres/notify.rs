//! What crosses replicas: `LISTEN`/`NOTIFY` of link changes, the serving lock `dbcrypt` checks,
//! and advisory locks held on a connection of their own.

use super::*;

/// Keeps a connection `LISTEN`ing for link changes and forwards them to local waiters;
/// reconnects after a failure, then tells every waiter to look again (what changed while the
/// connection was down is not known).
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    events: broadcast::Sender<LinkChanged>,
    cache: std::sync::Arc<cache::ReadCache>,
) {
    let mut delay = Duration::from_millis(250);
    let mut reconnecting = false;
    loop {
        let listened = listen_once(&config, &tls, &events, &cache, reconnecting).await;
        // Whatever ended it, notifications may be missed from now on.
        cache.set_listening(false);
        match listened {
            // It was listening until the connection ended: start over quickly.
            Ok(()) => delay = Duration::from_millis(250),
            Err(e) => tracing::warn!(
                error = %causes(&e),
                retry_in_ms = delay.as_millis() as u64,
                "PostgreSQL LISTEN connection unavailable"
            ),
        }
        reconnecting = true;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One `LISTEN` connection, until it ends.
pub(super) async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    events: &broadcast::Sender<LinkChanged>,
    cache: &std::sync::Arc<cache::ReadCache>,
    reconnecting: bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let forward = events.clone();
    let invalidate = cache.clone();
    // The connection delivers notifications only while it is polled, LISTEN's answer included.
    let pump = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            let tokio_postgres::AsyncMessage::Notification(n) = message? else {
                continue;
            };
            if n.channel() == cache::CACHE_CHANNEL {
                invalidate.forget(&cache::Changed::parse(n.payload()));
            } else if let Some((user_id, provider_id)) = n.payload().split_once('\n') {
                invalidate.forget_links(user_id, provider_id);
                let _ = forward.send(LinkChanged {
                    user_id: user_id.to_owned(),
                    provider_id: provider_id.to_owned(),
                });
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    client.batch_execute(LISTEN).await?;
    // From here on every change is heard: the cache may be used (and starts empty).
    cache.set_listening(true);
    if reconnecting {
        let _ = events.send(LinkChanged::unknown());
    }
    let ended = pump.await;
    drop(client);
    match ended {
        Ok(result) => result,
        // The pump never panics; a cancelled runtime is shutting down anyway.
        Err(_) => Ok(()),
    }
}

/// Holds [`crate::store::SERVING_LOCK`] shared on a connection of its own for as long as the process
/// runs, taking it again after the connection is lost. `acquired` learns when it is first held
/// (or why it could not be).
pub(super) async fn hold_serving(
    pool: Pool,
    acquired: tokio::sync::oneshot::Sender<StoreResult<()>>,
) {
    let key = lock_key(crate::store::SERVING_LOCK);
    let mut acquired = Some(acquired);
    let mut delay = Duration::from_millis(250);
    loop {
        let held = async {
            let client = PgStore::from(&pool).await?;
            let free: bool = client
                .query_one("SELECT pg_try_advisory_lock_shared($1)", &[&key])
                .await
                .map_err(pg)?
                .get(0);
            if !free {
                tracing::warn!(
                    "a maintenance command (dbcrypt) is running on this database; waiting for it to finish"
                );
                client
                    .execute("SELECT pg_advisory_lock_shared($1)", &[&key])
                    .await
                    .map_err(pg)?;
            }
            Ok::<_, StoreError>(Object::take(client))
        }
        .await;
        match held {
            Ok(client) => {
                if let Some(acquired) = acquired.take() {
                    let _ = acquired.send(Ok(()));
                }
                delay = Duration::from_millis(250);
                // Held until the connection ends; a cheap query notices a dead one.
                while client.simple_query("").await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(15)).await;
                }
                tracing::warn!(
                    "PostgreSQL connection holding the replica registration lost; taking it again"
                );
            }
            Err(e) => {
                if let Some(acquired) = acquired.take() {
                    let _ = acquired.send(Err(e));
                    return;
                }
                tracing::warn!(error = %e, "registering this replica again failed; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// A session advisory lock on a connection taken out of the pool's rotation until released.
pub(super) struct PgLock {
    pub(super) client: Option<Object>,
    pub(super) key: i64,
}

#[async_trait]
impl HeldLock for PgLock {
    async fn release(mut self: Box<Self>) {
        if let Some(client) = self.client.take() {
            if client
                .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
                .await
                .is_err()
            {
                drop(Object::take(client));
            }
        }
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        // Not released (a panic, a cancelled task): close the connection, which releases the
        // lock, rather than return a connection that still holds it to the pool.
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}
