//! Matching a repository URL to providers, as the workspace API does for any `match=` a
//! workspace sends: no panic, and the chosen provider is always one of the candidates.
#![no_main]

use extauth_providers::Providers;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn providers() -> &'static Providers {
    static PROVIDERS: OnceLock<Providers> = OnceLock::new();
    PROVIDERS.get_or_init(|| {
        Providers::from_vars([
            ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
            ("CODER_EXTERNAL_AUTH_1_TYPE", "gitlab"),
            ("CODER_EXTERNAL_AUTH_1_CLIENT_ID", "c"),
            ("CODER_EXTERNAL_AUTH_2_TYPE", "azure-devops"),
            ("CODER_EXTERNAL_AUTH_2_CLIENT_ID", "c"),
            ("CODER_EXTERNAL_AUTH_3_TYPE", "gitea"),
            ("CODER_EXTERNAL_AUTH_3_ID", "gitea"),
            ("CODER_EXTERNAL_AUTH_3_CLIENT_ID", "c"),
            ("CODER_EXTERNAL_AUTH_3_AUTH_URL", "https://gitea.example.com/login/oauth/authorize"),
            ("CODER_EXTERNAL_AUTH_4_TYPE", "bitbucket-server"),
            ("CODER_EXTERNAL_AUTH_4_CLIENT_ID", "c"),
            ("CODER_EXTERNAL_AUTH_4_AUTH_URL", "https://bb.example.com/rest/oauth2/latest/authorize"),
        ])
        .expect("the fuzz configuration is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let url = String::from_utf8_lossy(data);
    if let Ok(matched) = providers().match_url(&url) {
        if let Some(chosen) = matched.chosen {
            assert!(matched.candidates.iter().any(|c| c.id == chosen.id));
        }
    }
});
