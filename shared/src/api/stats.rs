//! GET …/services/:service_id/stats: runs, success rate, average duration over a window
//! (`window_days`, default 30), devices linked / synced / in error, pending conflicts, last sync.

use http::StatusCode;
use serde_json::json;

use super::auth;
use super::input::query;
use super::{ApiResult, Ctx, Request, json_response};
use crate::api::routing::Params;
use crate::app::access::Role;
use crate::app::runs;
use crate::base::error::ApiError;

pub const DEFAULT_WINDOW_DAYS: i64 = 30;
pub const MAX_WINDOW_DAYS: i64 = 366;

pub async fn get(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let service = auth::path_uuid(params, "service_id")?;
    let q = query(req);
    let days = match q.get("window_days") {
        None => DEFAULT_WINDOW_DAYS,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=MAX_WINDOW_DAYS).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "window_days must be an integer between 1 and {MAX_WINDOW_DAYS}"
                )));
            }
        },
    };
    let runs::ServiceStats {
        mut stats,
        since,
        until,
    } = runs::stats(ctx, caller.org_id, service, days).await?;
    stats["service_id"] = json!(service);
    stats["window"] = json!({
        "days": days,
        "since": since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "until": until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    Ok(json_response(StatusCode::OK, &stats))
}
