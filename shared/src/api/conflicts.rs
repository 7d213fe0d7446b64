//! Conflicts: list, inspect, resolve one or many.

use super::{ApiResult, Ctx, Request};
use crate::error::ApiError;
use crate::routing::Params;

pub async fn list(_req: &Request, _params: &Params, _ctx: &Ctx<'_>) -> ApiResult {
    Err(ApiError::not_implemented("list"))
}

pub async fn get(_req: &Request, _params: &Params, _ctx: &Ctx<'_>) -> ApiResult {
    Err(ApiError::not_implemented("get"))
}

pub async fn resolve(_req: &Request, _params: &Params, _ctx: &Ctx<'_>) -> ApiResult {
    Err(ApiError::not_implemented("resolve"))
}

pub async fn bulk_resolve(_req: &Request, _params: &Params, _ctx: &Ctx<'_>) -> ApiResult {
    Err(ApiError::not_implemented("bulk_resolve"))
}
