//! The authorization server's redirect rules: a presented redirect URI matches a registered one
//! only exactly, or as the same loopback address on another port (RFC 8252 §7.3); never
//! another host, path, query or a fragment. Whatever registration accepts is an absolute URL
//! without a fragment and with no scheme that runs code.
#![no_main]

use extauth_broker::oauth2::apps::{check_redirect, redirect_matches, ClientType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (registered, presented) = text.split_once('\n').unwrap_or((text, text));
    for client_type in [ClientType::Confidential, ClientType::Public] {
        if check_redirect(registered, client_type).is_ok() {
            let url = url::Url::parse(registered).expect("accepted redirects are URLs");
            assert!(url.fragment().is_none(), "{registered:?} has a fragment");
            assert!(
                !["javascript", "data", "file", "vbscript", "blob"].contains(&url.scheme()),
                "{registered:?} runs code"
            );
            if client_type == ClientType::Confidential {
                assert!(
                    matches!(url.scheme(), "https" | "http"),
                    "{registered:?}: a custom scheme for a confidential app"
                );
            }
        }
    }
    if redirect_matches(registered, presented) && registered != presented {
        let (a, b) = (
            url::Url::parse(registered).expect("matched: a URL"),
            url::Url::parse(presented).expect("matched: a URL"),
        );
        assert_eq!(a.scheme(), "http", "{registered:?} ~ {presented:?}");
        assert_eq!(a.host_str(), b.host_str(), "{registered:?} ~ {presented:?}");
        assert!(
            matches!(a.host_str(), Some("127.0.0.1" | "[::1]" | "localhost")),
            "{registered:?} ~ {presented:?} off loopback"
        );
        assert_eq!(a.path(), b.path(), "{registered:?} ~ {presented:?}");
        assert_eq!(a.query(), b.query(), "{registered:?} ~ {presented:?}");
        assert!(b.fragment().is_none(), "{presented:?}");
    }
});
