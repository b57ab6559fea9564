//! Which provider a repository URL belongs to.
//!
//! The first provider in configuration order whose regex matches wins, and every provider that
//! matched is reported, so an overlap is visible instead of silently deciding which OAuth
//! client's token `git clone` gets (Coder lets the *last* match win, without saying so).

use url::Url;

use crate::config::{ProviderConfig, Providers};

/// The outcome of matching one URL.
#[derive(Debug)]
pub struct UrlMatch<'a> {
    /// The URL as the regexes saw it: `scheme://host[:port][/path]`, no credentials, query or
    /// fragment.
    pub normalized: String,
    /// The provider whose token is used: the first candidate.
    pub chosen: Option<&'a ProviderConfig>,
    /// Every provider whose regex matched, in configuration order.
    pub candidates: Vec<&'a ProviderConfig>,
}

/// Why a string cannot be matched against providers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// Not parseable as a URL (the input is not echoed: it may hold credentials).
    #[error(
        "not a URL ({0}); give an http(s) repository URL such as https://github.com/org/repo.git"
    )]
    NotAUrl(String),
    /// A URL whose scheme git would not ask a credential helper about.
    #[error(
        "scheme {0:?} is not http or https; only HTTPS remotes use tokens (SSH remotes use SSH keys)"
    )]
    UnsupportedScheme(String),
}

/// Normalises what git or a user gives (`https://user@host/org/repo.git`, `host/org/repo`) to
/// the form the provider regexes are written for: `https://host/org/repo.git`. A bare host or
/// path without a scheme is taken as https.
pub fn normalize_git_url(input: &str) -> Result<String, MatchError> {
    let input = input.trim();
    let with_scheme;
    let input = if input.contains("://") {
        input
    } else {
        with_scheme = format!("https://{input}");
        &with_scheme
    };
    let url = Url::parse(input).map_err(|e| MatchError::NotAUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(MatchError::UnsupportedScheme(url.scheme().to_owned()));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(MatchError::NotAUrl("no host".to_owned()));
    };
    let mut normalized = format!("{}://{host}", url.scheme());
    if let Some(port) = url.port() {
        normalized.push_str(&format!(":{port}"));
    }
    // Git's own prompt shows `https://host` without a trailing slash; regexes are written for it.
    if url.path() != "/" {
        normalized.push_str(url.path());
    }
    Ok(normalized)
}

impl Providers {
    /// Matches a repository URL against every provider's regex.
    pub fn match_url(&self, url: &str) -> Result<UrlMatch<'_>, MatchError> {
        let normalized = normalize_git_url(url)?;
        let candidates: Vec<&ProviderConfig> = self
            .iter()
            .filter(|p| p.regex.as_ref().is_some_and(|r| r.is_match(&normalized)))
            .collect();
        Ok(UrlMatch {
            chosen: candidates.first().copied(),
            candidates,
            normalized,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        for (input, expected) in [
            ("https://github.com", "https://github.com"),
            ("https://github.com/", "https://github.com"),
            (
                "https://user@github.com/org/repo.git",
                "https://github.com/org/repo.git",
            ),
            (
                "https://user:pw@github.com/org/repo?x=1#f",
                "https://github.com/org/repo",
            ),
            (
                "http://GitLab.Example.com:8443/g/p",
                "http://gitlab.example.com:8443/g/p",
            ),
            ("https://github.com:443/o/r", "https://github.com/o/r"),
            ("github.com/org/repo", "https://github.com/org/repo"),
            ("  https://github.com  ", "https://github.com"),
        ] {
            assert_eq!(normalize_git_url(input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn unsupported_inputs() {
        assert_eq!(
            normalize_git_url("ssh://git@github.com/o/r"),
            Err(MatchError::UnsupportedScheme("ssh".to_owned()))
        );
        assert!(matches!(
            normalize_git_url("https://"),
            Err(MatchError::NotAUrl(_))
        ));
        let err = normalize_git_url("https://user:s3cret@[bad").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
