fn main() -> std::process::ExitCode {
    eprintln!("git-credential-extauth: not available in this build yet");
    std::process::ExitCode::from(2)
}
