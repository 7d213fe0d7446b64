//! POST …/services/:service_id/sync: start (or return the running) sync run and process slices within the request budget.

use super::{ApiResult, Ctx, Request};
use crate::error::ApiError;
use crate::routing::Params;

pub async fn start(_req: &Request, _params: &Params, _ctx: &Ctx<'_>) -> ApiResult {
    Err(ApiError::not_implemented("start"))
}
