//! The sync core's scenario table (DESIGN §4, STYLE habit 9): one line per case — options, the
//! state of both sides and the base → the plan, rendered compactly — through one `check` helper,
//! which also asserts that a second pass right after applying the plan does nothing.
//!
//! World specs: `name=a enabled=false tags=t1+t2 hw=h1 bp=x cohort=-` (`-` is null, `tags=` empty);
//! local reported `seen=990 seen_online=980 status=online fw=1.0 battery=50`; remote reported
//! `report=990 top=950 online=980 fw=main:1.0+boot:0.2 sbat=81 ssig=-70 sloc=1.5:2.5`. Times are
//! seconds after a fixed epoch; "now" is 1000, the online threshold 600.
//! Rendered plan: `L1~R1: local.update … ; remote.update … ; base … ; open name/concurrent_modification`
//! per device, devices joined by ` | `; `nothing` when the plan is empty.

use chrono::{DateTime, Utc};
use shared::domain::sync::*;
use uuid::Uuid;

const T0: i64 = 1_700_000_000;
const NOW: i64 = 1000;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(T0 + s, 0).unwrap()
}

fn secs(d: DateTime<Utc>) -> i64 {
    d.timestamp() - T0
}

fn lid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn rid(n: u32) -> String {
    format!("R{n}")
}

// ---------------------------------------------------------------------------------------------
// Building worlds

fn field_value(field: Field, s: &str) -> Value {
    match field {
        Field::Name => Value::text(s),
        Field::Enabled => Value::Bool(s == "true"),
        Field::Tags | Field::HardwareIds => Value::set(s.split('+').filter(|x| !x.is_empty())),
        Field::BlueprintId | Field::CohortId => Value::opt_text(Some(s).filter(|s| *s != "-")),
    }
}

fn field_key(key: &str) -> Option<Field> {
    match key {
        "name" => Some(Field::Name),
        "enabled" => Some(Field::Enabled),
        "tags" => Some(Field::Tags),
        "hw" => Some(Field::HardwareIds),
        "bp" => Some(Field::BlueprintId),
        "cohort" => Some(Field::CohortId),
        _ => None,
    }
}

fn kv(spec: &str) -> impl Iterator<Item = (&str, &str)> {
    spec.split_whitespace()
        .map(|item| item.split_once('=').unwrap_or((item, "")))
}

fn desired(spec: &str) -> DesiredFields {
    let mut d = DesiredFields {
        name: "dev".into(),
        hardware_ids: vec!["h1".into()],
        ..DesiredFields::default()
    };
    for (k, v) in kv(spec) {
        if let Some(f) = field_key(k) {
            d.set(f, &field_value(f, v)).unwrap();
        }
    }
    d
}

fn local_device(n: u128, spec: &str) -> LocalDevice {
    let mut r = Reported::default();
    for (k, v) in kv(spec) {
        match k {
            "seen" => r.last_seen = Some(t(v.parse().unwrap())),
            "seen_online" => r.last_seen_online = Some(t(v.parse().unwrap())),
            "status" => r.status = serde_json::from_value(serde_json::json!(v)).unwrap(),
            "fw" => r.firmware_version = Some(v.into()),
            "battery" => r.battery_level = Some(v.parse().unwrap()),
            "signal" => r.signal_strength = Some(v.parse().unwrap()),
            _ => {}
        }
    }
    LocalDevice {
        id: lid(n),
        desired: desired(spec),
        reported: r,
        version: 1,
        updated_at: t(100),
        deleted_at: None,
    }
}

fn remote_device(n: u32, spec: &str) -> RemoteDevice {
    let mut r = RemoteReported::default();
    let mut state = serde_json::Map::new();
    for (k, v) in kv(spec) {
        match k {
            "report" => r.metadata_last_report = Some(t(v.parse().unwrap())),
            "top" => r.last_report = Some(t(v.parse().unwrap())),
            "online" => r.last_seen_online = Some(t(v.parse().unwrap())),
            "fw" => {
                for p in v.split('+') {
                    let (pkg, ver) = p.split_once(':').unwrap();
                    r.firmware.insert(pkg.into(), ver.into());
                }
            }
            "sbat" => {
                state.insert(
                    "power".into(),
                    serde_json::json!({ "battery": v.parse::<f64>().unwrap() }),
                );
            }
            "ssig" => {
                state.insert(
                    "radio".into(),
                    serde_json::json!({ "rssi": v.parse::<f64>().unwrap() }),
                );
            }
            "sloc" => {
                let (lat, lon) = v.split_once(':').unwrap();
                let (lat, lon): (f64, f64) = (lat.parse().unwrap(), lon.parse().unwrap());
                state.insert("gps".into(), serde_json::json!({ "lat": lat, "lon": lon }));
            }
            _ => {}
        }
    }
    if !state.is_empty() {
        r.state = Some(serde_json::Value::Object(state));
    }
    RemoteDevice {
        id: rid(n),
        desired: desired(spec),
        updated_at: Some(t(100)),
        reported: r,
    }
}

fn base(spec: &str) -> Option<Base> {
    (spec != "none").then(|| Base::from_desired(&desired(spec), Field::ALL))
}

struct W(Replicas);

fn w() -> W {
    W(Replicas::default())
}

/// L1 linked to R1 with a base; R1 present.
fn pair(base_spec: &str, local: &str, remote: &str) -> W {
    w().linked(1, 1, base_spec, local).remote(1, remote)
}

/// L1 linked to R1 with a base; R1 gone from a listing.
fn gone(base_spec: &str, local: &str) -> W {
    w().linked(1, 1, base_spec, local)
}

impl W {
    fn push_local(mut self, n: u128, spec: &str, assignment: Option<Assignment>) -> W {
        self.0.locals.push(LocalState {
            device: local_device(n, spec),
            assignment,
            pending: Vec::new(),
        });
        self
    }
    /// A local device not assigned to the service.
    fn local(self, n: u128, spec: &str) -> W {
        self.push_local(n, spec, None)
    }
    /// A local device assigned to the service (exported by it), not linked yet.
    fn assigned(self, n: u128, spec: &str) -> W {
        self.push_local(n, spec, Some(Assignment::default()))
    }
    /// Assigned, not linked, with a Golioth create sent whose outcome was never committed (the
    /// write-ahead `pending_create` marker holding `created_spec`).
    fn creating(self, n: u128, created_spec: &str, spec: &str) -> W {
        let a = Assignment {
            external_id: None,
            base: None,
            pending_create: base(created_spec),
        };
        self.push_local(n, spec, Some(a))
    }
    fn linked(self, n: u128, r: u32, base_spec: &str, spec: &str) -> W {
        let a = Assignment {
            external_id: Some(rid(r)),
            base: base(base_spec),
            pending_create: None,
        };
        self.push_local(n, spec, Some(a))
    }
    fn remote(mut self, n: u32, spec: &str) -> W {
        self.0.remotes.push(remote_device(n, spec));
        self
    }
    fn lmut(&mut self, n: u128) -> &mut LocalState {
        self.0
            .locals
            .iter_mut()
            .find(|l| l.device.id == lid(n))
            .unwrap()
    }
    fn deleted(mut self, n: u128, at: i64) -> W {
        self.lmut(n).device.deleted_at = Some(t(at));
        self
    }
    fn lts(mut self, n: u128, at: i64) -> W {
        self.lmut(n).device.updated_at = t(at);
        self
    }
    fn rts(mut self, n: u32, at: Option<i64>) -> W {
        let r = self.0.remotes.iter_mut().find(|r| r.id == rid(n)).unwrap();
        r.updated_at = at.map(t);
        self
    }
    /// A pending conflict on one field of L`n` (linked to R`n`): base / local / remote as specs.
    fn pending(mut self, n: u128, field: &str, b: &str, l: &str, r: &str) -> W {
        let f = Field::parse(field).unwrap();
        let j = |s: &str| Some(field_value(f, s).to_json());
        let p = PendingConflict {
            id: Uuid::from_u128(1000 + n),
            device_id: Some(lid(n)),
            external_id: Some(rid(n as u32)),
            field: ConflictField::Field(f),
            kind: ConflictKind::ConcurrentModification,
            base_value: j(b),
            local_value: j(l),
            remote_value: j(r),
            local_updated_at: None,
            remote_updated_at: None,
        };
        self.lmut(n).pending.push(p);
        self
    }
    /// A pending delete-vs-modify conflict on L`n`.
    fn pending_device(mut self, n: u128) -> W {
        let p = PendingConflict {
            id: Uuid::from_u128(2000 + n),
            device_id: Some(lid(n)),
            external_id: Some(rid(n as u32)),
            field: ConflictField::Device,
            kind: ConflictKind::DeleteVsModify,
            base_value: None,
            local_value: None,
            remote_value: None,
            local_updated_at: None,
            remote_updated_at: None,
        };
        self.lmut(n).pending.push(p);
        self
    }
    /// A pending identity conflict about R`r`, with the values stored when it was detected.
    fn pending_identity(
        mut self,
        r: u32,
        local_value: serde_json::Value,
        remote_value: serde_json::Value,
    ) -> W {
        self.0.remote_pending.push(PendingConflict {
            id: Uuid::from_u128(3000 + u128::from(r)),
            device_id: None,
            external_id: Some(rid(r)),
            field: ConflictField::Identity,
            kind: ConflictKind::Identity,
            base_value: None,
            local_value: Some(local_value),
            remote_value: Some(remote_value),
            local_updated_at: None,
            remote_updated_at: None,
        });
        self
    }
    /// Raw (unnormalized) tags on L`n`, as a careless writer might store them.
    fn ltags(mut self, n: u128, tags: &[&str]) -> W {
        self.lmut(n).device.desired.tags = tags.iter().map(|s| (*s).to_owned()).collect();
        self
    }
    /// A raw cohort on R`n` (Golioth clears a cohort with "").
    fn rcohort(mut self, n: u32, cohort: &str) -> W {
        let r = self.0.remotes.iter_mut().find(|r| r.id == rid(n)).unwrap();
        r.desired.cohort_id = Some(cohort.to_owned());
        self
    }
    /// An `identity` conflict naming L`n` as a candidate, as the engine loads it for that device.
    fn identity_on(mut self, n: u128) -> W {
        let p = PendingConflict {
            id: Uuid::from_u128(4000 + n),
            device_id: Some(lid(n)),
            external_id: None,
            field: ConflictField::Identity,
            kind: ConflictKind::Identity,
            base_value: None,
            local_value: None,
            remote_value: None,
            local_updated_at: None,
            remote_updated_at: None,
        };
        self.lmut(n).pending.push(p);
        self
    }
}

/// R1 (hw h1) with two local candidates sharing h1.
fn two_candidates() -> W {
    w().local(1, "hw=h1").local(2, "hw=h1").remote(1, "hw=h1")
}

/// How the core describes those two candidates in the identity conflict.
fn candidates_json() -> serde_json::Value {
    serde_json::json!([
        {"id": lid(1).to_string(), "name": "dev", "hardware_ids": ["h1"]},
        {"id": lid(2).to_string(), "name": "dev", "hardware_ids": ["h1"]},
    ])
}

fn options(spec: &str) -> (SyncOptions, Listing) {
    let mut o = SyncOptions::default();
    let mut listing = Listing::Complete;
    for (k, v) in kv(spec) {
        match (k, v) {
            ("import", _) => o.direction = Direction::Import,
            ("export", _) => o.direction = Direction::Export,
            ("bidi", _) => o.direction = Direction::Bidirectional,
            ("manual", _) => o.policy = ConflictPolicy::Manual,
            ("local_wins", _) => o.policy = ConflictPolicy::LocalWins,
            ("remote_wins", _) => o.policy = ConflictPolicy::RemoteWins,
            ("newest_wins", _) => o.policy = ConflictPolicy::NewestWins,
            ("by_name", _) => o.match_by_name = true,
            ("partial", _) => listing = Listing::Partial,
            ("on_remote", "soft") => o.on_remote_delete = OnRemoteDelete::SoftDeleteLocal,
            ("on_remote", "unlink") => o.on_remote_delete = OnRemoteDelete::Unlink,
            ("on_remote", "ignore") => o.on_remote_delete = OnRemoteDelete::Ignore,
            ("on_local", "unlink") => o.on_local_delete = OnLocalDelete::Unlink,
            ("on_local", "delete") => o.on_local_delete = OnLocalDelete::DeleteRemote,
            ("paths", _) => {
                o.state_paths = StatePaths {
                    battery: Some("power/battery".into()),
                    signal: Some("/radio/rssi".into()),
                    location: Some("gps".into()),
                }
            }
            ("only", groups) => {
                let mut f: SyncFields = serde_json::from_value(serde_json::json!({
                    "name": false, "enabled": false, "tags": false, "hardware_ids": false,
                    "blueprint": false, "cohort": false, "status": false, "firmware": false,
                    "battery": false, "location": false, "signal": false
                }))
                .unwrap();
                for g in groups.split('+') {
                    let mut j = serde_json::to_value(f).unwrap();
                    j[g] = serde_json::Value::Bool(true);
                    f = serde_json::from_value(j).unwrap();
                }
                o.fields = f;
            }
            other => panic!("unknown option {other:?}"),
        }
    }
    (o, listing)
}

// ---------------------------------------------------------------------------------------------
// Rendering plans

fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Text(s) => s.clone(),
        Value::Set(items) => format!("[{}]", items.join(",")),
    }
}

fn short(f: Field) -> &'static str {
    match f {
        Field::HardwareIds => "hw",
        Field::BlueprintId => "bp",
        Field::CohortId => "cohort",
        other => other.as_str(),
    }
}

fn show_changes(c: &DesiredChanges) -> Vec<String> {
    Field::ALL
        .into_iter()
        .filter_map(|f| c.get(f).map(|v| format!("{}={}", short(f), show(&v))))
        .collect()
}

fn show_reported(r: &ReportedChanges) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(x) = r.last_seen {
        out.push(format!("seen={}", secs(x)));
    }
    if let Some(x) = r.last_seen_online {
        out.push(format!("seen_online={}", secs(x)));
    }
    if let Some(x) = r.status {
        out.push(format!("status={}", x.as_str()));
    }
    if let Some(x) = &r.firmware_version {
        out.push(format!("fw={x}"));
    }
    if let Some(x) = r.battery_level {
        out.push(format!("battery={x}"));
    }
    if let Some(x) = r.signal_strength {
        out.push(format!("signal={x}"));
    }
    if let Some(x) = &r.location {
        out.push(format!("loc={x}"));
    }
    out
}

fn show_new(d: &DesiredFields, r: Option<&Reported>) -> String {
    let def = DesiredFields::default();
    let mut out = vec![format!("name={}", d.name)];
    for f in Field::ALL.into_iter().skip(1) {
        if d.get(f) != def.get(f) {
            out.push(format!("{}={}", short(f), show(&d.get(f))));
        }
    }
    if let Some(r) = r {
        let as_changes = ReportedChanges {
            last_seen: r.last_seen,
            last_seen_online: r.last_seen_online,
            status: Some(r.status).filter(|s| *s != DeviceStatus::Unknown),
            firmware_version: r.firmware_version.clone(),
            battery_level: r.battery_level,
            signal_strength: r.signal_strength,
            location: r.location.clone(),
        };
        out.extend(show_reported(&as_changes));
    }
    out.join(" ")
}

fn render(before: &Replicas, opts: &SyncOptions, plans: &[&PagePlan]) -> String {
    let mut devices = Vec::new();
    for d in plans
        .iter()
        .flat_map(|p| p.devices.iter())
        .filter(|d| !d.is_empty())
    {
        let label = |id: Option<Uuid>| match id {
            Some(id) => format!("L{}", id.as_u128()),
            None => "new".into(),
        };
        let mut items = Vec::new();
        match &d.local {
            Some(LocalWrite::Create { desired, reported }) => {
                items.push(format!(
                    "local.create {}",
                    show_new(desired, Some(reported))
                ));
            }
            Some(LocalWrite::Update { changes, .. }) => {
                let mut parts = show_changes(&changes.desired);
                parts.extend(show_reported(&changes.reported));
                if changes.restore {
                    parts.push("restore".into());
                }
                items.push(format!("local.update {}", parts.join(" ")));
            }
            Some(LocalWrite::SoftDelete { .. }) => items.push("local.delete".into()),
            None => {}
        }
        match &d.remote {
            Some(RemoteWrite::Create { desired }) => {
                items.push(format!("remote.create {}", show_new(desired, None)));
            }
            Some(RemoteWrite::Update { changes, .. }) => {
                items.push(format!("remote.update {}", show_changes(changes).join(" ")));
            }
            Some(RemoteWrite::Delete) => items.push("remote.delete".into()),
            None => {}
        }
        let old_base = d
            .device_id
            .and_then(|id| before.local(id))
            .and_then(|l| l.assignment.as_ref())
            .and_then(|a| a.base.clone())
            .unwrap_or_default();
        match &d.assignment {
            Some(AssignmentWrite::Link { external_id, base }) => {
                let missing: Vec<&str> = opts
                    .fields
                    .desired()
                    .filter(|f| base.get(*f).is_none())
                    .map(short)
                    .collect();
                let mut s = format!("link {}", external_id.as_deref().unwrap_or("new"));
                if !missing.is_empty() {
                    s.push_str(&format!(" base-without={}", missing.join("+")));
                }
                items.push(s);
            }
            Some(AssignmentWrite::SetBase { base }) => {
                let diff: Vec<String> = Field::ALL
                    .into_iter()
                    .filter(|f| base.get(*f) != old_base.get(*f))
                    .map(|f| match base.get(f) {
                        Some(v) => format!("{}={}", short(f), show(v)),
                        None => format!("-{}", short(f)),
                    })
                    .collect();
                items.push(format!("base {}", diff.join(" ")));
            }
            Some(AssignmentWrite::Detach) => items.push("detach".into()),
            Some(AssignmentWrite::Delete) => items.push("unassign".into()),
            None => {}
        }
        for c in &d.conflicts {
            items.push(match c {
                ConflictChange::Open { conflict } => {
                    format!(
                        "open {}/{}",
                        conflict.field.as_str(),
                        conflict.kind.as_str()
                    )
                }
                ConflictChange::Refresh { conflict, .. } => {
                    format!("refresh {}", conflict.field.as_str())
                }
                ConflictChange::Supersede { field, .. } => format!("supersede {}", field.as_str()),
                ConflictChange::AutoResolved {
                    conflict,
                    strategy,
                    winner,
                    ..
                } => format!(
                    "auto {}/{} {}->{}",
                    conflict.field.as_str(),
                    conflict.kind.as_str(),
                    strategy.as_str(),
                    if *winner == Side::Local {
                        "local"
                    } else {
                        "remote"
                    }
                ),
            });
        }
        for e in d
            .log
            .iter()
            .filter(|e| e.operation == LogOperation::ValueOverwritten)
        {
            let side = if e.side == Some(Side::Local) {
                "local"
            } else {
                "remote"
            };
            for c in &e.changes {
                items.push(format!(
                    "overwritten {side}.{}={}",
                    c.field,
                    json_short(&c.from)
                ));
            }
        }
        devices.push(format!(
            "{}~{}: {}",
            label(d.device_id),
            d.external_id.as_deref().unwrap_or("new"),
            items.join(" ; ")
        ));
    }
    if devices.is_empty() {
        "nothing".into()
    } else {
        devices.join(" | ")
    }
}

fn json_short(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => format!(
            "[{}]",
            items.iter().map(json_short).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Run one pass over the world, render its plan, compare; then check a second pass does nothing.
fn check(opts: &str, world: W, expected: &str) {
    let (opts, listing) = options(opts);
    let before = world.0;
    let mut replicas = before.clone();
    let mut ids = SequentialIds::starting_at(10_000);
    let (paged, rest) = replicas.sync_pass(&opts, t(NOW), listing, &mut ids);
    let got = render(&before, &opts, &[&paged, &rest]);
    assert_eq!(
        got, expected,
        "\n  got:      {got}\n  expected: {expected}\n"
    );

    let after = replicas.clone();
    let (again_paged, again_rest) = replicas.sync_pass(&opts, t(NOW), listing, &mut ids);
    let again = render(&after, &opts, &[&again_paged, &again_rest]);
    assert_eq!(
        again, "nothing",
        "a second pass must do nothing, but planned: {again}"
    );
}

macro_rules! scenarios {
    ($($name:ident: $opts:expr, $world:expr => $expected:expr;)*) => {
        $( #[test] fn $name() { check($opts, $world, $expected) } )*
    };
}

// ---------------------------------------------------------------------------------------------
// The table

scenarios! {
    // Desired scalar, bidirectional: every row of the DESIGN §4 table.
    scalar_same_same_nothing:            "", pair("name=a", "name=a", "name=a") => "nothing";
    scalar_local_changed_pushes:         "", pair("name=a", "name=b", "name=a") => "L1~R1: remote.update name=b ; base name=b";
    scalar_remote_changed_pulls:         "", pair("name=a", "name=a", "name=b") => "L1~R1: local.update name=b ; base name=b";
    scalar_both_changed_equal_converge:  "", pair("name=a", "name=b", "name=b") => "L1~R1: base name=b";
    scalar_both_changed_differ_conflict: "", pair("name=a", "name=b", "name=c") => "L1~R1: open name/concurrent_modification";
    scalar_conflict_freezes_only_field:  "", pair("name=a", "name=b enabled=false", "name=c") => "L1~R1: remote.update enabled=false ; base enabled=false ; open name/concurrent_modification";
    bool_local_changed_pushes:           "", pair("enabled=true", "enabled=false", "enabled=true") => "L1~R1: remote.update enabled=false ; base enabled=false";
    bool_both_changed_always_converge:   "", pair("enabled=true", "enabled=false", "enabled=false") => "L1~R1: base enabled=false";
    optional_id_cleared_locally:         "", pair("cohort=c1", "cohort=-", "cohort=c1") => "L1~R1: remote.update cohort=null ; base cohort=null";
    optional_id_set_vs_cleared_conflict: "", pair("bp=x", "bp=y", "bp=-") => "L1~R1: open blueprint_id/concurrent_modification";
    optional_id_empty_string_is_null:    "", pair("cohort=-", "cohort=-", "").rcohort(1, "") => "nothing";

    // Conflict policies.
    policy_local_wins:                   "local_wins", pair("name=a", "name=b", "name=c") => "L1~R1: remote.update name=b ; base name=b ; auto name/concurrent_modification local_wins->local";
    policy_remote_wins:                  "remote_wins", pair("name=a", "name=b", "name=c") => "L1~R1: local.update name=c ; base name=c ; auto name/concurrent_modification remote_wins->remote";
    policy_newest_wins_local_newer:      "newest_wins", pair("name=a", "name=b", "name=c").lts(1, 900).rts(1, Some(800)) => "L1~R1: remote.update name=b ; base name=b ; auto name/concurrent_modification newest_wins->local";
    policy_newest_wins_remote_newer:     "newest_wins", pair("name=a", "name=b", "name=c").lts(1, 700).rts(1, Some(800)) => "L1~R1: local.update name=c ; base name=c ; auto name/concurrent_modification newest_wins->remote";
    policy_newest_wins_tie_is_manual:    "newest_wins", pair("name=a", "name=b", "name=c").lts(1, 800).rts(1, Some(800)) => "L1~R1: open name/concurrent_modification";
    policy_newest_wins_no_remote_time:   "newest_wins", pair("name=a", "name=b", "name=c").rts(1, None) => "L1~R1: open name/concurrent_modification";
    policy_auto_does_not_touch_one_sided: "remote_wins", pair("name=a", "name=b", "name=a") => "L1~R1: remote.update name=b ; base name=b";

    // Pending conflicts: re-detection refreshes, convergence supersedes.
    pending_same_values_no_write:        "", pair("name=a", "name=b", "name=c").pending(1, "name", "a", "b", "c") => "nothing";
    pending_new_remote_value_refreshes:  "", pair("name=a", "name=b", "name=d").pending(1, "name", "a", "b", "c") => "L1~R1: refresh name";
    pending_sides_converged_supersede:   "", pair("name=a", "name=c", "name=c").pending(1, "name", "a", "b", "c") => "L1~R1: base name=c ; supersede name";
    pending_local_reverted_supersede:    "", pair("name=a", "name=a", "name=c").pending(1, "name", "a", "b", "c") => "L1~R1: local.update name=c ; base name=c ; supersede name";
    pending_waits_for_person:            "local_wins", pair("name=a", "name=b", "name=c").pending(1, "name", "a", "b", "c") => "nothing";
    pending_changed_policy_settles:      "local_wins", pair("name=a", "name=b", "name=d").pending(1, "name", "a", "b", "c") => "L1~R1: remote.update name=b ; base name=b ; auto name/concurrent_modification local_wins->local";

    // Sets merge element-wise and never conflict.
    set_same_same_nothing:               "", pair("tags=t1+t2", "tags=t1+t2", "tags=t1+t2") => "nothing";
    set_local_added_pushes:              "", pair("tags=t1", "tags=t1+t2", "tags=t1") => "L1~R1: remote.update tags=[t1,t2] ; base tags=[t1,t2]";
    set_remote_removed_pulls:            "", pair("tags=t1+t2", "tags=t1+t2", "tags=t1") => "L1~R1: local.update tags=[t1] ; base tags=[t1]";
    set_both_added_different_union:      "", pair("tags=t1", "tags=t1+t2", "tags=t1+t3") => "L1~R1: local.update tags=[t1,t2,t3] ; remote.update tags=[t1,t2,t3] ; base tags=[t1,t2,t3]";
    set_add_and_remove_both_apply:       "", pair("tags=t1", "tags=t1+t2", "tags=") => "L1~R1: local.update tags=[t2] ; remote.update tags=[t2] ; base tags=[t2]";
    set_both_added_same_converge:        "", pair("tags=t1", "tags=t1+t2", "tags=t1+t2") => "L1~R1: base tags=[t1,t2]";
    set_replaced_on_both_sides:          "", pair("tags=t1", "tags=t2", "tags=t3") => "L1~R1: local.update tags=[t2,t3] ; remote.update tags=[t2,t3] ; base tags=[t2,t3]";
    set_hardware_ids_concurrent:         "", pair("hw=h1+h2", "hw=h1+h2+h3", "hw=h1") => "L1~R1: local.update hw=[h1,h3] ; remote.update hw=[h1,h3] ; base hw=[h1,h3]";
    set_unsorted_duplicates_equal:       "", pair("tags=t1+t2", "", "tags=t1+t2").ltags(1, &["t2", "t1", "t1"]) => "nothing";

    // Reported fields: Golioth → local only, only when different, never backwards.
    reported_last_seen_and_online:       "", pair("", "", "report=990 online=980") => "L1~R1: local.update seen=990 seen_online=980 status=online";
    reported_top_level_fallback:         "", pair("", "", "top=950") => "L1~R1: local.update seen=950 status=online";
    reported_metadata_preferred:         "", pair("", "", "report=960 top=990") => "L1~R1: local.update seen=960 status=online";
    reported_stale_is_offline:           "", pair("", "", "report=100") => "L1~R1: local.update seen=100 status=offline";
    reported_never_rolls_back:           "", pair("", "seen=995 status=online", "report=990") => "nothing";
    reported_newer_local_keeps_online:   "", pair("", "seen=995 status=offline", "report=100") => "L1~R1: local.update status=online";
    reported_online_keeps_warning:       "", pair("", "status=warning", "report=990") => "L1~R1: local.update seen=990";
    reported_offline_replaces_error:     "", pair("", "status=error", "report=100") => "L1~R1: local.update seen=100 status=offline";
    reported_firmware_main:              "", pair("", "", "fw=boot:0.2+main:1.4") => "L1~R1: local.update fw=1.4";
    reported_firmware_first_package:     "", pair("", "", "fw=modem:2.0+zboot:0.2") => "L1~R1: local.update fw=2.0";
    reported_state_paths:                "paths", pair("", "battery=50", "sbat=81 ssig=-70 sloc=1.5:2.5") => "L1~R1: local.update battery=81 signal=-70 loc={\"lat\":1.5,\"lon\":2.5}";
    reported_state_path_unmapped:        "", pair("", "battery=50", "sbat=81") => "nothing";
    reported_both_changed_no_conflict:   "", pair("", "seen=900 fw=1.0", "report=990 fw=main:2.0") => "L1~R1: local.update seen=990 status=online fw=2.0";
    reported_equal_no_write:             "paths", pair("", "seen=990 status=online fw=1.4 battery=81", "report=990 fw=main:1.4 sbat=81") => "nothing";
    reported_group_off:                  "only=name", pair("", "", "report=990 fw=main:1.4") => "nothing";
    reported_not_pulled_by_export:       "export", pair("", "", "report=990") => "nothing";
    reported_with_desired_change:        "", pair("name=a", "name=a", "name=b report=990") => "L1~R1: local.update name=b seen=990 status=online ; base name=b";

    // Directions: one-way runs overwrite and log what they overwrote.
    import_overwrites_local_edit:        "import", pair("name=a", "name=b", "name=a") => "L1~R1: local.update name=a ; overwritten local.name=b";
    import_pulls_remote_change:          "import", pair("name=a", "name=a", "name=b") => "L1~R1: local.update name=b ; base name=b";
    import_both_changed_remote_wins:     "import", pair("name=a", "name=b", "name=c") => "L1~R1: local.update name=c ; base name=c ; overwritten local.name=b";
    import_set_is_not_merged:            "import", pair("tags=t1", "tags=t1+t2", "tags=t1+t3") => "L1~R1: local.update tags=[t1,t3] ; base tags=[t1,t3] ; overwritten local.tags=[t1,t2]";
    import_supersedes_pending:           "import", pair("name=a", "name=b", "name=c").pending(1, "name", "a", "b", "c") => "L1~R1: local.update name=c ; base name=c ; supersede name ; overwritten local.name=b";
    import_creates_local_only:           "import", w().remote(1, "name=new1 hw=h9").assigned(2, "name=mine hw=h5") => "new~R1: local.create name=new1 hw=[h9] ; link R1";
    export_overwrites_remote_edit:       "export", pair("name=a", "name=a", "name=b") => "L1~R1: remote.update name=a ; overwritten remote.name=b";
    export_pushes_local_change:          "export", pair("name=a", "name=b", "name=a") => "L1~R1: remote.update name=b ; base name=b";
    export_set_is_not_merged:            "export", pair("tags=t1", "tags=t1+t2", "tags=t1+t3") => "L1~R1: remote.update tags=[t1,t2] ; base tags=[t1,t2] ; overwritten remote.tags=[t1,t3]";
    export_creates_remote_only:          "export", w().remote(1, "name=new1 hw=h9").assigned(2, "name=mine hw=h5") => "L2~new: remote.create name=mine hw=[h5] ; link new";
    selective_fields_only_name:          "only=name", pair("name=a tags=t1", "name=b tags=t2", "name=a tags=t3") => "L1~R1: remote.update name=b ; base name=b";

    // First sync: matching, mismatches, creations.
    first_sync_by_hardware_id_equal:     "", w().local(1, "name=a hw=h1").remote(1, "name=a hw=h1") => "L1~R1: link R1";
    first_sync_mismatch_manual:          "", w().local(1, "name=a hw=h1").remote(1, "name=b hw=h1") => "L1~R1: link R1 base-without=name ; open name/first_sync_mismatch";
    first_sync_mismatch_remote_wins:     "remote_wins", w().local(1, "name=a hw=h1").remote(1, "name=b hw=h1") => "L1~R1: local.update name=b ; link R1 ; auto name/first_sync_mismatch remote_wins->remote";
    first_sync_sets_union:               "", w().local(1, "tags=t1 hw=h1").remote(1, "tags=t2 hw=h1+h2") => "L1~R1: local.update tags=[t1,t2] hw=[h1,h2] ; remote.update tags=[t1,t2] ; link R1";
    first_sync_by_name_when_enabled:     "by_name", w().local(1, "name=a hw=h1").remote(1, "name=a hw=h2") => "L1~R1: local.update hw=[h1,h2] ; remote.update hw=[h1,h2] ; link R1";
    first_sync_name_ignored_by_default:  "", w().local(1, "name=a hw=h1").remote(1, "name=a hw=h2") => "new~R1: local.create name=a hw=[h2] ; link R1";
    first_sync_linked_without_base:      "", w().linked(1, 1, "none", "name=a").remote(1, "name=a") => "L1~R1: base name=a enabled=true tags=[] hw=[h1] bp=null cohort=null";
    first_sync_remote_only_creates:      "", w().remote(1, "name=g1 hw=h9 tags=t1 report=990 fw=main:1.0") => "new~R1: local.create name=g1 tags=[t1] hw=[h9] seen=990 status=online fw=1.0 ; link R1";
    first_sync_assigned_local_creates:   "", w().assigned(1, "name=mine hw=h5 tags=t1") => "L1~new: remote.create name=mine tags=[t1] hw=[h5] ; link new";
    first_sync_unassigned_ignored:       "", w().local(1, "name=mine hw=h5") => "nothing";
    first_sync_partial_no_remote_create: "partial", w().assigned(1, "name=mine hw=h5") => "nothing";
    first_sync_tombstone_not_candidate:  "", w().local(1, "hw=h1").deleted(1, 500).remote(1, "name=g hw=h1") => "new~R1: local.create name=g hw=[h1] ; link R1";
    first_sync_matched_assigned_linked:  "", w().assigned(1, "name=a hw=h1").remote(1, "name=a hw=h1") => "L1~R1: link R1";

    // A create whose answer (or whose run) was lost: the device found by hardware id is merged
    // against what the create left, so the next run finishes it whatever the policy.
    lost_create_finishes_the_create:     "", w().creating(1, "name=a enabled=true", "name=a enabled=false").remote(1, "name=a enabled=true") => "L1~R1: remote.update enabled=false ; link R1";
    lost_create_policy_cannot_undo_it:   "remote_wins", w().creating(1, "name=a enabled=true", "name=a enabled=false").remote(1, "name=a enabled=true") => "L1~R1: remote.update enabled=false ; link R1";
    lost_create_then_edited_in_golioth:  "", w().creating(1, "name=a enabled=true", "name=a enabled=false").remote(1, "name=b enabled=true") => "L1~R1: local.update name=b ; remote.update enabled=false ; link R1";
    lost_create_both_edited_conflict:    "", w().creating(1, "name=a enabled=true", "name=c enabled=true").remote(1, "name=b enabled=true") => "L1~R1: link R1 ; open name/concurrent_modification";
    lost_create_not_used_for_name_match: "by_name remote_wins", w().creating(1, "name=a enabled=true hw=h1", "name=a enabled=false hw=h1").remote(1, "name=a enabled=true hw=h2") => "L1~R1: local.update enabled=true hw=[h1,h2] ; remote.update hw=[h1,h2] ; link R1 ; auto enabled/first_sync_mismatch remote_wins->remote";

    // Ambiguity: identity conflicts, never a duplicate.
    ambiguous_two_locals_share_hw:       "", w().local(1, "hw=h1").local(2, "hw=h1").remote(1, "hw=h1") => "new~R1: open identity/identity";
    ambiguous_local_claimed_by_two:      "", w().local(1, "hw=h1+h2").remote(1, "hw=h1").remote(2, "hw=h2") => "new~R1: open identity/identity | new~R2: open identity/identity";
    linked_device_is_not_a_candidate:    "", pair("hw=h1", "hw=h1", "hw=h1").remote(2, "name=other hw=h1+h2") => "new~R2: local.create name=other hw=[h1,h2] ; link R2";
    ambiguous_two_locals_same_name:      "by_name", w().local(1, "name=a hw=h1").local(2, "name=a hw=h2").remote(1, "name=a hw=h3") => "new~R1: open identity/identity";
    ambiguous_blocks_remote_creation:    "", w().assigned(1, "hw=h1").identity_on(1) => "nothing";
    ambiguous_candidate_not_exported:    "", w().assigned(1, "hw=h1").local(2, "hw=h1").remote(1, "hw=h1") => "new~R1: open identity/identity";
    identity_pending_same_no_write:      "", two_candidates().pending_identity(1, candidates_json(), serde_json::json!({"id": "R1", "name": "dev", "hardware_ids": ["h1"]})) => "nothing";
    identity_pending_changed_refreshes:  "", two_candidates().pending_identity(1, candidates_json(), serde_json::json!({"id": "R1", "name": "old", "hardware_ids": ["h1"]})) => "new~R1: refresh identity";
    identity_pending_now_unique:         "", w().local(1, "hw=h1").remote(1, "hw=h1").pending_identity(1, candidates_json(), serde_json::json!({})) => "L1~R1: link R1 ; supersede identity";

    // Deletions in Golioth (complete listing unless said otherwise).
    remote_gone_local_unchanged:         "", gone("name=a", "name=a") => "L1~R1: local.delete ; unassign";
    remote_gone_unlink_detaches:         "on_remote=unlink", gone("name=a", "name=a") => "L1~R1: detach";
    remote_gone_detached_stays:          "", w().linked(1, 1, "none", "name=b") => "nothing";
    remote_gone_unlinked_not_rematched:  "on_remote=unlink", gone("name=a hw=h1", "name=a hw=h1").remote(2, "name=new hw=h1") => "new~R2: local.create name=new hw=[h1] ; link R2 | L1~R1: detach";
    remote_gone_ignore:                  "on_remote=ignore", gone("name=a", "name=b") => "nothing";
    remote_gone_local_changed_conflict:  "", gone("name=a", "name=b") => "L1~R1: open device/delete_vs_modify";
    remote_gone_conflict_remote_wins:    "remote_wins", gone("name=a", "name=b") => "L1~R1: local.delete ; unassign ; auto device/delete_vs_modify remote_wins->remote";
    remote_gone_conflict_local_wins:     "local_wins", gone("name=a", "name=b") => "L1~R1: remote.create name=b hw=[h1] ; link new ; auto device/delete_vs_modify local_wins->local";
    remote_gone_newest_wins_is_manual:   "newest_wins", gone("name=a", "name=b") => "L1~R1: open device/delete_vs_modify";
    remote_gone_one_way_is_manual:       "import remote_wins", gone("name=a", "name=b") => "L1~R1: open device/delete_vs_modify";
    remote_gone_partial_listing:         "partial", gone("name=a", "name=a") => "nothing";
    remote_gone_partial_changed:         "partial", gone("name=a", "name=b") => "nothing";
    remote_gone_export_does_nothing:     "export", gone("name=a", "name=a") => "nothing";
    remote_gone_supersedes_pending:      "", gone("name=a", "name=a").pending(1, "name", "a", "b", "c") => "L1~R1: local.delete ; unassign ; supersede name";
    remote_back_supersedes_device:       "", pair("name=a", "name=b", "name=a").pending_device(1) => "L1~R1: remote.update name=b ; base name=b ; supersede device";

    // Deletions locally (tombstones).
    local_deleted_remote_unchanged:      "", pair("name=a", "name=a", "name=a").deleted(1, 500) => "L1~R1: detach";
    local_deleted_delete_remote:         "on_local=delete", pair("name=a", "name=a", "name=a").deleted(1, 500) => "L1~R1: remote.delete ; unassign";
    local_deleted_remote_changed:        "", pair("name=a", "name=a", "name=b").deleted(1, 500) => "L1~R1: open device/delete_vs_modify";
    local_deleted_conflict_remote_wins:  "remote_wins", pair("name=a", "name=a", "name=b report=990").deleted(1, 500) => "L1~R1: local.update name=b seen=990 status=online restore ; base name=b ; auto device/delete_vs_modify remote_wins->remote";
    local_deleted_newest_wins_delete:    "newest_wins", pair("name=a", "name=a", "name=b").deleted(1, 500).rts(1, Some(400)) => "L1~R1: detach ; auto device/delete_vs_modify newest_wins->local";
    local_deleted_detached_stays:        "", w().linked(1, 1, "none", "name=a").deleted(1, 500).remote(1, "name=b") => "nothing";
    local_deleted_not_pushed_by_import:  "import", pair("name=a", "name=a", "name=a").deleted(1, 500) => "nothing";
    local_deleted_remote_gone:           "", gone("name=a", "name=b").deleted(1, 500) => "L1~R1: unassign";
    local_deleted_remote_gone_partial:   "partial", gone("name=a", "name=b").deleted(1, 500) => "nothing";
}

// ---------------------------------------------------------------------------------------------
// Resolving conflicts: a person's choice, then the next pass carries it out (DESIGN §4).

/// Run a pass that opens exactly one conflict, resolve it with `choice` as the conflicts API
/// would, render the next pass, and check that the pass after it does nothing.
fn check_resolution(opts: &str, world: W, choice: Choice, expected: &str) {
    let (opts, listing) = options(opts);
    let mut replicas = world.0;
    let mut ids = SequentialIds::starting_at(10_000);
    replicas.sync_pass(&opts, t(NOW), listing, &mut ids);
    let pending: Vec<PendingConflict> = replicas.pending().cloned().collect();
    assert_eq!(
        pending.len(),
        1,
        "the first pass must open one conflict: {pending:?}"
    );
    let got = match resolve(&pending[0], choice) {
        Err(e) => format!("error: {e}"),
        Ok(resolution) => {
            assert!(replicas.apply_resolution(pending[0].id, &resolution, t(NOW + 10)));
            let before = replicas.clone();
            let (paged, rest) = replicas.sync_pass(&opts, t(NOW + 20), listing, &mut ids);
            render(&before, &opts, &[&paged, &rest])
        }
    };
    assert_eq!(
        got, expected,
        "\n  got:      {got}\n  expected: {expected}\n"
    );
    let settled = replicas.clone();
    let (a, b) = replicas.sync_pass(&opts, t(NOW + 20), listing, &mut ids);
    let again = render(&settled, &opts, &[&a, &b]);
    assert_eq!(
        again, "nothing",
        "a pass after the resolution settled must do nothing: {again}"
    );
    assert!(replicas.pending().next().is_none() || got.starts_with("error"));
}

macro_rules! resolutions {
    ($($name:ident: $opts:expr, $world:expr, $choice:expr => $expected:expr;)*) => {
        $( #[test] fn $name() { check_resolution($opts, $world, $choice, $expected) } )*
    };
}

resolutions! {
    resolve_field_keep_local:            "", pair("name=a", "name=b", "name=c"), Choice::Local => "L1~R1: remote.update name=b ; base name=b";
    resolve_field_keep_remote:           "", pair("name=a", "name=b", "name=c"), Choice::Remote => "nothing";
    resolve_field_custom:                "", pair("name=a", "name=b", "name=c"), Choice::Custom(serde_json::json!("z")) => "L1~R1: remote.update name=z ; base name=z";
    resolve_field_custom_clears_id:      "", pair("bp=x", "bp=y", "bp=z"), Choice::Custom(serde_json::json!(null)) => "L1~R1: remote.update bp=null ; base bp=null";
    resolve_field_custom_wrong_type:     "", pair("name=a", "name=b", "name=c"), Choice::Custom(serde_json::json!(5)) => "error: invalid value: name expects a string, boolean, null or array of strings";
    resolve_first_sync_mismatch:         "", w().local(1, "name=a hw=h1").remote(1, "name=b hw=h1"), Choice::Local => "L1~R1: remote.update name=a ; base name=a";
    resolve_remote_deletion_accepted:    "", gone("name=a", "name=b"), Choice::Remote => "L1~R1: local.delete ; unassign";
    resolve_remote_deletion_keep_local:  "", gone("name=a", "name=b"), Choice::Local => "L1~new: remote.create name=b hw=[h1] ; link new";
    resolve_local_deletion_accepted:     "", pair("name=a", "name=a", "name=b").deleted(1, 500), Choice::Local => "L1~R1: detach";
    resolve_local_deletion_restore:      "", pair("name=a", "name=a", "name=b").deleted(1, 500), Choice::Remote => "nothing";
    resolve_deletion_custom_refused:     "", gone("name=a", "name=b"), Choice::Custom(serde_json::json!("x")) => "error: a custom value cannot resolve a delete-vs-modify conflict";
    resolve_identity_elsewhere:          "", two_candidates(), Choice::Local => "error: identity conflicts are resolved by linking or creating a device";
}
