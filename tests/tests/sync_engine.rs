//! The sync engine end to end (issue 10): import, export and bidirectional runs on 0, 1 and 250
//! devices through the native host against the Golioth simulator, idempotence (a second run
//! writes nothing on either side), dry runs, interrupted runs ending like uninterrupted ones,
//! retryable and permanent Golioth failures, one run per service under concurrent requests,
//! incomplete listings, a resync's first listing window sized by its links (a shrunken project
//! still completes), targeted runs, conflicts, and the routes' authentication.

mod common_sync;

use std::collections::BTreeMap;
use std::time::Duration;

use common_sync::{Env, Svc, env, env_with, uuid};
use host::simulator::{Fault, FaultRule, RequestMatch};
use serde_json::{Value, json};

fn with_prefix(m: BTreeMap<String, Value>, prefix: &str) -> BTreeMap<String, Value> {
    m.into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .collect()
}

/// Every local device of `prefix` is linked to the Golioth device of the same name, agrees with
/// it, is synced, and the two sides hold the same set of devices.
async fn assert_converged(e: &Env, svc: &Svc, prefix: &str, n: usize) {
    let local = with_prefix(e.local_state(svc).await, prefix);
    let remote = with_prefix(e.remote_state(svc), prefix);
    assert_eq!(local.len(), n, "local devices");
    assert_eq!(remote.len(), n, "Golioth devices");
    for (name, l) in &local {
        assert_eq!(l["linked_to"], json!(name), "{name}: {l}");
        assert_eq!(l["has_base"], true, "{name}");
        assert_eq!(l["sync_status"], "synced", "{name}");
        assert_eq!(l["deleted"], false, "{name}");
        let r = &remote[name];
        for k in ["enabled", "tags", "hardware_ids"] {
            assert_eq!(l[k], r[k], "{name}.{k}");
        }
    }
}

/// Run `op` again and check that neither side was written.
async fn assert_second_run_writes_nothing(e: &Env, svc: &Svc, op: &str, n: usize) {
    let db_before = e.db_fingerprint().await;
    let sim_before = e.sim.stats().writes;
    let v = e.sync_done(svc, json!({"operation": op})).await;
    assert_eq!(v["status"], "completed", "{v}");
    let s = &v["summary"];
    assert_eq!(s["processed"], n, "{v}");
    assert_eq!(s["unchanged"], n, "{v}");
    for k in [
        "created_local",
        "updated_local",
        "deleted_local",
        "created_remote",
        "updated_remote",
        "deleted_remote",
        "conflicts",
        "failed",
    ] {
        assert_eq!(s[k], 0, "{k}: {v}");
    }
    assert_eq!(e.sim.stats().writes, sim_before, "Golioth writes");
    assert_eq!(e.db_fingerprint().await, db_before, "database writes");
}

#[tokio::test]
async fn import_on_0_1_and_250_devices_then_a_second_run_writes_nothing() {
    let e = env().await;
    for n in [0usize, 1, 250] {
        let svc = e.service(&format!("imp{n}"), json!({})).await;
        let prefix = format!("imp{n}dev");
        let ids = e.seed_remote(&svc, &prefix, n);
        let v = e.sync_done(&svc, json!({"operation": "import"})).await;
        assert_eq!(v["status"], "completed", "{v}");
        assert_eq!(v["operation"], "import");
        assert!(v["operation_id"].is_string());
        assert_eq!(v["summary"]["processed"], n, "{v}");
        assert_eq!(v["summary"]["created_local"], n, "{v}");
        assert_eq!(v["summary"]["created_remote"], 0);
        assert_eq!(v["progress"]["listing_complete"], true, "{v}");
        assert_converged(&e, &svc, &prefix, n).await;
        // The stored links are the Golioth ids.
        let db = e.app.admin().await;
        let stored: Vec<String> = db
            .query(
                "SELECT external_device_id FROM device_service_assignments \
                 WHERE service_id = $1 ORDER BY external_device_id",
                &[&svc.id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(stored, expected);
        assert_second_run_writes_nothing(&e, &svc, "import", n).await;
    }
}

#[tokio::test]
async fn export_on_0_1_and_250_devices_stores_golioth_ids_then_writes_nothing() {
    let e = env().await;
    for n in [0usize, 1, 250] {
        let svc = e.service(&format!("exp{n}"), json!({})).await;
        let prefix = format!("exp{n}dev");
        e.seed_local(&svc, &prefix, n).await;
        let before = e.sim.stats().writes_by_kind;
        let v = e.sync_done(&svc, json!({"operation": "export"})).await;
        assert_eq!(v["status"], "completed", "{v}");
        assert_eq!(v["summary"]["created_remote"], n, "{v}");
        assert_eq!(v["summary"]["created_local"], 0);
        let after = e.sim.stats().writes_by_kind;
        let creates = after.get("device.create").copied().unwrap_or(0)
            - before.get("device.create").copied().unwrap_or(0);
        assert_eq!(creates, n as u64);
        assert_converged(&e, &svc, &prefix, n).await;
        // Disabled local devices are disabled in Golioth too.
        let remote = with_prefix(e.remote_state(&svc), &prefix);
        let disabled = remote.values().filter(|r| r["enabled"] == false).count();
        assert_eq!(disabled, n / 5);
        assert_second_run_writes_nothing(&e, &svc, "export", n).await;
    }
}

#[tokio::test]
async fn bidirectional_on_0_1_and_250_devices_converges_then_writes_nothing() {
    let e = env().await;
    for n in [0usize, 1, 250] {
        let svc = e.service(&format!("bid{n}"), json!({})).await;
        let prefix = format!("bid{n}");
        let remote_n = n / 2;
        e.seed_remote(&svc, &format!("{prefix}-r"), remote_n);
        e.seed_local(&svc, &format!("{prefix}-l"), n - remote_n)
            .await;
        let v = e
            .sync_done(&svc, json!({"operation": "bidirectional"}))
            .await;
        assert_eq!(v["status"], "completed", "{v}");
        assert_eq!(v["summary"]["created_local"], remote_n, "{v}");
        assert_eq!(v["summary"]["created_remote"], n - remote_n, "{v}");
        assert_converged(&e, &svc, &prefix, n).await;
        assert_second_run_writes_nothing(&e, &svc, "bidirectional", n).await;
    }
}

/// A first sync links devices that exist on both sides by hardware id (the page load's
/// hardware-id lookup, `gs_devices_with_hardware_ids`), never creating a duplicate; a Golioth
/// device whose hardware id two local devices hold becomes an identity conflict instead.
#[tokio::test]
async fn a_first_sync_links_by_hardware_id_and_never_duplicates_an_ambiguous_device() {
    let e = env().await;
    let svc = e.service("twins", json!({})).await;
    e.seed_remote(&svc, "twin", 150);
    e.seed_local(&svc, "twin", 150).await;
    // One Golioth device whose hardware id two local devices share.
    e.seed_remote(&svc, "amb", 1);
    e.seed_local(&svc, "amb", 1).await;
    let db = e.app.admin().await;
    db.execute(
        "INSERT INTO devices (organization_id, name, hardware_ids) \
         VALUES ($1, 'amb-copy', ARRAY['hw-amb-000000'])",
        &[&e.org],
    )
    .await
    .unwrap();
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["summary"]["created_local"], 0, "{v}");
    assert_eq!(v["summary"]["created_remote"], 0, "{v}");
    // The linked twins differ in `enabled` for some devices (first-sync mismatches under the
    // manual policy); exactly one conflict is about identity.
    let identity = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["conflict_type"] == "identity")
        .count();
    assert_eq!(identity, 1, "{v}");
    assert_eq!(e.sim.device_count(&svc.project), 151);
    let local = e.local_state(&svc).await;
    assert_eq!(local.len(), 152, "no local device was created");
    for (name, l) in local.iter().filter(|(n, _)| n.starts_with("twin-")) {
        assert_eq!(l["linked_to"], json!(name), "{name}: {l}");
        assert_eq!(l["has_base"], true, "{name}");
    }
    for name in ["amb-000000", "amb-copy"] {
        assert_eq!(local[name]["linked"], false, "{name}: {}", local[name]);
    }
    let pending: i64 = db
        .query_one(
            "SELECT count(*) FROM device_conflicts WHERE service_id = $1 \
               AND conflict_type = 'identity' AND resolution_status = 'pending'",
            &[&svc.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 1);
    // Planning again changes nothing: the ambiguity stays one pending conflict.
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["summary"]["created_local"], 0, "{v}");
    assert_eq!(v["summary"]["created_remote"], 0, "{v}");
    assert_eq!(e.sim.device_count(&svc.project), 151);
}

#[tokio::test]
async fn edits_flow_both_ways_and_concurrent_edits_become_conflicts() {
    let e = env().await;
    let svc = e.service("edits", json!({})).await;
    let ids = e.seed_remote(&svc, "ed", 4);
    e.sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    let db = e.app.admin().await;
    // Device 0: renamed locally. Device 1: renamed in Golioth. Device 2: both, differently.
    // Device 3: a tag added on each side (sets merge, never conflict).
    db.execute(
        "UPDATE devices SET name = name || '-local' WHERE name IN ('ed-000000', 'ed-000002')",
        &[],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE devices SET tags = tags || ARRAY['local'] WHERE name = 'ed-000003'",
        &[],
    )
    .await
    .unwrap();
    e.sim
        .console_patch_device(&svc.project, &ids[1], &json!({"name": "ed-000001-remote"}))
        .unwrap();
    e.sim
        .console_patch_device(&svc.project, &ids[2], &json!({"name": "ed-000002-remote"}))
        .unwrap();
    let extra = e.sim.create_tag(&svc.project, "extra").unwrap();
    e.sim
        .console_patch_device(&svc.project, &ids[3], &json!({"addTagId": [extra]}))
        .unwrap();

    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["summary"]["conflicts"], 1, "{v}");
    let remote = e.remote_state(&svc);
    let local = e.local_state(&svc).await;
    assert!(remote.contains_key("ed-000000-local"), "{remote:?}");
    assert!(local.contains_key("ed-000001-remote"), "{local:?}");
    // The conflict froze the field on both sides.
    assert!(local.contains_key("ed-000002-local"));
    assert!(remote.contains_key("ed-000002-remote"));
    assert_eq!(local["ed-000002-local"]["sync_status"], "conflict");
    let tags = json!(["extra", "local", "t1", "t2"]);
    assert_eq!(local["ed-000003"]["tags"], tags, "{local:?}");
    assert_eq!(remote["ed-000003"]["tags"], tags, "{remote:?}");
    let pending: i64 = db
        .query_one(
            "SELECT count(*) FROM device_conflicts WHERE service_id = $1 \
             AND resolution_status = 'pending' AND field_name = 'name' \
             AND conflict_type = 'concurrent_modification'",
            &[&svc.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 1);
    // Detecting the same pending conflict again writes nothing.
    assert_second_run_writes_nothing(&e, &svc, "bidirectional", 4).await;
}

#[tokio::test]
async fn a_dry_run_reports_the_plan_and_writes_nothing() {
    let e = env().await;
    let svc = e.service("dry", json!({})).await;
    e.seed_remote(&svc, "dryr", 12);
    e.seed_local(&svc, "dryl", 5).await;
    let db_before = e.db_fingerprint().await;
    let sim_before = e.sim.stats().writes;
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional", "dry_run": true}))
        .await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["summary"]["created_local"], 12, "{v}");
    assert_eq!(v["summary"]["created_remote"], 5, "{v}");
    let details = v["details"].as_array().unwrap();
    assert_eq!(details.len(), 17, "{v}");
    assert!(details.iter().all(|d| d["status"] == "planned"));
    assert_eq!(e.sim.stats().writes, sim_before);
    assert_eq!(e.db_fingerprint().await, db_before);
    // The real run does what the dry run said.
    let real = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(real["summary"]["created_local"], 12);
    assert_eq!(real["summary"]["created_remote"], 5);
}

/// The same scenario on a fresh app: 250 Golioth devices, 120 local ones, bidirectional.
async fn interrupted_scenario(vars: &[(&str, &str)]) -> (Env, Svc) {
    let e = env_with(vars).await;
    let svc = e.service("intr", json!({})).await;
    e.seed_remote(&svc, "xr", 250);
    e.seed_local(&svc, "yl", 120).await;
    (e, svc)
}

#[tokio::test]
async fn interrupted_runs_end_in_the_state_of_an_uninterrupted_run() {
    // Reference: one request, default budget.
    let (reference, ref_svc) = interrupted_scenario(&[]).await;
    let v = reference
        .sync_done(&ref_svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["status"], "completed", "{v}");

    // A budget of one page per request, and a worker that dies holding the lease.
    let (e, svc) = interrupted_scenario(&[("slice_budget_ms", "0")]).await;
    let r = e.sync(&svc, json!({"operation": "bidirectional"})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let first = r.json();
    assert_eq!(first["status"], "running");
    assert_eq!(first["progress"]["pages"], 1, "{first}");
    let run = uuid(&first["operation_id"]);
    let db = e.app.admin().await;
    db.execute(
        "UPDATE sync_runs SET lease_owner = 'dead-worker', \
                lease_expires_at = now() + interval '1 hour' WHERE id = $1",
        &[&run],
    )
    .await
    .unwrap();
    // While the dead worker's lease lasts, nobody else touches the run.
    let r = e.sync(&svc, json!({"operation": "bidirectional"})).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["operation_id"], first["operation_id"]);
    assert_eq!(r.json()["existing"], true);
    assert_eq!(r.json()["progress"]["pages"], 1);
    // The lease expires: the next request takes the run over and it resumes from its cursor.
    db.execute(
        "UPDATE sync_runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        &[&run],
    )
    .await
    .unwrap();
    let done = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(done["operation_id"], first["operation_id"]);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempt"], 2, "a takeover counts as an attempt");
    assert_eq!(done["progress"]["pages"], 3, "{done}");
    assert!(done["progress"]["slices"].as_u64().unwrap() >= 4, "{done}");
    // No page was fetched twice.
    let mut pages = e.list_requests(&svc);
    pages.sort();
    assert_eq!(pages, vec![0, 1, 2]);

    assert_eq!(
        e.local_state(&svc).await,
        reference.local_state(&ref_svc).await
    );
    assert_eq!(e.remote_state(&svc), reference.remote_state(&ref_svc));
    for (k, v) in ["created_local", "created_remote", "processed"]
        .iter()
        .map(|k| (k, &v["summary"][k]))
    {
        assert_eq!(&done["summary"][k], v, "{k}");
    }
}

#[tokio::test]
async fn injected_503s_and_429s_with_retry_after_still_complete_the_run() {
    let e = env().await;
    let svc = e.service("faults", json!({})).await;
    e.seed_remote(&svc, "fr", 250);
    e.seed_local(&svc, "fl", 30).await;
    e.sim.add_fault(FaultRule::times(
        2,
        RequestMatch::devices_page(1),
        Fault::unavailable(Some(1)),
    ));
    e.sim.add_fault(FaultRule::times(
        2,
        RequestMatch::kind("device.create"),
        Fault::rate_limited(Some(1)),
    ));
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(e.sim.stats().faults_injected, 4);
    assert_eq!(v["summary"]["created_local"], 250);
    assert_eq!(v["summary"]["created_remote"], 30);
    assert_converged(&e, &svc, "f", 280).await;
}

#[tokio::test]
async fn a_permanent_error_on_one_device_leaves_the_others_synced_and_is_logged() {
    let e = env().await;
    let svc = e.service("perm", json!({})).await;
    let locals = e.seed_local(&svc, "pm", 5).await;
    e.sync_done(&svc, json!({"operation": "export"})).await;
    let db = e.app.admin().await;
    db.execute(
        "UPDATE devices SET name = name || '-v2' WHERE organization_id = $1",
        &[&e.org],
    )
    .await
    .unwrap();
    let broken = e.sim.device_id_by_name(&svc.project, "pm-000002").unwrap();
    e.sim.add_fault(FaultRule::always(
        RequestMatch::path(format!("/v1/projects/{}/devices/{broken}", svc.project))
            .method("PATCH"),
        Fault::status(400),
    ));
    let v = e.sync_done(&svc, json!({"operation": "export"})).await;
    assert_eq!(v["status"], "completed_with_errors", "{v}");
    assert_eq!(v["summary"]["failed"], 1, "{v}");
    assert_eq!(v["summary"]["updated_remote"], 4, "{v}");
    let detail = &v["details"][0];
    assert_eq!(detail["status"], "error", "{v}");
    assert_eq!(detail["device_id"], json!(locals[2]));
    assert!(
        detail["error"].as_str().unwrap().contains("400"),
        "{detail}"
    );
    let remote = e.remote_state(&svc);
    assert!(remote.contains_key("pm-000002"), "left unconverged");
    for i in [0, 1, 3, 4] {
        assert!(
            remote.contains_key(&format!("pm-00000{i}-v2")),
            "{remote:?}"
        );
    }
    let row = db
        .query_one(
            "SELECT sync_status, last_error FROM device_service_assignments WHERE device_id = $1",
            &[&locals[2]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "error");
    assert!(row.get::<_, Option<String>>(1).unwrap().contains("400"));
    let logged: i64 = db
        .query_one(
            "SELECT count(*) FROM golioth_sync_log WHERE device_id = $1 \
             AND operation = 'remote_updated' AND status = 'error'",
            &[&locals[2]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 1);
    // The base was not advanced: once Golioth accepts the write, the next run pushes it.
    e.sim.clear_faults();
    let v = e.sync_done(&svc, json!({"operation": "export"})).await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["summary"]["updated_remote"], 1);
    assert!(e.remote_state(&svc).contains_key("pm-000002-v2"));
    let row = db
        .query_one(
            "SELECT sync_status, last_error FROM device_service_assignments WHERE device_id = $1",
            &[&locals[2]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "synced");
    assert_eq!(row.get::<_, Option<String>>(1), None);
}

#[tokio::test]
async fn two_concurrent_sync_requests_produce_one_run() {
    let e = env().await;
    let svc = e.service("conc", json!({})).await;
    e.seed_remote(&svc, "cc", 250);
    e.sim.set_latency(Duration::from_millis(30));
    let body = json!({"operation": "import"});
    let (a, b) = tokio::join!(e.sync(&svc, body.clone()), e.sync(&svc, body.clone()));
    assert!(matches!(a.status, 200 | 202), "{}", a.text());
    assert!(matches!(b.status, 200 | 202), "{}", b.text());
    assert_eq!(a.json()["operation_id"], b.json()["operation_id"]);
    let runs: i64 = e
        .app
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM sync_runs WHERE service_id = $1",
            &[&svc.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
    e.sim.set_latency(Duration::ZERO);
    // Follow the shared run to its end (a later request continues it while it is active).
    let path = format!("/sync-runs/{}", a.json()["operation_id"].as_str().unwrap());
    let mut v = e.get(&path).await.json();
    while v["finished_at"].is_null() {
        e.sync(&svc, body.clone()).await;
        v = e.get(&path).await.json();
    }
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["summary"]["created_local"], 250, "{v}");
}

#[tokio::test]
async fn an_incomplete_listing_deletes_nothing() {
    if harness::native_only(
        "drives the retries in-process at each run's future run_after (the clock cannot be set over HTTP)",
    ) {
        return;
    }
    let e = env().await;
    let svc = e.service("partial", json!({})).await;
    let ids = e.seed_remote(&svc, "pl", 250);
    e.sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    // Three devices go away in Golioth, and the last page keeps failing.
    for id in &ids[..3] {
        e.sim.console_delete_device(&svc.project, id).unwrap();
    }
    e.sim.add_fault(FaultRule::always(
        RequestMatch::devices_page(2),
        Fault::unavailable(Some(0)),
    ));
    let r = e.sync(&svc, json!({"operation": "bidirectional"})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "queued", "{v}");
    assert!(v["error"].as_str().unwrap().contains("503"), "{v}");
    // Later attempts (driven by the scheduler) fail the same way, up to max_attempts.
    let run = uuid(&v["operation_id"]);
    for _ in 0..10 {
        let row = e.run_row(run).await;
        if row["status"] == "failed" {
            break;
        }
        let at = chrono::DateTime::parse_from_rfc3339(row["run_after"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
        e.tick(at, Duration::from_secs(5)).await;
    }
    let row = e.run_row(run).await;
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["attempt"], row["max_attempts"]);
    let db = e.app.admin().await;
    let deleted: i64 = db
        .query_one(
            "SELECT count(*) FROM devices WHERE organization_id = $1 AND deleted_at IS NOT NULL",
            &[&e.org],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deleted, 0);
    let linked: i64 = db
        .query_one(
            "SELECT count(*) FROM device_service_assignments WHERE service_id = $1 \
             AND external_device_id = ANY($2)",
            &[&svc.id, &ids[..3].to_vec()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(linked, 3, "links to the vanished devices are kept");
    // Once the listing completes again, the deletions are carried out.
    e.sim.clear_faults();
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["summary"]["deleted_local"], 3, "{v}");
}

#[tokio::test]
async fn targeted_runs_and_device_refresh_touch_only_their_devices() {
    let e = env().await;
    let svc = e.service("target", json!({})).await;
    let ids = e.seed_remote(&svc, "tg", 5);
    e.sync_done(&svc, json!({"operation": "import"})).await;
    for id in &ids[..2] {
        let name = e.sim.device(&svc.project, id).unwrap().name;
        e.sim
            .console_patch_device(&svc.project, id, &json!({"name": format!("{name}-new")}))
            .unwrap();
    }
    let db = e.app.admin().await;
    let local0: uuid::Uuid = db
        .query_one("SELECT id FROM devices WHERE name = 'tg-000000'", &[])
        .await
        .unwrap()
        .get(0);
    let v = e
        .sync_done(&svc, json!({"operation": "import", "device_ids": [local0]}))
        .await;
    assert_eq!(v["summary"]["processed"], 1, "{v}");
    assert_eq!(v["summary"]["updated_local"], 1, "{v}");
    let local = e.local_state(&svc).await;
    assert!(local.contains_key("tg-000000-new"));
    assert!(local.contains_key("tg-000001"), "not targeted: untouched");

    // A device_refresh run as the webhook queues it: one INSERT, then the scheduler runs it.
    db.execute(
        "INSERT INTO sync_runs (organization_id, service_id, operation, params) \
         VALUES ($1, $2, 'device_refresh', jsonb_build_object('device_id', $3::text))",
        &[&e.org, &svc.id, &ids[1]],
    )
    .await
    .unwrap();
    e.sim.console_delete_device(&svc.project, &ids[2]).unwrap();
    db.execute(
        "INSERT INTO sync_runs (organization_id, service_id, operation, params) \
         VALUES ($1, $2, 'device_refresh', jsonb_build_object('device_id', $3::text))",
        &[&e.org, &svc.id, &ids[2]],
    )
    .await
    .unwrap();
    let out = e.tick(chrono::Utc::now(), Duration::from_secs(10)).await;
    let results: Vec<&str> = out.runs.iter().map(|r| r.result.as_str()).collect();
    assert_eq!(results, vec!["completed", "completed"], "{out:?}");
    let local = e.local_state(&svc).await;
    assert!(local.contains_key("tg-000001-new"), "{local:?}");
    assert_eq!(local["tg-000002"]["deleted"], true, "deleted in Golioth");
    assert_eq!(local["tg-000003"]["deleted"], false);
}

fn expired_token(user: uuid::Uuid) -> String {
    let claims = json!({"sub": user.to_string(), "exp": chrono::Utc::now().timestamp() - 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(harness::JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

fn forged_token(user: uuid::Uuid) -> String {
    let claims = json!({"sub": user.to_string(), "exp": chrono::Utc::now().timestamp() + 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap()
}

#[tokio::test]
async fn every_route_refuses_missing_expired_forged_and_other_organization_tokens() {
    let e = env().await;
    let svc = e.service("auth", json!({})).await;
    e.seed_remote(&svc, "au", 2);
    let v = e.sync_done(&svc, json!({"operation": "import"})).await;
    let run = v["operation_id"].as_str().unwrap().to_owned();
    let member_id = e.app.seed_member(e.org, "member").await;

    // Another organization with its own member and run.
    let other = e.app.seed_org("other").await;
    let outsider = e.app.jwt(e.app.seed_member(other, "owner").await);
    let db = e.app.admin().await;
    let other_service: uuid::Uuid = db
        .query_one(
            "INSERT INTO device_services (organization_id, name) VALUES ($1, 'x') RETURNING id",
            &[&other],
        )
        .await
        .unwrap()
        .get(0);
    let other_run: uuid::Uuid = db
        .query_one(
            "INSERT INTO sync_runs (organization_id, service_id, operation, status) \
             VALUES ($1, $2, 'import', 'completed') RETURNING id",
            &[&other, &other_service],
        )
        .await
        .unwrap()
        .get(0);

    let base = e.base();
    let routes: Vec<(&str, String)> = vec![
        ("POST", format!("{base}/services/{}/sync", svc.id)),
        ("GET", format!("{base}/services/{}/stats", svc.id)),
        ("GET", format!("{base}/sync-runs")),
        ("GET", format!("{base}/sync-runs/{run}")),
        ("POST", format!("{base}/sync-runs/{run}/cancel")),
        ("GET", format!("{base}/sync-log")),
    ];
    let body = json!({"operation": "import"});
    for (method, path) in &routes {
        for (label, token, status) in [
            ("missing", None, 401),
            ("expired", Some(expired_token(member_id)), 401),
            ("forged", Some(forged_token(member_id)), 401),
            ("other organization", Some(outsider.clone()), 404),
        ] {
            let r = e
                .app
                .request(method, path, token.as_deref(), Some(&body))
                .await;
            assert_eq!(r.status, status, "{label} {method} {path}: {}", r.text());
            assert_eq!(r.content_type(), "application/problem+json");
        }
    }
    // Another organization's run through this organization's path: 404, like a missing one.
    for path in [
        format!("{base}/sync-runs/{other_run}"),
        format!("{base}/sync-runs/{other_run}/cancel"),
    ] {
        let method = if path.ends_with("cancel") {
            "POST"
        } else {
            "GET"
        };
        let r = e.app.request(method, &path, Some(&e.member), None).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let r = e
        .app
        .post(
            &format!("{base}/services/{other_service}/sync"),
            Some(&e.member),
            &body,
        )
        .await;
    assert_eq!(r.status, 404);
    // Viewers read but do not sync.
    let r = e
        .app
        .post(
            &format!("{base}/services/{}/sync", svc.id),
            Some(&e.viewer),
            &body,
        )
        .await;
    assert_eq!(r.status, 403);
    // The tick wants the internal token.
    for token in [None, Some("wrong-token"), Some(e.member.as_str())] {
        let r = e.app.request("POST", "/internal/tick", token, None).await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
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
    assert!(r.json()["runs"].is_array());
}

#[tokio::test]
async fn a_local_edit_made_while_the_run_writes_is_never_overwritten() {
    let e = env().await;
    let svc = e.service("occ", json!({})).await;
    let ids = e.seed_remote(&svc, "oc", 1);
    e.sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    // Golioth renames the device; locally it is disabled: the plan pulls the name and pushes
    // `enabled`, so the run re-reads the device, patches it, then updates it locally.
    e.sim
        .console_patch_device(&svc.project, &ids[0], &json!({"name": "oc-remote"}))
        .unwrap();
    let db = e.app.admin().await;
    db.execute(
        "UPDATE devices SET enabled = false WHERE organization_id = $1",
        &[&e.org],
    )
    .await
    .unwrap();
    e.sim.reset_stats();
    e.sim.set_latency(Duration::from_millis(300));
    // While the PATCH is in flight, someone renames the device locally.
    let edit = async {
        let seen = e
            .sim
            .wait_for(Duration::from_secs(30), |s| {
                s.by_kind.get("device.get").copied().unwrap_or(0) >= 1
            })
            .await;
        assert!(seen, "the run never re-read the device");
        db.execute(
            "UPDATE devices SET name = 'oc-local' WHERE organization_id = $1",
            &[&e.org],
        )
        .await
        .unwrap();
    };
    let (r, ()) = tokio::join!(e.sync(&svc, json!({"operation": "bidirectional"})), edit);
    e.sim.set_latency(Duration::ZERO);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "completed", "{v}");
    // The conditional update skipped the device; planned again from a fresh read, the two
    // renames are a conflict: neither side's name was overwritten.
    assert_eq!(v["summary"]["conflicts"], 1, "{v}");
    assert_eq!(v["summary"]["updated_local"], 0, "{v}");
    let local = e.local_state(&svc).await;
    assert!(local.contains_key("oc-local"), "{local:?}");
    assert_eq!(local["oc-local"]["enabled"], false);
    assert_eq!(local["oc-local"]["sync_status"], "conflict");
    let remote = e.remote_state(&svc);
    assert!(remote.contains_key("oc-remote"), "{remote:?}");
    assert_eq!(
        remote["oc-remote"]["enabled"], false,
        "the push went through"
    );
}

#[tokio::test]
async fn exported_devices_get_psk_credentials_when_configured() {
    let e = env().await;
    let svc = e
        .service("creds", json!({"create_credentials": true}))
        .await;
    let locals = e.seed_local(&svc, "cr", 2).await;
    let v = e.sync_done(&svc, json!({"operation": "export"})).await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["summary"]["created_remote"], 2);
    let creds = e.sim.credentials(&svc.project);
    assert_eq!(creds.len(), 2, "{creds:?}");
    for id in &locals {
        assert!(
            creds
                .iter()
                .any(|c| c.identity.starts_with(&id.to_string())),
            "{creds:?}"
        );
    }
    // The key itself is never kept or shown.
    assert!(!v.to_string().contains("preSharedKey"));
}

#[tokio::test]
async fn a_resync_asks_for_its_links_pages_at_once_and_a_shrunken_project_still_completes() {
    let e = env().await;
    let svc = e.service("shrink", json!({})).await;
    let ids = e.seed_remote(&svc, "sh", 250);
    e.sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    let mut first = e.list_requests(&svc);
    assert_eq!(first[0], 0, "a first sync learns the size from page 0");
    first.sort();
    assert_eq!(first, vec![0, 1, 2]);
    // 150 devices go away in Golioth: the 250 links still ask for 3 pages, 2 of them past the
    // end, which answer an empty list.
    for id in &ids[..150] {
        e.sim.console_delete_device(&svc.project, id).unwrap();
    }
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["summary"]["deleted_local"], 150, "{v}");
    let mut second = e.list_requests(&svc)[first.len()..].to_vec();
    second.sort();
    assert_eq!(second, vec![0, 1, 2]);
    // The links that are left ask for one page.
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["summary"]["deleted_local"], 0, "{v}");
    let third = e.list_requests(&svc)[first.len() + second.len()..].to_vec();
    assert_eq!(third, vec![0]);
    assert_eq!(e.remote_state(&svc).len(), 100);
}
