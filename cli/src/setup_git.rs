//! `extauth setup-git`: git asks `git-credential-extauth` for every provider host, and sends
//! the repository path where the broker needs it to choose between providers.

use std::io::Write;
use std::process::Command;

use extauth_git_askpass::workspace::{Client, api_error};
use serde_json::Value;

use crate::{Failure, Outcome};

/// What the helper is called in git's config: `extauth` when `git-credential-extauth` is on
/// PATH, else its absolute path next to this binary.
fn helper_name() -> String {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("git-credential-extauth").is_file()))
        .unwrap_or(false);
    if on_path {
        return "extauth".to_owned();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("git-credential-extauth")))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "extauth".to_owned())
}

fn git_config(scope: &str, args: &[&str]) -> Result<(bool, String), Failure> {
    let output = Command::new("git")
        .arg("config")
        .arg(scope)
        .args(args)
        .output()
        .map_err(|e| Failure(format!("cannot run git: {e}"), 1))?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// Sets `key` to exactly `values` (multi-valued); whether anything changed.
fn set_all(scope: &str, key: &str, values: &[&str]) -> Result<bool, Failure> {
    let (_, current) = git_config(scope, &["--get-all", key])?;
    let current: Vec<&str> = current.lines().collect();
    if current == values {
        return Ok(false);
    }
    if !current.is_empty() {
        git_config(scope, &["--unset-all", key])?;
    }
    for value in values {
        let (ok, _) = git_config(scope, &["--add", key, value])?;
        if !ok {
            return Err(Failure(format!("git config {scope} --add {key} failed"), 1));
        }
    }
    Ok(true)
}

pub fn run(client: &Client, global: bool, out: &mut dyn Write) -> Outcome {
    let scope = if global { "--global" } else { "--local" };
    if !global {
        let inside = Command::new("git")
            .args(["rev-parse", "--git-dir"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !inside {
            return Err(Failure(
                "not in a git repository; use --global to configure git for your user".to_owned(),
                2,
            ));
        }
    }
    let (status, body) = client.send(
        "GET",
        "/api/v2/workspaceagents/me/git-config",
        &[],
        None,
        None,
    )?;
    if status != 200 {
        return Err(api_error(status, &body).into());
    }
    let config: Value =
        serde_json::from_str(&body).map_err(|e| Failure(format!("unreadable answer: {e}"), 1))?;
    let helper = helper_name();
    let mut hosts: Vec<(String, bool)> = Vec::new();
    let mut hostless = Vec::new();
    for p in config["providers"].as_array().into_iter().flatten() {
        match p["host"].as_str() {
            Some(host) => {
                let path = p["use_http_path"] == true;
                match hosts.iter_mut().find(|(h, _)| h == host) {
                    Some((_, needs)) => *needs |= path,
                    None => hosts.push((host.to_owned(), path)),
                }
            }
            None => hostless.push(p["id"].as_str().unwrap_or_default().to_owned()),
        }
    }
    let mut changed = 0;
    let mut report = |key: String, value: &str, did: bool| {
        changed += usize::from(did);
        let _ = writeln!(
            out,
            "{} {key} = {value}",
            if did { "set      " } else { "unchanged" }
        );
    };
    for (host, use_path) in &hosts {
        for scheme in ["https", "http"] {
            let prefix = format!("credential.{scheme}://{host}");
            // The empty value first resets helpers configured earlier for this host.
            let key = format!("{prefix}.helper");
            let did = set_all(scope, &key, &["", &helper])?;
            report(key, &helper, did);
            if *use_path {
                let key = format!("{prefix}.useHttpPath");
                let did = set_all(scope, &key, &["true"])?;
                report(key, "true", did);
            }
        }
    }
    if !hostless.is_empty() {
        let (_, current) = git_config(scope, &["--get-all", "credential.helper"])?;
        let did = !current.lines().any(|l| l == helper);
        if did {
            git_config(scope, &["--add", "credential.helper", &helper])?;
        }
        report("credential.helper".to_owned(), &helper, did);
    }
    // SSH remotes: the user's key through `extauth gitssh`, unless they chose a command.
    let mut kept = None;
    let (_, current) = git_config(scope, &["--get", "core.sshCommand"])?;
    let current = current.trim();
    let wanted =
        crate::gitssh::ssh_command(&std::env::current_exe().unwrap_or_else(|_| "extauth".into()));
    if current.is_empty() || (crate::gitssh::is_ours(current) && current != wanted) {
        let (ok, _) = git_config(scope, &["core.sshCommand", &wanted])?;
        if !ok {
            return Err(Failure(
                format!("git config {scope} core.sshCommand failed"),
                1,
            ));
        }
        report("core.sshCommand".to_owned(), &wanted, true);
    } else if current == wanted {
        report("core.sshCommand".to_owned(), &wanted, false);
    } else {
        kept = Some(format!(
            "kept      core.sshCommand = {current} (yours; for SSH remotes with your extauth key, set it to: {wanted})"
        ));
    }
    if let Some(kept) = kept {
        let _ = writeln!(out, "{kept}");
    }
    if !hostless.is_empty() {
        let _ = writeln!(
            out,
            "(providers without a host in their regex: {})",
            hostless.join(", ")
        );
    }
    let message = if hosts.is_empty() && hostless.is_empty() {
        "SSH remotes use your extauth key; HTTPS: the broker has no provider with a regex to match git URLs (set CODER_EXTERNAL_AUTH_<N>_REGEX, or use a provider type that has a default one)."
    } else if changed == 0 {
        "git was already set up."
    } else {
        "git is set up: HTTPS remotes of these hosts use your extauth tokens, SSH remotes your extauth key."
    };
    let _ = writeln!(out, "{message}");
    Ok(())
}
