//! Command-line interface of `extauth-broker`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config_check::{self, CheckArgs};

/// extauth broker: links users' OAuth providers and serves their tokens to workspaces.
#[derive(Debug, Parser)]
#[command(name = "extauth-broker", version, about, long_about = None)]
pub struct Cli {
    /// The broker's public base URL; callbacks are <access-url>/external-auth/<id>/callback.
    #[arg(
        long,
        global = true,
        env = "CODER_ACCESS_URL",
        default_value = config_check::DEFAULT_ACCESS_URL,
        value_name = "URL"
    )]
    pub access_url: String,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the configuration read from the environment.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Resolve CODER_EXTERNAL_AUTH_<N>_* into providers and report every problem.
    ///
    /// Prints each provider with its defaults applied and the callback URL to register with
    /// the provider. The client secret is shown only as set/unset. Exit status: 0 when the
    /// configuration is valid, 1 when it has errors (all listed), 2 on a usage error.
    ///
    /// Example: extauth-broker config check --match https://github.com/org/repo.git
    Check(CheckArgs),
}

/// Runs the command line of the process.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Config(ConfigCommand::Check(args))) => {
            let outcome = config_check::run(process_env(), &cli.access_url, &args);
            print!("{}", outcome.stdout);
            eprint!("{}", outcome.stderr);
            ExitCode::from(outcome.status)
        }
        None => {
            eprintln!(
                "extauth-broker: serving is not available in this build yet; try `extauth-broker config check`"
            );
            ExitCode::from(2)
        }
    }
}

/// The process environment. Names or values that are not UTF-8 are converted lossily rather
/// than panicking as `std::env::vars` would; a mangled provider setting then fails validation
/// with its name.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect()
}
