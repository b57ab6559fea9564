//! Which address a request comes from: the connection's peer, or — only when that peer is a
//! trusted proxy (`CODER_PROXY_TRUSTED_ORIGINS`) — what the proxy says in one of the trusted
//! headers (`CODER_PROXY_TRUSTED_HEADERS`, Coder's settings). Per-client limits key on it; a
//! header from anyone else is ignored, or every client could pick its own address.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// A range of addresses, `10.0.0.0/8` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `addr/prefix` or a lone address.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().ok()?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        (prefix <= bits).then_some(Self { network, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// How to find a request's client address.
#[derive(Debug, Clone, Default)]
pub struct ClientAddress {
    headers: Vec<String>,
    proxies: Vec<Cidr>,
}

impl ClientAddress {
    /// From the two settings; an error names the variable and the fix.
    pub fn parse(headers: &[String], origins: &[String]) -> Result<Self, String> {
        let headers: Vec<String> = headers
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let mut proxies = Vec::new();
        for origin in origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            proxies.push(Cidr::parse(origin).ok_or_else(|| {
                format!(
                    "CODER_PROXY_TRUSTED_ORIGINS: {origin:?} is not an address or CIDR range; write e.g. 10.0.0.0/8,192.168.1.5"
                )
            })?);
        }
        if !headers.is_empty() && proxies.is_empty() {
            return Err("CODER_PROXY_TRUSTED_HEADERS: set, but CODER_PROXY_TRUSTED_ORIGINS is empty, so no proxy's header would be believed; list your proxies' addresses, e.g. 10.0.0.0/8".to_owned());
        }
        Ok(Self { headers, proxies })
    }

    /// The client of a request that arrived from `peer`.
    pub fn of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: IpAddr| self.proxies.iter().any(|p| p.contains(ip));
        if !trusted(peer) {
            return peer;
        }
        for name in &self.headers {
            let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            // X-Forwarded-For lists every hop; the rightmost one that is not a trusted proxy is
            // the first address no proxy of ours could have been told by the client.
            let found = value
                .rsplit(',')
                .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
                .find(|ip| !trusted(*ip));
            if let Some(ip) = found {
                return ip;
            }
        }
        peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.2")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn headers_are_believed_only_from_trusted_proxies() {
        let c = ClientAddress::parse(&["X-Forwarded-For".into()], &["10.0.0.0/8".into()]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 1.2.3.4, 10.0.0.7".parse().unwrap(),
        );
        assert_eq!(c.of(ip("10.0.0.1"), &headers), ip("1.2.3.4"));
        assert_eq!(
            c.of(ip("5.5.5.5"), &headers),
            ip("5.5.5.5"),
            "not from a proxy: the header is the client's own claim"
        );
        assert_eq!(c.of(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
        assert!(ClientAddress::parse(&["X-Forwarded-For".into()], &[]).is_err());
        assert!(ClientAddress::parse(&[], &["nope".into()]).is_err());
    }
}
