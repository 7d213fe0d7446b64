//! The native host: serves `spin.toml`'s HTTP routes with the same `shared` handlers on
//! tokio/hyper, runs the tick on a timer, hosts the Golioth simulator, finds or starts Postgres
//! and applies migrations. `cargo xtask up` and the integration tests both start it from here;
//! `spin_up` starts the same app under the real Spin CLI for the Spin suite and benchmarks;
//! `procs` makes sure the processes tests start end with them.

pub mod cli;
pub mod dev;
pub mod keys;
pub mod manifest;
pub mod migrate;
pub mod pgenv;
pub mod procs;
pub mod server;
pub mod simulator;
pub mod spin_up;
