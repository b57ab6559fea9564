//! `extauth`: access tokens for scripts, linking providers, workspace tokens, `setup-git`.
//! Its logic lives in `extauth-git-askpass`; this binary only parses the command line.

fn main() -> std::process::ExitCode {
    eprintln!("extauth: not available in this build yet");
    std::process::ExitCode::from(2)
}
