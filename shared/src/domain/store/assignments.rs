//! `device_service_assignments` as the API manages them: which local devices a service exports.
//! (The sync engine writes links and bases in bulk elsewhere in the store.)

use uuid::Uuid;

use crate::base::ports::{Db, DbError, Param};

#[derive(Debug, Clone)]
pub struct AssignmentRow {
    pub device_id: Uuid,
    pub device_name: String,
    pub external_device_id: Option<String>,
    pub sync_status: String,
    pub last_sync: Option<String>,
    pub last_error: Option<String>,
}

/// One page of a service's assignments, ordered by device id, after `after`.
pub async fn list(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AssignmentRow>, DbError> {
    let rows = db
        .query(
            "SELECT a.device_id, d.name AS device_name, a.external_device_id, a.sync_status, \
                    gs_ts(a.last_sync) AS last_sync, a.last_error \
             FROM device_service_assignments a JOIN devices d ON d.id = a.device_id \
             WHERE a.organization_id = $1 AND a.service_id = $2 \
               AND ($3::text IS NULL OR a.device_id > $3::text::uuid) \
             ORDER BY a.device_id LIMIT $4",
            &[
                Param::Uuid(org),
                Param::Uuid(service),
                after.map(|u| u.to_string()).into(),
                Param::Int64(limit),
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AssignmentRow {
                device_id: r.get("device_id")?,
                device_name: r.get("device_name")?,
                external_device_id: r.get("external_device_id")?,
                sync_status: r.get("sync_status")?,
                last_sync: r.get("last_sync")?,
                last_error: r.get("last_error")?,
            })
        })
        .collect()
}

/// Assign live devices of the organization; returns (newly assigned, ids not found).
pub async fn add(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    device_ids: &[Uuid],
) -> Result<(i64, Vec<String>), DbError> {
    let ids: Vec<String> = device_ids.iter().map(Uuid::to_string).collect();
    let rows = db
        .query(
            "WITH wanted AS (SELECT DISTINCT unnest($3::text[])::uuid AS id), \
                  found AS (SELECT d.id FROM devices d JOIN wanted w ON d.id = w.id \
                            WHERE d.organization_id = $1 AND d.deleted_at IS NULL), \
                  ins AS (INSERT INTO device_service_assignments (organization_id, device_id, service_id) \
                          SELECT $1, id, $2 FROM found \
                          ON CONFLICT (device_id, service_id) DO NOTHING RETURNING device_id) \
             SELECT (SELECT count(*) FROM ins) AS added, \
                    (SELECT coalesce(array_agg(w.id::text ORDER BY w.id), '{}') FROM wanted w \
                     WHERE w.id NOT IN (SELECT id FROM found)) AS missing",
            &[Param::Uuid(org), Param::Uuid(service), Param::TextArray(ids)],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| DbError::Decode("no result".into()))?;
    Ok((row.get("added")?, row.get("missing")?))
}

/// Remove assignments (the link and its base); returns how many were removed.
pub async fn remove(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    device_ids: &[Uuid],
) -> Result<u64, DbError> {
    let ids: Vec<String> = device_ids.iter().map(Uuid::to_string).collect();
    db.execute(
        "DELETE FROM device_service_assignments \
         WHERE organization_id = $1 AND service_id = $2 AND device_id = ANY($3::text[]::uuid[])",
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            Param::TextArray(ids),
        ],
    )
    .await
}
