//! The domain layer: the service's rules and its two gateways, each usable on its own. The pure
//! sync core ([`sync`]), service configuration ([`service`]), credentials encryption ([`crypto`]),
//! the Golioth REST client ([`golioth`]), webhook verification and parsing ([`webhook`]) and the
//! store ([`store`], every SQL statement). Uses only `base`, and earlier units of this layer.

pub mod crypto;
pub mod golioth;
pub mod service;
pub mod store;
pub mod sync;
pub mod webhook;
