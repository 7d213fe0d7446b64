//! golioth-sync's library: everything that is not a Spin or native adapter. Target-independent
//! (host and `wasm32-wasip2`); reaches the outside world only through the ports in [`ports`].

pub mod api;
pub mod auth;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod golioth;
pub mod log;
pub mod ports;
pub mod routing;
pub mod service;
pub mod settings;
pub mod store;
pub mod sync;
pub mod webhook;

#[cfg(target_arch = "wasm32")]
pub mod spin;

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
pub mod native;
