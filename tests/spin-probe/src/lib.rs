//! Test-only Spin component (never deployed): runs each kind of statement that can yield zero rows
//! through the product's Spin Postgres adapter (`shared::runtime::spin::SpinDb`, which applies the zero-row
//! guard) and answers what came back and how long it took. `GET /raw?case=<kind>` sends one case
//! straight to the synchronous `query` of Spin's Postgres binding without the guard: the canary
//! that shows the host bug.

/// Statements that yield zero rows, one per kind the zero-row guard must cover, against the
/// migrated schema as the application role (no organization set, so row level security hides
/// every tenant row as well).
pub const ZERO_ROW_CASES: &[(&str, &str)] = &[
    (
        "select",
        "SELECT id, name FROM devices WHERE name = 'no such device' ORDER BY name",
    ),
    (
        "returning",
        "UPDATE devices SET name = name WHERE name = 'no such device' RETURNING id",
    ),
    (
        "for_update_skip_locked",
        "SELECT id FROM sync_runs WHERE status = 'queued' ORDER BY created_at LIMIT 10 \
         FOR UPDATE SKIP LOCKED",
    ),
    (
        "cte",
        "WITH d AS (SELECT id, name FROM devices WHERE name = 'no such device') \
         SELECT d.id FROM d ORDER BY d.name",
    ),
    (
        "data_modifying_cte",
        "WITH gone AS (DELETE FROM devices WHERE name = 'no such device' RETURNING id) \
         SELECT gone.id FROM gone",
    ),
    (
        "insert_returning_nothing",
        "INSERT INTO devices (organization_id, name) SELECT organization_id, name FROM devices \
         WHERE false RETURNING id",
    ),
];

/// A statement with rows whose order the guard must keep.
pub const ORDERED_CASE: &str =
    "SELECT g::int8 AS n FROM generate_series(1, 50) AS g ORDER BY g DESC";

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    use serde_json::{Value, json};
    use shared::base::ports::{Db, Param};

    fn now_ms() -> f64 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_secs_f64() * 1000.0
    }

    fn respond(status: u16, body: Value) -> http::Response<String> {
        let mut r = http::Response::new(body.to_string());
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
        r
    }

    #[spin_sdk::http_service]
    async fn handle(req: spin_sdk::http::Request) -> http::Response<String> {
        let Ok(url) = spin_sdk::variables::get("db_url").await else {
            return respond(500, json!({"error": "db_url is not set"}));
        };
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        if path == "/health" {
            return respond(200, json!({"status": "ok"}));
        }
        if path == "/raw" {
            // The synchronous `query` of `spin:postgres/postgres` (what spin-sdk 5.2's `pg4`
            // calls), unguarded: the function spinframework/spin#3671 hangs on 4.0.0-4.0.2.
            use spin_sdk::pg::wit::postgres::Connection;
            let kind = query.strip_prefix("case=").unwrap_or("select");
            let Some((_, sql)) = super::ZERO_ROW_CASES.iter().find(|(k, _)| *k == kind) else {
                return respond(400, json!({"error": "unknown case"}));
            };
            let conn = match Connection::open(&url) {
                Ok(c) => c,
                Err(e) => return respond(500, json!({"error": e.to_string()})),
            };
            let started = now_ms();
            return match conn.query(sql, &[]) {
                Ok(set) => respond(
                    200,
                    json!({"case": kind, "rows": set.rows.len(), "ms": now_ms() - started}),
                ),
                Err(e) => respond(500, json!({"error": e.to_string()})),
            };
        }
        // `/guarded`: every case through the product's adapter, then the ordered one.
        let db = shared::runtime::spin::SpinDb::new(Some(url));
        let mut cases = Vec::new();
        for (kind, sql) in super::ZERO_ROW_CASES {
            let started = now_ms();
            let outcome = db.query(sql, &[]).await;
            let ms = now_ms() - started;
            cases.push(match outcome {
                Ok(rows) => json!({"case": kind, "rows": rows.len(), "ms": ms}),
                Err(e) => json!({"case": kind, "error": e.to_string(), "ms": ms}),
            });
        }
        let ordered: Vec<i64> = match db.query(super::ORDERED_CASE, &[] as &[Param]).await {
            Ok(rows) => rows.iter().filter_map(|r| r.get::<i64>("n").ok()).collect(),
            Err(e) => return respond(500, json!({"error": e.to_string()})),
        };
        respond(200, json!({"cases": cases, "ordered": ordered}))
    }
}
