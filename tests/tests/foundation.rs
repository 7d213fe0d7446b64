//! Foundation: health, the one routing table served by the native host, problem+json errors, the
//! migration round trip, the schema's tenant invariants, the native Db port's Spin-compatible
//! typing, and the cron expression.

use std::collections::{BTreeSet, HashMap};

use harness::{TestApp, spawn_app, spawn_app_with};
use host::manifest::{self, Manifest};
use host::pgenv;
use serde_json::json;
use shared::api::{Component, routes};
use shared::base::ports::{Db, Param, Value};

#[tokio::test]
async fn health_reports_the_database() {
    let app = spawn_app().await;
    let r = app.get("/health", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"status": "ok", "database": "ok"}));
    assert!(r.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn health_answers_503_problem_when_the_database_is_down() {
    let mut vars = HashMap::new();
    vars.insert("db_host".to_owned(), "127.0.0.1:1".to_owned());
    let app = spawn_app_with(harness::AppOptions { vars }).await;
    let r = app.get("/health", None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.content_type(), "application/problem+json");
    assert_eq!(r.json()["database"], "unavailable");
    assert!(
        !r.text().contains("127.0.0.1:1"),
        "no connection details leak: {}",
        r.text()
    );
}

/// spin.toml's wildcard route: what matches no other route goes to device-sync's 404.
const CATCH_ALL: &str = "/...";

/// spin.toml's routes and each component's route table are the same set of patterns (the
/// console component, static files with no API route table, owns `/console/...` alone).
#[test]
fn spin_toml_routes_match_the_shared_route_tables() {
    let m = Manifest::load(&manifest::default_path()).unwrap();
    for c in Component::ALL {
        let in_manifest: BTreeSet<String> = m
            .http_routes
            .iter()
            .filter(|r| r.component_id == c.id() && r.pattern.as_str() != CATCH_ALL)
            .map(|r| r.pattern.as_str().to_owned())
            .collect();
        let in_code: BTreeSet<String> = routes(c).iter().map(|r| r.pattern.to_owned()).collect();
        assert_eq!(in_manifest, in_code, "component {}", c.id());
    }
    // The one catch-all: device-sync answers unknown paths with problem+json on both hosts.
    let catch_all: Vec<&str> = m
        .http_routes
        .iter()
        .filter(|r| r.pattern.as_str() == CATCH_ALL)
        .map(|r| r.component_id.as_str())
        .collect();
    assert_eq!(catch_all, vec!["device-sync"]);
    let ids: BTreeSet<&str> = m.component_ids().collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            "conflicts",
            "console",
            "device-sync",
            "golioth-webhook",
            "scheduler"
        ])
    );
    // The console component serves its static app under one wildcard route, nothing else.
    let console: Vec<&str> = m
        .http_routes
        .iter()
        .filter(|r| r.component_id == "console")
        .map(|r| r.pattern.as_str())
        .collect();
    assert_eq!(console, vec![golioth_console::ROUTE]);
}

fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|s| {
            if s.starts_with(':') {
                uuid::Uuid::new_v4().to_string()
            } else {
                s.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every route of spin.toml reaches a handler through the native host: never a 404 or 405, and
/// every error is problem+json (routes whose feature is not built yet answer 501).
#[tokio::test]
async fn every_route_reaches_its_handler() {
    let app = spawn_app().await;
    let mut seen = 0;
    for c in Component::ALL {
        for route in routes(c) {
            let path = concrete(route.pattern);
            let r = app
                .request(route.method, &path, None, Some(&json!({})))
                .await;
            assert!(
                r.status != 404 && r.status != 405,
                "{} {} -> {} {}",
                route.method,
                path,
                r.status,
                r.text()
            );
            if r.status >= 400 {
                assert_eq!(
                    r.content_type(),
                    "application/problem+json",
                    "{} {}",
                    route.method,
                    path
                );
                assert_eq!(r.json()["status"], r.status);
            }
            seen += 1;
        }
    }
    assert!(seen >= 22, "{seen}");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problems() {
    let app = spawn_app().await;
    let r = app.get("/nope", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.content_type(), "application/problem+json");
    let r = app.request("PUT", "/health", None, None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, OPTIONS");
    assert_eq!(r.content_type(), "application/problem+json");
}

#[tokio::test]
async fn client_supplied_spin_headers_are_ignored() {
    let app = spawn_app().await;
    let r = app
        .send(
            app.client
                .get(format!("{}/health", app.base_url))
                .header("spin-path-match-org-id", "forged")
                .header("spin-matched-route", "/forged"),
        )
        .await;
    assert_eq!(r.status, 200);
}

/// Snapshot of everything migrations define, as sorted text lines.
async fn schema(client: &tokio_postgres::Client) -> Vec<String> {
    let queries = [
        "SELECT 'col ' || table_name || '.' || column_name || ' ' || data_type || ' ' || udt_name \
         || ' null=' || is_nullable || ' default=' || coalesce(column_default, '') \
         FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
        "SELECT 'con ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) \
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid <> '_sqlx_migrations'::regclass",
        "SELECT 'idx ' || tablename || ' ' || indexname || ' ' || indexdef FROM pg_indexes \
         WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'",
        "SELECT 'fn ' || p.proname || ' secdef=' || p.prosecdef || ' cfg=' || coalesce(array_to_string(p.proconfig, ','), '') \
         || ' ' || md5(pg_get_functiondef(p.oid)) FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace",
        "SELECT 'trg ' || tgname || ' ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal",
        "SELECT 'pol ' || tablename || ' ' || policyname || ' ' || coalesce(qual, '') || ' ' || coalesce(with_check, '') \
         FROM pg_policies WHERE schemaname = 'public'",
        "SELECT 'rls ' || relname || ' ' || relrowsecurity || ' ' || relforcerowsecurity FROM pg_class \
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') AND relname <> '_sqlx_migrations'",
        "SELECT 'grant ' || table_name || ' ' || grantee || ' ' || privilege_type \
         FROM information_schema.role_table_grants WHERE table_schema = 'public' AND grantee <> 'postgres'",
        "SELECT 'part ' || c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid) FROM pg_class c \
         WHERE c.relispartition AND c.relnamespace = 'public'::regnamespace",
    ];
    let mut lines = Vec::new();
    for q in queries {
        for row in client
            .query(q, &[])
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"))
        {
            let line: Option<String> = row.try_get(0).unwrap_or_else(|e| panic!("{q}: {e}"));
            lines.push(line.unwrap_or_else(|| format!("NULL from {q}")));
        }
    }
    lines.sort();
    lines
}

/// Drops a scratch database when the test ends, whether it passed or panicked.
struct ScratchDb {
    admin_url: String,
    name: String,
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        harness::drop_database(&self.admin_url, &self.name);
    }
}

#[tokio::test]
async fn migrations_round_trip_to_an_identical_schema() {
    let server = harness::server().await.unwrap();
    let scratch = ScratchDb {
        admin_url: server.admin_url.clone(),
        name: format!("gsync_mig_{}", uuid::Uuid::new_v4().simple()),
    };
    let admin = pgenv::connect(&server.admin_url).await.unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {}", pgenv::ident(&scratch.name)))
        .await
        .unwrap();
    let url = pgenv::with_database(&server.admin_url, &scratch.name).unwrap();
    host::migrate::apply(&url).await.unwrap();
    let db = pgenv::connect(&url).await.unwrap();
    let first = schema(&db).await;
    assert!(
        first.len() > 100,
        "schema snapshot too small: {}",
        first.len()
    );
    host::migrate::revert_all(&url).await.unwrap();
    let empty = schema(&db).await;
    assert!(empty.is_empty(), "left after down: {empty:?}");
    host::migrate::apply(&url).await.unwrap();
    let second = schema(&db).await;
    assert_eq!(first, second);
    drop(db);
}

/// Every tenant table has organization_id NOT NULL and an index that starts with it.
#[tokio::test]
async fn every_tenant_table_is_indexed_by_organization() {
    let app = spawn_app().await;
    let db = app.admin().await;
    let tables = [
        "devices",
        "device_services",
        "device_service_assignments",
        "sync_runs",
        "golioth_sync_log",
        "device_conflicts",
        "webhook_deliveries",
        "device_telemetry",
        "organization_members",
        "sync_run_seen",
    ];
    // The list is every table with an organization_id (partitions of the sync log aside), so
    // a new tenant table cannot skip this check.
    let mut found = harness::texts(
        &db,
        "SELECT c.table_name::text FROM information_schema.columns c \
         JOIN pg_class k ON k.relname = c.table_name AND NOT k.relispartition \
         JOIN pg_namespace n ON n.oid = k.relnamespace AND n.nspname = 'public' \
         WHERE c.table_schema = 'public' AND c.column_name = 'organization_id'",
    )
    .await;
    found.sort();
    let mut listed: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "tenant tables");
    for t in tables {
        let row = db
            .query_one(
                "SELECT is_nullable FROM information_schema.columns \
                 WHERE table_schema='public' AND table_name=$1 AND column_name='organization_id'",
                &[&t],
            )
            .await
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(row.get::<_, String>(0), "NO", "{t}");
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] \
                 WHERE c.relname = $1 AND a.attname = 'organization_id'",
                &[&t],
            )
            .await
            .unwrap()
            .get(0);
        assert!(n >= 1, "{t} has no index led by organization_id");
    }
}

/// The monthly partitions exist ahead, a row for a month without a partition lands in the
/// default partition, and creating that month's partition later moves it there.
#[tokio::test]
async fn sync_log_partitions_are_created_ahead_and_absorb_the_default() {
    let app = spawn_app().await;
    let db = app.admin().await;
    let org = app.seed_org("p").await;
    db.execute(
        "INSERT INTO golioth_sync_log (organization_id, operation, status, created_at) \
         VALUES ($1, 'test', 'ok', '2031-05-10T00:00:00Z')",
        &[&org],
    )
    .await
    .unwrap();
    let in_default: i64 = db
        .query_one("SELECT count(*) FROM golioth_sync_log_default", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_default, 1);
    let created: i32 = db
        .query_one(
            "SELECT golioth_sync_log_ensure_partitions('2031-05-01T00:00:00Z', 2)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 2);
    let moved: i64 = db
        .query_one("SELECT count(*) FROM golioth_sync_log_y2031m05", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(moved, 1);
    let dropped: i32 = db
        .query_one(
            "SELECT golioth_sync_log_drop_partitions('2031-07-01T00:00:00Z')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(dropped >= 2, "{dropped}");
}

/// The native Db port binds and decodes exactly the types Spin's binding does, and refuses a
/// `timestamptz` column in a result set the way Spin would.
#[tokio::test]
async fn native_db_port_types_match_spin_rules() {
    let app: TestApp = spawn_app().await;
    let pool = shared::runtime::native::PgPool::new(&app.app_db_url, 2).unwrap();
    let db = pool.lazy();
    let id = uuid::Uuid::new_v4();
    let rows = db
        .query(
            "SELECT $1::bool AS b, $2::int4 AS i, $3::int8 AS l, $4::float8 AS f, $5::text AS t, \
                    $6::jsonb AS j, $7::uuid AS u, $8::text[] AS a, $9::bytea AS y, \
                    $10::text::uuid AS n, $11::text::timestamptz::text AS ts",
            &[
                Param::Bool(true),
                Param::Int32(7),
                Param::Int64(1 << 40),
                Param::Float64(1.5),
                Param::Text("x".into()),
                Param::Jsonb(json!({"k": [1, 2]})),
                Param::Uuid(id),
                Param::TextArray(vec!["a".into(), "b".into()]),
                Param::Bytes(vec![0, 1, 2]),
                Param::Null,
                Param::Text("2026-01-02T03:04:05Z".into()),
            ],
        )
        .await
        .unwrap();
    let r = &rows[0];
    assert!(r.get::<bool>("b").unwrap());
    assert_eq!(r.get::<i32>("i").unwrap(), 7);
    assert_eq!(r.get::<i64>("l").unwrap(), 1 << 40);
    assert_eq!(r.get::<f64>("f").unwrap(), 1.5);
    assert_eq!(r.get::<String>("t").unwrap(), "x");
    assert_eq!(
        r.get::<serde_json::Value>("j").unwrap(),
        json!({"k": [1, 2]})
    );
    assert_eq!(r.get::<uuid::Uuid>("u").unwrap(), id);
    assert_eq!(r.get::<Vec<String>>("a").unwrap(), ["a", "b"]);
    assert_eq!(r.get::<Vec<u8>>("y").unwrap(), [0, 1, 2]);
    assert_eq!(r.value("n").unwrap(), &Value::Null);
    assert_eq!(r.get::<String>("ts").unwrap(), "2026-01-02 03:04:05+00");

    let err = db.query("SELECT now() AS t", &[]).await.unwrap_err();
    assert!(err.to_string().contains("timestamptz"), "{err}");
    let err = db
        .query("SELECT $1::int8 AS x", &[Param::Int32(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, shared::base::ports::DbError::Query { .. }),
        "{err}"
    );

    // A unique violation carries its SQLSTATE.
    let org = app.seed_org("o").await;
    let insert = "INSERT INTO device_services (organization_id, name) VALUES ($1, 'dup')";
    let err = shared::domain::store::in_org(&db, org, |tx| {
        Box::pin(async move {
            tx.execute(insert, &[Param::Uuid(org)]).await?;
            tx.execute(insert, &[Param::Uuid(org)]).await
        })
    })
    .await
    .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
}

/// `transaction` commits on Ok and rolls back on Err, so nothing is half-written.
#[tokio::test]
async fn transactions_roll_back_on_error() {
    let app = spawn_app().await;
    let org = app.seed_org("t").await;
    let pool = shared::runtime::native::PgPool::new(&app.app_db_url, 2).unwrap();
    let db = pool.lazy();
    let r: Result<(), shared::base::ports::DbError> =
        shared::domain::store::in_org(&db, org, |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO device_services (organization_id, name) VALUES ($1, 'a')",
                    &[Param::Uuid(org)],
                )
                .await?;
                tx.execute("SELECT 1/0", &[]).await.map(|_| ())
            })
        })
        .await;
    assert!(r.is_err());
    let n: i64 = app
        .admin()
        .await
        .query_one("SELECT count(*) FROM device_services", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// The cron expression in spin.toml parses with croner (the family spin-trigger-cron uses:
/// tokio-cron-scheduler → croner), as exactly 6 fields with seconds first.
#[test]
fn cron_expression_is_six_fields_seconds_first() {
    let m = Manifest::load(&manifest::default_path()).unwrap();
    assert_eq!(m.cron.len(), 1);
    let expr = &m.cron[0].cron_expression;
    assert_eq!(expr.split_whitespace().count(), 6, "{expr}");
    let cron = croner::Cron::new(expr)
        .with_seconds_required()
        .with_dom_and_dow()
        .parse()
        .unwrap_or_else(|e| panic!("{expr}: {e}"));
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:30Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let next = cron.find_next_occurrence(&start, false).unwrap();
    assert_eq!(next.to_rfc3339(), "2026-01-01T00:01:00+00:00");
    // A 5-field expression is rejected by the same parser configuration.
    assert!(
        croner::Cron::new("* * * * *")
            .with_seconds_required()
            .parse()
            .is_err()
    );
}
