//! Applying plans to in-memory replicas: the reference semantics of a plan, used by the property
//! tests (convergence, idempotence) and by the engine to preview a dry run page by page. Ids of
//! created rows come from an [`IdSource`] so this stays deterministic.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::model::{
    Assignment, Base, LocalDevice, LocalState, PendingConflict, RemoteDevice, RemoteReported,
};
use super::options::SyncOptions;
use super::plan::{
    AssignmentWrite, Conflict, ConflictChange, DevicePlan, Listing, LocalWrite, PageInput,
    PagePlan, RemoteWrite, plan_local_only, plan_page,
};
use super::resolve::{DeviceResolution, Resolution};

/// Where the ids of rows created while applying come from (the engine: Postgres and Golioth).
pub trait IdSource {
    fn local_id(&mut self) -> Uuid;
    fn remote_id(&mut self) -> String;
    fn conflict_id(&mut self) -> Uuid;
}

/// Sequential ids: `00000000-0000-0000-0000-00000000000n` and 24-hex Golioth ids, deterministic.
#[derive(Clone, Debug, Default)]
pub struct SequentialIds {
    next: u64,
}

impl SequentialIds {
    /// Start after `n`, to stay clear of ids a test already used.
    pub fn starting_at(n: u64) -> SequentialIds {
        SequentialIds { next: n }
    }

    fn bump(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

impl IdSource for SequentialIds {
    fn local_id(&mut self) -> Uuid {
        Uuid::from_u128(u128::from(self.bump()))
    }
    fn remote_id(&mut self) -> String {
        format!("{:024x}", self.bump())
    }
    fn conflict_id(&mut self) -> Uuid {
        Uuid::from_u128(u128::from(self.bump()) | (1u128 << 100))
    }
}

/// Both replicas and the stored sync state of one service, in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replicas {
    pub locals: Vec<LocalState>,
    pub remotes: Vec<RemoteDevice>,
    /// Pending conflicts keyed by a Golioth device alone (`identity`).
    pub remote_pending: Vec<PendingConflict>,
}

impl Replicas {
    pub fn local(&self, id: Uuid) -> Option<&LocalState> {
        self.locals.iter().find(|l| l.device.id == id)
    }

    pub fn remote(&self, id: &str) -> Option<&RemoteDevice> {
        self.remotes.iter().find(|r| r.id == id)
    }

    /// Every pending conflict, device-keyed and Golioth-keyed.
    pub fn pending(&self) -> impl Iterator<Item = &PendingConflict> {
        self.locals
            .iter()
            .flat_map(|l| l.pending.iter())
            .chain(self.remote_pending.iter())
    }

    /// What a run does, in memory: plan every remote as one page, apply it, then plan and apply the
    /// assigned local devices no remote paired with. `listing` says whether `remotes` is every
    /// Golioth device (a partial one deletes and creates nothing in Golioth). Returns both plans.
    pub fn sync_pass(
        &mut self,
        opts: &SyncOptions,
        now: DateTime<Utc>,
        listing: Listing,
        ids: &mut dyn IdSource,
    ) -> (PagePlan, PagePlan) {
        let page = PageInput {
            remotes: self.remotes.clone(),
            locals: self.locals.clone(),
            remote_pending: self.remote_pending.clone(),
        };
        let paged = plan_page(opts, now, &page);
        self.apply(&paged, now, ids);
        let unseen: Vec<LocalState> = self
            .locals
            .iter()
            .filter(|l| match l.external_id() {
                Some(ext) => !page.remotes.iter().any(|r| r.id == ext),
                None => l.assignment.is_some(),
            })
            .map(|l| {
                let mut l = l.clone();
                if !l.is_linked() {
                    let naming = self
                        .remote_pending
                        .iter()
                        .filter(|p| p.names_candidate(l.device.id));
                    l.pending.extend(naming.cloned());
                }
                l
            })
            .collect();
        let rest = plan_local_only(opts, now, &unseen, listing);
        self.apply(&rest, now, ids);
        (paged, rest)
    }

    pub fn apply(&mut self, plan: &PagePlan, now: DateTime<Utc>, ids: &mut dyn IdSource) {
        for device in &plan.devices {
            self.apply_device(device, now, ids);
        }
    }

    /// Apply one device plan as the engine would, with the database trigger's behaviour (every
    /// local update bumps `version` and `updated_at`) and Golioth's (`updatedAt` moves on writes).
    pub fn apply_device(&mut self, plan: &DevicePlan, now: DateTime<Utc>, ids: &mut dyn IdSource) {
        let mut external = plan.external_id.clone();
        match &plan.remote {
            Some(RemoteWrite::Create { desired }) => {
                let id = ids.remote_id();
                self.remotes.push(RemoteDevice {
                    id: id.clone(),
                    desired: desired.normalized(),
                    updated_at: Some(now),
                    reported: RemoteReported::default(),
                });
                external = Some(id);
            }
            Some(RemoteWrite::Update { changes, .. }) => {
                if let Some(r) = self
                    .remotes
                    .iter_mut()
                    .find(|r| Some(&r.id) == plan.external_id.as_ref())
                {
                    changes.apply_to(&mut r.desired);
                    r.updated_at = Some(now);
                }
            }
            Some(RemoteWrite::Delete) => {
                self.remotes
                    .retain(|r| Some(&r.id) != plan.external_id.as_ref());
            }
            None => {}
        }

        let mut device_id = plan.device_id;
        match &plan.local {
            Some(LocalWrite::Create { desired, reported }) => {
                let id = ids.local_id();
                self.locals.push(LocalState {
                    device: LocalDevice {
                        id,
                        desired: desired.normalized(),
                        reported: reported.clone(),
                        version: 1,
                        updated_at: now,
                        deleted_at: None,
                    },
                    assignment: None,
                    pending: Vec::new(),
                });
                device_id = Some(id);
            }
            Some(LocalWrite::Update { changes, .. }) => {
                if let Some(l) = self.local_mut(plan.device_id) {
                    changes.desired.apply_to(&mut l.device.desired);
                    changes.reported.apply_to(&mut l.device.reported);
                    if changes.restore {
                        l.device.deleted_at = None;
                    }
                    touch(&mut l.device, now);
                }
            }
            Some(LocalWrite::SoftDelete { .. }) => {
                if let Some(l) = self.local_mut(plan.device_id) {
                    l.device.deleted_at = Some(now);
                    touch(&mut l.device, now);
                }
            }
            None => {}
        }

        if let Some(write) = &plan.assignment
            && let Some(l) = self.local_mut(device_id)
        {
            match write {
                AssignmentWrite::Link { external_id, base } => {
                    l.assignment = Some(Assignment {
                        external_id: external_id.clone().or_else(|| external.clone()),
                        base: Some(base.clone()),
                        pending_create: None,
                    });
                }
                AssignmentWrite::SetBase { base } => {
                    if let Some(a) = &mut l.assignment {
                        a.base = Some(base.clone());
                    }
                }
                AssignmentWrite::Detach => {
                    if let Some(a) = &mut l.assignment {
                        a.base = None;
                    }
                }
                AssignmentWrite::Delete => l.assignment = None,
            }
        }

        for change in &plan.conflicts {
            match change {
                ConflictChange::Open { conflict } => {
                    let row = pending_row(ids.conflict_id(), conflict);
                    match conflict.device_id.and_then(|id| self.local_mut(Some(id))) {
                        Some(l) => l.pending.push(row),
                        None => self.remote_pending.push(row),
                    }
                }
                ConflictChange::Refresh { id, conflict } => {
                    if let Some(row) = self.pending_mut(*id) {
                        *row = pending_row(*id, conflict);
                    }
                }
                ConflictChange::Supersede { id, .. } => self.drop_pending(*id),
                ConflictChange::AutoResolved { replaces, .. } => {
                    if let Some(id) = replaces {
                        self.drop_pending(*id);
                    }
                }
            }
        }
    }

    /// Carry out a person's resolution of the pending conflict `conflict_id`, as the conflicts API
    /// does in one transaction: write the chosen value locally, move the base, and mark the conflict
    /// resolved (here: drop it from the pending ones). Returns false when there is no such pending
    /// conflict on a local device. The next sync pass carries the choice to Golioth.
    pub fn apply_resolution(
        &mut self,
        conflict_id: Uuid,
        resolution: &Resolution,
        now: DateTime<Utc>,
    ) -> bool {
        let device_id = self
            .pending()
            .find(|p| p.id == conflict_id)
            .and_then(|p| p.device_id);
        let Some(l) = self.local_mut(device_id) else {
            return false;
        };
        l.pending.retain(|p| p.id != conflict_id);
        let merge_base = |a: &mut Assignment, values: &Base| {
            let mut base = a.base.clone().unwrap_or_default();
            for (f, v) in values.iter() {
                base.insert(f, v.clone());
            }
            a.base = Some(base);
        };
        match resolution {
            Resolution::Field {
                field,
                local_value,
                base_value,
                ..
            } => {
                if l.device.desired.get(*field) != *local_value
                    && l.device.desired.set(*field, local_value).is_ok()
                {
                    touch(&mut l.device, now);
                }
                if let Some(a) = &mut l.assignment {
                    let mut one = Base::new();
                    one.insert(*field, base_value.clone());
                    merge_base(a, &one);
                }
            }
            Resolution::Device(DeviceResolution::SetBase { base }) => {
                if let Some(a) = &mut l.assignment {
                    merge_base(a, base);
                }
            }
            Resolution::Device(DeviceResolution::ResetLink) => {
                if let Some(a) = &mut l.assignment {
                    a.external_id = None;
                    a.base = None;
                }
            }
            Resolution::Device(DeviceResolution::Restore { values }) => {
                l.device.deleted_at = None;
                for (f, v) in values.iter() {
                    // Values of a base always type-check against their own field.
                    let _ = l.device.desired.set(f, v);
                }
                touch(&mut l.device, now);
                if let Some(a) = &mut l.assignment {
                    merge_base(a, values);
                }
            }
        }
        true
    }

    fn local_mut(&mut self, id: Option<Uuid>) -> Option<&mut LocalState> {
        let id = id?;
        self.locals.iter_mut().find(|l| l.device.id == id)
    }

    fn pending_mut(&mut self, id: Uuid) -> Option<&mut PendingConflict> {
        self.locals
            .iter_mut()
            .flat_map(|l| l.pending.iter_mut())
            .chain(self.remote_pending.iter_mut())
            .find(|p| p.id == id)
    }

    fn drop_pending(&mut self, id: Uuid) {
        for l in &mut self.locals {
            l.pending.retain(|p| p.id != id);
        }
        self.remote_pending.retain(|p| p.id != id);
    }
}

fn touch(device: &mut LocalDevice, now: DateTime<Utc>) {
    device.version += 1;
    device.updated_at = now;
}

fn pending_row(id: Uuid, c: &Conflict) -> PendingConflict {
    PendingConflict {
        id,
        device_id: c.device_id,
        external_id: c.external_id.clone(),
        field: c.field,
        kind: c.kind,
        base_value: c.base_value.clone(),
        local_value: c.local_value.clone(),
        remote_value: c.remote_value.clone(),
        local_updated_at: c.local_updated_at,
        remote_updated_at: c.remote_updated_at,
    }
}
