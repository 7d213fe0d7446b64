//! Translations at the engine's two edges: Golioth client types ↔ the sync core's plain data
//! (tag ids ↔ names through the run's [`TagMap`], `metadata.update` → firmware, the LightDB
//! State prefix the listing fetched), and plans → the rows of the store's bulk statements.

use serde_json::{Map, Value, json};

use crate::domain::golioth::{
    BlueprintId, CohortId, Device, DeviceUpdate, GoliothError, NewDevice, TagId, TagMap,
};
use crate::domain::sync::model::normalize_set;
use crate::domain::sync::{
    Base, DesiredChanges, DesiredFields, Field, LocalChanges, RemoteDevice, RemoteReported,
    Reported, StatePaths,
};

/// The LightDB State prefix to ask the listing for (`statePath`): the longest common parent of
/// the service's state paths, as segments. `None` when no path is configured or they share no
/// parent (reading whole documents would cost a request per device; the webhook delivers state
/// in real time anyway).
pub(crate) fn state_prefix(paths: &StatePaths) -> Option<Vec<String>> {
    let all: Vec<Vec<String>> = [&paths.battery, &paths.location, &paths.signal]
        .into_iter()
        .flatten()
        .map(|p| {
            p.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect();
    let first = all.first()?;
    // A path's value is the leaf itself: the common parent of one path is its parent.
    let mut common: Vec<String> = if all.len() == 1 {
        first[..first.len().saturating_sub(1)].to_vec()
    } else {
        first.clone()
    };
    for p in &all[1..] {
        let n = common.iter().zip(p).take_while(|(a, b)| a == b).count();
        common.truncate(n);
    }
    // Never the leaf of every path (its parent holds the values).
    if all.iter().any(|p| p.len() <= common.len()) {
        common.truncate(
            all.iter()
                .map(Vec::len)
                .min()
                .unwrap_or(1)
                .saturating_sub(1),
        );
    }
    (!common.is_empty()).then_some(common)
}

/// Rebuild a root document from the sub-tree the listing returned at `prefix`.
fn nest(prefix: &[String], data: &Value) -> Value {
    prefix.iter().rev().fold(data.clone(), |inner, seg| {
        let mut m = Map::new();
        m.insert(seg.clone(), inner);
        Value::Object(m)
    })
}

/// A Golioth device as the core sees it, plus the tag ids the map does not know (the caller
/// refreshes the map once and converts again).
pub(crate) fn remote_device(
    d: &Device,
    tags: &TagMap,
    prefix: Option<&[String]>,
) -> (RemoteDevice, Vec<TagId>) {
    let (names, unknown) = tags.names_of(d.tag_ids.iter());
    let firmware = d
        .metadata
        .update
        .iter()
        .filter_map(|(key, p)| {
            let version = p.version.clone()?;
            let package = p
                .package
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| key.clone());
            Some((package, version))
        })
        .collect();
    let state = match (prefix, &d.data) {
        (Some(prefix), Some(data)) => Some(nest(prefix, data)),
        _ => None,
    };
    let remote = RemoteDevice {
        id: d.id.as_str().to_owned(),
        desired: DesiredFields {
            name: d.name.clone().unwrap_or_default(),
            // Absent means "not said"; Golioth devices are enabled unless disabled.
            enabled: d.enabled.unwrap_or(true),
            tags: names,
            hardware_ids: d.hardware_ids.clone(),
            blueprint_id: d.blueprint_id.as_ref().map(|b| b.as_str().to_owned()),
            cohort_id: d.cohort_id.as_ref().map(|c| c.as_str().to_owned()),
        }
        .normalized(),
        updated_at: d.updated_at,
        reported: RemoteReported {
            metadata_last_report: d.metadata.last_report,
            last_report: None,
            last_seen_online: d.metadata.last_seen_online,
            firmware,
            state,
        },
    };
    (remote, unknown)
}

/// Tag ids for names; names the map lacks are an error (they are created before writing).
fn tag_ids(tags: &TagMap, names: &[String]) -> Result<Vec<TagId>, String> {
    let (ids, missing) = tags.ids_of(names.iter().map(String::as_str));
    if missing.is_empty() {
        Ok(ids)
    } else {
        Err(format!("tags missing in Golioth: {}", missing.join(", ")))
    }
}

fn blueprint(s: &str) -> Result<BlueprintId, String> {
    BlueprintId::parse(s).map_err(|e| format!("invalid blueprint id: {e}"))
}

fn cohort(s: &str) -> Result<CohortId, String> {
    CohortId::parse(s).map_err(|e| format!("invalid cohort id: {e}"))
}

/// The create request for a device planned for creation in Golioth.
pub(crate) fn new_device(d: &DesiredFields, tags: &TagMap) -> Result<NewDevice, String> {
    Ok(NewDevice {
        name: d.name.clone(),
        hardware_ids: d.hardware_ids.clone(),
        tag_ids: tag_ids(tags, &d.tags)?,
        blueprint_id: d.blueprint_id.as_deref().map(blueprint).transpose()?,
        cohort_id: d.cohort_id.as_deref().map(cohort).transpose()?,
    })
}

/// The PATCH for planned changes. Sets are edited element-wise (`addTagId`/`removeTagId`, …),
/// which cannot clobber an element someone else added or removed meanwhile.
pub(crate) fn device_update(c: &DesiredChanges, tags: &TagMap) -> Result<DeviceUpdate, String> {
    let mut u = DeviceUpdate {
        name: c.name.clone(),
        enabled: c.enabled,
        ..DeviceUpdate::default()
    };
    if let Some(t) = &c.tags {
        u.add_tag_ids = tag_ids(tags, &t.added)?;
        // A removed tag is on the device, so the map knows it; an unknown one is not there.
        u.remove_tag_ids = tags.ids_of(t.removed.iter().map(String::as_str)).0;
    }
    if let Some(h) = &c.hardware_ids {
        u.add_hardware_ids = h.added.clone();
        u.remove_hardware_ids = h.removed.clone();
    }
    if let Some(b) = &c.blueprint_id {
        u.blueprint_id = Some(b.as_deref().map(blueprint).transpose()?);
    }
    if let Some(co) = &c.cohort_id {
        u.cohort_id = Some(co.as_deref().map(cohort).transpose()?);
    }
    Ok(u)
}

/// The base to store after creating a device in Golioth: the values Golioth actually holds for
/// the synced fields (it may have filled some in, e.g. a hardware id), so a local value that
/// differs is seen as a local change and pushed, never silently taken as agreed.
pub(crate) fn created_base(
    planned: &Base,
    created: &RemoteDevice,
    fields: impl Iterator<Item = Field>,
) -> Base {
    let mut base = planned.clone();
    for f in fields {
        base.insert(f, created.desired.get(f));
    }
    base
}

/// A `devices` insert row for a device created from Golioth.
pub(crate) fn device_row(id: uuid::Uuid, d: &DesiredFields, r: &Reported) -> Value {
    let d = d.normalized();
    json!({
        "id": id,
        "name": d.name,
        "enabled": d.enabled,
        "tags": d.tags,
        "hardware_ids": d.hardware_ids,
        "blueprint_id": d.blueprint_id,
        "cohort_id": d.cohort_id,
        "status": r.status.as_str(),
        "last_seen": r.last_seen,
        "last_seen_online": r.last_seen_online,
        "battery_level": r.battery_level,
        "signal_strength": r.signal_strength,
        "firmware_version": r.firmware_version,
        "location": r.location,
    })
}

/// The columns a local update sets (only those present are written; `null` clears).
pub(crate) fn update_columns(c: &LocalChanges) -> Value {
    let mut m = Map::new();
    let d = &c.desired;
    if let Some(v) = &d.name {
        m.insert("name".into(), json!(v));
    }
    if let Some(v) = d.enabled {
        m.insert("enabled".into(), json!(v));
    }
    if let Some(v) = &d.tags {
        m.insert("tags".into(), json!(normalize_set(v.to.iter().cloned())));
    }
    if let Some(v) = &d.hardware_ids {
        m.insert(
            "hardware_ids".into(),
            json!(normalize_set(v.to.iter().cloned())),
        );
    }
    if let Some(v) = &d.blueprint_id {
        m.insert("blueprint_id".into(), json!(v));
    }
    if let Some(v) = &d.cohort_id {
        m.insert("cohort_id".into(), json!(v));
    }
    let r = &c.reported;
    if let Some(v) = r.last_seen {
        m.insert("last_seen".into(), json!(v));
    }
    if let Some(v) = r.last_seen_online {
        m.insert("last_seen_online".into(), json!(v));
    }
    if let Some(v) = r.status {
        m.insert("status".into(), json!(v.as_str()));
    }
    if let Some(v) = &r.firmware_version {
        m.insert("firmware_version".into(), json!(v));
    }
    if let Some(v) = r.battery_level {
        m.insert("battery_level".into(), json!(v));
    }
    if let Some(v) = r.signal_strength {
        m.insert("signal_strength".into(), json!(v));
    }
    if let Some(v) = &r.location {
        m.insert("location".into(), v.clone());
    }
    if c.restore {
        m.insert("restore".into(), json!(true));
    }
    Value::Object(m)
}

/// A Golioth failure as a reason for logs, run errors and API answers: the error class, HTTP
/// status and Golioth's own message. Never a URL, a header or the key (the error type carries
/// none of them).
pub(crate) fn reason(e: &GoliothError) -> String {
    let mut s = e.to_string();
    if s.len() > 400 {
        let mut end = 400;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(b: Option<&str>, l: Option<&str>, s: Option<&str>) -> StatePaths {
        StatePaths {
            battery: b.map(str::to_owned),
            location: l.map(str::to_owned),
            signal: s.map(str::to_owned),
        }
    }

    #[test]
    fn state_prefix_is_the_common_parent() {
        assert_eq!(state_prefix(&paths(None, None, None)), None);
        assert_eq!(state_prefix(&paths(Some("battery"), None, None)), None);
        assert_eq!(
            state_prefix(&paths(Some("sensors/battery"), None, None)),
            Some(vec!["sensors".to_owned()])
        );
        assert_eq!(
            state_prefix(&paths(Some("a/b/battery"), Some("a/b/loc"), Some("a/c"))),
            Some(vec!["a".to_owned()])
        );
        assert_eq!(
            state_prefix(&paths(Some("battery"), Some("loc"), None)),
            None
        );
        assert_eq!(
            state_prefix(&paths(Some("a/b"), Some("a/b/c"), None)),
            Some(vec!["a".to_owned()])
        );
    }

    #[test]
    fn nesting_rebuilds_the_root() {
        let v = nest(&["a".into(), "b".into()], &json!({"x": 1}));
        assert_eq!(v, json!({"a": {"b": {"x": 1}}}));
    }
}
