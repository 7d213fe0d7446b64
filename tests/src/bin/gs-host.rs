//! The native host as its own process, for tests that SIGKILL the host and start it again
//! (`harness::TestApp::kill_host`): the same command line as `golioth-sync` (`host::cli`).

fn main() -> anyhow::Result<()> {
    host::cli::run(std::env::args().skip(1).collect())
}
