//! `golioth-sync`: the native host binary; the commands are in [`host::cli`].

/// mimalloc instead of glibc's allocator: a sync slice and a webhook delivery allocate and free
/// many small strings and JSON nodes, and under glibc malloc / free were about a quarter of the
/// host's CPU (perf, `cargo xtask bench`). Native only: the Spin components use their own.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Usage errors (and `--help`, `--version`) end inside `cli::run` with clap's exit code (2, or
/// 0); a command that fails prints its error chain on one line and exits with 1.
fn main() -> std::process::ExitCode {
    match host::cli::run_args(std::env::args_os().skip(1)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
