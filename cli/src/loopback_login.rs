//! `extauth login` through a browser on this machine (RFC 8252 §7.3): the CLI listens on a
//! loopback port of its own, opens the broker's authorization page, and takes the code from the
//! redirect — nothing to copy, nothing to type. PKCE binds the code to this process, and the
//! `state` and `iss` of the redirect are checked before the code is used.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// How long the CLI waits for the browser.
const WAIT: Duration = Duration::from_secs(300);

/// What the browser's redirect brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A code, to redeem with the verifier.
    Code(String),
    /// The user refused, or the broker did: the OAuth error and its description.
    Refused(String),
}

/// A login in progress: the listener, the PKCE verifier, the state.
pub struct Pending {
    listener: TcpListener,
    /// The redirect URI (with the port the system gave).
    pub redirect_uri: String,
    /// The PKCE verifier (sent with the code).
    pub verifier: String,
    state: String,
    issuer: String,
}

fn random_text() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl Pending {
    /// Listens on a free loopback port.
    pub fn start(issuer: &str) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("cannot listen on a loopback port: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        Ok(Self {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}/callback"),
            verifier: random_text()?,
            state: random_text()?,
            issuer: issuer.to_owned(),
        })
    }

    /// The authorization URL to open.
    pub fn authorize_url(&self, client_id: &str, scope: &str) -> String {
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(self.verifier.as_bytes()));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", scope)
            .append_pair("state", &self.state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        format!("{}/oauth2/authorize?{query}", self.issuer)
    }

    /// Waits for the browser's redirect (other requests, such as a favicon, get a 404).
    pub fn wait(&self) -> Result<Outcome, String> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            if let Some(outcome) = self.answer(stream)? {
                return Ok(outcome);
            }
        }
        Err("the browser did not come back within 5 minutes".to_owned())
    }

    /// Reads one request; `Some` when it is the redirect.
    fn answer(&self, mut stream: std::net::TcpStream) -> Result<Option<Outcome>, String> {
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(10))))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(std::io::Read::take(&stream, 8192))
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let target = line.split(' ').nth(1).unwrap_or_default();
        let Ok(url) = url::Url::parse(&format!("http://127.0.0.1{target}")) else {
            return Ok(None);
        };
        if url.path() != "/callback" {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return Ok(None);
        }
        let params: std::collections::BTreeMap<String, String> =
            url.query_pairs().into_owned().collect();
        let outcome = if params.get("state") != Some(&self.state) {
            Err("the browser came back with another login's state; run `extauth login` again")
        } else if params.get("iss").is_some_and(|iss| iss != &self.issuer) {
            Err("the answer names another issuer than the broker; run `extauth login` again")
        } else {
            Ok(())
        };
        let (body, result) = match (outcome, params.get("code"), params.get("error")) {
            (Err(why), _, _) => (
                "The sign-in could not be completed: return to the terminal.",
                Err(why.to_owned()),
            ),
            (Ok(()), Some(code), _) => (
                "Signed in. You can close this tab and return to the terminal.",
                Ok(Outcome::Code(code.clone())),
            ),
            (Ok(()), None, error) => (
                "The sign-in was not completed: return to the terminal.",
                Ok(Outcome::Refused(
                    [error.cloned(), params.get("error_description").cloned()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(": "),
                )),
            ),
        };
        let page =
            format!("<!doctype html><meta charset=\"utf-8\"><title>extauth</title><p>{body}</p>");
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        result.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(pending: &Pending, query: &str) -> Result<Outcome, String> {
        let port = pending
            .redirect_uri
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches("/callback")
            .to_owned();
        let query = query.to_owned();
        let browser = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
            write!(s, "GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
            write!(s, "GET /callback?{query} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut answer = String::new();
            std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
            answer
        });
        let outcome = pending.wait();
        assert!(browser.join().unwrap().starts_with("HTTP/1.1 200"));
        outcome
    }

    #[test]
    fn the_redirect_is_checked_before_its_code_is_used() {
        let pending = Pending::start("http://broker.example").unwrap();
        let url = pending.authorize_url("extauth-cli", "openid all");
        assert!(url.starts_with("http://broker.example/oauth2/authorize?client_id=extauth-cli"));
        assert!(url.contains("code_challenge_method=S256"));
        let state = pending.state.clone();
        assert_eq!(
            redirect(
                &pending,
                &format!("code=c1&state={state}&iss=http%3A%2F%2Fbroker.example")
            ),
            Ok(Outcome::Code("c1".to_owned()))
        );
        assert!(redirect(&pending, "code=c2&state=other").is_err());
        assert!(
            redirect(
                &pending,
                &format!("code=c3&state={state}&iss=http%3A%2F%2Fevil.example")
            )
            .is_err()
        );
        assert_eq!(
            redirect(&pending, &format!("error=access_denied&state={state}")),
            Ok(Outcome::Refused("access_denied".to_owned()))
        );
    }
}
