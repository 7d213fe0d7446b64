//! Typed values at the Golioth edge: identifier newtypes built only by `parse`, and tolerant
//! parsers for the JSON shapes of GOLIOTH_API.md (§2.2 device, §5 tags/blueprints, §1 project).
//!
//! Tolerance rule (GOLIOTH_API.md §2.2 "Absent versus null"): every field except `id` may be
//! missing or `null`, so each field is read on its own from a `serde_json::Value` and a field of an
//! unexpected type reads as absent instead of failing the whole page of a 10,000-device listing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Why a value could not become a typed identifier. Carries the offending kind, never the value
/// (values come from callers and responses and may be long).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("a Golioth device id is 24 hexadecimal characters (an ObjectID)")]
    NotObjectId,
    #[error("{0} must be 1..=128 characters of [A-Za-z0-9._-]")]
    BadSlug(&'static str),
    #[error("{0} must be non-empty and contain no whitespace, control characters, '/', '?' or '#'")]
    BadOpaque(&'static str),
}

/// A Golioth device id: 24 hex characters, a Mongo-style ObjectID (GOLIOTH_API.md §2.2; invalid
/// ids are answered with `hex string is not a valid ObjectID`). Stored lower-case so ids compare
/// equal however a caller spelled them; it is the join key of the sync.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GoliothDeviceId(String);

impl GoliothDeviceId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(GoliothDeviceId(s.to_ascii_lowercase()))
        } else {
            Err(IdError::NotObjectId)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GoliothDeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GoliothDeviceId({})", self.0)
    }
}
impl fmt::Display for GoliothDeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl Serialize for GoliothDeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for GoliothDeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GoliothDeviceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A Golioth project id. Its format is not documented (GOLIOTH_API.md gives none); project ids
/// seen in the console are slugs, so this accepts `[A-Za-z0-9._-]{1,128}`, which also keeps the
/// value safe to splice into a URL path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s != "."
            && s != "..";
        if ok {
            Ok(ProjectId(s.to_owned()))
        } else {
            Err(IdError::BadSlug("a project id"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProjectId({})", self.0)
    }
}
impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl Serialize for ProjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for ProjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ProjectId::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn opaque_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#'))
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if opaque_ok(s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(IdError::BadOpaque($what))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

opaque_id!(
    /// The organization a project belongs to (`organizationId` of the project object); the
    /// pipeline and secrets endpoints are scoped by it (GOLIOTH_API.md §1).
    OrganizationId,
    "an organization id"
);
opaque_id!(
    /// A tag id. Devices reference tags by id only; names map to ids through [`TagMap`].
    TagId,
    "a tag id"
);
opaque_id!(
    /// A blueprint id, referenced by devices as `blueprintId`.
    BlueprintId,
    "a blueprint id"
);
opaque_id!(
    /// A cohort id (`cohortId`). Cohorts live under the organization path family; a device only
    /// carries the id. Example values are slugs such as `nrf9151-cell-gateways`.
    CohortId,
    "a cohort id"
);

// -------------------------------------------------------------------------------------------
// Tolerant field readers
// -------------------------------------------------------------------------------------------

pub(crate) fn str_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A string field where the empty string means "none": the API clears `cohortId` with `""`
/// (GOLIOTH_API.md §4.2), so an empty value is not an id.
fn nonempty_str(obj: &Map<String, Value>, key: &str) -> Option<String> {
    str_field(obj, key).filter(|s| !s.is_empty())
}

/// Strings, numbers and booleans as text: `stateCode`/`reasonCode` are strings in the one observed
/// sample (`"0"`), and a number there must not fail the device.
fn lenient_text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn time_field(obj: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    obj.get(key)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn string_list(obj: &Map<String, Value>, key: &str) -> Vec<String> {
    match obj.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn int_field(obj: &Map<String, Value>, key: &str) -> Option<i64> {
    match obj.get(key)? {
        Value::Number(n) => n.as_i64(),
        // grpc-gateway renders int64 as a JSON string.
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn uint_field(obj: &Map<String, Value>, key: &str) -> Option<u64> {
    int_field(obj, key).and_then(|n| u64::try_from(n).ok())
}

/// Why a JSON value is not the resource it should be. Only `id` can make a resource unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("expected a JSON object")]
    NotAnObject,
    #[error("missing or invalid `id`: {0}")]
    Id(IdError),
    #[error("missing `id`")]
    MissingId,
}

fn object(v: &Value) -> Result<&Map<String, Value>, ShapeError> {
    v.as_object().ok_or(ShapeError::NotAnObject)
}

fn required_id<T>(
    obj: &Map<String, Value>,
    parse: impl Fn(&str) -> Result<T, IdError>,
) -> Result<T, ShapeError> {
    let raw = obj
        .get("id")
        .and_then(Value::as_str)
        .ok_or(ShapeError::MissingId)?;
    parse(raw).map_err(ShapeError::Id)
}

// -------------------------------------------------------------------------------------------
// Device
// -------------------------------------------------------------------------------------------

/// A Golioth device as the sync needs it (GOLIOTH_API.md §2.2).
///
/// Deliberately absent: the deprecated top-level `status` and `metadata.status`, which are
/// documented as "always `-`" and carry no online state, and `projectId`, which the API does not
/// return. The deprecated top-level `lastReport` is folded into [`DeviceMetadata::last_report`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: GoliothDeviceId,
    pub name: Option<String>,
    pub hardware_ids: Vec<String>,
    pub tag_ids: Vec<TagId>,
    pub blueprint_id: Option<BlueprintId>,
    pub cohort_id: Option<CohortId>,
    /// Only present for certificate-authenticated devices.
    pub certificate_id: Option<String>,
    /// `None` when the field was absent or null; the sync must not read that as `false`.
    pub enabled: Option<bool>,
    pub created_at: Option<DateTime<Utc>>,
    /// Moves on API/console writes; it does not seem to move when the device only reports
    /// (one observation, UNCERTAIN per GOLIOTH_API.md §2.2), so it is no change signal for
    /// reported fields.
    pub updated_at: Option<DateTime<Utc>>,
    pub metadata: DeviceMetadata,
    /// "Requested device data": filled only when the listing asked for `statePath`/`streamPath`.
    pub data: Option<Value>,
}

/// `metadata` of a device: reported, read-only values (the sync's "reported" field class).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceMetadata {
    /// "Timestamp of latest device activity" (falls back to the deprecated top-level `lastReport`).
    pub last_report: Option<DateTime<Utc>>,
    /// "When the device was last seen online". Whether this backs the console's "Session
    /// Established" is UNCERTAIN (GOLIOTH_API.md §2.2).
    pub last_seen_online: Option<DateTime<Utc>>,
    /// Documented as deprecated; observed as `null`.
    pub last_seen_offline: Option<DateTime<Utc>>,
    pub last_settings_status: Option<SettingsStatus>,
    /// Firmware/OTA state keyed by package name (e.g. `main`).
    pub update: BTreeMap<String, PackageUpdate>,
}

/// `metadata.lastSettingsStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsStatus {
    /// `no-settings`, `in-sync` or `out-of-sync`.
    pub status: Option<String>,
    pub status_detail: Option<String>,
    pub reported_version: Option<String>,
    pub sync_time: Option<DateTime<Utc>>,
    pub errors: Vec<SettingError>,
}

/// One entry of `lastSettingsStatus.errors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingError {
    pub key: Option<String>,
    pub code: Option<i64>,
    pub code_description: Option<String>,
    pub device_details: Option<String>,
}

/// One package of `metadata.update`. Its shape is known from one observed sample only ([NN]),
/// so every field is text and optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageUpdate {
    pub package: Option<String>,
    pub version: Option<String>,
    pub state: Option<String>,
    pub state_code: Option<String>,
    pub reason: Option<String>,
    pub reason_code: Option<String>,
    pub target: Option<String>,
    pub time: Option<DateTime<Utc>>,
}

fn parse_tag_ids(obj: &Map<String, Value>) -> Vec<TagId> {
    string_list(obj, "tagIds")
        .iter()
        .filter_map(|s| TagId::parse(s).ok())
        .collect()
}

impl Device {
    /// Read a device object. Fails only when `id` is missing or not an ObjectID.
    pub fn from_json(v: &Value) -> Result<Device, ShapeError> {
        let obj = object(v)?;
        let id = required_id(obj, GoliothDeviceId::parse)?;
        let empty = Map::new();
        let meta = obj
            .get("metadata")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let metadata = DeviceMetadata {
            last_report: time_field(meta, "lastReport").or_else(|| time_field(obj, "lastReport")),
            last_seen_online: time_field(meta, "lastSeenOnline"),
            last_seen_offline: time_field(meta, "lastSeenOffline"),
            last_settings_status: meta
                .get("lastSettingsStatus")
                .and_then(Value::as_object)
                .map(parse_settings_status),
            update: meta
                .get("update")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), parse_package(v.as_object()?))))
                        .collect()
                })
                .unwrap_or_default(),
        };
        Ok(Device {
            id,
            name: str_field(obj, "name"),
            hardware_ids: string_list(obj, "hardwareIds"),
            tag_ids: parse_tag_ids(obj),
            blueprint_id: nonempty_str(obj, "blueprintId")
                .and_then(|s| BlueprintId::parse(&s).ok()),
            cohort_id: nonempty_str(obj, "cohortId").and_then(|s| CohortId::parse(&s).ok()),
            certificate_id: nonempty_str(obj, "certificateId"),
            enabled: obj.get("enabled").and_then(Value::as_bool),
            created_at: time_field(obj, "createdAt"),
            updated_at: time_field(obj, "updatedAt"),
            metadata,
            data: obj.get("data").filter(|d| !d.is_null()).cloned(),
        })
    }

    /// The firmware version the device reports: package `main` if present, else the first
    /// package by name (the sync's `firmware_version`).
    pub fn firmware_version(&self) -> Option<&str> {
        let update = &self.metadata.update;
        update
            .get("main")
            .or_else(|| update.values().next())
            .and_then(|p| p.version.as_deref())
    }
}

fn parse_settings_status(m: &Map<String, Value>) -> SettingsStatus {
    SettingsStatus {
        status: str_field(m, "status"),
        status_detail: str_field(m, "statusDetail"),
        reported_version: lenient_text(m, "reportedVersion"),
        sync_time: time_field(m, "syncTime"),
        errors: match m.get("errors") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_object)
                .map(|e| SettingError {
                    key: str_field(e, "key"),
                    code: int_field(e, "code"),
                    code_description: str_field(e, "codeDescription"),
                    device_details: str_field(e, "deviceDetails"),
                })
                .collect(),
            _ => Vec::new(),
        },
    }
}

fn parse_package(m: &Map<String, Value>) -> PackageUpdate {
    PackageUpdate {
        package: lenient_text(m, "package"),
        version: lenient_text(m, "version"),
        state: lenient_text(m, "state"),
        state_code: lenient_text(m, "stateCode"),
        reason: lenient_text(m, "reason"),
        reason_code: lenient_text(m, "reasonCode"),
        target: lenient_text(m, "target"),
        time: time_field(m, "time"),
    }
}

// -------------------------------------------------------------------------------------------
// Project, tags, blueprints, credentials
// -------------------------------------------------------------------------------------------

/// A project (`GET /v1/projects/{projectId}` → `{"data": …}`). The sync reads it once per run
/// for `organizationId`, which the organization-scoped endpoints need.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: ProjectId,
    pub name: Option<String>,
    pub organization_id: Option<OrganizationId>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Project {
    pub fn from_json(v: &Value) -> Result<Project, ShapeError> {
        let obj = object(v)?;
        Ok(Project {
            id: required_id(obj, ProjectId::parse)?,
            name: str_field(obj, "name"),
            organization_id: nonempty_str(obj, "organizationId")
                .and_then(|s| OrganizationId::parse(&s).ok()),
            created_at: time_field(obj, "createdAt"),
            updated_at: time_field(obj, "updatedAt"),
        })
    }
}

/// A tag: `{id, name, createdAt, updatedAt}` (GOLIOTH_API.md §5).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    pub id: TagId,
    pub name: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Tag {
    pub fn from_json(v: &Value) -> Result<Tag, ShapeError> {
        let obj = object(v)?;
        Ok(Tag {
            id: required_id(obj, TagId::parse)?,
            name: str_field(obj, "name"),
            created_at: time_field(obj, "createdAt"),
            updated_at: time_field(obj, "updatedAt"),
        })
    }
}

/// A blueprint: `{id, name, boardId, platform, createdAt, updatedAt}` (GOLIOTH_API.md §5).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blueprint {
    pub id: BlueprintId,
    pub name: Option<String>,
    pub board_id: Option<String>,
    pub platform: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Blueprint {
    pub fn from_json(v: &Value) -> Result<Blueprint, ShapeError> {
        let obj = object(v)?;
        Ok(Blueprint {
            id: required_id(obj, BlueprintId::parse)?,
            name: str_field(obj, "name"),
            board_id: str_field(obj, "boardId"),
            platform: str_field(obj, "platform"),
            created_at: time_field(obj, "createdAt"),
            updated_at: time_field(obj, "updatedAt"),
        })
    }
}

/// A device credential as answered by `POST …/devices/{id}/credentials`. The pre-shared key is
/// never kept here, even if the server echoes it: it is a secret and the caller already has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    /// The credential's id; the response shape is not shown in GOLIOTH_API.md, so it is optional.
    pub id: Option<String>,
    /// `PRE_SHARED_KEY` or `ASYMMETRIC_KEY_PAIR`.
    pub credential_type: Option<String>,
    /// The identity as stored: the server appends `@<projectId>` (GOLIOTH_API.md §4.1).
    pub identity: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

impl Credential {
    /// Tolerant in every field: the create response's shape is UNCERTAIN (only `{"data":{…}}`
    /// is documented).
    pub fn from_json(v: &Value) -> Result<Credential, ShapeError> {
        let obj = object(v)?;
        Ok(Credential {
            id: lenient_text(obj, "id"),
            credential_type: str_field(obj, "type"),
            identity: str_field(obj, "identity"),
            created_at: time_field(obj, "createdAt"),
        })
    }
}

// -------------------------------------------------------------------------------------------
// Tag name <-> id map
// -------------------------------------------------------------------------------------------

/// Tag names ↔ ids, built once per run from the tag listing: locally tags are names, in Golioth
/// devices carry ids (GOLIOTH_API.md §5, §11.5). Names are compared exactly; whether Golioth
/// treats tag names case-insensitively is not documented.
#[derive(Debug, Clone, Default)]
pub struct TagMap {
    by_name: HashMap<String, TagId>,
    by_id: HashMap<TagId, String>,
}

impl TagMap {
    pub fn from_tags(tags: impl IntoIterator<Item = Tag>) -> TagMap {
        let mut map = TagMap::default();
        for tag in tags {
            map.insert(tag);
        }
        map
    }

    /// Add a tag (e.g. one just created). A tag without a name is unusable for mapping.
    pub fn insert(&mut self, tag: Tag) {
        if let Some(name) = tag.name {
            self.by_name.insert(name.clone(), tag.id.clone());
            self.by_id.insert(tag.id, name);
        }
    }

    pub fn id_of(&self, name: &str) -> Option<&TagId> {
        self.by_name.get(name)
    }

    pub fn name_of(&self, id: &TagId) -> Option<&str> {
        self.by_id.get(id).map(String::as_str)
    }

    /// Names for ids; ids the map does not know are returned separately (a tag created in the
    /// console after the map was built), so the caller can refresh instead of dropping them.
    pub fn names_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a TagId>,
    ) -> (Vec<String>, Vec<TagId>) {
        let mut names = Vec::new();
        let mut unknown = Vec::new();
        for id in ids {
            match self.by_id.get(id) {
                Some(n) => names.push(n.clone()),
                None => unknown.push(id.clone()),
            }
        }
        (names, unknown)
    }

    /// Ids for names; names without a tag are returned separately so they can be created first
    /// (a device create fails when a tag does not exist).
    pub fn ids_of<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> (Vec<TagId>, Vec<String>) {
        let mut ids = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match self.by_name.get(name) {
                Some(id) => ids.push(id.clone()),
                None => missing.push(name.to_owned()),
            }
        }
        (ids, missing)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The device example of GOLIOTH_API.md §2.2, with concrete values where the doc has
    /// placeholders.
    fn doc_device() -> Value {
        json!({
          "id": "68bf1cc5425dd2ea93f248a3",
          "name": "C253700003",
          "hardwareIds": ["20250908181325-c253700003"],
          "tagIds": ["6601aa00bb11cc22dd33ee44"],
          "blueprintId": "6601aa00bb11cc22dd33ee55",
          "cohortId": "nrf9151-cell-gateways",
          "enabled": true,
          "status": "-",
          "lastReport": "2025-11-09T23:35:06.957Z",
          "createdAt": "2025-09-08T18:13:25.775Z",
          "updatedAt": "2025-09-08T18:13:25.775Z",
          "metadata": {
            "lastReport": "2025-11-09T23:35:06.957Z",
            "lastSeenOnline": "2025-11-09T20:23:38.628Z",
            "lastSeenOffline": null,
            "status": "-",
            "lastSettingsStatus": {
              "status": "in-sync", "statusDetail": "ok", "reportedVersion": "3",
              "syncTime": "2025-11-09T20:23:38.628Z",
              "errors": [{"key": "k", "code": 1, "codeDescription": "x", "deviceDetails": "y"}]
            },
            "update": {
              "main": {"package": "main", "version": "1.0.0", "state": "IDLE", "stateCode": "0",
                       "reason": "ready state", "reasonCode": "0", "target": "",
                       "time": "2025-11-09T20:23:38.628Z"}
            }
          }
        })
    }

    #[test]
    fn parses_the_documented_device() {
        let d = Device::from_json(&doc_device()).unwrap();
        assert_eq!(d.id.as_str(), "68bf1cc5425dd2ea93f248a3");
        assert_eq!(d.name.as_deref(), Some("C253700003"));
        assert_eq!(d.hardware_ids, vec!["20250908181325-c253700003"]);
        assert_eq!(d.tag_ids.len(), 1);
        assert_eq!(
            d.cohort_id.as_ref().map(CohortId::as_str),
            Some("nrf9151-cell-gateways")
        );
        assert_eq!(d.enabled, Some(true));
        assert!(d.metadata.last_report.is_some());
        assert!(d.metadata.last_seen_online.is_some());
        assert_eq!(d.metadata.last_seen_offline, None);
        assert_eq!(d.firmware_version(), Some("1.0.0"));
        let s = d.metadata.last_settings_status.unwrap();
        assert_eq!(s.status.as_deref(), Some("in-sync"));
        assert_eq!(s.errors[0].code, Some(1));
        assert_eq!(d.data, None);
    }

    #[test]
    fn every_field_but_id_may_be_absent_or_null() {
        let d = Device::from_json(&json!({"id": "68BF1CC5425DD2EA93F248A3"})).unwrap();
        assert_eq!(d.id.as_str(), "68bf1cc5425dd2ea93f248a3");
        assert_eq!(d.name, None);
        assert!(d.hardware_ids.is_empty() && d.tag_ids.is_empty());
        assert_eq!(d.enabled, None);

        let nulls = json!({"id": "68bf1cc5425dd2ea93f248a3", "name": null, "hardwareIds": null,
            "tagIds": null, "blueprintId": null, "cohortId": "", "enabled": null,
            "createdAt": null, "updatedAt": "not a time", "metadata": null, "data": null});
        let d = Device::from_json(&nulls).unwrap();
        assert_eq!(d.cohort_id, None);
        assert_eq!(d.updated_at, None);
        assert_eq!(d.metadata, DeviceMetadata::default());

        // Wrong types read as absent rather than failing the page.
        let odd = json!({"id": "68bf1cc5425dd2ea93f248a3", "name": 7, "hardwareIds": ["a", 3],
            "enabled": "yes", "metadata": {"update": {"main": {"version": 2, "stateCode": 0}}}});
        let d = Device::from_json(&odd).unwrap();
        assert_eq!(d.name, None);
        assert_eq!(d.hardware_ids, vec!["a"]);
        assert_eq!(d.enabled, None);
        assert_eq!(d.firmware_version(), Some("2"));
    }

    #[test]
    fn id_is_required() {
        assert_eq!(
            Device::from_json(&json!({"name": "x"})),
            Err(ShapeError::MissingId)
        );
        assert!(matches!(
            Device::from_json(&json!({"id": "xyz"})),
            Err(ShapeError::Id(IdError::NotObjectId))
        ));
        assert_eq!(Device::from_json(&json!([1])), Err(ShapeError::NotAnObject));
    }

    #[test]
    fn top_level_last_report_is_a_fallback() {
        let d = Device::from_json(&json!({"id": "68bf1cc5425dd2ea93f248a3",
            "lastReport": "2025-11-09T23:35:06.957Z"}))
        .unwrap();
        assert!(d.metadata.last_report.is_some());
    }

    #[test]
    fn ids_parse_at_the_edge() {
        assert!(GoliothDeviceId::parse("612d3cecf3ee17d321adbec6").is_ok());
        assert!(GoliothDeviceId::parse("612d3cecf3ee17d321adbec").is_err());
        assert!(GoliothDeviceId::parse("612d3cecf3ee17d321adbecg").is_err());
        assert!(ProjectId::parse("my-project_1.x").is_ok());
        for bad in ["", "a/b", "a b", "..", "é"] {
            assert!(ProjectId::parse(bad).is_err(), "{bad}");
        }
        assert!(TagId::parse("t1").is_ok());
        assert!(TagId::parse("a/b").is_err());
        let id: GoliothDeviceId =
            serde_json::from_value(json!("612d3cecf3ee17d321adbec6")).unwrap();
        assert_eq!(
            serde_json::to_value(&id).unwrap(),
            json!("612d3cecf3ee17d321adbec6")
        );
    }

    #[test]
    fn tag_map_round_trips_and_reports_gaps() {
        let t = |id: &str, name: &str| Tag {
            id: TagId::parse(id).unwrap(),
            name: Some(name.into()),
            created_at: None,
            updated_at: None,
        };
        let map = TagMap::from_tags([t("1", "red"), t("2", "blue")]);
        assert_eq!(map.id_of("red").map(TagId::as_str), Some("1"));
        let (ids, missing) = map.ids_of(["red", "green"]);
        assert_eq!(ids.len(), 1);
        assert_eq!(missing, vec!["green"]);
        let unknown = TagId::parse("9").unwrap();
        let two = TagId::parse("2").unwrap();
        let (names, unk) = map.names_of([&two, &unknown]);
        assert_eq!(names, vec!["blue"]);
        assert_eq!(unk, vec![unknown]);
        assert_eq!(map.len(), 2);
    }
}
