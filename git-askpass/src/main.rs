//! `git-credential-extauth`: see `extauth_git_askpass::helper`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(extauth_git_askpass::relay::ARG) {
        return extauth_git_askpass::agent::serve(args.get(1..).unwrap_or_default());
    }
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    extauth_git_askpass::helper::run(
        &args,
        &extauth_git_askpass::helper::ProcessEnvironment,
        stdin,
        &mut stdout,
    )
}
