//! The broker's public base URL (`CODER_ACCESS_URL`), from which every link handed to users and
//! providers is built.

use url::Url;

/// A validated access URL: http(s), with a host, without query or fragment, and with a path
/// that ends in `/` so that joining keeps any path prefix (`https://example.com/extauth/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessUrl(Url);

/// Why a value is not a usable access URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AccessUrlError(String);

impl AccessUrl {
    /// Parses and normalises an access URL.
    pub fn parse(value: &str) -> Result<Self, AccessUrlError> {
        let mut url = Url::parse(value.trim()).map_err(|e| AccessUrlError(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AccessUrlError(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(AccessUrlError("no host".to_owned()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(AccessUrlError("it has a query or fragment".to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(AccessUrlError("it contains credentials".to_owned()));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Self(url))
    }

    /// The URL itself, always ending in `/`.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// `<access>/<relative>`, keeping the access URL's path prefix. `relative` must not start
    /// with `/` and must be a valid relative reference (callers pass fixed paths and validated
    /// provider IDs).
    pub fn join(&self, relative: &str) -> Url {
        let mut url = self.0.clone();
        let path = format!("{}{}", self.0.path(), relative.trim_start_matches('/'));
        url.set_path(&path);
        url
    }
}

impl std::fmt::Display for AccessUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl std::str::FromStr for AccessUrl {
    type Err = AccessUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_path_prefix_and_normalises_trailing_slash() {
        for (input, joined) in [
            ("https://x.example.com", "https://x.example.com/a/b"),
            ("https://x.example.com/", "https://x.example.com/a/b"),
            ("https://x.example.com/pre", "https://x.example.com/pre/a/b"),
            (
                "https://x.example.com/pre/",
                "https://x.example.com/pre/a/b",
            ),
            ("http://127.0.0.1:3000", "http://127.0.0.1:3000/a/b"),
        ] {
            let url = AccessUrl::parse(input).unwrap();
            assert_eq!(url.join("a/b").as_str(), joined, "{input}");
            assert_eq!(url.join("/a/b").as_str(), joined, "{input}");
        }
    }

    #[test]
    fn rejects_unusable_urls() {
        for bad in [
            "",
            "example.com",
            "ftp://example.com",
            "https://example.com/?x=1",
            "https://example.com/#x",
            "https://user:pw@example.com",
        ] {
            assert!(AccessUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
