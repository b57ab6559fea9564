fn main() -> std::process::ExitCode {
    extauth_broker::cli::main()
}
