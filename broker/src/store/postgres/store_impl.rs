//! The [`Store`] trait over PostgreSQL.

use super::*;

#[async_trait]
impl Store for PgStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let client = self.client().await?;
        write_user(&client, INSERT_USER, user).await
    }

    async fn update_user(&self, user: &User) -> StoreResult<()> {
        let client = self.client().await?;
        // The notification goes out when the update commits: every replica's cache drops the
        // user's tokens, which carry the user.
        let updated = client
            .execute(
                "WITH u AS (UPDATE users SET email = $2, name = $3, is_admin = $4 WHERE id = $1
                            RETURNING id)
                 SELECT pg_notify($5, $6) FROM u",
                &[
                    &user.id,
                    &user.email,
                    &user.name,
                    &user.is_admin,
                    &cache::CACHE_CHANNEL,
                    &cache::Changed::User(&user.id).payload(),
                ],
            )
            .await
            .map_err(pg)?;
        self.cache.forget(&cache::Changed::User(&user.id));
        if updated == 0 {
            return Err(StoreError::Backend(format!("no user {}", user.id)));
        }
        Ok(())
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        let row = self
            .one("SELECT * FROM users WHERE id = $1", &[&id])
            .await?;
        row.as_ref().map(user_of).transpose()
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM users WHERE username = $1", &[&username])
            .await
            .map_err(pg)?;
        row.as_ref().map(user_of).transpose()
    }

    async fn user_by_oidc(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT * FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2",
                &[&issuer, &subject],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(user_of).transpose()
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .map_err(pg)?
            .get(0);
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn put_session(&self, session: &Session) -> StoreResult<()> {
        let client = self.client().await?;
        self.write_session(&client, session).await
    }

    async fn session(&self, id_hash: &str) -> StoreResult<Option<Session>> {
        let row = self
            .one("SELECT * FROM sessions WHERE id_hash = $1", &[&id_hash])
            .await?;
        row.as_ref().map(session_of).transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        self.execute("DELETE FROM sessions WHERE id_hash = $1", &[&id_hash])
            .await
            .map(drop)
    }

    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64> {
        self.execute("DELETE FROM sessions WHERE user_id = $1", &[&user_id])
            .await
    }

    async fn delete_sessions_by_sid(&self, user_id: &str, sid: &str) -> StoreResult<u64> {
        self.execute(
            "DELETE FROM sessions WHERE user_id = $1 AND oidc_sid = $2",
            &[&user_id, &sid],
        )
        .await
    }

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                INSERT_TOKEN,
                &[
                    &token.id,
                    &kind_name(token.kind),
                    &token.user_id,
                    &token.name,
                    &token.secret_hash,
                    &token.providers,
                    &token.created_at,
                    &token.expires_at,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        let row = self
            .one("SELECT * FROM api_tokens WHERE id = $1", &[&id])
            .await?;
        row.as_ref().map(token_of).transpose()
    }

    async fn token_with_user(&self, id: &str) -> StoreResult<Option<(TokenRecord, Option<User>)>> {
        self.cache
            .token_or_read(id, || async {
                // The user's links come along and are kept, grouped by provider as the
                // lookup reads them next (with a ticket from before this read, like any).
                let ticket = self.cache.ticket();
                let client = self.client().await?;
                let statement = client
                    .prepare_cached(TOKEN_USER_AND_LINKS)
                    .await
                    .map_err(pg)?;
                let rows = client.query(&statement, &[&id]).await.map_err(pg)?;
                let Some(row) = rows.first() else {
                    return Ok(None);
                };
                let token = token_of(row)?;
                let user_id: Option<String> = row.try_get("u_id").map_err(pg)?;
                let user = user_id.map(|_| user_at(row, "u_")).transpose()?;
                let mut links: Vec<LinkRecord> = Vec::with_capacity(rows.len());
                for row in &rows {
                    if row
                        .try_get::<_, Option<&str>>("l_user_id")
                        .map_err(pg)?
                        .is_some()
                    {
                        links.push(link_at(row, "l_")?);
                    }
                }
                for provider in links.chunk_by(|a, b| a.provider_id == b.provider_id) {
                    if let Some(first) = provider.first() {
                        self.cache.put_links(
                            &first.user_id,
                            &first.provider_id,
                            std::sync::Arc::new(provider.to_vec()),
                            ticket,
                        );
                    }
                }
                Ok(Some((token, user)))
            })
            .await
    }

    async fn tokens_of_user(
        &self,
        user_id: &str,
        kind: TokenKind,
    ) -> StoreResult<Vec<TokenRecord>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT * FROM api_tokens WHERE user_id = $1 AND kind = $2 ORDER BY created_at, id",
            &[&user_id, &kind_name(kind)],
            token_of,
        )
        .await
    }

    async fn delete_token(&self, id: &str) -> StoreResult<bool> {
        // Deleted and announced in one statement: the notification goes out on commit.
        let deleted = self
            .execute(
                "WITH d AS (DELETE FROM api_tokens WHERE id = $1 RETURNING id)
                 SELECT pg_notify($2, $3) FROM d",
                &[
                    &id,
                    &cache::CACHE_CHANNEL,
                    &cache::Changed::Token(id).payload(),
                ],
            )
            .await?;
        self.cache.forget(&cache::Changed::Token(id));
        Ok(deleted > 0)
    }

    async fn put_link(&self, link: &LinkRecord) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        self.write_link(&tx, link).await?;
        notify(&tx, &link.user_id, &link.provider_id).await?;
        tx.commit().await.map_err(pg)?;
        self.notify_local(&link.user_id, &link.provider_id);
        Ok(())
    }

    async fn replace_link_if(
        &self,
        link: &LinkRecord,
        expected_refresh: Option<&Sealed>,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                "SELECT refresh_token, refresh_token_key_id FROM external_auth_links
                 WHERE user_id = $1 AND provider_id = $2 AND account = $3 FOR UPDATE",
                &[&link.user_id, &link.provider_id, &link.account],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Ok(false);
        };
        if sealed_at(&row, "refresh_token", "refresh_token_key_id")?.as_ref() != expected_refresh {
            // Another replica wrote first; its notification may still be on the way.
            self.cache.forget_links(&link.user_id, &link.provider_id);
            return Ok(false);
        }
        self.write_link(&tx, link).await?;
        notify(&tx, &link.user_id, &link.provider_id).await?;
        tx.commit().await.map_err(pg)?;
        self.notify_local(&link.user_id, &link.provider_id);
        Ok(true)
    }

    async fn link(&self, user_id: &str, provider_id: &str) -> StoreResult<Option<LinkRecord>> {
        // The provider's links are read (and cached) together: one user rarely has more than
        // two accounts of a provider, and the lookup by URL needs them all anyway.
        let links = self.cached_links(user_id, provider_id).await?;
        Ok(cache::default_of(&links).cloned())
    }

    async fn link_account(
        &self,
        user_id: &str,
        provider_id: &str,
        account: &str,
    ) -> StoreResult<Option<LinkRecord>> {
        let row = self
            .one(
                "SELECT * FROM external_auth_links
                 WHERE user_id = $1 AND provider_id = $2 AND account = $3",
                &[&user_id, &provider_id, &account],
            )
            .await?;
        row.as_ref().map(link_of).transpose()
    }

    async fn links_of_provider(
        &self,
        user_id: &str,
        provider_id: &str,
    ) -> StoreResult<Vec<LinkRecord>> {
        let links = self.cached_links(user_id, provider_id).await?;
        Ok(std::sync::Arc::unwrap_or_clone(links))
    }

    async fn links_of_user(&self, user_id: &str) -> StoreResult<Vec<LinkRecord>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT * FROM external_auth_links WHERE user_id = $1 ORDER BY provider_id, account",
            &[&user_id],
            link_of,
        )
        .await
    }

    async fn delete_link(
        &self,
        user_id: &str,
        provider_id: &str,
        account: &str,
    ) -> StoreResult<Option<LinkRecord>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                "DELETE FROM external_auth_links
                 WHERE user_id = $1 AND provider_id = $2 AND account = $3 RETURNING *",
                &[&user_id, &provider_id, &account],
            )
            .await
            .map_err(pg)?;
        let removed = row.as_ref().map(link_of).transpose()?;
        if removed.is_some() {
            notify(&tx, user_id, provider_id).await?;
        }
        tx.commit().await.map_err(pg)?;
        if removed.is_some() {
            self.notify_local(user_id, provider_id);
        }
        Ok(removed)
    }

    async fn put_pending_revocation(&self, pending: &PendingRevocation) -> StoreResult<()> {
        let client = self.client().await?;
        self.write_pending(&client, pending).await
    }

    async fn pending_revocations_due(&self, now: i64) -> StoreResult<Vec<PendingRevocation>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT * FROM pending_revocations WHERE next_attempt_at <= $1 ORDER BY created_at, id",
            &[&now],
            pending_of,
        )
        .await
    }

    async fn pending_revocations_of_user(
        &self,
        user_id: &str,
    ) -> StoreResult<Vec<PendingRevocation>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT * FROM pending_revocations WHERE user_id = $1 ORDER BY created_at, id",
            &[&user_id],
            pending_of,
        )
        .await
    }

    async fn delete_pending_revocation(&self, id: &str) -> StoreResult<bool> {
        Ok(self
            .execute("DELETE FROM pending_revocations WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    async fn encryption_key_ids(&self) -> StoreResult<BTreeSet<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT nullif(key_id, '') FROM link_key_ids
                 UNION SELECT access_token_key_id FROM pending_revocations
                 UNION SELECT refresh_token_key_id FROM pending_revocations
                 UNION SELECT oidc_id_token_key_id FROM sessions
                 UNION SELECT oidc_refresh_token_key_id FROM sessions",
                &[],
            )
            .await
            .map_err(pg)?;
        let mut ids: BTreeSet<String> = rows
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(0))
            .collect();
        for sealed in self.oauth2_sealed().await? {
            if !sealed.is_plaintext() {
                ids.insert(sealed.key_id);
            }
        }
        Ok(ids)
    }

    async fn plaintext_values(&self) -> StoreResult<u64> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one(
                // Links are read only when one may be plaintext (`link_key_ids` holds '').
                "SELECT
                   (SELECT CASE WHEN EXISTS (SELECT FROM link_key_ids WHERE key_id = '') THEN
                      (SELECT count(*) FROM external_auth_links WHERE access_token_key_id IS NULL)
                    + (SELECT count(*) FROM external_auth_links WHERE refresh_token IS NOT NULL AND refresh_token_key_id IS NULL)
                    + (SELECT count(*) FROM external_auth_links WHERE extra IS NOT NULL AND extra_key_id IS NULL)
                    ELSE 0 END)
                 + (SELECT count(*) FROM pending_revocations WHERE access_token_key_id IS NULL)
                 + (SELECT count(*) FROM pending_revocations WHERE refresh_token IS NOT NULL AND refresh_token_key_id IS NULL)
                 + (SELECT count(*) FROM sessions WHERE oidc_id_token IS NOT NULL AND oidc_id_token_key_id IS NULL)
                 + (SELECT count(*) FROM sessions WHERE oidc_refresh_token IS NOT NULL AND oidc_refresh_token_key_id IS NULL)",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        let oauth2 = self
            .oauth2_sealed()
            .await?
            .iter()
            .filter(|s| s.is_plaintext())
            .count() as u64;
        Ok(u64::try_from(n).unwrap_or_default() + oauth2)
    }

    fn subscribe_links(&self) -> broadcast::Receiver<LinkChanged> {
        self.events.subscribe()
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.execute("SELECT 1", &[]).await.map_err(pg)?;
        Ok(())
    }

    async fn put_login_flow(&self, flow: &LoginFlow) -> StoreResult<()> {
        self.put_pruning(
            "DELETE FROM login_flows WHERE expires_ms < $1",
            "INSERT INTO login_flows (state_hash, binding_hash, user_id, purpose, verifier,
                 verifier_key_id, nonce, redirect, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &flow.state_hash,
                &flow.binding_hash,
                &flow.user_id,
                &flow.purpose,
                &flow.verifier.as_ref().map(|v| v.data.as_str()),
                &flow.verifier.as_ref().map(|v| v.key_id.as_str()),
                &flow.nonce,
                &flow.redirect,
                &flow.expires_ms,
            ],
        )
        .await
    }

    async fn take_login_flow(&self, state_hash: &str) -> StoreResult<Option<LoginFlow>> {
        let row = self
            .one(
                "DELETE FROM login_flows WHERE state_hash = $1 RETURNING *",
                &[&state_hash],
            )
            .await?;
        let flow = row.as_ref().map(login_flow_of).transpose()?;
        Ok(flow.filter(|f| f.expires_ms >= crate::clock::now_millis()))
    }

    async fn put_device_flow(&self, flow: &DeviceFlowRecord) -> StoreResult<()> {
        self.put_pruning(
            "DELETE FROM device_flows WHERE expires_ms < $1",
            "INSERT INTO device_flows (code_hash, user_id, provider_id, interval_ms, next_poll_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (code_hash) DO UPDATE SET user_id = $2, provider_id = $3,
                 interval_ms = $4, next_poll_ms = $5, expires_ms = $6",
            &[
                &flow.code_hash,
                &flow.user_id,
                &flow.provider_id,
                &flow.interval_ms,
                &flow.next_poll_ms,
                &flow.expires_ms,
            ],
        )
        .await
    }

    async fn device_flow(&self, code_hash: &str) -> StoreResult<Option<DeviceFlowRecord>> {
        let row = self
            .one(
                "SELECT * FROM device_flows WHERE code_hash = $1",
                &[&code_hash],
            )
            .await?;
        row.as_ref().map(device_flow_of).transpose()
    }

    async fn replace_device_flow_if(
        &self,
        flow: &DeviceFlowRecord,
        expected_next_poll_ms: i64,
    ) -> StoreResult<bool> {
        let updated = self
            .execute(
                "UPDATE device_flows SET interval_ms = $2, next_poll_ms = $3, expires_ms = $4
                 WHERE code_hash = $1 AND next_poll_ms = $5",
                &[
                    &flow.code_hash,
                    &flow.interval_ms,
                    &flow.next_poll_ms,
                    &flow.expires_ms,
                    &expected_next_poll_ms,
                ],
            )
            .await?;
        Ok(updated == 1)
    }

    async fn delete_device_flow(&self, code_hash: &str) -> StoreResult<()> {
        self.execute(
            "DELETE FROM device_flows WHERE code_hash = $1",
            &[&code_hash],
        )
        .await
        .map(drop)
    }

    async fn lock(&self, name: &str) -> StoreResult<StoreLock> {
        let client = Self::from(&self.locks).await?;
        let key = lock_key(name);
        let lock = PgLock {
            client: Some(client),
            key,
        };
        if let Some(client) = &lock.client {
            // On failure the lock is dropped, which closes the connection.
            client
                .execute("SELECT pg_advisory_lock($1)", &[&key])
                .await
                .map_err(pg)?;
        }
        Ok(StoreLock::held(Box::new(lock)))
    }

    async fn register_replica(&self) -> StoreResult<()> {
        let (acquired, first) = tokio::sync::oneshot::channel();
        tokio::spawn(hold_serving(self.locks.clone(), acquired));
        first.await.map_err(|_| {
            StoreError::Backend("PostgreSQL: the replica registration ended early".to_owned())
        })?
    }

    async fn try_lock(&self, name: &str) -> StoreResult<Option<StoreLock>> {
        let client = Self::from(&self.locks).await?;
        let key = lock_key(name);
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(pg)?
            .get(0);
        Ok(got.then(|| {
            StoreLock::held(Box::new(PgLock {
                client: Some(client),
                key,
            }))
        }))
    }

    async fn snapshot(&self) -> StoreResult<Snapshot> {
        let mut client = self.client().await?;
        // One consistent view of every table.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let snapshot = Snapshot {
            users: rows(&tx, "SELECT * FROM users", &[], user_of).await?,
            sessions: rows(&tx, "SELECT * FROM sessions", &[], session_of).await?,
            tokens: rows(&tx, "SELECT * FROM api_tokens", &[], token_of).await?,
            links: rows(&tx, "SELECT * FROM external_auth_links", &[], link_of).await?,
            pending_revocations: rows(&tx, "SELECT * FROM pending_revocations", &[], pending_of)
                .await?,
            revoked_keys: rows(&tx, "SELECT key_id FROM dbcrypt_keys", &[], |r| {
                r.try_get(0).map_err(pg)
            })
            .await?,
            oidc_claims: rows(&tx, "SELECT * FROM oidc_claims", &[], oidc_claims_of).await?,
            oauth2_apps: rows(&tx, "SELECT doc FROM oauth2_apps", &[], doc_of).await?,
            oauth2_grants: rows(&tx, "SELECT doc FROM oauth2_grants", &[], doc_of).await?,
            oauth2_families: rows(&tx, "SELECT doc FROM oauth2_families", &[], doc_of).await?,
            signing_keys: rows(&tx, "SELECT doc FROM signing_keys", &[], doc_of).await?,
            oauth2_resources: rows(&tx, "SELECT doc FROM oauth2_resources", &[], doc_of).await?,
            git_ssh_keys: rows(&tx, "SELECT doc FROM git_ssh_keys", &[], doc_of).await?,
            runtime_settings: rows(
                &tx,
                "SELECT name, value FROM runtime_settings",
                &[],
                |row| Ok((row.get(0), row.get(1))),
            )
            .await?,
        };
        tx.commit().await.map_err(pg)?;
        Ok(snapshot.sorted())
    }

    async fn import(&self, snapshot: &Snapshot) -> StoreResult<()> {
        let mut client = self.client().await?;
        // All or nothing: a failed import leaves the database as it was.
        let tx = client.transaction().await.map_err(pg)?;
        let upsert_user = format!(
            "{INSERT_USER} ON CONFLICT (id) DO UPDATE SET username = $2, email = $3, name = $4,
             is_admin = $5, oidc_issuer = $6, oidc_subject = $7, created_at = $8"
        );
        pipelined(&snapshot.users, |user| write_user(&tx, &upsert_user, user)).await?;
        pipelined(&snapshot.sessions, |session| {
            self.write_session(&tx, session)
        })
        .await?;
        let upsert_token = format!(
            "{INSERT_TOKEN} ON CONFLICT (id) DO UPDATE SET kind = $2, user_id = $3, name = $4,
             secret_hash = $5, providers = $6, created_at = $7, expires_at = $8"
        );
        pipelined(&snapshot.tokens, |token| async {
            tx.execute(
                upsert_token.as_str(),
                &[
                    &token.id,
                    &kind_name(token.kind),
                    &token.user_id,
                    &token.name,
                    &token.secret_hash,
                    &token.providers,
                    &token.created_at,
                    &token.expires_at,
                ],
            )
            .await
            .map_err(pg)?;
            Ok(())
        })
        .await?;
        pipelined(&snapshot.links, |link| self.write_link(&tx, link)).await?;
        for pending in &snapshot.pending_revocations {
            self.write_pending(&tx, pending).await?;
        }
        for id in &snapshot.revoked_keys {
            tx.execute(
                "INSERT INTO dbcrypt_keys (key_id, revoked_at) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                &[id],
            )
            .await
            .map_err(pg)?;
        }
        for claims in &snapshot.oidc_claims {
            tx.execute(
                UPSERT_OIDC_CLAIMS,
                &[&claims.user_id, &claims.claims, &claims.updated_at],
            )
            .await
            .map_err(pg)?;
        }
        for app in &snapshot.oauth2_apps {
            tx.execute(UPSERT_APP, &[&app.id, &app.created_at, &doc(app)?])
                .await
                .map_err(pg)?;
        }
        for grant in &snapshot.oauth2_grants {
            tx.execute(UPSERT_GRANT, &[&grant.user_id, &grant.app_id, &doc(grant)?])
                .await
                .map_err(pg)?;
        }
        for family in &snapshot.oauth2_families {
            write_family(&tx, family, true).await?;
        }
        for key in &snapshot.signing_keys {
            tx.execute(UPSERT_KEY, &[&key.kid, &key.created_at, &doc(key)?])
                .await
                .map_err(pg)?;
        }
        for resource in &snapshot.oauth2_resources {
            tx.execute(
                UPSERT_RESOURCE,
                &[&resource.id, &resource.created_at, &doc(resource)?],
            )
            .await
            .map_err(pg)?;
        }
        for key in &snapshot.git_ssh_keys {
            tx.execute(UPSERT_GIT_SSH_KEY, &[&key.user_id, &doc(key)?])
                .await
                .map_err(pg)?;
        }
        for (name, value) in &snapshot.runtime_settings {
            tx.execute(UPSERT_SETTING, &[name, value])
                .await
                .map_err(pg)?;
        }
        // Anything may have changed: every replica drops its whole cache.
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&cache::CACHE_CHANNEL, &cache::Changed::Everything.payload()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        self.cache.forget(&cache::Changed::Everything);
        Ok(())
    }

    async fn put_oidc_claims(&self, claims: &OidcClaims) -> StoreResult<()> {
        self.execute(
            UPSERT_OIDC_CLAIMS,
            &[&claims.user_id, &claims.claims, &claims.updated_at],
        )
        .await
        .map(drop)
    }

    async fn oidc_claims(&self, user_id: &str) -> StoreResult<Option<OidcClaims>> {
        let row = self
            .one("SELECT * FROM oidc_claims WHERE user_id = $1", &[&user_id])
            .await?;
        row.as_ref().map(oidc_claims_of).transpose()
    }

    async fn revoked_key_ids(&self) -> StoreResult<BTreeSet<String>> {
        let client = self.client().await?;
        Ok(client
            .query("SELECT key_id FROM dbcrypt_keys", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn revoke_key_ids(&self, ids: &[String], now: i64) -> StoreResult<()> {
        let client = self.client().await?;
        for id in ids {
            client
                .execute(
                    "INSERT INTO dbcrypt_keys (key_id, revoked_at) VALUES ($1, $2)
                     ON CONFLICT (key_id) DO UPDATE SET revoked_at = $2",
                    &[id, &now],
                )
                .await
                .map_err(pg)?;
        }
        // dbcrypt revokes after rewriting every value: the links' keys are exact again.
        client
            .execute("SELECT link_key_ids_exact()", &[])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn put_oauth2_app(&self, app: &OAuth2App) -> StoreResult<()> {
        self.execute(UPSERT_APP, &[&app.id, &app.created_at, &doc(app)?])
            .await
            .map(drop)
    }

    async fn oauth2_app(&self, id: &str) -> StoreResult<Option<OAuth2App>> {
        let row = self
            .one("SELECT doc FROM oauth2_apps WHERE id = $1", &[&id])
            .await?;
        row.as_ref().map(doc_of).transpose()
    }

    async fn oauth2_apps(&self) -> StoreResult<Vec<OAuth2App>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT doc FROM oauth2_apps ORDER BY created_at, id",
            &[],
            doc_of,
        )
        .await
    }

    async fn touch_app_secret(&self, app_id: &str, secret_id: &str, at: i64) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // The row lock orders this after (or before) an admin's change of the app.
        let row = tx
            .query_opt(
                "SELECT doc FROM oauth2_apps WHERE id = $1 FOR UPDATE",
                &[&app_id],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Ok(());
        };
        let mut app: OAuth2App = doc_of(&row)?;
        let Some(secret) = app.secrets.iter_mut().find(|s| s.id == secret_id) else {
            return Ok(());
        };
        secret.last_used_at = Some(at);
        tx.execute(
            "UPDATE oauth2_apps SET doc = $2 WHERE id = $1",
            &[&app_id, &doc(&app)?],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn delete_oauth2_app(&self, id: &str) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("DELETE FROM oauth2_families WHERE app_id = $1", &[&id])
            .await
            .map_err(pg)?;
        tx.execute("DELETE FROM oauth2_grants WHERE app_id = $1", &[&id])
            .await
            .map_err(pg)?;
        let deleted = tx
            .execute("DELETE FROM oauth2_apps WHERE id = $1", &[&id])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(deleted > 0)
    }

    async fn put_oauth2_code(&self, code: &OAuth2Code) -> StoreResult<()> {
        self.put_pruning(
            "DELETE FROM oauth2_codes WHERE expires_ms < $1",
            "INSERT INTO oauth2_codes (code_hash, used, expires_ms, doc) VALUES ($1, $2, $3, $4)",
            &[&code.code_hash, &code.used, &code.expires_ms, &doc(code)?],
        )
        .await
    }

    async fn use_oauth2_code(&self, code_hash: &str) -> StoreResult<Option<OAuth2Code>> {
        // The row lock makes the read of `used` and its update one step: of two redemptions,
        // the second waits and sees `true`.
        let row = self
            .one(
                "UPDATE oauth2_codes c SET used = true
                 FROM (SELECT code_hash, used AS was_used FROM oauth2_codes
                       WHERE code_hash = $1 FOR UPDATE) o
                 WHERE c.code_hash = o.code_hash
                 RETURNING c.doc, o.was_used",
                &[&code_hash],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut code: OAuth2Code = doc_of(&row)?;
        code.used = row.try_get("was_used").map_err(pg)?;
        Ok((code.expires_ms >= crate::clock::now_millis()).then_some(code))
    }

    async fn put_oauth2_grant(&self, grant: &OAuth2Grant) -> StoreResult<()> {
        self.execute(UPSERT_GRANT, &[&grant.user_id, &grant.app_id, &doc(grant)?])
            .await
            .map(drop)
    }

    async fn oauth2_grant(&self, user_id: &str, app_id: &str) -> StoreResult<Option<OAuth2Grant>> {
        let row = self
            .one(
                "SELECT doc FROM oauth2_grants WHERE user_id = $1 AND app_id = $2",
                &[&user_id, &app_id],
            )
            .await?;
        row.as_ref().map(doc_of).transpose()
    }

    async fn oauth2_grants_of_user(&self, user_id: &str) -> StoreResult<Vec<OAuth2Grant>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT doc FROM oauth2_grants WHERE user_id = $1 ORDER BY app_id",
            &[&user_id],
            doc_of,
        )
        .await
    }

    async fn delete_oauth2_grant(&self, user_id: &str, app_id: &str) -> StoreResult<bool> {
        let deleted = self
            .execute(
                "DELETE FROM oauth2_grants WHERE user_id = $1 AND app_id = $2",
                &[&user_id, &app_id],
            )
            .await?;
        Ok(deleted > 0)
    }

    async fn create_oauth2_family(&self, family: &OAuth2Family) -> StoreResult<()> {
        let client = self.client().await?;
        write_family(&client, family, false).await.map(drop)
    }

    async fn oauth2_family(&self, id: &str) -> StoreResult<Option<OAuth2Family>> {
        let row = self
            .one("SELECT doc FROM oauth2_families WHERE id = $1", &[&id])
            .await?;
        row.as_ref().map(doc_of).transpose()
    }

    async fn replace_oauth2_family_if(
        &self,
        family: &OAuth2Family,
        expected_refresh_hash: &str,
    ) -> StoreResult<bool> {
        let updated = self
            .execute(
                "UPDATE oauth2_families SET refresh_hash = $2, secret_id = $3, doc = $4,
                     expires_at = $6
                 WHERE id = $1 AND refresh_hash = $5",
                &[
                    &family.id,
                    &family.refresh_hash,
                    &family.secret_id,
                    &doc(family)?,
                    &expected_refresh_hash,
                    &family.expires_at,
                ],
            )
            .await?;
        Ok(updated > 0)
    }

    async fn delete_oauth2_family(&self, id: &str) -> StoreResult<bool> {
        let deleted = self
            .execute("DELETE FROM oauth2_families WHERE id = $1", &[&id])
            .await?;
        Ok(deleted > 0)
    }

    async fn delete_oauth2_families(&self, filter: FamilyFilter<'_>) -> StoreResult<u64> {
        self.execute(
            "DELETE FROM oauth2_families WHERE app_id = $1
             AND ($2::text IS NULL OR user_id = $2)
             AND ($3::text IS NULL OR secret_id = $3)",
            &[&filter.app_id, &filter.user_id, &filter.secret_id],
        )
        .await
    }

    async fn delete_expired_oauth2_families(&self, now: i64) -> StoreResult<u64> {
        self.execute("DELETE FROM oauth2_families WHERE expires_at < $1", &[&now])
            .await
    }

    async fn put_device_grant(&self, grant: &DeviceGrant) -> StoreResult<()> {
        let result = self
            .put_pruning(
                "DELETE FROM oauth2_device_grants WHERE expires_ms < $1",
                "INSERT INTO oauth2_device_grants
                     (code_hash, user_code, decision, next_poll_ms, expires_ms, doc)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &grant.code_hash,
                    &grant.user_code,
                    &decision_name(grant.decision),
                    &grant.next_poll_ms,
                    &grant.expires_ms,
                    &doc(grant)?,
                ],
            )
            .await;
        match result {
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict("user code")),
            other => other,
        }
    }

    async fn device_grant(&self, code_hash: &str) -> StoreResult<Option<DeviceGrant>> {
        let row = self
            .one(
                "SELECT doc FROM oauth2_device_grants WHERE code_hash = $1 AND expires_ms >= $2",
                &[&code_hash, &crate::clock::now_millis()],
            )
            .await?;
        row.as_ref().map(doc_of).transpose()
    }

    async fn device_grant_by_user_code(&self, user_code: &str) -> StoreResult<Option<DeviceGrant>> {
        let row = self
            .one(
                "SELECT doc FROM oauth2_device_grants WHERE user_code = $1 AND expires_ms >= $2",
                &[&user_code, &crate::clock::now_millis()],
            )
            .await?;
        row.as_ref().map(doc_of).transpose()
    }

    async fn replace_device_grant_if(
        &self,
        grant: &DeviceGrant,
        expected: (DeviceDecision, i64),
    ) -> StoreResult<bool> {
        let updated = self
            .execute(
                "UPDATE oauth2_device_grants SET decision = $2, next_poll_ms = $3, doc = $4
                 WHERE code_hash = $1 AND decision = $5 AND next_poll_ms = $6",
                &[
                    &grant.code_hash,
                    &decision_name(grant.decision),
                    &grant.next_poll_ms,
                    &doc(grant)?,
                    &decision_name(expected.0),
                    &expected.1,
                ],
            )
            .await?;
        Ok(updated > 0)
    }

    async fn put_signing_key(&self, key: &SigningKey) -> StoreResult<()> {
        self.execute(UPSERT_KEY, &[&key.kid, &key.created_at, &doc(key)?])
            .await
            .map(drop)
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT doc FROM signing_keys ORDER BY created_at, kid",
            &[],
            doc_of,
        )
        .await
    }

    async fn delete_signing_key(&self, kid: &str) -> StoreResult<()> {
        self.execute("DELETE FROM signing_keys WHERE kid = $1", &[&kid])
            .await
            .map(drop)
    }

    async fn put_oauth2_resource(&self, resource: &ProtectedResource) -> StoreResult<()> {
        self.execute(
            UPSERT_RESOURCE,
            &[&resource.id, &resource.created_at, &doc(resource)?],
        )
        .await
        .map(drop)
    }

    async fn oauth2_resources(&self) -> StoreResult<Vec<ProtectedResource>> {
        let client = self.client().await?;
        rows(
            &client,
            "SELECT doc FROM oauth2_resources ORDER BY created_at, id",
            &[],
            doc_of,
        )
        .await
    }

    async fn delete_oauth2_resource(&self, id: &str) -> StoreResult<bool> {
        Ok(self
            .execute("DELETE FROM oauth2_resources WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    async fn put_runtime_setting(&self, name: &str, value: &str) -> StoreResult<()> {
        self.execute(UPSERT_SETTING, &[&name, &value])
            .await
            .map(drop)
    }

    async fn runtime_setting(&self, name: &str) -> StoreResult<Option<String>> {
        let row = self
            .one(
                "SELECT value FROM runtime_settings WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn insert_git_ssh_key(&self, key: &GitSshKey) -> StoreResult<bool> {
        Ok(self
            .execute(
                "INSERT INTO git_ssh_keys (user_id, doc) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING",
                &[&key.user_id, &doc(key)?],
            )
            .await?
            > 0)
    }

    async fn put_git_ssh_key(&self, key: &GitSshKey) -> StoreResult<()> {
        self.execute(UPSERT_GIT_SSH_KEY, &[&key.user_id, &doc(key)?])
            .await
            .map(drop)
    }

    async fn git_ssh_key(&self, user_id: &str) -> StoreResult<Option<GitSshKey>> {
        let row = self
            .one(
                "SELECT doc FROM git_ssh_keys WHERE user_id = $1",
                &[&user_id],
            )
            .await?;
        row.as_ref().map(doc_of).transpose()
    }

    async fn delete_git_ssh_key(&self, user_id: &str) -> StoreResult<bool> {
        Ok(self
            .execute("DELETE FROM git_ssh_keys WHERE user_id = $1", &[&user_id])
            .await?
            > 0)
    }

    async fn use_once(&self, key: &str, expires_at: i64, now: i64) -> StoreResult<bool> {
        // One statement: a new mark, or one past its time taken over; the row comes back only
        // to the one writer that won.
        let won = self
            .execute(
                "INSERT INTO used_once (key, expires_at) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
                 WHERE used_once.expires_at <= $3",
                &[&key, &expires_at, &now],
            )
            .await?
            > 0;
        if won {
            self.execute(
                "DELETE FROM used_once WHERE key IN (SELECT key FROM used_once WHERE expires_at <= $1 LIMIT 64)",
                &[&now],
            )
            .await?;
        }
        Ok(won)
    }
}

/// Writes `items` a chunk at a time, each chunk's statements sent without waiting for the
/// previous answer (tokio-postgres pipelines what is awaited together on one connection): an
/// import of a million users' rows is then bound by the server, not by a round trip per row.
async fn pipelined<'a, T, F, Fut>(items: &'a [T], write: F) -> StoreResult<()>
where
    F: Fn(&'a T) -> Fut,
    Fut: std::future::Future<Output = StoreResult<()>>,
{
    for chunk in items.chunks(256) {
        futures_util::future::try_join_all(chunk.iter().map(&write)).await?;
    }
    Ok(())
}
