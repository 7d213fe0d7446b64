//! `golioth-sync`: the native host binary; the commands are in [`host::cli`].

/// mimalloc instead of glibc's allocator: a sync slice and a webhook delivery allocate and free
/// many small strings and JSON nodes, and under glibc malloc / free were about a quarter of the
/// host's CPU (perf, `cargo xtask bench`). Native only: the Spin components use their own.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    host::cli::run(std::env::args().skip(1).collect())
}
