//! The scheduler's tick (issue 7), called in-process with explicit `now` values: concurrent ticks
//! never process a run twice and leave none stuck, a dead worker's lease is recovered, due-time
//! arithmetic queues a service once per interval, a revoked key backs off with growing delays up
//! to `max_attempts`, and housekeeping (log partitions, offline devices, delivery pruning).

mod common_sync;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common_sync::{Env, Svc, env, uuid};
use serde_json::{Value, json};

fn at(row: &Value, key: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(row[key].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

async fn queue_run(e: &Env, svc: &Svc, op: &str) -> uuid::Uuid {
    e.app
        .admin()
        .await
        .query_one(
            "INSERT INTO sync_runs (organization_id, service_id, operation, run_after) \
             VALUES ($1, $2, $3, now() - interval '1 second') RETURNING id",
            &[&e.org, &svc.id, &op],
        )
        .await
        .unwrap()
        .get(0)
}

async fn linked_devices(e: &Env, svc: &Svc) -> i64 {
    e.app
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM device_service_assignments a JOIN devices d ON d.id = a.device_id \
             WHERE a.service_id = $1 AND a.external_device_id IS NOT NULL AND a.base IS NOT NULL \
               AND d.deleted_at IS NULL",
            &[&svc.id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn twenty_concurrent_ticks_never_process_a_run_twice_and_leave_none_stuck() {
    let e = env().await;
    let mut runs = Vec::new();
    for i in 0..8 {
        let svc = e.service(&format!("q{i}"), json!({})).await;
        e.seed_remote(&svc, &format!("q{i}"), 150);
        runs.push((queue_run(&e, &svc, "import").await, svc));
    }
    let mut rounds = 0;
    // Slices done per run, summed over every tick that drove it. A run released by one tick may
    // be continued at once by a tick of the same round that started later (by design), so the
    // proof of "never processed twice" is the count: every drive does new slices only (no lease
    // lost to a concurrent holder, each page fetched once, the sum equal to the run's slices).
    let mut slices: std::collections::HashMap<uuid::Uuid, u32> = Default::default();
    loop {
        let outcomes =
            futures::future::join_all((0..20).map(|_| e.tick(Utc::now(), Duration::ZERO))).await;
        rounds += 1;
        for r in outcomes.iter().flat_map(|o| o.runs.iter()) {
            assert!(
                r.result == "released" || r.result == "completed",
                "a drive collided with another: {r:?}"
            );
            *slices.entry(r.run_id).or_default() += r.slices;
        }
        assert!(outcomes.iter().all(|o| o.errors.is_empty()), "{outcomes:?}");
        let mut open = 0;
        for (run, _) in &runs {
            let row = e.run_row(*run).await;
            if row["status"] != "completed" {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(rounds < 20, "runs stuck after {rounds} rounds");
    }
    for (run, svc) in &runs {
        let row = e.run_row(*run).await;
        assert_eq!(row["status"], "completed", "{row}");
        assert_eq!(row["attempt"], 1, "never taken over: {row}");
        assert_eq!(row["lease_owner"], Value::Null);
        // Two listing pages and the local-only pass, each exactly once.
        assert_eq!(row["stats"]["pages"], 2, "{row}");
        assert_eq!(row["stats"]["slices"], 3, "{row}");
        assert_eq!(slices.get(run), Some(&3), "slices done by all ticks: {row}");
        let mut pages = e.list_requests(svc);
        pages.sort();
        assert_eq!(pages, vec![0, 1], "each page fetched once");
        assert_eq!(linked_devices(&e, svc).await, 150);
    }
}

#[tokio::test]
async fn a_dead_workers_lease_is_recovered_after_it_expires() {
    if harness::native_only(
        "ticks in-process at explicit future times (the clock cannot be set over HTTP)",
    ) {
        return;
    }
    let e = env().await;
    let svc = e.service("lease", json!({})).await;
    e.seed_remote(&svc, "ls", 250);
    let run = queue_run(&e, &svc, "import").await;
    let t0 = Utc::now();
    // One slice, then the worker "dies" holding the lease for two minutes.
    let out = e.tick(t0, Duration::ZERO).await;
    assert_eq!(out.runs.len(), 1);
    assert_eq!(out.runs[0].result, "released");
    let db = e.app.admin().await;
    let expires = t0 + chrono::Duration::seconds(120);
    db.execute(
        "UPDATE sync_runs SET lease_owner = 'dead-worker', lease_expires_at = $2::text::timestamptz \
         WHERE id = $1",
        &[&run, &expires.to_rfc3339()],
    )
    .await
    .unwrap();
    // Before it expires, no tick touches the run.
    let out = e
        .tick(t0 + chrono::Duration::seconds(60), Duration::ZERO)
        .await;
    assert!(out.runs.is_empty(), "{out:?}");
    let row = e.run_row(run).await;
    assert_eq!(row["lease_owner"], "dead-worker");
    assert_eq!(row["stats"]["pages"], 1);
    // After it expires, the next tick takes over and the run completes from its cursor.
    let out = e
        .tick(t0 + chrono::Duration::seconds(121), Duration::from_secs(30))
        .await;
    assert_eq!(out.runs.len(), 1, "{out:?}");
    assert_eq!(out.runs[0].result, "completed", "{out:?}");
    let row = e.run_row(run).await;
    assert_eq!(row["status"], "completed");
    assert_eq!(row["attempt"], 2, "the takeover is a new attempt");
    assert_eq!(row["stats"]["pages"], 3);
    assert_eq!(row["stats"]["created_local"], 250, "{row}");
    let mut pages = e.list_requests(&svc);
    pages.sort();
    assert_eq!(pages, vec![0, 1, 2]);
    assert_eq!(linked_devices(&e, &svc).await, 250);
}

#[tokio::test]
async fn a_300s_interval_is_queued_once_per_interval_across_ticks() {
    if harness::native_only(
        "ticks in-process at explicit future times (the clock cannot be set over HTTP)",
    ) {
        return;
    }
    let e = env().await;
    let svc = e.service("sched", json!({})).await;
    e.seed_remote(&svc, "sc", 3);
    e.schedule(&svc, 300).await;
    // Microsecond precision, like timestamptz.
    let t0 = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
        + chrono::Duration::hours(1);
    let db = e.app.admin().await;
    db.execute(
        "UPDATE device_services SET next_sync_at = $2::text::timestamptz WHERE id = $1",
        &[&svc.id, &t0.to_rfc3339()],
    )
    .await
    .unwrap();
    let secs = chrono::Duration::seconds;
    let queued = |outs: &[shared::app::engine::TickOutcome]| -> usize {
        outs.iter().map(|o| o.runs_queued.len()).sum()
    };
    let next_sync = || async {
        let row = e
            .app
            .admin()
            .await
            .query_one(
                "SELECT to_char(next_sync_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
                 FROM device_services WHERE id = $1",
                &[&svc.id],
            )
            .await
            .unwrap();
        DateTime::parse_from_rfc3339(&row.get::<_, String>(0))
            .unwrap()
            .with_timezone(&Utc)
    };

    let budget = Duration::from_secs(10);
    assert_eq!(queued(&[e.tick(t0 - secs(1), budget).await]), 0);
    // Five replicas tick at the due time: one run.
    let outs = futures::future::join_all((0..5).map(|_| e.tick(t0, budget))).await;
    assert_eq!(queued(&outs), 1, "{outs:?}");
    assert_eq!(next_sync().await, t0 + secs(300));
    for s in [1, 100, 299] {
        assert_eq!(queued(&[e.tick(t0 + secs(s), budget).await]), 0, "at +{s}s");
    }
    let outs = futures::future::join_all((0..5).map(|_| e.tick(t0 + secs(300), budget))).await;
    assert_eq!(queued(&outs), 1);
    assert_eq!(queued(&[e.tick(t0 + secs(301), budget).await]), 0);
    // A tick that comes late queues once and stays on the interval grid.
    assert_eq!(queued(&[e.tick(t0 + secs(1000), budget).await]), 1);
    assert_eq!(next_sync().await, t0 + secs(1200));

    let rows = db
        .query(
            "SELECT status, params FROM sync_runs WHERE service_id = $1 ORDER BY created_at",
            &[&svc.id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r.get::<_, String>(0), "completed");
        assert_eq!(r.get::<_, Value>(1), json!({"scheduled": true}));
    }
    // While a run is still active, a due interval queues nothing new.
    let active = queue_run(&e, &svc, "import").await;
    db.execute(
        "UPDATE sync_runs SET status = 'running', lease_owner = 'w', \
                lease_expires_at = now() + interval '1 day' WHERE id = $1",
        &[&active],
    )
    .await
    .unwrap();
    let out = e.tick(t0 + secs(1200), budget).await;
    assert_eq!(out.services_due, 1);
    assert!(out.runs_queued.is_empty());
    assert_eq!(next_sync().await, t0 + secs(1500));
}

#[tokio::test]
async fn a_revoked_key_fails_with_growing_delays_until_max_attempts() {
    if harness::native_only(
        "ticks in-process at each retry's future run_after (the clock cannot be set over HTTP)",
    ) {
        return;
    }
    let e = env().await;
    let svc = e.service("revoked", json!({})).await;
    e.seed_remote(&svc, "rv", 3);
    e.sim.revoke_api_key(&svc.api_key);
    let r = e.sync(&svc, json!({"operation": "import"})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(v["attempt"], 1);
    assert!(v["error"].as_str().unwrap().contains("API key"), "{v}");
    let run = uuid(&v["operation_id"]);

    let mut delays = Vec::new();
    let mut row = e.run_row(run).await;
    while row["status"] == "queued" {
        let now = at(&row, "run_after");
        // Not a moment before it is due.
        let early = e
            .tick(now - chrono::Duration::seconds(1), Duration::ZERO)
            .await;
        assert!(early.runs.is_empty());
        let out = e.tick(now, Duration::ZERO).await;
        assert_eq!(out.runs.len(), 1, "{out:?}");
        row = e.run_row(run).await;
        if row["status"] == "queued" {
            delays.push((at(&row, "run_after") - now).num_milliseconds());
        }
        assert!(delays.len() < 10);
    }
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["attempt"], 5);
    assert_eq!(row["max_attempts"], 5);
    let error = row["error"].as_str().unwrap();
    assert!(
        error.contains("attempt 5 of 5") && error.contains("API key"),
        "{error}"
    );
    // Attempts 2, 3 and 4 waited longer each time: 60-120 s, 120-240 s, 240-480 s.
    assert_eq!(delays.len(), 3, "{delays:?}");
    assert!(delays.windows(2).all(|w| w[1] > w[0]), "{delays:?}");
    for (d, (lo, hi)) in
        delays
            .iter()
            .zip([(60_000, 120_000), (120_000, 240_000), (240_000, 480_000)])
    {
        assert!((lo..=hi).contains(d), "{d} not in {lo}..={hi}");
    }
    // The reasons are in the sync log.
    let db = e.app.admin().await;
    let logged: Vec<(String, String)> = db
        .query(
            "SELECT operation, coalesce(details->>'error', '') FROM golioth_sync_log \
             WHERE run_id = $1 ORDER BY created_at",
            &[&run],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let retries = logged
        .iter()
        .filter(|(op, why)| op == "run_retry_scheduled" && why.contains("API key"))
        .count();
    assert_eq!(retries, 4, "{logged:?}");
    assert!(
        logged
            .iter()
            .any(|(op, why)| op == "run_failed" && why.contains("API key")),
        "{logged:?}"
    );
    let status: Option<String> = db
        .query_one(
            "SELECT last_sync_status FROM device_services WHERE id = $1",
            &[&svc.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status.as_deref(), Some("failed"));
    // A failed run no longer blocks the service: a new request gets a new run.
    let r = e.sync(&svc, json!({"operation": "import"})).await;
    assert_ne!(r.json()["operation_id"], v["operation_id"]);
}

#[tokio::test]
async fn housekeeping_keeps_partitions_ahead_marks_stale_devices_offline_and_prunes() {
    if harness::native_only(
        "ticks in-process at explicit future times (the clock cannot be set over HTTP)",
    ) {
        return;
    }
    let e = env().await;
    let svc = e
        .service("house", json!({"online_threshold_seconds": 3600}))
        .await;
    let t = Utc::now();
    let db = e.app.admin().await;
    let ago = |mins: i64| (t - chrono::Duration::minutes(mins)).to_rfc3339();
    for (name, mins, assigned) in [
        ("stale", 20, false),
        ("fresh", 1, false),
        ("patient", 20, true),
        ("gone", 90, true),
    ] {
        let id: uuid::Uuid = db
            .query_one(
                "INSERT INTO devices (organization_id, name, status, last_seen) \
                 VALUES ($1, $2, 'online', $3::text::timestamptz) RETURNING id",
                &[&e.org, &name, &ago(mins)],
            )
            .await
            .unwrap()
            .get(0);
        if assigned {
            db.execute(
                "INSERT INTO device_service_assignments (organization_id, device_id, service_id) \
                 VALUES ($1, $2, $3)",
                &[&e.org, &id, &svc.id],
            )
            .await
            .unwrap();
        }
    }
    for (key, days) in [("old", 8), ("recent", 1)] {
        db.execute(
            "INSERT INTO webhook_deliveries (organization_id, service_id, delivery_key, status, \
                 received_at) \
             VALUES ($1, $2, $3, 'processed', now() - make_interval(days => $4))",
            &[&e.org, &svc.id, &key, &days],
        )
        .await
        .unwrap();
    }

    let out = e.tick(t, Duration::from_secs(5)).await;
    assert!(out.housekeeping, "{out:?}");
    assert!(out.errors.is_empty(), "{out:?}");
    assert_eq!(out.devices_marked_offline, 2, "{out:?}");
    assert_eq!(out.deliveries_pruned, 1, "{out:?}");
    let statuses: Vec<(String, String)> = db
        .query(
            "SELECT name, status FROM devices WHERE organization_id = $1 ORDER BY name",
            &[&e.org],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, String)> = [
        ("fresh", "online"),
        ("gone", "offline"),
        ("patient", "online"),
        ("stale", "offline"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(statuses, expected);
    let keys: Vec<String> = db
        .query("SELECT delivery_key FROM webhook_deliveries", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, vec!["recent".to_owned()]);

    // Fifteen months on: partitions are created ahead, and those past a year are dropped.
    let later = t.checked_add_months(chrono::Months::new(15)).unwrap();
    let out = e.tick(later, Duration::from_secs(5)).await;
    assert!(out.errors.is_empty(), "{out:?}");
    assert_eq!(out.partitions_created, 3, "{out:?}");
    assert!(out.partitions_dropped >= 3, "{out:?}");
    let parts = harness::texts(
        &db,
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'golioth_sync_log' \
         ORDER BY 1",
    )
    .await;
    let month = |d: DateTime<Utc>| format!("golioth_sync_log_y{}", d.format("%Ym%m"));
    assert!(parts.contains(&month(later)), "{parts:?}");
    assert!(!parts.contains(&month(t)), "{parts:?}");
    assert!(parts.contains(&"golioth_sync_log_default".to_owned()));
    // The same step through the endpoint (what the cron component and the host's timer call).
    let r = e
        .app
        .request(
            "POST",
            "/internal/tick",
            Some(harness::INTERNAL_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}
