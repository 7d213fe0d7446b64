//! Planning a resolution (pure): the sync core decides the values; this checks that the conflict
//! still describes the device as it is now (no edit since detection), that it is still pending
//! and linked, and turns a field resolution into the store's conditional write; [`preview`] says
//! what a resolution would do without writing (the bulk dry run).

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{Decision, Failure, resolve_error};
use crate::base::ports::DbError;
use crate::domain::store::conflicts as db;
use crate::domain::sync::{
    ConflictField, ConflictKind, DesiredFields, Field, PendingConflict, Resolution, ResolveError,
    Value as FieldValue, resolve as decide,
};

fn parse_ts(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

pub(super) fn pending_conflict(c: &db::ConflictRow) -> Result<PendingConflict, Failure> {
    let field = ConflictField::parse(&c.field_name)
        .ok_or_else(|| Failure::Invalid(format!("unknown conflict field {}", c.field_name)))?;
    let kind: ConflictKind = serde_json::from_value(json!(c.conflict_type))
        .map_err(|_| Failure::Invalid(format!("unknown conflict type {}", c.conflict_type)))?;
    Ok(PendingConflict {
        id: c.id,
        device_id: c.device_id,
        external_id: c.external_device_id.clone(),
        field,
        kind,
        base_value: c.base_value.clone(),
        local_value: c.local_value.clone(),
        remote_value: c.remote_value.clone(),
        local_updated_at: parse_ts(&c.local_updated_at),
        remote_updated_at: parse_ts(&c.remote_updated_at),
    })
}

pub(super) fn desired(device: &db::DeviceState) -> Result<DesiredFields, Failure> {
    serde_json::from_value(device.desired.clone())
        .map_err(|e| Failure::Db(DbError::Decode(format!("device desired fields: {e}"))))
}

pub(super) fn check_pending(c: &db::ConflictRow) -> Result<(), Failure> {
    if c.resolution_status == "pending" {
        Ok(())
    } else {
        Err(Failure::NotPending(c.resolution_status.clone()))
    }
}

/// Plan the resolution of a field conflict: the sync core decides the values; this checks that
/// the conflict still describes the device (no edit since detection) and that it is still linked.
pub(super) fn plan_field(
    input: &db::ResolveInput,
    field: Field,
    decision: &Decision,
    user: Uuid,
) -> Result<db::FieldWrite, Failure> {
    let c = &input.conflict;
    check_pending(c)?;
    let choice = decision.choice().ok_or_else(|| {
        Failure::Invalid(format!(
            "a {} conflict is resolved with local, remote or custom",
            c.conflict_type
        ))
    })?;
    let pending = pending_conflict(c)?;
    let Resolution::Field {
        local_value,
        base_value,
        ..
    } = decide(&pending, choice).map_err(resolve_error)?
    else {
        return Err(Failure::Invalid("not a field conflict".into()));
    };
    let (Some(device_id), Some(device)) = (c.device_id, input.device.as_ref()) else {
        return Err(Failure::Conflict(
            "the conflict's device no longer exists".into(),
        ));
    };
    if device.deleted {
        return Err(Failure::Conflict("the device has been deleted".into()));
    }
    let Some(assignment) = input.assignment.as_ref() else {
        return Err(Failure::Conflict(
            "the device is no longer assigned to the service".into(),
        ));
    };
    let current = desired(device)?.get(field);
    if let Some(recorded) = &c.local_value {
        let recorded = FieldValue::from_json(field, recorded)
            .map_err(|e| resolve_error(ResolveError::InvalidValue(e)))?;
        if recorded != current {
            return Err(Failure::Stale(field.as_str().to_owned()));
        }
    }
    let details = json!({
        "conflict_id": c.id,
        "conflict_type": c.conflict_type,
        "field": field.as_str(),
        "resolution": decision.strategy.as_str(),
        "resolved_by": user,
        "before": {
            "local": current.to_json(),
            "remote": c.remote_value,
            "base": c.base_value,
        },
        "after": {
            "local": local_value.to_json(),
            "base": base_value.to_json(),
        },
    });
    Ok(db::FieldWrite {
        conflict_id: c.id,
        service_id: c.service_id,
        device_id,
        expected_version: device.version,
        field: field.as_str(),
        local_value: local_value.to_json(),
        base_value: base_value.to_json(),
        strategy: decision.strategy.as_str(),
        external_id: assignment
            .external_device_id
            .clone()
            .or_else(|| c.external_device_id.clone()),
        details,
    })
}

/// What resolving one conflict with `decision` would do, without writing (the bulk preview,
/// `dry_run`): the same checks as the real resolution, and for a field conflict the values both
/// sides hold now and the one both will hold. A device-level conflict names its action.
pub(super) fn preview(
    input: &db::ResolveInput,
    decision: &Decision,
    user: Uuid,
) -> Result<serde_json::Value, Failure> {
    let c = &input.conflict;
    check_pending(c)?;
    match ConflictField::parse(&c.field_name) {
        Some(ConflictField::Field(field)) => {
            let w = plan_field(input, field, decision, user)?;
            Ok(json!({
                "field": w.field,
                "local_now": w.details["before"]["local"],
                "remote_now": c.remote_value,
                "value": w.local_value,
            }))
        }
        Some(ConflictField::Identity) => match decision.strategy {
            super::Strategy::Create => Ok(json!({
                "field": c.field_name,
                "action": "create a local device for the Golioth device and link them",
            })),
            _ => Err(resolve_error(ResolveError::Identity)),
        },
        Some(ConflictField::Device) => {
            let choice = decision.choice().ok_or_else(|| {
                Failure::Invalid(
                    "a delete_vs_modify conflict is resolved with local or remote".into(),
                )
            })?;
            let pending = pending_conflict(c)?;
            let action = match decide(&pending, choice).map_err(resolve_error)? {
                Resolution::Device(crate::domain::sync::DeviceResolution::SetBase { .. }) => {
                    "accept the deletion (the next sync applies it)"
                }
                Resolution::Device(crate::domain::sync::DeviceResolution::ResetLink) => {
                    "keep the local device (the next sync creates it in Golioth again)"
                }
                Resolution::Device(crate::domain::sync::DeviceResolution::Restore { .. }) => {
                    "restore the deleted local device with Golioth's values"
                }
                Resolution::Field { .. } => {
                    return Err(Failure::Invalid("not a device conflict".into()));
                }
            };
            Ok(json!({ "field": c.field_name, "action": action }))
        }
        None => Err(Failure::Invalid(format!(
            "unknown conflict field {}",
            c.field_name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy;
    use super::*;
    use serde_json::Value;

    fn input(field: &str, local: Value, remote: Value, device: Value) -> db::ResolveInput {
        db::ResolveInput {
            conflict: db::ConflictRow {
                id: Uuid::new_v4(),
                service_id: Uuid::new_v4(),
                service_name: None,
                device_id: Some(Uuid::new_v4()),
                device_name: None,
                external_device_id: Some("a".repeat(24)),
                field_name: field.into(),
                conflict_type: "concurrent_modification".into(),
                base_value: Some(json!("base")),
                local_value: Some(local),
                remote_value: Some(remote),
                local_updated_at: None,
                remote_updated_at: None,
                detected_run_id: None,
                resolution_status: "pending".into(),
                resolution_strategy: None,
                resolved_value: None,
                resolved_by: None,
                resolved_at: None,
                created_at: "2026-01-01T00:00:00.000000Z".into(),
                updated_at: "2026-01-01T00:00:00.000000Z".into(),
            },
            device: Some(db::DeviceState {
                version: 7,
                deleted: false,
                desired: device,
            }),
            assignment: Some(db::AssignmentState {
                external_device_id: Some("a".repeat(24)),
                base: Some(json!({"name": "base"})),
            }),
        }
    }

    fn dev(name: &str) -> Value {
        json!({"name": name, "enabled": true, "tags": [], "hardware_ids": [],
               "blueprint_id": null, "cohort_id": null})
    }

    fn decision(strategy: Strategy, value: Option<Value>) -> Decision {
        Decision {
            strategy,
            value,
            device_id: None,
        }
    }

    #[test]
    fn choices_become_writes_with_the_remote_as_base() {
        let user = Uuid::new_v4();
        let i = input("name", json!("L"), json!("R"), dev("L"));
        for (body, local) in [
            (decision(Strategy::Local, None), "L"),
            (decision(Strategy::Remote, None), "R"),
            (decision(Strategy::Custom, Some(json!("C"))), "C"),
        ] {
            let w = plan_field(&i, Field::Name, &body, user).unwrap();
            assert_eq!(w.local_value, json!(local));
            assert_eq!(w.base_value, json!("R"));
            assert_eq!(w.expected_version, 7);
            assert_eq!(w.details["before"]["local"], json!("L"));
        }
    }

    #[test]
    fn wrong_types_stale_values_and_settled_conflicts_are_refused() {
        let user = Uuid::new_v4();
        let i = input("enabled", json!(true), json!(false), dev("x"));
        let d = decision(Strategy::Custom, Some(json!("yes")));
        let err = plan_field(&i, Field::Enabled, &d, user).unwrap_err();
        assert_eq!(err.code(), "invalid", "{err:?}");

        let stale = input("name", json!("L"), json!("R"), dev("edited since"));
        let d = decision(Strategy::Remote, None);
        assert_eq!(
            plan_field(&stale, Field::Name, &d, user)
                .unwrap_err()
                .code(),
            "stale"
        );

        let mut done = input("name", json!("L"), json!("R"), dev("L"));
        done.conflict.resolution_status = "resolved".into();
        assert_eq!(
            plan_field(&done, Field::Name, &d, user).unwrap_err().code(),
            "not_pending"
        );

        let mut unlinked = input("name", json!("L"), json!("R"), dev("L"));
        unlinked.assignment = None;
        assert_eq!(
            plan_field(&unlinked, Field::Name, &d, user)
                .unwrap_err()
                .code(),
            "conflict"
        );
    }
}
