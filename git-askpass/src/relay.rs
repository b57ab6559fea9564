//! The helper's side of the connection agent (see [`crate::agent`]): where the agent for a
//! broker listens, asking it, and starting it when none answers.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// How long a helper waits for the agent's answer (the agent's own request times out first).
const WAIT: Duration = Duration::from_secs(35);
/// The argument that makes `git-credential-extauth` the agent.
pub const ARG: &str = "--agent";
/// The binary that is the agent.
pub(crate) const BINARY: &str = "git-credential-extauth";
/// Variables that change how the agent reaches the broker, besides the URL and the roots.
const PROXIES: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];
/// Longest answer a helper reads from the agent.
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// Where the agent for one broker, roots and proxy setting listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The socket.
    pub socket: PathBuf,
}

impl Place {
    /// The agent's place for `url` trusting `roots` (their DER), under `dir`; `None` when the
    /// agent is off (`EXTAUTH_AGENT=off`), there is no directory for it, or the path would be
    /// too long for a Unix socket.
    pub fn find<'a>(
        url: &str,
        roots: impl Iterator<Item = &'a [u8]>,
        dir: Option<PathBuf>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Option<Self> {
        if get("EXTAUTH_AGENT").is_some_and(|v| switch(&v) == Some(false)) {
            return None;
        }
        let mut key = Sha256::new();
        key.update(b"extauth-agent\0");
        key.update(env!("CARGO_PKG_VERSION").as_bytes());
        key.update([0]);
        key.update(url.as_bytes());
        for root in roots {
            key.update([1]);
            key.update(root);
        }
        for name in PROXIES {
            key.update([2]);
            key.update(get(name).unwrap_or_default().as_bytes());
        }
        let name = crate::identity::file_name_of(key);
        let socket = dir?.join(format!("agent-{name}.sock"));
        // sun_path holds 108 bytes with its terminating NUL.
        (socket.as_os_str().len() < 100).then_some(Self { socket })
    }

    /// The file the agent writes its process id to (for whoever must stop it).
    pub fn pid_file(&self) -> PathBuf {
        self.socket.with_extension("pid")
    }

    pub(crate) fn dir(&self) -> Option<&Path> {
        self.socket.parent()
    }
}

/// `EXTAUTH_AGENT`'s value: on, off, or `None` for a word that is neither.
pub fn switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "yes" => Some(true),
        "off" | "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// What the agent answered a helper.
pub type Relayed = Result<(u16, String), String>;

/// Sends `GET path_and_query` with `bearer` through the agent: `None` when there is no agent to
/// ask (none runs, or its directory is not private) or it failed before answering — the caller
/// then asks the broker itself; `Some(Err(why))` when the agent could not reach the broker.
pub fn relay(place: &Place, bearer: &str, path_and_query: &str) -> Option<Relayed> {
    if !private(place.dir()?) {
        return None;
    }
    let mut stream = UnixStream::connect(&place.socket).ok()?;
    stream.set_read_timeout(Some(WAIT)).ok()?;
    stream.set_write_timeout(Some(WAIT)).ok()?;
    let mut request = Vec::with_capacity(path_and_query.len() + bearer.len() + 8);
    request.extend_from_slice(b"GET ");
    request.extend_from_slice(path_and_query.as_bytes());
    request.push(b'\n');
    request.extend_from_slice(bearer.as_bytes());
    request.push(b'\n');
    stream.write_all(&request).ok()?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer).ok()?;
    let text = String::from_utf8(answer).ok()?;
    let (status, body) = text.split_once('\n')?;
    match status.parse::<u16>().ok()? {
        0 => Some(Err(body.to_owned())),
        status => Some(Ok((status, body.to_owned()))),
    }
}

/// Whether the agent should be started after a request the helper sent itself: no agent
/// answers at `place`, and its directory is (made) private.
pub fn wanted(place: &Place) -> bool {
    let Some(dir) = place.dir() else {
        return false;
    };
    if crate::identity::private_dir(dir).is_err() || !private(dir) {
        return false;
    }
    match UnixStream::connect(&place.socket) {
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ),
    }
}

/// Starts the agent for `place` in the background: the `git-credential-extauth` binary (this
/// process's, or the one beside it), detached, with no token in its environment.
pub fn start(place: &Place, url: &str, ca_file: Option<&str>) {
    let Some(binary) = std::env::current_exe().ok().and_then(|exe| {
        if exe.file_name().is_some_and(|n| n == BINARY) {
            Some(exe)
        } else {
            Some(exe.with_file_name(BINARY)).filter(|b| b.is_file())
        }
    }) else {
        return;
    };
    use std::os::unix::process::CommandExt as _;
    let mut command = std::process::Command::new(binary);
    command
        .arg(ARG)
        .arg(&place.socket)
        .arg(url)
        .args(ca_file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Not holding on to the repository git runs in.
        .current_dir("/")
        // Its own process group: a Ctrl-C meant for git does not reach it.
        .process_group(0);
    for secret in [
        "EXTAUTH_TOKEN",
        "EXTAUTH_TOKEN_FILE",
        "CODER_AGENT_TOKEN",
        "CODER_AGENT_TOKEN_FILE",
        "EXTAUTH_IDENTITY_TOKEN_FILE",
    ] {
        command.env_remove(secret);
    }
    // Not waited for: the helper exits in a moment and init adopts the agent.
    let _ = command.spawn();
}
/// Whether `dir` is a directory only this user can enter: not a link, owned by the process's
/// user (the owner of `/proc/self`), no access for group or others.
pub(crate) fn private(dir: &Path) -> bool {
    let (Ok(meta), Ok(me)) = (
        std::fs::symlink_metadata(dir),
        std::fs::metadata("/proc/self"),
    ) else {
        return false;
    };
    meta.is_dir() && meta.uid() == me.uid() && meta.mode() & 0o077 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(url: &str, roots: &[&[u8]], vars: &[(&str, &str)]) -> Option<Place> {
        Place::find(
            url,
            roots.iter().copied(),
            Some(PathBuf::from("/run/user/1000/extauth")),
            |k| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| (*v).to_owned())
            },
        )
    }

    #[test]
    fn one_agent_per_broker_roots_and_proxy() {
        let a = place("https://b", &[b"ca-1"], &[]).unwrap();
        assert_eq!(a, place("https://b", &[b"ca-1"], &[]).unwrap());
        assert!(
            a.socket
                .to_str()
                .unwrap()
                .starts_with("/run/user/1000/extauth/agent-")
        );
        assert_eq!(a.pid_file().extension().unwrap(), "pid");
        for other in [
            place("https://c", &[b"ca-1"], &[]),
            place("https://b", &[b"ca-2"], &[]),
            place("https://b", &[], &[]),
            place("https://b", &[b"ca-1"], &[("HTTPS_PROXY", "http://p:3128")]),
        ] {
            assert_ne!(Some(&a), other.as_ref());
        }
        assert_eq!(
            place("https://b", &[b"ca-1"], &[("EXTAUTH_AGENT", "off")]),
            None
        );
    }

    #[test]
    fn no_agent_where_the_socket_path_is_too_long() {
        let deep = PathBuf::from(format!("/{}", "d".repeat(80)));
        assert_eq!(
            Place::find("https://b", std::iter::empty(), Some(deep), |_| None),
            None
        );
        assert_eq!(
            Place::find("https://b", std::iter::empty(), None, |_| None),
            None
        );
    }

    #[test]
    fn only_a_private_directory_is_used() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("extauth-agent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let place = Place {
            socket: dir.join("agent-x.sock"),
        };
        assert!(wanted(&place), "made private, nothing listening");
        assert!(private(&dir));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!private(&dir));
        assert!(!wanted(&place));
        assert_eq!(relay(&place, "t", "/x"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
