//! git's credential helper protocol: `key=value` lines on stdin until a blank line or EOF,
//! answered the same way on stdout (gitcredentials(7), "CUSTOM HELPERS").

use std::io::BufRead;

/// What git tells a helper about the credential it needs. Attributes this helper has no use
/// for (`wwwauth[]`, `capability[]`, `state[]`, …) are read and ignored, as the protocol asks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
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

/// The answer to `get`.
pub struct Answer<'a> {
    /// `username=`.
    pub username: &'a str,
    /// `password=`.
    pub password: &'a str,
    /// `password_expiry_utc=` (unix seconds), so git drops a cached token when it expires.
    pub expiry_unix: Option<i64>,
}

impl Answer<'_> {
    /// The protocol lines. A value with a newline cannot be sent; it is left out (git then asks
    /// elsewhere) rather than corrupting the stream.
    pub fn lines(&self) -> String {
        let mut out = String::new();
        let mut put = |key: &str, value: &str| {
            if !value.contains(['\n', '\0']) {
                out.push_str(key);
                out.push('=');
                out.push_str(value);
                out.push('\n');
            }
        };
        put("username", self.username);
        put("password", self.password);
        if let Some(expiry) = self.expiry_unix {
            put("password_expiry_utc", &expiry.to_string());
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
        };
        assert_eq!(
            answer.lines(),
            "username=oauth2\npassword=tok\npassword_expiry_utc=1790000000\n"
        );
        let broken = Answer {
            username: "a\nb",
            password: "p",
            expiry_unix: None,
        };
        assert_eq!(broken.lines(), "password=p\n");
    }
}
