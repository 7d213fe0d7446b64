//! Property tests of the sync core's promises (DESIGN §4, §10): no silent overwrite, no false
//! conflict, convergence and idempotence for a linked device under every direction and policy, and
//! for whole small worlds: no duplicate created, nothing deleted on a partial listing, a second pass
//! doing nothing.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use shared::domain::sync::*;
use uuid::Uuid;

const T0: i64 = 1_700_000_000;
const NOW: i64 = 1000;
const CASES: u32 = 3000;

fn config() -> ProptestConfig {
    // Failures print the minimal input; they are turned into scenario rows, not stored files.
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(T0 + s, 0).unwrap()
}

fn pick<T: Clone>(bits: u8, items: &[T]) -> Vec<T> {
    items
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, x)| x.clone())
        .collect()
}

/// Small domains, so equal values and equal concurrent changes happen often.
fn arb_desired() -> impl Strategy<Value = DesiredFields> {
    (
        0..3usize,
        any::<bool>(),
        0u8..8,
        0u8..8,
        0..3usize,
        0..3usize,
    )
        .prop_map(|(n, enabled, tags, hw, bp, cohort)| DesiredFields {
            name: ["a", "b", "c"][n].into(),
            enabled,
            tags: pick(tags, &["t1", "t2", "t3"].map(String::from)),
            hardware_ids: pick(hw, &["h1", "h2", "h3"].map(String::from)),
            blueprint_id: [None, Some("x".into()), Some("y".into())][bp].clone(),
            cohort_id: [None, Some("c1".into()), Some("".into())][cohort].clone(),
        })
}

fn arb_direction() -> impl Strategy<Value = Direction> {
    prop_oneof![
        2 => Just(Direction::Bidirectional),
        1 => Just(Direction::Import),
        1 => Just(Direction::Export)
    ]
}

fn arb_policy() -> impl Strategy<Value = ConflictPolicy> {
    prop_oneof![
        Just(ConflictPolicy::Manual),
        Just(ConflictPolicy::LocalWins),
        Just(ConflictPolicy::RemoteWins),
        Just(ConflictPolicy::NewestWins)
    ]
}

fn arb_fields() -> impl Strategy<Value = SyncFields> {
    prop_oneof![
        2 => Just(SyncFields::default()),
        1 => (0u16..2048).prop_map(|b| SyncFields {
            name: b & 1 != 0,
            enabled: b & 2 != 0,
            tags: b & 4 != 0,
            hardware_ids: b & 8 != 0,
            blueprint: b & 16 != 0,
            cohort: b & 32 != 0,
            status: b & 64 != 0,
            firmware: b & 128 != 0,
            battery: b & 256 != 0,
            location: b & 512 != 0,
            signal: b & 1024 != 0,
        })
    ]
}

/// Take field `i` from `changed` when bit `i` is set, else from `base`.
fn mix(base: &DesiredFields, changed: &DesiredFields, mask: u8) -> DesiredFields {
    let mut out = base.clone();
    for (i, f) in Field::ALL.into_iter().enumerate() {
        if mask & (1 << i) != 0 {
            out.set(f, &changed.get(f)).unwrap();
        }
    }
    out
}

#[derive(Clone, Debug)]
struct PairCase {
    opts: SyncOptions,
    base: Base,
    local: DesiredFields,
    remote: DesiredFields,
    local_at: i64,
    remote_at: Option<i64>,
    /// A pending conflict on one field, with the values it was stored with.
    pending: Option<(Field, Value, Value, Value)>,
    local_reported: Reported,
    remote_reported: RemoteReported,
}

fn arb_reported() -> impl Strategy<Value = (Reported, RemoteReported)> {
    (
        prop::option::of(0i64..1000),
        prop::option::of(0i64..1000),
        prop::option::of(0i64..1000),
        prop::option::of(0u8..3),
        prop::option::of(0u8..3),
    )
        .prop_map(|(seen, report, top, fw_local, bat)| {
            let local = Reported {
                last_seen: seen.map(t),
                firmware_version: fw_local.map(|v| format!("1.{v}")),
                battery_level: bat.map(f64::from),
                ..Reported::default()
            };
            let mut remote = RemoteReported {
                metadata_last_report: report.map(t),
                last_report: top.map(t),
                ..RemoteReported::default()
            };
            remote.firmware.insert("main".into(), "1.1".into());
            remote.state = Some(serde_json::json!({"battery": 1.0}));
            (local, remote)
        })
}

prop_compose! {
    fn arb_pair()(
        direction in arb_direction(),
        policy in arb_policy(),
        fields in arb_fields(),
        base in arb_desired(),
        base_mask in prop_oneof![3 => Just(0x3fu8), 1 => 0u8..64],
        local in arb_desired(),
        local_mask in 0u8..64,
        remote in arb_desired(),
        remote_mask in 0u8..64,
        local_at in 0i64..3,
        remote_at in prop::option::of(0i64..3),
        pending in prop::option::of((0usize..6, any::<bool>(), arb_desired(), arb_desired(), arb_desired())),
        (local_reported, remote_reported) in arb_reported(),
    ) -> PairCase {
        let local = mix(&base, &local, local_mask);
        let remote = mix(&base, &remote, remote_mask);
        let base_fields = Field::ALL.into_iter().enumerate().filter(|(i, _)| base_mask & (1 << i) != 0).map(|(_, f)| f);
        let stored = Base::from_desired(&base, base_fields);
        let pending = pending.map(|(i, current, b, l, r)| {
            let f = Field::ALL[i];
            if current {
                (f, stored.get(f).cloned().unwrap_or(Value::Null), local.get(f), remote.get(f))
            } else {
                (f, b.get(f), l.get(f), r.get(f))
            }
        });
        let opts = SyncOptions {
            direction,
            policy,
            fields,
            state_paths: StatePaths { battery: Some("battery".into()), ..StatePaths::default() },
            ..SyncOptions::default()
        };
        PairCase {
            opts, base: stored, local, remote, local_at: local_at * 100, remote_at: remote_at.map(|x| x * 100),
            pending, local_reported, remote_reported,
        }
    }
}

fn pair_replicas(c: &PairCase) -> Replicas {
    let id = Uuid::from_u128(1);
    let pending = c
        .pending
        .iter()
        .map(|(f, b, l, r)| PendingConflict {
            id: Uuid::from_u128(99),
            device_id: Some(id),
            external_id: Some("R1".into()),
            field: ConflictField::Field(*f),
            kind: if c.base.get(*f).is_some() {
                ConflictKind::ConcurrentModification
            } else {
                ConflictKind::FirstSyncMismatch
            },
            base_value: c.base.get(*f).map(|_| b.to_json()),
            local_value: Some(l.to_json()),
            remote_value: Some(r.to_json()),
            local_updated_at: None,
            remote_updated_at: None,
        })
        .collect();
    Replicas {
        locals: vec![LocalState {
            device: LocalDevice {
                id,
                desired: c.local.clone(),
                reported: c.local_reported.clone(),
                version: 7,
                updated_at: t(c.local_at),
                deleted_at: None,
            },
            assignment: Some(Assignment {
                external_id: Some("R1".into()),
                base: Some(c.base.clone()),
                pending_create: None,
            }),
            pending,
        }],
        remotes: vec![RemoteDevice {
            id: "R1".into(),
            desired: c.remote.clone(),
            updated_at: c.remote_at.map(t),
            reported: c.remote_reported.clone(),
        }],
        remote_pending: Vec::new(),
    }
}

/// The conflict records (not supersessions) a plan makes for `field`.
fn records(plan: &DevicePlan, field: Field) -> Vec<&Conflict> {
    plan.conflicts
        .iter()
        .filter_map(|c| match c {
            ConflictChange::Open { conflict }
            | ConflictChange::Refresh { conflict, .. }
            | ConflictChange::AutoResolved { conflict, .. } => Some(conflict),
            ConflictChange::Supersede { .. } => None,
        })
        .filter(|c| c.field == ConflictField::Field(field))
        .collect()
}

fn pending_on(r: &Replicas, field: Field) -> Option<&PendingConflict> {
    r.pending().find(|p| p.field == ConflictField::Field(field))
}

struct Pass {
    before: Replicas,
    after: Replicas,
    plan: DevicePlan,
    again: (PagePlan, PagePlan),
}

fn run_pair(c: &PairCase) -> Pass {
    let before = pair_replicas(c);
    let mut after = before.clone();
    let mut ids = SequentialIds::starting_at(1000);
    let (paged, rest) = after.sync_pass(&c.opts, t(NOW), Listing::Complete, &mut ids);
    assert!(
        rest.is_empty(),
        "a present pair plans nothing in the local-only pass"
    );
    let plan = paged.devices[0].clone();
    let mut again_replicas = after.clone();
    let again = again_replicas.sync_pass(&c.opts, t(NOW), Listing::Complete, &mut ids);
    Pass {
        before,
        after,
        plan,
        again,
    }
}

/// Changed on both sides since the base, to different values: the only real conflict.
fn concurrent(c: &PairCase, f: Field) -> bool {
    let (b, l, r) = (c.base.get(f), c.local.get(f), c.remote.get(f));
    c.opts.direction == Direction::Bidirectional
        && !f.is_set()
        && l != r
        && b != Some(&l)
        && b != Some(&r)
}

proptest! {
    #![proptest_config(config())]

    /// Every pair of differing concurrent changes yields a conflict record holding both values;
    /// a one-way run that replaces an edit logs the value it replaced.
    #[test]
    fn no_silent_overwrite(c in arb_pair()) {
        let pass = run_pair(&c);
        for f in c.opts.fields.desired() {
            let (b, l, r) = (c.base.get(f), c.local.get(f), c.remote.get(f));
            if concurrent(&c, f) {
                let recs = records(&pass.plan, f);
                let stored = pending_on(&pass.after, f);
                prop_assert!(!recs.is_empty() || stored.is_some(), "{f}: concurrent change without a conflict");
                for rec in recs {
                    prop_assert_eq!(rec.local_value.clone(), Some(l.to_json()));
                    prop_assert_eq!(rec.remote_value.clone(), Some(r.to_json()));
                }
                if let Some(p) = stored {
                    prop_assert_eq!(p.local_value.clone(), Some(l.to_json()));
                    prop_assert_eq!(p.remote_value.clone(), Some(r.to_json()));
                }
            }
            let overwritten = |side: Side, old: &Value| {
                pass.plan.log.iter().any(|e| {
                    e.operation == LogOperation::ValueOverwritten
                        && e.side == Some(side)
                        && e.changes.iter().any(|ch| ch.field == f.as_str() && ch.from == old.to_json())
                })
            };
            let after_local = pass.after.locals[0].device.desired.get(f);
            let after_remote = pass.after.remotes[0].desired.get(f);
            // A side's own edit (value differing from the base) that the plan replaced.
            let lost = |old: &Value, new: &Value| old != new && b != Some(old);
            match c.opts.direction {
                Direction::Import if lost(&l, &after_local) => prop_assert!(overwritten(Side::Local, &l), "{f}: import overwrote {l:?} silently"),
                Direction::Export if lost(&r, &after_remote) => prop_assert!(overwritten(Side::Remote, &r), "{f}: export overwrote {r:?} silently"),
                Direction::Bidirectional if f.is_set() => {
                    // Element-wise: every addition survives, every removal holds.
                    let bs = b.map(|v| v.as_set().to_vec()).unwrap_or_default();
                    for e in l.as_set().iter().chain(r.as_set()).filter(|e| !bs.contains(e)) {
                        prop_assert!(after_local.as_set().contains(e), "{f}: added {e} lost");
                    }
                    for e in bs.iter().filter(|e| !l.as_set().contains(e) || !r.as_set().contains(e)) {
                        prop_assert!(!after_local.as_set().contains(e), "{f}: removed {e} came back");
                    }
                }
                Direction::Bidirectional => {
                    let auto = records(&pass.plan, f).iter().any(|_| true);
                    if lost(&l, &after_local) {
                        prop_assert!(auto, "{f}: local edit {l:?} replaced without a record");
                    }
                    if lost(&r, &after_remote) {
                        prop_assert!(auto, "{f}: remote edit {r:?} replaced without a record");
                    }
                }
                _ => {}
            }
        }
    }

    /// One-sided, equal, set and one-way changes never produce or keep a conflict.
    #[test]
    fn no_false_conflict(c in arb_pair()) {
        let pass = run_pair(&c);
        for f in c.opts.fields.desired() {
            if !concurrent(&c, f) {
                prop_assert!(records(&pass.plan, f).is_empty(), "{f}: invented conflict {:?}", pass.plan.conflicts);
                prop_assert!(pending_on(&pass.after, f).is_none(), "{f}: stale conflict left pending");
            }
        }
    }

    /// After applying the plan, every synced field without a pending conflict holds one value on
    /// both sides and in the base; a frozen field is untouched on both sides and in the base.
    #[test]
    fn convergence(c in arb_pair()) {
        let pass = run_pair(&c);
        let local = &pass.after.locals[0];
        let remote = &pass.after.remotes[0];
        let base = local.assignment.as_ref().and_then(|a| a.base.clone()).unwrap_or_default();
        for f in c.opts.fields.desired() {
            let (l, r) = (local.device.desired.get(f), remote.desired.get(f));
            if pending_on(&pass.after, f).is_some() {
                prop_assert_eq!(&l, &c.local.get(f));
                prop_assert_eq!(&r, &c.remote.get(f));
                prop_assert_eq!(base.get(f), c.base.get(f));
            } else {
                prop_assert_eq!(&l, &r, "{} differs", f);
                prop_assert_eq!(base.get(f), Some(&l), "{} base", f);
            }
        }
        // Reported fields: last seen never moves backwards.
        let old_seen = pass.before.locals[0].device.reported.last_seen;
        prop_assert!(local.device.reported.last_seen >= old_seen);
    }

    /// Planning again right after applying yields no action at all.
    #[test]
    fn idempotence(c in arb_pair()) {
        let pass = run_pair(&c);
        prop_assert!(pass.again.0.is_empty() && pass.again.1.is_empty(), "second pass: {:?}", pass.again);
    }
}

// ---------------------------------------------------------------------------------------------
// Small worlds: matching, creations, deletions.

#[derive(Clone, Debug)]
struct LocalSpec {
    desired: DesiredFields,
    /// 0: not assigned, 1: assigned, 2: linked to the remote of the same index.
    assignment: u8,
    base_from_remote: bool,
    deleted: bool,
}

#[derive(Clone, Debug)]
struct WorldCase {
    opts: SyncOptions,
    locals: Vec<LocalSpec>,
    remotes: Vec<(DesiredFields, bool)>,
}

fn arb_world() -> impl Strategy<Value = WorldCase> {
    let local = (
        arb_desired(),
        0u8..3,
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(desired, assignment, base_from_remote, deleted)| LocalSpec {
                desired,
                assignment,
                base_from_remote,
                deleted,
            },
        );
    (
        arb_direction(),
        arb_policy(),
        any::<bool>(),
        0u8..3,
        any::<bool>(),
        prop::collection::vec(local, 0..5),
        prop::collection::vec((arb_desired(), prop::bool::weighted(0.8)), 0..5),
    )
        .prop_map(
            |(direction, policy, by_name, on_remote, on_local, locals, remotes)| WorldCase {
                opts: SyncOptions {
                    direction,
                    policy,
                    match_by_name: by_name,
                    on_remote_delete: [
                        OnRemoteDelete::SoftDeleteLocal,
                        OnRemoteDelete::Unlink,
                        OnRemoteDelete::Ignore,
                    ][usize::from(on_remote)],
                    on_local_delete: if on_local {
                        OnLocalDelete::DeleteRemote
                    } else {
                        OnLocalDelete::Unlink
                    },
                    ..SyncOptions::default()
                },
                locals,
                remotes,
            },
        )
}

fn world_replicas(c: &WorldCase) -> Replicas {
    let mut r = Replicas::default();
    for (i, (desired, present)) in c.remotes.iter().enumerate() {
        if *present {
            r.remotes.push(RemoteDevice {
                id: format!("R{i}"),
                desired: desired.clone(),
                updated_at: Some(t(100)),
                reported: RemoteReported::default(),
            });
        }
    }
    for (i, l) in c.locals.iter().enumerate() {
        let remote = c.remotes.get(i);
        let assignment = match (l.assignment, remote) {
            (0, _) => None,
            (2, Some((rd, _))) => Some(Assignment {
                external_id: Some(format!("R{i}")),
                base: Some(Base::from_desired(
                    if l.base_from_remote { rd } else { &l.desired },
                    Field::ALL,
                )),
                pending_create: None,
            }),
            _ => Some(Assignment::default()),
        };
        r.locals.push(LocalState {
            device: LocalDevice {
                id: Uuid::from_u128(i as u128 + 1),
                desired: l.desired.clone(),
                reported: Reported::default(),
                version: 1,
                updated_at: t(200),
                deleted_at: l.deleted.then(|| t(300)),
            },
            assignment,
            pending: Vec::new(),
        });
    }
    r
}

proptest! {
    #![proptest_config(config())]

    /// A complete pass, applied, then a second pass: the second plans nothing, and every linked
    /// live pair without a pending conflict agrees on every field.
    #[test]
    fn world_idempotence_and_convergence(c in arb_world()) {
        let mut r = world_replicas(&c);
        let mut ids = SequentialIds::starting_at(1000);
        r.sync_pass(&c.opts, t(NOW), Listing::Complete, &mut ids);
        let settled = r.clone();
        let (a, b) = r.sync_pass(&c.opts, t(NOW), Listing::Complete, &mut ids);
        prop_assert!(a.is_empty() && b.is_empty(), "second pass: {:?} {:?}", a, b);
        for l in settled.locals.iter().filter(|l| !l.is_deleted() && l.pending.is_empty()) {
            let Some(a) = &l.assignment else { continue };
            let (Some(ext), Some(base)) = (&a.external_id, &a.base) else { continue };
            let Some(remote) = settled.remote(ext) else { continue };
            for f in Field::ALL {
                prop_assert_eq!(l.device.desired.get(f), remote.desired.get(f));
                prop_assert_eq!(base.get(f), Some(&remote.desired.get(f)));
            }
        }
        // Each Golioth device has at most one local twin.
        let mut links: Vec<&str> = settled.locals.iter().filter_map(|l| l.external_id()).collect();
        let n = links.len();
        links.sort();
        links.dedup();
        prop_assert_eq!(links.len(), n);
    }

    /// A local device is created only for a Golioth device no free (live, unlinked) local device
    /// could be: same hardware id, or same name when matching by name.
    #[test]
    fn never_a_duplicate(c in arb_world()) {
        let before = world_replicas(&c);
        let mut r = before.clone();
        let mut ids = SequentialIds::starting_at(1000);
        let (paged, _) = r.sync_pass(&c.opts, t(NOW), Listing::Complete, &mut ids);
        for d in paged.devices.iter().filter(|d| matches!(d.local, Some(LocalWrite::Create { .. }))) {
            let remote = before.remote(d.external_id.as_deref().unwrap()).unwrap();
            for l in before.locals.iter().filter(|l| !l.is_deleted() && !l.is_linked()) {
                let shares_hw = l.device.desired.hardware_ids.iter().any(|h| remote.desired.hardware_ids.contains(h));
                prop_assert!(!shares_hw, "created a local twin of {} next to {}", remote.id, l.device.id);
                let same_name = c.opts.match_by_name && l.device.desired.name == remote.desired.name;
                prop_assert!(!same_name, "created a local namesake of {}", remote.id);
            }
        }
    }

    /// A partial listing never deletes, unlinks or creates anything in Golioth.
    #[test]
    fn partial_listing_deletes_nothing(c in arb_world(), hide in 0u8..32) {
        let mut r = world_replicas(&c);
        let hidden: Vec<String> = r.remotes.iter().enumerate().filter(|(i, _)| hide & (1 << i) != 0).map(|(_, x)| x.id.clone()).collect();
        r.remotes.retain(|x| !hidden.contains(&x.id));
        let mut ids = SequentialIds::starting_at(1000);
        let (paged, rest) = r.sync_pass(&c.opts, t(NOW), Listing::Partial, &mut ids);
        prop_assert!(rest.is_empty(), "local-only pass after a partial listing: {:?}", rest);
        for d in &paged.devices {
            let deletes = matches!(d.local, Some(LocalWrite::SoftDelete { .. }));
            prop_assert!(!deletes, "soft delete on a partial listing: {:?}", d);
            let creates = matches!(d.remote, Some(RemoteWrite::Create { .. }));
            prop_assert!(!creates, "Golioth creation on a partial listing: {:?}", d);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// A deletion on either side never discards an edit silently: the surviving side was unchanged
    /// since the base, or a policy settled a delete-vs-modify conflict and recorded it.
    #[test]
    fn deletions_never_discard_edits(c in arb_world()) {
        let before = world_replicas(&c);
        let mut r = before.clone();
        let mut ids = SequentialIds::starting_at(1000);
        let (paged, rest) = r.sync_pass(&c.opts, t(NOW), Listing::Complete, &mut ids);
        for d in paged.devices.iter().chain(&rest.devices) {
            let recorded = d.conflicts.iter().any(|ch| matches!(ch,
                ConflictChange::AutoResolved { conflict, .. } if conflict.kind == ConflictKind::DeleteVsModify));
            let local = d.device_id.and_then(|id| before.local(id));
            let base = local.and_then(|l| l.assignment.as_ref()).and_then(|a| a.base.clone());
            let unchanged = |desired: &DesiredFields| {
                base.as_ref().is_some_and(|b| c.opts.fields.desired().all(|f| b.get(f) == Some(&desired.get(f))))
            };
            if matches!(d.local, Some(LocalWrite::SoftDelete { .. })) {
                let l = local.unwrap();
                prop_assert!(recorded || unchanged(&l.device.desired), "deleted edited local {:?}", l);
            }
            if matches!(d.remote, Some(RemoteWrite::Delete)) {
                let remote = before.remote(d.external_id.as_deref().unwrap()).unwrap();
                prop_assert!(recorded || unchanged(&remote.desired), "deleted edited remote {:?}", remote);
            }
        }
    }

    /// Any conflict a manual bidirectional pass leaves pending, resolved with any choice, ends with
    /// both sides and the base holding the chosen value after the next pass, nothing pending.
    #[test]
    fn resolution_converges_on_the_choice(c in arb_pair(), choice in 0u8..3, custom in arb_desired()) {
        let mut c = c;
        c.opts.direction = Direction::Bidirectional;
        c.opts.policy = ConflictPolicy::Manual;
        let mut r = run_pair(&c).after;
        let mut chosen = Vec::new();
        let pending: Vec<PendingConflict> = r.pending().cloned().collect();
        for p in &pending {
            let ConflictField::Field(f) = p.field else { continue };
            if !c.opts.fields.syncs(f) {
                continue;
            }
            let (pick, value) = match choice {
                0 => (Choice::Local, Value::from_json(f, p.local_value.as_ref().unwrap()).unwrap()),
                1 => (Choice::Remote, Value::from_json(f, p.remote_value.as_ref().unwrap()).unwrap()),
                _ => (Choice::Custom(custom.get(f).to_json()), custom.get(f)),
            };
            let resolution = resolve(p, pick).unwrap();
            prop_assert!(r.apply_resolution(p.id, &resolution, t(NOW + 10)));
            chosen.push((f, value));
        }
        let mut ids = SequentialIds::starting_at(5000);
        r.sync_pass(&c.opts, t(NOW + 20), Listing::Complete, &mut ids);
        let local = &r.locals[0];
        let base = local.assignment.as_ref().and_then(|a| a.base.clone()).unwrap();
        for (f, v) in chosen {
            prop_assert_eq!(local.device.desired.get(f), v.clone());
            prop_assert_eq!(r.remotes[0].desired.get(f), v.clone());
            prop_assert_eq!(base.get(f), Some(&v));
            prop_assert!(pending_on(&r, f).is_none());
        }
        let (a, b) = r.sync_pass(&c.opts, t(NOW + 20), Listing::Complete, &mut ids);
        prop_assert!(a.is_empty() && b.is_empty());
    }
}
