//! The bottom layer: the ports to the outside world ([`ports`]), the request-independent context
//! that carries them ([`ctx`]), the one error type of the service ([`error`]), settings read from
//! `Config` ([`settings`]) and structured logging ([`log`]). Uses nothing else of the crate.

pub mod ctx;
pub mod error;
pub mod log;
pub mod ports;
pub mod settings;
