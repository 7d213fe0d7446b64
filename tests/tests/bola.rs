//! BOLA (OWASP API1): every route that takes an organization or object id, called by an admin of
//! another organization — with the victim's organization id, and with the caller's own
//! organization id but the victim's object ids — answers 404, and the victim's rows are
//! byte-for-byte unchanged afterwards.

use harness::{TestApp, spawn_app};
use serde_json::json;
use shared::api::{Access, Component, Endpoint, routes};
use uuid::Uuid;

const TABLES: &[&str] = &[
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

/// A digest of every row the organization owns, table by table.
async fn snapshot(app: &TestApp, org: Uuid) -> Vec<(String, String)> {
    let db = app.admin().await;
    let mut out = Vec::new();
    for t in TABLES {
        let digest: Option<String> = db
            .query_one(
                &format!(
                    "SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM {t} x \
                     WHERE organization_id = $1"
                ),
                &[&org],
            )
            .await
            .unwrap()
            .get(0);
        out.push(((*t).to_owned(), digest.unwrap_or_default()));
    }
    out
}

#[tokio::test]
async fn another_organization_gets_404_everywhere_and_changes_nothing() {
    let app = spawn_app().await;
    let victim = app.seed_org("victim").await;
    let attacker_org = app.seed_org("attacker").await;
    let attacker = app.jwt(app.seed_member(attacker_org, "owner").await);
    let db = app.admin().await;
    let service: Uuid = db
        .query_one(
            "INSERT INTO device_services (organization_id, name, config) \
             VALUES ($1, 'svc', '{\"project_id\": \"p\"}') RETURNING id",
            &[&victim],
        )
        .await
        .unwrap()
        .get(0);
    let device: Uuid = db
        .query_one(
            "INSERT INTO devices (organization_id, name) VALUES ($1, 'd') RETURNING id",
            &[&victim],
        )
        .await
        .unwrap()
        .get(0);
    db.execute(
        "INSERT INTO device_service_assignments (organization_id, device_id, service_id) VALUES ($1, $2, $3)",
        &[&victim, &device, &service],
    )
    .await
    .unwrap();
    let run: Uuid = db
        .query_one(
            "INSERT INTO sync_runs (organization_id, service_id, operation) \
             VALUES ($1, $2, 'import') RETURNING id",
            &[&victim, &service],
        )
        .await
        .unwrap()
        .get(0);
    let conflict: Uuid = db
        .query_one(
            "INSERT INTO device_conflicts (organization_id, service_id, device_id, field_name, \
             conflict_type, base_value, local_value, remote_value) \
             VALUES ($1, $2, $3, 'name', 'concurrent_modification', '\"a\"', '\"b\"', '\"c\"') RETURNING id",
            &[&victim, &service, &device],
        )
        .await
        .unwrap()
        .get(0);
    let before = snapshot(&app, victim).await;

    let mut checked = 0;
    for component in Component::ALL {
        for route in routes(component) {
            if !matches!(route.access, Access::Org(_)) {
                continue;
            }
            for org in [victim, attacker_org] {
                let path = route
                    .pattern
                    .replace(":org_id", &org.to_string())
                    .replace(":service_id", &service.to_string())
                    .replace(":run_id", &run.to_string())
                    .replace(":conflict_id", &conflict.to_string());
                // On the attacker's own organization, routes without an object id in the path
                // still carry the victim's ids in the body (bulk resolve, sync device_ids): they
                // may answer anything but a 5xx, and must change nothing of the victim's.
                let names_object = route.pattern.contains(":service_id")
                    || route.pattern.contains(":run_id")
                    || route.pattern.contains(":conflict_id");
                // A body each route would accept, so only ownership decides the answer.
                let body = match route.endpoint {
                    Endpoint::UpdateService => json!({"name": "pwned", "api_key": "stolen"}),
                    Endpoint::CreateService => json!({"name": "x", "config": {"project_id": "p"}}),
                    Endpoint::AddAssignments | Endpoint::RemoveAssignments => {
                        json!({"device_ids": [device]})
                    }
                    Endpoint::StartSync => json!({"operation": "import", "device_ids": [device]}),
                    Endpoint::ResolveConflict => json!({"resolution": "local"}),
                    Endpoint::BulkResolve => json!({"ids": [conflict], "resolution": "local"}),
                    _ => json!({}),
                };
                let body = (route.method != "GET").then_some(&body);
                let r = app
                    .request(route.method, &path, Some(&attacker), body)
                    .await;
                if org == attacker_org && !names_object {
                    assert!(
                        r.status < 500,
                        "{} {}: {}",
                        route.method,
                        route.pattern,
                        r.status
                    );
                    continue;
                }
                assert_eq!(
                    r.status,
                    404,
                    "{} {} (org {}) -> {} {}",
                    route.method,
                    route.pattern,
                    if org == victim { "victim" } else { "attacker" },
                    r.status,
                    r.text()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "{checked}");
    assert_eq!(
        before,
        snapshot(&app, victim).await,
        "the victim's rows changed"
    );
}
