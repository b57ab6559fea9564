//! git's credential helper protocol: `key=value` lines on stdin until a blank line or EOF,
//! answered the same way on stdout (gitcredentials(7), "CUSTOM HELPERS").

use std::io::BufRead;

/// What git tells a helper about the credential it needs. Attributes this helper has no use
/// for are read and ignored, as the protocol asks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    /// `capability[]`: what this git understands in an answer (git 2.46+: `authtype`,
    /// `state`). Old gits send none, and get the classic username/password answer.
    pub capabilities: Vec<String>,
    /// `state[]`: what helpers asked git to hand back (ours: [`STATE_PREFIX`]).
    pub state: Vec<String>,
    /// `wwwauth[]`: the server's `WWW-Authenticate` challenges, e.g. `Bearer realm="…"`.
    pub wwwauth: Vec<String>,
    /// `https`, `http`, …
    pub protocol: Option<String>,
    /// Host, with `:port` when not the default.
    pub host: Option<String>,
    /// Repository path, only when git is told `credential.useHttpPath`.
    pub path: Option<String>,
    /// The username git already has, if any.
    pub username: Option<String>,
    /// A whole URL, which git accepts instead of the parts.
    pub url: Option<String>,
}

/// A malformed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A line without `=`.
    #[error("line {line} of the request is not key=value")]
    NotKeyValue {
        /// 1-based line number.
        line: usize,
    },
    /// Reading stdin failed.
    #[error("reading the request: {0}")]
    Io(String),
}

impl Request {
    /// Reads a request from git. Values may contain `=`; keys may not. A NUL byte or a
    /// non-UTF-8 line is a protocol error (git never sends them).
    pub fn read(input: impl BufRead) -> Result<Self, ProtocolError> {
        let mut request = Self::default();
        for (n, line) in input.lines().enumerate() {
            let line = line.map_err(|e| ProtocolError::Io(e.to_string()))?;
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                break;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(ProtocolError::NotKeyValue { line: n + 1 });
            };
            if value.contains('\0') {
                return Err(ProtocolError::NotKeyValue { line: n + 1 });
            }
            match key {
                "capability[]" => request.capabilities.push(value.to_owned()),
                "state[]" => request.state.push(value.to_owned()),
                "wwwauth[]" => request.wwwauth.push(value.to_owned()),
                _ => {}
            }
            let value = Some(value.to_owned());
            match key {
                "protocol" => request.protocol = value,
                "host" => request.host = value,
                "path" => request.path = value,
                "username" => request.username = value,
                "url" => request.url = value,
                _ => {}
            }
        }
        Ok(request)
    }

    /// Whether git announced `capability` (`authtype`, `state`).
    pub fn can(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// The provider our earlier answer came from, when git hands our `state[]` back.
    pub fn our_provider(&self) -> Option<&str> {
        self.state
            .iter()
            .find_map(|s| s.strip_prefix(STATE_PREFIX))
            .filter(|id| !id.is_empty())
    }

    /// Whether the server offers the HTTP authentication `scheme` (case-insensitive), or said
    /// nothing (git sends `wwwauth[]` only when the server challenged).
    pub fn server_offers(&self, scheme: &str) -> bool {
        self.wwwauth.is_empty()
            || self.wwwauth.iter().any(|challenge| {
                challenge
                    .split([' ', ','])
                    .next()
                    .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            })
    }

    /// The schemes of the server's challenges, lowercase and comma-separated (`bearer,basic`),
    /// or `None` when it sent none.
    pub fn offered_schemes(&self) -> Option<String> {
        let schemes: Vec<String> = self
            .wwwauth
            .iter()
            .filter_map(|c| c.split([' ', ',']).next())
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        (!schemes.is_empty()).then(|| schemes.join(","))
    }

    /// The URL to match against providers: `protocol://host[/path]`, or the `url` attribute.
    /// `None` for protocols that carry no tokens (git asks helpers about those too).
    pub fn match_url(&self) -> Option<String> {
        if let (Some(protocol), Some(host)) = (&self.protocol, &self.host) {
            if !matches!(protocol.as_str(), "http" | "https") || host.is_empty() {
                return None;
            }
            return Some(match self.path.as_deref().filter(|p| !p.is_empty()) {
                Some(path) => format!("{protocol}://{host}/{}", path.trim_start_matches('/')),
                None => format!("{protocol}://{host}"),
            });
        }
        self.url
            .clone()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    }
}

/// The prefix of the `state[]` value this helper asks git to hand back: the provider id follows.
pub const STATE_PREFIX: &str = "extauth:provider=";

/// How the answer hands git the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `username=` and `password=`: every git understands it, and git may pass them to a
    /// storing helper.
    Classic,
    /// `authtype=Basic` with a ready `credential=` and `ephemeral=true` (git 2.46+), so no
    /// storing helper ever keeps the short-lived token.
    Basic,
    /// `authtype=Bearer` and `credential=<token>`, ephemeral (git 2.46+).
    Bearer,
}

impl Scheme {
    /// What to answer `request` for a provider whose tokens git should send as `git_auth`
    /// (`bearer` or `basic`, the broker's lookup answer).
    pub fn choose(request: &Request, git_auth: &str) -> Self {
        if !request.can("authtype") {
            return Self::Classic;
        }
        if git_auth.eq_ignore_ascii_case("bearer") && request.server_offers("bearer") {
            return Self::Bearer;
        }
        Self::Basic
    }
}

/// The answer to `get`.
pub struct Answer<'a> {
    /// `username=`.
    pub username: &'a str,
    /// `password=`.
    pub password: &'a str,
    /// `password_expiry_utc=` (unix seconds), so git drops a cached token when it expires.
    pub expiry_unix: Option<i64>,
    /// How to hand the token over.
    pub scheme: Scheme,
    /// The provider to name in `state[]`, when git announced the `state` capability.
    pub state_provider: Option<&'a str>,
}

impl Answer<'_> {
    /// The protocol lines. A value with a newline cannot be sent; it is left out (git then asks
    /// elsewhere) rather than corrupting the stream.
    pub fn lines(&self) -> String {
        use base64::Engine as _;
        let mut out = String::new();
        let mut put = |key: &str, value: &str| {
            if !value.contains(['\n', '\0']) {
                out.push_str(key);
                out.push('=');
                out.push_str(value);
                out.push('\n');
            }
        };
        // Capabilities come first, before any value that depends on them.
        if self.scheme != Scheme::Classic {
            put("capability[]", "authtype");
        }
        if self.state_provider.is_some() {
            put("capability[]", "state");
        }
        match self.scheme {
            Scheme::Classic => {
                put("username", self.username);
                put("password", self.password);
            }
            Scheme::Basic => {
                if !self.username.contains(['\n', '\0', ':'])
                    && !self.password.contains(['\n', '\0'])
                {
                    put("authtype", "Basic");
                    let pair = format!("{}:{}", self.username, self.password);
                    put(
                        "credential",
                        &base64::engine::general_purpose::STANDARD.encode(pair),
                    );
                    put("ephemeral", "true");
                }
            }
            Scheme::Bearer => {
                let token = if self.password.is_empty() {
                    self.username
                } else {
                    self.password
                };
                if !token.contains(['\n', '\0']) {
                    put("authtype", "Bearer");
                    put("credential", token);
                    put("ephemeral", "true");
                }
            }
        }
        if let Some(expiry) = self.expiry_unix {
            put("password_expiry_utc", &expiry.to_string());
        }
        if let Some(provider) = self.state_provider {
            put("state[]", &format!("{STATE_PREFIX}{provider}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Request {
        Request::read(text.as_bytes()).unwrap()
    }

    #[test]
    fn reads_git_attributes_and_ignores_unknown_ones() {
        let request = read(
            "capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=github.com\npath=org/repo.git\nusername=me\nwwwauth[]=Basic realm=\"GitHub\"\nfuture=thing\n\nprotocol=ignored\n",
        );
        assert_eq!(
            request,
            Request {
                capabilities: vec!["authtype".into(), "state".into()],
                state: vec![],
                wwwauth: vec!["Basic realm=\"GitHub\"".into()],
                protocol: Some("https".into()),
                host: Some("github.com".into()),
                path: Some("org/repo.git".into()),
                username: Some("me".into()),
                url: None,
            }
        );
        assert_eq!(
            request.match_url().unwrap(),
            "https://github.com/org/repo.git"
        );
    }

    #[test]
    fn host_only_without_use_http_path() {
        let request = read("protocol=https\nhost=gitlab.example.com:8443\n");
        assert_eq!(
            request.match_url().unwrap(),
            "https://gitlab.example.com:8443"
        );
    }

    #[test]
    fn url_attribute_and_crlf() {
        let request = read("url=https://git.example.com/a/b\r\n\r\n");
        assert_eq!(request.match_url().unwrap(), "https://git.example.com/a/b");
    }

    #[test]
    fn non_http_protocols_are_not_ours() {
        assert_eq!(read("protocol=ssh\nhost=github.com\n").match_url(), None);
        assert_eq!(read("protocol=cert\nhost=x\n").match_url(), None);
        assert_eq!(read("").match_url(), None);
    }

    #[test]
    fn malformed_lines() {
        assert_eq!(
            Request::read("protocol=https\ngarbage\n".as_bytes()),
            Err(ProtocolError::NotKeyValue { line: 2 })
        );
    }

    #[test]
    fn answer_lines() {
        let answer = Answer {
            username: "oauth2",
            password: "tok",
            expiry_unix: Some(1_790_000_000),
            scheme: Scheme::Classic,
            state_provider: None,
        };
        assert_eq!(
            answer.lines(),
            "username=oauth2\npassword=tok\npassword_expiry_utc=1790000000\n"
        );
        let broken = Answer {
            username: "a\nb",
            password: "p",
            expiry_unix: None,
            scheme: Scheme::Classic,
            state_provider: None,
        };
        assert_eq!(broken.lines(), "password=p\n");
    }

    #[test]
    fn newer_gits_get_an_ephemeral_credential_and_our_state() {
        let request =
            read("capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=dev.azure.com\n");
        assert_eq!(Scheme::choose(&request, "bearer"), Scheme::Bearer);
        assert_eq!(Scheme::choose(&request, "basic"), Scheme::Basic);
        assert_eq!(Scheme::choose(&request, ""), Scheme::Basic);
        let bearer = Answer {
            username: "tok",
            password: "",
            expiry_unix: Some(7),
            scheme: Scheme::Bearer,
            state_provider: Some("ado"),
        };
        assert_eq!(
            bearer.lines(),
            "capability[]=authtype\ncapability[]=state\nauthtype=Bearer\ncredential=tok\nephemeral=true\npassword_expiry_utc=7\nstate[]=extauth:provider=ado\n"
        );
        let basic = Answer {
            username: "oauth2",
            password: "tok",
            expiry_unix: None,
            scheme: Scheme::Basic,
            state_provider: None,
        };
        assert_eq!(
            basic.lines(),
            "capability[]=authtype\nauthtype=Basic\ncredential=b2F1dGgyOnRvaw==\nephemeral=true\n"
        );
    }

    #[test]
    fn old_gits_and_basic_only_servers_get_the_classic_or_basic_answer() {
        // No capability line: git before 2.46.
        let old = read("protocol=https\nhost=dev.azure.com\n");
        assert_eq!(Scheme::choose(&old, "bearer"), Scheme::Classic);
        // The server challenges with Basic only: a bearer token would be refused.
        let basic_only =
            read("capability[]=authtype\nprotocol=https\nhost=x\nwwwauth[]=Basic realm=\"x\"\n");
        assert_eq!(Scheme::choose(&basic_only, "bearer"), Scheme::Basic);
        let both = read(
            "capability[]=authtype\nprotocol=https\nhost=x\nwwwauth[]=Basic realm=\"x\"\nwwwauth[]=bearer realm=\"x\"\n",
        );
        assert_eq!(Scheme::choose(&both, "bearer"), Scheme::Bearer);
    }

    #[test]
    fn the_servers_schemes_are_read_from_its_challenges() {
        let both = read(
            "wwwauth[]=Bearer realm=\"x\"\nwwwauth[]=Basic realm=\"x\"\nprotocol=https\nhost=x\n",
        );
        assert_eq!(both.offered_schemes().as_deref(), Some("bearer,basic"));
        assert_eq!(read("protocol=https\nhost=x\n").offered_schemes(), None);
    }

    #[test]
    fn our_state_comes_back_on_erase() {
        let request = read(
            "capability[]=state\nstate[]=other:thing\nstate[]=extauth:provider=gh-work\nprotocol=https\nhost=github.com\n",
        );
        assert_eq!(request.our_provider(), Some("gh-work"));
        assert_eq!(read("state[]=extauth:provider=\n").our_provider(), None);
    }
}
