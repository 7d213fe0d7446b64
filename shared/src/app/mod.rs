//! The use-case layer: what the service does, independent of how it is asked. Each unit takes a
//! [`crate::base::ctx::Ctx`] and typed inputs, and answers typed results or an
//! [`crate::base::error::ApiError`]; none sees an HTTP request.
//!
//! - [`access`]: organization roles and a member's role (authorization's data);
//! - [`health`]: whether the database answers;
//! - [`service_cache`]: the short-lived cache of services that webhook deliveries read;
//! - [`services`]: service management, assignments and credential loading;
//! - [`engine`]: sync runs (claim, drive, slices, leases, backoff) and the scheduler's tick;
//! - [`runs`]: starting, listing, inspecting and cancelling runs; stats and the sync log;
//! - [`conflicts`]: listing and resolving conflicts, one or in bulk;
//! - [`ingest`]: Golioth Pipeline deliveries — authenticate, plan, group-commit, record refusals.
//!
//! Uses `domain` and `base` only, and earlier units of this layer (in the order above).

pub mod access;
pub mod conflicts;
pub mod engine;
pub mod health;
pub mod ingest;
pub mod runs;
pub mod service_cache;
pub mod services;
