//! POST /webhooks/golioth/:service_id: authenticated, idempotent, order-safe Pipeline ingestion.

use super::{ApiResult, Ctx, Request};
use crate::error::ApiError;
use crate::routing::Params;

pub async fn receive(_req: &Request, _params: &Params, _ctx: &Ctx<'_>) -> ApiResult {
    Err(ApiError::not_implemented("receive"))
}
