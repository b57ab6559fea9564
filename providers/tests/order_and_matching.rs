//! Configuration order (numeric, legacy appended) and URL matching.

use extauth_providers::{MatchError, Providers};

fn ids(providers: &Providers) -> Vec<&str> {
    providers.iter().map(|p| p.id.as_str()).collect()
}

#[test]
fn twelve_providers_in_numeric_order() {
    let mut vars = Vec::new();
    // Inserted in reverse lexical order of their names, to prove the input order is irrelevant.
    for n in (0..12).rev() {
        vars.push((format!("CODER_EXTERNAL_AUTH_{n}_TYPE"), "gitea".to_owned()));
        vars.push((format!("CODER_EXTERNAL_AUTH_{n}_ID"), format!("p{n}")));
        vars.push((format!("CODER_EXTERNAL_AUTH_{n}_CLIENT_ID"), "c".to_owned()));
    }
    vars.sort(); // Lexical: _10_ and _11_ before _2_, as Coder sorts.
    let providers = Providers::from_vars(vars).unwrap();
    assert_eq!(
        ids(&providers),
        [
            "p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10", "p11"
        ]
    );
}

#[test]
fn legacy_gitauth_providers_come_after() {
    let providers = Providers::from_vars([
        ("CODER_GITAUTH_0_TYPE", "bitbucket"),
        ("CODER_GITAUTH_0_CLIENT_ID", "c"),
        ("CODER_GITAUTH_1_TYPE", "azure-devops"),
        ("CODER_GITAUTH_1_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_1_TYPE", "gitlab"),
        ("CODER_EXTERNAL_AUTH_1_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
    ])
    .unwrap();
    assert_eq!(
        ids(&providers),
        ["github", "gitlab", "bitbucket", "azure-devops"]
    );
    assert_eq!(
        providers.get("bitbucket").unwrap().source.to_string(),
        "CODER_GITAUTH_0_*"
    );
}

fn mixed() -> Providers {
    Providers::from_vars([
        ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
        ("CODER_EXTERNAL_AUTH_0_ID", "github-org"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        (
            "CODER_EXTERNAL_AUTH_0_REGEX",
            r"^https://github\.com/my-org(/.*)?$",
        ),
        ("CODER_EXTERNAL_AUTH_1_TYPE", "github"),
        ("CODER_EXTERNAL_AUTH_1_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_2_TYPE", "gitlab"),
        ("CODER_EXTERNAL_AUTH_2_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_3_TYPE", "gitlab"),
        ("CODER_EXTERNAL_AUTH_3_ID", "corp-gitlab"),
        ("CODER_EXTERNAL_AUTH_3_CLIENT_ID", "c"),
        (
            "CODER_EXTERNAL_AUTH_3_AUTH_URL",
            "https://gitlab.corp.example/oauth/authorize",
        ),
        ("CODER_EXTERNAL_AUTH_4_TYPE", "bitbucket"),
        ("CODER_EXTERNAL_AUTH_4_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_5_TYPE", "azure-devops"),
        ("CODER_EXTERNAL_AUTH_5_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_6_TYPE", "slack"),
        ("CODER_EXTERNAL_AUTH_6_CLIENT_ID", "c"),
    ])
    .unwrap()
}

#[track_caller]
fn check(providers: &Providers, url: &str, chosen: Option<&str>, candidates: &[&str]) {
    let m = providers.match_url(url).unwrap();
    assert_eq!(m.chosen.map(|p| p.id.as_str()), chosen, "chosen for {url}");
    assert_eq!(
        m.candidates
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        candidates,
        "candidates for {url}"
    );
}

#[test]
fn default_regexes_match_http_https_user_and_path() {
    let p = mixed();
    check(&p, "https://github.com", Some("github"), &["github"]);
    check(&p, "http://github.com", Some("github"), &["github"]);
    check(
        &p,
        "https://user@github.com/org/repo.git",
        Some("github"),
        &["github"],
    );
    check(&p, "github.com/org/repo", Some("github"), &["github"]);
    check(
        &p,
        "https://gitlab.com/group/sub/project.git",
        Some("gitlab"),
        &["gitlab"],
    );
    check(&p, "https://oauth2@gitlab.com", Some("gitlab"), &["gitlab"]);
    check(
        &p,
        "https://gitlab.corp.example/g/p.git",
        Some("corp-gitlab"),
        &["corp-gitlab"],
    );
    check(
        &p,
        "https://x-token-auth@bitbucket.org/ws/repo.git",
        Some("bitbucket"),
        &["bitbucket"],
    );
    check(
        &p,
        "https://dev.azure.com/org/project/_git/repo",
        Some("azure-devops"),
        &["azure-devops"],
    );
}

#[test]
fn first_match_in_config_order_wins_and_all_candidates_are_named() {
    let p = mixed();
    check(
        &p,
        "https://github.com/my-org/repo.git",
        Some("github-org"),
        &["github-org", "github"],
    );
    // Without the path (git's default, credential.useHttpPath off) only the broad one matches.
    check(&p, "https://github.com", Some("github"), &["github"]);
}

#[test]
fn other_hosts_match_nothing() {
    let p = mixed();
    for url in [
        "https://github.com.evil.example/org/repo",
        "https://evilgithub.com/org/repo",
        "https://gitlab.com.example",
        "https://example.com/github.com/org/repo",
        "https://slack.com/api",
        "https://bitbucket.example.com/scm/p/r.git",
    ] {
        check(&p, url, None, &[]);
    }
}

#[test]
fn non_http_urls_are_refused() {
    let p = mixed();
    assert_eq!(
        p.match_url("ssh://git@github.com/org/repo.git")
            .unwrap_err(),
        MatchError::UnsupportedScheme("ssh".to_owned())
    );
    assert!(matches!(
        p.match_url("https://"),
        Err(MatchError::NotAUrl(_))
    ));
}

#[test]
fn git_hosts_are_read_from_regexes() {
    let p = mixed();
    let host = |id: &str| p.get(id).unwrap().git_host();
    assert_eq!(host("github").as_deref(), Some("github.com"));
    assert_eq!(host("github-org").as_deref(), Some("github.com"));
    assert_eq!(host("corp-gitlab").as_deref(), Some("gitlab.corp.example"));
    assert_eq!(host("azure-devops").as_deref(), Some("dev.azure.com"));
    assert_eq!(host("slack"), None);
    assert!(p.get("github-org").unwrap().needs_http_path());
    assert!(!p.get("github").unwrap().needs_http_path());
    let odd = Providers::from_vars([
        ("CODER_EXTERNAL_AUTH_0_TYPE", "github"),
        ("CODER_EXTERNAL_AUTH_0_CLIENT_ID", "c"),
        ("CODER_EXTERNAL_AUTH_0_REGEX", r".*github.*"),
        ("CODER_EXTERNAL_AUTH_1_TYPE", "gitea"),
        ("CODER_EXTERNAL_AUTH_1_CLIENT_ID", "c"),
        (
            "CODER_EXTERNAL_AUTH_1_REGEX",
            r"^https?://127\.0\.0\.1:8080/gl/.*$",
        ),
    ])
    .unwrap();
    assert_eq!(odd.get("github").unwrap().git_host(), None);
    assert_eq!(
        odd.get("gitea").unwrap().git_host().as_deref(),
        Some("127.0.0.1:8080")
    );
    assert!(odd.get("gitea").unwrap().needs_http_path());
}
