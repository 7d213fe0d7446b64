//! The native host: serves `spin.toml`'s HTTP routes with the same `shared` handlers on
//! tokio/hyper, runs the tick on a timer, hosts the Golioth simulator, finds or starts Postgres
//! and applies migrations.

pub mod simulator;
