//! Resolving a conflict by a person's choice (DESIGN §4 "Resolving a conflict"). Resolution never
//! writes Golioth directly: it writes the choice locally and moves the base so that the ordinary
//! merge of the next sync carries the choice out. One write path, whatever resolved the conflict.
//!
//! `identity` conflicts are not resolved here: the conflicts API links the Golioth device to the
//! chosen local device (or to a local device it creates from the Golioth values) by upserting the
//! assignment with `external_device_id` set and `base` NULL. The next sync then treats the pair as
//! a first sync: equal fields set the base, differing ones follow the policy.

use serde::Serialize;

use super::model::{Base, ConflictField, ConflictKind, Field, PendingConflict, Value, ValueError};

/// The person's choice.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice {
    /// Keep the platform's value.
    Local,
    /// Keep Golioth's value.
    Remote,
    /// A new value, type-checked against the field.
    Custom(serde_json::Value),
}

/// What to write for a resolved conflict, in one transaction, before marking it resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resolution {
    /// A field conflict: write `local_value` into the device's column and `base_value` (Golioth's
    /// current value) into the assignment's base for that field. The next merge then sees Golioth
    /// unchanged and the local side changed (unless the choice was Golioth's value), and pushes it.
    Field {
        field: Field,
        local_value: Value,
        base_value: Value,
        resolved_value: Value,
    },
    /// A delete-vs-modify conflict.
    Device(DeviceResolution),
}

/// How a delete-vs-modify conflict is carried out.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DeviceResolution {
    /// Accept the deletion: set the assignment's base to the surviving side's current values, so
    /// the next sync finds that side unchanged and applies the deletion through the service's
    /// `on_remote_delete` / `on_local_delete`.
    SetBase { base: Base },
    /// Keep the locally edited device although Golioth deleted it: set the assignment's
    /// `external_device_id` and `base` to NULL (keep the row), so the next export or bidirectional
    /// sync creates it in Golioth again.
    ResetLink,
    /// Keep Golioth's edited device although it was deleted locally: clear `deleted_at`, write
    /// `values` into the device and store them as the base.
    Restore { values: Base },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    #[error("identity conflicts are resolved by linking or creating a device")]
    Identity,
    #[error("a custom value cannot resolve a delete-vs-modify conflict")]
    CustomForDeletion,
    #[error("a conflict on the whole device must be delete_vs_modify")]
    NotDeleteVsModify,
    #[error("the conflict row lacks its {0} value")]
    MissingValue(&'static str),
    #[error("invalid value: {0}")]
    InvalidValue(#[from] ValueError),
}

/// Turn a pending conflict and a choice into the writes that carry the choice out.
pub fn resolve(conflict: &PendingConflict, choice: Choice) -> Result<Resolution, ResolveError> {
    match conflict.field {
        ConflictField::Identity => Err(ResolveError::Identity),
        ConflictField::Device => resolve_device(conflict, choice).map(Resolution::Device),
        ConflictField::Field(field) => {
            let remote = conflict
                .remote_value
                .as_ref()
                .ok_or(ResolveError::MissingValue("remote"))?;
            let remote = Value::from_json(field, remote)?;
            let chosen = match choice {
                Choice::Remote => remote.clone(),
                Choice::Local => {
                    let local = conflict
                        .local_value
                        .as_ref()
                        .ok_or(ResolveError::MissingValue("local"))?;
                    Value::from_json(field, local)?
                }
                Choice::Custom(json) => Value::from_json(field, &json)?,
            };
            Ok(Resolution::Field {
                field,
                local_value: chosen.clone(),
                base_value: remote,
                resolved_value: chosen,
            })
        }
    }
}

fn resolve_device(
    conflict: &PendingConflict,
    choice: Choice,
) -> Result<DeviceResolution, ResolveError> {
    if conflict.kind != ConflictKind::DeleteVsModify {
        return Err(ResolveError::NotDeleteVsModify);
    }
    let values = |json: &Option<serde_json::Value>, side: &'static str| {
        json.as_ref()
            .ok_or(ResolveError::MissingValue(side))
            .and_then(|j| Base::from_json(j).map_err(ResolveError::from))
    };
    let remote_gone = conflict.remote_value.is_none();
    match (choice, remote_gone) {
        (Choice::Custom(_), _) => Err(ResolveError::CustomForDeletion),
        // Golioth deleted it, the person agrees: the local side becomes "unchanged".
        (Choice::Remote, true) => Ok(DeviceResolution::SetBase {
            base: values(&conflict.local_value, "local")?,
        }),
        (Choice::Local, true) => Ok(DeviceResolution::ResetLink),
        // Deleted locally, the person agrees: Golioth's side becomes "unchanged".
        (Choice::Local, false) => Ok(DeviceResolution::SetBase {
            base: values(&conflict.remote_value, "remote")?,
        }),
        (Choice::Remote, false) => Ok(DeviceResolution::Restore {
            values: values(&conflict.remote_value, "remote")?,
        }),
    }
}
