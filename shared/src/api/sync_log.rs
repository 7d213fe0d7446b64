//! GET …/sync-log: the audit trail, newest first, filtered by service, device, run, status and
//! time (`since`, `until`), with cursor pagination (viewer and up).

use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth;
use super::input::{encode_cursor, page_limit, query};
use super::runs::{before_cursor, time_param};
use super::{ApiResult, Ctx, Request, json_response};
use crate::api::routing::Params;
use crate::app::access::Role;
use crate::app::runs;
use crate::base::error::ApiError;
use crate::domain::store::sync_log::LogFilter;

fn uuid_q(
    q: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<Uuid>, ApiError> {
    q.get(key)
        .map(|v| {
            Uuid::parse_str(v).map_err(|_| ApiError::bad_request(format!("{key} must be a uuid")))
        })
        .transpose()
}

/// A log status as the engine writes them (`success`, `error`, `conflict`, `skipped`, …).
fn is_log_status(s: &str) -> bool {
    (1..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

pub async fn list(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let q = query(req);
    let limit = page_limit(&q)?;
    let status = match q.get("status") {
        None => None,
        Some(s) if is_log_status(s) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "status must be a log status (1-40 lowercase letters and _, e.g. error)",
            ));
        }
    };
    let filter = LogFilter {
        service_id: uuid_q(&q, "service_id")?,
        device_id: uuid_q(&q, "device_id")?,
        run_id: uuid_q(&q, "run_id")?,
        status,
        since: time_param(&q, "since")?,
        until: time_param(&q, "until")?,
        before: before_cursor(&q)?,
        limit: limit + 1,
    };
    let rows = runs::log(ctx, caller.org_id, &filter).await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = more
        .then(|| {
            page.last()
                .map(|r| encode_cursor(&json!({"before": [r.created_at, r.id]})))
        })
        .flatten();
    let items: Vec<Value> = page
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "service_id": r.service_id,
                "run_id": r.run_id,
                "device_id": r.device_id,
                "operation": r.operation,
                "status": r.status,
                "details": r.details,
                "created_at": r.created_at,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "next_cursor": next}),
    ))
}
