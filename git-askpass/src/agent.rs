//! The connection agent: one small process per user and broker that keeps the helper's
//! connection to the broker open between git's helper runs.
//!
//! git starts a new helper process for every credential it needs, and over HTTPS each would pay
//! a full TLS handshake (key exchange, certificate chain verification) for its one request.
//! rustls cannot hand a TLS session to another process, so rather than resume across processes
//! the helper asks the agent, over a Unix socket, to send its request on a connection the agent
//! verified and keeps alive — and, once the broker closes that, to open the next one resuming
//! the TLS session it holds in memory. Certificate verification is the same code with the same
//! roots, only done once per connection instead of once per process.
//!
//! The agent holds no token and keeps no answer: the helper sends its bearer with each request
//! and every answer is the broker's own, so a revoked token is refused at once. Like
//! `git credential-cache--daemon`, it lives in a directory only the user can enter
//! (`$XDG_RUNTIME_DIR/extauth`, else `~/.cache/extauth`; 0700 and owned by the user, checked
//! before each use), is started by the first helper that finds none (which answers git itself,
//! directly), and exits after [`IDLE`] without a request or as soon as its socket is removed or
//! replaced. `EXTAUTH_AGENT=off` turns it off.
//!
//! One agent serves one broker URL with one set of roots and one proxy setting: they make the
//! socket's name, so a helper never reaches an agent that trusts other roots than its own.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::workspace::{Client, Settings};

/// The agent exits after this long without a request (`EXTAUTH_AGENT_IDLE` to change).
pub const IDLE: Duration = Duration::from_secs(600);
/// The broker closes a kept-alive connection after 60 s idle (its default); the agent drops
/// one before, rather than race the broker's close with a request.
const KEEP: Duration = Duration::from_secs(50);
/// How long a helper waits for the agent's answer (the agent's own request times out first).
const WAIT: Duration = Duration::from_secs(35);
/// The argument that makes `git-credential-extauth` the agent.
pub const ARG: &str = "--agent";
/// The binary that is the agent.
const BINARY: &str = "git-credential-extauth";
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
/// Longest request line or bearer line the agent reads.
const MAX_LINE: u64 = 16 * 1024;
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
        if get("EXTAUTH_AGENT").is_some_and(|v| matches!(v.trim(), "off" | "0" | "false" | "no")) {
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
        let name: String = key
            .finalize()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect();
        let socket = dir?.join(format!("agent-{name}.sock"));
        // sun_path holds 108 bytes with its terminating NUL.
        (socket.as_os_str().len() < 100).then_some(Self { socket })
    }

    /// The file the agent writes its process id to (for whoever must stop it).
    pub fn pid_file(&self) -> PathBuf {
        self.socket.with_extension("pid")
    }

    fn dir(&self) -> Option<&Path> {
        self.socket.parent()
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
    if private_dir(dir).is_err() || !private(dir) {
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

/// The agent's process: `git-credential-extauth --agent <socket> <url> [<ca-file>]`.
pub fn serve(args: &[String]) -> ExitCode {
    let (Some(socket), Some(url)) = (args.first(), args.get(1)) else {
        eprintln!("usage: {BINARY} {ARG} <socket> <broker url> [<ca file>]");
        return ExitCode::from(2);
    };
    let ca_file = args.get(2).cloned();
    let settings = match Settings::for_agent(url, ca_file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{BINARY} {ARG}: {e}");
            return ExitCode::from(1);
        }
    };
    let idle = std::env::var("EXTAUTH_AGENT_IDLE")
        .ok()
        .and_then(|v| crate::workspace::parse_duration(v.trim()))
        .unwrap_or(IDLE);
    let place = Place {
        socket: PathBuf::from(socket),
    };
    match listen(&place) {
        Ok(Some((listener, inode))) => {
            run(
                listener,
                inode,
                &place,
                Client::kept_alive(settings, KEEP),
                idle,
            );
            ExitCode::SUCCESS
        }
        // Another agent answers there already.
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{BINARY} {ARG}: {}: {e}", place.socket.display());
            ExitCode::from(1)
        }
    }
}

/// Binds the socket: under a name of its own first, then renamed into place, so a helper
/// connecting meanwhile finds either a whole agent or none. `None`: one answers already.
fn listen(place: &Place) -> std::io::Result<Option<(UnixListener, u64)>> {
    let dir = place
        .dir()
        .ok_or_else(|| std::io::Error::other("no directory"))?;
    if !private(dir) {
        return Err(std::io::Error::other(
            "the directory is not private to this user (0700, owned by the user)",
        ));
    }
    if UnixStream::connect(&place.socket).is_ok() {
        return Ok(None);
    }
    let own = dir.join(format!(".agent-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&own);
    let listener = UnixListener::bind(&own)?;
    std::fs::rename(&own, &place.socket)?;
    let inode = std::fs::metadata(&place.socket)?.ino();
    let _ = std::fs::write(place.pid_file(), format!("{}\n", std::process::id()));
    Ok(Some((listener, inode)))
}

fn run(listener: UnixListener, inode: u64, place: &Place, client: Client, idle: Duration) {
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let client = Arc::new(client);
    {
        let (last, place) = (Arc::clone(&last), place.clone());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let quiet = started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                let ours = std::fs::metadata(&place.socket).is_ok_and(|m| m.ino() == inode);
                if quiet > idle || !ours {
                    if ours {
                        let _ = std::fs::remove_file(&place.socket);
                    }
                    if std::fs::read_to_string(place.pid_file())
                        .is_ok_and(|p| p.trim() == std::process::id().to_string())
                    {
                        let _ = std::fs::remove_file(place.pid_file());
                    }
                    std::process::exit(0);
                }
            }
        });
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        last.store(
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let client = Arc::clone(&client);
        std::thread::spawn(move || {
            let _ = answer(&client, stream);
        });
    }
}

/// One helper's request: `GET <path and query>\n<bearer>\n`, answered `<status>\n<body>`, or
/// `0\n<why>` when the broker could not be reached.
fn answer(client: &Client, stream: UnixStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new((&stream).take(2 * MAX_LINE));
    let (mut line, mut bearer) = (String::new(), String::new());
    reader.read_line(&mut line)?;
    reader.read_line(&mut bearer)?;
    let path = line
        .strip_prefix("GET ")
        .map(|p| p.trim_end_matches('\n'))
        .filter(|p| p.starts_with('/') && !p.contains(char::is_whitespace));
    let answer = match path {
        Some(path) => match client.get_raw(bearer.trim_end_matches('\n'), path) {
            Ok((status, body)) => format!("{status}\n{body}"),
            Err(why) => format!("0\n{why}"),
        },
        None => "0\nthe agent was sent a request it does not take".to_owned(),
    };
    (&stream).write_all(answer.as_bytes())
}

/// Whether `dir` is a directory only this user can enter: not a link, owned by the process's
/// user (the owner of `/proc/self`), no access for group or others.
fn private(dir: &Path) -> bool {
    let (Ok(meta), Ok(me)) = (
        std::fs::symlink_metadata(dir),
        std::fs::metadata("/proc/self"),
    ) else {
        return false;
    };
    meta.is_dir() && meta.uid() == me.uid() && meta.mode() & 0o077 == 0
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
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
