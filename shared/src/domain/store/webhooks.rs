//! Webhook deliveries, telemetry and the device state they update.
//!
//! A delivery is at most two statements, each its own (implicit, synchronously committed)
//! transaction, PL/pgSQL functions of migrations 0005 / 0008 run as the application role under
//! row level security: [`service`] (`gs_webhook_service`) scopes its statement to the
//! organization owning the service and reads the service and its row version (skipped while
//! `app::service_cache` holds a copy); then, after the caller authenticated the request in
//! memory, [`ingest`] (`gs_webhook_ingest_as_of`, migration 0011) scopes its statement to that
//! organization, checks the service still has the version the delivery was judged under (else
//! stores nothing: [`Ingested::StaleService`]), stores the delivery under
//! its unique key and, only if that insert happened, writes the telemetry row, moves the
//! device's reported state forward and queues a `device_refresh`. A duplicate key inserts
//! nothing, so nothing else happens. [`ingest_batch`] (`gs_webhook_ingest_batch`) does the same
//! for several deliveries of one service in one statement and one commit (`api::ingest_batch`
//! groups them). The answer is sent only after the storing statement returned, so a 200 means
//! the delivery is durable. A refused delivery is filed by [`insert_rejected`] in its own
//! organization-scoped transaction.
//!
//! Order safety (the SQL is in `gs_webhook_ingest`): every device column is written only when
//! the delivery's time is newer than the one it replaces — `last_seen` / `last_seen_online`
//! against themselves, the mapped columns (`battery_level`, `signal_strength`, `location`)
//! against a per-column time kept in `metadata.golioth_reported_at` (RFC 3339 text, µs, UTC,
//! compared with `COLLATE "C"`). The comparisons sit in the `UPDATE`, so under concurrency
//! Postgres re-evaluates them on the newest row version after waiting for the row lock: the
//! newest time wins whatever the commit order.

use serde_json::Value;
use uuid::Uuid;

use crate::base::ports::{Db, DbError, Param};
use crate::domain::store::in_org;
use crate::domain::webhook::{EventKind, Plan};

/// The key in `devices.metadata` holding the time of the newest delivery applied per column.
pub const REPORTED_AT_KEY: &str = "golioth_reported_at";

/// What the webhook needs of its service.
#[derive(Debug, Clone)]
pub struct WebhookService {
    pub org_id: Uuid,
    pub is_active: bool,
    pub config: Value,
    pub credentials: Option<Vec<u8>>,
    /// The row version this copy was read at (its `xmin`): deliveries judged under it are
    /// stored only while the service still has it ([`ingest`], [`ingest_batch`]).
    pub version: String,
}

/// Timestamps are bound as text in this one format (also what `gs_ts` produces), so they compare
/// as text exactly as they compare as times.
pub fn ts_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The service a delivery is addressed to, or `None` for an unknown one: one autocommit
/// statement. `gs_webhook_service` sets `app.organization_id` for the statement from the
/// SECURITY DEFINER `gs_service_org` (which returns only the id), then reads the service as the
/// application role, under row level security. Inside a transaction the scope lasts until its
/// end, like `in_org`'s.
pub async fn service(db: &dyn Db, service: Uuid) -> Result<Option<WebhookService>, DbError> {
    let rows = db
        .query(
            "SELECT organization_id, is_active, config, credentials, version \
             FROM gs_webhook_service($1::uuid)",
            &[Param::Uuid(service)],
        )
        .await?;
    rows.first()
        .map(|r| {
            Ok(WebhookService {
                org_id: r.get("organization_id")?,
                is_active: r.get("is_active")?,
                config: r.get("config")?,
                credentials: r.get("credentials")?,
                version: r.get("version")?,
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

/// File a `rejected` record under a fresh random key (rejections are never deduplicated), in
/// its own transaction scoped to `org`.
pub async fn insert_rejected(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    r: &Rejected,
) -> Result<(), DbError> {
    let params = vec![
        Param::Uuid(org),
        Param::Uuid(service),
        Param::Text(format!("rejected:{}", Uuid::new_v4())),
        Param::Text(ts_text(r.received_at)),
        r.content_type.clone().into(),
        Param::Text(r.reason.clone()),
    ];
    in_org(db, org, move |tx| {
        Box::pin(async move {
            tx.execute(
                "INSERT INTO webhook_deliveries (organization_id, service_id, delivery_key, \
                     received_at, content_type, status, error) \
                 VALUES ($1, $2, $3, $4::text::timestamptz, $5, 'rejected', $6)",
                &params,
            )
            .await?;
            Ok(())
        })
    })
    .await
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
    /// The service is no longer the version the delivery was judged under (changed or
    /// deleted since it was read): nothing was stored; read it again and judge anew.
    StaleService,
}

/// Store an accepted delivery of `org`'s `service`, judged under the service's `version`, and
/// apply it (see the module doc): one autocommit statement, committed when this returns;
/// [`Ingested::StaleService`] (nothing stored) when the service has changed since. Not for use
/// inside a transaction that must stay scoped to another organization (it sets
/// `app.organization_id` to `org`).
pub async fn ingest(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    version: &str,
    p: &Plan,
) -> Result<Ingested, DbError> {
    let float = |v: Option<f64>| v.map_or(Param::Null, Param::Float64);
    let params = [
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
        Param::Text(version.to_owned()),
    ];
    // Deliveries stored at once by other instances, replicas or threads (their own batches) can
    // lock the same device and delivery-key rows in another order; Postgres then aborts one
    // statement with a deadlock (40P01). Nothing of it was stored (one statement), so it is
    // sent again.
    let mut attempt = 0;
    let rows = loop {
        attempt += 1;
        match db
            .query(
                "SELECT delivery_id, status, refresh_queued FROM gs_webhook_ingest_as_of($1::uuid, \
                 $2::uuid, $3::text, $4::text, $5::text, $6::text, $7::text, $8::jsonb, \
                 $9::bool, $10::text, $11::text, $12::jsonb, $13::bool, $14::bool, $15::bool, \
                 $16::float8, $17::float8, $18::jsonb, $19::bool, $20::text)",
                &params,
            )
            .await
        {
            Err(e) if attempt < DEADLOCK_ATTEMPTS && is_deadlock(&e) => continue,
            other => break other?,
        }
    };
    let row = rows
        .first()
        .ok_or_else(|| DbError::Decode("ingest returned no row".into()))?;
    ingested(row)
}

/// How often [`ingest`] sends a delivery that met a deadlock.
const DEADLOCK_ATTEMPTS: u32 = 5;

/// A statement Postgres aborted to break a deadlock (or a serialization failure): nothing of it
/// happened, and sending it again is safe.
fn is_deadlock(e: &DbError) -> bool {
    matches!(e.sqlstate(), Some("40P01" | "40001"))
}

/// Whether [`ingest_batch`] stores `p` exactly as [`ingest`] would: its numbers must survive
/// JSON (a non-finite float has no JSON form), so such a plan is stored on its own.
pub fn batchable(p: &Plan) -> bool {
    [p.state.battery_level, p.state.signal_strength]
        .into_iter()
        .flatten()
        .all(f64::is_finite)
}

/// Store several accepted deliveries of `org`'s `service`, each as [`ingest`] stores one, in
/// one autocommit statement (`gs_webhook_ingest_batch_as_of`, migrations 0008 and 0011): one commit for all of
/// them, committed when this returns; an error stores none of them. The caller guarantees what
/// the statement relies on: every plan [`batchable`], no two with the same device or the same
/// delivery key. One answer per plan, in order.
pub async fn ingest_batch(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    version: &str,
    plans: &[&Plan],
) -> Result<Vec<Ingested>, DbError> {
    let items: Vec<Value> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v = serde_json::json!({
                "ord": i,
                "key": p.delivery_key,
                "received_at": ts_text(p.received_at),
                "content_type": p.content_type,
                "event_type": p.event_type,
                "device": p.device_external_id,
                "payload": p.payload,
                "is_data": p.kind == EventKind::Data,
                "path": p.path,
                "recorded_at": ts_text(p.recorded_at),
                "data": p.data,
                "seen": p.seen,
                "offline": p.offline,
                "fresh": p.fresh,
                "battery": p.state.battery_level,
                "signal": p.state.signal_strength,
                "force_refresh": p.force_refresh,
            });
            if let Some(loc) = &p.state.location {
                v["location"] = Value::Array(vec![loc.clone()]);
            }
            v
        })
        .collect();
    let rows = db
        .query(
            "SELECT ord, delivery_id, status, refresh_queued \
             FROM gs_webhook_ingest_batch_as_of($1::uuid, $2::uuid, $3::jsonb, $4::text)",
            &[
                Param::Uuid(org),
                Param::Uuid(service),
                Param::Jsonb(Value::Array(items)),
                Param::Text(version.to_owned()),
            ],
        )
        .await?;
    let ords: Vec<i32> = rows
        .iter()
        .map(|r| r.get::<i32>("ord"))
        .collect::<Result<_, _>>()?;
    if ords.iter().copied().ne(0..plans.len() as i32) {
        return Err(DbError::Decode(format!(
            "ingest batch of {} answered for {ords:?}",
            plans.len()
        )));
    }
    rows.iter().map(ingested).collect()
}

fn ingested(row: &crate::base::ports::Row) -> Result<Ingested, DbError> {
    match row.get::<Option<Uuid>>("delivery_id")? {
        None if row.get::<Option<String>>("status")?.as_deref() == Some("stale_service") => {
            Ok(Ingested::StaleService)
        }
        None => Ok(Ingested::Duplicate),
        Some(delivery_id) => Ok(Ingested::Stored {
            delivery_id,
            status: row.get("status")?,
            refresh_queued: row.get("refresh_queued")?,
        }),
    }
}
