//! Conflicts end to end with the sync engine and the Golioth simulator: a device renamed locally
//! and in Golioth → a sync records a pending conflict → a person resolves it (local, remote or
//! custom) → the queued `device_refresh` run, driven by the tick, carries the choice to Golioth →
//! the next full sync finds both sides equal to the choice and reports no new conflict.

use std::collections::HashMap;

use harness::{AppOptions, INTERNAL_TOKEN, TestApp};
use host::simulator::{ProjectSpec, SeedSpec, SimOptions, Simulator, SimulatorHandle};
use serde_json::{Value, json};
use uuid::Uuid;

const PROJECT: &str = "proj-conflicts";
const KEY: &str = "key-conflicts-0001";

struct Env {
    app: TestApp,
    sim: SimulatorHandle,
    org: Uuid,
    member: String,
    service: Uuid,
}

async fn env() -> Env {
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let vars: HashMap<String, String> = [("golioth_base_url".to_owned(), sim.base_url())].into();
    let app = harness::spawn_app_with(AppOptions { vars }).await;
    let org = app.seed_org("acme").await;
    let admin = app.jwt(app.seed_member(org, "admin").await);
    let member = app.jwt(app.seed_member(org, "member").await);
    sim.create_project(ProjectSpec::new(PROJECT, KEY)).unwrap();
    let r = app
        .post(
            &format!("/api/v1/orgs/{org}/services"),
            Some(&admin),
            &json!({"name": "prod", "api_key": KEY,
                    "config": {"project_id": PROJECT, "base_url": sim.base_url()}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let service = r.json()["id"].as_str().unwrap().parse().unwrap();
    Env {
        app,
        sim,
        org,
        member,
        service,
    }
}

impl Env {
    /// A bidirectional sync, POSTed until the run reports it finished.
    async fn sync(&self) -> Value {
        let path = format!("/api/v1/orgs/{}/services/{}/sync", self.org, self.service);
        for _ in 0..200 {
            let r = self
                .app
                .post(
                    &path,
                    Some(&self.member),
                    &json!({"operation": "bidirectional"}),
                )
                .await;
            assert!(
                r.status == 200 || r.status == 202,
                "{} {}",
                r.status,
                r.text()
            );
            if r.status == 200 {
                return r.json();
            }
        }
        panic!("the sync did not finish");
    }

    async fn tick(&self) -> Value {
        let r = self
            .app
            .request("POST", "/internal/tick", Some(INTERNAL_TOKEN), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    async fn local_name(&self, external: &str) -> String {
        self.app
            .admin()
            .await
            .query_one(
                "SELECT d.name FROM devices d JOIN device_service_assignments a ON a.device_id = d.id \
                 WHERE a.service_id = $1 AND a.external_device_id = $2",
                &[&self.service, &external],
            )
            .await
            .unwrap()
            .get(0)
    }

    fn remote_name(&self, external: &str) -> String {
        self.sim.device(PROJECT, external).unwrap().name
    }

    async fn pending(&self) -> Vec<Value> {
        let r = self
            .app
            .get(
                &format!("/api/v1/orgs/{}/conflicts?status=pending", self.org),
                Some(&self.member),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"].as_array().unwrap().clone()
    }

    async fn queued_refreshes(&self) -> i64 {
        self.app
            .admin()
            .await
            .query_one(
                "SELECT count(*) FROM sync_runs WHERE service_id = $1 \
                   AND operation = 'device_refresh' AND status IN ('queued', 'running')",
                &[&self.service],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// Rename one device on both sides, sync, resolve with `body`, and check both sides converge on
/// `expected`.
async fn scenario(body: Value, expected: &str) {
    let e = env().await;
    let ids = e
        .sim
        .seed(
            PROJECT,
            &SeedSpec {
                count: 3,
                name_prefix: "cf".into(),
                ..SeedSpec::default()
            },
        )
        .unwrap();
    let first = e.sync().await;
    assert_eq!(first["summary"]["created_local"], 3, "{first}");
    let ext = ids[1].clone();
    let original = e.remote_name(&ext);
    assert_eq!(e.local_name(&ext).await, original);

    // Concurrent edits: the platform and the Golioth console rename the same device.
    e.app
        .admin()
        .await
        .execute(
            "UPDATE devices d SET name = 'local-name' FROM device_service_assignments a \
             WHERE a.device_id = d.id AND a.external_device_id = $1",
            &[&ext],
        )
        .await
        .unwrap();
    e.sim
        .console_patch_device(PROJECT, &ext, &json!({"name": "remote-name"}))
        .unwrap();

    let detected = e.sync().await;
    assert_eq!(detected["summary"]["conflicts"], 1, "{detected}");
    let pending = e.pending().await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let c = &pending[0];
    assert_eq!(c["field_name"], "name");
    assert_eq!(c["conflict_type"], "concurrent_modification");
    assert_eq!(c["base_value"], json!(original));
    assert_eq!(c["local_value"], "local-name");
    assert_eq!(c["remote_value"], "remote-name");
    assert_eq!(c["external_device_id"], json!(ext));
    assert!(c["detected_run_id"].is_string(), "{c}");
    // The field is frozen on both sides while the conflict waits.
    assert_eq!(e.local_name(&ext).await, "local-name");
    assert_eq!(e.remote_name(&ext), "remote-name");

    let id = c["id"].as_str().unwrap();
    let r = e
        .app
        .post(
            &format!("/api/v1/orgs/{}/conflicts/{id}/resolve", e.org),
            Some(&e.member),
            &body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["resolution_status"], "resolved");
    assert_eq!(e.local_name(&ext).await, expected);
    assert_eq!(e.queued_refreshes().await, 1);

    // The scheduler's tick runs the queued device_refresh: the choice reaches Golioth.
    e.tick().await;
    assert_eq!(e.queued_refreshes().await, 0);
    assert_eq!(e.remote_name(&ext), expected);
    assert_eq!(e.local_name(&ext).await, expected);

    // The next full sync agrees: no new conflict, both sides hold the choice, nothing pending.
    let after = e.sync().await;
    assert_eq!(after["status"], "completed", "{after}");
    assert_eq!(after["summary"]["conflicts"], 0, "{after}");
    assert_eq!(e.local_name(&ext).await, expected);
    assert_eq!(e.remote_name(&ext), expected);
    assert!(e.pending().await.is_empty());
    let base: Value = e
        .app
        .admin()
        .await
        .query_one(
            "SELECT base FROM device_service_assignments WHERE service_id = $1 \
               AND external_device_id = $2",
            &[&e.service, &ext],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(base["name"], expected, "{base}");
}

#[tokio::test]
async fn choosing_the_local_value_converges_both_sides() {
    scenario(json!({"resolution": "local"}), "local-name").await;
}

#[tokio::test]
async fn choosing_the_remote_value_converges_both_sides() {
    scenario(json!({"resolution": "remote"}), "remote-name").await;
}

#[tokio::test]
async fn choosing_a_custom_value_converges_both_sides() {
    scenario(
        json!({"resolution": "custom", "value": "chosen-name"}),
        "chosen-name",
    )
    .await;
}
