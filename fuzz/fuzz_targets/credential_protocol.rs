//! git's credential protocol as the helper reads it from stdin: no panic, and a request read
//! back from the URL it matches on is the same URL (what the helper sends to the broker).
#![no_main]

use extauth_git_askpass::protocol::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = Request::read(data) else {
        return;
    };
    if let Some(url) = request.match_url() {
        assert!(url.starts_with("http://") || url.starts_with("https://"), "{url}");
        if !url.contains('\n') && !url.contains('\0') {
            let again = Request::read(format!("url={url}\n").as_bytes()).unwrap();
            assert_eq!(again.match_url().as_deref(), Some(url.as_str()));
        }
    }
});
