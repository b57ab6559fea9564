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
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::relay::{ARG, BINARY, Place, private};
use crate::workspace::{Client, Settings};

/// The agent exits after this long without a request (`EXTAUTH_AGENT_IDLE` to change).
pub const IDLE: Duration = Duration::from_secs(600);
/// The broker closes a kept-alive connection after 60 s idle (its default); the agent drops
/// one before, rather than race the broker's close with a request.
const KEEP: Duration = Duration::from_secs(50);
/// Longest request line or bearer line the agent reads.
const MAX_LINE: u64 = 16 * 1024;

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
