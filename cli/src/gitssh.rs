//! Git over SSH with the user's broker-managed key: `extauth publickey` shows it, `extauth
//! gitssh -- <ssh args>` (git's `core.sshCommand`) runs `ssh` with it. As Coder's `gitssh` does,
//! the identities the user's own `~/.ssh/config` names for the host come first, and the key
//! exists on disk only while the command runs: a 0600 file in a private 0700 directory of the
//! user's runtime directory, removed when `ssh` ends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use extauth_git_askpass::workspace::{Client, api_error};
use serde_json::Value;

use crate::{Failure, Outcome, terminal_safe};

/// The key pair, as the workspace's token may fetch it.
fn key_pair(client: &Client) -> Result<Value, Failure> {
    let (status, body) = client.send(
        "GET",
        "/api/v2/workspaceagents/me/gitsshkey",
        &[],
        None,
        None,
    )?;
    if status != 200 {
        return Err(api_error(status, &body).into());
    }
    serde_json::from_str(&body).map_err(|e| Failure(format!("unreadable answer: {e}"), 1))
}

/// `extauth publickey`: the public key on stdout; where to add it on stderr.
pub fn publickey(client: &Client, out: &mut dyn Write) -> Outcome {
    // A workspace token reads the pair; a user's own login reads their key directly.
    let (status, body) = client.send("GET", "/api/v2/users/me/gitsshkey", &[], None, None)?;
    let key: Value = if status == 200 {
        serde_json::from_str(&body).unwrap_or_default()
    } else {
        key_pair(client)?
    };
    let public = key["public_key"].as_str().unwrap_or_default();
    if public.is_empty() {
        return Err(Failure(
            "the broker answered without a public key".to_owned(),
            1,
        ));
    }
    let _ = writeln!(out, "{}", terminal_safe(public));
    let (status, body) = client.send(
        "GET",
        "/api/v2/workspaceagents/me/git-config",
        &[],
        None,
        None,
    )?;
    if status == 200 {
        let config: Value = serde_json::from_str(&body).unwrap_or_default();
        let pages: Vec<String> = config["providers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(format!(
                    "  {}: {}",
                    terminal_safe(p["display_name"].as_str().or(p["id"].as_str())?),
                    terminal_safe(p["ssh_keys_url"].as_str()?)
                ))
            })
            .collect();
        if !pages.is_empty() {
            eprintln!("Add it at:\n{}", pages.join("\n"));
        }
    }
    Ok(())
}

/// Where the key goes for the command's length: `$XDG_RUNTIME_DIR` (private to the user, in
/// memory on most systems), else the temporary directory.
fn runtime_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// A private directory holding the key file; removed (with the key) when dropped.
struct KeyFile {
    dir: PathBuf,
    path: PathBuf,
}

impl KeyFile {
    fn write(private_key: &str) -> Result<Self, Failure> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| Failure(format!("no randomness: {e}"), 1))?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = runtime_dir().join(format!("extauth-gitssh-{}-{name}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Failure(format!("cannot make {}: {e}", dir.display()), 1))?;
        let file = Self {
            path: dir.join("id"),
            dir,
        };
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file.path)
            .map_err(|e| Failure(format!("cannot write the key: {e}"), 1))?;
        handle
            .write_all(private_key.as_bytes())
            .map_err(|e| Failure(format!("cannot write the key: {e}"), 1))?;
        Ok(file)
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `ssh` options that take a value (so the host is the first argument after them).
const WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";

/// The destination among ssh's arguments (`[user@]host` or `ssh://…`), with `-p` if given.
fn destination(args: &[String]) -> Option<&str> {
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            return args.get(i + 1).map(String::as_str);
        }
        if let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) {
            // `-p 22` takes the next argument; `-p22` and `-46` do not.
            if let Some(last) = flags.chars().last() {
                if flags.len() == 1 && WITH_VALUE.contains(last) {
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        return Some(arg);
    }
    None
}

/// The identity files the user's ssh configuration names for `host` that exist (`ssh -G`
/// resolves `Host` blocks, `~` and `%` tokens as ssh itself would).
fn own_identities(ssh: &str, host: &str) -> Vec<PathBuf> {
    let Ok(output) = Command::new(ssh).args(["-G", host]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("identityfile "))
        .map(|p| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            match p.strip_prefix("~/") {
                Some(rest) => home.join(rest),
                None => PathBuf::from(p),
            }
        })
        .filter(|p| p.is_file())
        .collect()
}

/// `extauth gitssh -- <ssh args>`: ssh with the user's key, its exit code passed on.
pub fn run(client: &Client, args: &[String]) -> Outcome {
    let pair = key_pair(client)?;
    let Some(private) = pair["private_key"].as_str().filter(|k| !k.is_empty()) else {
        return Err(Failure(
            "the broker gave no private key: `extauth gitssh` needs the workspace's token (EXTAUTH_TOKEN)".to_owned(),
            1,
        ));
    };
    let ssh = std::env::var("EXTAUTH_SSH").unwrap_or_else(|_| "ssh".to_owned());
    let key = KeyFile::write(private)?;
    let mut command = Command::new(&ssh);
    if let Some(host) = destination(args) {
        for own in own_identities(&ssh, host) {
            command.arg("-i").arg(own);
        }
    }
    command.arg("-i").arg(&key.path).args(args);
    let status = command
        .status()
        .map_err(|e| Failure(format!("cannot run {ssh}: {e}"), 1))?;
    drop(key);
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Failure(String::new(), u8::try_from(code).unwrap_or(1))),
        None => Err(Failure("ssh was stopped by a signal".to_owned(), 1)),
    }
}

/// Whether `path` is this program (`core.sshCommand` already ours).
pub fn is_ours(value: &str) -> bool {
    value.contains("gitssh") && value.contains("extauth")
}

/// The `core.sshCommand` value that runs this program's `gitssh`.
pub fn ssh_command(program: &Path) -> String {
    let shown = program.display().to_string();
    let quoted = if shown.contains([' ', '\'', '"']) {
        format!("'{}'", shown.replace('\'', "'\\''"))
    } else {
        shown
    };
    format!("{quoted} gitssh --")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_destination_is_found_among_git_s_ssh_arguments() {
        assert_eq!(
            destination(&args(&[
                "-o",
                "SendEnv=GIT_PROTOCOL",
                "git@github.com",
                "git-upload-pack 'o/r.git'"
            ])),
            Some("git@github.com")
        );
        assert_eq!(
            destination(&args(&["-p", "2222", "git@127.0.0.1", "git-receive-pack"])),
            Some("git@127.0.0.1")
        );
        assert_eq!(destination(&args(&["-p2222", "-4", "host"])), Some("host"));
        assert_eq!(destination(&args(&["-o", "x"])), None);
    }

    #[test]
    fn the_key_file_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt as _;
        let Ok(file) = KeyFile::write("secret") else {
            panic!("the key file could not be written");
        };
        let path = file.path.clone();
        let dir = file.dir.clone();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(file);
        assert!(!path.exists() && !dir.exists());
    }
}
