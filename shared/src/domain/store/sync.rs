//! The sync engine's reads and writes of tenant data: the local side of one page in one query,
//! the assigned devices a listing did not see, and every write of a slice as a bulk statement
//! (`jsonb_to_recordset`, never a statement per device). Local device updates are conditional on
//! the `version` the engine read (optimistic concurrency) and report which rows they changed.
//!
//! Rows come back as `jsonb` built in SQL (timestamps inside jsonb are ISO 8601 text), which
//! keeps every statement within what Spin's Postgres binding decodes. Conflict values are
//! wrapped in a one-element array on the way in and out, so a JSON `null` value and SQL NULL
//! (no value) stay distinct.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::base::ports::{Db, DbError, Param, Row};
use crate::domain::sync::{
    Assignment, Base, ConflictField, ConflictKind, DesiredFields, LocalDevice, LocalState,
    PendingConflict, Reported,
};

/// A local device as the engine loaded it, with its assignment's bookkeeping columns.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub state: LocalState,
    /// `sync_status` / `last_error` of the assignment (`None` when not assigned).
    pub sync_status: Option<String>,
    pub last_error: Option<String>,
}

/// The local side of one page.
#[derive(Debug, Clone, Default)]
pub struct PageRows {
    pub locals: Vec<Loaded>,
    /// Pending conflicts keyed by a Golioth device of the page and no local device.
    pub remote_pending: Vec<PendingConflict>,
}

/// What to load for a page: devices linked to `external_ids`, the devices named in `device_ids`,
/// and — for the Golioth devices of `match_keys` not linked yet — live devices sharing a hardware
/// id or (when given) the name with one of them.
#[derive(Debug, Clone, Default)]
pub struct PageKeys {
    pub external_ids: Vec<String>,
    pub match_keys: Vec<MatchKey>,
    pub device_ids: Vec<Uuid>,
}

/// A Golioth device's identity, for first-sync matching.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MatchKey {
    pub id: String,
    pub hw: Vec<String>,
    /// Only when the service matches by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The columns of one local device, its assignment for service `$2` and its pending conflicts
/// (own ones, and `identity` conflicts naming them as a candidate), read by [`loaded_from_row`].
/// Plain columns, not one JSON object per device: `json_build_object` looks up the type of
/// every argument on every call, and building 800 devices' objects took half of a page load's
/// time in Postgres. Times as RFC 3339 text in UTC with µs (Spin cannot read `timestamptz`),
/// `jsonb` as text (parsed straight into its type), the pending conflicts as one JSON array
/// (NULL when there are none, the usual case).
const LOCAL_COLUMNS: &str = "d.id AS d_id, d.version AS d_version, \
    TS(d.updated_at) AS d_updated_at, TS(d.deleted_at) AS d_deleted_at, d.name AS d_name, \
    d.enabled AS d_enabled, d.tags AS d_tags, d.hardware_ids AS d_hardware_ids, \
    d.blueprint_id AS d_blueprint_id, d.cohort_id AS d_cohort_id, \
    TS(d.last_seen) AS d_last_seen, TS(d.last_seen_online) AS d_last_seen_online, \
    d.status AS d_status, d.battery_level AS d_battery_level, \
    d.signal_strength AS d_signal_strength, d.firmware_version AS d_firmware_version, \
    d.location::text AS d_location, a.id IS NOT NULL AS a_assigned, \
    a.external_device_id AS a_external_id, a.base::text AS a_base, \
    a.pending_create::text AS a_pending_create, \
    a.sync_status AS a_sync_status, a.last_error AS a_last_error, \
    (SELECT json_agg(CONFLICT_JSON) FROM device_conflicts c \
        WHERE c.organization_id = $1 AND c.service_id = $2 AND c.resolution_status = 'pending' \
          AND (c.device_id = d.id OR (c.device_id IS NULL AND c.field_name = 'identity' \
               AND c.local_value @> jsonb_build_array(jsonb_build_object('id', d.id::text))))\
    )::text AS pending";

/// The same columns, all NULL: the shape of the page load's other rows (a conflict each).
const NO_LOCAL_COLUMNS: &str = "NULL::uuid, NULL::int8, NULL::text, NULL::text, NULL::text, \
    NULL::bool, NULL::text[], NULL::text[], NULL::text, NULL::text, NULL::text, NULL::text, \
    NULL::text, NULL::float8, NULL::float8, NULL::text, NULL::text, NULL::bool, NULL::text, \
    NULL::text, NULL::text, NULL::text, NULL::text";

/// A `timestamptz` as `gs_ts` writes it, inline: `gs_ts` itself is never inlined (an IMMUTABLE
/// SQL function around the STABLE `to_char`), and calling it per row and column is slow.
fn ts_sql(col: &str) -> String {
    format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

const CONFLICT_JSON: &str = "json_build_object('id', c.id, 'device_id', c.device_id, \
    'external_id', c.external_device_id, 'field', c.field_name, 'kind', c.conflict_type, \
    'base_value', CASE WHEN c.base_value IS NULL THEN NULL ELSE json_build_array(c.base_value) END, \
    'local_value', CASE WHEN c.local_value IS NULL THEN NULL ELSE json_build_array(c.local_value) END, \
    'remote_value', CASE WHEN c.remote_value IS NULL THEN NULL \
                         ELSE json_build_array(c.remote_value) END, \
    'local_updated_at', c.local_updated_at, 'remote_updated_at', c.remote_updated_at)";

fn local_columns() -> String {
    let mut out = LOCAL_COLUMNS.replace("CONFLICT_JSON", CONFLICT_JSON);
    for col in [
        "d.updated_at",
        "d.deleted_at",
        "d.last_seen_online",
        "d.last_seen",
    ] {
        out = out.replace(&format!("TS({col})"), &ts_sql(col));
    }
    out
}

fn decode_err(what: &str, e: impl std::fmt::Display) -> DbError {
    DbError::Decode(format!("{what}: {e}"))
}

fn rfc3339(s: &str, what: &str) -> Result<DateTime<Utc>, DbError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| decode_err(what, e))
}

fn time(v: &Value) -> Result<Option<DateTime<Utc>>, DbError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => rfc3339(s, "timestamp").map(Some),
        other => Err(decode_err("timestamp", other)),
    }
}

/// `[v]` → `Some(v)` (also `Some(null)`), SQL NULL → `None`.
fn unwrap_value(v: &Value) -> Option<Value> {
    v.as_array().and_then(|a| a.first()).cloned()
}

fn pending_from_json(v: &Value) -> Result<PendingConflict, DbError> {
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let uuid = |k: &str| -> Result<Option<Uuid>, DbError> {
        text(k)
            .map(|s| Uuid::parse_str(s).map_err(|e| decode_err(k, e)))
            .transpose()
    };
    let field = text("field")
        .and_then(ConflictField::parse)
        .ok_or_else(|| decode_err("conflict field", v))?;
    let kind: ConflictKind = serde_json::from_value(v.get("kind").cloned().unwrap_or(Value::Null))
        .map_err(|e| decode_err("conflict kind", e))?;
    Ok(PendingConflict {
        id: uuid("id")?.ok_or_else(|| decode_err("conflict id", v))?,
        device_id: uuid("device_id")?,
        external_id: text("external_id").map(str::to_owned),
        field,
        kind,
        base_value: v.get("base_value").and_then(unwrap_value),
        local_value: v.get("local_value").and_then(unwrap_value),
        remote_value: v.get("remote_value").and_then(unwrap_value),
        local_updated_at: time(v.get("local_updated_at").unwrap_or(&Value::Null))?,
        remote_updated_at: time(v.get("remote_updated_at").unwrap_or(&Value::Null))?,
    })
}

fn opt_time(r: &Row, col: &str) -> Result<Option<DateTime<Utc>>, DbError> {
    r.get::<Option<String>>(col)?
        .map(|s| rfc3339(&s, col))
        .transpose()
}

/// A `jsonb` column read as text, parsed into `T`; SQL NULL and JSON `null` are `None`.
fn opt_json<T: serde::de::DeserializeOwned>(r: &Row, col: &str) -> Result<Option<T>, DbError> {
    match r.get::<Option<String>>(col)? {
        None => Ok(None),
        Some(text) if text == "null" => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| decode_err(col, e)),
    }
}

/// One local device of a page load (see [`LOCAL_COLUMNS`]).
fn loaded_from_row(r: &Row) -> Result<Loaded, DbError> {
    let status: String = r.get("d_status")?;
    let device = LocalDevice {
        id: r.get("d_id")?,
        desired: DesiredFields {
            name: r.get("d_name")?,
            enabled: r.get("d_enabled")?,
            tags: r.get("d_tags")?,
            hardware_ids: r.get("d_hardware_ids")?,
            blueprint_id: r.get("d_blueprint_id")?,
            cohort_id: r.get("d_cohort_id")?,
        },
        reported: Reported {
            last_seen: opt_time(r, "d_last_seen")?,
            last_seen_online: opt_time(r, "d_last_seen_online")?,
            status: serde_json::from_value(Value::String(status))
                .map_err(|e| decode_err("d_status", e))?,
            battery_level: r.get("d_battery_level")?,
            signal_strength: r.get("d_signal_strength")?,
            firmware_version: r.get("d_firmware_version")?,
            location: opt_json(r, "d_location")?,
        },
        version: r.get("d_version")?,
        updated_at: opt_time(r, "d_updated_at")?
            .ok_or_else(|| decode_err("d_updated_at", "NULL"))?,
        deleted_at: opt_time(r, "d_deleted_at")?,
    };
    let assignment = if r.get("a_assigned")? {
        Some(Assignment {
            external_id: r.get("a_external_id")?,
            base: opt_json::<Base>(r, "a_base")?,
            pending_create: opt_json::<Base>(r, "a_pending_create")?,
        })
    } else {
        None
    };
    let pending: Vec<Value> = opt_json(r, "pending")?.unwrap_or_default();
    Ok(Loaded {
        state: LocalState {
            device,
            assignment,
            pending: pending
                .iter()
                .map(pending_from_json)
                .collect::<Result<_, _>>()?,
        },
        sync_status: r.get("a_sync_status")?,
        last_error: r.get("a_last_error")?,
    })
}

fn uuid_texts(ids: &[Uuid]) -> Param {
    Param::TextArray(ids.iter().map(Uuid::to_string).collect())
}

/// Plan this transaction's statements for their actual parameters. A pooled connection keeps
/// its prepared statements, and a generic plan made while a service had no devices (its first
/// sync) stays terrible once it has thousands; the page loads are worth a fresh plan each time.
/// A page load is a key lookup by design (a few hundred Golioth ids, device ids, hardware ids):
/// its cost must not grow with the fleet. With the default costs, and with statistics that lag
/// behind a table a first sync is filling, the planner hash-joined pages against sequential
/// scans of every assignment and device of the organization — 9 ms per page at 10,000 devices
/// and 550 ms at 100,000, which made a first sync quadratic. So these transactions cost index
/// probes as the cached lookups they are and take a sequential scan only when no index applies.
/// All settings end with the transaction, which holds nothing but the load.
async fn custom_plans(db: &dyn Db) -> Result<(), DbError> {
    db.query(
        "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), \
                set_config('random_page_cost', '1.1', true), \
                set_config('enable_seqscan', 'off', true)",
        &[],
    )
    .await
    .map(|_| ())
}

/// Load the local side of a page in one query: the candidate devices (see [`PageKeys`]) with
/// their assignment and pending conflicts, plus the pending conflicts keyed by the page's Golioth
/// devices alone.
pub async fn load_page(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    keys: &PageKeys,
) -> Result<PageRows, DbError> {
    // Matching candidates are looked up only for Golioth devices not linked yet, so a
    // resync of a linked fleet never touches the hardware id index (`EXISTS (SELECT 1 FROM
    // free)` is a one-time filter: with every remote linked, the candidate scans never start).
    // The page's hardware ids and names are also bound as arrays ($6, $7): names probe the name
    // index; hardware ids go through `gs_devices_with_hardware_ids` (migration 0006), because
    // under row level security the GIN index cannot serve `&&` (not LEAKPROOF) and the scan of
    // the whole registry it fell back to made first syncs quadratic in the fleet size.
    let sql = format!(
        "WITH linked AS ( \
             SELECT a.device_id, a.external_device_id \
             FROM unnest($3::text[]) AS e(id) \
             JOIN device_service_assignments a \
               ON a.service_id = $2 AND a.external_device_id = e.id AND a.organization_id = $1), \
         free AS ( \
             SELECT k FROM jsonb_array_elements($4::jsonb) AS k \
             WHERE NOT EXISTS (SELECT 1 FROM linked l WHERE l.external_device_id = k->>'id')), \
         cand AS ( \
             SELECT device_id AS id FROM linked \
           UNION \
             SELECT h.id FROM gs_devices_with_hardware_ids($6::text[]) AS h(id) \
             JOIN devices d ON d.id = h.id AND d.organization_id = $1 \
             WHERE EXISTS (SELECT 1 FROM free) \
               AND EXISTS (SELECT 1 FROM free f WHERE (f.k->'hw') ?| d.hardware_ids) \
           UNION \
             SELECT d.id FROM devices d \
             WHERE EXISTS (SELECT 1 FROM free) AND d.organization_id = $1 AND d.deleted_at IS NULL \
               AND d.name = ANY($7::text[]) \
               AND EXISTS (SELECT 1 FROM free f WHERE f.k->>'name' = d.name) \
           UNION \
             SELECT d.id FROM devices d \
             WHERE d.organization_id = $1 AND d.id = ANY($5::text[]::uuid[])) \
         SELECT 'local' AS kind, {local} \
         FROM cand JOIN devices d ON d.id = cand.id AND d.organization_id = $1 \
         LEFT JOIN device_service_assignments a \
                ON a.device_id = d.id AND a.service_id = $2 AND a.organization_id = $1 \
         UNION ALL \
         SELECT 'remote_pending' AS kind, {none}, ({CONFLICT_JSON})::text FROM device_conflicts c \
         WHERE c.organization_id = $1 AND c.service_id = $2 AND c.resolution_status = 'pending' \
           AND c.device_id IS NULL AND c.external_device_id = ANY($3::text[])",
        local = local_columns(),
        none = NO_LOCAL_COLUMNS,
    );
    let match_keys =
        serde_json::to_value(&keys.match_keys).map_err(|e| decode_err("match keys", e))?;
    custom_plans(db).await?;
    let rows = db
        .query(
            &sql,
            &[
                Param::Uuid(org),
                Param::Uuid(service),
                Param::TextArray(keys.external_ids.clone()),
                Param::Jsonb(match_keys),
                uuid_texts(&keys.device_ids),
                Param::TextArray(
                    keys.match_keys
                        .iter()
                        .flat_map(|k| k.hw.iter().cloned())
                        .collect(),
                ),
                Param::TextArray(
                    keys.match_keys
                        .iter()
                        .filter_map(|k| k.name.clone())
                        .collect(),
                ),
            ],
        )
        .await?;
    let mut out = PageRows::default();
    for r in &rows {
        let kind: String = r.get("kind")?;
        if kind == "local" {
            out.locals.push(loaded_from_row(r)?);
        } else {
            let conflict: Value = opt_json(r, "pending")?
                .ok_or_else(|| decode_err("remote pending conflict", "NULL"))?;
            out.remote_pending.push(pending_from_json(&conflict)?);
        }
    }
    out.locals.sort_by_key(|l| l.state.device.id);
    Ok(out)
}

/// The devices assigned to the service that run `run`'s listing did not see (not linked, or
/// linked to a Golioth id not in `sync_run_seen`), in device id order after `after`.
pub async fn load_unseen(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    run: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Loaded>, DbError> {
    let sql = format!(
        "SELECT {local} \
         FROM device_service_assignments a JOIN devices d ON d.id = a.device_id \
         WHERE a.organization_id = $1 AND a.service_id = $2 \
           AND (a.external_device_id IS NULL OR NOT EXISTS ( \
               SELECT 1 FROM sync_run_seen s WHERE s.organization_id = $1 AND s.run_id = $3 \
                 AND s.external_id = a.external_device_id)) \
           AND ($4::text IS NULL OR a.device_id > $4::text::uuid) \
         ORDER BY a.device_id LIMIT $5",
        local = local_columns()
    );
    custom_plans(db).await?;
    let rows = db
        .query(
            &sql,
            &[
                Param::Uuid(org),
                Param::Uuid(service),
                Param::Uuid(run),
                after.map(|a| a.to_string()).into(),
                Param::Int64(limit),
            ],
        )
        .await?;
    rows.iter().map(loaded_from_row).collect()
}

/// Which of `ids` run `run`'s listing recorded on an earlier slice.
pub async fn seen_before(
    db: &dyn Db,
    org: Uuid,
    run: Uuid,
    ids: &[String],
) -> Result<Vec<String>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db
        .query(
            "SELECT s.external_id FROM sync_run_seen s \
             WHERE s.organization_id = $1 AND s.run_id = $2 \
               AND s.external_id = ANY($3::text[])",
            &[
                Param::Uuid(org),
                Param::Uuid(run),
                Param::TextArray(ids.to_vec()),
            ],
        )
        .await?;
    rows.iter().map(|r| r.get("external_id")).collect()
}

/// How many of `service`'s links carry a Golioth id: about as many devices as its next listing
/// will find (a size hint for the listing's first window, never a fact the sync relies on).
pub async fn linked_count(db: &dyn Db, org: Uuid, service: Uuid) -> Result<u64, DbError> {
    let rows = db
        .query(
            "SELECT count(*)::int8 AS n FROM device_service_assignments \
             WHERE organization_id = $1 AND service_id = $2 AND external_device_id IS NOT NULL",
            &[Param::Uuid(org), Param::Uuid(service)],
        )
        .await?;
    let n: i64 = rows.first().map(|r| r.get("n")).transpose()?.unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The local device of `service` linked to Golioth device `external_id`, if any.
pub async fn linked_to(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    external_id: &str,
) -> Result<Option<Uuid>, DbError> {
    let rows = db
        .query(
            "SELECT device_id FROM device_service_assignments \
             WHERE organization_id = $1 AND service_id = $2 AND external_device_id = $3",
            &[
                Param::Uuid(org),
                Param::Uuid(service),
                Param::Text(external_id.to_owned()),
            ],
        )
        .await?;
    rows.first().map(|r| r.get::<Uuid>("device_id")).transpose()
}

// ---------------------------------------------------------------------------------------------
// Bulk writes of one slice (all inside the slice's transaction)
// ---------------------------------------------------------------------------------------------

/// Refresh the planner's statistics of the tables a sync fills (`gs_analyze_sync_tables`, see
/// migration 0006). Outside any transaction of the caller.
pub async fn analyze_sync_tables(db: &dyn Db) -> Result<(), DbError> {
    db.query("SELECT gs_analyze_sync_tables()::text AS done", &[])
        .await
        .map(|_| ())
}

/// Record the Golioth ids a listing slice saw (one statement; repeats are ignored).
pub async fn record_seen(
    db: &dyn Db,
    org: Uuid,
    run: Uuid,
    ids: &[String],
) -> Result<u64, DbError> {
    if ids.is_empty() {
        return Ok(0);
    }
    db.execute(
        "INSERT INTO sync_run_seen (organization_id, run_id, external_id) \
         SELECT $1, $2, e FROM unnest($3::text[]) AS e \
         ON CONFLICT DO NOTHING",
        &[
            Param::Uuid(org),
            Param::Uuid(run),
            Param::TextArray(ids.to_vec()),
        ],
    )
    .await
}

/// Insert devices created from Golioth. Each row: `{id, name, enabled, tags, hardware_ids,
/// blueprint_id, cohort_id, status, last_seen, last_seen_online, battery_level, signal_strength,
/// firmware_version, location}`.
pub async fn insert_devices(db: &dyn Db, org: Uuid, rows: Vec<Value>) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    db.execute(
        "INSERT INTO devices (id, organization_id, name, enabled, tags, hardware_ids, blueprint_id, \
             cohort_id, status, last_seen, last_seen_online, battery_level, signal_strength, \
             firmware_version, location) \
         SELECT x.id, $1, x.name, coalesce(x.enabled, true), \
                ARRAY(SELECT jsonb_array_elements_text(coalesce(x.tags, '[]'::jsonb))), \
                ARRAY(SELECT jsonb_array_elements_text(coalesce(x.hardware_ids, '[]'::jsonb))), \
                x.blueprint_id, x.cohort_id, coalesce(x.status, 'unknown'), x.last_seen, \
                x.last_seen_online, x.battery_level, x.signal_strength, x.firmware_version, x.location \
         FROM jsonb_to_recordset($2::jsonb) AS x(id uuid, name text, enabled boolean, tags jsonb, \
             hardware_ids jsonb, blueprint_id text, cohort_id text, status text, \
             last_seen timestamptz, last_seen_online timestamptz, battery_level float8, \
             signal_strength float8, firmware_version text, location jsonb)",
        &[Param::Uuid(org), Param::Jsonb(Value::Array(rows))],
    )
    .await
}

/// Update devices where their `version` is still the one read. Each row: `{id, v, c}` where `c`
/// holds only the columns to set (plus `restore` / `soft_delete` flags). Returns the ids that
/// were updated; the others changed meanwhile and are left alone.
pub async fn update_devices(
    db: &dyn Db,
    org: Uuid,
    rows: Vec<Value>,
) -> Result<Vec<Uuid>, DbError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let updated = db
        .query(
            "UPDATE devices d SET \
                 name = CASE WHEN x.c ? 'name' THEN x.c->>'name' ELSE d.name END, \
                 enabled = CASE WHEN x.c ? 'enabled' THEN (x.c->>'enabled')::boolean \
                                ELSE d.enabled END, \
                 tags = CASE WHEN x.c ? 'tags' \
                             THEN ARRAY(SELECT jsonb_array_elements_text(x.c->'tags')) \
                             ELSE d.tags END, \
                 hardware_ids = CASE WHEN x.c ? 'hardware_ids' \
                             THEN ARRAY(SELECT jsonb_array_elements_text(x.c->'hardware_ids')) \
                             ELSE d.hardware_ids END, \
                 blueprint_id = CASE WHEN x.c ? 'blueprint_id' THEN x.c->>'blueprint_id' \
                                     ELSE d.blueprint_id END, \
                 cohort_id = CASE WHEN x.c ? 'cohort_id' THEN x.c->>'cohort_id' ELSE d.cohort_id END, \
                 status = CASE WHEN x.c ? 'status' THEN x.c->>'status' ELSE d.status END, \
                 last_seen = CASE WHEN x.c ? 'last_seen' THEN (x.c->>'last_seen')::timestamptz \
                                  ELSE d.last_seen END, \
                 last_seen_online = CASE WHEN x.c ? 'last_seen_online' \
                                         THEN (x.c->>'last_seen_online')::timestamptz \
                                         ELSE d.last_seen_online END, \
                 firmware_version = CASE WHEN x.c ? 'firmware_version' \
                                         THEN x.c->>'firmware_version' ELSE d.firmware_version END, \
                 battery_level = CASE WHEN x.c ? 'battery_level' \
                                      THEN (x.c->>'battery_level')::float8 ELSE d.battery_level END, \
                 signal_strength = CASE WHEN x.c ? 'signal_strength' \
                                        THEN (x.c->>'signal_strength')::float8 \
                                        ELSE d.signal_strength END, \
                 location = CASE WHEN x.c ? 'location' THEN x.c->'location' ELSE d.location END, \
                 deleted_at = CASE WHEN x.c ? 'restore' THEN NULL \
                                   WHEN x.c ? 'soft_delete' THEN now() ELSE d.deleted_at END \
             FROM jsonb_to_recordset($2::jsonb) AS x(id uuid, v bigint, c jsonb) \
             WHERE d.id = x.id AND d.organization_id = $1 AND d.version = x.v \
             RETURNING d.id",
            &[Param::Uuid(org), Param::Jsonb(Value::Array(rows))],
        )
        .await?;
    updated.iter().map(|r| r.get::<Uuid>("id")).collect()
}

/// Upsert links: `{device_id, external_id, base, status, remote_updated_at}`.
pub async fn upsert_links(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    run: Uuid,
    rows: Vec<Value>,
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    db.execute(
        "INSERT INTO device_service_assignments (organization_id, device_id, service_id, \
             external_device_id, base, sync_status, last_sync, last_seen_run_id, \
             base_remote_updated_at) \
         SELECT $1, x.device_id, $2, x.external_id, x.base, x.status, now(), $3, x.remote_updated_at \
         FROM jsonb_to_recordset($4::jsonb) AS x(device_id uuid, external_id text, base jsonb, \
             status text, remote_updated_at timestamptz) \
         ON CONFLICT (device_id, service_id) DO UPDATE SET \
             external_device_id = EXCLUDED.external_device_id, base = EXCLUDED.base, \
             sync_status = EXCLUDED.sync_status, last_sync = EXCLUDED.last_sync, \
             last_seen_run_id = EXCLUDED.last_seen_run_id, \
             base_remote_updated_at = EXCLUDED.base_remote_updated_at, last_error = NULL, \
             pending_create = NULL, updated_at = now()",
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            Param::Uuid(run),
            Param::Jsonb(Value::Array(rows)),
        ],
    )
    .await
}

/// Store new bases: `{device_id, base, status, remote_updated_at}`.
pub async fn set_bases(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    run: Uuid,
    rows: Vec<Value>,
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    db.execute(
        "UPDATE device_service_assignments a SET base = x.base, sync_status = x.status, \
             last_sync = now(), last_seen_run_id = $3, \
             base_remote_updated_at = coalesce(x.remote_updated_at, a.base_remote_updated_at), \
             last_error = NULL, updated_at = now() \
         FROM jsonb_to_recordset($4::jsonb) AS x(device_id uuid, base jsonb, status text, \
             remote_updated_at timestamptz) \
         WHERE a.organization_id = $1 AND a.service_id = $2 AND a.device_id = x.device_id",
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            Param::Uuid(run),
            Param::Jsonb(Value::Array(rows)),
        ],
    )
    .await
}

/// Detach: keep the Golioth id, drop the base (the device stops syncing).
pub async fn detach(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    run: Uuid,
    devices: &[Uuid],
) -> Result<u64, DbError> {
    if devices.is_empty() {
        return Ok(0);
    }
    db.execute(
        "UPDATE device_service_assignments SET base = NULL, sync_status = 'pending', \
             last_seen_run_id = $3, last_error = NULL, updated_at = now() \
         WHERE organization_id = $1 AND service_id = $2 AND device_id = ANY($4::text[]::uuid[])",
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            Param::Uuid(run),
            uuid_texts(devices),
        ],
    )
    .await
}

/// Delete assignments (unlink and stop exporting).
pub async fn unassign(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    devices: &[Uuid],
) -> Result<u64, DbError> {
    if devices.is_empty() {
        return Ok(0);
    }
    db.execute(
        "DELETE FROM device_service_assignments \
         WHERE organization_id = $1 AND service_id = $2 AND device_id = ANY($3::text[]::uuid[])",
        &[Param::Uuid(org), Param::Uuid(service), uuid_texts(devices)],
    )
    .await
}

/// Write ahead of Golioth creates: `{device_id, base}` per device about to be created, `base`
/// being what the create alone leaves in Golioth (see `domain::sync::pending_create_base`). Cleared by
/// [`upsert_links`] when the create's link is committed, and by [`set_statuses`] when Golioth
/// refused it.
pub async fn mark_creates(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    rows: Vec<Value>,
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    db.execute(
        "UPDATE device_service_assignments a SET pending_create = x.base \
         FROM jsonb_to_recordset($3::jsonb) AS x(device_id uuid, base jsonb) \
         WHERE a.organization_id = $1 AND a.service_id = $2 AND a.device_id = x.device_id \
           AND a.pending_create IS DISTINCT FROM x.base",
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            Param::Jsonb(Value::Array(rows)),
        ],
    )
    .await
}

/// Set `sync_status` / `last_error` where they differ: `{device_id, status, error, settled}`.
/// `settled` (optional) clears a [`mark_creates`] marker: Golioth answered the create with a
/// refusal, so it made nothing.
pub async fn set_statuses(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    rows: Vec<Value>,
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    db.execute(
        "UPDATE device_service_assignments a SET sync_status = x.status, last_error = x.error, \
             pending_create = CASE WHEN x.settled THEN NULL ELSE a.pending_create END, \
             updated_at = now() \
         FROM jsonb_to_recordset($3::jsonb) AS x(device_id uuid, status text, error text, \
             settled boolean) \
         WHERE a.organization_id = $1 AND a.service_id = $2 AND a.device_id = x.device_id \
           AND (a.sync_status IS DISTINCT FROM x.status OR a.last_error IS DISTINCT FROM x.error \
                OR (x.settled AND a.pending_create IS NOT NULL))",
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            Param::Jsonb(Value::Array(rows)),
        ],
    )
    .await
}

/// A conflict row for the bulk statements below. Values are wrapped (`[v]` or null).
pub fn conflict_row(c: &crate::domain::sync::Conflict) -> Value {
    let wrap = |v: &Option<Value>| v.as_ref().map_or(Value::Null, |v| json!([v]));
    json!({
        "device_id": c.device_id,
        "external_id": c.external_id,
        "field": c.field.as_str(),
        "kind": c.kind.as_str(),
        "base_value": wrap(&c.base_value),
        "local_value": wrap(&c.local_value),
        "remote_value": wrap(&c.remote_value),
        "local_updated_at": c.local_updated_at,
        "remote_updated_at": c.remote_updated_at,
    })
}

const CONFLICT_RECORD: &str = "device_id uuid, external_id text, field text, kind text, \
    base_value jsonb, local_value jsonb, remote_value jsonb, local_updated_at timestamptz, \
    remote_updated_at timestamptz";

/// Open pending conflicts (rows from [`conflict_row`]); one already pending for the same
/// (device, field) wins.
pub async fn open_conflicts(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    run: Uuid,
    rows: Vec<Value>,
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    db.execute(
        &format!(
            "INSERT INTO device_conflicts (organization_id, service_id, device_id, \
                 external_device_id, field_name, conflict_type, base_value, local_value, \
                 remote_value, local_updated_at, remote_updated_at, detected_run_id) \
             SELECT $1, $2, x.device_id, x.external_id, x.field, x.kind, x.base_value->0, \
                    x.local_value->0, x.remote_value->0, x.local_updated_at, x.remote_updated_at, $3 \
             FROM jsonb_to_recordset($4::jsonb) AS x({CONFLICT_RECORD}) \
             ON CONFLICT DO NOTHING"
        ),
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            Param::Uuid(run),
            Param::Jsonb(Value::Array(rows)),
        ],
    )
    .await
}

/// Refresh pending conflicts in place: rows from [`conflict_row`] plus `id`.
pub async fn refresh_conflicts(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    run: Uuid,
    rows: Vec<Value>,
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    db.execute(
        &format!(
            "UPDATE device_conflicts c SET conflict_type = x.kind, base_value = x.base_value->0, \
                 local_value = x.local_value->0, remote_value = x.remote_value->0, \
                 local_updated_at = x.local_updated_at, remote_updated_at = x.remote_updated_at, \
                 detected_run_id = $3, updated_at = now() \
             FROM jsonb_to_recordset($4::jsonb) AS x(id uuid, {CONFLICT_RECORD}) \
             WHERE c.id = x.id AND c.organization_id = $1 AND c.service_id = $2 \
               AND c.resolution_status = 'pending'"
        ),
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            Param::Uuid(run),
            Param::Jsonb(Value::Array(rows)),
        ],
    )
    .await
}

/// Mark pending conflicts superseded (the sides converged, or a run settled them).
pub async fn supersede_conflicts(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    ids: &[Uuid],
) -> Result<u64, DbError> {
    if ids.is_empty() {
        return Ok(0);
    }
    db.execute(
        "UPDATE device_conflicts SET resolution_status = 'superseded', resolved_at = now(), \
             updated_at = now() \
         WHERE organization_id = $1 AND service_id = $2 AND id = ANY($3::text[]::uuid[]) \
           AND resolution_status = 'pending'",
        &[Param::Uuid(org), Param::Uuid(service), uuid_texts(ids)],
    )
    .await
}

/// Record conflicts a policy settled: rows from [`conflict_row`] plus `replaces` (a pending row
/// to update instead of inserting), `strategy` and `resolved_value` (wrapped).
pub async fn auto_resolve_conflicts(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    run: Uuid,
    rows: Vec<Value>,
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    db.execute(
        &format!(
            "WITH x AS (SELECT * FROM jsonb_to_recordset($4::jsonb) AS x(replaces uuid, \
                     strategy text, resolved_value jsonb, {CONFLICT_RECORD})), \
                  upd AS ( \
                     UPDATE device_conflicts c SET resolution_status = 'auto_resolved', \
                         resolution_strategy = x.strategy, resolved_value = x.resolved_value->0, \
                         conflict_type = x.kind, base_value = x.base_value->0, \
                         local_value = x.local_value->0, remote_value = x.remote_value->0, \
                         local_updated_at = x.local_updated_at, \
                         remote_updated_at = x.remote_updated_at, detected_run_id = $3, \
                         resolved_at = now(), updated_at = now() \
                     FROM x WHERE x.replaces IS NOT NULL AND c.id = x.replaces \
                       AND c.organization_id = $1 AND c.service_id = $2 \
                       AND c.resolution_status = 'pending' \
                     RETURNING c.id) \
             INSERT INTO device_conflicts (organization_id, service_id, device_id, \
                 external_device_id, field_name, conflict_type, base_value, local_value, \
                 remote_value, local_updated_at, remote_updated_at, detected_run_id, \
                 resolution_status, resolution_strategy, resolved_value, resolved_at) \
             SELECT $1, $2, x.device_id, x.external_id, x.field, x.kind, x.base_value->0, \
                    x.local_value->0, x.remote_value->0, x.local_updated_at, x.remote_updated_at, \
                    $3, 'auto_resolved', x.strategy, x.resolved_value->0, now() \
             FROM x WHERE x.replaces IS NULL"
        ),
        &[
            Param::Uuid(org),
            Param::Uuid(service),
            Param::Uuid(run),
            Param::Jsonb(Value::Array(rows)),
        ],
    )
    .await
}
