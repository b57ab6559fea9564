//! A whole embedded store at once: read for `store migrate` and `dbcrypt`, written back by them.

use super::*;

impl SledStore {
    /// Everything stored, sorted (`store migrate`, `dbcrypt`).
    pub(super) fn read_snapshot(&self) -> StoreResult<Snapshot> {
        fn all<T: DeserializeOwned>(tree: &sled::Tree) -> StoreResult<Vec<T>> {
            tree.iter().map(|entry| decode(&entry?.1)).collect()
        }
        Ok(Snapshot {
            users: all(&self.users)?,
            sessions: all(&self.sessions)?,
            tokens: all(&self.tokens)?,
            links: self
                .links
                .iter()
                .map(|entry| decode_link(&entry?.1))
                .collect::<StoreResult<_>>()?,
            pending_revocations: all(&self.revocations)?,
            revoked_keys: self
                .revoked_keys
                .iter()
                .keys()
                .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
                .collect::<StoreResult<_>>()?,
            oidc_claims: all(&self.oidc_claims)?,
            oauth2_apps: all(&self.oauth2_apps)?,
            oauth2_grants: all(&self.oauth2_grants)?,
            oauth2_families: all(&self.oauth2_families)?,
            signing_keys: all(&self.signing_keys)?,
            oauth2_resources: all(&self.oauth2_resources)?,
            git_ssh_keys: all(&self.git_ssh_keys)?,
            runtime_settings: self
                .runtime_settings
                .iter()
                .map(|entry| {
                    let (k, v) = entry?;
                    Ok((
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    ))
                })
                .collect::<StoreResult<_>>()?,
        }
        .sorted())
    }

    /// Writes every record of `snapshot`, replacing what has the same keys and keeping the
    /// username and identity indexes true.
    pub(super) async fn write_snapshot(&self, snapshot: &Snapshot) -> StoreResult<()> {
        for user in &snapshot.users {
            let taken = |index: &sled::Tree, key: &[u8]| -> StoreResult<bool> {
                Ok(index.get(key)?.is_some_and(|id| id != user.id.as_bytes()))
            };
            if taken(&self.usernames, user.username.as_bytes())? {
                return Err(StoreError::Conflict("username"));
            }
            let identity = user
                .oidc
                .as_ref()
                .map(|o| identity_key(&o.issuer, &o.subject));
            if let Some(key) = &identity {
                if taken(&self.identities, key)? {
                    return Err(StoreError::Conflict("OIDC identity"));
                }
                self.identities.insert(key.as_slice(), user.id.as_bytes())?;
            }
            // A user renamed (or re-identified) since the last import frees the old entries.
            if let Some(previous) = Self::get::<User>(&self.users, user.id.as_bytes())? {
                let mine = user.id.as_bytes();
                // Only where the entry is still this user's (a failed swap: someone else's).
                if previous.username != user.username {
                    let _ = self.usernames.compare_and_swap(
                        previous.username.as_bytes(),
                        Some(mine),
                        None::<&[u8]>,
                    )?;
                }
                let previous_identity = previous
                    .oidc
                    .as_ref()
                    .map(|o| identity_key(&o.issuer, &o.subject));
                if let Some(old) = previous_identity.filter(|old| Some(old) != identity.as_ref()) {
                    let _ = self.identities.compare_and_swap(
                        old.as_slice(),
                        Some(mine),
                        None::<&[u8]>,
                    )?;
                }
            }
            self.usernames
                .insert(user.username.as_bytes(), user.id.as_bytes())?;
            self.users.insert(user.id.as_bytes(), encode(user)?)?;
        }
        for session in &snapshot.sessions {
            self.sessions
                .insert(session.id_hash.as_bytes(), encode(session)?)?;
        }
        for token in &snapshot.tokens {
            self.tokens.insert(token.id.as_bytes(), encode(token)?)?;
        }
        for link in &snapshot.links {
            self.note_link_keys(link)?;
            self.links.insert(
                link_key(&link.user_id, &link.provider_id, &link.account),
                encode_link(link)?,
            )?;
        }
        for pending in &snapshot.pending_revocations {
            self.revocations
                .insert(pending.id.as_bytes(), encode(pending)?)?;
        }
        for id in &snapshot.revoked_keys {
            self.revoked_keys.insert(id.as_bytes(), &[])?;
        }
        for claims in &snapshot.oidc_claims {
            self.oidc_claims
                .insert(claims.user_id.as_bytes(), encode(claims)?)?;
        }
        for app in &snapshot.oauth2_apps {
            self.oauth2_apps.insert(app.id.as_bytes(), encode(app)?)?;
        }
        for grant in &snapshot.oauth2_grants {
            self.oauth2_grants
                .insert(pair_key(&grant.user_id, &grant.app_id), encode(grant)?)?;
        }
        for family in &snapshot.oauth2_families {
            self.oauth2_families
                .insert(family.id.as_bytes(), encode(family)?)?;
        }
        for key in &snapshot.signing_keys {
            self.signing_keys.insert(key.kid.as_bytes(), encode(key)?)?;
        }
        for resource in &snapshot.oauth2_resources {
            self.oauth2_resources
                .insert(resource.id.as_bytes(), encode(resource)?)?;
        }
        for key in &snapshot.git_ssh_keys {
            self.git_ssh_keys
                .insert(key.user_id.as_bytes(), encode(key)?)?;
        }
        for (name, value) in &snapshot.runtime_settings {
            self.runtime_settings
                .insert(name.as_bytes(), value.as_bytes())?;
        }
        self.flush().await
    }
}
