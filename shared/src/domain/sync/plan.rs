//! Planning: turn a pairing (local, remote, base, pending conflicts) into the writes, new base,
//! conflict records and log entries the engine executes (DESIGN §4). Pure: `now` is an argument,
//! ids of created rows are the engine's to choose, and nothing here reads a clock or does I/O.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::matching::{MatchBy, Pairing, match_page};
use super::merge::{FieldInput, decide_field, pick_winner};
use super::model::{
    Base, ConflictField, ConflictKind, DesiredFields, Field, LocalState, PendingConflict,
    RemoteDevice, Reported, Side, Value,
};
use super::options::{Direction, OnLocalDelete, OnRemoteDelete, SyncFields, SyncOptions};
use super::reported::{ReportedChanges, reported_changes, reported_for_new};

/// Whether the remote listing behind a plan saw every Golioth device. Deletions, and creations in
/// Golioth, are only planned after a complete listing (every page fetched, `total` stable), because
/// a device missing from a partial listing may simply not have been fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Listing {
    Complete,
    Partial,
}

/// A change to a set, both as the full new set and as a delta, so the engine can PATCH Golioth
/// with `addTagId` / `removeTagId` (which cannot clobber a concurrent edit) or replace the set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetChange {
    pub to: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl SetChange {
    fn between(from: &[String], to: &[String]) -> SetChange {
        SetChange {
            to: to.to_vec(),
            added: to.iter().filter(|e| !from.contains(e)).cloned().collect(),
            removed: from.iter().filter(|e| !to.contains(e)).cloned().collect(),
        }
    }
}

/// The desired fields a write changes; `None` leaves a field alone. Tags are names on both sides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DesiredChanges {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<SetChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware_ids: Option<SetChange>,
    /// `Some(None)` clears the blueprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blueprint_id: Option<Option<String>>,
    /// `Some(None)` clears the cohort (Golioth: `cohortId: ""`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort_id: Option<Option<String>>,
}

impl DesiredChanges {
    pub fn is_empty(&self) -> bool {
        *self == DesiredChanges::default()
    }

    /// Record that `field` goes from `from` to `to`.
    fn record(&mut self, field: Field, from: &Value, to: &Value) {
        let text = |v: &Value| match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        };
        match field {
            Field::Name => self.name = text(to),
            Field::Enabled => self.enabled = Some(matches!(to, Value::Bool(true))),
            Field::Tags => self.tags = Some(SetChange::between(from.as_set(), to.as_set())),
            Field::HardwareIds => {
                self.hardware_ids = Some(SetChange::between(from.as_set(), to.as_set()));
            }
            Field::BlueprintId => self.blueprint_id = Some(text(to)),
            Field::CohortId => self.cohort_id = Some(text(to)),
        }
    }

    /// The new value of `field`, if this write changes it.
    pub fn get(&self, field: Field) -> Option<Value> {
        match field {
            Field::Name => self.name.clone().map(Value::Text),
            Field::Enabled => self.enabled.map(Value::Bool),
            Field::Tags => self.tags.as_ref().map(|c| Value::set(c.to.iter().cloned())),
            Field::HardwareIds => self
                .hardware_ids
                .as_ref()
                .map(|c| Value::set(c.to.iter().cloned())),
            Field::BlueprintId => self
                .blueprint_id
                .as_ref()
                .map(|v| Value::opt_text(v.as_deref())),
            Field::CohortId => self
                .cohort_id
                .as_ref()
                .map(|v| Value::opt_text(v.as_deref())),
        }
    }

    pub fn apply_to(&self, desired: &mut DesiredFields) {
        for field in Field::ALL {
            if let Some(v) = self.get(field) {
                // `get` builds values of the field's own type, which `set` always accepts.
                let _ = desired.set(field, &v);
            }
        }
    }
}

/// An update of a local device: desired and reported columns, and possibly lifting the tombstone.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LocalChanges {
    #[serde(flatten)]
    pub desired: DesiredChanges,
    #[serde(flatten)]
    pub reported: ReportedChanges,
    /// Clear `deleted_at`: a Golioth edit won a delete-vs-modify conflict.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub restore: bool,
}

impl LocalChanges {
    pub fn is_empty(&self) -> bool {
        self.desired.is_empty() && self.reported.is_empty() && !self.restore
    }
}

/// A write to the platform's `devices` table.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LocalWrite {
    /// Insert a device (the engine picks its id and organization).
    Create {
        desired: DesiredFields,
        reported: Reported,
    },
    /// Update only the named columns, `WHERE version = expected_version`; zero rows means the
    /// device changed since it was read, and the device is planned again on the next run.
    Update {
        expected_version: i64,
        changes: LocalChanges,
    },
    /// Set `deleted_at` (a tombstone), `WHERE version = expected_version`.
    SoftDelete { expected_version: i64 },
}

/// A write to Golioth. Tags are names: the engine maps them to tag ids (creating missing tags).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RemoteWrite {
    /// `POST /devices`; the returned id is stored by the plan's [`AssignmentWrite::Link`].
    Create { desired: DesiredFields },
    /// `PATCH` with only these fields. `expected_updated_at` is the `updatedAt` the plan was made
    /// from: re-read and compare just before writing to narrow the lost-update window (Golioth has
    /// no ETag).
    Update {
        expected_updated_at: Option<DateTime<Utc>>,
        changes: DesiredChanges,
    },
    /// `DELETE /devices/{id}`.
    Delete,
}

/// A write to the device's `device_service_assignments` row.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AssignmentWrite {
    /// Upsert the row with this link and base. `external_id: None` means "the id Golioth returns
    /// for this plan's [`RemoteWrite::Create`]"; for a [`LocalWrite::Create`] the device id is the
    /// one the engine gave the new row.
    Link {
        external_id: Option<String>,
        base: Base,
    },
    /// Store a new base (the values both sides now agree on).
    SetBase { base: Base },
    /// Keep `external_device_id` but set `base` to NULL: the device stops syncing for good (until a
    /// person removes or re-creates the assignment). A locally deleted device keeps claiming its
    /// Golioth twin, so that twin is not imported again as new; a device whose twin Golioth deleted
    /// is neither exported again nor re-matched to another Golioth device behind a person's back.
    Detach,
    /// Delete the assignment row: the device is no longer linked to, nor exported by, the service.
    Delete,
}

/// A conflict as it should be stored (`device_conflicts`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conflict {
    /// `None` for an `identity` conflict about a Golioth device with no local twin yet.
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

impl Conflict {
    fn same_values(&self, p: &PendingConflict) -> bool {
        self.kind == p.kind
            && self.base_value == p.base_value
            && self.local_value == p.local_value
            && self.remote_value == p.remote_value
    }
}

/// What happens to conflict rows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ConflictChange {
    /// Insert a `pending` row.
    Open { conflict: Conflict },
    /// The pending row `id` was detected again with different values: update it in place.
    Refresh { id: Uuid, conflict: Conflict },
    /// The pending row `id` is no longer a conflict (the sides converged, or a one-way run or a
    /// deletion settled it): mark it `superseded`.
    Supersede { id: Uuid, field: ConflictField },
    /// A policy settled the conflict: store it as `auto_resolved` with both values, so nothing is
    /// lost. `replaces` is a pending row for the same field (then update that row instead).
    AutoResolved {
        replaces: Option<Uuid>,
        conflict: Conflict,
        strategy: super::options::ConflictPolicy,
        winner: Side,
        resolved_value: Option<serde_json::Value>,
    },
}

/// `golioth_sync_log.operation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogOperation {
    LocalCreated,
    LocalUpdated,
    LocalDeleted,
    LocalRestored,
    RemoteCreated,
    RemoteUpdated,
    RemoteDeleted,
    Linked,
    Unlinked,
    Detached,
    /// A one-way run replaced a value the other side had edited: `from` is the lost value.
    ValueOverwritten,
    ConflictOpened,
    ConflictAutoResolved,
    ConflictSuperseded,
}

impl LogOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            LogOperation::LocalCreated => "local_created",
            LogOperation::LocalUpdated => "local_updated",
            LogOperation::LocalDeleted => "local_deleted",
            LogOperation::LocalRestored => "local_restored",
            LogOperation::RemoteCreated => "remote_created",
            LogOperation::RemoteUpdated => "remote_updated",
            LogOperation::RemoteDeleted => "remote_deleted",
            LogOperation::Linked => "linked",
            LogOperation::Unlinked => "unlinked",
            LogOperation::Detached => "detached",
            LogOperation::ValueOverwritten => "value_overwritten",
            LogOperation::ConflictOpened => "conflict_opened",
            LogOperation::ConflictAutoResolved => "conflict_auto_resolved",
            LogOperation::ConflictSuperseded => "conflict_superseded",
        }
    }
}

/// One column's old and new value, for the log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

/// One sync-log row (the engine adds organization, service, run, device and time).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogEntry {
    pub operation: LogOperation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
}

impl LogEntry {
    fn op(operation: LogOperation) -> LogEntry {
        LogEntry {
            operation,
            side: None,
            field: None,
            changes: Vec::new(),
        }
    }

    fn about(operation: LogOperation, field: ConflictField) -> LogEntry {
        LogEntry {
            field: Some(field.as_str()),
            ..LogEntry::op(operation)
        }
    }
}

/// Everything to do for one device. An empty plan ([`DevicePlan::is_empty`]) means the device is
/// in sync: a second run right after a successful one produces only empty plans.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DevicePlan {
    /// The local device, when there is one (not for a device about to be created locally).
    pub device_id: Option<Uuid>,
    /// The Golioth device, when there is one (not for a device about to be created in Golioth).
    pub external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalWrite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteWrite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment: Option<AssignmentWrite>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<ConflictChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LogEntry>,
}

impl DevicePlan {
    fn new(device_id: Option<Uuid>, external_id: Option<&str>) -> DevicePlan {
        DevicePlan {
            device_id,
            external_id: external_id.map(str::to_owned),
            ..DevicePlan::default()
        }
    }

    /// No write of any kind (device, Golioth, assignment, conflict, log).
    pub fn is_empty(&self) -> bool {
        self.local.is_none()
            && self.remote.is_none()
            && self.assignment.is_none()
            && self.conflicts.is_empty()
            && self.log.is_empty()
    }

    fn log(&mut self, entry: LogEntry) {
        self.log.push(entry);
    }
}

/// Counts for a run's stats and summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    pub unchanged: usize,
    pub local_created: usize,
    pub local_updated: usize,
    pub local_deleted: usize,
    pub remote_created: usize,
    pub remote_updated: usize,
    pub remote_deleted: usize,
    pub linked: usize,
    pub unlinked: usize,
    pub conflicts_opened: usize,
    pub conflicts_refreshed: usize,
    pub conflicts_auto_resolved: usize,
    pub conflicts_superseded: usize,
}

/// The plans of one page (or of the closing local-only pass), in input order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PagePlan {
    pub devices: Vec<DevicePlan>,
}

impl PagePlan {
    /// True when nothing at all is to be written.
    pub fn is_empty(&self) -> bool {
        self.devices.iter().all(DevicePlan::is_empty)
    }

    pub fn summary(&self) -> PlanSummary {
        let mut s = PlanSummary::default();
        for d in &self.devices {
            if d.is_empty() {
                s.unchanged += 1;
            }
            match &d.local {
                Some(LocalWrite::Create { .. }) => s.local_created += 1,
                Some(LocalWrite::Update { .. }) => s.local_updated += 1,
                Some(LocalWrite::SoftDelete { .. }) => s.local_deleted += 1,
                None => {}
            }
            match &d.remote {
                Some(RemoteWrite::Create { .. }) => s.remote_created += 1,
                Some(RemoteWrite::Update { .. }) => s.remote_updated += 1,
                Some(RemoteWrite::Delete) => s.remote_deleted += 1,
                None => {}
            }
            match &d.assignment {
                Some(AssignmentWrite::Link { .. }) => s.linked += 1,
                Some(AssignmentWrite::Detach | AssignmentWrite::Delete) => s.unlinked += 1,
                _ => {}
            }
            for c in &d.conflicts {
                match c {
                    ConflictChange::Open { .. } => s.conflicts_opened += 1,
                    ConflictChange::Refresh { .. } => s.conflicts_refreshed += 1,
                    ConflictChange::Supersede { .. } => s.conflicts_superseded += 1,
                    ConflictChange::AutoResolved { .. } => s.conflicts_auto_resolved += 1,
                }
            }
        }
        s
    }
}

/// One page of a run: the Golioth devices listed on it, and the local devices that are linked to
/// them or could match them (see [`match_page`]), with assignments and pending conflicts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PageInput {
    pub remotes: Vec<RemoteDevice>,
    pub locals: Vec<LocalState>,
    /// Pending conflicts keyed by a Golioth device and no local device (`identity` conflicts).
    pub remote_pending: Vec<PendingConflict>,
}

/// Plan one page: pair remotes with locals, then plan each pairing. Local devices not paired with a
/// remote of the page are only match candidates and get no plan here.
pub fn plan_page(opts: &SyncOptions, now: DateTime<Utc>, page: &PageInput) -> PagePlan {
    let pairings = match_page(&page.remotes, &page.locals, opts.match_by_name);
    let devices = pairings
        .iter()
        .map(|pairing| {
            let pending: Vec<PendingConflict> = match pairing.remote() {
                Some(r) => page
                    .remote_pending
                    .iter()
                    .filter(|p| p.device_id.is_none() && p.external_id.as_deref() == Some(&r.id))
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            plan_pairing(opts, now, pairing, Listing::Complete, &pending)
        })
        .collect();
    PagePlan { devices }
}

/// Plan the local devices that no remote of the run's listing paired with: linked devices whose
/// Golioth device is gone, and assigned devices never linked (created in Golioth). Call it once the
/// listing is finished, after the page plans were applied, with the locals that are assigned to the
/// service and were not seen; `listing` says whether that listing was complete.
pub fn plan_local_only(
    opts: &SyncOptions,
    now: DateTime<Utc>,
    locals: &[LocalState],
    listing: Listing,
) -> PagePlan {
    PagePlan {
        devices: locals
            .iter()
            .map(|local| plan_pairing(opts, now, &Pairing::LocalOnly { local }, listing, &[]))
            .collect(),
    }
}

/// Plan one pairing. `remote_pending` holds the pending conflicts keyed by the pairing's Golioth
/// device alone (its `identity` conflict, if any); `listing` matters only for
/// [`Pairing::LocalOnly`]. The engine's targeted `device_refresh` calls this directly with a
/// [`Pairing::Linked`] (or `LocalOnly` with [`Listing::Complete`] after Golioth answered 404).
pub fn plan_pairing(
    opts: &SyncOptions,
    now: DateTime<Utc>,
    pairing: &Pairing<'_>,
    listing: Listing,
    remote_pending: &[PendingConflict],
) -> DevicePlan {
    let mut plan = match pairing {
        Pairing::Linked { local, remote } => plan_present(opts, now, local, remote, None),
        Pairing::Matched { local, remote, by } => plan_present(opts, now, local, remote, Some(*by)),
        Pairing::RemoteOnly { remote } => plan_remote_only(opts, now, remote),
        Pairing::LocalOnly { local } => plan_local_alone(opts, local, listing),
        Pairing::Ambiguous { remote, candidates } => {
            return plan_ambiguous(remote, candidates, remote_pending);
        }
    };
    for p in remote_pending
        .iter()
        .filter(|p| p.field == ConflictField::Identity)
    {
        supersede(&mut plan, p);
    }
    plan
}

// ---------------------------------------------------------------------------------------------
// Both sides present

fn plan_present(
    opts: &SyncOptions,
    now: DateTime<Utc>,
    ls: &LocalState,
    remote: &RemoteDevice,
    matched: Option<MatchBy>,
) -> DevicePlan {
    let dev = &ls.device;
    let mut plan = DevicePlan::new(Some(dev.id), Some(&remote.id));
    let linked_here = ls.external_id() == Some(remote.id.as_str());
    if dev.deleted_at.is_some() {
        if linked_here {
            plan_tombstone_present(opts, now, ls, remote, &mut plan);
        }
        return plan;
    }
    let first_link = matched.is_some() || !linked_here;
    let old_base: Option<&Base> = if first_link {
        // A first link has no base, unless this device's create was sent and its outcome never
        // committed: a Golioth device holding its hardware ids is then most likely the one that
        // create made, and is merged against what the create left (see [`pending_create_base`]).
        match (matched, ls.assignment.as_ref()) {
            (Some(MatchBy::HardwareId), Some(a)) => a.pending_create.as_ref(),
            _ => None,
        }
    } else {
        ls.assignment.as_ref().and_then(|a| a.base.as_ref())
    };

    // A linked, live device is neither deleted nor of unknown identity any more. (Identity
    // conflicts keyed by another Golioth device that merely name this one stay.)
    for p in ls.pending.iter().filter(|p| {
        matches!(p.field, ConflictField::Device | ConflictField::Identity)
            && p.device_id == Some(dev.id)
    }) {
        supersede(&mut plan, p);
    }

    let mut new_base = old_base.cloned().unwrap_or_default();
    let mut local_changes = DesiredChanges::default();
    let mut remote_changes = DesiredChanges::default();
    for field in opts.fields.desired() {
        let local = dev.desired.get(field);
        let remote_value = remote.desired.get(field);
        let base = old_base.and_then(|b| b.get(field));
        let pending = ls
            .pending
            .iter()
            .find(|p| p.field == ConflictField::Field(field));
        let mut decision = decide_field(
            opts.direction,
            opts.policy,
            FieldInput {
                field,
                base,
                local: &local,
                remote: &remote_value,
                local_updated_at: Some(dev.updated_at),
                remote_updated_at: remote.updated_at,
            },
        );
        let record = decision.conflict.map(|c| Conflict {
            device_id: Some(dev.id),
            external_id: Some(remote.id.clone()),
            field: ConflictField::Field(field),
            kind: c.kind,
            base_value: base.map(Value::to_json),
            local_value: Some(local.to_json()),
            remote_value: Some(remote_value.to_json()),
            local_updated_at: Some(dev.updated_at),
            remote_updated_at: remote.updated_at,
        });
        if let (Some(c), Some(rec)) = (&mut decision.conflict, &record)
            && waits_for_person(pending, rec)
        {
            c.winner = None;
            decision.target = None;
        }
        if let Some(target) = &decision.target {
            if *target != local {
                local_changes.record(field, &local, target);
            }
            if *target != remote_value {
                remote_changes.record(field, &remote_value, target);
            }
            new_base.insert(field, target.clone());
            if let Some(side) = decision.overwritten {
                let lost = if side == Side::Local {
                    &local
                } else {
                    &remote_value
                };
                plan.log(LogEntry {
                    side: Some(side),
                    field: Some(field.as_str()),
                    changes: vec![FieldChange {
                        field: field.as_str(),
                        from: lost.to_json(),
                        to: target.to_json(),
                    }],
                    ..LogEntry::op(LogOperation::ValueOverwritten)
                });
            }
        }
        let (Some(conflict), Some(record)) = (decision.conflict, record) else {
            if let Some(p) = pending {
                supersede(&mut plan, p);
            }
            continue;
        };
        match conflict.winner {
            None => open_or_refresh(&mut plan, pending, record),
            Some(winner) => auto_resolved(
                &mut plan,
                opts,
                pending,
                record,
                winner,
                decision.target.as_ref().map(Value::to_json),
            ),
        }
    }

    let reported = if opts.direction.pulls() {
        reported_changes(opts, now, &remote.reported, &dev.reported)
    } else {
        ReportedChanges::default()
    };
    if !local_changes.is_empty() || !reported.is_empty() {
        let mut changes = desired_log(&local_changes, &dev.desired);
        changes.extend(
            reported
                .changes(&dev.reported)
                .into_iter()
                .map(|(field, from, to)| FieldChange { field, from, to }),
        );
        plan.log(LogEntry {
            changes,
            ..LogEntry::op(LogOperation::LocalUpdated)
        });
        plan.local = Some(LocalWrite::Update {
            expected_version: dev.version,
            changes: LocalChanges {
                desired: local_changes,
                reported,
                restore: false,
            },
        });
    }
    if !remote_changes.is_empty() {
        plan.log(LogEntry {
            changes: desired_log(&remote_changes, &remote.desired),
            ..LogEntry::op(LogOperation::RemoteUpdated)
        });
        plan.remote = Some(RemoteWrite::Update {
            expected_updated_at: remote.updated_at,
            changes: remote_changes,
        });
    }
    if first_link {
        plan.log(LogEntry::op(LogOperation::Linked));
        plan.assignment = Some(AssignmentWrite::Link {
            external_id: Some(remote.id.clone()),
            base: new_base,
        });
    } else if old_base != Some(&new_base) {
        plan.assignment = Some(AssignmentWrite::SetBase { base: new_base });
    }
    plan
}

/// A deleted local device still linked to a live Golioth device.
fn plan_tombstone_present(
    opts: &SyncOptions,
    now: DateTime<Utc>,
    ls: &LocalState,
    remote: &RemoteDevice,
    plan: &mut DevicePlan,
) {
    let dev = &ls.device;
    // No base: already detached (or never synced), nothing left to propagate.
    let Some(base) = ls.assignment.as_ref().and_then(|a| a.base.as_ref()) else {
        return;
    };
    if !opts.direction.pushes() {
        return;
    }
    let remote_changed = opts
        .fields
        .desired()
        .any(|f| base.get(f) != Some(&remote.desired.get(f)));
    if !remote_changed {
        apply_local_delete(opts, ls, plan, None);
        return;
    }
    let record = Conflict {
        device_id: Some(dev.id),
        external_id: Some(remote.id.clone()),
        field: ConflictField::Device,
        kind: ConflictKind::DeleteVsModify,
        base_value: Some(base.to_json()),
        local_value: None,
        remote_value: Some(snapshot(&remote.desired, &opts.fields).to_json()),
        local_updated_at: dev.deleted_at,
        remote_updated_at: remote.updated_at,
    };
    let pending = find_pending(ls, ConflictField::Device);
    match auto_winner(opts, pending, &record, dev.deleted_at, remote.updated_at) {
        None => open_or_refresh(plan, pending, record),
        Some(Side::Local) => {
            apply_local_delete(opts, ls, plan, pending.map(|p| p.id));
            auto_resolved(plan, opts, pending, record, Side::Local, None);
        }
        Some(Side::Remote) => {
            // The Golioth edit wins: bring the device back with Golioth's values.
            let mut desired = DesiredChanges::default();
            for f in opts.fields.desired() {
                let (l, r) = (dev.desired.get(f), remote.desired.get(f));
                if l != r {
                    desired.record(f, &l, &r);
                }
            }
            let reported = reported_changes(opts, now, &remote.reported, &dev.reported);
            let mut changes = desired_log(&desired, &dev.desired);
            changes.extend(
                reported
                    .changes(&dev.reported)
                    .into_iter()
                    .map(|(field, from, to)| FieldChange { field, from, to }),
            );
            changes.push(FieldChange {
                field: "deleted_at",
                from: serde_json::to_value(dev.deleted_at).unwrap_or_default(),
                to: serde_json::Value::Null,
            });
            plan.log(LogEntry {
                changes,
                ..LogEntry::op(LogOperation::LocalRestored)
            });
            plan.local = Some(LocalWrite::Update {
                expected_version: dev.version,
                changes: LocalChanges {
                    desired,
                    reported,
                    restore: true,
                },
            });
            let mut new_base = base.clone();
            for f in opts.fields.desired() {
                new_base.insert(f, remote.desired.get(f));
            }
            supersede_all(plan, ls, pending.map(|p| p.id));
            let resolved = Some(new_base.to_json());
            plan.assignment = Some(AssignmentWrite::SetBase { base: new_base });
            auto_resolved(plan, opts, pending, record, Side::Remote, resolved);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One side only

fn plan_remote_only(opts: &SyncOptions, now: DateTime<Utc>, remote: &RemoteDevice) -> DevicePlan {
    let mut plan = DevicePlan::new(None, Some(&remote.id));
    if !opts.direction.pulls() {
        return plan;
    }
    let desired = creation_values(&remote.desired, &opts.fields);
    let base = snapshot(&desired, &opts.fields);
    plan.log(LogEntry::op(LogOperation::LocalCreated));
    plan.local = Some(LocalWrite::Create {
        desired,
        reported: reported_for_new(opts, now, &remote.reported),
    });
    plan.assignment = Some(AssignmentWrite::Link {
        external_id: Some(remote.id.clone()),
        base,
    });
    plan
}

fn plan_local_alone(opts: &SyncOptions, ls: &LocalState, listing: Listing) -> DevicePlan {
    let dev = &ls.device;
    let mut plan = DevicePlan::new(Some(dev.id), ls.external_id());
    let Some(assignment) = &ls.assignment else {
        return plan; // not assigned to the service: not ours to export
    };
    if listing == Listing::Partial {
        return plan; // a device missing from a partial listing may just not have been fetched
    }
    if assignment.external_id.is_none() {
        let identity_pending = ls
            .pending
            .iter()
            .any(|p| p.field == ConflictField::Identity);
        if dev.deleted_at.is_none() && opts.direction.pushes() && !identity_pending {
            let desired = creation_values(&dev.desired, &opts.fields);
            let base = snapshot(&desired, &opts.fields);
            plan.log(LogEntry::op(LogOperation::RemoteCreated));
            plan.remote = Some(RemoteWrite::Create { desired });
            plan.assignment = Some(AssignmentWrite::Link {
                external_id: None,
                base,
            });
        }
        return plan;
    }

    // Linked, and its Golioth device is gone.
    if dev.deleted_at.is_some() {
        supersede_all(&mut plan, ls, None);
        plan.log(LogEntry::op(LogOperation::Unlinked));
        plan.assignment = Some(AssignmentWrite::Delete);
        return plan;
    }
    // No base: detached earlier (or linked by a person and never synced); nothing to compare.
    let Some(base) = &assignment.base else {
        return plan;
    };
    if !opts.direction.pulls() || opts.on_remote_delete == OnRemoteDelete::Ignore {
        return plan;
    }
    let local_changed = opts
        .fields
        .desired()
        .any(|f| base.get(f) != Some(&dev.desired.get(f)));
    if !local_changed {
        apply_remote_delete(opts, ls, &mut plan, None);
        return plan;
    }
    let record = Conflict {
        device_id: Some(dev.id),
        external_id: assignment.external_id.clone(),
        field: ConflictField::Device,
        kind: ConflictKind::DeleteVsModify,
        base_value: Some(base.to_json()),
        local_value: Some(snapshot(&dev.desired, &opts.fields).to_json()),
        remote_value: None,
        local_updated_at: Some(dev.updated_at),
        remote_updated_at: None,
    };
    let pending = find_pending(ls, ConflictField::Device);
    match auto_winner(opts, pending, &record, Some(dev.updated_at), None) {
        None => open_or_refresh(&mut plan, pending, record),
        Some(Side::Remote) => {
            apply_remote_delete(opts, ls, &mut plan, pending.map(|p| p.id));
            auto_resolved(&mut plan, opts, pending, record, Side::Remote, None);
        }
        Some(Side::Local) => {
            // The local edit wins: the device lives on, so it is created in Golioth again.
            let desired = creation_values(&dev.desired, &opts.fields);
            let base = snapshot(&desired, &opts.fields);
            supersede_all(&mut plan, ls, pending.map(|p| p.id));
            plan.log(LogEntry::op(LogOperation::RemoteCreated));
            plan.remote = Some(RemoteWrite::Create { desired });
            let resolved = Some(base.to_json());
            plan.assignment = Some(AssignmentWrite::Link {
                external_id: None,
                base,
            });
            auto_resolved(&mut plan, opts, pending, record, Side::Local, resolved);
        }
    }
    plan
}

fn plan_ambiguous(
    remote: &RemoteDevice,
    candidates: &[&LocalState],
    remote_pending: &[PendingConflict],
) -> DevicePlan {
    let mut plan = DevicePlan::new(None, Some(&remote.id));
    let mut locals: Vec<serde_json::Value> = candidates
        .iter()
        .map(|c| identity_json(&c.device.id.to_string(), &c.device.desired, c.external_id()))
        .collect();
    locals.sort_by_key(|v| v["id"].as_str().map(str::to_owned));
    let record = Conflict {
        device_id: None,
        external_id: Some(remote.id.clone()),
        field: ConflictField::Identity,
        kind: ConflictKind::Identity,
        base_value: None,
        local_value: Some(serde_json::Value::Array(locals)),
        remote_value: Some(identity_json(&remote.id, &remote.desired, None)),
        local_updated_at: None,
        remote_updated_at: remote.updated_at,
    };
    let pending = remote_pending
        .iter()
        .find(|p| p.field == ConflictField::Identity);
    open_or_refresh(&mut plan, pending, record);
    plan
}

/// How a device is described in an `identity` conflict: enough for a person to tell them apart.
/// `local_value` is an array of these (sorted by id), `remote_value` one of them.
fn identity_json(id: &str, d: &DesiredFields, linked_to: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": id,
        "name": d.name,
        "hardware_ids": Value::set(d.hardware_ids.iter().cloned()).to_json(),
    });
    if let (Some(ext), Some(obj)) = (linked_to, v.as_object_mut()) {
        obj.insert(
            "linked_to".into(),
            serde_json::Value::String(ext.to_owned()),
        );
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Deletions

/// Carry out `on_local_delete` for a deleted local device whose Golioth twin is unchanged.
fn apply_local_delete(
    opts: &SyncOptions,
    ls: &LocalState,
    plan: &mut DevicePlan,
    keep: Option<Uuid>,
) {
    supersede_all(plan, ls, keep);
    match opts.on_local_delete {
        OnLocalDelete::Unlink => {
            plan.log(LogEntry::op(LogOperation::Detached));
            plan.assignment = Some(AssignmentWrite::Detach);
        }
        OnLocalDelete::DeleteRemote => {
            plan.log(LogEntry::op(LogOperation::RemoteDeleted));
            plan.remote = Some(RemoteWrite::Delete);
            plan.assignment = Some(AssignmentWrite::Delete);
        }
    }
}

/// Carry out `on_remote_delete` for a live local device whose Golioth twin is gone.
fn apply_remote_delete(
    opts: &SyncOptions,
    ls: &LocalState,
    plan: &mut DevicePlan,
    keep: Option<Uuid>,
) {
    match opts.on_remote_delete {
        OnRemoteDelete::Ignore => return,
        OnRemoteDelete::SoftDeleteLocal => {
            plan.log(LogEntry::op(LogOperation::LocalDeleted));
            plan.local = Some(LocalWrite::SoftDelete {
                expected_version: ls.device.version,
            });
            plan.log(LogEntry::op(LogOperation::Unlinked));
            plan.assignment = Some(AssignmentWrite::Delete);
        }
        OnRemoteDelete::Unlink => {
            // Detached rather than released: a released device would become a match candidate
            // (or be exported again) on the next run, so this run would not be final.
            plan.log(LogEntry::op(LogOperation::Detached));
            plan.assignment = Some(AssignmentWrite::Detach);
        }
    }
    supersede_all(plan, ls, keep);
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The automatic winner of a delete-vs-modify conflict. Deletions are destructive, so only a
/// bidirectional run lets a policy settle them; one-way runs leave them to a person.
fn auto_winner(
    opts: &SyncOptions,
    pending: Option<&PendingConflict>,
    record: &Conflict,
    local_at: Option<DateTime<Utc>>,
    remote_at: Option<DateTime<Utc>>,
) -> Option<Side> {
    if opts.direction != Direction::Bidirectional || waits_for_person(pending, record) {
        return None;
    }
    pick_winner(opts.policy, local_at, remote_at)
}

/// Whether `pending` is the same conflict detected again (same kind and values). Such a conflict
/// was handed to a person and keeps waiting for them whatever the policy says now: policies settle
/// conflicts when they are detected, and the sync's own writes move the `updated_at` times
/// `newest_wins` compares, so re-deciding would be neither stable nor expected.
fn waits_for_person(pending: Option<&PendingConflict>, record: &Conflict) -> bool {
    pending.is_some_and(|p| record.same_values(p))
}

fn find_pending(ls: &LocalState, field: ConflictField) -> Option<&PendingConflict> {
    ls.pending.iter().find(|p| p.field == field)
}

/// Open a pending conflict, or refresh the existing row when its values moved. Re-detecting the
/// same conflict writes nothing, so a resync stays at zero writes.
fn open_or_refresh(plan: &mut DevicePlan, pending: Option<&PendingConflict>, conflict: Conflict) {
    match pending {
        Some(p) if conflict.same_values(p) => {}
        Some(p) => plan
            .conflicts
            .push(ConflictChange::Refresh { id: p.id, conflict }),
        None => {
            plan.log(LogEntry::about(
                LogOperation::ConflictOpened,
                conflict.field,
            ));
            plan.conflicts.push(ConflictChange::Open { conflict });
        }
    }
}

fn auto_resolved(
    plan: &mut DevicePlan,
    opts: &SyncOptions,
    pending: Option<&PendingConflict>,
    conflict: Conflict,
    winner: Side,
    resolved_value: Option<serde_json::Value>,
) {
    let mut entry = LogEntry::about(LogOperation::ConflictAutoResolved, conflict.field);
    entry.side = Some(winner);
    plan.log(entry);
    plan.conflicts.push(ConflictChange::AutoResolved {
        replaces: pending.map(|p| p.id),
        conflict,
        strategy: opts.policy,
        winner,
        resolved_value,
    });
}

fn supersede(plan: &mut DevicePlan, p: &PendingConflict) {
    plan.log(LogEntry::about(LogOperation::ConflictSuperseded, p.field));
    plan.conflicts.push(ConflictChange::Supersede {
        id: p.id,
        field: p.field,
    });
}

/// Supersede every pending conflict of the device but `keep` (which the caller settles itself).
/// Identity conflicts keyed by a Golioth device that only name this device are not its own.
fn supersede_all(plan: &mut DevicePlan, ls: &LocalState, keep: Option<Uuid>) {
    let own = |p: &&PendingConflict| p.device_id == Some(ls.device.id);
    for p in ls.pending.iter().filter(own).filter(|p| Some(p.id) != keep) {
        supersede(plan, p);
    }
}

/// The synced desired fields of one side, as a base.
fn snapshot(desired: &DesiredFields, fields: &SyncFields) -> Base {
    Base::from_desired(desired, fields.desired())
}

/// The base a Golioth create of `desired` leaves when nothing follows it: the fields it sends
/// (see [`creation_values`]) and Golioth's defaults for the ones it cannot send (a device starts
/// enabled; a disabled one is patched after). The engine stores it as the assignment's
/// `pending_create` before sending the create, so a run that dies between the create and its
/// commit is finished by the next one (a three-way merge that pushes what the create lacked)
/// instead of meeting the new device as a stranger.
pub fn pending_create_base(desired: &DesiredFields, fields: &SyncFields) -> Base {
    let created = DesiredFields {
        enabled: true,
        ..desired.clone()
    };
    snapshot(&created, fields)
}

/// The desired values a created device starts with: the synced fields are copied, the name always
/// (a device needs one), and fields outside the synced groups keep the column defaults.
fn creation_values(src: &DesiredFields, fields: &SyncFields) -> DesiredFields {
    let mut out = DesiredFields {
        name: src.name.clone(),
        ..DesiredFields::default()
    };
    for f in fields.desired() {
        // Values read from a `DesiredFields` always type-check against their own field.
        let _ = out.set(f, &src.get(f));
    }
    out
}

fn desired_log(changes: &DesiredChanges, old: &DesiredFields) -> Vec<FieldChange> {
    Field::ALL
        .into_iter()
        .filter_map(|f| {
            changes.get(f).map(|to| FieldChange {
                field: f.as_str(),
                from: old.get(f).to_json(),
                to: to.to_json(),
            })
        })
        .collect()
}
