//! golioth-sync's library: everything that is not a Spin or native entry point. Target-independent
//! (host and `wasm32-wasip2`); reaches the outside world only through the ports in [`base::ports`].
//!
//! Layers, each folder one layer; a module may use only the layers below it (and earlier units of
//! its own layer, in the order of `shared/tests/layers.rs`, which enforces the rule):
//! - [`runtime`]: the Spin and native adapters — implement the ports, hand requests to `api`;
//! - [`api`]: HTTP — routes, input parsing, authorization, rendering;
//! - [`app`]: the use cases — sync runs and the tick, conflict resolution, webhook ingestion,
//!   service management;
//! - [`domain`]: the sync core, webhook verify/parse, service config, crypto, the Golioth client
//!   and the store (all SQL);
//! - [`base`]: the ports, the request-independent context, the error, settings and logging.

pub mod api;
pub mod app;
pub mod base;
pub mod domain;
pub mod runtime;
