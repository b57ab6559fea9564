//! Redirect sanitising: whatever `safe_redirect` lets through stays on the broker's origin when
//! a browser resolves it (the `url` crate's WHATWG parser standing in for the browser's).
#![no_main]

use extauth_broker::redirects::safe_redirect;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(candidate) = std::str::from_utf8(data) else {
        return;
    };
    let Some(path) = safe_redirect(candidate) else {
        return;
    };
    let page = url::Url::parse("https://broker.example/base/external-auth/github").unwrap();
    let target = page.join(&path).expect("a kept redirect is a URL reference");
    assert_eq!(target.origin(), page.origin(), "{path:?} leaves the site for {target}");
});
