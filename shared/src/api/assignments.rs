//! Assignments: which local devices a service exports to Golioth (list / add / remove) — the
//! HTTP side of [`crate::app::services::assignments`], `assign` and `unassign`.

use http::StatusCode;
use serde_json::json;

use super::auth;
use super::input::{
    JSON_BODY_LIMIT, MAX_BULK_IDS, decode_cursor, encode_cursor, json_body, page_limit, query,
    uuid_list,
};
use super::{ApiResult, Ctx, Request, json_response};
use crate::api::routing::Params;
use crate::app::access::Role;
use crate::app::services;
use crate::base::error::ApiError;

pub async fn list(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let service = auth::path_uuid(params, "service_id")?;
    let q = query(req);
    let limit = page_limit(&q)?;
    let after = match decode_cursor(&q)? {
        None => None,
        Some(v) => Some(
            v.get("after")
                .and_then(|a| a.as_str())
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .ok_or_else(|| ApiError::bad_request("invalid cursor"))?,
        ),
    };
    let rows = services::assignments(ctx, caller.org_id, service, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = more
        .then(|| {
            page.last()
                .map(|r| encode_cursor(&json!({"after": r.device_id})))
        })
        .flatten();
    let items: Vec<_> = page
        .iter()
        .map(|r| {
            json!({
                "device_id": r.device_id,
                "device_name": r.device_name,
                "external_device_id": r.external_device_id,
                "sync_status": r.sync_status,
                "last_sync": r.last_sync,
                "last_error": r.last_error,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "next_cursor": next}),
    ))
}

pub async fn add(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Admin).await?;
    let service = auth::path_uuid(params, "service_id")?;
    let body = json_body(req, JSON_BODY_LIMIT)?;
    let ids = uuid_list(&body, "device_ids", MAX_BULK_IDS)?;
    let (added, missing) = services::assign(ctx, caller.org_id, service, &ids).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"added": added, "not_found": missing}),
    ))
}

pub async fn remove(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Admin).await?;
    let service = auth::path_uuid(params, "service_id")?;
    let body = json_body(req, JSON_BODY_LIMIT)?;
    let ids = uuid_list(&body, "device_ids", MAX_BULK_IDS)?;
    let removed = services::unassign(ctx, caller.org_id, service, &ids).await?;
    Ok(json_response(StatusCode::OK, &json!({"removed": removed})))
}
