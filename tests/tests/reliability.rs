//! Reliability when the network loses answers and hosts die (issue 21), at the HTTP level so the
//! Spin suite runs these too:
//! - Golioth writes whose answer was lost (applied, then a 503 or a dropped connection) never
//!   fail a run or duplicate a device: they are resolved by looking;
//! - a bidirectional sync under Golioth failures and lost answers, with the host SIGKILLed at
//!   seeded random points and restarted, ends where an undisturbed run ends;
//! - a webhook delivery answered 200 is stored exactly once, even when the host is SIGKILLed in
//!   the middle of a burst.

mod common_sync;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use common_sync::{Env, Svc, env_with};
use host::simulator::{Fault, FaultRates, FaultRule, RequestMatch};
use serde_json::{Value, json};

const HOST_BIN: &str = env!("CARGO_BIN_EXE_gs-host");

/// The seed of a test's randomness: `GS_CHAOS_SEED` when set (to replay a failure), else a fixed
/// default, so CI is reproducible. Printed, and named again in every failure message.
fn seed(default: u64) -> u64 {
    let seed = std::env::var("GS_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("seed {seed} (replay with GS_CHAOS_SEED={seed})");
    seed
}

/// A tiny seeded generator (splitmix64): the kill points must not depend on a crate's stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Lost answers only: `share` of the writes are applied and answered with a 503 (half) or a
/// dropped connection (half).
fn lost_answers(seed: u64, share: f64) -> FaultRates {
    FaultRates {
        seed,
        lost_unavailable: share / 2.0,
        lost_dropped: share / 2.0,
        ..FaultRates::default()
    }
}

/// Golioth names and hardware ids are unique: no device was created twice.
fn assert_no_duplicates(e: &Env, svc: &Svc, seed: u64) {
    let ids = e.sim.device_ids(&svc.project);
    let mut names = HashSet::new();
    let mut hw = HashSet::new();
    for id in &ids {
        let d = e.sim.device(&svc.project, id).expect("listed device");
        assert!(
            names.insert(d.name.clone()),
            "seed {seed}: name {} twice",
            d.name
        );
        for h in d.hardware_ids {
            assert!(hw.insert(h.clone()), "seed {seed}: hardware id {h} twice");
        }
    }
}

#[tokio::test]
async fn lost_answers_never_fail_an_export_an_update_or_a_delete() {
    let seed = seed(21);
    let e = env_with(&[]).await;
    let svc = e
        .service("lost", json!({"on_local_delete": "delete_remote"}))
        .await;
    e.seed_local(&svc, "lost", 200).await;
    e.sim.set_fault_rates(lost_answers(seed, 0.3));

    // Export: every create whose answer is lost is found by its hardware id and linked.
    let v = e.sync_done(&svc, json!({"operation": "export"})).await;
    assert_eq!(v["status"], "completed", "seed {seed}: {v}");
    assert_eq!(v["summary"]["failed"], 0, "seed {seed}: {v}");
    assert_eq!(v["summary"]["created_remote"], 200, "seed {seed}: {v}");
    let lost = e.sim.stats();
    assert!(
        lost.faults_injected >= 30,
        "seed {seed}: only {} answers were lost: the test would prove nothing",
        lost.faults_injected
    );
    assert_eq!(e.sim.device_count(&svc.project), 200, "seed {seed}");
    assert_no_duplicates(&e, &svc, seed);
    let local = e.local_state(&svc).await;
    assert!(
        local
            .values()
            .all(|d| d["linked"] == true && d["has_base"] == true),
        "seed {seed}: {local:?}"
    );

    // Update: a tag added and a rename on every device.
    let db = e.app.admin().await;
    db.execute(
        "UPDATE devices SET tags = tags || ARRAY['extra'], name = name || '-v2' \
         WHERE organization_id = $1",
        &[&e.org],
    )
    .await
    .unwrap();
    let v = e.sync_done(&svc, json!({"operation": "export"})).await;
    assert_eq!(v["status"], "completed", "seed {seed}: {v}");
    assert_eq!(v["summary"]["failed"], 0, "seed {seed}: {v}");
    assert_eq!(v["summary"]["updated_remote"], 200, "seed {seed}: {v}");
    let remote = e.remote_state(&svc);
    assert_eq!(remote.len(), 200, "seed {seed}");
    for (name, d) in &remote {
        assert!(name.ends_with("-v2"), "seed {seed}: {name} not renamed");
        assert!(
            d["tags"].as_array().unwrap().contains(&json!("extra")),
            "seed {seed}: {name}: {d}"
        );
    }

    // Delete: half the devices deleted locally are deleted in Golioth.
    db.execute(
        "UPDATE devices SET deleted_at = now() \
         WHERE organization_id = $1 AND right(split_part(name, '-v2', 1), 1) IN ('0','2','4','6','8')",
        &[&e.org],
    )
    .await
    .unwrap();
    let v = e.sync_done(&svc, json!({"operation": "export"})).await;
    assert_eq!(v["status"], "completed", "seed {seed}: {v}");
    assert_eq!(v["summary"]["failed"], 0, "seed {seed}: {v}");
    assert_eq!(v["summary"]["deleted_remote"], 100, "seed {seed}: {v}");
    assert_eq!(e.sim.device_count(&svc.project), 100, "seed {seed}");
    assert_no_duplicates(&e, &svc, seed);

    // A rerun, answers still being lost, writes nothing anywhere.
    let before_db = e.db_fingerprint().await;
    e.sim.reset_stats();
    let v = e.sync_done(&svc, json!({"operation": "export"})).await;
    assert_eq!(v["status"], "completed", "seed {seed}: {v}");
    assert_eq!(e.sim.stats().writes, 0, "seed {seed}: {v}");
    let after_db = e.db_fingerprint().await;
    assert_eq!(
        before_db["version_sum"], after_db["version_sum"],
        "seed {seed}"
    );
    assert_eq!(before_db["devices"], after_db["devices"], "seed {seed}");
}

/// How many of the service's assignments carry a write-ahead `pending_create` marker.
async fn markers(e: &Env, svc: &Svc) -> i64 {
    e.app
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM device_service_assignments \
             WHERE service_id = $1 AND pending_create IS NOT NULL",
            &[&svc.id],
        )
        .await
        .unwrap()
        .get(0)
}

/// A create whose outcome stays unknown (applied, its answer lost on every attempt, and Golioth
/// unreachable for the lookup that would settle it) leaves its write-ahead marker; the next run
/// meets the device by hardware id and finishes the create — a disabled device is disabled in
/// Golioth, every device gets the PSK credential the service creates — rather than treating it
/// as a stranger (a first-sync `enabled` conflict, no credential).
#[tokio::test]
async fn a_create_whose_outcome_stayed_unknown_is_finished_by_the_next_run() {
    let e = env_with(&[]).await;
    let svc = e
        .service("unsettled", json!({"create_credentials": true}))
        .await;
    let locals = e.seed_local(&svc, "dev", 5).await; // dev-000004 is disabled
    e.sim.add_fault(FaultRule::always(
        RequestMatch::kind("device.create"),
        Fault::AppliedThenUnavailable,
    ));
    e.sim.add_fault(FaultRule::always(
        RequestMatch::kind("devices.list").with_param("hardwareId"),
        Fault::unavailable(Some(0)),
    ));
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["status"], "completed_with_errors", "{v}");
    assert_eq!(v["summary"]["failed"], 5, "{v}");
    assert_eq!(
        e.sim.device_count(&svc.project),
        5,
        "the creates were applied"
    );
    let remote = e.remote_state(&svc);
    assert_eq!(
        remote["dev-000004"]["enabled"], true,
        "created, never disabled"
    );
    assert!(
        e.sim.credentials(&svc.project).is_empty(),
        "no credential yet"
    );
    let db = e.app.admin().await;
    let marked = markers(&e, &svc).await;
    assert_eq!(marked, 5, "every unsettled create keeps its marker");

    e.sim.clear_faults();
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["summary"]["failed"], 0, "{v}");
    assert_eq!(v["summary"]["updated_remote"], 1, "{v}");
    let remote = e.remote_state(&svc);
    assert_eq!(remote.len(), 5, "{remote:?}");
    assert_eq!(remote["dev-000004"]["enabled"], false, "{remote:?}");
    let local = e.local_state(&svc).await;
    assert!(
        local
            .values()
            .all(|d| d["linked"] == true && d["has_base"] == true),
        "{local:?}"
    );
    assert_eq!(local["dev-000004"]["enabled"], false, "{local:?}");
    let open: i64 = db
        .query_one(
            "SELECT count(*) FROM device_conflicts \
             WHERE service_id = $1 AND resolution_status = 'pending'",
            &[&svc.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "no conflict invented");
    let marked = markers(&e, &svc).await;
    assert_eq!(marked, 0, "linked devices carry no marker");
    // The credential the create would have made comes with the link.
    let creds = e.sim.credentials(&svc.project);
    assert_eq!(creds.len(), 5, "{creds:?}");
    for id in &locals {
        assert!(
            creds
                .iter()
                .any(|c| c.identity.starts_with(&id.to_string())),
            "{id}: {creds:?}"
        );
    }

    e.sim.reset_stats();
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(e.sim.stats().writes, 0, "{v}");
}

/// A create Golioth refuses makes nothing: its marker is cleared with the error.
#[tokio::test]
async fn a_refused_create_leaves_no_marker() {
    let e = env_with(&[]).await;
    let svc = e.service("refused", json!({})).await;
    e.seed_local(&svc, "dev", 2).await;
    e.sim.add_fault(FaultRule::always(
        RequestMatch::kind("device.create"),
        Fault::status(400),
    ));
    let v = e.sync_done(&svc, json!({"operation": "export"})).await;
    assert_eq!(v["summary"]["failed"], 2, "{v}");
    let marked = markers(&e, &svc).await;
    assert_eq!(marked, 0);
}

/// Both sides of a service as names: the local devices (live, with what they are linked to) and
/// the Golioth devices, and the pending conflicts by device and field.
async fn end_state(e: &Env, svc: &Svc) -> Value {
    let local: BTreeMap<String, Value> = e
        .local_state(svc)
        .await
        .into_iter()
        .map(|(name, mut d)| {
            // Which run touched what last is bookkeeping, not state.
            if let Some(o) = d.as_object_mut() {
                o.remove("sync_status");
            }
            (name, d)
        })
        .collect();
    let db = e.app.admin().await;
    let conflicts: BTreeSet<String> = db
        .query(
            "SELECT coalesce(d.name, c.external_device_id) || '/' || c.field_name \
             FROM device_conflicts c LEFT JOIN devices d ON d.id = c.device_id \
             WHERE c.organization_id = $1 AND c.resolution_status = 'pending'",
            &[&e.org],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // PSK credentials by the name of the local device they were made for (the identity is the
    // local device id, which differs between worlds), with how many each has.
    let names: BTreeMap<String, String> = db
        .query(
            "SELECT id::text, name FROM devices WHERE organization_id = $1",
            &[&e.org],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut credentials: BTreeMap<String, u32> = BTreeMap::new();
    for c in e.sim.credentials(&svc.project) {
        let id = c.identity.split('@').next().unwrap_or_default();
        let name = names.get(id).cloned().unwrap_or_else(|| c.identity.clone());
        *credentials.entry(name).or_default() += 1;
    }
    json!({
        "local": local,
        "remote": e.remote_state(svc),
        "pending_conflicts": conflicts,
        "credentials": credentials,
    })
}

/// The same starting point in a fresh world, 3,000 devices: 1,500 linked pairs (300 edited
/// locally, 300 in Golioth — 100 of them on both sides in different fields, merged — and 100
/// renamed on both sides, so conflicts), 750 local-only devices to export (a fifth of them
/// disabled) and 750 Golioth-only devices to import.
async fn prepare_world(e: &Env, svc: &Svc) {
    e.seed_local(svc, "pair", 1500).await;
    let v = e.sync_done(svc, json!({"operation": "export"})).await;
    assert_eq!(v["status"], "completed", "{v}");
    e.seed_local(svc, "new", 750).await;
    e.seed_remote(svc, "rem", 750);
    let db = e.app.admin().await;
    db.execute(
        "UPDATE devices SET tags = tags || ARRAY['extra'] \
         WHERE organization_id = $1 AND name >= 'pair-000000' AND name < 'pair-000300'",
        &[&e.org],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE devices SET name = name || '-l' \
         WHERE organization_id = $1 AND name >= 'pair-000500' AND name < 'pair-000600'",
        &[&e.org],
    )
    .await
    .unwrap();
    for i in 200..600 {
        let name = format!("pair-{i:06}");
        let id = e
            .sim
            .device_id_by_name(&svc.project, &name)
            .unwrap_or_else(|| panic!("{name} in Golioth"));
        let patch = if i < 500 {
            json!({"enabled": false})
        } else {
            json!({"name": format!("{name}-r")})
        };
        e.sim
            .console_patch_device(&svc.project, &id, &patch)
            .unwrap();
    }
}

/// The entries of two end-state parts that differ, for failure messages.
fn differences(got: &Value, want: &Value) -> String {
    let (Some(g), Some(w)) = (got.as_object(), want.as_object()) else {
        return format!("got {got}, want {want}");
    };
    let keys: BTreeSet<&String> = g.keys().chain(w.keys()).collect();
    keys.into_iter()
        .filter(|k| g.get(*k) != w.get(*k))
        .take(20)
        .map(|k| format!("\n  {k}: got {:?}, want {:?}", g.get(k), w.get(k)))
        .collect()
}

/// Tick until the run is over; the run's status and error.
async fn drive(e: &Env, run: uuid::Uuid, seed: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let row = e.run_row(run).await;
        let status = row["status"].as_str().unwrap_or_default().to_owned();
        if !["queued", "running"].contains(&status.as_str()) {
            return format!(
                "{status} (attempt {}, error {})",
                row["attempt"], row["error"]
            );
        }
        assert!(Instant::now() < deadline, "seed {seed}: run stuck: {row}");
        let _ = e.tick(Utc::now(), Duration::from_millis(400)).await;
    }
}

/// Make a killed worker's lease claimable now: its process is gone, so waiting out the lease
/// (two minutes past the slice budget) would only make the test slow.
async fn expire_leases(e: &Env) {
    e.app
        .admin()
        .await
        .execute(
            "UPDATE sync_runs SET lease_expires_at = now() - interval '1 second', run_after = now() \
             WHERE status IN ('queued', 'running')",
            &[],
        )
        .await
        .unwrap();
}

/// The chaos test. Under Spin, seed 2121 found a SIGKILL between a disabled device's create and
/// its disable; the write-ahead marker (`pending_create`, migration 0009) is what makes the next
/// run finish that create instead of inventing a first-sync conflict. Replay a seed with
/// `GS_CHAOS_SEED=<seed>`.
#[tokio::test]
async fn a_sync_under_failures_and_sigkills_ends_where_an_undisturbed_one_ends() {
    let seed = seed(2121);
    let mut rng = Rng(seed);
    let vars = [("slice_budget_ms", "300")];

    // The reference: the same world, synced once with nothing going wrong.
    let reference = {
        let e = env_with(&vars).await;
        let svc = e
            .service("chaos", json!({"create_credentials": true}))
            .await;
        prepare_world(&e, &svc).await;
        let v = e
            .sync_done(&svc, json!({"operation": "bidirectional"}))
            .await;
        assert_eq!(v["status"], "completed", "{v}");
        let state = end_state(&e, &svc).await;
        // Every exported device (1,500 pairs, 750 new) has its one credential.
        let creds = state["credentials"].as_object().unwrap();
        assert_eq!(creds.len(), 2250);
        assert!(creds.values().all(|n| n == 1));
        state
    };

    let mut e = env_with(&vars).await;
    let svc = e
        .service("chaos", json!({"create_credentials": true}))
        .await;
    prepare_world(&e, &svc).await;
    e.app.use_killable_host(HOST_BIN);
    e.sim.set_latency(Duration::from_millis(2));
    e.sim.reset_stats();
    e.sim.set_fault_rates(FaultRates {
        seed,
        internal_error: 0.04,
        unavailable: 0.04,
        lost_unavailable: 0.08,
        lost_dropped: 0.08,
        retry_after: Some("0".into()),
        ..FaultRates::default()
    });
    let r = e.sync(&svc, json!({"operation": "bidirectional"})).await;
    assert!(
        r.status == 200 || r.status == 202,
        "{} {}",
        r.status,
        r.text()
    );
    let run: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();

    // Kill the host at random points while ticks drive the run, up to four times (a fifth
    // would spend the run's last attempt: a killed worker's lease counts as one).
    let mut kills = 0;
    for _ in 0..4 {
        let wait = Duration::from_millis(rng.between(100, 1500));
        let started = Instant::now();
        let mut ended = false;
        while started.elapsed() < wait {
            let row = e.run_row(run).await;
            if !["queued", "running"].contains(&row["status"].as_str().unwrap_or_default()) {
                ended = true;
                break;
            }
            // A tick cut off by the kill below is exactly the point: its slice never commits.
            let tick = e
                .app
                .client
                .post(format!("{}/internal/tick", e.app.base_url));
            let _ = tokio::time::timeout(
                wait.saturating_sub(started.elapsed()),
                e.app.send(tick.bearer_auth(harness::INTERNAL_TOKEN)),
            )
            .await;
        }
        if ended {
            break;
        }
        e.app.kill_host();
        kills += 1;
        expire_leases(&e).await;
        e.app.restart_host();
    }
    eprintln!("seed {seed}: host killed {kills} times");
    assert!(
        kills > 0,
        "seed {seed}: the run ended before the first kill"
    );

    // Whatever the interrupted run left (a genuine Golioth failure may still stand), the next
    // runs, with Golioth healthy again, finish the work.
    let status = drive(&e, run, seed).await;
    let stats = e.sim.stats();
    eprintln!(
        "seed {seed}: the interrupted run ended {status}; Golioth saw {} requests, {} writes, \
         {} faults injected",
        stats.requests, stats.writes, stats.faults_injected
    );
    e.sim.clear_faults();
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["status"], "completed", "seed {seed}: {v}");

    assert_no_duplicates(&e, &svc, seed);
    let got = end_state(&e, &svc).await;
    for part in ["local", "remote", "pending_conflicts", "credentials"] {
        assert_eq!(
            got[part],
            reference[part],
            "seed {seed}: {part} differs from the undisturbed run: {}",
            differences(&got[part], &reference[part])
        );
    }

    // And a rerun writes nothing on either side.
    let before = e.db_fingerprint().await;
    e.sim.reset_stats();
    let v = e
        .sync_done(&svc, json!({"operation": "bidirectional"}))
        .await;
    assert_eq!(v["status"], "completed", "seed {seed}: {v}");
    assert_eq!(e.sim.stats().writes, 0, "seed {seed}: {v}");
    let after = e.db_fingerprint().await;
    assert_eq!(before["version_sum"], after["version_sum"], "seed {seed}");
    assert_eq!(before["devices"], after["devices"], "seed {seed}");
}

/// A service named `name` whose Pipeline deliveries authenticate with `secret`.
async fn service_with_webhook_secret(e: &Env, name: &str, secret: &str) -> Svc {
    let svc = e.service(name, json!({})).await;
    let r = e
        .app
        .request(
            "PATCH",
            &format!("{}/services/{}", e.base(), svc.id),
            Some(&e.admin),
            Some(&json!({"webhook_secret": secret})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    svc
}

#[tokio::test]
async fn webhook_deliveries_answered_200_survive_a_sigkill_stored_once() {
    const SECRET: &str = "pipeline-secret-0123456789abcdef";
    const TOTAL: usize = 2_000;
    const KILL_AFTER: usize = 600;
    let mut e = env_with(&[]).await;
    let svc = service_with_webhook_secret(&e, "hooks", SECRET).await;
    // Twenty devices linked to Golioth ids, a hundred deliveries each, every one distinct.
    let db = e.app.admin().await;
    let golioth: Vec<String> = (0..20)
        .map(|n| format!("6b00000000000000{n:08x}"))
        .collect();
    for g in &golioth {
        let id = uuid::Uuid::new_v4();
        db.execute(
            "INSERT INTO devices (id, organization_id, name) VALUES ($1, $2, $3)",
            &[&id, &e.org, &format!("dev-{g}")],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO device_service_assignments (organization_id, device_id, service_id, \
                 external_device_id) VALUES ($1, $2, $3, $4)",
            &[&e.org, &id, &svc.id, g],
        )
        .await
        .unwrap();
    }
    e.app.use_killable_host(HOST_BIN);

    let url = format!("{}/webhooks/golioth/{}", e.app.base_url, svc.id);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Utc::now() - chrono::Duration::hours(1);
    let burst = {
        let (answered, project) = (answered.clone(), svc.project.clone());
        tokio::spawn(async move {
            use futures::StreamExt;
            futures::stream::iter(0..TOTAL)
                .map(|i| {
                    let (client, url, answered) = (client.clone(), url.clone(), answered.clone());
                    let device = format!("6b00000000000000{:08x}", i % 20);
                    let time = start + chrono::Duration::milliseconds(i as i64);
                    let project = project.clone();
                    async move {
                        let sent = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("x-webhook-token", SECRET)
                            .header("ce-source", &device)
                            .header("ce-subject", &project)
                            .header("ce-type", "io.golioth.data.v1/.s/sensor")
                            .header(
                                "ce-time",
                                time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                            )
                            .body(json!({"n": i, "power": {"battery": i % 100}}).to_string())
                            .send()
                            .await;
                        let Ok(resp) = sent else { return (i, None) };
                        let status = resp.status().as_u16();
                        let body: Value = resp.json().await.unwrap_or(Value::Null);
                        if status == 200 {
                            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        (i, Some((status, body)))
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(std::sync::atomic::Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "the burst stalled before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    e.app.kill_host();
    let outcomes = burst.await.unwrap();

    let mut acknowledged = Vec::new();
    let mut lost = 0;
    for (i, outcome) in &outcomes {
        match outcome {
            Some((200, body)) => {
                assert_eq!(body["status"], "processed", "delivery {i}: {body}");
                acknowledged.push(body["delivery_id"].as_str().unwrap().to_owned());
            }
            Some((status, body)) => panic!("delivery {i}: {status} {body}"),
            None => lost += 1,
        }
    }
    eprintln!(
        "{} deliveries answered 200 before the kill, {lost} cut off by it",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() >= KILL_AFTER && lost > 0,
        "the kill hit no burst"
    );

    // Every acknowledged delivery is stored, once, with its one telemetry row.
    let rows = db
        .query(
            "SELECT d.id::text, (SELECT count(*) FROM device_telemetry t WHERE t.delivery_id = d.id) \
             FROM webhook_deliveries d WHERE d.service_id = $1",
            &[&svc.id],
        )
        .await
        .unwrap();
    let stored: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for id in &acknowledged {
        assert_eq!(stored.get(id), Some(&1), "delivery {id} answered 200");
    }
    assert!(stored.len() >= acknowledged.len());
    let keys: i64 = db
        .query_one(
            "SELECT count(DISTINCT delivery_key) FROM webhook_deliveries WHERE service_id = $1",
            &[&svc.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys as usize, stored.len(), "a key stored twice");

    // The host comes back and takes the rest; a retried acknowledged delivery is a duplicate.
    e.app.restart_host();
    let again = e
        .app
        .send(
            e.app
                .client
                .post(format!("{}/webhooks/golioth/{}", e.app.base_url, svc.id))
                .header("content-type", "application/json")
                .header("x-webhook-token", SECRET)
                .header("ce-source", format!("6b00000000000000{:08x}", 0))
                .header("ce-subject", &svc.project)
                .header("ce-type", "io.golioth.data.v1/.s/sensor")
                .header(
                    "ce-time",
                    start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                )
                .body(json!({"n": 0, "power": {"battery": 0}}).to_string()),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    let first_acked = outcomes
        .iter()
        .any(|(i, o)| *i == 0 && matches!(o, Some((200, _))));
    let want = if first_acked {
        "duplicate"
    } else {
        "processed"
    };
    assert_eq!(again.json()["status"], want, "{}", again.text());
}

/// A host whose stdout pipe has closed (`golioth-sync up | head`, a log shipper gone) keeps
/// answering: every log line now meets `EPIPE`, and logging must never fail a request (it used
/// `println!`, which panics on a write error, and the panicking handler's connection was dropped
/// without an answer). Native only: under Spin the runtime owns the components' stdout.
#[tokio::test]
async fn a_host_whose_stdout_closed_still_answers_every_request() {
    if harness::native_only("the test closes the native host process's stdout pipe") {
        return;
    }
    const SECRET: &str = "pipeline-secret-0123456789abcdef";
    let mut e = env_with(&[]).await;
    let svc = service_with_webhook_secret(&e, "closed-stdout", SECRET).await;
    e.app.use_host_with_closed_stdout(HOST_BIN);
    // Each request below writes at least one log line (the request log; a 4xx its reason).
    for round in 0..5 {
        let health = e.app.get("/health", None).await;
        assert_eq!(health.status, 200, "round {round}: {}", health.text());
        let missing = e.app.get("/no/such/path", None).await;
        assert_eq!(missing.status, 404, "round {round}: {}", missing.text());
        assert_eq!(missing.content_type(), "application/problem+json");
        let list = e
            .app
            .get(&format!("{}/services", e.base()), Some(&e.viewer))
            .await;
        assert_eq!(list.status, 200, "round {round}: {}", list.text());
        let delivery = e
            .app
            .send(
                e.app
                    .client
                    .post(format!("{}/webhooks/golioth/{}", e.app.base_url, svc.id))
                    .header("content-type", "application/json")
                    .header("x-webhook-token", SECRET)
                    .header("ce-source", "6b0000000000000000000099")
                    .header("ce-subject", &svc.project)
                    .header("ce-type", "io.golioth.data.v1/.s/sensor")
                    .header("ce-id", format!("closed-stdout-{round}"))
                    .body(json!({"temp": round}).to_string()),
            )
            .await;
        assert_eq!(delivery.status, 200, "round {round}: {}", delivery.text());
    }
}
