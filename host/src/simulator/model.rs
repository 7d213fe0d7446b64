//! The simulator's world: projects, API keys, devices, tags, blueprints, credentials and LightDB
//! State, with Golioth's rules (uniqueness per project, tags referenced by id, PATCH semantics,
//! `updatedAt` moving on writes) and the JSON shapes of GOLIOTH_API.md §2.2 and §5.
//!
//! Built for 100,000-device projects: devices live in a map with a creation-ordered id list, and
//! name / hardware-id indexes make the uniqueness checks and full-match filters O(1).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A Golioth-style failure: HTTP status, gRPC code and message, answered as
/// `{"code", "message", "details": []}` (GOLIOTH_API.md §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    pub status: u16,
    pub code: i32,
    pub message: String,
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (HTTP {}, code {})",
            self.message, self.status, self.code
        )
    }
}
impl std::error::Error for SimError {}

impl SimError {
    pub fn new(status: u16, code: i32, message: impl Into<String>) -> Self {
        SimError {
            status,
            code,
            message: message.into(),
        }
    }
    /// 400 InvalidArgument.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, 3, message)
    }
    /// 400 FailedPrecondition: a referenced tag or blueprint does not exist. Golioth's status for
    /// this is UNCERTAIN; [PGT] only shows the message `tag not found`.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(400, 9, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, 5, message)
    }
    /// 409 AlreadyExists with Golioth's "… already being used" wording. The status is the
    /// grpc-gateway mapping; Golioth's actual status for duplicates is UNCERTAIN (§4.1).
    pub fn already_used(what: &str) -> Self {
        Self::new(409, 6, format!("{what} already being used"))
    }
    pub fn unauthenticated() -> Self {
        Self::new(401, 16, "unauthenticated: missing or invalid API key")
    }
    /// Keys are project-scoped; a key used on another project is denied. Whether Golioth answers
    /// 403 or 404 there is UNCERTAIN.
    pub fn permission_denied() -> Self {
        Self::new(
            403,
            7,
            "permission denied: the API key does not belong to this project",
        )
    }
    /// grpc-gateway's answer to a wrong method on a known route (§7: MethodNotAllowed →
    /// Unimplemented → 501).
    pub fn method_not_allowed() -> Self {
        Self::new(501, 12, "Method Not Allowed")
    }
    pub fn route_not_found() -> Self {
        Self::new(404, 5, "Not Found")
    }
    pub fn body(&self) -> Value {
        json!({"code": self.code, "message": self.message, "details": []})
    }
}

pub type SimResult<T> = Result<T, SimError>;

/// Timestamps as Golioth writes them: `2025-09-08T18:13:25.775Z`.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(fmt_time(t)))
}

/// A simulated device. Public so tests can edit it "as the console would" through
/// `SimulatorHandle::console_edit`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDevice {
    pub id: String,
    pub name: String,
    pub hardware_ids: Vec<String>,
    pub tag_ids: Vec<String>,
    pub blueprint_id: Option<String>,
    pub cohort_id: Option<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `metadata.lastReport` (mirrored by the deprecated top-level `lastReport`).
    pub last_report: Option<DateTime<Utc>>,
    pub last_seen_online: Option<DateTime<Utc>>,
    /// `metadata.lastSettingsStatus.status`: `no-settings`, `in-sync` or `out-of-sync`.
    pub settings_status: String,
    /// `metadata.update`: package → version.
    pub firmware: BTreeMap<String, String>,
    /// The LightDB State document.
    pub state: Value,
}

impl SimDevice {
    /// The device JSON of GOLIOTH_API.md §2.2. `blueprintId`/`cohortId` are left out when unset
    /// ([PGT] tests `'blueprintId' in info`); `lastSeenOffline` is always `null` (deprecated,
    /// observed null); `status` is the deprecated `-`. `data` is added by the listing when
    /// `statePath` was asked for.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("name".into(), json!(self.name));
        m.insert("hardwareIds".into(), json!(self.hardware_ids));
        m.insert("tagIds".into(), json!(self.tag_ids));
        if let Some(b) = &self.blueprint_id {
            m.insert("blueprintId".into(), json!(b));
        }
        if let Some(c) = &self.cohort_id {
            m.insert("cohortId".into(), json!(c));
        }
        m.insert("enabled".into(), json!(self.enabled));
        m.insert("status".into(), json!("-"));
        if let Some(r) = self.last_report {
            m.insert("lastReport".into(), json!(fmt_time(r)));
        }
        m.insert("createdAt".into(), json!(fmt_time(self.created_at)));
        m.insert("updatedAt".into(), json!(fmt_time(self.updated_at)));
        let update: Map<String, Value> = self
            .firmware
            .iter()
            .map(|(package, version)| {
                let time = opt_time(self.last_report.or(Some(self.created_at)));
                (
                    package.clone(),
                    json!({"package": package, "version": version, "state": "IDLE",
                           "stateCode": "0", "reason": "ready state", "reasonCode": "0",
                           "target": "", "time": time}),
                )
            })
            .collect();
        m.insert(
            "metadata".into(),
            json!({
                "lastReport": opt_time(self.last_report),
                "lastSeenOnline": opt_time(self.last_seen_online),
                "lastSeenOffline": null,
                "status": "-",
                "lastSettingsStatus": {
                    "status": self.settings_status,
                    "statusDetail": "",
                    "reportedVersion": "",
                    "syncTime": opt_time(self.last_report),
                    "errors": []
                },
                "update": update
            }),
        );
        Value::Object(m)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimTag {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SimTag {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "createdAt": fmt_time(self.created_at),
               "updatedAt": fmt_time(self.updated_at)})
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimBlueprint {
    pub id: String,
    pub name: String,
    pub board_id: String,
    pub platform: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SimBlueprint {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "boardId": self.board_id,
               "platform": self.platform, "createdAt": fmt_time(self.created_at),
               "updatedAt": fmt_time(self.updated_at)})
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimCredential {
    pub id: String,
    pub device_id: String,
    pub identity: String,
    pub created_at: DateTime<Utc>,
}

impl SimCredential {
    /// The credential as answered; the key itself is not echoed (whether Golioth echoes it is
    /// not documented).
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "type": "PRE_SHARED_KEY", "identity": self.identity,
               "deviceId": self.device_id, "createdAt": fmt_time(self.created_at)})
    }
}

/// How to create a project (a control, not an API call).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSpec {
    pub id: String,
    pub api_key: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub organization_id: Option<String>,
}

impl ProjectSpec {
    pub fn new(id: impl Into<String>, api_key: impl Into<String>) -> Self {
        ProjectSpec {
            id: id.into(),
            api_key: api_key.into(),
            name: None,
            organization_id: None,
        }
    }
}

/// Deterministic fleet seeding: device `i` (from `start_index`) is named `{prefix}-{i:06}` with
/// hardware id `hw-{prefix}-{i:06}`, gets tag `tags[i % len]` (and every third device also the
/// next one), and — when asked — a LightDB State document, reports and firmware derived from `i`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SeedSpec {
    pub count: usize,
    pub name_prefix: String,
    pub start_index: usize,
    /// Tag names, created when missing.
    pub tags: Vec<String>,
    /// A blueprint name, created when missing.
    pub blueprint: Option<String>,
    pub cohort_id: Option<String>,
    /// `{"battery": …, "signal": …, "location": {"lat", "lon"}}`.
    pub with_state: bool,
    /// Device `i` last reported (and was seen online) `i % 3600` seconds before this.
    pub last_report: Option<DateTime<Utc>>,
    /// Version of package `main`.
    pub firmware_version: Option<String>,
    /// Every n-th device is disabled (0: none).
    pub disabled_every: usize,
}

impl Default for SeedSpec {
    fn default() -> Self {
        SeedSpec {
            count: 0,
            name_prefix: "device".into(),
            start_index: 0,
            tags: Vec::new(),
            blueprint: None,
            cohort_id: None,
            with_state: false,
            last_report: None,
            firmware_version: None,
            disabled_every: 0,
        }
    }
}

impl SeedSpec {
    pub fn devices(count: usize) -> Self {
        SeedSpec {
            count,
            ..SeedSpec::default()
        }
    }

    /// The deterministic state document of seeded device `i`.
    pub fn state_of(i: usize) -> Value {
        let i = i as i64;
        json!({
            "battery": 100 - i % 100,
            "signal": -(50 + i % 40),
            "location": {
                "lat": (59_900 + i % 100) as f64 / 1000.0,
                "lon": (10_700 + i % 50) as f64 / 1000.0
            }
        })
    }
}

/// The fixed creation time of seeded devices, so two seeded simulators render the same JSON.
fn seed_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct SimProject {
    pub id: String,
    pub name: String,
    pub organization_id: String,
    pub created_at: DateTime<Utc>,
    order: Vec<String>,
    devices: HashMap<String, SimDevice>,
    names: HashMap<String, String>,
    hardware: HashMap<String, String>,
    tags: Vec<SimTag>,
    blueprints: Vec<SimBlueprint>,
    credentials: Vec<SimCredential>,
    identities: HashSet<String>,
}

impl SimProject {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "organizationId": self.organization_id,
               "roles": [], "createdAt": fmt_time(self.created_at),
               "updatedAt": fmt_time(self.created_at)})
    }
    pub fn device(&self, id: &str) -> Option<&SimDevice> {
        self.devices.get(id)
    }
    pub fn device_count(&self) -> usize {
        self.order.len()
    }
    /// Device ids in creation order (the listing order).
    pub fn device_ids(&self) -> &[String] {
        &self.order
    }
    pub fn tags(&self) -> &[SimTag] {
        &self.tags
    }
    pub fn tag_by_name(&self, name: &str) -> Option<&SimTag> {
        self.tags.iter().find(|t| t.name == name)
    }
    pub fn credentials(&self) -> &[SimCredential] {
        &self.credentials
    }
    fn has_tag(&self, id: &str) -> bool {
        self.tags.iter().any(|t| t.id == id)
    }
    fn has_blueprint(&self, id: &str) -> bool {
        self.blueprints.iter().any(|b| b.id == id)
    }
    fn device_mut(&mut self, id: &str) -> SimResult<&mut SimDevice> {
        self.devices
            .get_mut(id)
            .ok_or_else(|| SimError::not_found("device not found"))
    }
}

/// Query of the device listing (GOLIOTH_API.md §3).
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    pub page: u64,
    pub per_page: u64,
    pub device_name: Option<String>,
    pub hardware_id: Option<String>,
    pub tags: Vec<String>,
    pub blueprint_id: Option<String>,
    pub cohort_id: Option<String>,
    pub enabled: Option<bool>,
    pub term: Option<String>,
    pub state_path: Option<Vec<String>>,
}

/// All projects and the id/time sources.
#[derive(Debug)]
pub struct World {
    projects: HashMap<String, SimProject>,
    keys: HashMap<String, String>,
    next_id: u64,
    last_time: DateTime<Utc>,
}

impl Default for World {
    fn default() -> Self {
        World {
            projects: HashMap::new(),
            keys: HashMap::new(),
            next_id: 0,
            last_time: DateTime::<Utc>::MIN_UTC,
        }
    }
}

/// A 24-hex ObjectID from a counter: deterministic for the same sequence of operations.
fn object_id(n: u64) -> String {
    format!("6500{n:020x}")
}

fn hex_id_ok(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Golioth's answer for an id that is not an ObjectID ([PGT]).
fn check_object_id(id: &str) -> SimResult<()> {
    if hex_id_ok(id) {
        Ok(())
    } else {
        Err(SimError::invalid("hex string is not a valid ObjectID"))
    }
}

fn strings(v: &Value, field: &str) -> SimResult<Vec<String>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_owned).ok_or_else(|| {
                    SimError::invalid(format!("{field}: expected a list of strings"))
                })
            })
            .collect(),
        _ => Err(SimError::invalid(format!(
            "{field}: expected a list of strings"
        ))),
    }
}

fn optional_id(v: &Value, field: &str) -> SimResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(SimError::invalid(format!("{field}: expected a string"))),
    }
}

fn push_unique(list: &mut Vec<String>, items: Vec<String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// `20211203113100-my-first-device`: what Golioth generates when no hardware id is given.
fn generated_hardware_id(name: &str, now: DateTime<Utc>) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{}-{}", now.format("%Y%m%d%H%M%S"), slug.trim_matches('-'))
}

/// The part of a JSON document at `path` (segments), if any.
pub fn state_at<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, seg| v.get(seg))
}

fn state_set(doc: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *doc = value;
        return;
    };
    let mut cur = doc;
    for seg in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Value::Object(m) = cur {
        m.insert(last.clone(), value);
    }
}

fn state_remove(doc: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        *doc = Value::Object(Map::new());
        return;
    };
    let mut cur = doc;
    for seg in parents {
        match cur.get_mut(seg) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(last);
    }
}

/// RFC 7386 JSON merge patch, the natural reading of a LightDB State `PATCH`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

impl World {
    /// A strictly increasing millisecond clock, so every write moves `updatedAt` visibly.
    pub fn tick(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let next = if now > self.last_time {
            now
        } else {
            self.last_time + ChronoDuration::milliseconds(1)
        };
        self.last_time = next;
        next
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        object_id(self.next_id)
    }

    pub fn create_project(&mut self, spec: &ProjectSpec) -> SimResult<()> {
        if spec.id.is_empty() || spec.api_key.is_empty() {
            return Err(SimError::invalid("a project needs an id and an API key"));
        }
        if self.projects.contains_key(&spec.id) {
            return Err(SimError::already_used("project id"));
        }
        if self.keys.contains_key(&spec.api_key) {
            return Err(SimError::already_used("API key"));
        }
        let now = self.tick();
        self.projects.insert(
            spec.id.clone(),
            SimProject {
                id: spec.id.clone(),
                name: spec.name.clone().unwrap_or_else(|| spec.id.clone()),
                organization_id: spec
                    .organization_id
                    .clone()
                    .unwrap_or_else(|| format!("org-{}", spec.id)),
                created_at: now,
                order: Vec::new(),
                devices: HashMap::new(),
                names: HashMap::new(),
                hardware: HashMap::new(),
                tags: Vec::new(),
                blueprints: Vec::new(),
                credentials: Vec::new(),
                identities: HashSet::new(),
            },
        );
        self.keys.insert(spec.api_key.clone(), spec.id.clone());
        Ok(())
    }

    /// An additional key for a project (key rotation tests).
    pub fn add_api_key(&mut self, project: &str, key: &str) -> SimResult<()> {
        self.project(project)?;
        self.keys.insert(key.to_owned(), project.to_owned());
        Ok(())
    }

    pub fn revoke_api_key(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// The project an API key belongs to.
    pub fn project_of_key(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    pub fn project(&self, id: &str) -> SimResult<&SimProject> {
        self.projects
            .get(id)
            .ok_or_else(|| SimError::not_found("project not found"))
    }

    fn project_mut(&mut self, id: &str) -> SimResult<&mut SimProject> {
        self.projects
            .get_mut(id)
            .ok_or_else(|| SimError::not_found("project not found"))
    }

    // ---- devices ------------------------------------------------------------------------

    /// `GET …/devices`: `{list, page, perPage, total}` in creation order. Golioth's order is
    /// undocumented (UNCERTAIN, §3); a stable one keeps paging tests meaningful.
    pub fn list_devices(&self, project: &str, q: &DeviceQuery) -> SimResult<Value> {
        let p = self.project(project)?;
        let filtered = q.device_name.is_some()
            || q.hardware_id.is_some()
            || !q.tags.is_empty()
            || q.blueprint_id.is_some()
            || q.cohort_id.is_some()
            || q.enabled.is_some()
            || q.term.is_some();
        let offset = q.page.saturating_mul(q.per_page);
        let (total, page_ids): (usize, Vec<&String>) = if filtered {
            let candidates: Vec<&String> = if let Some(name) = &q.device_name {
                p.names.get(name).into_iter().collect()
            } else if let Some(hw) = &q.hardware_id {
                p.hardware.get(hw).into_iter().collect()
            } else {
                p.order.iter().collect()
            };
            let term = q.term.as_ref().map(|t| t.to_lowercase());
            let matching: Vec<&String> = candidates
                .into_iter()
                .filter(|id| {
                    let Some(d) = p.devices.get(id.as_str()) else {
                        return false;
                    };
                    q.device_name.as_ref().is_none_or(|n| &d.name == n)
                        && q.hardware_id
                            .as_ref()
                            .is_none_or(|h| d.hardware_ids.contains(h))
                        && q.tags.iter().all(|t| d.tag_ids.contains(t))
                        && q.blueprint_id
                            .as_ref()
                            .is_none_or(|b| d.blueprint_id.as_ref() == Some(b))
                        && q.cohort_id
                            .as_ref()
                            .is_none_or(|c| d.cohort_id.as_ref() == Some(c))
                        && q.enabled.is_none_or(|e| d.enabled == e)
                        && term.as_ref().is_none_or(|t| {
                            d.name.to_lowercase().contains(t)
                                || d.hardware_ids.iter().any(|h| h.to_lowercase().contains(t))
                        })
                })
                .collect();
            let total = matching.len();
            let page = matching
                .into_iter()
                .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                .take(q.per_page as usize)
                .collect();
            (total, page)
        } else {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(p.order.len());
            let end = start.saturating_add(q.per_page as usize).min(p.order.len());
            (p.order.len(), p.order[start..end].iter().collect())
        };
        let list: Vec<Value> = page_ids
            .into_iter()
            .filter_map(|id| p.devices.get(id.as_str()))
            .map(|d| {
                let mut v = d.to_json();
                if let (Some(path), Value::Object(m)) = (&q.state_path, &mut v) {
                    // UNCERTAIN: whether `data` holds the sub-tree itself (as here) or nests it
                    // under its path is not documented (GOLIOTH_API.md §6.1).
                    let data = state_at(&d.state, path).cloned().unwrap_or(Value::Null);
                    m.insert("data".into(), data);
                }
                v
            })
            .collect();
        Ok(json!({"list": list, "page": q.page, "perPage": q.per_page, "total": total}))
    }

    pub fn get_device(&self, project: &str, id: &str) -> SimResult<Value> {
        check_object_id(id)?;
        let p = self.project(project)?;
        p.device(id)
            .map(SimDevice::to_json)
            .ok_or_else(|| SimError::not_found("device not found"))
    }

    /// `POST …/devices` (`goliothDevicesCreateBody`).
    pub fn create_device(&mut self, project: &str, body: &Value) -> SimResult<Value> {
        let obj = body
            .as_object()
            .ok_or_else(|| SimError::invalid("request body must be a JSON object"))?;
        let name = match obj.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => return Err(SimError::invalid("name is required")),
        };
        let now = self.tick();
        let mut hardware_ids = match obj.get("hardwareIds") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => strings(v, "hardwareIds")?,
        };
        if hardware_ids.is_empty() {
            hardware_ids.push(generated_hardware_id(&name, now));
        }
        let mut dedup = Vec::new();
        push_unique(&mut dedup, hardware_ids);
        let tag_ids = match obj.get("tagIds") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => strings(v, "tagIds")?,
        };
        let blueprint_id = optional_id(
            obj.get("blueprintId").unwrap_or(&Value::Null),
            "blueprintId",
        )?;
        let cohort_id = optional_id(obj.get("cohortId").unwrap_or(&Value::Null), "cohortId")?;
        let enabled = match obj.get("enabled") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(SimError::invalid("enabled: expected a boolean")),
        };
        let id = self.new_id();
        let mut tags = Vec::new();
        push_unique(&mut tags, tag_ids);
        let device = SimDevice {
            id,
            name,
            hardware_ids: dedup,
            tag_ids: tags,
            blueprint_id,
            cohort_id,
            enabled,
            created_at: now,
            updated_at: now,
            last_report: None,
            last_seen_online: None,
            settings_status: "no-settings".into(),
            firmware: BTreeMap::new(),
            state: Value::Object(Map::new()),
        };
        let json = device.to_json();
        self.insert_device(project, device)?;
        Ok(json)
    }

    /// Validate references and uniqueness, then index a new device.
    fn insert_device(&mut self, project: &str, device: SimDevice) -> SimResult<()> {
        let p = self.project_mut(project)?;
        validate_refs(p, &device)?;
        if p.names.contains_key(&device.name) {
            return Err(SimError::already_used("device name"));
        }
        if device
            .hardware_ids
            .iter()
            .any(|h| p.hardware.contains_key(h))
        {
            return Err(SimError::already_used("hardware id"));
        }
        p.names.insert(device.name.clone(), device.id.clone());
        for h in &device.hardware_ids {
            p.hardware.insert(h.clone(), device.id.clone());
        }
        p.order.push(device.id.clone());
        p.devices.insert(device.id.clone(), device);
        Ok(())
    }

    /// `PATCH` (partial, `replace == false`) or `PUT` (whole, `replace == true`) of a device
    /// (`goliothDeviceUpdate`). Unknown fields are ignored (grpc-gateway discards them).
    pub fn update_device(
        &mut self,
        project: &str,
        id: &str,
        body: &Value,
        replace: bool,
    ) -> SimResult<Value> {
        check_object_id(id)?;
        let obj = body
            .as_object()
            .ok_or_else(|| SimError::invalid("request body must be a JSON object"))?
            .clone();
        self.edit_device(project, id, |d| apply_update(d, &obj, replace))
    }

    /// Apply `edit` to a copy of the device, check references and uniqueness, then commit it and
    /// move `updatedAt`. Used by the API's PATCH/PUT and by console edits alike.
    pub fn edit_device(
        &mut self,
        project: &str,
        id: &str,
        edit: impl FnOnce(&mut SimDevice) -> SimResult<()>,
    ) -> SimResult<Value> {
        let now = self.tick();
        let p = self.project_mut(project)?;
        let old = p
            .device(id)
            .cloned()
            .ok_or_else(|| SimError::not_found("device not found"))?;
        let mut new = old.clone();
        edit(&mut new)?;
        new.id = old.id.clone();
        if new.name.trim().is_empty() {
            return Err(SimError::invalid("name is required"));
        }
        let mut hw = Vec::new();
        push_unique(&mut hw, std::mem::take(&mut new.hardware_ids));
        new.hardware_ids = hw;
        let mut tags = Vec::new();
        push_unique(&mut tags, std::mem::take(&mut new.tag_ids));
        new.tag_ids = tags;
        validate_refs(p, &new)?;
        if new.name != old.name && p.names.contains_key(&new.name) {
            return Err(SimError::already_used("device name"));
        }
        if new
            .hardware_ids
            .iter()
            .any(|h| p.hardware.get(h).is_some_and(|owner| owner != id))
        {
            return Err(SimError::already_used("hardware id"));
        }
        p.names.remove(&old.name);
        p.names.insert(new.name.clone(), new.id.clone());
        for h in &old.hardware_ids {
            p.hardware.remove(h);
        }
        for h in &new.hardware_ids {
            p.hardware.insert(h.clone(), new.id.clone());
        }
        new.updated_at = now;
        let json = new.to_json();
        p.devices.insert(new.id.clone(), new);
        Ok(json)
    }

    /// Change reported values the way a device does, without moving `updatedAt` (GOLIOTH_API.md
    /// §2.2: `updatedAt` did not move while `lastReport` did; one observation, UNCERTAIN).
    pub fn with_device_reported(
        &mut self,
        project: &str,
        id: &str,
        f: impl FnOnce(&mut SimDevice),
    ) -> SimResult<()> {
        let d = self.project_mut(project)?.device_mut(id)?;
        let updated_at = d.updated_at;
        f(d);
        d.updated_at = updated_at;
        Ok(())
    }

    pub fn delete_device(&mut self, project: &str, id: &str) -> SimResult<()> {
        check_object_id(id)?;
        let p = self.project_mut(project)?;
        let d = p
            .devices
            .remove(id)
            .ok_or_else(|| SimError::not_found("device not found"))?;
        p.names.remove(&d.name);
        for h in &d.hardware_ids {
            p.hardware.remove(h);
        }
        if let Some(pos) = p.order.iter().position(|x| x == id) {
            p.order.remove(pos);
        }
        p.credentials.retain(|c| c.device_id != id);
        Ok(())
    }

    // ---- credentials --------------------------------------------------------------------

    /// `POST …/devices/{id}/credentials` with `{type, identity, preSharedKey}`.
    pub fn create_credential(
        &mut self,
        project: &str,
        device: &str,
        body: &Value,
    ) -> SimResult<Value> {
        check_object_id(device)?;
        let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "PRE_SHARED_KEY" {
            return Err(SimError::invalid(
                "the simulator supports only type PRE_SHARED_KEY",
            ));
        }
        let identity = body.get("identity").and_then(Value::as_str).unwrap_or("");
        let psk = body
            .get("preSharedKey")
            .and_then(Value::as_str)
            .unwrap_or("");
        if identity.is_empty() || psk.is_empty() {
            return Err(SimError::invalid("identity and preSharedKey are required"));
        }
        let now = self.tick();
        let id = self.new_id();
        let p = self.project_mut(project)?;
        p.device_mut(device)?;
        // The server appends `@<projectId>` (GOLIOTH_API.md §4.1).
        let full = format!("{identity}@{}", p.id);
        if !p.identities.insert(full.clone()) {
            return Err(SimError::already_used("identity"));
        }
        let cred = SimCredential {
            id,
            device_id: device.to_owned(),
            identity: full,
            created_at: now,
        };
        let json = cred.to_json();
        p.credentials.push(cred);
        Ok(json)
    }

    pub fn list_credentials(&self, project: &str, device: &str) -> SimResult<Value> {
        check_object_id(device)?;
        let p = self.project(project)?;
        p.device(device)
            .ok_or_else(|| SimError::not_found("device not found"))?;
        let list: Vec<Value> = p
            .credentials
            .iter()
            .filter(|c| c.device_id == device)
            .map(SimCredential::to_json)
            .collect();
        Ok(json!({"list": list}))
    }

    // ---- LightDB State ------------------------------------------------------------------

    pub fn get_state(&self, project: &str, device: &str, path: &[String]) -> SimResult<Value> {
        check_object_id(device)?;
        let d = self
            .project(project)?
            .device(device)
            .ok_or_else(|| SimError::not_found("device not found"))?;
        // What Golioth answers for an empty path is UNCERTAIN; `{"data": null}` here.
        Ok(json!({"data": state_at(&d.state, path).cloned().unwrap_or(Value::Null)}))
    }

    /// PUT/POST set the value at `path`; PATCH merges it (RFC 7386); DELETE removes it.
    pub fn write_state(
        &mut self,
        project: &str,
        device: &str,
        path: &[String],
        op: StateOp,
        value: Value,
    ) -> SimResult<Value> {
        check_object_id(device)?;
        let d = self.project_mut(project)?.device_mut(device)?;
        match op {
            StateOp::Set => {
                state_set(&mut d.state, path, value.clone());
                Ok(json!({"data": value}))
            }
            StateOp::Merge => {
                let mut current = state_at(&d.state, path).cloned().unwrap_or(Value::Null);
                merge_patch(&mut current, &value);
                state_set(&mut d.state, path, current.clone());
                Ok(json!({"data": current}))
            }
            StateOp::Delete => {
                state_remove(&mut d.state, path);
                Ok(json!({}))
            }
        }
    }

    // ---- tags and blueprints ------------------------------------------------------------

    pub fn list_tags(
        &self,
        project: &str,
        page: u64,
        per_page: u64,
        name: Option<&str>,
    ) -> SimResult<Value> {
        let p = self.project(project)?;
        let matching: Vec<&SimTag> = p
            .tags
            .iter()
            .filter(|t| name.is_none_or(|n| t.name == n))
            .collect();
        Ok(paged(
            matching.len(),
            page,
            per_page,
            matching.iter().map(|t| t.to_json()),
        ))
    }

    pub fn create_tag(&mut self, project: &str, name: &str) -> SimResult<Value> {
        // [PGT] shows an invalid-characters message; the allowed set is not documented, so only
        // empty and whitespace-only names are refused here.
        if name.trim().is_empty() {
            return Err(SimError::invalid("name is required"));
        }
        self.project(project)?;
        if self.project(project)?.tag_by_name(name).is_some() {
            return Err(SimError::already_used("tag name"));
        }
        let now = self.tick();
        let id = self.new_id();
        let tag = SimTag {
            id,
            name: name.to_owned(),
            created_at: now,
            updated_at: now,
        };
        let json = tag.to_json();
        self.project_mut(project)?.tags.push(tag);
        Ok(json)
    }

    pub fn get_tag(&self, project: &str, id: &str) -> SimResult<Value> {
        self.project(project)?
            .tags
            .iter()
            .find(|t| t.id == id)
            .map(SimTag::to_json)
            .ok_or_else(|| SimError::not_found("tag not found"))
    }

    pub fn rename_tag(&mut self, project: &str, id: &str, body: &Value) -> SimResult<Value> {
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| SimError::invalid("name is required"))?
            .to_owned();
        let now = self.tick();
        let p = self.project_mut(project)?;
        if p.tags.iter().any(|t| t.name == name && t.id != id) {
            return Err(SimError::already_used("tag name"));
        }
        let t = p
            .tags
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| SimError::not_found("tag not found"))?;
        t.name = name;
        t.updated_at = now;
        Ok(t.to_json())
    }

    /// Deleting a tag also removes it from devices (what Golioth does here is not documented).
    pub fn delete_tag(&mut self, project: &str, id: &str) -> SimResult<()> {
        let p = self.project_mut(project)?;
        let before = p.tags.len();
        p.tags.retain(|t| t.id != id);
        if p.tags.len() == before {
            return Err(SimError::not_found("tag not found"));
        }
        for d in p.devices.values_mut() {
            d.tag_ids.retain(|t| t != id);
        }
        Ok(())
    }

    pub fn list_blueprints(
        &self,
        project: &str,
        page: u64,
        per_page: u64,
        name: Option<&str>,
    ) -> SimResult<Value> {
        let p = self.project(project)?;
        let matching: Vec<&SimBlueprint> = p
            .blueprints
            .iter()
            .filter(|b| name.is_none_or(|n| b.name == n))
            .collect();
        Ok(paged(
            matching.len(),
            page,
            per_page,
            matching.iter().map(|b| b.to_json()),
        ))
    }

    pub fn create_blueprint(&mut self, project: &str, body: &Value) -> SimResult<Value> {
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| SimError::invalid("name is required"))?
            .to_owned();
        if self
            .project(project)?
            .blueprints
            .iter()
            .any(|b| b.name == name)
        {
            return Err(SimError::already_used("blueprint name"));
        }
        let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let now = self.tick();
        let id = self.new_id();
        let bp = SimBlueprint {
            id,
            name,
            board_id: text("boardId"),
            platform: text("platform"),
            created_at: now,
            updated_at: now,
        };
        let json = bp.to_json();
        self.project_mut(project)?.blueprints.push(bp);
        Ok(json)
    }

    pub fn get_blueprint(&self, project: &str, id: &str) -> SimResult<Value> {
        self.project(project)?
            .blueprints
            .iter()
            .find(|b| b.id == id)
            .map(SimBlueprint::to_json)
            .ok_or_else(|| SimError::not_found("blueprint not found"))
    }

    pub fn delete_blueprint(&mut self, project: &str, id: &str) -> SimResult<()> {
        let p = self.project_mut(project)?;
        let before = p.blueprints.len();
        p.blueprints.retain(|b| b.id != id);
        if p.blueprints.len() == before {
            return Err(SimError::not_found("blueprint not found"));
        }
        for d in p.devices.values_mut() {
            if d.blueprint_id.as_deref() == Some(id) {
                d.blueprint_id = None;
            }
        }
        Ok(())
    }

    // ---- seeding ------------------------------------------------------------------------

    /// Create `spec.count` devices deterministically (see [`SeedSpec`]); all or nothing.
    pub fn seed(&mut self, project: &str, spec: &SeedSpec) -> SimResult<Vec<String>> {
        let mut tag_ids = Vec::new();
        for name in &spec.tags {
            let existing = self
                .project(project)?
                .tag_by_name(name)
                .map(|t| t.id.clone());
            let id = match existing {
                Some(id) => id,
                None => self
                    .create_tag(project, name)?
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            };
            tag_ids.push(id);
        }
        let blueprint_id = match &spec.blueprint {
            None => None,
            Some(name) => {
                let existing = self
                    .project(project)?
                    .blueprints
                    .iter()
                    .find(|b| &b.name == name)
                    .map(|b| b.id.clone());
                Some(match existing {
                    Some(id) => id,
                    None => self
                        .create_blueprint(project, &json!({"name": name}))?
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                })
            }
        };
        let names: Vec<(String, String)> = (spec.start_index..spec.start_index + spec.count)
            .map(|i| {
                (
                    format!("{}-{i:06}", spec.name_prefix),
                    format!("hw-{}-{i:06}", spec.name_prefix),
                )
            })
            .collect();
        {
            let p = self.project(project)?;
            if names
                .iter()
                .any(|(n, h)| p.names.contains_key(n) || p.hardware.contains_key(h))
            {
                return Err(SimError::already_used("seeded device name or hardware id"));
            }
        }
        let epoch = seed_epoch();
        let mut ids = Vec::with_capacity(spec.count);
        let mut devices = Vec::with_capacity(spec.count);
        for (k, (name, hw)) in names.into_iter().enumerate() {
            let i = spec.start_index + k;
            let id = self.new_id();
            let created = epoch + ChronoDuration::seconds(i as i64);
            let mut tags = Vec::new();
            if !tag_ids.is_empty() {
                tags.push(tag_ids[i % tag_ids.len()].clone());
                if i.is_multiple_of(3) && tag_ids.len() > 1 {
                    tags.push(tag_ids[(i + 1) % tag_ids.len()].clone());
                }
            }
            let report = spec
                .last_report
                .map(|t| t - ChronoDuration::seconds((i % 3600) as i64));
            let mut firmware = BTreeMap::new();
            if let Some(v) = &spec.firmware_version {
                firmware.insert("main".to_owned(), v.clone());
            }
            ids.push(id.clone());
            devices.push(SimDevice {
                id,
                name,
                hardware_ids: vec![hw],
                tag_ids: tags,
                blueprint_id: blueprint_id.clone(),
                cohort_id: spec.cohort_id.clone(),
                enabled: spec.disabled_every == 0 || !i.is_multiple_of(spec.disabled_every),
                created_at: created,
                updated_at: created,
                last_report: report,
                last_seen_online: report,
                settings_status: "in-sync".into(),
                firmware,
                state: if spec.with_state {
                    SeedSpec::state_of(i)
                } else {
                    Value::Object(Map::new())
                },
            });
        }
        let p = self.project_mut(project)?;
        p.order.reserve(devices.len());
        p.devices.reserve(devices.len());
        for d in devices {
            p.names.insert(d.name.clone(), d.id.clone());
            for h in &d.hardware_ids {
                p.hardware.insert(h.clone(), d.id.clone());
            }
            p.order.push(d.id.clone());
            p.devices.insert(d.id.clone(), d);
        }
        Ok(ids)
    }
}

/// Which LightDB State write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOp {
    Set,
    Merge,
    Delete,
}

fn paged(total: usize, page: u64, per_page: u64, items: impl Iterator<Item = Value>) -> Value {
    let list: Vec<Value> = items
        .skip(usize::try_from(page.saturating_mul(per_page)).unwrap_or(usize::MAX))
        .take(per_page as usize)
        .collect();
    json!({"list": list, "page": page, "perPage": per_page, "total": total})
}

/// Tags and blueprints are referenced by id and must exist ("The tags, blueprint and cohort must
/// already have been created"). Cohorts live at organization level and are not modelled.
fn validate_refs(p: &SimProject, d: &SimDevice) -> SimResult<()> {
    if let Some(bad) = d.tag_ids.iter().find(|t| !p.has_tag(t)) {
        return Err(SimError::precondition(format!("tag not found: {bad}")));
    }
    if let Some(b) = &d.blueprint_id
        && !p.has_blueprint(b)
    {
        return Err(SimError::precondition(format!("blueprint not found: {b}")));
    }
    Ok(())
}

/// `goliothDeviceUpdate` semantics on a device copy.
fn apply_update(d: &mut SimDevice, obj: &Map<String, Value>, replace: bool) -> SimResult<()> {
    let field = |k: &str| obj.get(k).filter(|v| !v.is_null());
    if replace {
        // PUT replaces the device in its entirety: what is not sent takes its zero value.
        d.hardware_ids.clear();
        d.tag_ids.clear();
        d.blueprint_id = None;
        d.cohort_id = None;
        d.enabled = false;
        d.name = String::new();
    }
    if let Some(v) = field("name") {
        d.name = v
            .as_str()
            .ok_or_else(|| SimError::invalid("name: expected a string"))?
            .to_owned();
    }
    if let Some(v) = field("enabled") {
        d.enabled = v
            .as_bool()
            .ok_or_else(|| SimError::invalid("enabled: expected a boolean"))?;
    }
    if let Some(v) = field("hardwareIds") {
        d.hardware_ids = strings(v, "hardwareIds")?;
    }
    if let Some(v) = field("addHardwareId") {
        push_unique(&mut d.hardware_ids, strings(v, "addHardwareId")?);
    }
    if let Some(v) = field("removeHardwareId") {
        let remove = strings(v, "removeHardwareId")?;
        d.hardware_ids.retain(|h| !remove.contains(h));
    }
    if let Some(v) = field("tagIds") {
        d.tag_ids = strings(v, "tagIds")?;
    }
    if let Some(v) = field("addTagId") {
        push_unique(&mut d.tag_ids, strings(v, "addTagId")?);
    }
    if let Some(v) = field("removeTagId") {
        let remove = strings(v, "removeTagId")?;
        d.tag_ids.retain(|t| !remove.contains(t));
    }
    // `null` ([PGT]) and `""` (OAS, for cohortId) both clear.
    if let Some(v) = obj.get("blueprintId") {
        d.blueprint_id = optional_id(v, "blueprintId")?;
    }
    if let Some(v) = obj.get("cohortId") {
        d.cohort_id = optional_id(v, "cohortId")?;
    }
    Ok(())
}
