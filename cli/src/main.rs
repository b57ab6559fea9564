//! `extauth`: see `extauth_cli`.

fn main() -> std::process::ExitCode {
    extauth_cli::main()
}
