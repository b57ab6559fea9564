//! The `GIT_ASKPASS` prompt parser: whatever git (or anything else) passes as the prompt.
#![no_main]

use extauth_git_askpass::prompt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = prompt::parse(&text);
    let _ = prompt::is_askpass(&["git-credential-extauth".to_owned(), text.into_owned()]);
});
