fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    extauth_broker::cli::main()
}

/// glibc gives every thread that allocates an arena of its own (up to eight per core) and each
/// arena keeps what was freed in it; under a busy runtime that was 50 MB more resident memory
/// at 100 000 users (README, "Scale") for no measurable speed. Two arenas keep the broker within
/// its memory target by default; `MALLOC_ARENA_MAX`, when the operator sets it, still decides.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes the allocator's parameters and is called here, before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
