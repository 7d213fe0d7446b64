//! The sync core's data model: synced fields and their values, the merge base, and the local and
//! remote device snapshots the engine hands in (DESIGN §3, §4). Plain data, no Golioth client types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A desired (two-way) field. These are the only fields with a base, so the only ones that can
/// conflict; reported fields flow one way and are handled in [`super::reported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Name,
    Enabled,
    Tags,
    HardwareIds,
    BlueprintId,
    CohortId,
}

impl Field {
    /// Every desired field, in the fixed order plans, logs and conflicts use.
    pub const ALL: [Field; 6] = [
        Field::Name,
        Field::Enabled,
        Field::Tags,
        Field::HardwareIds,
        Field::BlueprintId,
        Field::CohortId,
    ];

    /// The column name in `devices`, the key in the base and the `field_name` of a conflict.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Enabled => "enabled",
            Field::Tags => "tags",
            Field::HardwareIds => "hardware_ids",
            Field::BlueprintId => "blueprint_id",
            Field::CohortId => "cohort_id",
        }
    }

    pub fn parse(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Sets merge element-wise and never conflict (DESIGN §4).
    pub fn is_set(self) -> bool {
        matches!(self, Field::Tags | Field::HardwareIds)
    }

    /// Type-check a value for this field and normalize it, so a value coming from outside (a
    /// stored base, a custom conflict resolution) compares equal to the same value read from a
    /// device.
    pub fn check(self, value: Value) -> Result<Value, ValueError> {
        let expected = match self {
            Field::Name => "a string",
            Field::Enabled => "a boolean",
            Field::Tags | Field::HardwareIds => "an array of strings",
            Field::BlueprintId | Field::CohortId => "a string or null",
        };
        let ok = matches!(
            (self, &value),
            (Field::Name, Value::Text(_))
                | (Field::Enabled, Value::Bool(_))
                | (Field::Tags | Field::HardwareIds, Value::Set(_))
                | (
                    Field::BlueprintId | Field::CohortId,
                    Value::Null | Value::Text(_)
                )
        );
        if !ok {
            return Err(ValueError::WrongType {
                field: self.as_str(),
                expected,
            });
        }
        Ok(match value {
            Value::Set(items) => Value::set(items),
            Value::Text(s) if s.is_empty() && !matches!(self, Field::Name) => Value::Null,
            other => other,
        })
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Field {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Field::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown field {s:?}")))
    }
}

/// The value of one desired field. One small enum instead of `serde_json::Value` so equality is
/// exact and sets are always normalized (sorted, deduplicated) before they are compared.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Null,
    Bool(bool),
    Text(String),
    /// Sorted and deduplicated; build with [`Value::set`].
    Set(Vec<String>),
}

impl Value {
    /// A normalized set value.
    pub fn set<I, S>(items: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Value::Set(normalize_set(items))
    }

    pub fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into())
    }

    /// An optional id (`blueprint_id`, `cohort_id`): absent and empty both mean "none", because
    /// Golioth clears a cohort with `""` and may omit the key.
    pub fn opt_text(s: Option<&str>) -> Value {
        match s {
            Some(s) if !s.is_empty() => Value::Text(s.to_owned()),
            _ => Value::Null,
        }
    }

    pub fn as_set(&self) -> &[String] {
        match self {
            Value::Set(items) => items,
            _ => &[],
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Text(s) => serde_json::Value::String(s.clone()),
            Value::Set(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|s| serde_json::Value::String(s.clone()))
                    .collect(),
            ),
        }
    }

    /// Read a value of `field` from JSON, checking its type.
    pub fn from_json(field: Field, json: &serde_json::Value) -> Result<Value, ValueError> {
        let value = match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        serde_json::Value::String(s) => out.push(s.clone()),
                        _ => {
                            return Err(ValueError::WrongType {
                                field: field.as_str(),
                                expected: "an array of strings",
                            });
                        }
                    }
                }
                Value::Set(out)
            }
            _ => {
                return Err(ValueError::WrongType {
                    field: field.as_str(),
                    expected: "a string, boolean, null or array of strings",
                });
            }
        };
        field.check(value)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// Sort and deduplicate, the one canonical form of a set.
pub fn normalize_set<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut v: Vec<String> = items.into_iter().map(Into::into).collect();
    v.sort();
    v.dedup();
    v
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{field} expects {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown field {0:?}")]
    UnknownField(String),
    #[error("the base must be a JSON object")]
    NotAnObject,
}

/// The desired fields of one device, as either side holds them. Local tags are names; the engine
/// maps Golioth tag ids to names before building the remote side, so both compare directly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredFields {
    pub name: String,
    pub enabled: bool,
    pub tags: Vec<String>,
    pub hardware_ids: Vec<String>,
    pub blueprint_id: Option<String>,
    pub cohort_id: Option<String>,
}

impl Default for DesiredFields {
    /// The column defaults of `devices` (`enabled` defaults to true), used for the fields a
    /// creation does not copy because their group is not synced.
    fn default() -> Self {
        DesiredFields {
            name: String::new(),
            enabled: true,
            tags: Vec::new(),
            hardware_ids: Vec::new(),
            blueprint_id: None,
            cohort_id: None,
        }
    }
}

impl DesiredFields {
    /// The normalized value of `field`.
    pub fn get(&self, field: Field) -> Value {
        match field {
            Field::Name => Value::Text(self.name.clone()),
            Field::Enabled => Value::Bool(self.enabled),
            Field::Tags => Value::set(self.tags.iter().cloned()),
            Field::HardwareIds => Value::set(self.hardware_ids.iter().cloned()),
            Field::BlueprintId => Value::opt_text(self.blueprint_id.as_deref()),
            Field::CohortId => Value::opt_text(self.cohort_id.as_deref()),
        }
    }

    /// Write `value` into `field`; the value is type-checked first.
    pub fn set(&mut self, field: Field, value: &Value) -> Result<(), ValueError> {
        match (field, field.check(value.clone())?) {
            (Field::Name, Value::Text(s)) => self.name = s,
            (Field::Enabled, Value::Bool(b)) => self.enabled = b,
            (Field::Tags, Value::Set(v)) => self.tags = v,
            (Field::HardwareIds, Value::Set(v)) => self.hardware_ids = v,
            (Field::BlueprintId, v) => self.blueprint_id = opt_string(v),
            (Field::CohortId, v) => self.cohort_id = opt_string(v),
            _ => {
                return Err(ValueError::WrongType {
                    field: field.as_str(),
                    expected: "a value of its own type",
                });
            }
        }
        Ok(())
    }

    /// The same fields in canonical form (sets sorted and deduplicated, empty ids as none).
    pub fn normalized(&self) -> DesiredFields {
        let mut out = self.clone();
        for field in Field::ALL {
            // Values read from `self` always type-check against their own field.
            let _ = out.set(field, &self.get(field));
        }
        out
    }
}

fn opt_string(v: Value) -> Option<String> {
    match v {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

/// The values of the desired fields both sides last agreed on: the merge base, stored as the
/// `base` jsonb of the device's assignment (`{"name": "x", "tags": ["a"], ...}`). A field missing
/// from the base has never been agreed on (a first sync, or a first-sync mismatch still pending),
/// so a difference on it is a `first_sync_mismatch` rather than a `concurrent_modification`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Base(BTreeMap<Field, Value>);

impl Base {
    pub fn new() -> Base {
        Base::default()
    }

    pub fn get(&self, field: Field) -> Option<&Value> {
        self.0.get(&field)
    }

    pub fn insert(&mut self, field: Field, value: Value) {
        self.0.insert(field, value);
    }

    pub fn remove(&mut self, field: Field) -> Option<Value> {
        self.0.remove(&field)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Field, &Value)> {
        self.0.iter().map(|(f, v)| (*f, v))
    }

    /// The base of `fields` taken from one side's values.
    pub fn from_desired(desired: &DesiredFields, fields: impl IntoIterator<Item = Field>) -> Base {
        Base(fields.into_iter().map(|f| (f, desired.get(f))).collect())
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(f, v)| (f.as_str().to_owned(), v.to_json()))
                .collect(),
        )
    }

    /// Parse a stored base. Keys that name no desired field are rejected rather than dropped: a
    /// base is only ever written by this module, so an unknown key means corruption, and
    /// guessing would risk an invented or a missed conflict.
    pub fn from_json(json: &serde_json::Value) -> Result<Base, ValueError> {
        let obj = json.as_object().ok_or(ValueError::NotAnObject)?;
        let mut base = Base::new();
        for (key, value) in obj {
            let field = Field::parse(key).ok_or_else(|| ValueError::UnknownField(key.clone()))?;
            base.insert(field, Value::from_json(field, value)?);
        }
        Ok(base)
    }
}

impl Serialize for Base {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Base {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = serde_json::Value::deserialize(d)?;
        Base::from_json(&json).map_err(serde::de::Error::custom)
    }
}

/// `devices.status`. Golioth's own `status` is always `-`, so the core derives online/offline
/// from the last-seen times itself. `warning` and `error` are set by the platform and kept while
/// the device is online; `unknown` means never seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Online,
    Offline,
    Warning,
    Error,
    #[default]
    Unknown,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Online => "online",
            DeviceStatus::Offline => "offline",
            DeviceStatus::Warning => "warning",
            DeviceStatus::Error => "error",
            DeviceStatus::Unknown => "unknown",
        }
    }
}

/// The reported columns of a local device: written from Golioth (and by webhooks), never sent back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    pub last_seen: Option<DateTime<Utc>>,
    pub last_seen_online: Option<DateTime<Utc>>,
    pub status: DeviceStatus,
    pub battery_level: Option<f64>,
    pub signal_strength: Option<f64>,
    pub firmware_version: Option<String>,
    pub location: Option<serde_json::Value>,
}

/// A row of `devices` as the engine read it. `version` is echoed in every local write so the
/// engine can apply it with optimistic concurrency (`WHERE version = $read`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalDevice {
    pub id: Uuid,
    pub desired: DesiredFields,
    pub reported: Reported,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    /// A tombstone: the platform deleted the device.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// What Golioth reports about a device, already extracted from its JSON by the engine (see
/// [`super::reported::firmware_from_update`] for `metadata.update`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteReported {
    /// `metadata.lastReport`, the preferred source of "last seen".
    pub metadata_last_report: Option<DateTime<Utc>>,
    /// The deprecated top-level `lastReport`, used only when `metadata.lastReport` is absent.
    pub last_report: Option<DateTime<Utc>>,
    /// `metadata.lastSeenOnline`.
    pub last_seen_online: Option<DateTime<Utc>>,
    /// `metadata.update`: package name → firmware version.
    pub firmware: BTreeMap<String, String>,
    /// The LightDB State document (root), when the engine fetched it; the service's state paths
    /// are looked up in it.
    pub state: Option<serde_json::Value>,
}

/// A Golioth device as the engine listed it, independent of any client type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteDevice {
    /// The Golioth id (24 hex characters).
    pub id: String,
    /// Tags as names: the engine maps tag ids to names before calling the core.
    pub desired: DesiredFields,
    /// Golioth's `updatedAt`: used by `newest_wins` and echoed in patches so the engine can
    /// re-read and compare before writing.
    pub updated_at: Option<DateTime<Utc>>,
    pub reported: RemoteReported,
}

/// The device's `device_service_assignments` row for this service, if any. A row means the device
/// is assigned to the service (exported by it); `external_id` means it is linked to a Golioth
/// device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub external_id: Option<String>,
    /// `None` (SQL NULL) when the link has never been synced, or when a deleted device was detached
    /// from its Golioth twin (see [`super::plan::AssignmentWrite::Detach`]).
    pub base: Option<Base>,
    /// The base a Golioth create of this device leaves, written before the create was sent and
    /// cleared once its outcome was committed (see [`super::plan::pending_create_base`]). Still here means
    /// the create's outcome is unknown: a Golioth device found later by hardware id may be the one
    /// it made, and is merged against this base rather than as a first sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_create: Option<Base>,
}

/// One local device with everything the core needs to plan it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalState {
    pub device: LocalDevice,
    pub assignment: Option<Assignment>,
    /// The device's pending conflicts for this service. Include `identity` conflicts that name the
    /// device as a candidate: they stop it from being created in Golioth.
    pub pending: Vec<PendingConflict>,
}

impl LocalState {
    pub fn external_id(&self) -> Option<&str> {
        self.assignment.as_ref()?.external_id.as_deref()
    }

    pub fn is_linked(&self) -> bool {
        self.external_id().is_some()
    }

    pub fn is_deleted(&self) -> bool {
        self.device.deleted_at.is_some()
    }
}

/// What a conflict row is about: one desired field, the whole device (delete vs modify), or which
/// local device a Golioth device is (identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConflictField {
    Field(Field),
    Device,
    Identity,
}

impl ConflictField {
    /// `device_conflicts.field_name`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictField::Field(f) => f.as_str(),
            ConflictField::Device => "device",
            ConflictField::Identity => "identity",
        }
    }

    pub fn parse(s: &str) -> Option<ConflictField> {
        match s {
            "device" => Some(ConflictField::Device),
            "identity" => Some(ConflictField::Identity),
            other => Field::parse(other).map(ConflictField::Field),
        }
    }
}

impl Serialize for ConflictField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ConflictField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ConflictField::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown conflict field {s:?}")))
    }
}

/// `device_conflicts.conflict_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    ConcurrentModification,
    DeleteVsModify,
    Identity,
    FirstSyncMismatch,
}

impl ConflictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::ConcurrentModification => "concurrent_modification",
            ConflictKind::DeleteVsModify => "delete_vs_modify",
            ConflictKind::Identity => "identity",
            ConflictKind::FirstSyncMismatch => "first_sync_mismatch",
        }
    }
}

/// A `pending` row of `device_conflicts`, as stored. Values are jsonb: `None` is SQL NULL (no base
/// yet; or, for `delete_vs_modify`, the side that deleted the device).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingConflict {
    pub id: Uuid,
    pub device_id: Option<Uuid>,
    pub external_id: Option<String>,
    pub field: ConflictField,
    pub kind: ConflictKind,
    pub base_value: Option<serde_json::Value>,
    pub local_value: Option<serde_json::Value>,
    pub remote_value: Option<serde_json::Value>,
    pub local_updated_at: Option<DateTime<Utc>>,
    pub remote_updated_at: Option<DateTime<Utc>>,
}

impl PendingConflict {
    /// Whether this is an `identity` conflict listing `device` among its local candidates (its
    /// `local_value` is an array of `{"id", "name", "hardware_ids"}`). Such a conflict stops the
    /// device from being created in Golioth until a person decides, so the engine loads it into
    /// the device's [`LocalState::pending`] (in SQL: `local_value @> '[{"id": "<uuid>"}]'`).
    pub fn names_candidate(&self, device: Uuid) -> bool {
        let id = device.to_string();
        self.field == ConflictField::Identity
            && self
                .local_value
                .as_ref()
                .and_then(|v| v.as_array())
                .is_some_and(|items| {
                    items
                        .iter()
                        .any(|item| item.get("id").and_then(|v| v.as_str()) == Some(id.as_str()))
                })
    }
}

/// Which replica: the platform's registry (local) or Golioth (remote).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Local,
    Remote,
}
