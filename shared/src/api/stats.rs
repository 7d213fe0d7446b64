//! GET …/services/:service_id/stats: runs, success rate, devices synced, pending conflicts, durations.

use super::{ApiResult, Ctx, Request};
use crate::error::ApiError;
use crate::routing::Params;

pub async fn get(_req: &Request, _params: &Params, _ctx: &Ctx<'_>) -> ApiResult {
    Err(ApiError::not_implemented("get"))
}
