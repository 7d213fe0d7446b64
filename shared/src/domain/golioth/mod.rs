//! Golioth Management REST API client over the `HttpClient` port (GOLIOTH_API.md): typed ids and
//! tolerant parsing at the edge ([`types`]), typed errors that know whether a retry can help
//! ([`error`]), retry timing and bounded fan-out ([`retry`]), listing completeness
//! ([`listing`]), write bodies ([`requests`]) and the client itself ([`client`]).
//!
//! Facts GOLIOTH_API.md marks UNCERTAIN are marked `UNCERTAIN` where the code depends on them.
//!
//! Uses `base` (the `HttpClient` and `Clock` ports, `Secret`) only.

pub mod client;
pub mod error;
pub mod listing;
pub mod requests;
pub mod retry;
pub mod types;

pub use client::{
    ClientConfig, Created, DEFAULT_MAX_PAGES, GoliothClient, ListDevicesOptions, MAX_PER_PAGE,
    generate_psk,
};
pub use error::{ApiStatus, GoliothError};
pub use listing::{DeviceListing, DevicePage, ListingSummary, ListingTracker};
pub use requests::{DeviceUpdate, NewDevice};
pub use retry::{RetryPolicy, bounded, parse_retry_after};
pub use types::{
    Blueprint, BlueprintId, CohortId, Credential, Device, DeviceMetadata, GoliothDeviceId, IdError,
    OrganizationId, PackageUpdate, Project, ProjectId, SettingError, SettingsStatus, ShapeError,
    Tag, TagId, TagMap,
};
