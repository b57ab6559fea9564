//! The README and the programs cannot drift apart: the README's console examples that run
//! offline are run here, and their printed output must be what the README shows (`…` in the
//! README stands for any text). The demo banner is checked the same way in `demo.rs`.

use std::process::Command;

use extauth_tests::readme::{blocks, matches};

#[test]
fn the_readme_s_config_check_example_is_what_config_check_prints() {
    let readme = extauth_tests::readme::text();
    let block = blocks(&readme)
        .into_iter()
        .find(|(info, lines)| {
            info == "console" && lines.iter().any(|l| l == "$ extauth-broker config check")
        })
        .expect("the README shows config check");
    let (commands, expected): (Vec<&String>, Vec<&String>) =
        block.1.iter().partition(|l| l.starts_with("$ "));
    let script: Vec<&str> = commands.iter().map(|l| &l[2..]).collect();
    let path = format!(
        "{}:{}",
        extauth_tests::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{} 2>&1", script.join("\n")))
        .env_clear()
        .env("PATH", path)
        .env("HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    let printed: Vec<&str> = printed.lines().collect();
    assert_eq!(
        printed.len(),
        expected.len(),
        "README shows:\n{}\nthe program printed:\n{}",
        expected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        printed.join("\n")
    );
    for (want, got) in expected.iter().zip(&printed) {
        assert!(matches(want, got), "README: {want}\nprinted: {got}");
    }
}

#[test]
fn wildcards_match_any_text() {
    assert!(matches("a … b", "a xyz b"));
    assert!(matches("token=…", "token=abc"));
    assert!(!matches("a … b", "a xyz c"));
    assert!(matches("exact", "exact"));
    assert!(!matches("exact", "exactly"));
}

/// The README's trust policy example is a policy file the broker takes.
#[test]
fn the_readme_s_workload_policy_example_is_a_valid_policy_file() {
    let readme = extauth_tests::readme::text();
    let (_, lines) = blocks(&readme)
        .into_iter()
        .find(|(info, lines)| info == "yaml" && lines.first().is_some_and(|l| l == "policies:"))
        .expect("a policies: example");
    let known = extauth_broker::workload::Known {
        providers: vec!["github".to_owned()],
        apps: vec!["github".to_owned()],
        scopes: vec!["external-auth:read".to_owned()],
    };
    let policies = extauth_broker::workload::policy::parse(&lines.join("\n"), &known)
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["dev-pods", "ci-deploy"]);
    assert!(policies[1].github_app.is_some());
}
