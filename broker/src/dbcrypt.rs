//! `extauth-broker dbcrypt rotate|decrypt|delete`: re-encrypting what is stored, as Coder's
//! commands of the same names do (research §6.2).
//!
//! - `rotate` seals every value with the first key of the ring, then marks every other key
//!   revoked; the broker refuses to start with a revoked encrypting key or with data sealed by
//!   a revoked key.
//! - `decrypt` stores every value in plaintext (to leave extauth, or to change keys by hand)
//!   and revokes every key.
//! - `delete` removes everything encrypted (links, pending revocations, OIDC sessions) and
//!   revokes every key: users link again.
//!
//! Each works on a snapshot and writes back record by record; a link that changes meanwhile is
//! reported, not overwritten. The CLI runs them only when no replica serves (Coder only asks
//! for that): it takes `SERVING_LOCK`, which every serving replica holds shared.

use std::collections::BTreeSet;

use crate::crypto::{CryptoError, KeyRing, Sealed};
use crate::link_secrets::purpose;
use crate::oauth2::{retry_purpose, signing_key_purpose};
use crate::oidc::session_purpose;
use crate::store::{Store, StoreError};

/// Why a dbcrypt command stopped.
#[derive(Debug, thiserror::Error)]
pub enum DbcryptError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A value cannot be opened with the given keys.
    #[error("{what}: {source}")]
    Crypto {
        /// Which value.
        what: String,
        /// Why.
        source: CryptoError,
    },
    /// A link changed while the command ran (a replica is still running).
    #[error(
        "the link of user {user} to {provider} changed while this ran; stop every broker replica and run the command again"
    )]
    Changed {
        /// Whose link.
        user: String,
        /// Which provider.
        provider: String,
    },
    /// An app's token family was refreshed while the command ran.
    #[error(
        "the OAuth2 token family {family} was refreshed while this ran; stop every broker replica and run the command again"
    )]
    FamilyChanged {
        /// Which family.
        family: String,
    },
}

/// What a command did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Values rewritten (rotate, decrypt) or records deleted (delete).
    pub changed: u64,
    /// Values already as wanted.
    pub unchanged: u64,
    /// Key ids now revoked.
    pub revoked: Vec<String>,
}

/// What to do with each sealed value.
enum Action<'a> {
    Rotate(&'a KeyRing),
    Decrypt(&'a KeyRing),
}

impl Action<'_> {
    fn apply(
        &self,
        what: &str,
        purpose: &str,
        value: &Sealed,
        report: &mut Report,
    ) -> Result<Sealed, DbcryptError> {
        let crypto = |source| DbcryptError::Crypto {
            what: what.to_owned(),
            source,
        };
        let (ring, done) = match self {
            Action::Rotate(ring) => (ring, ring.key_ids().first() == Some(&value.key_id.as_str())),
            Action::Decrypt(ring) => (ring, value.is_plaintext()),
        };
        if done {
            report.unchanged += 1;
            return Ok(value.clone());
        }
        let plain = ring.open(purpose, value).map_err(crypto)?;
        report.changed += 1;
        Ok(match self {
            Action::Rotate(ring) => ring.seal(purpose, &plain),
            Action::Decrypt(_) => Sealed::plaintext(&plain),
        })
    }

    fn optional(
        &self,
        what: &str,
        purpose: &str,
        value: Option<&Sealed>,
        report: &mut Report,
    ) -> Result<Option<Sealed>, DbcryptError> {
        value
            .map(|v| self.apply(what, purpose, v, report))
            .transpose()
    }
}

/// Every key id that sealed something, plus the ring's.
async fn keys_in_use(
    store: &dyn Store,
    ring: Option<&KeyRing>,
) -> Result<BTreeSet<String>, DbcryptError> {
    let mut ids = store.encryption_key_ids().await?;
    if let Some(ring) = ring {
        ids.extend(ring.key_ids().iter().map(|s| (*s).to_owned()));
    }
    Ok(ids)
}

async fn rewrite(store: &dyn Store, action: &Action<'_>) -> Result<Report, DbcryptError> {
    let mut report = Report::default();
    let snapshot = store.snapshot().await?;
    for link in snapshot.links {
        let (user, provider) = (link.user_id.clone(), link.provider_id.clone());
        let what = |field: &str| format!("link of user {user} to {provider} ({field})");
        let mut new = link.clone();
        new.access_token = action.apply(
            &what("access token"),
            &purpose(&user, &provider, "access"),
            &link.access_token,
            &mut report,
        )?;
        new.refresh_token = action.optional(
            &what("refresh token"),
            &purpose(&user, &provider, "refresh"),
            link.refresh_token.as_ref(),
            &mut report,
        )?;
        new.extra = action.optional(
            &what("extra fields"),
            &purpose(&user, &provider, "extra"),
            link.extra.as_ref(),
            &mut report,
        )?;
        if new != link
            && !store
                .replace_link_if(&new, link.refresh_token.as_ref())
                .await?
        {
            return Err(DbcryptError::Changed { user, provider });
        }
    }
    for pending in snapshot.pending_revocations {
        let (user, provider) = (pending.user_id.clone(), pending.provider_id.clone());
        let what = format!("pending revocation {}", pending.id);
        let mut new = pending.clone();
        new.access_token = action.apply(
            &what,
            &purpose(&user, &provider, "access"),
            &pending.access_token,
            &mut report,
        )?;
        new.refresh_token = action.optional(
            &what,
            &purpose(&user, &provider, "refresh"),
            pending.refresh_token.as_ref(),
            &mut report,
        )?;
        if new != pending {
            store.put_pending_revocation(&new).await?;
        }
    }
    for session in snapshot.sessions {
        let Some(oidc) = &session.oidc else { continue };
        let what = format!("session of user {}", session.user_id);
        let mut new = session.clone();
        if let Some(new_oidc) = new.oidc.as_mut() {
            new_oidc.id_token = action.optional(
                &what,
                &session_purpose(&session.user_id, "id_token"),
                oidc.id_token.as_ref(),
                &mut report,
            )?;
            new_oidc.refresh_token = action.optional(
                &what,
                &session_purpose(&session.user_id, "refresh_token"),
                oidc.refresh_token.as_ref(),
                &mut report,
            )?;
        }
        if new != session {
            store.put_session(&new).await?;
        }
    }
    for family in snapshot.oauth2_families {
        let mut new = family.clone();
        new.retry_answer = action.optional(
            &format!("OAuth2 token family {}", family.id),
            &retry_purpose(&family.id),
            family.retry_answer.as_ref(),
            &mut report,
        )?;
        if new != family
            && !store
                .replace_oauth2_family_if(&new, &family.refresh_hash)
                .await?
        {
            return Err(DbcryptError::FamilyChanged { family: family.id });
        }
    }
    for key in snapshot.signing_keys {
        let mut new = key.clone();
        new.private_key = action.apply(
            &format!("signing key {}", key.kid),
            &signing_key_purpose(&key.kid),
            &key.private_key,
            &mut report,
        )?;
        if new != key {
            store.put_signing_key(&new).await?;
        }
    }
    for key in snapshot.git_ssh_keys {
        let mut new = key.clone();
        new.private_key = action.apply(
            &format!("git SSH key of user {}", key.user_id),
            &crate::git_ssh::private_key_purpose(&key.user_id),
            &key.private_key,
            &mut report,
        )?;
        if new != key {
            store.put_git_ssh_key(&new).await?;
        }
    }
    Ok(report)
}

/// Seals everything with the ring's first key and revokes the others.
pub async fn rotate(store: &dyn Store, ring: &KeyRing, now: i64) -> Result<Report, DbcryptError> {
    let before = keys_in_use(store, Some(ring)).await?;
    let mut report = rewrite(store, &Action::Rotate(ring)).await?;
    let current = ring.key_ids().first().map(|s| (*s).to_owned());
    report.revoked = before
        .into_iter()
        .filter(|id| Some(id) != current.as_ref())
        .collect();
    store.revoke_key_ids(&report.revoked, now).await?;
    Ok(report)
}

/// Stores everything in plaintext and revokes every key.
pub async fn decrypt(store: &dyn Store, ring: &KeyRing, now: i64) -> Result<Report, DbcryptError> {
    let before = keys_in_use(store, Some(ring)).await?;
    let mut report = rewrite(store, &Action::Decrypt(ring)).await?;
    report.revoked = before.into_iter().collect();
    store.revoke_key_ids(&report.revoked, now).await?;
    Ok(report)
}

/// Deletes everything encrypted and revokes every key that sealed it (and the ring's, if
/// given).
pub async fn delete(
    store: &dyn Store,
    ring: Option<&KeyRing>,
    now: i64,
) -> Result<Report, DbcryptError> {
    let before = keys_in_use(store, ring).await?;
    let mut report = Report::default();
    let snapshot = store.snapshot().await?;
    for link in snapshot.links {
        if store
            .delete_link(&link.user_id, &link.provider_id, &link.account)
            .await?
            .is_some()
        {
            report.changed += 1;
        }
    }
    for pending in snapshot.pending_revocations {
        if store.delete_pending_revocation(&pending.id).await? {
            report.changed += 1;
        }
    }
    for session in snapshot.sessions {
        let sealed = session
            .oidc
            .as_ref()
            .is_some_and(|o| o.id_token.is_some() || o.refresh_token.is_some());
        if sealed {
            store.delete_session(&session.id_hash).await?;
            report.changed += 1;
        }
    }
    // A family's kept answer goes (the family stays); signing keys go and are made anew at the
    // next start, which ends the access tokens they signed.
    for family in snapshot.oauth2_families {
        if family.retry_answer.is_some() {
            let new = crate::store::OAuth2Family {
                retry_answer: None,
                ..family.clone()
            };
            if store
                .replace_oauth2_family_if(&new, &family.refresh_hash)
                .await?
            {
                report.changed += 1;
            }
        }
    }
    for key in snapshot.signing_keys {
        store.delete_signing_key(&key.kid).await?;
        report.changed += 1;
    }
    // Users' git SSH keys go too; each is made anew at its next use (and must be added at the
    // forge again).
    for key in snapshot.git_ssh_keys {
        if store.delete_git_ssh_key(&key.user_id).await? {
            report.changed += 1;
        }
    }
    report.revoked = before.into_iter().collect();
    store.revoke_key_ids(&report.revoked, now).await?;
    Ok(report)
}
