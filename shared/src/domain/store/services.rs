//! `device_services`: a tenant's Golioth integrations. Every function runs inside a transaction
//! scoped to the organization (`store::in_org`) and also filters by it explicitly.

use serde_json::Value;
use uuid::Uuid;

use crate::base::ports::{Db, DbError, Param, Row};

/// A service row as the API and the engine read it. Timestamps are RFC 3339 text.
#[derive(Debug, Clone)]
pub struct ServiceRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub config: Value,
    pub credentials: Option<Vec<u8>>,
    pub is_active: bool,
    pub sync_enabled: bool,
    pub sync_interval_seconds: i32,
    pub next_sync_at: Option<String>,
    pub last_sync_at: Option<String>,
    pub last_sync_status: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const COLS: &str = "id, organization_id, name, config, credentials, is_active, sync_enabled, \
    sync_interval_seconds, gs_ts(next_sync_at) AS next_sync_at, gs_ts(last_sync_at) AS last_sync_at, \
    last_sync_status, gs_ts(created_at) AS created_at, gs_ts(updated_at) AS updated_at";

fn from_row(r: &Row) -> Result<ServiceRow, DbError> {
    Ok(ServiceRow {
        id: r.get("id")?,
        org_id: r.get("organization_id")?,
        name: r.get("name")?,
        config: r.get("config")?,
        credentials: r.get("credentials")?,
        is_active: r.get("is_active")?,
        sync_enabled: r.get("sync_enabled")?,
        sync_interval_seconds: r.get("sync_interval_seconds")?,
        next_sync_at: r.get("next_sync_at")?,
        last_sync_at: r.get("last_sync_at")?,
        last_sync_status: r.get("last_sync_status")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

pub async fn list(db: &dyn Db, org: Uuid) -> Result<Vec<ServiceRow>, DbError> {
    db.query(
        &format!("SELECT {COLS} FROM device_services WHERE organization_id = $1 ORDER BY name"),
        &[Param::Uuid(org)],
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub async fn get(db: &dyn Db, org: Uuid, id: Uuid) -> Result<Option<ServiceRow>, DbError> {
    db.query(
        &format!("SELECT {COLS} FROM device_services WHERE organization_id = $1 AND id = $2"),
        &[Param::Uuid(org), Param::Uuid(id)],
    )
    .await?
    .first()
    .map(from_row)
    .transpose()
}

/// A new service. `next_sync_at` starts now when scheduled syncs are enabled.
#[derive(Debug, Clone)]
pub struct NewService {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub config: Value,
    pub credentials: Vec<u8>,
    pub is_active: bool,
    pub sync_enabled: bool,
    pub sync_interval_seconds: i32,
}

/// Insert; a duplicate name in the organization is a unique violation (`23505`).
pub async fn insert(db: &dyn Db, s: &NewService) -> Result<ServiceRow, DbError> {
    let rows = db
        .query(
            &format!(
                "INSERT INTO device_services (id, organization_id, name, config, credentials, is_active, \
                     sync_enabled, sync_interval_seconds, next_sync_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $7 THEN now() END) \
                 RETURNING {COLS}"
            ),
            &[
                Param::Uuid(s.id),
                Param::Uuid(s.org_id),
                Param::Text(s.name.clone()),
                Param::Jsonb(s.config.clone()),
                Param::Bytes(s.credentials.clone()),
                Param::Bool(s.is_active),
                Param::Bool(s.sync_enabled),
                Param::Int32(s.sync_interval_seconds),
            ],
        )
        .await?;
    rows.first()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| DbError::Decode("insert returned no row".into()))
}

/// Fields to change; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct ServiceUpdate {
    pub name: Option<String>,
    pub config: Option<Value>,
    pub credentials: Option<Vec<u8>>,
    pub is_active: Option<bool>,
    pub sync_enabled: Option<bool>,
    pub sync_interval_seconds: Option<i32>,
}

pub async fn update(
    db: &dyn Db,
    org: Uuid,
    id: Uuid,
    u: &ServiceUpdate,
) -> Result<Option<ServiceRow>, DbError> {
    let rows = db
        .query(
            &format!(
                "UPDATE device_services SET \
                     name = coalesce($3, name), \
                     config = coalesce($4, config), \
                     credentials = coalesce($5, credentials), \
                     is_active = coalesce($6, is_active), \
                     sync_enabled = coalesce($7, sync_enabled), \
                     sync_interval_seconds = coalesce($8, sync_interval_seconds), \
                     next_sync_at = CASE WHEN coalesce($7, sync_enabled) \
                                         THEN coalesce(next_sync_at, now()) END, \
                     updated_at = now() \
                 WHERE organization_id = $1 AND id = $2 \
                 RETURNING {COLS}"
            ),
            &[
                Param::Uuid(org),
                Param::Uuid(id),
                u.name.clone().into(),
                u.config.clone().into(),
                u.credentials.clone().map_or(Param::Null, Param::Bytes),
                u.is_active.into(),
                u.sync_enabled.into(),
                u.sync_interval_seconds.into(),
            ],
        )
        .await?;
    rows.first().map(from_row).transpose()
}

pub async fn delete(db: &dyn Db, org: Uuid, id: Uuid) -> Result<bool, DbError> {
    let n = db
        .execute(
            "DELETE FROM device_services WHERE organization_id = $1 AND id = $2",
            &[Param::Uuid(org), Param::Uuid(id)],
        )
        .await?;
    Ok(n > 0)
}

/// The organization owning a service, across tenants (a SECURITY DEFINER function that returns
/// only the id). Used by the webhook, which knows only the service id.
pub async fn owner_of(db: &dyn Db, service: Uuid) -> Result<Option<Uuid>, DbError> {
    let rows = db
        .query("SELECT gs_service_org($1) AS org", &[Param::Uuid(service)])
        .await?;
    Ok(rows
        .first()
        .map(|r| r.get::<Option<Uuid>>("org"))
        .transpose()?
        .flatten())
}

/// One page of every service's encrypted credentials, across organizations, ordered by id.
/// Only for the privileged key-rotation path (run as the owner role, which RLS does not bind).
pub async fn credentials_page(
    db: &dyn Db,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid, Vec<u8>)>, DbError> {
    let rows = db
        .query(
            "SELECT id, organization_id, credentials FROM device_services \
             WHERE credentials IS NOT NULL AND ($1::text IS NULL OR id > $1::text::uuid) \
             ORDER BY id LIMIT $2",
            &[after.map(|u| u.to_string()).into(), Param::Int64(limit)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.get("id")?,
                r.get("organization_id")?,
                r.get("credentials")?,
            ))
        })
        .collect()
}

/// Replace a service's credentials if they are still `old` (compare-and-set, so a concurrent
/// update through the API is never overwritten). Returns whether the row changed.
pub async fn replace_credentials(
    db: &dyn Db,
    id: Uuid,
    old: &[u8],
    new: &[u8],
) -> Result<bool, DbError> {
    let n = db
        .execute(
            "UPDATE device_services SET credentials = $3 WHERE id = $1 AND credentials = $2",
            &[
                Param::Uuid(id),
                Param::Bytes(old.to_vec()),
                Param::Bytes(new.to_vec()),
            ],
        )
        .await?;
    Ok(n == 1)
}
