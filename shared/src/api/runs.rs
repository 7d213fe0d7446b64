//! Sync runs: list (filtered by service, status and time, cursor pagination), inspect, cancel.
//! Another organization's run is a 404 like a missing one.

use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth;
use super::input::{decode_cursor, encode_cursor, page_limit, query};
use super::{ApiResult, Ctx, Request, json_response};
use crate::api::routing::Params;
use crate::app::access::Role;
use crate::app::engine::progress::Stats;
use crate::app::runs::{self as uc, Cancelled};
use crate::base::error::ApiError;
use crate::domain::store::runs::{RunFilter, RunRow};

const STATUSES: &[&str] = &[
    "queued",
    "running",
    "completed",
    "completed_with_errors",
    "failed",
    "cancelled",
];

/// A run as the API shows it: the original platform's `{operation_id, status, summary, details}`
/// plus progress and bookkeeping.
pub(crate) fn render(run: &RunRow) -> Value {
    let stats = Stats::from_json(&run.stats);
    let mut progress = if stats.progress.is_object() {
        stats.progress.clone()
    } else {
        json!({})
    };
    progress["phase"] = json!(run.phase.as_deref().unwrap_or("pending"));
    progress["pages"] = json!(stats.pages);
    progress["slices"] = json!(stats.slices);
    if let Some(c) = stats.listing_complete {
        progress["listing_complete"] = json!(c);
    }
    json!({
        "operation_id": run.id,
        "id": run.id,
        "service_id": run.service_id,
        "operation": run.operation,
        "status": run.status,
        "dry_run": run.params.get("dry_run").and_then(Value::as_bool).unwrap_or(false),
        "params": run.params,
        "summary": stats.summary(),
        "details": stats.details,
        "progress": progress,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "run_after": run.run_after,
        "error": run.error,
        "requested_by": run.requested_by,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    })
}

fn uuid_param(
    q: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<Uuid>, ApiError> {
    q.get(key)
        .map(|v| {
            Uuid::parse_str(v).map_err(|_| ApiError::bad_request(format!("{key} must be a uuid")))
        })
        .transpose()
}

/// A keyset cursor `{"before": [created_at, id]}`.
pub(crate) fn before_cursor(
    q: &std::collections::HashMap<String, String>,
) -> Result<Option<(String, Uuid)>, ApiError> {
    let Some(v) = decode_cursor(q)? else {
        return Ok(None);
    };
    let pair = v.get("before").and_then(Value::as_array);
    let ts = pair
        .and_then(|p| p.first())
        .and_then(Value::as_str)
        .filter(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok());
    let id = pair
        .and_then(|p| p.get(1))
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok());
    match (ts, id) {
        (Some(t), Some(id)) => Ok(Some((t.to_owned(), id))),
        _ => Err(ApiError::bad_request("invalid cursor")),
    }
}

/// An optional RFC 3339 query parameter (`since`, `until`); anything else is a 400.
pub fn time_param(
    q: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    q.get(key)
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| ApiError::bad_request(format!("{key} must be an RFC 3339 timestamp")))
        })
        .transpose()
}

pub async fn list(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let q = query(req);
    let limit = page_limit(&q)?;
    let status = match q.get("status") {
        None => None,
        Some(s) if STATUSES.contains(&s.as_str()) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "status must be one of {}",
                STATUSES.join(", ")
            )));
        }
    };
    let filter = RunFilter {
        service_id: uuid_param(&q, "service_id")?,
        status,
        since: time_param(&q, "since")?,
        until: time_param(&q, "until")?,
        before: before_cursor(&q)?,
        limit: limit + 1,
    };
    let rows = uc::list(ctx, caller.org_id, &filter).await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = more
        .then(|| {
            page.last()
                .map(|r| encode_cursor(&json!({"before": [r.created_at, r.id]})))
        })
        .flatten();
    let items: Vec<Value> = page.iter().map(render).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "next_cursor": next}),
    ))
}

pub async fn get(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let id = auth::path_uuid(params, "run_id")?;
    let run = uc::get(ctx, caller.org_id, id).await?;
    Ok(json_response(StatusCode::OK, &render(&run)))
}

pub async fn cancel(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Member).await?;
    let id = auth::path_uuid(params, "run_id")?;
    match uc::cancel(ctx, caller.org_id, id).await? {
        Cancelled::Now(run) => Ok(json_response(StatusCode::OK, &render(&run))),
        Cancelled::AlreadyEnded(run) => Err(ApiError::conflict(format!(
            "the run already ended ({})",
            run.status
        ))
        .with_extension("run", render(&run))),
    }
}
