//! Workload identity on the workspace side: with `EXTAUTH_IDENTITY_TOKEN_FILE` (a Kubernetes
//! projected service-account token, a CI job's ID token) the workspace holds no secret of
//! extauth's; the token in the file is exchanged at the broker's token endpoint (RFC 8693) for
//! a short-lived extauth token, which is then presented as a workspace token would be.
//!
//! The broker spends each workload token once, so helper processes must share what they got:
//! the exchanged token is kept in memory and in a 0600 cache file in the user's runtime
//! directory, and one process at a time exchanges (a lock file), the others reading what it
//! wrote. The file is read again at each exchange, so a token the kubelet rotated is taken.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// An exchanged token is renewed this long before it runs out.
const AHEAD: i64 = 30;
/// How long a process waits for another's exchange.
const LOCK_WAIT: Duration = Duration::from_secs(15);
/// A lock file older than this was left by a process that died.
const STALE_LOCK: Duration = Duration::from_secs(30);

/// An exchanged token and when it runs out (unix seconds).
#[derive(Clone, Serialize, Deserialize)]
pub struct Exchanged {
    /// The extauth access token.
    pub access_token: String,
    /// When it runs out.
    pub expires_at: i64,
}

impl std::fmt::Debug for Exchanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchanged")
            .field("access_token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Exchanged {
    fn fresh(&self, now: i64) -> bool {
        self.expires_at - AHEAD > now
    }
}

/// The workload's identity token file and what it was exchanged for.
#[derive(Debug)]
pub struct IdentityToken {
    /// The file (`EXTAUTH_IDENTITY_TOKEN_FILE`).
    pub path: PathBuf,
    cache: Option<PathBuf>,
    memory: Mutex<Option<Exchanged>>,
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Where the exchanged token is kept: `EXTAUTH_CACHE_DIR`, else `$XDG_RUNTIME_DIR/extauth`
/// (per user, in memory, gone at logout), else `~/.cache/extauth`; `None`: memory only.
pub fn cache_dir(get: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| {
        get(name)
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from)
    };
    set("EXTAUTH_CACHE_DIR")
        .or_else(|| set("XDG_RUNTIME_DIR").map(|d| d.join("extauth")))
        .or_else(|| set("HOME").map(|h| h.join(".cache").join("extauth")))
}

impl IdentityToken {
    /// The token in `path` for the broker at `url`, cached under `cache_dir`.
    pub fn new(path: PathBuf, url: &str, cache_dir: Option<PathBuf>) -> Self {
        let mut key = Sha256::new();
        key.update(url.as_bytes());
        key.update([0]);
        key.update(path.as_os_str().as_encoded_bytes());
        let name = file_name_of(key);
        Self {
            cache: cache_dir.map(|d| d.join(format!("workload-{name}.json"))),
            path,
            memory: Mutex::new(None),
        }
    }

    /// The workload token as the file holds it now.
    pub fn read(&self) -> Result<String, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("EXTAUTH_IDENTITY_TOKEN_FILE {}: {e}", self.path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!(
                "EXTAUTH_IDENTITY_TOKEN_FILE {} is empty",
                self.path.display()
            ));
        }
        Ok(token.to_owned())
    }

    fn remember(&self, exchanged: &Exchanged) {
        *self.memory.lock().unwrap_or_else(|e| e.into_inner()) = Some(exchanged.clone());
    }

    fn cached_file(&self) -> Option<Exchanged> {
        let text = std::fs::read_to_string(self.cache.as_ref()?).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write_cache(&self, exchanged: &Exchanged) {
        let Some(file) = &self.cache else {
            return;
        };
        // Best effort: without a cache file every process exchanges on its own.
        let _ = (|| -> std::io::Result<()> {
            let dir = file.parent().unwrap_or(Path::new("."));
            private_dir(dir)?;
            let temporary = file.with_extension(format!("tmp{}", std::process::id()));
            let mut out = private_file(&temporary)?;
            out.write_all(serde_json::to_string(exchanged)?.as_bytes())?;
            out.sync_all()?;
            std::fs::rename(&temporary, file)
        })();
    }

    /// The extauth token to present: the one in memory or in the cache file while it lives,
    /// else a new exchange by `exchange` (given the workload token). `refused` is a token the
    /// broker just refused, never handed out again.
    pub fn bearer<E>(
        &self,
        refused: Option<&str>,
        exchange: impl FnOnce(&str) -> Result<Exchanged, E>,
    ) -> Result<String, E>
    where
        E: From<String>,
    {
        let usable = |e: &Exchanged| e.fresh(now()) && Some(e.access_token.as_str()) != refused;
        if let Some(e) = self
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|e| usable(e))
        {
            return Ok(e.access_token.clone());
        }
        if let Some(e) = self.cached_file().filter(|e| usable(e)) {
            self.remember(&e);
            return Ok(e.access_token);
        }
        let _lock = self.lock();
        // Another process may have exchanged while this one waited.
        if let Some(e) = self.cached_file().filter(|e| usable(e)) {
            self.remember(&e);
            return Ok(e.access_token);
        }
        let workload = self.read().map_err(E::from)?;
        let exchanged = exchange(&workload)?;
        self.write_cache(&exchanged);
        self.remember(&exchanged);
        Ok(exchanged.access_token)
    }

    /// The exchange lock: a file made exclusively, removed when dropped; waited for up to
    /// [`LOCK_WAIT`], taken over when older than [`STALE_LOCK`]. `None` without a cache.
    fn lock(&self) -> Option<LockFile> {
        let path = self.cache.as_ref()?.with_extension("lock");
        private_dir(path.parent()?).ok()?;
        let started = std::time::Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Some(LockFile(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if started.elapsed() > LOCK_WAIT {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => return None,
            }
        }
    }
}

struct LockFile(PathBuf);

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A short name for a cache file or socket from what identifies it (12 bytes of its hash, in
/// hex): the same inputs find the same file, other inputs another.
pub(crate) fn file_name_of(key: Sha256) -> String {
    key.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes `dir` (and its parents) 0700 when missing.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("extauth-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn one_exchange_serves_every_process_until_it_runs_out() {
        let dir = scratch("share");
        let file = dir.join("token");
        std::fs::write(&file, "workload-1\n").unwrap();
        let first = IdentityToken::new(file.clone(), "http://b", Some(dir.join("cache")));
        let got = first
            .bearer::<String>(None, |w| {
                assert_eq!(w, "workload-1");
                Ok(Exchanged {
                    access_token: "x1".into(),
                    expires_at: now() + 600,
                })
            })
            .unwrap();
        assert_eq!(got, "x1");
        let cache = std::fs::read_dir(dir.join("cache"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .unwrap();
        assert_eq!(
            std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Another process (a new value) reads the file and does not exchange.
        let second = IdentityToken::new(file.clone(), "http://b", Some(dir.join("cache")));
        let got = second
            .bearer::<String>(None, |_| panic!("exchanged again"))
            .unwrap();
        assert_eq!(got, "x1");
        // Refused, or near its end: exchanged again with the file's current token.
        std::fs::write(&file, "workload-2").unwrap();
        let got = second
            .bearer::<String>(Some("x1"), |w| {
                assert_eq!(w, "workload-2");
                Ok(Exchanged {
                    access_token: "x2".into(),
                    expires_at: now() + 20,
                })
            })
            .unwrap();
        assert_eq!(got, "x2");
        let got = second
            .bearer::<String>(None, |_| {
                Ok(Exchanged {
                    access_token: "x3".into(),
                    expires_at: now() + 600,
                })
            })
            .unwrap();
        assert_eq!(got, "x3", "a token within 30 s of its end is renewed");
        // Another broker URL is another cache.
        let other = IdentityToken::new(file, "http://other", Some(dir.join("cache")));
        assert_ne!(other.cache, first.cache);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_or_empty_file_is_named() {
        let dir = scratch("missing");
        let token = IdentityToken::new(dir.join("nope"), "http://b", None);
        let e = token
            .bearer::<String>(None, |_| unreachable!())
            .unwrap_err();
        assert!(
            e.contains("EXTAUTH_IDENTITY_TOKEN_FILE") && e.contains("nope"),
            "{e}"
        );
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let token = IdentityToken::new(dir.join("empty"), "http://b", None);
        let e = token
            .bearer::<String>(None, |_| unreachable!())
            .unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
