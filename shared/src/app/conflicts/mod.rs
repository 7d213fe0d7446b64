//! Conflict resolution, the use case (DESIGN §4 "Resolving a conflict", §5.2): list, inspect,
//! resolve one or many. The HTTP side (parsing a decision, rendering) is `api::conflicts`.
//!
//! A resolution never writes Golioth. It writes the chosen value locally, sets the assignment's
//! base for the field to Golioth's current value, marks the conflict resolved, writes an audit row
//! and queues a `device_refresh` run; the ordinary merge of that run pushes the choice out. The
//! decision itself is the sync core's [`crate::domain::sync::resolve`]; [`plan`] checks it against
//! the device as it is now (pure), [`apply`] carries it out: field conflicts in chunked bulk
//! statements, identity and delete-vs-modify conflicts one transaction each.
//!
//! Resolutions ([`Strategy`]):
//! - field conflicts (`concurrent_modification`, `first_sync_mismatch`): `local`, `remote`, or
//!   `custom` with a `value` type-checked against the field;
//! - `delete_vs_modify` (field `device`): `local` or `remote` keeps that side's state, as
//!   [`crate::domain::sync::DeviceResolution`] describes (accept the deletion, re-create, or restore);
//! - `identity` (a Golioth device with several local candidates): `link` with `device_id`, one of
//!   the local candidates the conflict lists, or `create` to make a new local device from the
//!   Golioth device's name and hardware ids. Either links with no base, so the next sync treats
//!   the pair as a first sync.
//!
//! Every local write is conditional on the device `version` read when the resolution was planned;
//! a device edited meanwhile is re-read and re-planned (up to [`MAX_ATTEMPTS`] times), and a
//! conflict whose device value changed since it was detected answers 409 instead of overwriting
//! an edit the person never saw.
//!
//! Uses `domain::{store, sync}` and `base`.

mod apply;
mod plan;

use std::collections::HashSet;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::base::ctx::Ctx;
use crate::base::error::ApiError;
use crate::base::ports::DbError;
use crate::domain::store::{self, conflicts as db};
use crate::domain::sync::{Choice, ConflictField, ResolveError};

/// How often a resolution is re-planned when its device changed between read and write.
const MAX_ATTEMPTS: usize = 3;
/// Field resolutions carried out by one statement.
const APPLY_CHUNK: usize = 250;

/// The states a conflict can be in.
pub const STATUSES: [&str; 4] = ["pending", "resolved", "auto_resolved", "superseded"];
/// The kinds of conflict.
pub const TYPES: [&str; 4] = [
    "concurrent_modification",
    "delete_vs_modify",
    "identity",
    "first_sync_mismatch",
];

/// The resolutions a conflict accepts, so a console can offer exactly those.
/// The resolutions a conflict accepts, so a console can offer exactly those.
pub fn allowed_resolutions(field_name: &str) -> &'static [&'static str] {
    match ConflictField::parse(field_name) {
        Some(ConflictField::Field(_)) => &["local", "remote", "custom"],
        Some(ConflictField::Device) => &["local", "remote"],
        Some(ConflictField::Identity) => &["link", "create"],
        None => &[],
    }
}

/// The person's decision, as the body names it (`resolution_strategy` stores the same word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Local,
    Remote,
    Custom,
    Link,
    Create,
}

impl Strategy {
    pub const NAMES: [&'static str; 5] = ["local", "remote", "custom", "link", "create"];

    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "local" => Some(Strategy::Local),
            "remote" => Some(Strategy::Remote),
            "custom" => Some(Strategy::Custom),
            "link" => Some(Strategy::Link),
            "create" => Some(Strategy::Create),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        Strategy::NAMES[self as usize]
    }
}

/// A validated resolution request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub strategy: Strategy,
    /// The custom value (may be JSON null, e.g. to clear a cohort).
    pub value: Option<Value>,
    /// The local candidate an identity conflict is linked to.
    pub device_id: Option<Uuid>,
}

impl Decision {
    /// The sync core's choice, for field and device conflicts.
    pub(super) fn choice(&self) -> Option<Choice> {
        match self.strategy {
            Strategy::Local => Some(Choice::Local),
            Strategy::Remote => Some(Choice::Remote),
            Strategy::Custom => self.value.clone().map(Choice::Custom),
            Strategy::Link | Strategy::Create => None,
        }
    }
}

/// Why one conflict was not resolved.
#[derive(Debug)]
pub enum Failure {
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
    /// A stable machine-readable code (`code` in responses).
    pub fn code(&self) -> &'static str {
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

    /// A sentence for a person.
    pub fn detail(&self) -> String {
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

/// Conflicts of the organization, newest first, after the keyset cursor `after`.
pub async fn list(
    ctx: &Ctx<'_>,
    org: Uuid,
    filter: &db::Filter,
    after: Option<&db::After>,
    limit: i64,
) -> Result<Vec<db::ConflictRow>, ApiError> {
    Ok(store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { db::list(tx, org, filter, after, limit).await })
    })
    .await?)
}

/// One conflict of the organization, or a 404 problem.
pub async fn get(ctx: &Ctx<'_>, org: Uuid, id: Uuid) -> Result<db::ConflictRow, ApiError> {
    store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { db::get(tx, org, id).await })
    })
    .await?
    .ok_or_else(|| ApiError::not_found("no such conflict"))
}

/// Resolve one conflict; answers it as it now stands, or why it was not resolved.
pub async fn resolve_one(
    ctx: &Ctx<'_>,
    org: Uuid,
    user: Uuid,
    id: Uuid,
    decision: &Decision,
) -> Result<Result<db::ConflictRow, Failure>, ApiError> {
    let mut outcomes = apply::resolve_all(ctx, org, user, &[id], decision).await?;
    match outcomes.remove(&id) {
        Some(Ok(())) => Ok(Ok(get(ctx, org, id).await?)),
        Some(Err(f)) => Ok(Err(f)),
        None => Err(ApiError::internal("resolution produced no outcome")),
    }
}

/// Which conflicts a bulk resolution covers.
pub enum Selection {
    /// These (duplicates count once).
    Ids(Vec<Uuid>),
    /// The pending conflicts matching the filter, oldest first, at most `max` of them.
    Filter { filter: db::Filter, max: usize },
}

/// What a bulk resolution did: one result per conflict, in the order asked.
pub struct Bulk {
    pub results: Vec<(Uuid, Result<(), Failure>)>,
    /// The filter matched more than `max` conflicts; the rest are still pending.
    pub has_more: bool,
}

impl Bulk {
    pub fn resolved(&self) -> usize {
        self.results.iter().filter(|(_, r)| r.is_ok()).count()
    }
}

/// Resolve many conflicts with one decision. Each conflict is atomic on its own; the batch is
/// not. A database failure of one conflict is logged with its cause and reported as internal.
pub async fn resolve_many(
    ctx: &Ctx<'_>,
    org: Uuid,
    user: Uuid,
    selection: Selection,
    decision: &Decision,
) -> Result<Bulk, ApiError> {
    let (ids, has_more) = selected(ctx, org, selection).await?;
    let mut outcomes = apply::resolve_all(ctx, org, user, &ids, decision).await?;
    let mut seen = HashSet::new();
    let mut results = Vec::with_capacity(ids.len());
    for id in ids.iter().filter(|id| seen.insert(**id)) {
        let outcome = outcomes.remove(id).unwrap_or(Err(Failure::NotFound));
        if let Err(Failure::Db(e)) = &outcome {
            crate::base::log::error(
                "conflict resolution failed",
                json!({"organization_id": org, "conflict_id": id, "cause": e.to_string()}),
            );
        }
        results.push((*id, outcome));
    }
    Ok(Bulk { results, has_more })
}

/// The conflicts a selection names (deduplicated, in order) and whether a filter left more.
async fn selected(
    ctx: &Ctx<'_>,
    org: Uuid,
    selection: Selection,
) -> Result<(Vec<Uuid>, bool), ApiError> {
    match selection {
        Selection::Ids(ids) => {
            let mut seen = HashSet::new();
            Ok((
                ids.into_iter().filter(|id| seen.insert(*id)).collect(),
                false,
            ))
        }
        Selection::Filter { filter, max } => {
            let limit = max as i64 + 1;
            let filter = &filter;
            let mut ids = store::in_org(ctx.db, org, |tx| {
                Box::pin(async move { db::pending_ids(tx, org, filter, limit).await })
            })
            .await?;
            let more = ids.len() > max;
            ids.truncate(max);
            Ok((ids, more))
        }
    }
}

/// One conflict of a bulk preview: what resolving it would do, or why it would fail.
pub type PreviewOutcome = Result<Value, Failure>;

/// What [`resolve_many`] would do with the same selection and decision, writing nothing (the bulk
/// resolve's `dry_run`): each conflict is loaded and checked exactly as a resolution checks it.
pub async fn preview_many(
    ctx: &Ctx<'_>,
    org: Uuid,
    user: Uuid,
    selection: Selection,
    decision: &Decision,
) -> Result<(Vec<(Uuid, PreviewOutcome)>, bool), ApiError> {
    let (ids, has_more) = selected(ctx, org, selection).await?;
    let ids_ref = &ids;
    let inputs = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { db::load_for_resolution(tx, org, ids_ref, false).await })
    })
    .await?;
    let mut by_id: std::collections::HashMap<Uuid, &db::ResolveInput> =
        inputs.iter().map(|i| (i.conflict.id, i)).collect();
    let mut claimed = HashSet::new();
    let results = ids
        .iter()
        .map(|id| {
            let outcome = match by_id.remove(id) {
                None => Err(Failure::NotFound),
                Some(input) => plan::preview(input, decision, user).and_then(|v| {
                    // Two conflicts of one request setting the same device field fail as when
                    // applying them.
                    let field_write = v.get("local_now").is_some();
                    match input.conflict.device_id {
                        Some(device)
                            if field_write
                                && !claimed.insert((device, input.conflict.field_name.clone())) =>
                        {
                            Err(Failure::Conflict(format!(
                                "another conflict of this request already sets the device's {}",
                                input.conflict.field_name
                            )))
                        }
                        _ => Ok(v),
                    }
                }),
            };
            (*id, outcome)
        })
        .collect();
    Ok((results, has_more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_round_trip() {
        for name in Strategy::NAMES {
            assert_eq!(Strategy::parse(name).unwrap().as_str(), name);
        }
    }
}
