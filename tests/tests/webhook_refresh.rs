//! A delivery from a Golioth device the platform does not know yet queues one `device_refresh`
//! run instead of trusting the payload; the next tick fetches the device from Golioth (the
//! simulator) and creates it locally, linked by its Golioth id (issue 5).

mod common_sync;

use std::time::Duration;

use chrono::Utc;
use common_sync::env;
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "refresh-webhook-secret-0123456789";

#[tokio::test]
async fn an_unknown_device_exists_locally_after_the_next_tick() {
    let e = env().await;
    let svc = e.service("hooked", json!({})).await;
    let r = e
        .app
        .request(
            "PATCH",
            &format!("{}/services/{}", e.base(), svc.id),
            Some(&e.admin),
            Some(&json!({"webhook_secret": SECRET})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let golioth_id = e.seed_remote(&svc, "fresh", 1).remove(0);

    let pipe = e.sim.pipeline(
        host::simulator::PipelineConfig::webhook(format!(
            "{}/webhooks/golioth/{}",
            e.app.base_url, svc.id
        ))
        .header("x-webhook-token", SECRET),
    );
    let out = pipe
        .deliver(&host::simulator::Delivery {
            project_id: svc.project.clone(),
            device_id: golioth_id.clone(),
            path: "sensor".into(),
            payload: json!({"temp": 20}),
            time: Some(Utc::now()),
            id: None,
        })
        .await;
    let v: Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(out.status, Some(200), "{out:?}");
    assert_eq!(v["status"], "unmatched");
    assert_eq!(v["refresh_queued"], true);

    let db = e.app.admin().await;
    let run: Uuid = db
        .query_one(
            "SELECT id FROM sync_runs WHERE operation = 'device_refresh' AND status = 'queued' \
             AND params->>'device_id' = $1",
            &[&golioth_id],
        )
        .await
        .unwrap()
        .get(0);

    let tick = e
        .tick(
            Utc::now() + chrono::Duration::seconds(1),
            Duration::from_secs(20),
        )
        .await;
    assert!(
        tick.runs.iter().any(|r| r.run_id == run),
        "the tick drove the refresh: {tick:?}"
    );
    let status: String = db
        .query_one("SELECT status FROM sync_runs WHERE id = $1", &[&run])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "completed");
    let linked = db
        .query(
            "SELECT d.name FROM devices d JOIN device_service_assignments a ON a.device_id = d.id \
             WHERE a.service_id = $1 AND a.external_device_id = $2 AND d.deleted_at IS NULL",
            &[&svc.id, &golioth_id],
        )
        .await
        .unwrap();
    assert_eq!(linked.len(), 1, "the device now exists locally, linked");
}
