//! Git over SSH (seed 001, "SSH Authentication"): one key pair per user, made on first use,
//! its private half sealed like every secret. The user adds the public key at their forge once;
//! workspaces fetch the pair with their token and `extauth gitssh` hands it to `ssh` for the
//! length of one command. Regenerating replaces it: the old key stops working wherever the new
//! one is added in its place.

pub mod openssh;

pub use openssh::{KeyAlgorithm, fingerprint};

use crate::clock::now;
use crate::failure::Failure;
use crate::state::AppState;
pub use crate::store::GitSshKey;
use crate::store::User;

/// What binds a sealed private key to its user.
pub fn private_key_purpose(user_id: &str) -> String {
    format!("gitsshkey:{user_id}:private")
}

async fn make(state: &AppState, user: &User, created_at: i64) -> Result<GitSshKey, Failure> {
    let algorithm = state.settings.git_ssh_algorithm;
    let comment = format!("extauth:{}", user.username);
    // RSA 4096 takes a while: not on the runtime's threads.
    let new = tokio::task::spawn_blocking(move || openssh::generate(algorithm, &comment))
        .await
        .map_err(|e| Failure::Internal(format!("making an SSH key: {e}")))?
        .map_err(|e| Failure::Internal(format!("making an SSH key: {e}")))?;
    Ok(GitSshKey {
        user_id: user.id.clone(),
        algorithm: algorithm.name().to_owned(),
        public_key: new.public_key,
        private_key: state
            .keys
            .seal(&private_key_purpose(&user.id), new.private_key.as_bytes()),
        created_at,
        updated_at: now(),
    })
}

/// The user's key, made now if they have none.
pub async fn key_of(state: &AppState, user: &User) -> Result<GitSshKey, Failure> {
    if let Some(key) = state.store.git_ssh_key(&user.id).await? {
        return Ok(key);
    }
    let key = make(state, user, now()).await?;
    if state.store.insert_git_ssh_key(&key).await? {
        tracing::info!(target: "extauth::audit", event = "gitsshkey.created", user = %user.id, algorithm = %key.algorithm, fingerprint = %fingerprint(&key.public_key), "made a git SSH key");
        return Ok(key);
    }
    // Made at the same moment elsewhere: that one is the key.
    state
        .store
        .git_ssh_key(&user.id)
        .await?
        .ok_or_else(|| Failure::Internal("a git SSH key vanished".to_owned()))
}

/// Replaces the user's key with a new one; the old one is gone for good.
pub async fn regenerate(state: &AppState, user: &User) -> Result<GitSshKey, Failure> {
    let created_at = state
        .store
        .git_ssh_key(&user.id)
        .await?
        .map_or_else(now, |k| k.created_at);
    let key = make(state, user, created_at).await?;
    state.store.put_git_ssh_key(&key).await?;
    tracing::info!(target: "extauth::audit", event = "gitsshkey.regenerated", user = %user.id, algorithm = %key.algorithm, fingerprint = %fingerprint(&key.public_key), "regenerated a git SSH key");
    Ok(key)
}

/// The private key file's text of the user's key (for their workspaces only).
pub struct PrivateKey(pub String);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey([redacted, {} bytes])", self.0.len())
    }
}

/// The key pair, the private half opened.
pub async fn pair_of(state: &AppState, user: &User) -> Result<(GitSshKey, PrivateKey), Failure> {
    let key = key_of(state, user).await?;
    let private = state
        .keys
        .open_string(&private_key_purpose(&user.id), &key.private_key)
        .map_err(|e| Failure::Internal(format!("opening the git SSH key: {e}")))?;
    Ok((key, PrivateKey(private)))
}
