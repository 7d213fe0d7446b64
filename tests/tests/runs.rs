//! Sync runs, the sync log and service stats through the native host: request validation, list
//! filters and cursor pagination, reading one run, cancelling, log filters, and the stats.

mod common_sync;

use common_sync::{env, env_with, uuid};
use serde_json::{Value, json};

/// Follow `next_cursor` from `path` (which already has a `?`), collecting every item.
async fn all_pages(e: &common_sync::Env, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut url = path.to_owned();
    for _ in 0..100 {
        let r = e.get(&url).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        let v = r.json();
        items.extend(v["items"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => url = format!("{path}&cursor={c}"),
            None => return items,
        }
    }
    panic!("pagination did not end");
}

#[tokio::test]
async fn sync_requests_are_validated() {
    let e = env().await;
    let svc = e.service("valid", json!({})).await;
    let path = format!("{}/services/{}/sync", e.base(), svc.id);
    let post = |body: Value| {
        let path = path.clone();
        let e = &e;
        async move { e.app.post(&path, Some(&e.member), &body).await }
    };
    let r = post(json!({"operation": "import", "mode": "fast", "budget": 1})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.content_type(), "application/problem+json");
    assert_eq!(r.json()["unknown_keys"], json!(["budget", "mode"]));
    for bad in [
        json!({}),
        json!({"operation": "sideways"}),
        json!({"operation": "import", "dry_run": "yes"}),
        json!({"operation": "import", "device_ids": ["not-a-uuid"]}),
        json!({"operation": "import", "device_ids": []}),
    ] {
        let r = post(bad.clone()).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text());
    }
    let many: Vec<String> = (0..1001)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let r = post(json!({"operation": "export", "device_ids": many})).await;
    assert_eq!(r.status, 422, "{}", r.text());
    let r = e
        .app
        .post(
            &format!("{}/services/{}/sync", e.base(), uuid::Uuid::new_v4()),
            Some(&e.member),
            &json!({"operation": "import"}),
        )
        .await;
    assert_eq!(r.status, 404);

    // An inactive service syncs only when forced.
    let r = e
        .app
        .request(
            "PATCH",
            &format!("{}/services/{}", e.base(), svc.id),
            Some(&e.admin),
            Some(&json!({"is_active": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(json!({"operation": "import"})).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = post(json!({"operation": "import", "force": true})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "completed");

    // A service without a Golioth key cannot sync at all.
    let r = e
        .app
        .request(
            "PATCH",
            &format!("{}/services/{}", e.base(), svc.id),
            Some(&e.admin),
            Some(&json!({"api_key": null, "is_active": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(json!({"operation": "import"})).await;
    assert_eq!(r.status, 422, "{}", r.text());
}

#[tokio::test]
async fn runs_are_listed_filtered_paginated_and_read() {
    let e = env().await;
    let a = e.service("ra", json!({})).await;
    let b = e.service("rb", json!({})).await;
    e.seed_remote(&a, "ra", 3);
    e.seed_remote(&b, "rb", 2);
    let mut ids = Vec::new();
    for op in ["import", "bidirectional", "export"] {
        let v = e.sync_done(&a, json!({"operation": op})).await;
        ids.push(v["operation_id"].as_str().unwrap().to_owned());
    }
    let v = e.sync_done(&b, json!({"operation": "import"})).await;
    ids.push(v["operation_id"].as_str().unwrap().to_owned());

    let all = all_pages(&e, "/sync-runs?limit=2").await;
    assert_eq!(all.len(), 4);
    let listed: Vec<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    for r in &all {
        assert!(r["summary"].is_object() && r["progress"].is_object(), "{r}");
        assert_eq!(r["status"], "completed");
    }

    let of_a = all_pages(&e, &format!("/sync-runs?service_id={}", a.id)).await;
    assert_eq!(of_a.len(), 3);
    assert!(of_a.iter().all(|r| r["service_id"] == json!(a.id)));
    let done = all_pages(&e, "/sync-runs?status=completed").await;
    assert_eq!(done.len(), 4);
    let failed = all_pages(&e, "/sync-runs?status=failed").await;
    assert!(failed.is_empty());
    // Filtered by time on the server: `since` (inclusive) and `until` (exclusive) of created_at.
    let enc = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339().replace('+', "%2B");
    let hour = chrono::Duration::hours(1);
    let now = chrono::Utc::now();
    assert_eq!(
        all_pages(&e, &format!("/sync-runs?since={}", enc(now - hour)))
            .await
            .len(),
        4
    );
    assert!(
        all_pages(&e, &format!("/sync-runs?since={}", enc(now + hour)))
            .await
            .is_empty()
    );
    assert!(
        all_pages(&e, &format!("/sync-runs?until={}", enc(now - hour)))
            .await
            .is_empty()
    );
    let third = all[1]["created_at"].as_str().unwrap();
    let before_third = all_pages(
        &e,
        &format!("/sync-runs?until={}", third.replace('+', "%2B")),
    )
    .await;
    assert_eq!(
        before_third.len(),
        2,
        "the two runs created before the third"
    );
    let from_third = all_pages(
        &e,
        &format!(
            "/sync-runs?service_id={}&since={}",
            a.id,
            third.replace('+', "%2B")
        ),
    )
    .await;
    assert_eq!(
        from_third.len(),
        1,
        "of service a, only the third run is that recent"
    );
    for bad in [
        "/sync-runs?status=bogus",
        "/sync-runs?limit=500",
        "/sync-runs?limit=0",
        "/sync-runs?service_id=nope",
        "/sync-runs?cursor=garbage",
        "/sync-runs?since=yesterday",
        "/sync-runs?until=2026-13-01",
    ] {
        assert_eq!(e.get(bad).await.status, 400, "{bad}");
    }

    let r = e.get(&format!("/sync-runs/{}", ids[0])).await;
    assert_eq!(r.status, 200);
    let run = r.json();
    assert_eq!(run["operation_id"], json!(ids[0]));
    assert_eq!(run["operation"], "import");
    assert_eq!(run["summary"]["created_local"], 3);
    assert_eq!(run["progress"]["phase"], "done");
    assert!(run["finished_at"].is_string());
    assert_eq!(
        e.get(&format!("/sync-runs/{}", uuid::Uuid::new_v4()))
            .await
            .status,
        404
    );
    assert_eq!(e.get("/sync-runs/not-a-uuid").await.status, 404);
}

#[tokio::test]
async fn a_run_can_be_cancelled_once() {
    let e = env_with(&[("slice_budget_ms", "0")]).await;
    let svc = e.service("cancel", json!({})).await;
    e.seed_remote(&svc, "cx", 250);
    let r = e.sync(&svc, json!({"operation": "import"})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["operation_id"].as_str().unwrap().to_owned();
    let path = format!("{}/sync-runs/{id}/cancel", e.base());

    let r = e.app.post(&path, Some(&e.viewer), &json!({})).await;
    assert_eq!(r.status, 403);
    let r = e.app.post(&path, Some(&e.member), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "cancelled");
    assert!(r.json()["finished_at"].is_string());
    let r = e.app.post(&path, Some(&e.member), &json!({})).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["run"]["status"], "cancelled");

    // Nobody continues a cancelled run; the next request starts a new one.
    let out = e
        .tick(chrono::Utc::now(), std::time::Duration::from_secs(5))
        .await;
    assert!(out.runs.is_empty(), "{out:?}");
    let r = e.sync(&svc, json!({"operation": "import"})).await;
    assert_eq!(r.status, 202);
    assert_ne!(r.json()["operation_id"], json!(id));
    assert_eq!(r.json()["existing"], false);
    let row = e.run_row(uuid(&json!(id))).await;
    assert_eq!(row["status"], "cancelled");
    assert_eq!(row["lease_owner"], Value::Null);
}

#[tokio::test]
async fn the_sync_log_records_runs_and_device_operations_with_filters_and_a_cursor() {
    let e = env().await;
    let svc = e.service("log", json!({})).await;
    e.seed_remote(&svc, "lg", 3);
    let v = e.sync_done(&svc, json!({"operation": "import"})).await;
    let run = v["operation_id"].as_str().unwrap().to_owned();

    let rows = all_pages(&e, &format!("/sync-log?service_id={}&limit=2", svc.id)).await;
    let ops: Vec<&str> = rows
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops.iter().filter(|o| **o == "local_created").count(),
        3,
        "{ops:?}"
    );
    assert_eq!(ops.first(), Some(&"run_finished"), "newest first: {ops:?}");
    assert_eq!(ops.last(), Some(&"run_started"), "{ops:?}");
    let finished = &rows[0];
    assert_eq!(finished["run_id"], json!(run));
    assert_eq!(finished["details"]["summary"]["created_local"], 3);
    assert!(finished["details"]["duration_ms"].is_number(), "{finished}");

    let device = rows
        .iter()
        .find(|r| r["operation"] == "local_created")
        .unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let of_device = all_pages(&e, &format!("/sync-log?device_id={device}")).await;
    assert_eq!(of_device.len(), 1);
    let of_run = all_pages(&e, &format!("/sync-log?run_id={run}")).await;
    assert_eq!(of_run.len(), rows.len());
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let later = all_pages(
        &e,
        &format!("/sync-log?since={}", future.replace('+', "%2B")),
    )
    .await;
    assert!(later.is_empty());
    assert_eq!(e.get("/sync-log?since=yesterday").await.status, 400);
    assert_eq!(e.get("/sync-log?device_id=x").await.status, 400);

    // Filtered by status and by `until` on the server (the console no longer filters a page).
    let succeeded = all_pages(&e, &format!("/sync-log?run_id={run}&status=success")).await;
    let expected = rows.iter().filter(|r| r["status"] == "success").count();
    assert!(expected >= 3, "{rows:?}");
    assert_eq!(succeeded.len(), expected);
    assert!(succeeded.iter().all(|r| r["status"] == "success"));
    assert!(
        all_pages(&e, &format!("/sync-log?run_id={run}&status=conflict"))
            .await
            .is_empty()
    );
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let earlier = all_pages(&e, &format!("/sync-log?until={}", past.replace('+', "%2B"))).await;
    assert!(earlier.is_empty());
    let until_future = all_pages(
        &e,
        &format!(
            "/sync-log?run_id={run}&until={}",
            future.replace('+', "%2B")
        ),
    )
    .await;
    assert_eq!(until_future.len(), rows.len());
    for bad in ["/sync-log?status=Error!", "/sync-log?until=soon"] {
        assert_eq!(e.get(bad).await.status, 400, "{bad}");
    }
}

#[tokio::test]
async fn service_stats_report_runs_success_rate_devices_and_conflicts() {
    let e = env().await;
    let svc = e.service("stats", json!({})).await;
    let ids = e.seed_remote(&svc, "st", 4);
    e.sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    // A concurrent edit on both sides: one pending conflict.
    let db = e.app.admin().await;
    db.execute(
        "UPDATE devices SET enabled = false WHERE name = 'st-000001'",
        &[],
    )
    .await
    .unwrap();
    e.sim
        .console_patch_device(&svc.project, &ids[1], &json!({"name": "st-000001-x"}))
        .unwrap();
    db.execute(
        "UPDATE devices SET name = 'st-000001-y' WHERE name = 'st-000001'",
        &[],
    )
    .await
    .unwrap();
    e.sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;

    let r = e.get(&format!("/services/{}/stats", svc.id)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = r.json();
    assert_eq!(s["runs"]["total"], 2, "{s}");
    assert_eq!(s["runs"]["completed"], 2, "{s}");
    assert_eq!(s["success_rate"], 1.0, "{s}");
    assert!(s["average_duration_ms"].as_i64().unwrap() >= 0, "{s}");
    assert_eq!(s["devices"]["linked"], 4, "{s}");
    assert_eq!(s["devices"]["synced"], 3, "{s}");
    assert_eq!(s["devices"]["conflict"], 1, "{s}");
    assert_eq!(s["pending_conflicts"], 1, "{s}");
    assert_eq!(s["last_sync"]["status"], "completed", "{s}");
    assert!(s["last_sync"]["at"].is_string());
    assert_eq!(s["window"]["days"], 30);
    assert_eq!(
        e.get(&format!("/services/{}/stats?window_days=0", svc.id))
            .await
            .status,
        400
    );
    assert_eq!(
        e.get(&format!("/services/{}/stats", uuid::Uuid::new_v4()))
            .await
            .status,
        404
    );
}
