//! `extauth-broker config check`, run as an operator would: the real binary, a clean environment.

use std::process::{Command, Output};

use serde_json::{Value, json};

const SECRET: &str = "s3cr3t-client-secret-value";

fn run(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_extauth-broker"))
        .env_clear()
        .envs(env.iter().copied())
        .args(["config", "check"])
        .args(args)
        .output()
        .expect("run extauth-broker")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[track_caller]
fn assert_no_secret(o: &Output) {
    assert!(!stdout(o).contains(SECRET) && !stderr(o).contains(SECRET));
}

/// github, self-managed gitlab, legacy bitbucket.
const MIXED: &[(&str, &str)] = &[
    ("CODER_ACCESS_URL", "https://dev.example.com/extauth/"),
    ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
    ("CODER_EXTERNAL_AUTH_0_ID", "primary-github"),
    ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "Iv1.gh"),
    ("CODER_EXTERNAL_AUTH_0_CLIENT_SECRET", SECRET),
    ("CODER_EXTERNAL_AUTH_1_TYPE", "gitlab"),
    ("CODER_EXTERNAL_AUTH_1_CLIENT_ID", "gl"),
    ("CODER_EXTERNAL_AUTH_1_CLIENT_SECRET", SECRET),
    (
        "CODER_EXTERNAL_AUTH_1_AUTH_URL",
        "https://gitlab.corp.example/oauth/authorize",
    ),
    ("CODER_GITAUTH_0_TYPE", "bitbucket"),
    ("CODER_GITAUTH_0_CLIENT_ID", "bb"),
];

#[test]
fn json_lists_resolved_providers() {
    let o = run(MIXED, &["--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_no_secret(&o);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["access_url"], "https://dev.example.com/extauth/");
    let providers = v["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 3);
    assert_eq!(
        providers[0],
        json!({
            "id": "primary-github",
            "type": "github",
            "display_name": "GitHub",
            "client_id": "Iv1.gh",
            "client_secret": "set",
            "auth_url": "https://github.com/login/oauth/authorize",
            "token_url": "https://github.com/login/oauth/access_token",
            "validate_url": "https://api.github.com/user",
            "revoke_url": "https://api.github.com/applications/Iv1.gh/grant",
            "device_code_url": "https://github.com/login/device/code",
            "regex": "^(https?://)?github\\.com(/.*)?$",
            "scopes": ["repo", "workflow"],
            "extra_token_keys": [],
            "device_flow": false,
            "no_refresh": false,
            "pkce_methods": ["S256"],
            "api_base_url": "https://api.github.com/",
            "callback_url": "https://dev.example.com/extauth/external-auth/primary-github/callback",
            "askpass_username": "token",
            "git_auth": "basic",
            "source": "CODER_EXTERNAL_AUTH_0_*",
        })
    );
    assert_eq!(providers[1]["id"], "gitlab");
    assert_eq!(
        providers[1]["token_url"],
        "https://gitlab.corp.example/oauth/token"
    );
    assert_eq!(
        providers[1]["validate_url"],
        "https://gitlab.corp.example/oauth/token/info"
    );
    assert_eq!(
        providers[1]["regex"],
        "^(https?://)?gitlab\\.corp\\.example(/.*)?$"
    );
    assert_eq!(providers[1]["askpass_username"], "oauth2");
    assert_eq!(providers[2]["id"], "bitbucket");
    assert_eq!(providers[2]["type"], "bitbucket-cloud");
    assert_eq!(providers[2]["client_secret"], "unset");
    assert_eq!(providers[2]["pkce_methods"], json!(["none"]));
    assert_eq!(providers[2]["askpass_username"], "x-token-auth");
    assert_eq!(
        providers[2]["callback_url"],
        "https://dev.example.com/extauth/external-auth/bitbucket/callback"
    );
    assert_eq!(v["errors"], json!([]));
    assert_eq!(
        v["warnings"],
        json!([{
            "variable": "CODER_GITAUTH_0_CLIENT_SECRET",
            "message": "CODER_GITAUTH_0_CLIENT_SECRET: unset; the code exchange will fail unless the provider accepts public clients",
        }])
    );
    assert!(v.get("match").is_none());
}

#[test]
fn match_reports_chosen_and_candidates() {
    let mut env = MIXED.to_vec();
    env.extend([
        ("CODER_EXTERNAL_AUTH_2_TYPE", "github"),
        ("CODER_EXTERNAL_AUTH_2_ID", "github-any"),
        ("CODER_EXTERNAL_AUTH_2_CLIENT_ID", "x"),
    ]);
    let o = run(
        &env,
        &[
            "--output",
            "json",
            "--match",
            "https://me@github.com/org/repo.git",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["match"],
        json!({
            "url": "https://github.com/org/repo.git",
            "chosen": "primary-github",
            "candidates": ["primary-github", "github-any"],
        })
    );

    let o = run(
        MIXED,
        &["--output", "json", "--match", "https://example.com/x.git"],
    );
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["match"],
        json!({"url": "https://example.com/x.git", "chosen": null, "candidates": []})
    );

    let o = run(MIXED, &["--match", "https://gitlab.corp.example/g/p.git"]);
    assert!(
        stdout(&o)
            .contains("https://gitlab.corp.example/g/p.git → gitlab (candidates in order: gitlab)"),
        "{}",
        stdout(&o)
    );

    let o = run(MIXED, &["--match", "ssh://git@github.com/o/r"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--match: scheme \"ssh\" is not http or https"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn text_output_shows_callbacks_and_hides_the_secret() {
    let o = run(MIXED, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_no_secret(&o);
    let out = stdout(&o);
    assert!(
        out.contains("primary-github (github) from CODER_EXTERNAL_AUTH_0_*"),
        "{out}"
    );
    assert!(out.contains("  client secret    set\n"), "{out}");
    assert!(out.contains("  callback URL     https://dev.example.com/extauth/external-auth/primary-github/callback\n"), "{out}");
    assert!(
        out.contains("bitbucket (bitbucket-cloud) from CODER_GITAUTH_0_*"),
        "{out}"
    );
    assert!(stderr(&o).contains("warning: CODER_GITAUTH_0_CLIENT_SECRET: unset"));
}

/// The mixed configuration of a new user, with a typo and a gap: every error at once, exit 1.
#[test]
fn errors_are_all_listed_with_exit_1() {
    let mut env = MIXED.to_vec();
    env.extend([
        (
            "CODER_EXTERNAL_AUTH_0_VALIDATEURL",
            "https://api.github.com/user",
        ),
        ("CODER_EXTERNAL_AUTH_3_TYPE", "gitea"),
        ("CODER_EXTERNAL_AUTH_3_CLIENT_ID", "g"),
    ]);
    let o = run(&env, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_no_secret(&o);
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        "warning: CODER_EXTERNAL_AUTH_3_CLIENT_SECRET: unset; the code exchange will fail unless the provider accepts public clients\n\
         warning: CODER_GITAUTH_0_CLIENT_SECRET: unset; the code exchange will fail unless the provider accepts public clients\n\
         error: 2 problems in the configuration:\n  \
         - CODER_EXTERNAL_AUTH_0_VALIDATEURL: unknown setting; did you mean CODER_EXTERNAL_AUTH_0_VALIDATE_URL?\n  \
         - CODER_EXTERNAL_AUTH_2_*: missing, but CODER_EXTERNAL_AUTH_3_* is set; providers are numbered from 0 without gaps, so renumber CODER_EXTERNAL_AUTH_3_* to CODER_EXTERNAL_AUTH_2_*\n"
    );

    let o = run(&env, &["--output", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["providers"], json!([]));
    let variables = error_variables(&v);
    assert_eq!(
        variables,
        [
            "CODER_EXTERNAL_AUTH_0_VALIDATEURL",
            "CODER_EXTERNAL_AUTH_2_*"
        ]
    );
}

#[test]
fn bad_access_url_is_an_error() {
    let mut env = MIXED.to_vec();
    env[0] = ("CODER_ACCESS_URL", "dev.example.com");
    let o = run(&env, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("  - CODER_ACCESS_URL: \"dev.example.com\" is not a usable access URL (relative URL without a base); set it to the broker's public base URL, e.g. https://extauth.example.com\n"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn default_access_url_and_empty_config() {
    let o = run(&[], &[]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        "access URL: http://127.0.0.1:3000/\nOAuth2 provider: on (discovery at http://127.0.0.1:3000/.well-known/openid-configuration; CODER_OAUTH2_PROVIDER_ENABLE=false turns it off)\nno external auth providers configured; set CODER_EXTERNAL_AUTH_0_TYPE and CODER_EXTERNAL_AUTH_0_CLIENT_ID to add one\n"
    );
    let o = run(
        &[
            ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        ],
        &["--output", "json"],
    );
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["providers"][0]["callback_url"],
        "http://127.0.0.1:3000/external-auth/github/callback"
    );
}

#[test]
fn without_an_access_url_the_listen_address_gives_it() {
    let o = run(
        &[
            ("CODER_HTTP_ADDRESS", "0.0.0.0:8080"),
            ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        ],
        &["--output", "json"],
    );
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["access_url"], "http://127.0.0.1:8080/");
    assert_eq!(
        v["providers"][0]["callback_url"],
        "http://127.0.0.1:8080/external-auth/github/callback"
    );
}

#[test]
fn the_rest_of_the_configuration_is_checked_as_at_start() {
    let env = [
        ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        ("EXTAUTH_REFRESH_MARGIN", "soon"),
        (
            "CODER_PG_CONNECTION_URL",
            "postgres://extauth@127.0.0.1/extauth",
        ),
        ("CODER_TLS_CERT_FILE", "/nonexistent/cert.pem"),
        ("CODER_OIDC_ISSUER_URL", "https://idp.example.com/"),
        ("CODER_OIDC_CLIENT_ID", "extauth"),
    ];
    let o = run(&env, &["--output", "json"]);
    assert_eq!(o.status.code(), Some(1), "start would be refused");
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let variables = error_variables(&v);
    assert_eq!(
        variables,
        [
            "EXTAUTH_REFRESH_MARGIN",
            "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS",
            "CODER_TLS_KEY_FILE",
            "CODER_OIDC_CLIENT_SECRET"
        ],
        "{v}"
    );
    assert_eq!(
        v["providers"][0]["id"], "github",
        "providers are still shown"
    );
    let text = run(&env, &[]);
    assert!(
        stderr(&text).contains("  - EXTAUTH_REFRESH_MARGIN: \"soon\" is not a duration"),
        "{}",
        stderr(&text)
    );
}

/// The `variable` of each error in a JSON report, in order.
fn error_variables(report: &Value) -> Vec<&str> {
    report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["variable"].as_str().unwrap())
        .collect()
}

#[test]
fn an_encryption_key_start_would_refuse_is_an_error() {
    for (keys, says) in [
        (
            "c2hvcnQ=",
            "key number 1 is not a base64-encoded 32-byte key",
        ),
        (
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "key number 2 repeats an earlier key",
        ),
    ] {
        let env = [
            ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
            ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
            ("CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS", keys),
        ];
        let o = run(&env, &["--output", "json"]);
        assert_eq!(o.status.code(), Some(1), "start would be refused: {keys}");
        let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(
            error_variables(&v),
            ["CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS"],
            "{v}"
        );
        assert!(v.to_string().contains(says), "{v}");
        assert!(
            !v.to_string().contains(keys),
            "the key itself is never echoed: {v}"
        );
    }
}
