//! POST /internal/tick: authenticated by the internal token; runs one scheduler tick.

use super::{ApiResult, Ctx, Request};
use crate::error::ApiError;
use crate::routing::Params;

pub async fn tick(_req: &Request, _params: &Params, _ctx: &Ctx<'_>) -> ApiResult {
    Err(ApiError::not_implemented("tick"))
}
