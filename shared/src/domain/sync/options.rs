//! The per-service knobs the sync core obeys: direction, conflict policy, selective field groups,
//! deletion behaviour, online threshold and LightDB State paths (DESIGN §4, §5.4). Serde names
//! match the service config keys so the config type can embed these enums directly.

use serde::{Deserialize, Serialize};

use super::model::Field;

/// Which way a run moves desired fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Golioth → local only: local edits to desired fields are overwritten (and logged).
    Import,
    /// Local → Golioth only: Golioth edits to desired fields are overwritten (and logged).
    Export,
    /// The three-way table of DESIGN §4.
    #[default]
    Bidirectional,
}

impl Direction {
    /// Whether Golioth's values may be written locally (desired pulls, reported fields, local
    /// creations, remote deletions applied locally).
    pub fn pulls(self) -> bool {
        matches!(self, Direction::Import | Direction::Bidirectional)
    }

    /// Whether local values may be written to Golioth.
    pub fn pushes(self) -> bool {
        matches!(self, Direction::Export | Direction::Bidirectional)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Import => "import",
            Direction::Export => "export",
            Direction::Bidirectional => "bidirectional",
        }
    }
}

/// How a concurrent, differing change to one field is settled (`conflict_resolution`). A policy
/// settles a conflict when it is detected; one already pending for a person, detected again with
/// the same values, keeps waiting (changing the policy does not silently settle it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// Record the conflict and freeze the field on both sides until a person resolves it.
    #[default]
    Manual,
    LocalWins,
    RemoteWins,
    /// Local `updated_at` against Golioth's `updatedAt`; a tie or a missing time falls back to
    /// manual, because neither side can then be shown to be newer.
    NewestWins,
}

impl ConflictPolicy {
    /// `device_conflicts.resolution_strategy` of an automatic resolution.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::Manual => "manual",
            ConflictPolicy::LocalWins => "local_wins",
            ConflictPolicy::RemoteWins => "remote_wins",
            ConflictPolicy::NewestWins => "newest_wins",
        }
    }
}

/// What a Golioth deletion does to the linked local device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRemoteDelete {
    /// Soft-delete the local device (a tombstone) and remove its assignment.
    #[default]
    SoftDeleteLocal,
    /// Keep the local device and detach it (the assignment keeps the dead Golioth id and loses its
    /// base), so it is neither created in Golioth again nor re-matched automatically.
    Unlink,
    /// Keep everything as it is; remote deletions are not acted on and never conflict.
    Ignore,
}

/// What a local deletion (tombstone) does to the linked Golioth device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLocalDelete {
    /// Keep the Golioth device and stop syncing it (the link is detached, not forgotten, so the
    /// Golioth device is not imported again as a new local device).
    #[default]
    Unlink,
    /// Delete the device in Golioth (permanent there) and remove the assignment.
    DeleteRemote,
}

/// Selective sync: which field groups a service syncs (`sync_fields`). All on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncFields {
    pub name: bool,
    pub enabled: bool,
    pub tags: bool,
    pub hardware_ids: bool,
    pub blueprint: bool,
    pub cohort: bool,
    /// `last_seen`, `last_seen_online` and the derived `status`.
    pub status: bool,
    /// `firmware_version` from `metadata.update`.
    #[serde(alias = "metadata")]
    pub firmware: bool,
    pub battery: bool,
    pub location: bool,
    pub signal: bool,
}

impl Default for SyncFields {
    fn default() -> Self {
        SyncFields {
            name: true,
            enabled: true,
            tags: true,
            hardware_ids: true,
            blueprint: true,
            cohort: true,
            status: true,
            firmware: true,
            battery: true,
            location: true,
            signal: true,
        }
    }
}

impl SyncFields {
    pub fn syncs(&self, field: Field) -> bool {
        match field {
            Field::Name => self.name,
            Field::Enabled => self.enabled,
            Field::Tags => self.tags,
            Field::HardwareIds => self.hardware_ids,
            Field::BlueprintId => self.blueprint,
            Field::CohortId => self.cohort,
        }
    }

    /// The synced desired fields, in [`Field::ALL`] order.
    pub fn desired(&self) -> impl Iterator<Item = Field> + '_ {
        Field::ALL.into_iter().filter(|f| self.syncs(*f))
    }
}

/// LightDB State paths (slash-separated, e.g. `sensors/battery`) that feed local columns. A column
/// without a path stays local-only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatePaths {
    pub battery: Option<String>,
    pub location: Option<String>,
    pub signal: Option<String>,
}

/// The default `online_threshold_seconds`: 10 minutes.
pub const DEFAULT_ONLINE_THRESHOLD_SECONDS: u64 = 600;

/// Everything the core needs to know about a service to plan its devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncOptions {
    #[serde(rename = "sync_direction")]
    pub direction: Direction,
    #[serde(rename = "conflict_resolution")]
    pub policy: ConflictPolicy,
    #[serde(rename = "sync_fields")]
    pub fields: SyncFields,
    pub match_by_name: bool,
    pub on_remote_delete: OnRemoteDelete,
    pub on_local_delete: OnLocalDelete,
    pub online_threshold_seconds: u64,
    pub state_paths: StatePaths,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            direction: Direction::default(),
            policy: ConflictPolicy::default(),
            fields: SyncFields::default(),
            match_by_name: false,
            on_remote_delete: OnRemoteDelete::default(),
            on_local_delete: OnLocalDelete::default(),
            online_threshold_seconds: DEFAULT_ONLINE_THRESHOLD_SECONDS,
            state_paths: StatePaths::default(),
        }
    }
}
