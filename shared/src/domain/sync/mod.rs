//! The pure sync core: three-way change detection, merge, conflict policy, matching, planning (DESIGN §4). No I/O.
//!
//! **Architecture Invariant:** nothing under this module reads a clock, draws a random number or
//! talks to the outside world. Plain data goes in ([`SyncOptions`], `now`, [`PageInput`] or a
//! [`Pairing`]), a plan comes out ([`PagePlan`] of [`DevicePlan`]s), and the engine executes it.
//!
//! How the engine drives a run:
//! 1. For each page of Golioth devices, build [`RemoteDevice`]s (tags as names, firmware via
//!    [`firmware_from_update`]) and load the local devices linked to them or matching them by
//!    hardware id / name ([`LocalState`]: device, assignment with its [`Base`], pending conflicts).
//!    Call [`plan_page`] and execute the plan.
//! 2. When the listing is finished, call [`plan_local_only`] with the assigned local devices the
//!    listing did not pair, saying whether the listing was [`Listing::Complete`]. Only a complete
//!    listing deletes, unlinks or creates in Golioth.
//! 3. A conflict resolved by a person goes through [`resolve`]; the next run carries it out.
//!
//! A second plan made right after the first one was applied to both sides is empty
//! ([`PagePlan::is_empty`]): that is what makes a resync perform zero writes.
//!
//! Uses nothing else of the crate: the bottom of `domain`.

pub mod apply;
pub mod matching;
pub mod merge;
pub mod model;
pub mod options;
pub mod plan;
pub mod reported;
pub mod resolve;

pub use apply::{IdSource, Replicas, SequentialIds};
pub use matching::{MatchBy, Pairing, match_page};
pub use merge::{FieldDecision, decide_field, merge_sets, pick_winner};
pub use model::{
    Assignment, Base, ConflictField, ConflictKind, DesiredFields, DeviceStatus, Field, LocalDevice,
    LocalState, PendingConflict, RemoteDevice, RemoteReported, Reported, Side, Value, ValueError,
};
pub use options::{
    ConflictPolicy, Direction, OnLocalDelete, OnRemoteDelete, StatePaths, SyncFields, SyncOptions,
};
pub use plan::{
    AssignmentWrite, Conflict, ConflictChange, DesiredChanges, DevicePlan, FieldChange, Listing,
    LocalChanges, LocalWrite, LogEntry, LogOperation, PageInput, PagePlan, PlanSummary,
    RemoteWrite, SetChange, pending_create_base, plan_local_only, plan_page, plan_pairing,
};
pub use reported::{ReportedChanges, derive_status, firmware_from_update, pick_firmware, state_at};
pub use resolve::{Choice, DeviceResolution, Resolution, ResolveError, resolve};
