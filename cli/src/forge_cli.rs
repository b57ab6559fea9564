//! Fresh tokens for forge CLIs (`gh`, `glab`, `tea`, `az`): `extauth exec` runs a command with
//! each provider's current token in the variable its CLI reads, and `extauth setup-cli` puts a
//! wrapper in front of a CLI so that plain `gh …` always does so. A token baked into the
//! environment at start goes stale after hours (coder/coder#11904); these ask the broker at
//! each run, and the broker refreshes.

use std::io::Write;
use std::path::{Path, PathBuf};

use extauth_git_askpass::workspace::{By, Client, Lookup};

use crate::{Failure, Outcome};

/// The variables a provider type's CLIs read their token from.
pub fn variables_for(provider_type: &str) -> &'static [&'static str] {
    match provider_type {
        "github" => &["GH_TOKEN", "GITHUB_TOKEN"],
        "gitlab" => &["GITLAB_TOKEN"],
        "azure-devops" | "azure-devops-entra" => &["AZURE_DEVOPS_EXT_PAT"],
        "gitea" => &["GITEA_TOKEN", "GITEA_SERVER_TOKEN"],
        "bitbucket" | "bitbucket-cloud" | "bitbucket-server" => &["BITBUCKET_TOKEN"],
        _ => &[],
    }
}

/// The provider type a forge CLI talks to.
fn type_of_cli(cli: &str) -> Option<&'static str> {
    match cli {
        "gh" => Some("github"),
        "glab" => Some("gitlab"),
        "tea" => Some("gitea"),
        "az" => Some("azure-devops"),
        _ => None,
    }
}

/// `EXTAUTH_TOKEN_<ID>`: every provider's token is also here, for CLIs of other names.
fn generic_variable(id: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("EXTAUTH_TOKEN_{id}")
}

/// The providers the caller may use, as (id, type): a workspace's from its setup, a signed-in
/// user's from the list of links.
fn providers(client: &Client) -> Result<Vec<(String, String)>, Failure> {
    let list = crate::get_json(client, "/api/v2/workspaceagents/me/setup")
        .or_else(|_| crate::get_json(client, "/api/v2/external-auth"))?;
    Ok(list["providers"]
        .as_array()
        .map(|providers| {
            providers
                .iter()
                .filter_map(|p| {
                    Some((p["id"].as_str()?.to_owned(), p["type"].as_str()?.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The variables to set for `wanted` providers (every linked one when empty): each type's
/// variables and `EXTAUTH_TOKEN_<ID>`. A wanted provider that is not linked is an error naming
/// where to link it; unwanted unlinked ones are skipped.
fn token_variables(client: &Client, wanted: &[String]) -> Result<Vec<(String, String)>, Failure> {
    let all = providers(client)?;
    let chosen: Vec<(String, String)> = if wanted.is_empty() {
        all
    } else {
        wanted
            .iter()
            .map(|id| {
                all.iter()
                    .find(|(p, _)| p == id)
                    .cloned()
                    .ok_or_else(|| Failure(format!("no provider {id:?} on the broker"), 1))
            })
            .collect::<Result<_, _>>()?
    };
    let mut variables = Vec::new();
    for (id, provider_type) in chosen {
        match client.external_auth(By::Id(&id), None)? {
            Lookup::Token(reply) => {
                let token = reply.access_token.secret().to_owned();
                for name in variables_for(&provider_type) {
                    variables.push(((*name).to_owned(), token.clone()));
                }
                variables.push((generic_variable(&id), token));
            }
            Lookup::NotLinked(url) if !wanted.is_empty() => {
                return Err(Failure(
                    format!("{id} is not linked; connect it at {url}"),
                    1,
                ));
            }
            Lookup::NotLinked(_) | Lookup::NoMatch { .. } => {}
        }
    }
    Ok(variables)
}

/// `extauth exec [--provider ID…] [--app ID…] -- CMD…`: CMD in this process's place, with
/// fresh tokens; with `--app`, CMD as a child, and its GitHub App tokens revoked when it ends.
pub fn exec(client: &Client, wanted: &[String], apps: &[String], command: &[String]) -> Outcome {
    let Some((program, args)) = command.split_first() else {
        return Err(Failure("give the command to run after --".to_owned(), 2));
    };
    if !apps.is_empty() {
        return exec_with_apps(client, wanted, apps, program, args);
    }
    let variables = token_variables(client, wanted)?;
    let mut child = std::process::Command::new(program);
    child.args(args).envs(variables);
    // The command takes this process's place: signals and the exit status are its own.
    let error = std::os::unix::process::CommandExt::exec(&mut child);
    Err(Failure(format!("cannot run {program}: {error}"), 127))
}

/// `exec` with GitHub App installation tokens: each in its provider type's variables (and
/// `EXTAUTH_TOKEN_<ID>`), the command run as a child, the tokens revoked at its end whatever
/// its status (a token left behind lives its hour at GitHub).
fn exec_with_apps(
    client: &Client,
    wanted: &[String],
    apps: &[String],
    program: &str,
    args: &[String],
) -> Outcome {
    let mut variables = if wanted.is_empty() {
        Vec::new()
    } else {
        token_variables(client, wanted)?
    };
    let types = providers(client).unwrap_or_default();
    let mut tokens = Vec::new();
    for id in apps {
        let app = match client.app_token(id) {
            Ok(app) => app,
            Err(e) => {
                revoke_all(client, &tokens);
                return Err(e.into());
            }
        };
        let provider_type = types
            .iter()
            .find(|(p, _)| p == id)
            .map_or("github", |(_, t)| t.as_str());
        for name in variables_for(provider_type) {
            variables.push(((*name).to_owned(), app.token.clone()));
        }
        variables.push((generic_variable(id), app.token.clone()));
        tokens.push(app);
    }
    let status = std::process::Command::new(program)
        .args(args)
        .envs(variables)
        .status();
    revoke_all(client, &tokens);
    match status {
        Ok(status) => match status.code() {
            Some(0) => Ok(()),
            Some(code) => Err(Failure(String::new(), u8::try_from(code).unwrap_or(1))),
            None => Err(Failure(format!("{program} was stopped by a signal"), 1)),
        },
        Err(e) => Err(Failure(format!("cannot run {program}: {e}"), 127)),
    }
}

fn revoke_all(client: &Client, tokens: &[extauth_git_askpass::workspace::AppToken]) {
    for app in tokens {
        if let Err(e) = client.revoke_app_token(app) {
            eprintln!("extauth: {e}; the token expires within the hour");
        }
    }
}

/// `extauth setup-cli gh|glab|tea|az [--provider ID] [--dir DIR]`: a wrapper named like the CLI
/// in DIR (default `~/.local/bin`, which must come first on PATH) that runs the real one through
/// `extauth exec`.
pub fn setup(
    client: &Client,
    cli: &str,
    provider: Option<&str>,
    dir: Option<&Path>,
    out: &mut dyn Write,
) -> Outcome {
    let provider_type = type_of_cli(cli)
        .ok_or_else(|| Failure(format!("unknown CLI {cli:?}: use gh, glab, tea or az"), 2))?;
    let id = match provider {
        Some(id) => id.to_owned(),
        None => providers(client)?
            .into_iter()
            .find(|(_, t)| t == provider_type || t.starts_with(provider_type))
            .map(|(id, _)| id)
            .ok_or_else(|| {
                Failure(
                    format!("the broker has no {provider_type} provider; name one with --provider"),
                    1,
                )
            })?,
    };
    let dir = match dir {
        Some(dir) => dir.to_owned(),
        None => home()?.join(".local/bin"),
    };
    let wrapper = dir.join(cli);
    let real = find_on_path(cli, &wrapper)
        .ok_or_else(|| Failure(format!("{cli} is not installed (not found on PATH)"), 1))?;
    let extauth = std::env::current_exe()
        .map_err(|e| Failure(format!("cannot tell where extauth is: {e}"), 1))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure(format!("cannot create {}: {e}", dir.display()), 1))?;
    let script = format!(
        "#!/bin/sh\n# Made by `extauth setup-cli {cli}`: {cli} with a fresh {id} token each run.\nexec {} exec --provider {} -- {} \"$@\"\n",
        quote(&extauth.to_string_lossy()),
        quote(&id),
        quote(&real.to_string_lossy()),
    );
    write_executable(&wrapper, &script)?;
    let _ = writeln!(
        out,
        "{} runs {} with a fresh {id} token",
        wrapper.display(),
        real.display()
    );
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).next() == Some(dir.clone()))
        .unwrap_or(false);
    if !on_path {
        let _ = writeln!(
            out,
            "put {} first on PATH: export PATH=\"{}:$PATH\"",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

fn home() -> Result<PathBuf, Failure> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| Failure("HOME is not set; give --dir".to_owned(), 1))
}

/// The first `name` on PATH that is not `wrapper` itself.
fn find_on_path(name: &str, wrapper: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate.is_file()
                && candidate != wrapper
                && std::fs::canonicalize(candidate).ok() != std::fs::canonicalize(wrapper).ok()
        })
}

/// A word for sh, in single quotes.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn write_executable(path: &Path, text: &str) -> Outcome {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(path)
        .map_err(|e| Failure(format!("cannot write {}: {e}", path.display()), 1))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Failure(format!("cannot write {}: {e}", path.display()), 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_forge_cli_gets_its_own_variable() {
        assert_eq!(variables_for("github"), ["GH_TOKEN", "GITHUB_TOKEN"]);
        assert_eq!(variables_for("gitlab"), ["GITLAB_TOKEN"]);
        assert_eq!(
            variables_for("azure-devops-entra"),
            ["AZURE_DEVOPS_EXT_PAT"]
        );
        assert!(variables_for("slack").is_empty());
        assert_eq!(generic_variable("gh-work"), "EXTAUTH_TOKEN_GH_WORK");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
