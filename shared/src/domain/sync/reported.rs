//! Reported fields (Golioth → local only, never a conflict): last seen, derived online status,
//! firmware, and the service's LightDB State paths (DESIGN §4). Writes only what differs, and never
//! moves a time backwards, so a resync after a webhook never rolls state back.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::model::{DeviceStatus, RemoteReported, Reported};
use super::options::SyncOptions;

/// The reported columns to write on a local device; `None` leaves a column as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReportedChanges {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_online: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_level: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_strength: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<serde_json::Value>,
}

impl ReportedChanges {
    pub fn is_empty(&self) -> bool {
        *self == ReportedChanges::default()
    }

    pub fn apply_to(&self, r: &mut Reported) {
        if let Some(t) = self.last_seen {
            r.last_seen = Some(t);
        }
        if let Some(t) = self.last_seen_online {
            r.last_seen_online = Some(t);
        }
        if let Some(s) = self.status {
            r.status = s;
        }
        if let Some(v) = &self.firmware_version {
            r.firmware_version = Some(v.clone());
        }
        if let Some(v) = self.battery_level {
            r.battery_level = Some(v);
        }
        if let Some(v) = self.signal_strength {
            r.signal_strength = Some(v);
        }
        if let Some(v) = &self.location {
            r.location = Some(v.clone());
        }
    }

    /// `(column, old, new)` for the sync log.
    pub fn changes(
        &self,
        old: &Reported,
    ) -> Vec<(&'static str, serde_json::Value, serde_json::Value)> {
        fn j<T: Serialize>(v: T) -> serde_json::Value {
            serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
        }
        let mut out = Vec::new();
        if let Some(t) = self.last_seen {
            out.push(("last_seen", j(old.last_seen), j(t)));
        }
        if let Some(t) = self.last_seen_online {
            out.push(("last_seen_online", j(old.last_seen_online), j(t)));
        }
        if let Some(s) = self.status {
            out.push(("status", j(old.status), j(s)));
        }
        if let Some(v) = &self.firmware_version {
            out.push(("firmware_version", j(&old.firmware_version), j(v)));
        }
        if let Some(v) = self.battery_level {
            out.push(("battery_level", j(old.battery_level), j(v)));
        }
        if let Some(v) = self.signal_strength {
            out.push(("signal_strength", j(old.signal_strength), j(v)));
        }
        if let Some(v) = &self.location {
            out.push(("location", j(&old.location), v.clone()));
        }
        out
    }
}

/// Golioth's "last seen": `metadata.lastReport`, else the deprecated top-level `lastReport`.
pub fn remote_last_seen(remote: &RemoteReported) -> Option<DateTime<Utc>> {
    remote.metadata_last_report.or(remote.last_report)
}

/// Online when the device was seen within the threshold, offline otherwise; nothing to say when
/// it was never seen. Golioth's own `status` is always `-`, so this is the only source.
pub fn derive_status(
    last_seen: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    threshold_seconds: u64,
) -> Option<DeviceStatus> {
    let seen = last_seen?;
    let threshold = i64::try_from(threshold_seconds)
        .ok()
        .and_then(Duration::try_seconds)
        .unwrap_or(Duration::MAX);
    Some(if now.signed_duration_since(seen) <= threshold {
        DeviceStatus::Online
    } else {
        DeviceStatus::Offline
    })
}

/// The firmware version to show: the `main` package when Golioth reports one, else the first
/// package by name (a `BTreeMap`, so the choice is stable). Empty versions are ignored.
pub fn pick_firmware(firmware: &BTreeMap<String, String>) -> Option<&str> {
    firmware
        .get("main")
        .filter(|v| !v.is_empty())
        .or_else(|| firmware.values().find(|v| !v.is_empty()))
        .map(String::as_str)
}

/// Read `metadata.update` (`{"main": {"package": "main", "version": "1.0.0", …}, …}`) into
/// package → version, for [`RemoteReported::firmware`]. Entries without a string version are
/// skipped.
pub fn firmware_from_update(update: &serde_json::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(obj) = update.as_object() {
        for (key, entry) in obj {
            let package = entry
                .get("package")
                .and_then(|p| p.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or(key);
            if let Some(version) = entry.get("version").and_then(|v| v.as_str()) {
                out.insert(package.to_owned(), version.to_owned());
            }
        }
    }
    out
}

/// The value at a slash-separated LightDB path (`sensors/battery`; array indices allowed).
pub fn state_at<'a>(state: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('/')
        .filter(|seg| !seg.is_empty())
        .try_fold(state, |node, seg| match node {
            serde_json::Value::Object(map) => map.get(seg),
            serde_json::Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

fn number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

fn later(new: Option<DateTime<Utc>>, old: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (new, old) {
        (Some(n), Some(o)) if n > o => Some(n),
        (Some(n), None) => Some(n),
        _ => None,
    }
}

/// The reported columns to update on `local` from what Golioth reports, limited to the synced
/// groups. Absent remote data never clears a local value: Golioth omitting a field says nothing.
pub fn reported_changes(
    opts: &SyncOptions,
    now: DateTime<Utc>,
    remote: &RemoteReported,
    local: &Reported,
) -> ReportedChanges {
    let groups = &opts.fields;
    let mut out = ReportedChanges::default();
    if groups.status {
        out.last_seen = later(remote_last_seen(remote), local.last_seen);
        out.last_seen_online = later(remote.last_seen_online, local.last_seen_online);
        let freshest = [
            local.last_seen,
            local.last_seen_online,
            remote_last_seen(remote),
            remote.last_seen_online,
        ]
        .into_iter()
        .flatten()
        .max();
        // `warning` / `error` are the platform's refinements of "online": seeing the device
        // again does not clear them, but it going offline replaces them.
        let refined = matches!(local.status, DeviceStatus::Warning | DeviceStatus::Error);
        out.status = derive_status(freshest, now, opts.online_threshold_seconds)
            .filter(|s| *s != local.status)
            .filter(|s| !(refined && *s == DeviceStatus::Online));
    }
    if groups.firmware {
        out.firmware_version = pick_firmware(&remote.firmware)
            .filter(|v| local.firmware_version.as_deref() != Some(*v))
            .map(str::to_owned);
    }
    if let Some(state) = &remote.state {
        let paths = &opts.state_paths;
        let at = |enabled: bool, path: &Option<String>| {
            path.as_deref()
                .filter(|_| enabled)
                .and_then(|p| state_at(state, p))
                .filter(|v| !v.is_null())
        };
        out.battery_level = at(groups.battery, &paths.battery)
            .and_then(number)
            .filter(|v| local.battery_level != Some(*v));
        out.signal_strength = at(groups.signal, &paths.signal)
            .and_then(number)
            .filter(|v| local.signal_strength != Some(*v));
        out.location = at(groups.location, &paths.location)
            .filter(|v| local.location.as_ref() != Some(*v))
            .cloned();
    }
    out
}

/// The reported columns of a device created locally from Golioth.
pub fn reported_for_new(
    opts: &SyncOptions,
    now: DateTime<Utc>,
    remote: &RemoteReported,
) -> Reported {
    let mut r = Reported::default();
    reported_changes(opts, now, remote, &r).apply_to(&mut r);
    r
}
