//! Conflicts: list, inspect, resolve one or many (DESIGN §4 "Resolving a conflict", §5.2).
//!
//! A resolution never writes Golioth. It writes the chosen value locally, sets the assignment's
//! base for the field to Golioth's current value, marks the conflict resolved, writes an audit row
//! and queues a `device_refresh` run; the ordinary merge of that run pushes the choice out. The
//! decision itself is the sync core's [`resolve`]; this module loads, checks and carries it out.
//!
//! Resolutions (`resolution` in the body):
//! - field conflicts (`concurrent_modification`, `first_sync_mismatch`): `local`, `remote`, or
//!   `custom` with a `value` type-checked against the field;
//! - `delete_vs_modify` (field `device`): `local` or `remote` keeps that side's state, as
//!   [`DeviceResolution`] describes (accept the deletion, re-create, or restore);
//! - `identity` (a Golioth device with several local candidates): `link` with `device_id`, one of
//!   the local candidates the conflict lists, or `create` to make a new local device from the
//!   Golioth device's name and hardware ids. Either links with no base, so the next sync treats
//!   the pair as a first sync.
//!
//! Every local write is conditional on the device `version` read when the resolution was planned;
//! a device edited meanwhile is re-read and re-planned (up to [`MAX_ATTEMPTS`] times), and a
//! conflict whose device value changed since it was detected answers 409 instead of overwriting
//! an edit the person never saw.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::input::{
    JSON_BODY_LIMIT, MAX_BULK_IDS, decode_cursor, encode_cursor, json_body, page_limit, query,
    uuid_list,
};
use super::{ApiResult, Ctx, Request, json_response};
use crate::auth::{self, Role};
use crate::error::ApiError;
use crate::ports::DbError;
use crate::routing::Params;
use crate::store::{self, conflicts as db};
use crate::sync::{
    Base, Choice, ConflictField, ConflictKind, DesiredFields, DeviceResolution, Field,
    PendingConflict, Resolution, ResolveError, Value as FieldValue, resolve as decide,
};

/// How often a resolution is re-planned when its device changed between read and write.
const MAX_ATTEMPTS: usize = 3;
/// Field resolutions carried out by one statement.
const APPLY_CHUNK: usize = 250;

const STATUSES: [&str; 4] = ["pending", "resolved", "auto_resolved", "superseded"];
const TYPES: [&str; 4] = [
    "concurrent_modification",
    "delete_vs_modify",
    "identity",
    "first_sync_mismatch",
];

// ---------------------------------------------------------------------------------------------
// Rendering

/// The resolutions a conflict accepts, so a console can offer exactly those.
fn allowed_resolutions(field_name: &str) -> &'static [&'static str] {
    match ConflictField::parse(field_name) {
        Some(ConflictField::Field(_)) => &["local", "remote", "custom"],
        Some(ConflictField::Device) => &["local", "remote"],
        Some(ConflictField::Identity) => &["link", "create"],
        None => &[],
    }
}

fn render(c: &db::ConflictRow) -> Value {
    json!({
        "id": c.id,
        "service_id": c.service_id,
        "service_name": c.service_name,
        "device_id": c.device_id,
        "device_name": c.device_name,
        "external_device_id": c.external_device_id,
        "field_name": c.field_name,
        "conflict_type": c.conflict_type,
        "base_value": c.base_value,
        "local_value": c.local_value,
        "remote_value": c.remote_value,
        "local_updated_at": c.local_updated_at,
        "remote_updated_at": c.remote_updated_at,
        "detected_run_id": c.detected_run_id,
        "resolution_status": c.resolution_status,
        "resolution_strategy": c.resolution_strategy,
        "resolved_value": c.resolved_value,
        "resolved_by": c.resolved_by,
        "resolved_at": c.resolved_at,
        "allowed_resolutions": if c.resolution_status == "pending" {
            allowed_resolutions(&c.field_name)
        } else {
            &[]
        },
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    })
}

// ---------------------------------------------------------------------------------------------
// Reading

fn one_of(value: &str, allowed: &[&str], name: &str) -> Result<String, ApiError> {
    if allowed.contains(&value) {
        Ok(value.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "{name} must be one of {}",
            allowed.join(", ")
        )))
    }
}

fn field_name(value: &str) -> Result<String, ApiError> {
    ConflictField::parse(value)
        .map(|f| f.as_str().to_owned())
        .ok_or_else(|| {
            let mut names: Vec<&str> = Field::ALL.iter().map(|f| f.as_str()).collect();
            names.extend(["device", "identity"]);
            ApiError::bad_request(format!("field_name must be one of {}", names.join(", ")))
        })
}

fn uuid_param(value: &str, name: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(value).map_err(|_| ApiError::bad_request(format!("{name} must be a uuid")))
}

/// The list's filters from query parameters; an invalid value is a 400.
fn list_filter(q: &HashMap<String, String>) -> Result<db::Filter, ApiError> {
    Ok(db::Filter {
        status: q
            .get("status")
            .map(|s| one_of(s, &STATUSES, "status"))
            .transpose()?,
        service_id: q
            .get("service_id")
            .map(|s| uuid_param(s, "service_id"))
            .transpose()?,
        device_id: q
            .get("device_id")
            .map(|s| uuid_param(s, "device_id"))
            .transpose()?,
        field_name: q.get("field_name").map(|s| field_name(s)).transpose()?,
        conflict_type: q
            .get("conflict_type")
            .map(|s| one_of(s, &TYPES, "conflict_type"))
            .transpose()?,
    })
}

fn cursor_after(q: &HashMap<String, String>) -> Result<Option<db::After>, ApiError> {
    let Some(c) = decode_cursor(q)? else {
        return Ok(None);
    };
    let created_at = c
        .get("t")
        .and_then(Value::as_str)
        .filter(|t| DateTime::parse_from_rfc3339(t).is_ok());
    let id = c
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok());
    match (created_at, id) {
        (Some(t), Some(id)) => Ok(Some(db::After {
            created_at: t.to_owned(),
            id,
        })),
        _ => Err(ApiError::bad_request("invalid cursor")),
    }
}

/// `GET /api/v1/orgs/:org_id/conflicts` — newest first, filtered, cursor-paginated.
pub async fn list(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let q = query(req);
    let filter = list_filter(&q)?;
    let limit = page_limit(&q)?;
    let after = cursor_after(&q)?;
    let org = caller.org_id;
    let rows = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { db::list(tx, org, &filter, after.as_ref(), limit + 1).await })
    })
    .await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = more
        .then(|| {
            page.last()
                .map(|r| encode_cursor(&json!({"t": r.created_at, "id": r.id})))
        })
        .flatten();
    let items: Vec<Value> = page.iter().map(render).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "next_cursor": next}),
    ))
}

async fn load(ctx: &Ctx<'_>, org: Uuid, id: Uuid) -> Result<db::ConflictRow, ApiError> {
    store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { db::get(tx, org, id).await })
    })
    .await?
    .ok_or_else(|| ApiError::not_found("no such conflict"))
}

/// `GET /api/v1/orgs/:org_id/conflicts/:conflict_id`.
pub async fn get(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let id = auth::path_uuid(params, "conflict_id")?;
    let row = load(ctx, caller.org_id, id).await?;
    Ok(json_response(StatusCode::OK, &render(&row)))
}

// ---------------------------------------------------------------------------------------------
// Requests to resolve

/// The person's decision, as the body names it (`resolution_strategy` stores the same word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Local,
    Remote,
    Custom,
    Link,
    Create,
}

impl Strategy {
    const NAMES: [&'static str; 5] = ["local", "remote", "custom", "link", "create"];

    fn parse(s: &str) -> Option<Strategy> {
        match s {
            "local" => Some(Strategy::Local),
            "remote" => Some(Strategy::Remote),
            "custom" => Some(Strategy::Custom),
            "link" => Some(Strategy::Link),
            "create" => Some(Strategy::Create),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        Strategy::NAMES[self as usize]
    }
}

/// A validated resolution request.
#[derive(Debug, Clone)]
struct Decision {
    strategy: Strategy,
    /// The custom value (may be JSON null, e.g. to clear a cohort).
    value: Option<Value>,
    /// The local candidate an identity conflict is linked to.
    device_id: Option<Uuid>,
}

impl Decision {
    /// The sync core's choice, for field and device conflicts.
    fn choice(&self) -> Option<Choice> {
        match self.strategy {
            Strategy::Local => Some(Choice::Local),
            Strategy::Remote => Some(Choice::Remote),
            Strategy::Custom => self.value.clone().map(Choice::Custom),
            Strategy::Link | Strategy::Create => None,
        }
    }
}

fn body_object<'a>(body: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let unknown: Vec<&String> = obj
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "unknown keys: {}",
            unknown
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_extension("unknown_keys", json!(unknown)));
    }
    Ok(obj)
}

/// Parse `{resolution, value?, device_id?}`. `bulk` refuses `link`, which names one conflict's
/// candidate.
fn parse_decision(obj: &Map<String, Value>, bulk: bool) -> Result<Decision, ApiError> {
    let strategy = obj
        .get("resolution")
        .and_then(Value::as_str)
        .and_then(Strategy::parse)
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "resolution must be one of {}",
                Strategy::NAMES.join(", ")
            ))
        })?;
    let value = obj.get("value").cloned();
    match (strategy, &value) {
        (Strategy::Custom, None) => {
            return Err(ApiError::unprocessable("a custom resolution needs a value"));
        }
        (s, Some(_)) if s != Strategy::Custom => {
            return Err(ApiError::unprocessable(
                "value is only accepted with resolution custom",
            ));
        }
        _ => {}
    }
    let device_id = match obj.get("device_id") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| ApiError::unprocessable("device_id must be a uuid"))?,
        ),
    };
    match (strategy, device_id) {
        (Strategy::Link, _) if bulk => Err(ApiError::unprocessable(
            "link names one conflict's candidate: resolve identity conflicts one at a time",
        )),
        (Strategy::Link, None) => Err(ApiError::unprocessable(
            "link needs device_id, one of the local candidates the conflict lists",
        )),
        (s, Some(_)) if s != Strategy::Link => Err(ApiError::unprocessable(
            "device_id is only accepted with resolution link",
        )),
        _ => Ok(Decision {
            strategy,
            value,
            device_id,
        }),
    }
}

/// The filter of a bulk resolution (`status` is always pending).
fn bulk_filter(v: &Value) -> Result<db::Filter, ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::unprocessable("filter must be an object"))?;
    let unknown: Vec<&String> = obj
        .keys()
        .filter(|k| {
            !["service_id", "device_id", "field_name", "conflict_type"].contains(&k.as_str())
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request("unknown filter keys")
            .with_extension("unknown_keys", json!(unknown)));
    }
    let text = |key: &str| -> Result<Option<&str>, ApiError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::unprocessable(format!("{key} must be a string"))),
        }
    };
    let unprocessable = |e: ApiError| ApiError::unprocessable(e.detail.unwrap_or_default());
    Ok(db::Filter {
        status: None,
        service_id: text("service_id")?
            .map(|s| uuid_param(s, "service_id"))
            .transpose()
            .map_err(unprocessable)?,
        device_id: text("device_id")?
            .map(|s| uuid_param(s, "device_id"))
            .transpose()
            .map_err(unprocessable)?,
        field_name: text("field_name")?
            .map(field_name)
            .transpose()
            .map_err(unprocessable)?,
        conflict_type: text("conflict_type")?
            .map(|s| one_of(s, &TYPES, "conflict_type"))
            .transpose()
            .map_err(unprocessable)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Why one conflict was not resolved

#[derive(Debug)]
enum Failure {
    NotFound,
    NotPending(String),
    /// The device's value changed since the conflict was detected.
    Stale(String),
    /// The device kept changing while we tried to write (after [`MAX_ATTEMPTS`]).
    DeviceChanged,
    /// The state around the conflict no longer allows this resolution.
    Conflict(String),
    /// The request does not fit this conflict (wrong resolution, wrong value type).
    Invalid(String),
    Db(DbError),
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Self {
        Failure::Db(e)
    }
}

impl Failure {
    fn code(&self) -> &'static str {
        match self {
            Failure::NotFound => "not_found",
            Failure::NotPending(_) => "not_pending",
            Failure::Stale(_) => "stale",
            Failure::DeviceChanged => "device_changed",
            Failure::Conflict(_) => "conflict",
            Failure::Invalid(_) => "invalid",
            Failure::Db(_) => "internal",
        }
    }

    fn detail(&self) -> String {
        match self {
            Failure::NotFound => "no such conflict".into(),
            Failure::NotPending(status) => format!("the conflict is no longer pending ({status})"),
            Failure::Stale(field) => format!(
                "the device's {field} changed since the conflict was detected; \
                 sync again to refresh the conflict"
            ),
            Failure::DeviceChanged => {
                "the device kept changing while the resolution was written; try again".into()
            }
            Failure::Conflict(d) | Failure::Invalid(d) => d.clone(),
            Failure::Db(_) => "internal error".into(),
        }
    }

    fn into_api(self) -> ApiError {
        let code = self.code();
        let err = match self {
            Failure::Db(e) => return e.into(),
            Failure::NotFound => ApiError::not_found(self.detail()),
            Failure::Invalid(_) => ApiError::unprocessable(self.detail()),
            _ => ApiError::conflict(self.detail()),
        };
        err.with_extension("code", json!(code))
    }
}

fn resolve_error(e: ResolveError) -> Failure {
    match e {
        ResolveError::InvalidValue(v) => Failure::Invalid(format!("invalid value: {v}")),
        ResolveError::MissingValue(side) => Failure::Conflict(format!(
            "the conflict lacks its {side} value and cannot be resolved this way"
        )),
        other => Failure::Invalid(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Planning (pure)

fn parse_ts(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn pending_conflict(c: &db::ConflictRow) -> Result<PendingConflict, Failure> {
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

fn desired(device: &db::DeviceState) -> Result<DesiredFields, Failure> {
    serde_json::from_value(device.desired.clone())
        .map_err(|e| Failure::Db(DbError::Decode(format!("device desired fields: {e}"))))
}

fn check_pending(c: &db::ConflictRow) -> Result<(), Failure> {
    if c.resolution_status == "pending" {
        Ok(())
    } else {
        Err(Failure::NotPending(c.resolution_status.clone()))
    }
}

/// Plan the resolution of a field conflict: the sync core decides the values; this checks that
/// the conflict still describes the device (no edit since detection) and that it is still linked.
fn plan_field(
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

// ---------------------------------------------------------------------------------------------
// Carrying resolutions out

type Outcomes = HashMap<Uuid, Result<(), Failure>>;

/// Resolve `ids` with one decision. Every id gets its own outcome; field conflicts are written in
/// bulk statements, device-level ones in one short transaction each.
async fn resolve_all(
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
            crate::log::warn(
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
    tx: &dyn crate::ports::Db,
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
    tx: &dyn crate::ports::Db,
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
    tx: &dyn crate::ports::Db,
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

// ---------------------------------------------------------------------------------------------
// Endpoints that resolve

/// `POST /api/v1/orgs/:org_id/conflicts/:conflict_id/resolve` — answers the resolved conflict.
pub async fn resolve(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Member).await?;
    let id = auth::path_uuid(params, "conflict_id")?;
    let body = json_body(req, JSON_BODY_LIMIT)?;
    let obj = body_object(&body, &["resolution", "value", "device_id"])?;
    let decision = parse_decision(obj, false)?;
    let mut outcomes = resolve_all(ctx, caller.org_id, caller.user_id, &[id], &decision).await?;
    match outcomes.remove(&id) {
        Some(Ok(())) => {
            let row = load(ctx, caller.org_id, id).await?;
            Ok(json_response(StatusCode::OK, &render(&row)))
        }
        Some(Err(f)) => Err(f.into_api()),
        None => Err(ApiError::internal("resolution produced no outcome")),
    }
}

/// `POST /api/v1/orgs/:org_id/conflicts/resolve` — `{ids | filter, resolution, value?}`; answers
/// one result per conflict. Each conflict is atomic on its own; the batch is not.
pub async fn bulk_resolve(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Member).await?;
    // Up to 1000 ids plus a custom value: allow more than a single request's body.
    let body = json_body(req, 4 * JSON_BODY_LIMIT)?;
    let obj = body_object(&body, &["ids", "filter", "resolution", "value"])?;
    let decision = parse_decision(obj, true)?;
    let org = caller.org_id;
    let (ids, more) = match (obj.get("ids"), obj.get("filter")) {
        (Some(_), None) => (uuid_list(&body, "ids", MAX_BULK_IDS)?, false),
        (None, Some(f)) => {
            let filter = bulk_filter(f)?;
            let limit = MAX_BULK_IDS as i64 + 1;
            let mut ids = store::in_org(ctx.db, org, |tx| {
                Box::pin(async move { db::pending_ids(tx, org, &filter, limit).await })
            })
            .await?;
            let more = ids.len() > MAX_BULK_IDS;
            ids.truncate(MAX_BULK_IDS);
            (ids, more)
        }
        _ => {
            return Err(ApiError::unprocessable(
                "name the conflicts by ids or by filter (exactly one of them)",
            ));
        }
    };
    let mut outcomes = resolve_all(ctx, org, caller.user_id, &ids, &decision).await?;
    let mut seen = HashSet::new();
    let mut resolved = 0usize;
    let mut results = Vec::with_capacity(ids.len());
    for id in ids.iter().filter(|id| seen.insert(**id)) {
        match outcomes.remove(id).unwrap_or(Err(Failure::NotFound)) {
            Ok(()) => {
                resolved += 1;
                results.push(json!({"id": id, "status": "resolved"}));
            }
            Err(f) => {
                if let Failure::Db(e) = &f {
                    crate::log::error(
                        "conflict resolution failed",
                        json!({"organization_id": org, "conflict_id": id, "cause": e.to_string()}),
                    );
                }
                results.push(json!({"id": id, "status": "error", "code": f.code(),
                                    "error": f.detail()}));
            }
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "resolution": decision.strategy.as_str(),
            "resolved": resolved,
            "failed": results.len() - resolved,
            "has_more": more,
            "results": results,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn decision(body: Value) -> Result<Decision, ApiError> {
        parse_decision(body.as_object().unwrap(), false)
    }

    #[test]
    fn choices_become_writes_with_the_remote_as_base() {
        let user = Uuid::new_v4();
        let i = input("name", json!("L"), json!("R"), dev("L"));
        for (body, local) in [
            (json!({"resolution": "local"}), "L"),
            (json!({"resolution": "remote"}), "R"),
            (json!({"resolution": "custom", "value": "C"}), "C"),
        ] {
            let w = plan_field(&i, Field::Name, &decision(body).unwrap(), user).unwrap();
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
        let d = decision(json!({"resolution": "custom", "value": "yes"})).unwrap();
        let err = plan_field(&i, Field::Enabled, &d, user).unwrap_err();
        assert_eq!(err.code(), "invalid", "{err:?}");

        let stale = input("name", json!("L"), json!("R"), dev("edited since"));
        let d = decision(json!({"resolution": "remote"})).unwrap();
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

    #[test]
    fn request_bodies_are_checked() {
        assert!(decision(json!({"resolution": "custom"})).is_err());
        assert!(decision(json!({"resolution": "local", "value": 1})).is_err());
        assert!(decision(json!({"resolution": "link"})).is_err());
        assert!(decision(json!({"resolution": "remote", "device_id": Uuid::new_v4()})).is_err());
        assert!(decision(json!({"resolution": "sideways"})).is_err());
        assert!(decision(json!({"resolution": "custom", "value": null})).is_ok());
        assert!(decision(json!({"resolution": "link", "device_id": Uuid::new_v4()})).is_ok());
        let bulk_link = json!({"resolution": "link", "device_id": Uuid::new_v4()});
        assert!(parse_decision(bulk_link.as_object().unwrap(), true).is_err());
        assert_eq!(
            body_object(&json!({"resolution": "local", "x": 1}), &["resolution"])
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn strategy_names_round_trip() {
        for name in Strategy::NAMES {
            assert_eq!(Strategy::parse(name).unwrap().as_str(), name);
        }
    }
}
