//! `sync_runs`: durable sync jobs. Creation (one queued-or-running full run per service), reads
//! for the API, the lease protocol the engine follows (claim, fence, progress, release, finish,
//! reschedule) and the cross-tenant scheduling entry points of the tick, which go through the
//! SECURITY DEFINER functions of migration 0004 and return only ids and counts.
//!
//! Every timestamp the engine decides is passed in as RFC 3339 text (`now` comes from the
//! caller, so a test can drive time), and every timestamp read comes back as text (`gs_ts`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::base::ports::{Db, DbError, Param, Row};

/// RFC 3339 text for a `$n::text::timestamptz` parameter (microseconds, like Postgres).
pub fn ts(t: DateTime<Utc>) -> Param {
    Param::Text(t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// A run as stored. `cursor` is only read by the engine (it can be large); API reads leave it
/// `None`.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub service_id: Uuid,
    pub operation: String,
    pub params: Value,
    pub status: String,
    pub phase: Option<String>,
    pub cursor: Option<Value>,
    pub stats: Value,
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_after: String,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<String>,
    pub requested_by: Option<Uuid>,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl RunRow {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "completed" | "completed_with_errors" | "failed" | "cancelled"
        )
    }
}

const COLS: &str = "id, organization_id, service_id, operation, params, status, phase, stats, \
    attempt, max_attempts, gs_ts(run_after) AS run_after, lease_owner, \
    gs_ts(lease_expires_at) AS lease_expires_at, requested_by, error, \
    gs_ts(created_at) AS created_at, gs_ts(started_at) AS started_at, \
    gs_ts(finished_at) AS finished_at";

fn from_row(r: &Row, with_cursor: bool) -> Result<RunRow, DbError> {
    Ok(RunRow {
        id: r.get("id")?,
        org_id: r.get("organization_id")?,
        service_id: r.get("service_id")?,
        operation: r.get("operation")?,
        params: r.get("params")?,
        status: r.get("status")?,
        phase: r.get("phase")?,
        cursor: if with_cursor { r.get("cursor")? } else { None },
        stats: r.get("stats")?,
        attempt: r.get("attempt")?,
        max_attempts: r.get("max_attempts")?,
        run_after: r.get("run_after")?,
        lease_owner: r.get("lease_owner")?,
        lease_expires_at: r.get("lease_expires_at")?,
        requested_by: r.get("requested_by")?,
        error: r.get("error")?,
        created_at: r.get("created_at")?,
        started_at: r.get("started_at")?,
        finished_at: r.get("finished_at")?,
    })
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub org_id: Uuid,
    pub service_id: Uuid,
    pub operation: String,
    pub params: Value,
    pub requested_by: Option<Uuid>,
    pub now: DateTime<Utc>,
}

/// Insert a queued run, due at `now`. Returns `None` when the service already has a queued or
/// running full run (the partial unique index decides, so concurrent requests agree).
pub async fn create(db: &dyn Db, run: &NewRun) -> Result<Option<RunRow>, DbError> {
    let rows = db
        .query(
            &format!(
                "INSERT INTO sync_runs (organization_id, service_id, operation, params, requested_by, \
                     run_after, stats) \
                 VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz, '{{}}'::jsonb) \
                 ON CONFLICT DO NOTHING \
                 RETURNING {COLS}"
            ),
            &[
                Param::Uuid(run.org_id),
                Param::Uuid(run.service_id),
                Param::Text(run.operation.clone()),
                Param::Jsonb(run.params.clone()),
                run.requested_by.into(),
                ts(run.now),
            ],
        )
        .await?;
    rows.first().map(|r| from_row(r, false)).transpose()
}

/// The service's queued or running full run, if any.
pub async fn active_full(db: &dyn Db, org: Uuid, service: Uuid) -> Result<Option<RunRow>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLS} FROM sync_runs \
                 WHERE organization_id = $1 AND service_id = $2 \
                   AND status IN ('queued', 'running') AND operation <> 'device_refresh' \
                 ORDER BY created_at LIMIT 1"
            ),
            &[Param::Uuid(org), Param::Uuid(service)],
        )
        .await?;
    rows.first().map(|r| from_row(r, false)).transpose()
}

/// One run of the organization; `with_cursor` also reads the engine's cursor.
pub async fn get(
    db: &dyn Db,
    org: Uuid,
    id: Uuid,
    with_cursor: bool,
) -> Result<Option<RunRow>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLS}{} FROM sync_runs WHERE organization_id = $1 AND id = $2",
                if with_cursor { ", cursor" } else { "" }
            ),
            &[Param::Uuid(org), Param::Uuid(id)],
        )
        .await?;
    rows.first().map(|r| from_row(r, with_cursor)).transpose()
}

/// Filters of the run list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub service_id: Option<Uuid>,
    pub status: Option<String>,
    /// Runs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Runs created before this time.
    pub until: Option<DateTime<Utc>>,
    /// Keyset: runs strictly older than `(created_at, id)`.
    pub before: Option<(String, Uuid)>,
    pub limit: i64,
}

/// Runs of the organization, newest first.
pub async fn list(db: &dyn Db, org: Uuid, f: &RunFilter) -> Result<Vec<RunRow>, DbError> {
    let (before_ts, before_id) = match &f.before {
        Some((t, id)) => (Param::Text(t.clone()), Param::Text(id.to_string())),
        None => (Param::Null, Param::Null),
    };
    let rows = db
        .query(
            &format!(
                "SELECT {COLS} FROM sync_runs \
                 WHERE organization_id = $1 \
                   AND ($2::text IS NULL OR service_id = $2::text::uuid) \
                   AND ($3::text IS NULL OR status = $3::text) \
                   AND ($4::text IS NULL OR (created_at, id) < ($4::text::timestamptz, $5::text::uuid)) \
                   AND ($6::text IS NULL OR created_at >= $6::text::timestamptz) \
                   AND ($7::text IS NULL OR created_at < $7::text::timestamptz) \
                 ORDER BY created_at DESC, id DESC LIMIT $8"
            ),
            &[
                Param::Uuid(org),
                f.service_id.map(|s| s.to_string()).into(),
                f.status.clone().into(),
                before_ts,
                before_id,
                f.since.map_or(Param::Null, ts),
                f.until.map_or(Param::Null, ts),
                Param::Int64(f.limit),
            ],
        )
        .await?;
    rows.iter().map(|r| from_row(r, false)).collect()
}

/// Cancel a queued or running run: it ends now and its lease is dropped, so the worker holding
/// it fails its next fence and stops. Returns the run as it is after the call (unchanged when it
/// had already finished) and whether this call cancelled it.
pub async fn cancel(
    db: &dyn Db,
    org: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<(RunRow, bool)>, DbError> {
    let rows = db
        .query(
            &format!(
                "WITH c AS ( \
                     UPDATE sync_runs SET status = 'cancelled', \
                         finished_at = $3::text::timestamptz, lease_owner = NULL, \
                         lease_expires_at = NULL, error = 'cancelled by request' \
                     WHERE organization_id = $1 AND id = $2 AND status IN ('queued', 'running') \
                     RETURNING *), \
                 s AS (DELETE FROM sync_run_seen WHERE organization_id = $1 \
                       AND run_id IN (SELECT id FROM c)) \
                 SELECT {COLS} FROM c AS sync_runs"
            ),
            &[Param::Uuid(org), Param::Uuid(id), ts(now)],
        )
        .await?;
    if let Some(r) = rows.first() {
        return Ok(Some((from_row(r, false)?, true)));
    }
    Ok(get(db, org, id, false).await?.map(|r| (r, false)))
}

/// Make a queued run due now (a forced sync request does not wait for its backoff).
pub async fn make_due(db: &dyn Db, org: Uuid, id: Uuid, now: DateTime<Utc>) -> Result<(), DbError> {
    db.execute(
        "UPDATE sync_runs SET run_after = $3::text::timestamptz \
         WHERE organization_id = $1 AND id = $2 AND status = 'queued' \
           AND run_after > $3::text::timestamptz",
        &[Param::Uuid(org), Param::Uuid(id), ts(now)],
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The lease protocol
// ---------------------------------------------------------------------------------------------

/// Claim up to `limit` claimable runs across organizations (or only `run`) for `owner` until
/// `lease_until`: `FOR UPDATE SKIP LOCKED`, one live lease per service (see migration 0004).
/// Returns `(run_id, organization_id)` pairs; callers continue inside `store::in_org`.
pub async fn claim(
    db: &dyn Db,
    now: DateTime<Utc>,
    owner: &str,
    lease_until: DateTime<Utc>,
    limit: i32,
    run: Option<Uuid>,
) -> Result<Vec<(Uuid, Uuid)>, DbError> {
    let rows = db
        .query(
            "SELECT run_id, organization_id FROM gs_claim_runs($1::text::timestamptz, $2, \
                 $3::text::timestamptz, $4, $5::text::uuid)",
            &[
                ts(now),
                Param::Text(owner.to_owned()),
                ts(lease_until),
                Param::Int32(limit),
                run.map(|r| r.to_string()).into(),
            ],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.get("run_id")?, r.get("organization_id")?)))
        .collect()
}

/// Who holds which run: every lease operation is conditional on it.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    pub org: Uuid,
    pub run: Uuid,
    pub owner: &'a str,
}

impl Lease<'_> {
    /// `$1` organization, `$2` run, `$3` owner.
    fn params(&self) -> Vec<Param> {
        vec![
            Param::Uuid(self.org),
            Param::Uuid(self.run),
            Param::Text(self.owner.to_owned()),
        ]
    }

    /// The lease parameters followed by `extra` (`$4`…).
    fn with<const N: usize>(&self, extra: [Param; N]) -> Vec<Param> {
        let mut p = self.params();
        p.extend(extra);
        p
    }
}

/// Inside a slice's transaction: lock the run and check that `owner` still holds its lease and
/// it is still running. False means another worker took it over or it was cancelled: the caller
/// rolls the slice back.
pub async fn fence(db: &dyn Db, lease: &Lease<'_>) -> Result<bool, DbError> {
    let rows = db
        .query(
            "SELECT 1::int4 AS ok FROM sync_runs \
             WHERE organization_id = $1 AND id = $2 AND lease_owner = $3 AND status = 'running' \
             FOR UPDATE",
            &lease.params(),
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Store a slice's progress and extend the lease (inside the fenced transaction).
pub async fn save_progress(
    db: &dyn Db,
    lease: &Lease<'_>,
    phase: &str,
    cursor: &Value,
    stats: &Value,
    lease_until: DateTime<Utc>,
) -> Result<bool, DbError> {
    let n = db
        .execute(
            "UPDATE sync_runs SET phase = $4, cursor = $5, stats = $6, \
                 lease_expires_at = $7::text::timestamptz, error = NULL \
             WHERE organization_id = $1 AND id = $2 AND lease_owner = $3 AND status = 'running'",
            &lease.with([
                Param::Text(phase.to_owned()),
                Param::Jsonb(cursor.clone()),
                Param::Jsonb(stats.clone()),
                ts(lease_until),
            ]),
        )
        .await?;
    Ok(n == 1)
}

/// Give the lease back between slices: the run stays `running` and any worker may continue it
/// at once (no new attempt is counted for that).
pub async fn release(db: &dyn Db, lease: &Lease<'_>) -> Result<(), DbError> {
    db.execute(
        "UPDATE sync_runs SET lease_owner = NULL, lease_expires_at = NULL \
         WHERE organization_id = $1 AND id = $2 AND lease_owner = $3 AND status = 'running'",
        &lease.params(),
    )
    .await?;
    Ok(())
}

/// End a run (`completed`, `completed_with_errors`, `failed`) if the lease is still held.
pub async fn finish(
    db: &dyn Db,
    lease: &Lease<'_>,
    status: &str,
    stats: &Value,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    // The listing's seen ids are scratch of the run: they go with it.
    let rows = db
        .query(
            "WITH f AS ( \
                 UPDATE sync_runs SET status = $4, stats = $5, error = $6, phase = 'done', \
                     finished_at = $7::text::timestamptz, lease_owner = NULL, \
                     lease_expires_at = NULL \
                 WHERE organization_id = $1 AND id = $2 AND lease_owner = $3 AND status = 'running' \
                 RETURNING id), \
             s AS (DELETE FROM sync_run_seen WHERE organization_id = $1 \
                   AND run_id IN (SELECT id FROM f)) \
             SELECT count(*)::int8 AS n FROM f",
            &lease.with([
                Param::Text(status.to_owned()),
                Param::Jsonb(stats.clone()),
                error.map(str::to_owned).into(),
                ts(now),
            ]),
        )
        .await?;
    let n: i64 = rows.first().map(|r| r.get("n")).transpose()?.unwrap_or(0);
    Ok(n == 1)
}

/// Put a failed attempt back in the queue until `run_after`, keeping its cursor (the next
/// attempt resumes where this one stopped).
pub async fn reschedule(
    db: &dyn Db,
    lease: &Lease<'_>,
    run_after: DateTime<Utc>,
    error: &str,
) -> Result<bool, DbError> {
    let n = db
        .execute(
            "UPDATE sync_runs SET status = 'queued', run_after = $4::text::timestamptz, error = $5, \
                 lease_owner = NULL, lease_expires_at = NULL \
             WHERE organization_id = $1 AND id = $2 AND lease_owner = $3 AND status = 'running'",
            &lease.with([ts(run_after), Param::Text(error.to_owned())]),
        )
        .await?;
    Ok(n == 1)
}

/// Record a finished full run on its service (`last_sync_at`, `last_sync_status`).
pub async fn touch_service(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    status: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    db.execute(
        "UPDATE device_services SET last_sync_at = $3::text::timestamptz, last_sync_status = $4 \
         WHERE organization_id = $1 AND id = $2",
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            ts(now),
            Param::Text(status.to_owned()),
        ],
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tick's cross-tenant entry points (SECURITY DEFINER functions; ids and counts only)
// ---------------------------------------------------------------------------------------------

/// Queue a run for every due service and advance its `next_sync_at`. Returns
/// `(service_id, run_id)`; `run_id` is `None` when the service already had an active run.
pub async fn queue_due(
    db: &dyn Db,
    now: DateTime<Utc>,
    limit: i32,
) -> Result<Vec<(Uuid, Option<Uuid>)>, DbError> {
    let rows = db
        .query(
            "SELECT service_id, run_id FROM gs_queue_due_services($1::text::timestamptz, $2)",
            &[ts(now), Param::Int32(limit)],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.get("service_id")?, r.get("run_id")?)))
        .collect()
}

/// Try to become the tick that does housekeeping in this transaction (an advisory lock), so
/// concurrent ticks do not race on partition DDL.
pub async fn try_housekeeping_lock(db: &dyn Db) -> Result<bool, DbError> {
    let rows = db
        .query("SELECT pg_try_advisory_xact_lock(724300) AS ok", &[])
        .await?;
    Ok(rows
        .first()
        .map(|r| r.get::<bool>("ok"))
        .transpose()?
        .unwrap_or(false))
}

async fn count(db: &dyn Db, sql: &str, params: &[Param]) -> Result<i64, DbError> {
    let rows = db.query(sql, params).await?;
    Ok(rows
        .first()
        .map(|r| r.get::<Option<i64>>("n"))
        .transpose()?
        .flatten()
        .unwrap_or(0))
}

/// Create the sync log's monthly partitions for the month of `now` and the next `months - 1`.
pub async fn ensure_log_partitions(
    db: &dyn Db,
    now: DateTime<Utc>,
    months: i32,
) -> Result<i64, DbError> {
    count(
        db,
        "SELECT golioth_sync_log_ensure_partitions($1::text::timestamptz, $2)::int8 AS n",
        &[ts(now), Param::Int32(months)],
    )
    .await
}

/// Drop the sync log's monthly partitions that ended before `before`.
pub async fn drop_log_partitions(db: &dyn Db, before: DateTime<Utc>) -> Result<i64, DbError> {
    count(
        db,
        "SELECT golioth_sync_log_drop_partitions($1::text::timestamptz)::int8 AS n",
        &[ts(before)],
    )
    .await
}

/// Mark devices offline whose last sign of life passed their service's online threshold.
pub async fn mark_devices_offline(db: &dyn Db, now: DateTime<Utc>) -> Result<i64, DbError> {
    count(
        db,
        "SELECT gs_mark_devices_offline($1::text::timestamptz) AS n",
        &[ts(now)],
    )
    .await
}

/// Delete up to `limit` webhook deliveries received before `before`.
pub async fn prune_deliveries(
    db: &dyn Db,
    before: DateTime<Utc>,
    limit: i32,
) -> Result<i64, DbError> {
    count(
        db,
        "SELECT gs_prune_webhook_deliveries($1::text::timestamptz, $2) AS n",
        &[ts(before), Param::Int32(limit)],
    )
    .await
}
