//! `golioth_sync_log` (the audit trail, partitioned by month) and the per-service statistics the
//! console shows. Log rows are written in bulk, one statement per slice, through one `jsonb`
//! parameter; reads are keyset-paginated newest first.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::runs::ts;
use crate::base::ports::{Db, DbError, Param};

/// One row to write. Organization, service and run are common to a batch.
#[derive(Debug, Clone, Serialize)]
pub struct LogRow {
    pub device_id: Option<Uuid>,
    pub operation: String,
    pub status: String,
    pub details: Value,
}

/// Insert `rows` for one run of one service in a single statement.
pub async fn insert(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    run: Option<Uuid>,
    rows: &[LogRow],
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let payload = serde_json::to_value(rows).map_err(|e| DbError::Decode(e.to_string()))?;
    db.execute(
        "INSERT INTO golioth_sync_log (organization_id, service_id, run_id, device_id, operation, \
             status, details) \
         SELECT $1, $2, $3::text::uuid, x.device_id, x.operation, x.status, \
                coalesce(x.details, '{}'::jsonb) \
         FROM jsonb_to_recordset($4::jsonb) AS x(device_id uuid, operation text, status text, \
                                                 details jsonb)",
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            run.map(|r| r.to_string()).into(),
            Param::Jsonb(payload),
        ],
    )
    .await
}

/// A log row as read back.
#[derive(Debug, Clone)]
pub struct LogEntryRow {
    pub id: Uuid,
    pub service_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub operation: String,
    pub status: String,
    pub details: Value,
    pub created_at: String,
}

/// Filters of the log list.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub service_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    /// Entries with this status (`success`, `error`, `conflict`, …).
    pub status: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Entries written before this time.
    pub until: Option<DateTime<Utc>>,
    /// Keyset: rows strictly older than `(created_at, id)`.
    pub before: Option<(String, Uuid)>,
    pub limit: i64,
}

/// Log rows of the organization, newest first.
pub async fn list(db: &dyn Db, org: Uuid, f: &LogFilter) -> Result<Vec<LogEntryRow>, DbError> {
    let (before_ts, before_id) = match &f.before {
        Some((t, id)) => (Param::Text(t.clone()), Param::Text(id.to_string())),
        None => (Param::Null, Param::Null),
    };
    let rows = db
        .query(
            "SELECT id, service_id, run_id, device_id, operation, status, details, \
                    gs_ts(created_at) AS created_at \
             FROM golioth_sync_log \
             WHERE organization_id = $1 \
               AND ($2::text IS NULL OR service_id = $2::text::uuid) \
               AND ($3::text IS NULL OR device_id = $3::text::uuid) \
               AND ($4::text IS NULL OR run_id = $4::text::uuid) \
               AND ($5::text IS NULL OR created_at >= $5::text::timestamptz) \
               AND ($6::text IS NULL OR (created_at, id) < ($6::text::timestamptz, $7::text::uuid)) \
               AND ($8::text IS NULL OR status = $8::text) \
               AND ($9::text IS NULL OR created_at < $9::text::timestamptz) \
             ORDER BY created_at DESC, id DESC LIMIT $10",
            &[
                Param::Uuid(org),
                f.service_id.map(|s| s.to_string()).into(),
                f.device_id.map(|s| s.to_string()).into(),
                f.run_id.map(|s| s.to_string()).into(),
                f.since.map_or(Param::Null, ts),
                before_ts,
                before_id,
                f.status.clone().into(),
                f.until.map_or(Param::Null, ts),
                Param::Int64(f.limit),
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(LogEntryRow {
                id: r.get("id")?,
                service_id: r.get("service_id")?,
                run_id: r.get("run_id")?,
                device_id: r.get("device_id")?,
                operation: r.get("operation")?,
                status: r.get("status")?,
                details: r.get("details")?,
                created_at: r.get("created_at")?,
            })
        })
        .collect()
}

/// A service's numbers over the window `[since, now]`, as one JSON object (one query): runs by
/// status, success rate and average duration of finished full runs, devices linked / synced /
/// in error, pending conflicts, and the last sync.
pub async fn service_stats(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    since: DateTime<Utc>,
) -> Result<Value, DbError> {
    let rows = db
        .query(
            "WITH runs AS ( \
                 SELECT status, operation, \
                        extract(epoch FROM (finished_at - coalesce(started_at, created_at))) * 1000 AS ms \
                 FROM sync_runs \
                 WHERE organization_id = $1 AND service_id = $2 \
                   AND created_at >= $3::text::timestamptz \
                   AND NOT coalesce((params->>'dry_run')::boolean, false)), \
             finished AS ( \
                 SELECT * FROM runs \
                 WHERE status IN ('completed', 'completed_with_errors', 'failed') \
                   AND operation <> 'device_refresh') \
             SELECT jsonb_build_object( \
                 'runs', jsonb_build_object( \
                     'total', (SELECT count(*) FROM runs), \
                     'queued', (SELECT count(*) FROM runs WHERE status = 'queued'), \
                     'running', (SELECT count(*) FROM runs WHERE status = 'running'), \
                     'completed', (SELECT count(*) FROM runs WHERE status = 'completed'), \
                     'completed_with_errors', \
                         (SELECT count(*) FROM runs WHERE status = 'completed_with_errors'), \
                     'failed', (SELECT count(*) FROM runs WHERE status = 'failed'), \
                     'cancelled', (SELECT count(*) FROM runs WHERE status = 'cancelled'), \
                     'device_refresh', \
                         (SELECT count(*) FROM runs WHERE operation = 'device_refresh')), \
                 'success_rate', (SELECT round(avg(CASE WHEN status = 'completed' THEN 1.0 \
                                                        ELSE 0.0 END), 4)::float8 FROM finished), \
                 'average_duration_ms', (SELECT round(avg(ms))::int8 FROM finished), \
                 'devices', (SELECT jsonb_build_object( \
                     'assigned', count(*), \
                     'linked', count(*) FILTER (WHERE external_device_id IS NOT NULL), \
                     'synced', count(*) FILTER (WHERE external_device_id IS NOT NULL \
                                                AND sync_status = 'synced' AND base IS NOT NULL), \
                     'conflict', count(*) FILTER (WHERE sync_status = 'conflict'), \
                     'error', count(*) FILTER (WHERE sync_status = 'error')) \
                     FROM device_service_assignments \
                     WHERE organization_id = $1 AND service_id = $2), \
                 'pending_conflicts', (SELECT count(*) FROM device_conflicts \
                     WHERE organization_id = $1 AND service_id = $2 \
                       AND resolution_status = 'pending'), \
                 'last_sync', (SELECT jsonb_build_object('at', gs_ts(last_sync_at), \
                                                         'status', last_sync_status) \
                     FROM device_services WHERE organization_id = $1 AND id = $2) \
             ) AS stats",
            &[Param::Uuid(org), Param::Uuid(service), ts(since)],
        )
        .await?;
    Ok(rows
        .first()
        .map(|r| r.get::<Value>("stats"))
        .transpose()?
        .unwrap_or_else(|| json!({})))
}
