//! Services (Golioth integrations): the HTTP side of create, list, read, update, delete and test
//! the key — authorization, input parsing and rendering. The rules live in
//! [`crate::app::services`]. Secrets are write-only: responses show whether each is set and its
//! last 4 characters.

use http::StatusCode;
use serde_json::{Value, json};

use super::auth;
use super::input::{JSON_BODY_LIMIT, json_body};
use super::routing::Params;
use super::{ApiResult, Ctx, Request, json_response};
use crate::app::access::Role;
use crate::app::services;
use crate::base::error::ApiError;
use crate::domain::crypto::{Credentials, Keyring};
use crate::domain::golioth::GoliothError;
use crate::domain::service::ServiceWrite;
use crate::domain::store::services::ServiceRow;

fn render(row: &ServiceRow, creds: Option<&Credentials>) -> Value {
    let credentials = match creds {
        Some(c) => c.summary(),
        None => json!({"readable": false}),
    };
    json!({
        "id": row.id,
        "organization_id": row.org_id,
        "name": row.name,
        "service_type": "golioth",
        "config": row.config,
        "credentials": credentials,
        "is_active": row.is_active,
        "sync_enabled": row.sync_enabled,
        "sync_interval_seconds": row.sync_interval_seconds,
        "next_sync_at": row.next_sync_at,
        "last_sync_at": row.last_sync_at,
        "last_sync_status": row.last_sync_status,
        "webhook_path": format!("/webhooks/golioth/{}", row.id),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

fn render_with(ring: &Keyring, row: &ServiceRow) -> Value {
    render(row, services::credentials(ring, row).ok().as_ref())
}

pub async fn list(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let ring = services::keyring(ctx)?;
    let rows = services::list(ctx, caller.org_id).await?;
    let items: Vec<Value> = rows.iter().map(|r| render_with(&ring, r)).collect();
    Ok(json_response(StatusCode::OK, &json!({"items": items})))
}

pub async fn get(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let id = auth::path_uuid(params, "service_id")?;
    let ring = services::keyring(ctx)?;
    let row = services::load(ctx, caller.org_id, id).await?;
    Ok(json_response(StatusCode::OK, &render_with(&ring, &row)))
}

pub async fn create(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Admin).await?;
    let body = json_body(req, JSON_BODY_LIMIT)?;
    let w = ServiceWrite::parse(&body, true, &ctx.settings.golioth_base_urls)?;
    let (row, creds) = services::create(ctx, caller.org_id, &w).await?;
    let mut resp = json_response(StatusCode::CREATED, &render(&row, Some(&creds)));
    if let Ok(loc) =
        http::HeaderValue::from_str(&format!("/api/v1/orgs/{}/services/{}", row.org_id, row.id))
    {
        resp.headers_mut().insert(http::header::LOCATION, loc);
    }
    Ok(resp)
}

pub async fn update(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Admin).await?;
    let id = auth::path_uuid(params, "service_id")?;
    let body = json_body(req, JSON_BODY_LIMIT)?;
    let w = ServiceWrite::parse(&body, false, &ctx.settings.golioth_base_urls)?;
    let row = services::update(ctx, caller.org_id, id, &w).await?;
    let ring = services::keyring(ctx)?;
    Ok(json_response(StatusCode::OK, &render_with(&ring, &row)))
}

pub async fn delete(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Admin).await?;
    let id = auth::path_uuid(params, "service_id")?;
    services::delete(ctx, caller.org_id, id).await?;
    let mut resp = http::Response::new(bytes::Bytes::new());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// How a Golioth failure is reported to our client: never the key, never a URL.
fn golioth_problem(e: &GoliothError) -> ApiError {
    match e {
        // The service's own settings are wrong: the caller can fix them, so a 4xx.
        GoliothError::Unauthorized(_) | GoliothError::Forbidden(_) => {
            ApiError::unprocessable("Golioth rejected the API key for this project").with_extension(
                "golioth_status",
                json!(e.api_status().map(|s| s.http_status)),
            )
        }
        GoliothError::NotFound(_) => ApiError::unprocessable("Golioth does not know this project")
            .with_extension("golioth_status", json!(404)),
        GoliothError::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Gateway Timeout",
            Some("Golioth did not answer in time".into()),
        ),
        other => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "Bad Gateway",
            Some(format!(
                "Golioth request failed ({})",
                other
                    .api_status()
                    .map_or_else(|| "no response".to_owned(), |s| s.http_status.to_string())
            )),
        ),
    }
}

pub async fn test(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Member).await?;
    let id = auth::path_uuid(params, "service_id")?;
    let project = services::test_connection(ctx, caller.org_id, id)
        .await?
        .map_err(|e| golioth_problem(&e))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "ok": true,
            "project": {
                "id": project.id.as_str(),
                "name": project.name,
                "organization_id": project.organization_id.as_ref().map(|o| o.as_str()),
            }
        }),
    ))
}
