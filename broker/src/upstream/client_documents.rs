//! Fetching an OAuth client's metadata document (draft-ietf-oauth-client-id-metadata-document):
//! a URL anyone can put in a `client_id`, so the fetch is the classic server-side request
//! forgery target. It never follows a redirect, stops at a size and a time, and connects only
//! to addresses it checked — after resolving the name itself, so a name that resolves to a
//! private address (or to one address now and another later) does not get through.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, EXPIRES};
use url::Url;

/// A document larger than this is refused (the draft suggests a few kilobytes).
pub const MAX_BYTES: usize = 16 * 1024;
/// A fetch taking longer than this fails.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a document could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The URL or its address is not one extauth fetches from.
    #[error("{0}")]
    Refused(String),
    /// The fetch failed or the answer was not a document.
    #[error("{0}")]
    Failed(String),
}

/// A fetched document.
#[derive(Debug)]
pub struct Fetched {
    /// The JSON object.
    pub body: serde_json::Value,
    /// How long it may be kept, from `Cache-Control`/`Expires` (`None`: no caching header;
    /// `Some(0)`: not to be kept).
    pub max_age: Option<Duration>,
}

/// Whether an address is one a public document cannot be on: loopback, private, link-local
/// (cloud metadata services live at 169.254.169.254), shared, unspecified, multicast,
/// documentation, and the IPv6 equivalents (an IPv4 address mapped into IPv6 judged as IPv4).
pub fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b
        }
    }
}

/// Resolves names itself and refuses private addresses unless allowed: reqwest connects to
/// exactly the addresses returned here.
struct Guarded {
    allow_private: bool,
}

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allow_private || !is_private(a.ip()))
                .collect();
            if usable.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(usable.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The fetcher, built once.
pub struct ClientDocuments {
    http: reqwest::Client,
    allow_private: bool,
}

impl ClientDocuments {
    /// A fetcher trusting the usual roots plus `extra_roots`; private addresses only when
    /// `allow_private`.
    pub fn new(
        allow_private: bool,
        extra_roots: &[reqwest::Certificate],
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .dns_resolver(Arc::new(Guarded { allow_private }))
            .user_agent(concat!("extauth/", env!("CARGO_PKG_VERSION")));
        for root in extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        Ok(Self {
            http: builder.build()?,
            allow_private,
        })
    }

    /// Fetches the document at `url` (already checked for shape by the caller);
    /// `loopback_trial`: a loopback address written in the URL is fetched (a broker trying
    /// things on a loopback address, with its clients beside it).
    pub async fn fetch(&self, url: &Url, loopback_trial: bool) -> Result<Fetched, DocumentError> {
        // An address written in the URL is not resolved, so it is checked here.
        if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host() {
            let address: IpAddr = url
                .host_str()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .parse()
                .map_err(|_| DocumentError::Refused("an unusable address".to_owned()))?;
            let allowed = self.allow_private || (loopback_trial && address.is_loopback());
            if !allowed && is_private(address) {
                return Err(DocumentError::Refused(format!(
                    "{address} is a private, loopback or link-local address; an admin may allow such documents (EXTAUTH_OAUTH2_CLIENT_METADATA_ALLOW_PRIVATE=true)"
                )));
            }
        }
        let mut response = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                let mut cause = String::new();
                let mut source = std::error::Error::source(&e);
                while let Some(inner) = source {
                    cause.push_str(&inner.to_string());
                    source = inner.source();
                }
                if cause.contains("no public address") {
                    DocumentError::Refused(format!(
                        "{} resolves only to private addresses; an admin may allow them (EXTAUTH_OAUTH2_CLIENT_METADATA_ALLOW_PRIVATE=true)",
                        url.host_str().unwrap_or_default()
                    ))
                } else if e.is_timeout() {
                    DocumentError::Failed("it did not answer within 5 s".to_owned())
                } else {
                    DocumentError::Failed(format!("it could not be fetched ({e})"))
                }
            })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(DocumentError::Failed(format!(
                "it answered a redirect ({status}), which is not followed: publish the document at the client_id itself"
            )));
        }
        if !status.is_success() {
            return Err(DocumentError::Failed(format!("it answered {status}")));
        }
        let json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim().starts_with("application/json") || t.contains("+json"));
        if !json {
            return Err(DocumentError::Failed(
                "it is not served as application/json".to_owned(),
            ));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BYTES as u64)
        {
            return Err(DocumentError::Failed(format!(
                "it is larger than {MAX_BYTES} bytes"
            )));
        }
        let max_age = caching(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| DocumentError::Failed(format!("reading it failed ({e})")))?
        {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(DocumentError::Failed(format!(
                    "it is larger than {MAX_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let body: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| DocumentError::Failed(format!("it is not JSON ({e})")))?;
        if !body.is_object() {
            return Err(DocumentError::Failed("it is not a JSON object".to_owned()));
        }
        Ok(Fetched { body, max_age })
    }
}

/// How long an answer may be kept: `no-store`/`no-cache` → 0, else `max-age`, else `Expires`.
fn caching(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(control) = headers.get(CACHE_CONTROL).and_then(|v| v.to_str().ok()) {
        let mut max_age = None;
        for directive in control.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return Some(Duration::ZERO);
            }
            if let Some(secs) = lower.strip_prefix("max-age=") {
                max_age = secs.trim_matches('"').parse::<u64>().ok();
            }
        }
        if let Some(secs) = max_age {
            return Some(Duration::from_secs(secs));
        }
    }
    let expires = headers.get(EXPIRES).and_then(|v| v.to_str().ok())?;
    let at = httpdate(expires)?;
    let now = std::time::SystemTime::now();
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form `Expires` should have.
fn httpdate(text: &str) -> Option<std::time::SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let parsed = time::PrimitiveDateTime::parse(text.trim(), &format).ok()?;
    let unix = parsed.assume_utc().unix_timestamp();
    Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn caching_headers_are_read() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(CACHE_CONTROL, "public, max-age=600".parse().unwrap());
        assert_eq!(caching(&headers), Some(Duration::from_secs(600)));
        headers.insert(CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(caching(&headers), Some(Duration::ZERO));
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(EXPIRES, "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
        assert_eq!(caching(&headers), Some(Duration::ZERO));
        assert_eq!(caching(&reqwest::header::HeaderMap::new()), None);
    }
}
