//! The provider environment parser: `NAME=VALUE` lines in, validated providers or errors out,
//! never a panic; a configuration that parses matches its own URLs without panicking.
#![no_main]

use extauth_providers::Providers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let vars: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    match Providers::from_vars(vars) {
        Ok(providers) => {
            for p in &providers {
                let _ = providers.match_url(p.auth_url.as_str());
                let _ = providers.match_url(p.token_url.as_str());
            }
            let _ = providers.warnings();
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "an error without a problem");
            let _ = errors.to_string();
        }
    }
});
