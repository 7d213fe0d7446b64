//! Services (Golioth integrations): create, list, read, update, delete, and test the key.
//! Secrets are write-only: responses show whether each is set and its last 4 characters.

use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use super::input::{JSON_BODY_LIMIT, json_body};
use super::{ApiResult, Ctx, Request, json_response};
use crate::auth::{self, Role};
use crate::crypto::{Credentials, Keyring};
use crate::error::ApiError;
use crate::golioth::{ClientConfig, GoliothClient, GoliothError, ProjectId};
use crate::routing::Params;
use crate::service::{SecretChange, ServiceConfig, ServiceWrite};
use crate::settings::{Secret, Settings};
use crate::store::{self, services::ServiceRow};

pub(crate) fn keyring(ctx: &Ctx<'_>) -> Result<Keyring, ApiError> {
    let key = Settings::require(&ctx.settings.encryption_key, "encryption_key")?;
    Keyring::parse(key).map_err(ApiError::internal)
}

/// Decrypt a service's credentials (empty when none were stored).
pub(crate) fn credentials(ring: &Keyring, row: &ServiceRow) -> Result<Credentials, ApiError> {
    match &row.credentials {
        None => Ok(Credentials::default()),
        Some(bytes) => {
            Credentials::open(ring, row.org_id, row.id, bytes).map_err(ApiError::internal)
        }
    }
}

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
    render(row, credentials(ring, row).ok().as_ref())
}

fn apply(change: &SecretChange, slot: &mut Option<String>) {
    match change {
        SecretChange::Keep => {}
        SecretChange::Clear => *slot = None,
        SecretChange::Set(v) => *slot = Some(v.clone()),
    }
}

/// Apply secret changes; a new webhook secret moves the current one to "previous" so senders
/// configured with it keep working during rotation (unless "previous" is set explicitly).
fn merge_secrets(mut creds: Credentials, w: &ServiceWrite) -> Credentials {
    apply(&w.api_key, &mut creds.api_key);
    if let SecretChange::Set(new) = &w.webhook_secret
        && w.webhook_secret_previous == SecretChange::Keep
        && creds.webhook_secret.as_deref() != Some(new.as_str())
    {
        creds.webhook_secret_previous = creds.webhook_secret.take();
    }
    apply(&w.webhook_secret, &mut creds.webhook_secret);
    apply(
        &w.webhook_secret_previous,
        &mut creds.webhook_secret_previous,
    );
    creds
}

fn duplicate_name(e: crate::ports::DbError) -> ApiError {
    if e.is_unique_violation() {
        ApiError::conflict("a service with this name already exists in the organization")
    } else {
        e.into()
    }
}

pub async fn list(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let ring = keyring(ctx)?;
    let org = caller.org_id;
    let rows = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::services::list(tx, org).await })
    })
    .await?;
    let items: Vec<Value> = rows.iter().map(|r| render_with(&ring, r)).collect();
    Ok(json_response(StatusCode::OK, &json!({"items": items})))
}

pub async fn get(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let id = auth::path_uuid(params, "service_id")?;
    let ring = keyring(ctx)?;
    let row = load(ctx, caller.org_id, id).await?;
    Ok(json_response(StatusCode::OK, &render_with(&ring, &row)))
}

/// Load a service of the organization or answer 404.
pub(crate) async fn load(ctx: &Ctx<'_>, org: Uuid, id: Uuid) -> Result<ServiceRow, ApiError> {
    store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::services::get(tx, org, id).await })
    })
    .await?
    .ok_or_else(|| ApiError::not_found("no such service"))
}

pub async fn create(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Admin).await?;
    let body = json_body(req, JSON_BODY_LIMIT)?;
    let w = ServiceWrite::parse(&body, true, &ctx.settings.golioth_base_urls)?;
    let ring = keyring(ctx)?;
    let id = Uuid::new_v4();
    let creds = merge_secrets(Credentials::default(), &w);
    let new = store::services::NewService {
        id,
        org_id: caller.org_id,
        name: w.name.clone().unwrap_or_default(),
        config: w
            .config
            .as_ref()
            .map(ServiceConfig::to_json)
            .unwrap_or_default(),
        credentials: creds
            .seal(&ring, caller.org_id, id)
            .map_err(ApiError::internal)?,
        is_active: w.is_active.unwrap_or(true),
        sync_enabled: w.sync_enabled.unwrap_or(false),
        sync_interval_seconds: w.sync_interval_seconds.unwrap_or(900),
    };
    let row = store::in_org(ctx.db, caller.org_id, |tx| {
        Box::pin(async move { store::services::insert(tx, &new).await })
    })
    .await
    .map_err(duplicate_name)?;
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
    let ring = keyring(ctx)?;
    let org = caller.org_id;
    let touches_secrets = [&w.api_key, &w.webhook_secret, &w.webhook_secret_previous]
        .iter()
        .any(|c| **c != SecretChange::Keep);
    let row = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move {
            let current = store::services::get(tx, org, id)
                .await?
                .ok_or_else(|| ApiError::not_found("no such service"))?;
            let credentials = if touches_secrets {
                let merged = merge_secrets(credentials(&ring, &current)?, &w);
                Some(merged.seal(&ring, org, id).map_err(ApiError::internal)?)
            } else {
                None
            };
            let update = store::services::ServiceUpdate {
                name: w.name.clone(),
                config: w.config.as_ref().map(ServiceConfig::to_json),
                credentials,
                is_active: w.is_active,
                sync_enabled: w.sync_enabled,
                sync_interval_seconds: w.sync_interval_seconds,
            };
            store::services::update(tx, org, id, &update)
                .await
                .map_err(duplicate_name)?
                .ok_or_else(|| ApiError::not_found("no such service"))
        })
    })
    .await?;
    super::service_cache::forget(id);
    let ring = keyring(ctx)?;
    Ok(json_response(StatusCode::OK, &render_with(&ring, &row)))
}

pub async fn delete(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Admin).await?;
    let id = auth::path_uuid(params, "service_id")?;
    let org = caller.org_id;
    let deleted = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::services::delete(tx, org, id).await })
    })
    .await?;
    super::service_cache::forget(id);
    if !deleted {
        return Err(ApiError::not_found("no such service"));
    }
    let mut resp = http::Response::new(bytes::Bytes::new());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// Build a Golioth client for a service from its config and decrypted key.
pub(crate) fn golioth_config(
    ctx: &Ctx<'_>,
    row: &ServiceRow,
    creds: &Credentials,
) -> Result<ClientConfig, ApiError> {
    let config = ServiceConfig::parse(&row.config, &ctx.settings.golioth_base_urls)
        .map_err(|e| ApiError::internal(format!("stored config no longer valid: {e}")))?;
    let key = creds
        .api_key
        .clone()
        .ok_or_else(|| ApiError::unprocessable("the service has no Golioth API key"))?;
    let project = ProjectId::parse(&config.project_id).map_err(|_| {
        ApiError::unprocessable("the service's project_id is not a Golioth project id")
    })?;
    ClientConfig::new(
        config.base_url(ctx.settings.default_golioth_base_url()),
        project,
        Secret::new(key),
    )
    .map_err(|e| ApiError::unprocessable(format!("invalid Golioth base URL: {e}")))
}

/// How a Golioth failure is reported to our client: never the key, never a URL.
pub(crate) fn golioth_problem(e: &GoliothError) -> ApiError {
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
    let ring = keyring(ctx)?;
    let row = load(ctx, caller.org_id, id).await?;
    let creds = credentials(&ring, &row)?;
    let config = golioth_config(ctx, &row, &creds)?;
    let client = GoliothClient::new(ctx.http, ctx.clock, config);
    let project = client
        .get_project()
        .await
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
