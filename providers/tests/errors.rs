//! Every configuration mistake is reported with its variable and a fix; all of them at once.

use extauth_providers::{ConfigError, Providers};

/// The error messages for `vars`, which must not load.
#[track_caller]
fn errors(vars: &[(&str, &str)]) -> Vec<String> {
    match Providers::from_vars(vars.iter().copied()) {
        Ok(p) => panic!("expected errors, loaded {} providers", p.len()),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

#[track_caller]
fn check(vars: &[(&str, &str)], expected: &[&str]) {
    assert_eq!(errors(vars), expected);
}

const GITHUB: [(&str, &str); 2] = [
    ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
    ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    GITHUB.iter().chain(extra).copied().collect()
}

#[test]
fn unknown_key_suggests_the_closest() {
    check(
        &with(&[(
            "CODER_EXTERNAL_AUTH_0_VALIDATEURL",
            "https://api.github.com/user",
        )]),
        &[
            "CODER_EXTERNAL_AUTH_0_VALIDATEURL: unknown setting; did you mean CODER_EXTERNAL_AUTH_0_VALIDATE_URL?",
        ],
    );
    check(
        &with(&[("CODER_EXTERNAL_AUTH_0_client_secret", "s")]),
        &[
            "CODER_EXTERNAL_AUTH_0_client_secret: unknown setting; did you mean CODER_EXTERNAL_AUTH_0_CLIENT_SECRET?",
        ],
    );
    check(
        &with(&[("CODER_EXTERNAL_AUTH_0_COLOR", "red")]),
        &[
            "CODER_EXTERNAL_AUTH_0_COLOR: unknown setting; valid settings are ID, TYPE, CLIENT_ID, CLIENT_SECRET, AUTH_URL, TOKEN_URL, VALIDATE_URL, REVOKE_URL, REGEX, SCOPES, EXTRA_TOKEN_KEYS, DEVICE_FLOW, DEVICE_CODE_URL, NO_REFRESH, APP_INSTALL_URL, APP_INSTALLATIONS_URL, DISPLAY_NAME, DISPLAY_ICON, PKCE_METHODS, API_BASE_URL, INTERNAL_URL, GIT_AUTH, APP_ID, APP_PRIVATE_KEY_FILE",
        ],
    );
}

#[test]
fn gap_names_the_missing_index() {
    check(
        &with(&[
            ("CODER_EXTERNAL_AUTH_2_TYPE", "gitlab"),
            ("CODER_EXTERNAL_AUTH_2_CLIENT_ID", "c"),
        ]),
        &[
            "CODER_EXTERNAL_AUTH_1_*: missing, but CODER_EXTERNAL_AUTH_2_* is set; providers are numbered from 0 without gaps, so renumber CODER_EXTERNAL_AUTH_2_* to CODER_EXTERNAL_AUTH_1_*",
        ],
    );
    check(
        &[
            ("CODER_GITAUTH_1_TYPE", "github"),
            ("CODER_GITAUTH_1_CLIENT_ID", "c"),
        ],
        &[
            "CODER_GITAUTH_0_*: missing, but CODER_GITAUTH_1_* is set; providers are numbered from 0 without gaps, so renumber CODER_GITAUTH_1_* to CODER_GITAUTH_0_*",
        ],
    );
}

#[test]
fn bad_indices() {
    check(
        &with(&[("CODER_EXTERNAL_AUTH_x_TYPE", "github")]),
        &[
            "CODER_EXTERNAL_AUTH_x_TYPE: provider number \"x\" is not a number; name it CODER_EXTERNAL_AUTH_<N>_<KEY> with N = 0, 1, 2, …",
        ],
    );
    check(
        &with(&[("CODER_EXTERNAL_AUTH_01_TYPE", "github")]),
        &[
            "CODER_EXTERNAL_AUTH_01_TYPE: provider number \"01\" has a leading zero; write CODER_EXTERNAL_AUTH_1_…",
        ],
    );
    check(
        &with(&[("CODER_EXTERNAL_AUTH_0", "github")]),
        &[
            "CODER_EXTERNAL_AUTH_0: not a provider setting; name it CODER_EXTERNAL_AUTH_<N>_<KEY>, e.g. CODER_EXTERNAL_AUTH_0_CLIENT_ID",
        ],
    );
}

#[test]
fn booleans_follow_go_parse_bool() {
    check(
        &with(&[("CODER_EXTERNAL_AUTH_0_NO_REFRESH", "yes")]),
        &["CODER_EXTERNAL_AUTH_0_NO_REFRESH: \"yes\" is not a boolean; use true or false"],
    );
    check(
        &with(&[("CODER_EXTERNAL_AUTH_0_DEVICE_FLOW", "on")]),
        &["CODER_EXTERNAL_AUTH_0_DEVICE_FLOW: \"on\" is not a boolean; use true or false"],
    );
    for ok in [
        "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False",
    ] {
        let vars = with(&[("CODER_EXTERNAL_AUTH_0_NO_REFRESH", ok)]);
        assert!(Providers::from_vars(vars).is_ok(), "{ok}");
    }
}

#[test]
fn ids() {
    check(
        &with(&[("CODER_EXTERNAL_AUTH_0_ID", "my_github")]),
        &[
            "CODER_EXTERNAL_AUTH_0_ID: \"my_github\" is not a valid provider ID: only letters, digits and hyphens are allowed; use 1 to 32 letters and digits with single hyphens between them, e.g. primary-github",
        ],
    );
    check(
        &with(&[(
            "CODER_EXTERNAL_AUTH_0_ID",
            "a-very-long-provider-id-that-goes-on",
        )]),
        &[
            "CODER_EXTERNAL_AUTH_0_ID: \"a-very-long-provider-id-that-goes-on\" is not a valid provider ID: it is longer than 32 characters; use 1 to 32 letters and digits with single hyphens between them, e.g. primary-github",
        ],
    );
    check(
        &with(&[("CODER_EXTERNAL_AUTH_0_ID", "gh--1")]),
        &[
            "CODER_EXTERNAL_AUTH_0_ID: \"gh--1\" is not a valid provider ID: hyphens must stand between letters or digits, one at a time; use 1 to 32 letters and digits with single hyphens between them, e.g. primary-github",
        ],
    );
    check(
        &[
            ("CODER_EXTERNAL_AUTH_0_TYPE", "Bitbucket Server"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
            (
                "CODER_EXTERNAL_AUTH_0_AUTH_URL",
                "https://bb.example.com/oauth",
            ),
            (
                "CODER_EXTERNAL_AUTH_0_TOKEN_URL",
                "https://bb.example.com/token",
            ),
        ],
        &[
            "CODER_EXTERNAL_AUTH_0_ID: \"Bitbucket Server\" (taken from TYPE) is not a valid provider ID: only letters, digits and hyphens are allowed; use 1 to 32 letters and digits with single hyphens between them, e.g. primary-github",
        ],
    );
    for reserved in ["new", "create", "New"] {
        let message = format!(
            "CODER_EXTERNAL_AUTH_0_ID: \"{reserved}\" is reserved because it clashes with a page of the broker; choose another ID"
        );
        check(
            &with(&[("CODER_EXTERNAL_AUTH_0_ID", reserved)]),
            &[&message],
        );
    }
}

#[test]
fn duplicate_ids() {
    check(
        &with(&[
            ("CODER_EXTERNAL_AUTH_1_TYPE", "github"),
            ("CODER_EXTERNAL_AUTH_1_CLIENT_ID", "d"),
        ]),
        &[
            "CODER_EXTERNAL_AUTH_1_ID: provider ID \"github\" is already used by CODER_EXTERNAL_AUTH_0_*; the ID defaults to TYPE, so set CODER_EXTERNAL_AUTH_1_ID to a unique ID for each provider of this type",
        ],
    );
    // IDs that differ only in case would be indistinguishable to users: rejected too.
    check(
        &with(&[
            ("CODER_EXTERNAL_AUTH_0_ID", "gh"),
            ("CODER_GITAUTH_0_ID", "GH"),
            ("CODER_GITAUTH_0_TYPE", "github"),
            ("CODER_GITAUTH_0_CLIENT_ID", "d"),
        ]),
        &[
            "CODER_GITAUTH_0_ID: provider ID \"GH\" is already used by CODER_EXTERNAL_AUTH_0_*; set CODER_GITAUTH_0_ID to an ID no other provider uses",
        ],
    );
}

#[test]
fn required_settings() {
    check(
        &[("CODER_EXTERNAL_AUTH_0_TYPE", "github")],
        &[
            "CODER_EXTERNAL_AUTH_0_CLIENT_ID: required; set it to the client ID of the OAuth application registered with the provider",
        ],
    );
    check(
        &[("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c")],
        &[
            "CODER_EXTERNAL_AUTH_0_TYPE: required; set it to github, gitlab, bitbucket-cloud, bitbucket-server, azure-devops, azure-devops-entra, gitea, jfrog or slack, or to any other name for a generic OAuth2 provider",
        ],
    );
    // An empty value counts as unset, as in Coder.
    check(
        &[
            ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "  "),
        ],
        &[
            "CODER_EXTERNAL_AUTH_0_CLIENT_ID: required; set it to the client ID of the OAuth application registered with the provider",
        ],
    );
}

#[test]
fn regex_compile_error() {
    let errors = errors(&with(&[(
        "CODER_EXTERNAL_AUTH_0_REGEX",
        "^(https://github\\.com",
    )]));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(
            "CODER_EXTERNAL_AUTH_0_REGEX: invalid regular expression (regex parse error:"
        ),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].ends_with("; fix the pattern, e.g. ^(https?://)?github\\.com(/.*)?$"),
        "{}",
        errors[0]
    );
    assert!(!errors[0].contains('\n'));
}

#[test]
fn device_flow_needs_a_device_code_url() {
    check(
        &[
            ("CODER_EXTERNAL_AUTH_0_TYPE", "gitlab"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
            ("CODER_EXTERNAL_AUTH_0_DEVICE_FLOW", "true"),
        ],
        &[
            "CODER_EXTERNAL_AUTH_0_DEVICE_CODE_URL: required because DEVICE_FLOW is true; set it to the provider's device authorization endpoint, or set DEVICE_FLOW=false",
        ],
    );
    // GitHub has a default device code URL.
    let ok = with(&[("CODER_EXTERNAL_AUTH_0_DEVICE_FLOW", "true")]);
    assert!(Providers::from_vars(ok).is_ok());
}

#[test]
fn types_that_need_an_auth_url() {
    for (kind, example) in [
        (
            "bitbucket-server",
            "https://bitbucket.example.com/rest/oauth2/latest/authorize",
        ),
        ("jfrog", "https://jfrog.example.com/ui/authorization"),
        (
            "azure-devops-entra",
            "https://login.microsoftonline.com/<tenant-id>/oauth2/authorize",
        ),
    ] {
        let message = format!(
            "CODER_EXTERNAL_AUTH_0_AUTH_URL: required for type {kind}; set it, e.g. {example} (the other endpoints are derived from it)"
        );
        check(
            &[
                ("CODER_EXTERNAL_AUTH_0_TYPE", kind),
                ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
            ],
            &[&message],
        );
    }
    check(
        &[
            ("CODER_EXTERNAL_AUTH_0_TYPE", "keycloak"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        ],
        &[
            "CODER_EXTERNAL_AUTH_0_AUTH_URL: required for type keycloak; set it, e.g. https://idp.example.com/oauth2/authorize (generic OAuth2 providers have no default AUTH_URL)",
            "CODER_EXTERNAL_AUTH_0_TOKEN_URL: required for type keycloak; set it, e.g. https://idp.example.com/oauth2/token (generic OAuth2 providers have no default TOKEN_URL)",
        ],
    );
    // A misspelt type is a generic provider; the error says which type was probably meant.
    check(
        &[
            ("CODER_EXTERNAL_AUTH_0_TYPE", "github-enterprise"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        ],
        &[
            "CODER_EXTERNAL_AUTH_0_AUTH_URL: required for type github-enterprise; set it, e.g. https://idp.example.com/oauth2/authorize (\"github-enterprise\" is not a known type, so it is a generic OAuth2 provider that needs every endpoint; did you mean TYPE=github?)",
            "CODER_EXTERNAL_AUTH_0_TOKEN_URL: required for type github-enterprise; set it, e.g. https://idp.example.com/oauth2/token (\"github-enterprise\" is not a known type, so it is a generic OAuth2 provider that needs every endpoint; did you mean TYPE=github?)",
        ],
    );
}

#[test]
fn entra_auth_url_shape() {
    for bad in [
        "https://login.microsoftonline.com",
        "https://login.microsoftonline.com/tenant",
        "https://login.microsoftonline.com/tenant/oauth2",
        "https://login.microsoftonline.com/tenant/oauth2/v2.0/authorize",
        "https://login.microsoftonline.com//oauth2/authorize",
    ] {
        let message = format!(
            "CODER_EXTERNAL_AUTH_0_AUTH_URL: {bad:?} is not an Entra ID v1 authorize URL; use https://login.microsoftonline.com/<tenant-id>/oauth2/authorize"
        );
        check(
            &[
                ("CODER_EXTERNAL_AUTH_0_TYPE", "azure-devops-entra"),
                ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
                ("CODER_EXTERNAL_AUTH_0_AUTH_URL", bad),
            ],
            &[&message],
        );
    }
}

#[test]
fn urls_must_be_http() {
    check(
        &with(&[(
            "CODER_EXTERNAL_AUTH_0_VALIDATE_URL",
            "ftp://api.github.com/user",
        )]),
        &[
            "CODER_EXTERNAL_AUTH_0_VALIDATE_URL: \"ftp://api.github.com/user\" is not a valid URL (scheme \"ftp\" is not http or https); use an absolute http:// or https:// URL",
        ],
    );
    check(
        &with(&[(
            "CODER_EXTERNAL_AUTH_0_TOKEN_URL",
            "github.com/login/oauth/access_token",
        )]),
        &[
            "CODER_EXTERNAL_AUTH_0_TOKEN_URL: \"github.com/login/oauth/access_token\" is not a valid URL (relative URL without a base); use an absolute http:// or https:// URL",
        ],
    );
    // A bad AUTH_URL of a self-hosted type is reported once, not also as "required".
    check(
        &[
            ("CODER_EXTERNAL_AUTH_0_TYPE", "bitbucket-server"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
            ("CODER_EXTERNAL_AUTH_0_AUTH_URL", "bb.example.com"),
        ],
        &[
            "CODER_EXTERNAL_AUTH_0_AUTH_URL: \"bb.example.com\" is not a valid URL (relative URL without a base); use an absolute http:// or https:// URL",
        ],
    );
}

#[test]
fn pkce_methods() {
    check(
        &with(&[("CODER_EXTERNAL_AUTH_0_PKCE_METHODS", "plain")]),
        &[
            "CODER_EXTERNAL_AUTH_0_PKCE_METHODS: \"plain\" is not a supported PKCE method; use S256, or none to turn PKCE off",
        ],
    );
}

#[test]
fn every_problem_is_reported_together() {
    let err = Providers::from_vars([
        ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
        (
            "CODER_EXTERNAL_AUTH_0_VALIDATEURL",
            "https://api.github.com/user",
        ),
        ("CODER_EXTERNAL_AUTH_1_TYPE", "gitlab"),
        ("CODER_EXTERNAL_AUTH_1_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_1_NO_REFRESH", "nope"),
        ("CODER_EXTERNAL_AUTH_3_TYPE", "gitea"),
        ("CODER_EXTERNAL_AUTH_3_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_3_REGEX", "("),
    ])
    .unwrap_err();
    let variables: Vec<String> = err.errors.iter().map(ConfigError::variable).collect();
    assert_eq!(
        variables,
        [
            "CODER_EXTERNAL_AUTH_0_VALIDATEURL",
            "CODER_EXTERNAL_AUTH_2_*",
            "CODER_EXTERNAL_AUTH_0_CLIENT_ID",
            "CODER_EXTERNAL_AUTH_1_NO_REFRESH",
            "CODER_EXTERNAL_AUTH_3_REGEX",
        ]
    );
    let text = err.to_string();
    assert!(text.starts_with("5 problems in the external auth configuration:\n  - CODER_EXTERNAL_AUTH_0_VALIDATEURL: unknown setting"), "{text}");
}

#[test]
fn secrets_never_appear_in_errors() {
    let err = Providers::from_vars([
        ("CODER_EXTERNAL_AUTH_0_TYPE", "nope nope"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_SECRET", "hunter2-secret"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_SECRETS", "hunter3-secret"),
    ])
    .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("hunter2") && !text.contains("hunter3"),
        "{text}"
    );
}

#[test]
fn client_id_and_secret_can_come_from_files() {
    let dir = std::env::temp_dir().join(format!("extauth-provider-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let id = dir.join("client-id");
    let secret = dir.join("client-secret");
    std::fs::write(&id, "from-a-file\n").unwrap();
    // A secret keeps its inner whitespace; only the file's final line ending goes.
    std::fs::write(&secret, " s3cret with spaces \r\n").unwrap();
    let (id_path, secret_path) = (id.to_str().unwrap(), secret.to_str().unwrap());
    let providers = Providers::from_vars([
        ("CODER_EXTERNAL_AUTH_0_TYPE", "gitea"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID_FILE", id_path),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_SECRET_FILE", secret_path),
        (
            "CODER_EXTERNAL_AUTH_0_AUTH_URL",
            "https://gitea.test/login/oauth/authorize",
        ),
        (
            "CODER_EXTERNAL_AUTH_0_TOKEN_URL",
            "https://gitea.test/login/oauth/access_token",
        ),
        (
            "CODER_EXTERNAL_AUTH_0_VALIDATE_URL",
            "https://gitea.test/api/v1/user",
        ),
        ("CODER_EXTERNAL_AUTH_0_REGEX", "^https://gitea\\.test/.*$"),
    ])
    .unwrap();
    let provider = providers.iter().next().unwrap();
    assert_eq!(provider.client_id, "from-a-file");
    assert_eq!(
        provider.client_secret.as_ref().unwrap().secret(),
        " s3cret with spaces "
    );

    // Both the value and the file: which one was meant is unclear.
    let both = errors(&[
        ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID_FILE", id_path),
    ]);
    assert_eq!(
        both,
        [
            "CODER_EXTERNAL_AUTH_0_CLIENT_ID: set either it or CODER_EXTERNAL_AUTH_0_CLIENT_ID_FILE, not both"
        ]
    );
    // A file that is not there names the variable and the path.
    let missing = dir.join("nothing-here");
    let unreadable = errors(&[
        ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        (
            "CODER_EXTERNAL_AUTH_0_CLIENT_SECRET_FILE",
            missing.to_str().unwrap(),
        ),
    ]);
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert!(
        unreadable[0].starts_with(&format!(
            "CODER_EXTERNAL_AUTH_0_CLIENT_SECRET_FILE: cannot read {}: ",
            missing.display()
        )),
        "{unreadable:?}"
    );
    // Only the client id and secret have a _FILE form.
    assert_eq!(
        errors(&[
            ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
            ("CODER_EXTERNAL_AUTH_0_SCOPES_FILE", id_path),
        ])
        .len(),
        1
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
