//! Carrying resolutions out: field resolutions in chunks of [`APPLY_CHUNK`], one statement each
//! (re-planned when their device changed meanwhile, up to [`MAX_ATTEMPTS`] times); identity and
//! delete-vs-modify resolutions one short transaction each, with the conflict row locked; then
//! the conflict is marked resolved, audited, and a `device_refresh` run queued.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use uuid::Uuid;

use super::plan::{check_pending, desired, pending_conflict, plan_field};
use super::{APPLY_CHUNK, Decision, Failure, MAX_ATTEMPTS, Strategy, resolve_error};
use crate::base::ctx::Ctx;
use crate::base::error::ApiError;
use crate::base::ports::DbError;
use crate::domain::store::{self, conflicts as db};
use crate::domain::sync::{
    Base, Choice, ConflictField, DeviceResolution, Resolution, ResolveError, resolve as decide,
};

pub(super) type Outcomes = HashMap<Uuid, Result<(), Failure>>;

/// Resolve `ids` with one decision. Every id gets its own outcome; field conflicts are written in
/// bulk statements, device-level ones in one short transaction each.
pub(super) async fn resolve_all(
    ctx: &Ctx<'_>,
    org: Uuid,
    user: Uuid,
    ids: &[Uuid],
    decision: &Decision,
) -> Result<Outcomes, ApiError> {
    let mut outcomes: Outcomes = HashMap::new();
    let mut todo: Vec<Uuid> = Vec::new();
    let mut seen = HashSet::new();
    for id in ids {
        if seen.insert(*id) {
            todo.push(*id);
        }
    }
    for _ in 0..MAX_ATTEMPTS {
        if todo.is_empty() {
            break;
        }
        let batch = std::mem::take(&mut todo);
        let ids_ref = &batch;
        let inputs = store::in_org(ctx.db, org, |tx| {
            Box::pin(async move { db::load_for_resolution(tx, org, ids_ref, false).await })
        })
        .await?;
        let found: HashSet<Uuid> = inputs.iter().map(|i| i.conflict.id).collect();
        for id in batch.iter().filter(|id| !found.contains(id)) {
            outcomes.insert(*id, Err(Failure::NotFound));
        }

        let mut writes = Vec::new();
        let mut claimed: HashSet<(Uuid, &'static str)> = HashSet::new();
        for input in &inputs {
            let id = input.conflict.id;
            match ConflictField::parse(&input.conflict.field_name) {
                Some(ConflictField::Field(field)) => {
                    match plan_field(input, field, decision, user) {
                        Ok(w) if !claimed.insert((w.device_id, w.field)) => {
                            outcomes.insert(
                                id,
                                Err(Failure::Conflict(format!(
                                    "another conflict of this request already sets the device's {}",
                                    w.field
                                ))),
                            );
                        }
                        Ok(w) => writes.push(w),
                        Err(f) => {
                            outcomes.insert(id, Err(f));
                        }
                    }
                }
                Some(_) => match resolve_device_level(ctx, org, user, id, decision).await {
                    Err(Failure::DeviceChanged) => todo.push(id),
                    other => {
                        outcomes.insert(id, other);
                    }
                },
                None => {
                    outcomes.insert(
                        id,
                        Err(Failure::Invalid(format!(
                            "unknown conflict field {}",
                            input.conflict.field_name
                        ))),
                    );
                }
            }
        }
        for chunk in writes.chunks(APPLY_CHUNK) {
            apply_chunk(ctx, org, user, chunk, &mut outcomes, &mut todo).await;
        }
    }
    for id in todo {
        outcomes.insert(id, Err(Failure::DeviceChanged));
    }
    Ok(outcomes)
}

/// Apply one chunk of field resolutions in one statement. A database error other than a
/// serialization failure or deadlock (retried) falls back to one statement per conflict, so a
/// poisoned row fails alone.
async fn apply_chunk(
    ctx: &Ctx<'_>,
    org: Uuid,
    user: Uuid,
    chunk: &[db::FieldWrite],
    outcomes: &mut Outcomes,
    retry: &mut Vec<Uuid>,
) {
    let result = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { db::apply_field_resolutions(tx, org, user, chunk).await })
    })
    .await;
    match result {
        Ok(rows) => {
            for (id, outcome) in rows {
                match outcome {
                    db::FieldOutcome::Resolved => {
                        outcomes.insert(id, Ok(()));
                    }
                    db::FieldOutcome::NotPending => {
                        outcomes.insert(
                            id,
                            Err(Failure::NotPending(
                                "resolved, superseded or unlinked meanwhile".into(),
                            )),
                        );
                    }
                    db::FieldOutcome::DeviceChanged => retry.push(id),
                }
            }
        }
        Err(e) if e.is_serialization_failure() => {
            retry.extend(chunk.iter().map(|w| w.conflict_id));
        }
        Err(e) if chunk.len() > 1 => {
            crate::base::log::warn(
                "bulk conflict resolution failed; retrying one by one",
                json!({"organization_id": org, "conflicts": chunk.len(), "cause": e.to_string()}),
            );
            for one in chunk.chunks(1) {
                Box::pin(apply_chunk(ctx, org, user, one, outcomes, retry)).await;
            }
        }
        Err(e) => {
            for w in chunk {
                outcomes.insert(
                    w.conflict_id,
                    Err(Failure::Db(DbError::Decode(e.to_string()))),
                );
            }
        }
    }
}

/// Resolve one identity or delete-vs-modify conflict in its own transaction, with the conflict
/// row locked. `Err(Failure::DeviceChanged)` asks the caller to try again.
async fn resolve_device_level(
    ctx: &Ctx<'_>,
    org: Uuid,
    user: Uuid,
    id: Uuid,
    decision: &Decision,
) -> Result<(), Failure> {
    store::in_org(ctx.db, org, |tx| {
        Box::pin(async move {
            let input = db::load_for_resolution(tx, org, &[id], true)
                .await?
                .into_iter()
                .next()
                .ok_or(Failure::NotFound)?;
            check_pending(&input.conflict)?;
            match ConflictField::parse(&input.conflict.field_name) {
                Some(ConflictField::Identity) => {
                    resolve_identity(tx, org, user, &input, decision).await
                }
                _ => resolve_deletion(tx, org, user, &input, decision).await,
            }
        })
    })
    .await
}

/// Link the Golioth device of an identity conflict to a chosen candidate, or to a new device.
async fn resolve_identity(
    tx: &dyn crate::base::ports::Db,
    org: Uuid,
    user: Uuid,
    input: &db::ResolveInput,
    decision: &Decision,
) -> Result<(), Failure> {
    let c = &input.conflict;
    let external = c
        .external_device_id
        .clone()
        .ok_or_else(|| Failure::Conflict("the conflict names no Golioth device".into()))?;
    let remote = c.remote_value.clone().unwrap_or(Value::Null);
    let (device, created) = match decision.strategy {
        Strategy::Link => {
            let chosen = decision
                .device_id
                .ok_or_else(|| Failure::Invalid("link needs device_id".into()))?;
            let chosen_str = chosen.to_string();
            let is_candidate = c
                .local_value
                .as_ref()
                .and_then(Value::as_array)
                .is_some_and(|items| {
                    items
                        .iter()
                        .any(|i| i.get("id").and_then(Value::as_str) == Some(chosen_str.as_str()))
                });
            if !is_candidate {
                return Err(Failure::Invalid(
                    "device_id is not one of the local candidates this conflict lists".into(),
                ));
            }
            if !db::live_device_exists(tx, org, chosen).await? {
                return Err(Failure::Conflict(
                    "the chosen device has been deleted".into(),
                ));
            }
            (chosen, false)
        }
        Strategy::Create => {
            let name = remote
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map_or_else(|| format!("golioth-{external}"), str::to_owned);
            let hardware_ids: Vec<String> = remote
                .get("hardware_ids")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (db::create_device(tx, org, &name, hardware_ids).await?, true)
        }
        _ => {
            return Err(Failure::Invalid(
                "an identity conflict is resolved with link (and device_id) or create".into(),
            ));
        }
    };
    match db::link(tx, org, c.service_id, device, &external).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(Failure::Conflict(
                "the chosen device is already linked to another Golioth device".into(),
            ));
        }
        Err(e) if e.is_unique_violation() => {
            return Err(Failure::Conflict(
                "another device is already linked to this Golioth device".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let resolved = json!({"device_id": device, "external_device_id": external, "created": created});
    let change = json!({"before": {"candidates": c.local_value, "remote": remote},
                        "after": resolved});
    let out = Outcome {
        resolved,
        linked_device: Some(device),
        external: Some(&external),
        change,
    };
    finish(tx, org, user, input, decision, out).await
}

/// Carry out a delete-vs-modify resolution as the sync core's [`DeviceResolution`] says.
async fn resolve_deletion(
    tx: &dyn crate::base::ports::Db,
    org: Uuid,
    user: Uuid,
    input: &db::ResolveInput,
    decision: &Decision,
) -> Result<(), Failure> {
    let c = &input.conflict;
    let choice = match decision.strategy {
        Strategy::Local => Choice::Local,
        Strategy::Remote => Choice::Remote,
        _ => {
            return Err(Failure::Invalid(
                "a delete_vs_modify conflict is resolved with local or remote".into(),
            ));
        }
    };
    let pending = pending_conflict(c)?;
    let Resolution::Device(action) = decide(&pending, choice).map_err(resolve_error)? else {
        return Err(Failure::Invalid("not a device conflict".into()));
    };
    let (Some(device_id), Some(device)) = (c.device_id, input.device.as_ref()) else {
        return Err(Failure::Conflict(
            "the conflict's device no longer exists".into(),
        ));
    };
    let Some(assignment) = input.assignment.as_ref() else {
        return Err(Failure::Conflict(
            "the device is no longer assigned to the service".into(),
        ));
    };
    // The surviving local side must still be what the conflict recorded.
    let remote_gone = c.remote_value.is_none();
    if remote_gone {
        if device.deleted {
            return Err(Failure::Stale("deletion state".into()));
        }
        if let Some(recorded) = &c.local_value {
            let recorded = Base::from_json(recorded)
                .map_err(|e| resolve_error(ResolveError::InvalidValue(e)))?;
            let now = desired(device)?;
            if let Some((field, _)) = recorded.iter().find(|(f, v)| now.get(*f) != **v) {
                return Err(Failure::Stale(field.as_str().to_owned()));
            }
        }
    } else if !device.deleted {
        return Err(Failure::Stale("deletion state".into()));
    }
    let mut external = assignment.external_device_id.clone();
    match &action {
        DeviceResolution::SetBase { base } => {
            db::set_assignment_base(
                tx,
                org,
                c.service_id,
                device_id,
                Some(base.to_json()),
                false,
            )
            .await?;
        }
        DeviceResolution::ResetLink => {
            db::set_assignment_base(tx, org, c.service_id, device_id, None, true).await?;
            external = None;
        }
        DeviceResolution::Restore { values } => {
            if !db::restore_device(tx, org, device_id, device.version, &values.to_json()).await? {
                return Err(Failure::DeviceChanged);
            }
            db::set_assignment_base(
                tx,
                org,
                c.service_id,
                device_id,
                Some(values.to_json()),
                false,
            )
            .await?;
        }
    }
    let resolved = serde_json::to_value(&action).unwrap_or(Value::Null);
    let change = json!({"before": {"local": c.local_value, "remote": c.remote_value,
                                   "base": c.base_value},
                        "after": resolved});
    let out = Outcome {
        resolved,
        linked_device: None,
        external: external.as_deref(),
        change,
    };
    finish(tx, org, user, input, decision, out).await
}

/// What a device-level resolution did, for the conflict row, the audit and the refresh run.
struct Outcome<'a> {
    /// `resolved_value`.
    resolved: Value,
    /// The device an identity conflict was linked to (fills the conflict's `device_id`).
    linked_device: Option<Uuid>,
    /// The Golioth id the refresh run names (`None` after a link was reset).
    external: Option<&'a str>,
    /// Before/after values for the audit row.
    change: Value,
}

/// Mark a device-level conflict resolved, audit it and queue its `device_refresh` run.
async fn finish(
    tx: &dyn crate::base::ports::Db,
    org: Uuid,
    user: Uuid,
    input: &db::ResolveInput,
    decision: &Decision,
    out: Outcome<'_>,
) -> Result<(), Failure> {
    let Outcome {
        resolved,
        linked_device,
        external,
        change,
    } = out;
    let c = &input.conflict;
    let strategy = decision.strategy.as_str();
    if !db::mark_resolved(tx, org, c.id, user, strategy, resolved, linked_device).await? {
        return Err(Failure::NotPending("resolved meanwhile".into()));
    }
    let device = linked_device.or(c.device_id);
    let mut details = json!({
        "conflict_id": c.id,
        "conflict_type": c.conflict_type,
        "field": c.field_name,
        "resolution": strategy,
        "resolved_by": user,
    });
    if let (Some(d), Value::Object(extra)) = (details.as_object_mut(), change) {
        d.extend(extra);
    }
    db::audit(tx, org, c.service_id, device, details).await?;
    if let Some(device) = device {
        db::queue_refresh(tx, org, c.service_id, external, device, user).await?;
    }
    Ok(())
}
