//! No input, however malformed, makes configuration parsing panic.

use extauth_providers::{Providers, Setting};
use proptest::prelude::*;

/// Variable names that mostly hit the parser's interesting paths.
fn name() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just("CODER_EXTERNAL_AUTH_".to_owned()),
        Just("CODER_GITAUTH_".to_owned()),
        Just("CODER_EXTERNAL_AUTH".to_owned()),
        "[A-Z_]{0,12}",
    ];
    let index = prop_oneof![
        (0usize..14).prop_map(|n| n.to_string()),
        Just("01".to_owned()),
        Just(String::new()),
        "[0-9a-z_]{0,25}",
    ];
    let key = prop_oneof![
        prop::sample::select(Setting::ALL.to_vec()).prop_map(|s| s.key().to_owned()),
        "[A-Za-z_]{0,16}",
    ];
    (prefix, index, key).prop_map(|(p, i, k)| format!("{p}{i}_{k}"))
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "github",
            "gitlab",
            "bitbucket",
            "bitbucket-server",
            "azure-devops",
            "azure-devops-entra",
            "gitea",
            "jfrog",
            "slack",
            "oidc",
            "true",
            "0",
            "S256",
            "none",
            "https://login.microsoftonline.com/t/oauth2/authorize",
            "https://login.microsoftonline.com/oauth2",
            "https://x.example.com",
            "https://x.example.com:99999",
            "http://[::1]:8080/oauth/authorize",
            "ftp://x",
            "^(https?://)?x\\.com(/.*)?$",
            "(",
            "new",
            "-",
            "",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
        "https?://[a-z0-9.:@/\\[\\]%-]{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parsing_never_panics(vars in prop::collection::vec((name(), value()), 0..24)) {
        match Providers::from_vars(vars) {
            Ok(providers) => {
                for p in &providers {
                    let _ = providers.match_url(p.auth_url.as_str());
                }
            }
            Err(errors) => {
                prop_assert!(!errors.errors.is_empty());
                let _ = errors.to_string();
            }
        }
    }

    #[test]
    fn matching_never_panics(url in any::<String>()) {
        let providers = Providers::from_vars([
            ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        ]).unwrap();
        let _ = providers.match_url(&url);
    }
}
