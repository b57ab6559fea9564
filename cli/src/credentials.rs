//! Where `extauth login` keeps the broker URL and API token: the token in the OS keyring when
//! a keyring service answers, else in a file only the user can read (mode 0600). The broker URL
//! (not secret) is kept in `config.json` beside it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

const SERVICE: &str = "extauth";

/// A signed-in broker.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credential {
    /// Broker URL.
    pub url: String,
    /// An API token, or the access token of a device login.
    pub token: String,
    /// The refresh token of a device login (the CLI then refreshes its access token itself).
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix seconds), for a device login.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// What is kept as the secret: the token alone (API tokens, as before), or the tokens of a
/// device login as JSON.
#[derive(Serialize, Deserialize)]
struct Secret {
    token: String,
    refresh_token: Option<String>,
    expires_at: Option<i64>,
}

impl Credential {
    fn secret(&self) -> String {
        match &self.refresh_token {
            None => self.token.clone(),
            Some(_) => serde_json::to_string(&Secret {
                token: self.token.clone(),
                refresh_token: self.refresh_token.clone(),
                expires_at: self.expires_at,
            })
            .unwrap_or_default(),
        }
    }

    fn from_secret(url: String, secret: String) -> Self {
        match serde_json::from_str::<Secret>(&secret) {
            Ok(s) if secret.starts_with('{') => Credential {
                url,
                token: s.token,
                refresh_token: s.refresh_token,
                expires_at: s.expires_at,
            },
            _ => Credential {
                url,
                token: secret,
                refresh_token: None,
                expires_at: None,
            },
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("url", &self.url)
            .field("token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where the token went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// The OS keyring.
    Keyring,
    /// The 0600 file at this path (no keyring service).
    File(PathBuf),
}

#[derive(Serialize, Deserialize, Default)]
struct Config {
    url: Option<String>,
    /// Present only when the token is not in the keyring.
    token: Option<String>,
}

/// `$EXTAUTH_CONFIG_DIR`, or `$XDG_CONFIG_HOME/extauth`, or `~/.config/extauth`.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EXTAUTH_CONFIG_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("extauth")
}

fn config_path() -> PathBuf {
    dir().join("config.json")
}

fn read_config() -> Config {
    std::fs::read_to_string(config_path())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn write_config(config: &Config) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir())?;
    let path = config_path();
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(
        serde_json::to_string_pretty(config)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

fn keyring_entry(url: &str) -> Option<keyring::Entry> {
    if std::env::var_os("EXTAUTH_NO_KEYRING").is_some() {
        return None;
    }
    keyring::Entry::new(SERVICE, url).ok()
}

/// Saves a credential; the keyring first, the 0600 file when no keyring service answers.
pub fn save(credential: &Credential) -> std::io::Result<Stored> {
    let secret = credential.secret();
    let in_keyring =
        keyring_entry(&credential.url).is_some_and(|e| e.set_password(&secret).is_ok());
    let config = Config {
        url: Some(credential.url.clone()),
        token: (!in_keyring).then_some(secret),
    };
    write_config(&config)?;
    Ok(if in_keyring {
        Stored::Keyring
    } else {
        Stored::File(config_path())
    })
}

/// The saved credential, if any.
pub fn load() -> Option<Credential> {
    let config = read_config();
    let url = config.url?;
    let secret = match config.token {
        Some(token) => token,
        None => keyring_entry(&url)?.get_password().ok()?,
    };
    Some(Credential::from_secret(url, secret))
}

/// Forgets the credential; whether there was one.
pub fn delete() -> std::io::Result<bool> {
    let config = read_config();
    let Some(url) = config.url else {
        return Ok(false);
    };
    if config.token.is_none() {
        if let Some(entry) = keyring_entry(&url) {
            let _ = entry.delete_credential();
        }
    }
    match std::fs::remove_file(config_path()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}
