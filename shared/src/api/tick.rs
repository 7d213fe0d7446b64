//! POST /internal/tick: the scheduler's entry point, authenticated by the internal token (constant
//! time). It ignores the body (the cron trigger sends none) and answers what the tick did.

use std::time::Duration;

use http::StatusCode;

use super::{ApiResult, Ctx, Request, json_response};
use crate::api::auth;
use crate::api::routing::Params;
use crate::app::engine;
use crate::base::error::ApiError;

pub async fn tick(req: &Request, _params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    auth::authorize_internal(req, ctx)?;
    let budget = Duration::from_millis(ctx.settings.slice_budget_ms);
    let outcome = engine::tick(ctx, ctx.clock.now(), budget).await;
    let body = serde_json::to_value(&outcome).map_err(ApiError::internal)?;
    Ok(json_response(StatusCode::OK, &body))
}
