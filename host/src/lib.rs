//! The native host: serves `spin.toml`'s HTTP routes with the same `shared` handlers on
//! tokio/hyper, runs the tick on a timer, hosts the Golioth simulator, finds or starts Postgres
//! and applies migrations. `cargo xtask up` and the integration tests both start it from here.

pub mod dev;
pub mod keys;
pub mod manifest;
pub mod migrate;
pub mod pgenv;
pub mod server;
pub mod simulator;
