//! Service management (Golioth integrations) and credential loading: create, read, update,
//! delete and test a service; open the keyring, decrypt a service's credentials and build its
//! Golioth client configuration (also used by sync runs). Secrets are merged here: a new webhook
//! secret moves the current one to "previous" for rotation. Uses `domain` (store, crypto,
//! service, golioth) and `base`; knows nothing of HTTP.

use uuid::Uuid;

use crate::app::service_cache;
use crate::base::ctx::Ctx;
use crate::base::error::ApiError;
use crate::base::ports::DbError;
use crate::base::settings::{Secret, Settings};
use crate::domain::crypto::{Credentials, Keyring};
use crate::domain::golioth::{ClientConfig, GoliothClient, GoliothError, Project, ProjectId};
use crate::domain::service::{SecretChange, ServiceConfig, ServiceWrite};
use crate::domain::store::{self, assignments::AssignmentRow, services::ServiceRow};

/// The keyring of `encryption_key` (the current key and any older ones still opening).
pub fn keyring(ctx: &Ctx<'_>) -> Result<Keyring, ApiError> {
    let key = Settings::require(&ctx.settings.encryption_key, "encryption_key")?;
    Keyring::parse(key).map_err(ApiError::internal)
}

/// Decrypt a service's credentials (empty when none were stored).
pub fn credentials(ring: &Keyring, row: &ServiceRow) -> Result<Credentials, ApiError> {
    match &row.credentials {
        None => Ok(Credentials::default()),
        Some(bytes) => {
            Credentials::open(ring, row.org_id, row.id, bytes).map_err(ApiError::internal)
        }
    }
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

fn duplicate_name(e: DbError) -> ApiError {
    if e.is_unique_violation() {
        ApiError::conflict("a service with this name already exists in the organization")
    } else {
        e.into()
    }
}

/// The organization's services.
pub async fn list(ctx: &Ctx<'_>, org: Uuid) -> Result<Vec<ServiceRow>, ApiError> {
    Ok(store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::services::list(tx, org).await })
    })
    .await?)
}

/// Load a service of the organization, or a 404 problem.
pub async fn load(ctx: &Ctx<'_>, org: Uuid, id: Uuid) -> Result<ServiceRow, ApiError> {
    store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::services::get(tx, org, id).await })
    })
    .await?
    .ok_or_else(|| ApiError::not_found("no such service"))
}

/// Create a service from a validated write; answers the row and its (new) credentials.
pub async fn create(
    ctx: &Ctx<'_>,
    org: Uuid,
    w: &ServiceWrite,
) -> Result<(ServiceRow, Credentials), ApiError> {
    let ring = keyring(ctx)?;
    let id = Uuid::new_v4();
    let creds = merge_secrets(Credentials::default(), w);
    let new = store::services::NewService {
        id,
        org_id: org,
        name: w.name.clone().unwrap_or_default(),
        config: w
            .config
            .as_ref()
            .map(ServiceConfig::to_json)
            .unwrap_or_default(),
        credentials: creds.seal(&ring, org, id).map_err(ApiError::internal)?,
        is_active: w.is_active.unwrap_or(true),
        sync_enabled: w.sync_enabled.unwrap_or(false),
        sync_interval_seconds: w.sync_interval_seconds.unwrap_or(900),
    };
    let row = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::services::insert(tx, &new).await })
    })
    .await
    .map_err(duplicate_name)?;
    Ok((row, creds))
}

/// Apply a validated partial write to a service; secrets are re-sealed only when one changes.
/// Webhook deliveries see the change at once (the service cache forgets the service).
pub async fn update(
    ctx: &Ctx<'_>,
    org: Uuid,
    id: Uuid,
    w: &ServiceWrite,
) -> Result<ServiceRow, ApiError> {
    let ring = keyring(ctx)?;
    let touches_secrets = [&w.api_key, &w.webhook_secret, &w.webhook_secret_previous]
        .iter()
        .any(|c| **c != SecretChange::Keep);
    let ring = &ring;
    let row = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move {
            let current = store::services::get(tx, org, id)
                .await?
                .ok_or_else(|| ApiError::not_found("no such service"))?;
            let credentials = if touches_secrets {
                let merged = merge_secrets(credentials(ring, &current)?, w);
                Some(merged.seal(ring, org, id).map_err(ApiError::internal)?)
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
    service_cache::forget(id);
    Ok(row)
}

/// Delete a service (its links, conflicts, runs and log go with it); a 404 problem if it does
/// not exist in the organization.
pub async fn delete(ctx: &Ctx<'_>, org: Uuid, id: Uuid) -> Result<(), ApiError> {
    let deleted = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::services::delete(tx, org, id).await })
    })
    .await?;
    service_cache::forget(id);
    if deleted {
        Ok(())
    } else {
        Err(ApiError::not_found("no such service"))
    }
}

/// Build a Golioth client configuration for a service from its config and decrypted key.
pub fn golioth_config(
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

/// Refuse early what no sync attempt could do: no key, an unusable stored config.
pub fn check_usable(ctx: &Ctx<'_>, row: &ServiceRow) -> Result<(), ApiError> {
    let ring = keyring(ctx)?;
    golioth_config(ctx, row, &credentials(&ring, row)?).map(|_| ())
}

/// Ask Golioth for the service's project with its stored key. The outer error is ours (no such
/// service, unusable settings); the inner one is Golioth's answer.
pub async fn test_connection(
    ctx: &Ctx<'_>,
    org: Uuid,
    id: Uuid,
) -> Result<Result<Project, GoliothError>, ApiError> {
    let ring = keyring(ctx)?;
    let row = load(ctx, org, id).await?;
    let creds = credentials(&ring, &row)?;
    let config = golioth_config(ctx, &row, &creds)?;
    let client = GoliothClient::new(ctx.http, ctx.clock, config);
    Ok(client.get_project().await)
}

/// One page of the devices a service exports (by device id, after `after`).
pub async fn assignments(
    ctx: &Ctx<'_>,
    org: Uuid,
    service: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AssignmentRow>, ApiError> {
    load(ctx, org, service).await?;
    Ok(store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::assignments::list(tx, org, service, after, limit).await })
    })
    .await?)
}

/// Assign live devices of the organization to the service: (newly assigned, ids not found).
pub async fn assign(
    ctx: &Ctx<'_>,
    org: Uuid,
    service: Uuid,
    ids: &[Uuid],
) -> Result<(i64, Vec<String>), ApiError> {
    load(ctx, org, service).await?;
    Ok(store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::assignments::add(tx, org, service, ids).await })
    })
    .await?)
}

/// Remove assignments (the link and its base): how many were removed.
pub async fn unassign(
    ctx: &Ctx<'_>,
    org: Uuid,
    service: Uuid,
    ids: &[Uuid],
) -> Result<u64, ApiError> {
    load(ctx, org, service).await?;
    Ok(store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::assignments::remove(tx, org, service, ids).await })
    })
    .await?)
}
