//! The outermost layer: one adapter per runtime. Each implements the ports of
//! [`crate::base::ports`] and hands HTTP requests to [`crate::api`]; nothing below uses them.

#[cfg(target_arch = "wasm32")]
pub mod spin;

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
pub mod native;
