//! Webhook deliveries, telemetry and the device state they update.
//!
//! A delivery is one short transaction: set the tenant from the service id, read the service,
//! then (after the caller authenticated the request in memory) either file a `rejected` record
//! or run [`ingest`], a single statement that stores the delivery under its unique key and, only
//! if that insert happened, writes the telemetry row, moves the device's reported state forward
//! and queues a `device_refresh`. A duplicate key inserts nothing, so nothing else happens.
//!
//! Order safety: every device column is written only when the delivery's time is newer than the
//! one it replaces — `last_seen` / `last_seen_online` against themselves, the mapped columns
//! (`battery_level`, `signal_strength`, `location`) against a per-column time kept in
//! `metadata.golioth_reported_at` (RFC 3339 text, µs, UTC, compared with `COLLATE "C"`). The
//! comparisons sit in the `UPDATE`, so under concurrency Postgres re-evaluates them on the newest
//! row version after waiting for the row lock: the newest time wins whatever the commit order.

use futures::future::LocalBoxFuture;
use serde_json::Value;
use uuid::Uuid;

use crate::ports::{Db, DbError, Param, transaction};
use crate::webhook::{EventKind, Plan};

/// The key in `devices.metadata` holding the time of the newest delivery applied per column.
pub const REPORTED_AT_KEY: &str = "golioth_reported_at";

/// What the webhook needs of its service.
#[derive(Debug, Clone)]
pub struct WebhookService {
    pub org_id: Uuid,
    pub is_active: bool,
    pub config: Value,
    pub credentials: Option<Vec<u8>>,
}

/// Timestamps are bound as text in this one format (also what `gs_ts` produces), so they compare
/// as text exactly as they compare as times.
pub fn ts_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Run `f` in one transaction scoped to the organization that owns `service` (found through the
/// SECURITY DEFINER `gs_service_org`, which returns only the id). `f` gets `None` for an unknown
/// service; then no tenant row is visible at all.
pub async fn with_service<'a, T, E, F>(db: &'a dyn Db, service: Uuid, f: F) -> Result<T, E>
where
    F: FnOnce(&'a dyn Db, Option<WebhookService>) -> LocalBoxFuture<'a, Result<T, E>> + 'a,
    E: From<DbError> + 'a,
    T: 'a,
{
    transaction(db, move |tx| {
        Box::pin(async move {
            let rows = tx
                .query(
                    "SELECT set_config('app.organization_id', \
                         coalesce(gs_service_org($1)::text, ''), true) AS org",
                    &[Param::Uuid(service)],
                )
                .await?;
            let org = rows
                .first()
                .map(|r| r.get::<String>("org"))
                .transpose()?
                .and_then(|s| Uuid::parse_str(&s).ok());
            let svc = match org {
                None => None,
                Some(org) => load(tx, org, service).await?,
            };
            f(tx, svc).await
        })
    })
    .await
}

async fn load(db: &dyn Db, org: Uuid, service: Uuid) -> Result<Option<WebhookService>, DbError> {
    let rows = db
        .query(
            "SELECT organization_id, is_active, config, credentials FROM device_services \
             WHERE organization_id = $1 AND id = $2",
            &[Param::Uuid(org), Param::Uuid(service)],
        )
        .await?;
    rows.first()
        .map(|r| {
            Ok(WebhookService {
                org_id: r.get("organization_id")?,
                is_active: r.get("is_active")?,
                config: r.get("config")?,
                credentials: r.get("credentials")?,
            })
        })
        .transpose()
}

/// A refused delivery: its trace, without payload.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub reason: String,
    /// Only from authenticated senders.
    pub content_type: Option<String>,
}

/// File a `rejected` record under a fresh random key (rejections are never deduplicated).
pub async fn insert_rejected(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    r: &Rejected,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO webhook_deliveries (organization_id, service_id, delivery_key, received_at, \
             content_type, status, error) \
         VALUES ($1, $2, $3, $4::text::timestamptz, $5, 'rejected', $6)",
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            Param::Text(format!("rejected:{}", Uuid::new_v4())),
            Param::Text(ts_text(r.received_at)),
            r.content_type.clone().into(),
            Param::Text(r.reason.clone()),
        ],
    )
    .await?;
    Ok(())
}

/// What [`ingest`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// The key was already stored: nothing changed.
    Duplicate,
    Stored {
        delivery_id: Uuid,
        /// `processed` (the device is linked) or `unmatched`.
        status: String,
        /// A new `device_refresh` run was queued (false when one was already queued).
        refresh_queued: bool,
    },
}

/// Per mapped column: (column, also its key under `metadata.golioth_reported_at`; the parameter
/// holding the delivery's value for it).
const MAPPED: [(&str, &str); 3] = [
    ("battery_level", "$16::float8"),
    ("signal_strength", "$17::float8"),
    ("location", "$18::jsonb"),
];

fn ingest_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        // `newer(col)`: this delivery carries a value for `col` and is newer than the last one
        // applied to it.
        let newer = |col: &str, param: &str| {
            format!(
                "({param} IS NOT NULL AND coalesce(d.metadata #>> '{{{REPORTED_AT_KEY},{col}}}', '') \
                 COLLATE \"C\" < $11::text COLLATE \"C\")"
            )
        };
        let sets: Vec<String> = MAPPED
            .iter()
            .map(|(col, p)| {
                format!(
                    "{col} = CASE WHEN {} THEN {p} ELSE d.{col} END",
                    newer(col, p)
                )
            })
            .collect();
        let any_newer: Vec<String> = MAPPED.iter().map(|(c, p)| newer(c, p)).collect();
        let any_newer = any_newer.join(" OR ");
        let sets = sets.join(", ");
        let stamps: String = MAPPED
            .iter()
            .map(|(c, p)| format!("'{c}', CASE WHEN {} THEN $11::text END", newer(c, p)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "WITH dev AS ( \
                 SELECT a.device_id FROM device_service_assignments a \
                 JOIN devices dd ON dd.id = a.device_id AND dd.organization_id = a.organization_id \
                 WHERE a.organization_id = $1::uuid AND a.service_id = $2::uuid \
                   AND a.external_device_id = $7::text AND dd.deleted_at IS NULL \
             ), \
             ins AS ( \
                 INSERT INTO webhook_deliveries (organization_id, service_id, delivery_key, \
                     received_at, content_type, event_type, device_external_id, status, payload) \
                 SELECT $1::uuid, $2::uuid, $3::text, $4::text::timestamptz, $5::text, $6::text, \
                     $7::text, CASE WHEN EXISTS (SELECT 1 FROM dev) THEN 'processed' \
                                    ELSE 'unmatched' END, $8::jsonb \
                 ON CONFLICT (service_id, delivery_key) DO NOTHING \
                 RETURNING id, status \
             ), \
             tel AS ( \
                 INSERT INTO device_telemetry (organization_id, device_id, service_id, \
                     delivery_id, path, recorded_at, received_at, data) \
                 SELECT $1::uuid, dev.device_id, $2::uuid, ins.id, $10::text, \
                     $11::text::timestamptz, $4::text::timestamptz, $12::jsonb \
                 FROM ins CROSS JOIN dev WHERE $9::bool \
                 RETURNING 1 \
             ), \
             upd AS ( \
                 UPDATE devices d SET \
                     last_seen = CASE WHEN $13::bool AND (d.last_seen IS NULL OR d.last_seen < v.at) \
                                      THEN v.at ELSE d.last_seen END, \
                     last_seen_online = CASE WHEN $13::bool AND (d.last_seen_online IS NULL \
                                                 OR d.last_seen_online < v.at) \
                                             THEN v.at ELSE d.last_seen_online END, \
                     status = CASE \
                         WHEN $14::bool AND (d.last_seen IS NULL OR d.last_seen <= v.at) \
                             THEN 'offline' \
                         WHEN $13::bool AND $15::bool AND (d.last_seen IS NULL OR d.last_seen < v.at) \
                              AND d.status NOT IN ('warning', 'error') THEN 'online' \
                         ELSE d.status END, \
                     {sets}, \
                     metadata = CASE WHEN ({any_newer}) AND jsonb_typeof(d.metadata) = 'object' \
                         THEN jsonb_set(d.metadata, '{{{REPORTED_AT_KEY}}}', \
                             CASE WHEN jsonb_typeof(d.metadata -> '{REPORTED_AT_KEY}') = 'object' \
                                  THEN d.metadata -> '{REPORTED_AT_KEY}' ELSE '{{}}'::jsonb END \
                             || jsonb_strip_nulls(jsonb_build_object({stamps}))) \
                         ELSE d.metadata END \
                 FROM ins, dev, (SELECT $11::text::timestamptz AS at) v \
                 WHERE d.id = dev.device_id AND d.organization_id = $1::uuid AND ( \
                     ($13::bool AND (d.last_seen IS NULL OR d.last_seen < v.at \
                         OR d.last_seen_online IS NULL OR d.last_seen_online < v.at)) \
                     OR ($14::bool AND (d.last_seen IS NULL OR d.last_seen <= v.at) \
                         AND d.status <> 'offline') \
                     OR {any_newer}) \
                 RETURNING d.id \
             ), \
             run AS ( \
                 INSERT INTO sync_runs (organization_id, service_id, operation, params) \
                 SELECT $1::uuid, $2::uuid, 'device_refresh', \
                     jsonb_build_object('device_id', $7::text) \
                 FROM ins WHERE $19::bool OR NOT EXISTS (SELECT 1 FROM dev) \
                 ON CONFLICT DO NOTHING \
                 RETURNING id \
             ) \
             SELECT (SELECT id FROM ins) AS delivery_id, (SELECT status FROM ins) AS status, \
                    EXISTS (SELECT 1 FROM run) AS refresh_queued"
        )
    })
}

/// Store an accepted delivery and apply it (see the module doc). Runs inside the transaction of
/// [`with_service`].
pub async fn ingest(db: &dyn Db, org: Uuid, service: Uuid, p: &Plan) -> Result<Ingested, DbError> {
    let float = |v: Option<f64>| v.map_or(Param::Null, Param::Float64);
    let rows = db
        .query(
            ingest_sql(),
            &[
                Param::Uuid(org),
                Param::Uuid(service),
                Param::Text(p.delivery_key.clone()),
                Param::Text(ts_text(p.received_at)),
                Param::Text(p.content_type.clone()),
                p.event_type.clone().into(),
                Param::Text(p.device_external_id.clone()),
                Param::Jsonb(p.payload.clone()),
                Param::Bool(p.kind == EventKind::Data),
                Param::Text(p.path.clone()),
                Param::Text(ts_text(p.recorded_at)),
                Param::Jsonb(p.data.clone()),
                Param::Bool(p.seen),
                Param::Bool(p.offline),
                Param::Bool(p.fresh),
                float(p.state.battery_level),
                float(p.state.signal_strength),
                p.state.location.clone().map_or(Param::Null, Param::Jsonb),
                Param::Bool(p.force_refresh),
            ],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| DbError::Decode("ingest returned no row".into()))?;
    match row.get::<Option<Uuid>>("delivery_id")? {
        None => Ok(Ingested::Duplicate),
        Some(delivery_id) => Ok(Ingested::Stored {
            delivery_id,
            status: row.get("status")?,
            refresh_queued: row.get("refresh_queued")?,
        }),
    }
}
