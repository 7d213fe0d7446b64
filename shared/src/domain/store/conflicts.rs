//! device_conflicts: list, read, resolve.
//!
//! Reads select timestamps as text (`gs_ts`). Resolving a field conflict is one statement for a
//! whole batch ([`apply_field_resolutions`]): it locks the conflicts that are still pending, writes
//! the chosen values into `devices` only where the row still has the `version` the caller read
//! (optimistic concurrency: a concurrent edit is never overwritten), patches the assignment's base,
//! marks the conflicts resolved, writes one audit row per conflict and queues one `device_refresh`
//! run per device — all or nothing per device, and every conflict reports its own outcome. The
//! rarer device-level resolutions (identity, delete-vs-modify) are a few small statements inside
//! one short transaction per conflict.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::base::ports::{Db, DbError, Param, Row};

/// A conflict as the API shows it. Timestamps are RFC 3339 text (UTC, microseconds).
#[derive(Debug, Clone)]
pub struct ConflictRow {
    pub id: Uuid,
    pub service_id: Uuid,
    pub service_name: Option<String>,
    pub device_id: Option<Uuid>,
    pub device_name: Option<String>,
    pub external_device_id: Option<String>,
    pub field_name: String,
    pub conflict_type: String,
    pub base_value: Option<Value>,
    pub local_value: Option<Value>,
    pub remote_value: Option<Value>,
    pub local_updated_at: Option<String>,
    pub remote_updated_at: Option<String>,
    pub detected_run_id: Option<Uuid>,
    pub resolution_status: String,
    pub resolution_strategy: Option<String>,
    pub resolved_value: Option<Value>,
    pub resolved_by: Option<Uuid>,
    pub resolved_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const COLS: &str = "c.id, c.service_id, s.name AS service_name, c.device_id, d.name AS device_name, \
    c.external_device_id, c.field_name, c.conflict_type, c.base_value, c.local_value, c.remote_value, \
    gs_ts(c.local_updated_at) AS local_updated_at, gs_ts(c.remote_updated_at) AS remote_updated_at, \
    c.detected_run_id, c.resolution_status, c.resolution_strategy, c.resolved_value, c.resolved_by, \
    gs_ts(c.resolved_at) AS resolved_at, gs_ts(c.created_at) AS created_at, \
    gs_ts(c.updated_at) AS updated_at";

const FROM: &str = "FROM device_conflicts c \
    LEFT JOIN devices d ON d.id = c.device_id \
    LEFT JOIN device_services s ON s.id = c.service_id";

fn from_row(r: &Row) -> Result<ConflictRow, DbError> {
    Ok(ConflictRow {
        id: r.get("id")?,
        service_id: r.get("service_id")?,
        service_name: r.get("service_name")?,
        device_id: r.get("device_id")?,
        device_name: r.get("device_name")?,
        external_device_id: r.get("external_device_id")?,
        field_name: r.get("field_name")?,
        conflict_type: r.get("conflict_type")?,
        base_value: r.get("base_value")?,
        local_value: r.get("local_value")?,
        remote_value: r.get("remote_value")?,
        local_updated_at: r.get("local_updated_at")?,
        remote_updated_at: r.get("remote_updated_at")?,
        detected_run_id: r.get("detected_run_id")?,
        resolution_status: r.get("resolution_status")?,
        resolution_strategy: r.get("resolution_strategy")?,
        resolved_value: r.get("resolved_value")?,
        resolved_by: r.get("resolved_by")?,
        resolved_at: r.get("resolved_at")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

/// Filters of the list (and of bulk resolution by filter). `None` matches everything. Values are
/// validated by the caller; they are bound as parameters either way.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<String>,
    pub service_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub field_name: Option<String>,
    pub conflict_type: Option<String>,
}

/// Where a page starts: after the row with this `created_at` (text as selected) and id, in the
/// list's order (newest first).
#[derive(Debug, Clone)]
pub struct After {
    pub created_at: String,
    pub id: Uuid,
}

fn filter_params(org: Uuid, f: &Filter) -> Vec<Param> {
    vec![
        Param::Uuid(org),
        f.status.clone().into(),
        f.service_id.map(|u| u.to_string()).into(),
        f.device_id.map(|u| u.to_string()).into(),
        f.field_name.clone().into(),
        f.conflict_type.clone().into(),
    ]
}

const FILTER_SQL: &str = "c.organization_id = $1 \
    AND ($2::text IS NULL OR c.resolution_status = $2::text) \
    AND ($3::text IS NULL OR c.service_id = $3::text::uuid) \
    AND ($4::text IS NULL OR c.device_id = $4::text::uuid) \
    AND ($5::text IS NULL OR c.field_name = $5::text) \
    AND ($6::text IS NULL OR c.conflict_type = $6::text)";

/// One page of conflicts, newest first (`created_at DESC, id DESC`), after `after`.
pub async fn list(
    db: &dyn Db,
    org: Uuid,
    filter: &Filter,
    after: Option<&After>,
    limit: i64,
) -> Result<Vec<ConflictRow>, DbError> {
    let mut params = filter_params(org, filter);
    params.push(after.map(|a| a.created_at.clone()).into());
    params.push(after.map(|a| a.id.to_string()).into());
    params.push(Param::Int64(limit));
    db.query(
        &format!(
            "SELECT {COLS} {FROM} WHERE {FILTER_SQL} \
               AND ($7::text IS NULL OR (c.created_at, c.id) < ($7::text::timestamptz, $8::text::uuid)) \
             ORDER BY c.created_at DESC, c.id DESC LIMIT $9"
        ),
        &params,
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub async fn get(db: &dyn Db, org: Uuid, id: Uuid) -> Result<Option<ConflictRow>, DbError> {
    db.query(
        &format!("SELECT {COLS} {FROM} WHERE c.organization_id = $1 AND c.id = $2"),
        &[Param::Uuid(org), Param::Uuid(id)],
    )
    .await?
    .first()
    .map(from_row)
    .transpose()
}

/// The ids of pending conflicts matching `filter` (its `status` is ignored), oldest first, at most
/// `limit`.
pub async fn pending_ids(
    db: &dyn Db,
    org: Uuid,
    filter: &Filter,
    limit: i64,
) -> Result<Vec<Uuid>, DbError> {
    let f = Filter {
        status: Some("pending".into()),
        ..filter.clone()
    };
    let mut params = filter_params(org, &f);
    params.push(Param::Int64(limit));
    db.query(
        &format!(
            "SELECT c.id FROM device_conflicts c WHERE {FILTER_SQL} \
             ORDER BY c.created_at, c.id LIMIT $7"
        ),
        &params,
    )
    .await?
    .iter()
    .map(|r| r.get("id"))
    .collect()
}

/// The device a conflict is about, as resolving it needs it.
#[derive(Debug, Clone)]
pub struct DeviceState {
    pub version: i64,
    pub deleted: bool,
    /// `{"name", "enabled", "tags", "hardware_ids", "blueprint_id", "cohort_id"}`: the desired
    /// fields, in the shape of `sync::DesiredFields`.
    pub desired: Value,
}

/// The device's assignment to the conflict's service.
#[derive(Debug, Clone)]
pub struct AssignmentState {
    pub external_device_id: Option<String>,
    pub base: Option<Value>,
}

/// A conflict with the current state of its device and assignment.
#[derive(Debug, Clone)]
pub struct ResolveInput {
    pub conflict: ConflictRow,
    pub device: Option<DeviceState>,
    pub assignment: Option<AssignmentState>,
}

const DESIRED_JSON: &str = "jsonb_build_object('name', d.name, 'enabled', d.enabled, \
    'tags', to_jsonb(d.tags), 'hardware_ids', to_jsonb(d.hardware_ids), \
    'blueprint_id', d.blueprint_id, 'cohort_id', d.cohort_id)";

/// Load conflicts with their device and assignment, in one query. `lock` takes a row lock on the
/// conflicts (inside a transaction), so a concurrent resolution waits and then sees the outcome.
pub async fn load_for_resolution(
    db: &dyn Db,
    org: Uuid,
    ids: &[Uuid],
    lock: bool,
) -> Result<Vec<ResolveInput>, DbError> {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let rows = db
        .query(
            &format!(
                "SELECT {COLS}, d.version AS device_version, d.deleted_at IS NOT NULL AS device_deleted, \
                        {DESIRED_JSON} AS device_desired, a.id AS assignment_id, \
                        a.external_device_id AS assignment_external_id, a.base AS assignment_base \
                 {FROM} \
                 LEFT JOIN device_service_assignments a \
                        ON a.device_id = c.device_id AND a.service_id = c.service_id \
                 WHERE c.organization_id = $1 AND c.id = ANY($2::text[]::uuid[]){}",
                if lock { " FOR UPDATE OF c" } else { "" }
            ),
            &[Param::Uuid(org), Param::TextArray(ids)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let conflict = from_row(r)?;
            let device = match r.get::<Option<i64>>("device_version")? {
                Some(version) => Some(DeviceState {
                    version,
                    deleted: r.get("device_deleted")?,
                    desired: r.get("device_desired")?,
                }),
                None => None,
            };
            let assignment = match r.get::<Option<Uuid>>("assignment_id")? {
                Some(_) => Some(AssignmentState {
                    external_device_id: r.get("assignment_external_id")?,
                    base: r.get("assignment_base")?,
                }),
                None => None,
            };
            Ok(ResolveInput {
                conflict,
                device,
                assignment,
            })
        })
        .collect()
}

/// The resolution of one field conflict, as planned from a [`ResolveInput`].
#[derive(Debug, Clone)]
pub struct FieldWrite {
    pub conflict_id: Uuid,
    pub service_id: Uuid,
    pub device_id: Uuid,
    /// The device `version` the plan was made from; the write happens only if it is unchanged.
    pub expected_version: i64,
    /// The device column (`sync::Field::as_str`).
    pub field: &'static str,
    /// The chosen value, written into the device column.
    pub local_value: Value,
    /// Golioth's current value, written into the assignment's base for the field.
    pub base_value: Value,
    /// `resolution_strategy` (local | remote | custom).
    pub strategy: &'static str,
    /// The Golioth id, for the `device_refresh` run (`None`: the run names only the local device).
    pub external_id: Option<String>,
    /// The audit row's details.
    pub details: Value,
}

/// What happened to one conflict of [`apply_field_resolutions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOutcome {
    Resolved,
    /// Someone else resolved it, or a sync superseded it, or its assignment is gone.
    NotPending,
    /// The device changed since it was read: plan again.
    DeviceChanged,
}

/// Carry out field resolutions in one statement (call it inside `store::in_org`). Each conflict
/// may name a device at most once per field; devices with several conflicts are updated once.
pub async fn apply_field_resolutions(
    db: &dyn Db,
    org: Uuid,
    user: Uuid,
    writes: &[FieldWrite],
) -> Result<Vec<(Uuid, FieldOutcome)>, DbError> {
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let records: Vec<Value> = writes
        .iter()
        .map(|w| {
            json!({
                "id": w.conflict_id,
                "service_id": w.service_id,
                "device_id": w.device_id,
                "version": w.expected_version,
                "field": w.field,
                "local_value": w.local_value,
                "base_value": w.base_value,
                "strategy": w.strategy,
                "external_id": w.external_id,
                "details": w.details,
            })
        })
        .collect();
    // `locked`: the conflicts still pending whose assignment exists, locked with it. `ch`: one row
    // per device with every chosen value. `dev`: the device rows still at the version read.
    // `done`: the conflicts whose device was written; everything after depends on it.
    let rows = db
        .query(
            "WITH cx AS ( \
                 SELECT * FROM jsonb_to_recordset($2::jsonb) AS x( \
                     id uuid, service_id uuid, device_id uuid, version int8, field text, \
                     local_value jsonb, base_value jsonb, strategy text, external_id text, \
                     details jsonb) \
             ), locked AS ( \
                 SELECT c.id FROM device_conflicts c \
                 JOIN cx ON cx.id = c.id \
                 JOIN device_service_assignments a \
                   ON a.device_id = c.device_id AND a.service_id = c.service_id \
                 WHERE c.organization_id = $1 AND c.resolution_status = 'pending' \
                   AND c.device_id = cx.device_id AND c.service_id = cx.service_id \
                 FOR UPDATE OF c, a \
             ), ch AS ( \
                 SELECT cx.device_id, min(cx.version) AS version, \
                        jsonb_object_agg(cx.field, cx.local_value) AS v \
                 FROM cx JOIN locked ON locked.id = cx.id \
                 GROUP BY cx.device_id \
             ), dev AS ( \
                 UPDATE devices d SET \
                     name = CASE WHEN ch.v ? 'name' THEN ch.v->>'name' ELSE d.name END, \
                     enabled = CASE WHEN ch.v ? 'enabled' THEN (ch.v->>'enabled')::boolean \
                                    ELSE d.enabled END, \
                     tags = CASE WHEN ch.v ? 'tags' \
                                 THEN ARRAY(SELECT jsonb_array_elements_text(ch.v->'tags')) \
                                 ELSE d.tags END, \
                     hardware_ids = CASE WHEN ch.v ? 'hardware_ids' \
                                 THEN ARRAY(SELECT jsonb_array_elements_text(ch.v->'hardware_ids')) \
                                 ELSE d.hardware_ids END, \
                     blueprint_id = CASE WHEN ch.v ? 'blueprint_id' THEN ch.v->>'blueprint_id' \
                                         ELSE d.blueprint_id END, \
                     cohort_id = CASE WHEN ch.v ? 'cohort_id' THEN ch.v->>'cohort_id' \
                                      ELSE d.cohort_id END \
                 FROM ch \
                 WHERE d.id = ch.device_id AND d.organization_id = $1 \
                   AND d.version = ch.version AND d.deleted_at IS NULL \
                 RETURNING d.id \
             ), done AS ( \
                 SELECT cx.* FROM cx \
                 JOIN locked ON locked.id = cx.id \
                 JOIN dev ON dev.id = cx.device_id \
             ), asg AS ( \
                 UPDATE device_service_assignments a \
                 SET base = coalesce(a.base, '{}'::jsonb) || p.patch, updated_at = now() \
                 FROM (SELECT service_id, device_id, jsonb_object_agg(field, base_value) AS patch \
                       FROM done GROUP BY service_id, device_id) p \
                 WHERE a.organization_id = $1 AND a.device_id = p.device_id \
                   AND a.service_id = p.service_id \
                 RETURNING a.id \
             ), res AS ( \
                 UPDATE device_conflicts c SET \
                     resolution_status = 'resolved', resolution_strategy = done.strategy, \
                     resolved_value = done.local_value, resolved_by = $3, resolved_at = now(), \
                     updated_at = now() \
                 FROM done WHERE c.id = done.id AND c.organization_id = $1 \
                 RETURNING c.id \
             ), audit AS ( \
                 INSERT INTO golioth_sync_log \
                     (organization_id, service_id, device_id, operation, status, details) \
                 SELECT $1, done.service_id, done.device_id, 'conflict_resolved', 'success', \
                        done.details \
                 FROM done \
             ), queued AS ( \
                 INSERT INTO sync_runs (organization_id, service_id, operation, params, requested_by) \
                 SELECT DISTINCT $1::uuid, done.service_id, 'device_refresh', \
                        CASE WHEN done.external_id IS NULL \
                             THEN jsonb_build_object('local_device_id', done.device_id) \
                             ELSE jsonb_build_object('device_id', done.external_id, \
                                                     'local_device_id', done.device_id) END, \
                        $3::uuid \
                 FROM done \
                 ON CONFLICT DO NOTHING \
             ) \
             SELECT cx.id, \
                    CASE WHEN cx.id IN (SELECT id FROM res) THEN 'resolved' \
                         WHEN cx.id NOT IN (SELECT id FROM locked) THEN 'not_pending' \
                         ELSE 'device_changed' END AS outcome \
             FROM cx",
            &[
                Param::Uuid(org),
                Param::Jsonb(Value::Array(records)),
                Param::Uuid(user),
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let outcome = match r.get::<String>("outcome")?.as_str() {
                "resolved" => FieldOutcome::Resolved,
                "not_pending" => FieldOutcome::NotPending,
                _ => FieldOutcome::DeviceChanged,
            };
            Ok((r.get("id")?, outcome))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Device-level resolutions (identity, delete-vs-modify): small statements inside one transaction
// per conflict, after `load_for_resolution(.., lock = true)` locked the conflict.

/// Set (or clear) the assignment's base; `unlink` also clears `external_device_id`. Returns
/// whether the assignment exists.
pub async fn set_assignment_base(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    device: Uuid,
    base: Option<Value>,
    unlink: bool,
) -> Result<bool, DbError> {
    let n = db
        .execute(
            "UPDATE device_service_assignments SET base = $4, \
                 external_device_id = CASE WHEN $5 THEN NULL ELSE external_device_id END, \
                 updated_at = now() \
             WHERE organization_id = $1 AND service_id = $2 AND device_id = $3",
            &[
                Param::Uuid(org),
                Param::Uuid(service),
                Param::Uuid(device),
                base.map_or(Param::Null, Param::Jsonb),
                Param::Bool(unlink),
            ],
        )
        .await?;
    Ok(n > 0)
}

/// Restore a tombstoned device with these desired values (a `sync::Base` as JSON), only if it is
/// still at `version`. Returns whether the row was written.
pub async fn restore_device(
    db: &dyn Db,
    org: Uuid,
    device: Uuid,
    version: i64,
    values: &Value,
) -> Result<bool, DbError> {
    let n = db
        .execute(
            "UPDATE devices d SET deleted_at = NULL, \
                 name = CASE WHEN $4::jsonb ? 'name' THEN $4::jsonb->>'name' ELSE d.name END, \
                 enabled = CASE WHEN $4::jsonb ? 'enabled' THEN ($4::jsonb->>'enabled')::boolean \
                                ELSE d.enabled END, \
                 tags = CASE WHEN $4::jsonb ? 'tags' \
                             THEN ARRAY(SELECT jsonb_array_elements_text($4::jsonb->'tags')) \
                             ELSE d.tags END, \
                 hardware_ids = CASE WHEN $4::jsonb ? 'hardware_ids' \
                             THEN ARRAY(SELECT jsonb_array_elements_text($4::jsonb->'hardware_ids')) \
                             ELSE d.hardware_ids END, \
                 blueprint_id = CASE WHEN $4::jsonb ? 'blueprint_id' THEN $4::jsonb->>'blueprint_id' \
                                     ELSE d.blueprint_id END, \
                 cohort_id = CASE WHEN $4::jsonb ? 'cohort_id' THEN $4::jsonb->>'cohort_id' \
                                  ELSE d.cohort_id END \
             WHERE d.organization_id = $1 AND d.id = $2 AND d.version = $3",
            &[
                Param::Uuid(org),
                Param::Uuid(device),
                Param::Int64(version),
                Param::Jsonb(values.clone()),
            ],
        )
        .await?;
    Ok(n > 0)
}

/// A new local device for a Golioth device nobody could match (an `identity` conflict resolved by
/// creating one). Returns its id.
pub async fn create_device(
    db: &dyn Db,
    org: Uuid,
    name: &str,
    hardware_ids: Vec<String>,
) -> Result<Uuid, DbError> {
    let rows = db
        .query(
            "INSERT INTO devices (organization_id, name, hardware_ids) \
             VALUES ($1, $2, $3::text[]) RETURNING id",
            &[
                Param::Uuid(org),
                Param::Text(name.to_owned()),
                Param::TextArray(hardware_ids),
            ],
        )
        .await?;
    rows.first()
        .map(|r| r.get("id"))
        .transpose()?
        .ok_or_else(|| DbError::Decode("insert returned no row".into()))
}

/// Whether a live device of the organization exists.
pub async fn live_device_exists(db: &dyn Db, org: Uuid, device: Uuid) -> Result<bool, DbError> {
    let rows = db
        .query(
            "SELECT 1::int4 AS one FROM devices \
             WHERE organization_id = $1 AND id = $2 AND deleted_at IS NULL",
            &[Param::Uuid(org), Param::Uuid(device)],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Link `device` to the Golioth device `external_id` with no base, so the next sync treats the
/// pair as a first sync. An existing assignment is reused unless it is linked to another Golioth
/// device (then `false`). Another device already linked to `external_id` is a unique violation.
pub async fn link(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    device: Uuid,
    external_id: &str,
) -> Result<bool, DbError> {
    let rows = db
        .query(
            "INSERT INTO device_service_assignments \
                 (organization_id, device_id, service_id, external_device_id, base) \
             VALUES ($1, $2, $3, $4, NULL) \
             ON CONFLICT (device_id, service_id) DO UPDATE \
                 SET external_device_id = EXCLUDED.external_device_id, base = NULL, \
                     pending_create = NULL, sync_status = 'pending', updated_at = now() \
                 WHERE device_service_assignments.external_device_id IS NULL \
                    OR device_service_assignments.external_device_id = EXCLUDED.external_device_id \
             RETURNING id",
            &[
                Param::Uuid(org),
                Param::Uuid(device),
                Param::Uuid(service),
                Param::Text(external_id.to_owned()),
            ],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Mark a locked pending conflict resolved. `device` fills `device_id` when the resolution named
/// one (an identity conflict linked to a device).
pub async fn mark_resolved(
    db: &dyn Db,
    org: Uuid,
    id: Uuid,
    user: Uuid,
    strategy: &str,
    resolved_value: Value,
    device: Option<Uuid>,
) -> Result<bool, DbError> {
    let n = db
        .execute(
            "UPDATE device_conflicts SET resolution_status = 'resolved', \
                 resolution_strategy = $4, resolved_value = $5, resolved_by = $3, \
                 resolved_at = now(), updated_at = now(), \
                 device_id = coalesce(device_id, $6::text::uuid) \
             WHERE organization_id = $1 AND id = $2 AND resolution_status = 'pending'",
            &[
                Param::Uuid(org),
                Param::Uuid(id),
                Param::Uuid(user),
                Param::Text(strategy.to_owned()),
                Param::Jsonb(resolved_value),
                device.map(|d| d.to_string()).into(),
            ],
        )
        .await?;
    Ok(n > 0)
}

/// One `conflict_resolved` audit row.
pub async fn audit(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    device: Option<Uuid>,
    details: Value,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO golioth_sync_log (organization_id, service_id, device_id, operation, status, details) \
         VALUES ($1, $2, $3::text::uuid, 'conflict_resolved', 'success', $4)",
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            device.map(|d| d.to_string()).into(),
            Param::Jsonb(details),
        ],
    )
    .await?;
    Ok(())
}

/// Queue a `device_refresh` run for one device unless one is already queued.
pub async fn queue_refresh(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    external_id: Option<&str>,
    device: Uuid,
    user: Uuid,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO sync_runs (organization_id, service_id, operation, params, requested_by) \
         VALUES ($1, $2, 'device_refresh', \
                 CASE WHEN $3::text IS NULL \
                      THEN jsonb_build_object('local_device_id', $4::text) \
                      ELSE jsonb_build_object('device_id', $3::text, 'local_device_id', $4::text) END, \
                 $5) \
         ON CONFLICT DO NOTHING",
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            external_id.map(str::to_owned).into(),
            Param::Text(device.to_string()),
            Param::Uuid(user),
        ],
    )
    .await?;
    Ok(())
}
