//! Security properties the database and the crypto enforce: row level security binds the
//! application role even without a WHERE clause, the role cannot bypass it, and credential keys
//! rotate (new key encrypts, old key still decrypts, rotation re-encrypts everything), and no
//! row can point at another organization's device, service or run (migration 0007).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use harness::{TestApp, spawn_app, spawn_app_with};
use serde_json::json;
use shared::base::ports::{Db, Param};
use uuid::Uuid;

const TENANT_TABLES: &[&str] = &[
    "organization_members",
    "devices",
    "device_services",
    "device_service_assignments",
    "sync_runs",
    "golioth_sync_log",
    "device_conflicts",
    "webhook_deliveries",
    "device_telemetry",
    "sync_run_seen",
];

/// One row in every tenant table for `org`.
async fn seed_everything(app: &TestApp, org: Uuid) {
    let db = app.admin().await;
    app.seed_member(org, "owner").await;
    let device: Uuid = db
        .query_one(
            "INSERT INTO devices (organization_id, name) VALUES ($1, 'd') RETURNING id",
            &[&org],
        )
        .await
        .unwrap()
        .get(0);
    let service: Uuid = db
        .query_one(
            "INSERT INTO device_services (organization_id, name) VALUES ($1, 's') RETURNING id",
            &[&org],
        )
        .await
        .unwrap()
        .get(0);
    db.batch_execute(&format!(
        "INSERT INTO device_service_assignments (organization_id, device_id, service_id, external_device_id)
           VALUES ('{org}', '{device}', '{service}', 'aaaaaaaaaaaaaaaaaaaaaaaa');
         WITH r AS (INSERT INTO sync_runs (organization_id, service_id, operation)
                    VALUES ('{org}', '{service}', 'import') RETURNING id)
         INSERT INTO sync_run_seen (organization_id, run_id, external_id)
           SELECT '{org}', id, 'aaaaaaaaaaaaaaaaaaaaaaaa' FROM r;
         INSERT INTO golioth_sync_log (organization_id, service_id, operation, status) VALUES ('{org}', '{service}', 'x', 'ok');
         INSERT INTO device_conflicts (organization_id, service_id, device_id, field_name, conflict_type)
           VALUES ('{org}', '{service}', '{device}', 'name', 'concurrent_modification');
         INSERT INTO webhook_deliveries (organization_id, service_id, delivery_key, status) VALUES ('{org}', '{service}', 'k', 'processed');
         INSERT INTO device_telemetry (organization_id, device_id, service_id, path, recorded_at, data)
           VALUES ('{org}', '{device}', '{service}', 'p', now(), '{{}}');"
    ))
    .await
    .unwrap();
}

/// Every child row references its device, service or run together with its own organization
/// (migration 0007), so even the owner role, which bypasses row level security, cannot file a
/// row of organization A that points at B's device, service or run; the same rows within one
/// organization are accepted, and deleting the organization removes all of them.
#[tokio::test]
async fn no_row_points_into_another_organization() {
    let app = spawn_app().await;
    let (a, b) = (app.seed_org("a").await, app.seed_org("b").await);
    seed_everything(&app, a).await;
    seed_everything(&app, b).await;
    let db = app.admin().await;
    // The one row of `table` that seed_everything made for `org`: its id, or how many it has.
    let scalar = async |sql: String, org: Uuid| db.query_one(&sql, &[&org]).await.unwrap();
    let id_of = async |table: &str, org: Uuid| -> Uuid {
        scalar(
            format!("SELECT id FROM {table} WHERE organization_id = $1"),
            org,
        )
        .await
        .get(0)
    };
    let rows_of = async |table: &str, org: Uuid| -> i64 {
        scalar(
            format!("SELECT count(*) FROM {table} WHERE organization_id = $1"),
            org,
        )
        .await
        .get(0)
    };
    let (device_a, device_b) = (id_of("devices", a).await, id_of("devices", b).await);
    let service_a = id_of("device_services", a).await;
    let service_b = id_of("device_services", b).await;
    let run_b = id_of("sync_runs", b).await;
    let cross = [
        format!(
            "INSERT INTO device_service_assignments (organization_id, device_id, service_id) VALUES ('{a}', '{device_b}', '{service_a}')"
        ),
        format!(
            "INSERT INTO device_service_assignments (organization_id, device_id, service_id) VALUES ('{a}', '{device_a}', '{service_b}')"
        ),
        format!(
            "INSERT INTO sync_runs (organization_id, service_id, operation, params) VALUES ('{a}', '{service_b}', 'device_refresh', '{{\"device_id\": \"cross\"}}')"
        ),
        format!(
            "INSERT INTO sync_run_seen (organization_id, run_id, external_id) VALUES ('{a}', '{run_b}', 'x')"
        ),
        format!(
            "INSERT INTO device_conflicts (organization_id, service_id, device_id, field_name, conflict_type) VALUES ('{a}', '{service_a}', '{device_b}', 'name', 'concurrent_modification')"
        ),
        format!(
            "INSERT INTO device_conflicts (organization_id, service_id, field_name, conflict_type) VALUES ('{a}', '{service_b}', 'name', 'concurrent_modification')"
        ),
        format!(
            "INSERT INTO webhook_deliveries (organization_id, service_id, delivery_key, status) VALUES ('{a}', '{service_b}', 'cross', 'processed')"
        ),
        format!(
            "INSERT INTO device_telemetry (organization_id, device_id, service_id, path, recorded_at, data) VALUES ('{a}', '{device_b}', '{service_a}', 'p', now(), '{{}}')"
        ),
        format!(
            "INSERT INTO device_telemetry (organization_id, device_id, service_id, path, recorded_at, data) VALUES ('{a}', '{device_a}', '{service_b}', 'p', now(), '{{}}')"
        ),
    ];
    for sql in &cross {
        let err = db.batch_execute(sql).await.expect_err(sql);
        assert_eq!(err.code().map(|c| c.code()), Some("23503"), "{sql}: {err}");
    }
    // The same shapes inside one organization are fine (seed_everything made one of each).
    db.batch_execute(&format!(
        "INSERT INTO webhook_deliveries (organization_id, service_id, delivery_key, status) VALUES ('{a}', '{service_a}', 'own', 'processed');
         INSERT INTO device_telemetry (organization_id, device_id, service_id, path, recorded_at, data) VALUES ('{a}', '{device_a}', '{service_a}', 'p', now(), '{{}}')"
    ))
    .await
    .unwrap();
    db.execute("DELETE FROM organizations WHERE id = $1", &[&a])
        .await
        .unwrap();
    // The audit trail has no foreign keys on purpose (0001: no log row is ever rejected), so it
    // outlives what it describes.
    for table in TENANT_TABLES.iter().filter(|t| **t != "golioth_sync_log") {
        let left = rows_of(table, a).await;
        assert_eq!(left, 0, "{table} kept rows of a deleted organization");
        let kept = rows_of(table, b).await;
        assert!(kept > 0, "{table} lost the other organization's rows");
    }
}

/// The same queries run as the application role WITHOUT an organization filter return only the
/// current organization's rows — and none at all when no organization is set.
#[tokio::test]
async fn rls_binds_the_app_role_without_where_clauses() {
    let app = spawn_app().await;
    let a = app.seed_org("a").await;
    let b = app.seed_org("b").await;
    seed_everything(&app, a).await;
    seed_everything(&app, b).await;
    let pool = shared::runtime::native::PgPool::new(&app.app_db_url, 2).unwrap();
    let db = pool.lazy();
    for table in TENANT_TABLES {
        let sql = format!("SELECT organization_id::text AS org FROM {table}");
        let none = db.query(&sql, &[]).await.unwrap();
        assert!(
            none.is_empty(),
            "{table}: rows visible without an organization"
        );
        for org in [a, b] {
            let rows: Vec<String> = shared::domain::store::in_org(&db, org, |tx| {
                let sql = sql.clone();
                Box::pin(async move {
                    let rows = tx.query(&sql, &[]).await?;
                    rows.iter().map(|r| r.get::<String>("org")).collect()
                })
            })
            .await
            .unwrap();
            assert!(!rows.is_empty(), "{table}: own rows invisible");
            assert!(
                rows.iter().all(|r| *r == org.to_string()),
                "{table}: saw another organization's rows"
            );
        }
    }
    // Writing a row for another organization is refused by the policy's WITH CHECK.
    let err = shared::domain::store::in_org(&db, a, |tx| {
        Box::pin(async move {
            tx.execute(
                "INSERT INTO devices (organization_id, name) VALUES ($1, 'sneaky')",
                &[Param::Uuid(b)],
            )
            .await
        })
    })
    .await
    .unwrap_err();
    assert_eq!(err.sqlstate(), Some("42501"), "{err}");
    // Updating another organization's rows touches nothing.
    let n = shared::domain::store::in_org(&db, a, |tx| {
        Box::pin(async move {
            tx.execute(
                "UPDATE devices SET name = 'x' WHERE organization_id = $1",
                &[Param::Uuid(b)],
            )
            .await
        })
    })
    .await
    .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn the_app_role_owns_nothing_and_cannot_bypass_rls() {
    let app = spawn_app().await;
    let db = app.admin().await;
    let row = db
        .query_one(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'golioth_sync_app'",
            &[],
        )
        .await
        .unwrap();
    for i in 0..4 {
        assert!(!row.get::<_, bool>(i), "attribute {i}");
    }
    let owned: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner \
             WHERE r.rolname = 'golioth_sync_app'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 0);
    let forced = harness::texts(
        &db,
        "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace \
         AND relkind IN ('r','p') AND relname <> '_sqlx_migrations' AND relname NOT LIKE 'golioth_sync_log_%' \
         AND NOT (relrowsecurity AND relforcerowsecurity)",
    )
    .await;
    assert!(forced.is_empty(), "tables without forced RLS: {forced:?}");
    // The app role cannot create tables or change the schema.
    let pool = shared::runtime::native::PgPool::new(&app.app_db_url, 1).unwrap();
    let err = pool
        .lazy()
        .execute("CREATE TABLE x (id int)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("42501"), "{err}");
}

fn ring(entries: &[(&str, u8)]) -> String {
    entries
        .iter()
        .map(|(id, b)| format!("{id}:{}", STANDARD.encode([*b; 32])))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn key_rotation_reencrypts_everything_and_old_keys_still_decrypt() {
    let old_ring = ring(&[("k1", 1)]);
    let new_ring = ring(&[("k2", 2), ("k1", 1)]);
    let only_new = ring(&[("k2", 2)]);
    let mut vars = std::collections::HashMap::new();
    vars.insert("encryption_key".to_owned(), old_ring.clone());
    let app = spawn_app_with(harness::AppOptions { vars }).await;
    let org = app.seed_org("rot").await;
    let admin = app.jwt(app.seed_member(org, "admin").await);
    for i in 0..3 {
        let r = app
            .post(
                &format!("/api/v1/orgs/{org}/services"),
                Some(&admin),
                &json!({"name": format!("s{i}"), "config": {"project_id": "p"},
                        "api_key": format!("api-key-number-{i}-ABC{i}")}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let key_ids = |app: &TestApp| {
        let url = app.admin_db_url.clone();
        async move {
            let db = host::pgenv::connect(&url).await.unwrap();
            db.query("SELECT credentials FROM device_services ORDER BY name", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    shared::domain::crypto::Keyring::key_id_of(&r.get::<_, Vec<u8>>(0))
                        .unwrap()
                        .to_owned()
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(key_ids(&app).await, ["k1", "k1", "k1"]);

    // During rotation, a host with the new ring (new key first) reads old ciphertexts.
    let mid = app.another_host(&[("encryption_key", &new_ring)]);
    let r = app
        .send(
            app.client
                .get(format!("{}/api/v1/orgs/{org}/services", mid.base_url()))
                .bearer_auth(&admin),
        )
        .await;
    assert_eq!(r.json()["items"][0]["credentials"]["api_key_last4"], "ABC0");

    let report = host::keys::rotate(
        &app.admin_db_url,
        &shared::base::settings::Secret::new(new_ring.clone()),
    )
    .await
    .unwrap();
    assert_eq!(report.reencrypted, 3);
    assert_eq!(key_ids(&app).await, ["k2", "k2", "k2"]);
    let again = host::keys::rotate(
        &app.admin_db_url,
        &shared::base::settings::Secret::new(new_ring),
    )
    .await
    .unwrap();
    assert_eq!((again.reencrypted, again.already_current), (0, 3));

    // After rotation the old key can be dropped from the ring.
    let after = app.another_host(&[("encryption_key", &only_new)]);
    let r = app
        .send(
            app.client
                .get(format!("{}/api/v1/orgs/{org}/services", after.base_url()))
                .bearer_auth(&admin),
        )
        .await;
    let items = r.json()["items"].as_array().unwrap().clone();
    let last4: Vec<_> = items
        .iter()
        .map(|s| s["credentials"]["api_key_last4"].clone())
        .collect();
    assert_eq!(last4, [json!("ABC0"), json!("ABC1"), json!("ABC2")]);
    // And the old ring alone no longer can.
    let r = app
        .get(&format!("/api/v1/orgs/{org}/services"), Some(&admin))
        .await;
    assert_eq!(r.json()["items"][0]["credentials"]["readable"], false);
    drop((mid, after));
}
