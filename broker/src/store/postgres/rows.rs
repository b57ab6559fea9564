//! Rows to records and back: the SQL of each write and the mapping of each table's rows.

use super::*;

pub(super) const UPSERT_OIDC_CLAIMS: &str = "INSERT INTO oidc_claims (user_id, claims, updated_at)
     VALUES ($1, $2, $3)
     ON CONFLICT (user_id) DO UPDATE SET claims = $2, updated_at = $3";

pub(super) fn oidc_claims_of(row: &Row) -> StoreResult<OidcClaims> {
    Ok(OidcClaims {
        user_id: row.try_get("user_id").map_err(pg)?,
        claims: row.try_get("claims").map_err(pg)?,
        updated_at: row.try_get("updated_at").map_err(pg)?,
    })
}

pub(super) fn columns(sealed: Option<&Sealed>) -> (Option<&str>, Option<&str>) {
    match sealed {
        None => (None, None),
        Some(s) => (
            Some(s.data.as_str()),
            (!s.key_id.is_empty()).then_some(s.key_id.as_str()),
        ),
    }
}

pub(super) fn sealed_at(row: &Row, data: &str, key: &str) -> StoreResult<Option<Sealed>> {
    let data: Option<String> = row.try_get(data).map_err(pg)?;
    let key_id: Option<String> = row.try_get(key).map_err(pg)?;
    Ok(data.map(|data| Sealed {
        key_id: key_id.unwrap_or_default(),
        data,
    }))
}

pub(super) fn user_of(row: &Row) -> StoreResult<User> {
    user_at(row, "")
}

/// The user in `row` whose columns are named `<prefix><column>` (a join names them apart).
pub(super) fn user_at(row: &Row, prefix: &str) -> StoreResult<User> {
    let get = |column: &str| format!("{prefix}{column}");
    let issuer: Option<String> = row.try_get(get("oidc_issuer").as_str()).map_err(pg)?;
    let subject: Option<String> = row.try_get(get("oidc_subject").as_str()).map_err(pg)?;
    Ok(User {
        id: row.try_get(get("id").as_str()).map_err(pg)?,
        username: row.try_get(get("username").as_str()).map_err(pg)?,
        email: row.try_get(get("email").as_str()).map_err(pg)?,
        name: row.try_get(get("name").as_str()).map_err(pg)?,
        is_admin: row.try_get(get("is_admin").as_str()).map_err(pg)?,
        oidc: issuer
            .zip(subject)
            .map(|(issuer, subject)| OidcIdentity { issuer, subject }),
        created_at: row.try_get(get("created_at").as_str()).map_err(pg)?,
    })
}

/// A token, its user (`u_` columns) and every link of the user (`l_` columns; one row each,
/// null when there is none), sorted by provider and account: a lookup that misses the cache
/// then needs one round trip, not two.
pub(super) const TOKEN_USER_AND_LINKS: &str = "SELECT t.*, u.id AS u_id, u.username AS u_username,
     u.email AS u_email, u.name AS u_name, u.is_admin AS u_is_admin,
     u.oidc_issuer AS u_oidc_issuer, u.oidc_subject AS u_oidc_subject,
     u.created_at AS u_created_at,
     l.user_id AS l_user_id, l.provider_id AS l_provider_id, l.account AS l_account,
     l.is_default AS l_is_default, l.owners AS l_owners,
     l.access_token AS l_access_token, l.access_token_key_id AS l_access_token_key_id,
     l.refresh_token AS l_refresh_token, l.refresh_token_key_id AS l_refresh_token_key_id,
     l.expires_at AS l_expires_at, l.extra AS l_extra, l.extra_key_id AS l_extra_key_id,
     l.refresh_failure AS l_refresh_failure, l.needs_validation AS l_needs_validation,
     l.created_at AS l_created_at, l.updated_at AS l_updated_at,
     l.refresh_expires_at AS l_refresh_expires_at
     FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id
     LEFT JOIN external_auth_links l ON l.user_id = u.id
     WHERE t.id = $1 ORDER BY l.provider_id, l.account";

pub(super) fn session_of(row: &Row) -> StoreResult<Session> {
    let oidc: bool = row.try_get("oidc").map_err(pg)?;
    Ok(Session {
        id_hash: row.try_get("id_hash").map_err(pg)?,
        user_id: row.try_get("user_id").map_err(pg)?,
        csrf: row.try_get("csrf").map_err(pg)?,
        created_at: row.try_get("created_at").map_err(pg)?,
        expires_at: row.try_get("expires_at").map_err(pg)?,
        oidc: if oidc {
            Some(OidcSession {
                sid: row.try_get("oidc_sid").map_err(pg)?,
                id_token: sealed_at(row, "oidc_id_token", "oidc_id_token_key_id")?,
                refresh_token: sealed_at(row, "oidc_refresh_token", "oidc_refresh_token_key_id")?,
            })
        } else {
            None
        },
    })
}

pub(super) fn kind_name(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Api => "api",
        TokenKind::Workspace => "workspace",
    }
}

pub(super) fn token_of(row: &Row) -> StoreResult<TokenRecord> {
    let kind: String = row.try_get("kind").map_err(pg)?;
    Ok(TokenRecord {
        id: row.try_get("id").map_err(pg)?,
        kind: match kind.as_str() {
            "api" => TokenKind::Api,
            "workspace" => TokenKind::Workspace,
            other => return Err(StoreError::Corrupt(format!("token kind {other:?}"))),
        },
        user_id: row.try_get("user_id").map_err(pg)?,
        name: row.try_get("name").map_err(pg)?,
        secret_hash: row.try_get("secret_hash").map_err(pg)?,
        providers: row.try_get("providers").map_err(pg)?,
        created_at: row.try_get("created_at").map_err(pg)?,
        expires_at: row.try_get("expires_at").map_err(pg)?,
    })
}

pub(super) fn link_of(row: &Row) -> StoreResult<LinkRecord> {
    link_at(row, "")
}

/// The link in `row` whose columns are named `<prefix><column>` (a join names them apart).
pub(super) fn link_at(row: &Row, prefix: &str) -> StoreResult<LinkRecord> {
    let get = |column: &str| format!("{prefix}{column}");
    let sealed = |data: &str| sealed_at(row, &get(data), &get(&format!("{data}_key_id")));
    Ok(LinkRecord {
        user_id: row.try_get(get("user_id").as_str()).map_err(pg)?,
        provider_id: row.try_get(get("provider_id").as_str()).map_err(pg)?,
        account: row.try_get(get("account").as_str()).map_err(pg)?,
        is_default: row.try_get(get("is_default").as_str()).map_err(pg)?,
        owners: serde_json::from_str(row.try_get::<_, &str>(get("owners").as_str()).map_err(pg)?)
            .map_err(|e| StoreError::Corrupt(format!("link owners: {e}")))?,
        access_token: sealed("access_token")?
            .ok_or_else(|| StoreError::Corrupt("link without access token".into()))?,
        refresh_token: sealed("refresh_token")?,
        expires_at: row.try_get(get("expires_at").as_str()).map_err(pg)?,
        extra: sealed("extra")?,
        refresh_failure: row.try_get(get("refresh_failure").as_str()).map_err(pg)?,
        needs_validation: row.try_get(get("needs_validation").as_str()).map_err(pg)?,
        created_at: row.try_get(get("created_at").as_str()).map_err(pg)?,
        updated_at: row.try_get(get("updated_at").as_str()).map_err(pg)?,
        refresh_expires_at: row
            .try_get(get("refresh_expires_at").as_str())
            .map_err(pg)?,
    })
}

pub(super) fn device_flow_of(row: &Row) -> StoreResult<DeviceFlowRecord> {
    Ok(DeviceFlowRecord {
        code_hash: row.try_get("code_hash").map_err(pg)?,
        user_id: row.try_get("user_id").map_err(pg)?,
        provider_id: row.try_get("provider_id").map_err(pg)?,
        interval_ms: row.try_get("interval_ms").map_err(pg)?,
        next_poll_ms: row.try_get("next_poll_ms").map_err(pg)?,
        expires_ms: row.try_get("expires_ms").map_err(pg)?,
    })
}

pub(super) fn login_flow_of(row: &Row) -> StoreResult<LoginFlow> {
    Ok(LoginFlow {
        state_hash: row.try_get("state_hash").map_err(pg)?,
        binding_hash: row.try_get("binding_hash").map_err(pg)?,
        user_id: row.try_get("user_id").map_err(pg)?,
        purpose: row.try_get("purpose").map_err(pg)?,
        verifier: sealed_at(row, "verifier", "verifier_key_id")?,
        nonce: row.try_get("nonce").map_err(pg)?,
        redirect: row.try_get("redirect").map_err(pg)?,
        expires_ms: row.try_get("expires_ms").map_err(pg)?,
    })
}

pub(super) fn pending_of(row: &Row) -> StoreResult<PendingRevocation> {
    let attempts: i32 = row.try_get("attempts").map_err(pg)?;
    Ok(PendingRevocation {
        id: row.try_get("id").map_err(pg)?,
        user_id: row.try_get("user_id").map_err(pg)?,
        provider_id: row.try_get("provider_id").map_err(pg)?,
        access_token: sealed_at(row, "access_token", "access_token_key_id")?
            .ok_or_else(|| StoreError::Corrupt("revocation without access token".into()))?,
        refresh_token: sealed_at(row, "refresh_token", "refresh_token_key_id")?,
        attempts: u32::try_from(attempts).unwrap_or_default(),
        next_attempt_at: row.try_get("next_attempt_at").map_err(pg)?,
        last_error: row.try_get("last_error").map_err(pg)?,
        created_at: row.try_get("created_at").map_err(pg)?,
    })
}

pub(super) const INSERT_USER: &str =
    "INSERT INTO users (id, username, email, name, is_admin, oidc_issuer, oidc_subject, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(super) const UPSERT_SESSION: &str =
    "INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at, oidc, oidc_sid,
         oidc_id_token, oidc_id_token_key_id, oidc_refresh_token, oidc_refresh_token_key_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (id_hash) DO UPDATE SET user_id = $2, csrf = $3, created_at = $4, expires_at = $5,
         oidc = $6, oidc_sid = $7, oidc_id_token = $8, oidc_id_token_key_id = $9,
         oidc_refresh_token = $10, oidc_refresh_token_key_id = $11";
pub(super) const INSERT_TOKEN: &str = "INSERT INTO api_tokens (id, kind, user_id, name, secret_hash, providers, created_at, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(super) const UPSERT_LINK: &str =
    "INSERT INTO external_auth_links (user_id, provider_id, access_token, access_token_key_id,
         refresh_token, refresh_token_key_id, expires_at, extra, extra_key_id, refresh_failure,
         needs_validation, created_at, updated_at, refresh_expires_at, account, is_default,
         owners)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
     ON CONFLICT (user_id, provider_id, account) DO UPDATE SET access_token = $3,
         access_token_key_id = $4, refresh_token = $5, refresh_token_key_id = $6,
         expires_at = $7, extra = $8, extra_key_id = $9, refresh_failure = $10,
         needs_validation = $11, created_at = $12, updated_at = $13, refresh_expires_at = $14,
         is_default = $16, owners = $17";
pub(super) const UPSERT_PENDING: &str =
    "INSERT INTO pending_revocations (id, user_id, provider_id, access_token, access_token_key_id,
         refresh_token, refresh_token_key_id, attempts, next_attempt_at, last_error, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (id) DO UPDATE SET user_id = $2, provider_id = $3, access_token = $4,
         access_token_key_id = $5, refresh_token = $6, refresh_token_key_id = $7, attempts = $8,
         next_attempt_at = $9, last_error = $10, created_at = $11";

/// Inserts `user` with `sql` (a plain insert, or one replacing by id).
pub(super) async fn write_user(
    client: &impl deadpool_postgres::GenericClient,
    sql: &str,
    user: &User,
) -> StoreResult<()> {
    let oidc = user.oidc.as_ref();
    client
        .execute(
            sql,
            &[
                &user.id,
                &user.username,
                &user.email,
                &user.name,
                &user.is_admin,
                &oidc.map(|o| o.issuer.as_str()),
                &oidc.map(|o| o.subject.as_str()),
                &user.created_at,
            ],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

/// Every row of a query, converted.
pub(super) async fn rows<T>(
    client: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    convert: impl Fn(&Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    client
        .query(sql, params)
        .await
        .map_err(pg)?
        .iter()
        .map(convert)
        .collect()
}

/// Announces a link change to every replica when the transaction commits.
pub(super) async fn notify(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: &str,
    provider_id: &str,
) -> StoreResult<()> {
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &format!("{user_id}\n{provider_id}")],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// A record kept whole as JSON in a `doc` column (the authorization server's records: read by
/// key, never queried by their fields beyond the indexed columns beside them).
pub(super) fn doc<T: serde::Serialize>(record: &T) -> StoreResult<String> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The record in a row's `doc` column.
pub(super) fn doc_of<T: serde::de::DeserializeOwned>(row: &Row) -> StoreResult<T> {
    let text: String = row.try_get("doc").map_err(pg)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) const UPSERT_APP: &str =
    "INSERT INTO oauth2_apps (id, created_at, doc) VALUES ($1, $2, $3)
     ON CONFLICT (id) DO UPDATE SET created_at = $2, doc = $3";
pub(super) const UPSERT_GRANT: &str =
    "INSERT INTO oauth2_grants (user_id, app_id, doc) VALUES ($1, $2, $3)
     ON CONFLICT (user_id, app_id) DO UPDATE SET doc = $3";
pub(super) const INSERT_FAMILY: &str =
    "INSERT INTO oauth2_families (id, app_id, user_id, secret_id, refresh_hash, expires_at, doc)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(super) const UPSERT_RESOURCE: &str =
    "INSERT INTO oauth2_resources (id, created_at, doc) VALUES ($1, $2, $3)
     ON CONFLICT (id) DO UPDATE SET created_at = $2, doc = $3";
pub(super) const UPSERT_SETTING: &str = "INSERT INTO runtime_settings (name, value) VALUES ($1, $2)
     ON CONFLICT (name) DO UPDATE SET value = $2";
pub(super) const UPSERT_GIT_SSH_KEY: &str =
    "INSERT INTO git_ssh_keys (user_id, doc) VALUES ($1, $2)
     ON CONFLICT (user_id) DO UPDATE SET doc = $2";
pub(super) const UPSERT_KEY: &str =
    "INSERT INTO signing_keys (kid, created_at, doc) VALUES ($1, $2, $3)
     ON CONFLICT (kid) DO UPDATE SET created_at = $2, doc = $3";

/// Writes a family (insert, or replace by id with `upsert`).
pub(super) async fn write_family(
    client: &impl deadpool_postgres::GenericClient,
    family: &OAuth2Family,
    upsert: bool,
) -> StoreResult<u64> {
    let sql = if upsert {
        format!(
            "{INSERT_FAMILY} ON CONFLICT (id) DO UPDATE SET app_id = $2, user_id = $3, secret_id = $4,
             refresh_hash = $5, expires_at = $6, doc = $7"
        )
    } else {
        INSERT_FAMILY.to_owned()
    };
    client
        .execute(
            &sql,
            &[
                &family.id,
                &family.app_id,
                &family.user_id,
                &family.secret_id,
                &family.refresh_hash,
                &family.expires_at,
                &doc(family)?,
            ],
        )
        .await
        .map_err(pg)
}

/// A device decision as stored.
pub(super) fn decision_name(decision: DeviceDecision) -> &'static str {
    match decision {
        DeviceDecision::Pending => "pending",
        DeviceDecision::Approved => "approved",
        DeviceDecision::Denied => "denied",
        DeviceDecision::Redeemed => "redeemed",
    }
}
