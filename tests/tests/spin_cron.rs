//! The scheduler under the real Spin cron trigger plugin (`trigger-cron`), Spin-only
//! (`GS_TEST_HOST=spin`). The product's HTTP components run under `spin up`; a second, cron-only
//! `spin up` of the same `spin.toml` (only the `scheduler` component, its cron expression changed
//! to every 2 seconds) POSTs `/internal/tick` to them. Proves that a due service is synced by the
//! ticks exactly once (one completed scheduled run, the simulator's devices linked) although
//! several more ticks fire after the run completed, and that ticks sent with a wrong
//! `internal_token` are answered 401 and sync nothing (while the right token would have).

mod common_sync;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common_sync::{Env, Svc, env};
use harness::{Host, on_spin, start_spin};
use host::spin_up::{SpinApp, SpinOptions, spin_binary};
use serde_json::{Value, json};

/// The two tests each run three `spin up` processes; one test at a time on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PRODUCT_CRON: &str = r#"cron_expression = "0 * * * * *""#;
const TEST_CRON: &str = r#"cron_expression = "*/2 * * * * *""#;

/// Whether this test can run here; prints why not (one line) when it cannot.
fn runnable(test: &str) -> bool {
    if !on_spin() {
        println!(
            "spin-only: {test} drives the Spin cron trigger plugin; skipped on the native host"
        );
        return false;
    }
    let bin = match spin_binary() {
        Ok(b) => b,
        Err(e) => {
            println!("skipped: {test}: {e}");
            return false;
        }
    };
    let listed = Command::new(&bin)
        .args(["plugins", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !listed.lines().any(|l| l.starts_with("trigger-cron ")) {
        println!(
            "skipped: {test}: the Spin cron trigger plugin is not installed (`{} plugins list \
             --installed` lists no trigger-cron); install it (`spin plugins install trigger-cron`) \
             to run this test",
            bin.display()
        );
        return false;
    }
    true
}

/// A copy of `spin.toml` whose cron trigger fires every 2 seconds and whose component sources
/// are absolute, in a temporary folder removed on drop.
struct CronManifest {
    dir: PathBuf,
}

impl CronManifest {
    fn new() -> Self {
        let product = host::manifest::default_path();
        let root = product
            .parent()
            .unwrap_or_else(|| panic!("{} has no folder", product.display()));
        let text = std::fs::read_to_string(&product)
            .unwrap_or_else(|e| panic!("{}: {e}", product.display()));
        assert_eq!(
            text.matches(PRODUCT_CRON).count(),
            1,
            "{} no longer holds `{PRODUCT_CRON}` once: update this test",
            product.display()
        );
        let relative = r#"source = "target/"#;
        assert!(
            text.contains(relative),
            "{}: no `{relative}…`: update this test",
            product.display()
        );
        let text = text.replace(PRODUCT_CRON, TEST_CRON).replace(
            relative,
            &format!(r#"source = "{}/target/"#, root.display()),
        );
        let dir = std::env::temp_dir().join(format!("gs-cron-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::fs::write(dir.join("spin.toml"), text).unwrap();
        CronManifest { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("spin.toml")
    }
}

impl Drop for CronManifest {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cron-only app: only the `scheduler` component, ticking `tick_origin` with `token`.
fn start_cron(
    app_vars: &HashMap<String, String>,
    manifest: &Path,
    tick_origin: &str,
    token: &str,
) -> SpinApp {
    let mut vars = app_vars.clone();
    vars.insert("tick_origin".into(), tick_origin.to_owned());
    vars.insert("internal_token".into(), token.to_owned());
    start_spin(&SpinOptions {
        manifest: manifest.to_owned(),
        vars,
        components: vec!["scheduler".into()],
        no_http: true,
        ..SpinOptions::default()
    })
}

/// The test app's HTTP components under Spin, whose log folder holds the ticks' request log lines.
fn http_app(e: &Env) -> &SpinApp {
    match e.app.host() {
        Host::Spin(s) => s,
        Host::Native(_) | Host::Process(_) => panic!("GS_TEST_HOST=spin started a native host"),
    }
}

/// A tick as the device-sync component logged it: when it started and what it answered.
#[derive(Debug)]
struct Tick {
    started: DateTime<Utc>,
    status: u64,
}

fn component_log(app: &SpinApp, file: &str) -> String {
    std::fs::read_to_string(app.log_dir.join("components").join(file)).unwrap_or_default()
}

/// Every `POST /internal/tick` the HTTP app's device-sync component logged so far.
fn ticks(http: &SpinApp) -> Vec<Tick> {
    component_log(http, "device-sync_stdout.txt")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["msg"] == "request" && v["route"] == "/internal/tick")
        .filter_map(|v| {
            let end = DateTime::parse_from_rfc3339(v["ts"].as_str()?)
                .ok()?
                .with_timezone(&Utc);
            let took = chrono::Duration::milliseconds(v["duration_ms"].as_i64()?);
            Some(Tick {
                started: end - took,
                status: v["status"].as_u64()?,
            })
        })
        .collect()
}

/// The cron plugin's reports of a failed tick that answered 401.
fn cron_401s(cron: &SpinApp) -> usize {
    std::fs::read_to_string(cron.log_dir.join("spin.err"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Component scheduler failed") && l.contains("answered 401"))
        .count()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Both apps' output, for failure messages.
fn logs(http: &SpinApp, cron: &SpinApp) -> String {
    format!(
        "=== HTTP app\n{}--- device-sync_stdout.txt (tail)\n{}\n--- device-sync_stderr.txt (tail)\n{}\n\
         === cron app\n{}--- scheduler_stderr.txt (tail)\n{}\n",
        http.logs(),
        tail(&component_log(http, "device-sync_stdout.txt"), 40),
        tail(&component_log(http, "device-sync_stderr.txt"), 20),
        cron.logs(),
        tail(&component_log(cron, "scheduler_stderr.txt"), 20),
    )
}

/// A service with 3 Golioth devices, scheduled every hour and due a minute ago.
async fn due_service(e: &Env, name: &str) -> Svc {
    let svc = e.service(name, json!({})).await;
    e.seed_remote(&svc, name, 3);
    e.schedule(&svc, 3600).await;
    e.app
        .admin()
        .await
        .execute(
            "UPDATE device_services SET next_sync_at = now() - interval '1 minute' WHERE id = $1",
            &[&svc.id],
        )
        .await
        .unwrap();
    assert!(runs(e, &svc).await.is_empty());
    svc
}

/// The service's runs, oldest first: status, params, finished_at (UTC, RFC 3339) if finished.
async fn runs(e: &Env, svc: &Svc) -> Vec<(String, Value, Option<DateTime<Utc>>)> {
    e.app
        .admin()
        .await
        .query(
            "SELECT status, params, to_char(finished_at AT TIME ZONE 'UTC', \
                    'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
             FROM sync_runs WHERE service_id = $1 ORDER BY created_at",
            &[&svc.id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let finished: Option<String> = r.get(2);
            (
                r.get(0),
                r.get(1),
                finished.map(|f| {
                    DateTime::parse_from_rfc3339(&f)
                        .unwrap()
                        .with_timezone(&Utc)
                }),
            )
        })
        .collect()
}

/// Devices of the service linked to a Golioth device (with a merge base), and their names.
async fn linked_names(e: &Env, svc: &Svc) -> Vec<String> {
    e.app
        .admin()
        .await
        .query(
            "SELECT d.name FROM device_service_assignments a JOIN devices d ON d.id = a.device_id \
             WHERE a.service_id = $1 AND a.external_device_id IS NOT NULL AND a.base IS NOT NULL \
               AND d.deleted_at IS NULL ORDER BY d.name",
            &[&svc.id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Seconds from now to the service's `next_sync_at` (negative: in the past).
async fn next_sync_in(e: &Env, svc: &Svc) -> f64 {
    e.app
        .admin()
        .await
        .query_one(
            "SELECT extract(epoch FROM next_sync_at - now())::float8 FROM device_services \
             WHERE id = $1",
            &[&svc.id],
        )
        .await
        .unwrap()
        .get(0)
}

const TERMINAL: [&str; 4] = ["completed", "completed_with_errors", "failed", "cancelled"];

#[tokio::test]
async fn a_due_service_is_synced_exactly_once_by_spin_cron_ticks() {
    if !runnable("a_due_service_is_synced_exactly_once_by_spin_cron_ticks") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let e = env().await;
    let svc = due_service(&e, "cron").await;
    let http = http_app(&e);
    let manifest = CronManifest::new();
    let token = e.app.vars()["internal_token"].clone();
    let cron = start_cron(e.app.vars(), &manifest.path(), &http.base_url(), &token);

    // The first ticks queue the run and process it.
    let deadline = Instant::now() + Duration::from_secs(180);
    let finished = loop {
        let rs = runs(&e, &svc).await;
        if let Some((status, _, Some(at))) = rs.first()
            && TERMINAL.contains(&status.as_str())
        {
            assert_eq!(status, "completed", "runs: {rs:?}\n{}", logs(http, &cron));
            break *at;
        }
        assert!(
            Instant::now() < deadline,
            "no run of the due service finished within 180 s; runs: {rs:?}; ticks: {:?}\n{}",
            ticks(http),
            logs(http, &cron)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Then at least three more ticks, each started after the run had finished.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let after = ticks(http).iter().filter(|t| t.started > finished).count();
        if after >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 3 ticks ({after}) after the run finished at {finished} within 90 s\n{}",
            logs(http, &cron)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all = ticks(http);
    let after = all.iter().filter(|t| t.started > finished).count();
    let cron_logs = logs(http, &cron);
    drop(cron);

    assert!(
        all.iter().all(|t| t.status == 200),
        "a tick was not answered 200: {all:?}\n{cron_logs}"
    );
    let rs = runs(&e, &svc).await;
    assert_eq!(
        rs.len(),
        1,
        "the ticks synced the service more than once: {rs:?}\n{cron_logs}"
    );
    assert_eq!(rs[0].0, "completed");
    assert_eq!(rs[0].1, json!({"scheduled": true}));
    let mut remote: Vec<String> = e
        .sim
        .device_ids(&svc.project)
        .iter()
        .filter_map(|id| e.sim.device(&svc.project, id))
        .map(|d| d.name)
        .collect();
    remote.sort();
    assert_eq!(remote.len(), 3);
    assert_eq!(linked_names(&e, &svc).await, remote);
    let next = next_sync_in(&e, &svc).await;
    assert!(
        next > 3000.0,
        "next_sync_at was not advanced by the interval: {next} s from now"
    );
    println!(
        "spin cron: {} ticks answered 200 ({after} started after the run finished at {finished}); \
         sync_runs for the service: {} ({}, params {}); devices linked: {}/{}; next sync in {:.0} s",
        all.len(),
        rs.len(),
        rs[0].0,
        rs[0].1,
        remote.len(),
        remote.len(),
        next
    );
}

#[tokio::test]
async fn cron_ticks_with_a_wrong_internal_token_are_refused_and_sync_nothing() {
    if !runnable("cron_ticks_with_a_wrong_internal_token_are_refused_and_sync_nothing") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let e = env().await;
    let svc = due_service(&e, "wrongtok").await;
    let http = http_app(&e);
    let manifest = CronManifest::new();
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    assert_ne!(wrong, e.app.vars()["internal_token"]);
    let cron = start_cron(e.app.vars(), &manifest.path(), &http.base_url(), &wrong);

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let refused = ticks(http).iter().filter(|t| t.status == 401).count();
        let reported = cron_401s(&cron);
        if refused >= 3 && reported >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 3 ticks refused with 401 within 90 s (HTTP app: {refused}, cron app: \
             {reported})\n{}",
            logs(http, &cron)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all = ticks(http);
    let reported = cron_401s(&cron);
    let cron_logs = logs(http, &cron);
    drop(cron);

    assert!(
        all.iter().all(|t| t.status == 401),
        "a tick with the wrong token was not answered 401: {all:?}\n{cron_logs}"
    );
    let rs = runs(&e, &svc).await;
    assert!(
        rs.is_empty(),
        "ticks with a wrong token synced the service: {rs:?}\n{cron_logs}"
    );
    assert!(linked_names(&e, &svc).await.is_empty());
    let next = next_sync_in(&e, &svc).await;
    assert!(next < 0.0, "next_sync_at moved: {next} s from now");

    // Control: the service was due, so one tick with the right token queues its run.
    let token = e.app.vars()["internal_token"].clone();
    let r = e
        .app
        .send(
            e.app
                .client
                .post(format!("{}/internal/tick", http.base_url()))
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after_control = runs(&e, &svc).await;
    assert_eq!(after_control.len(), 1, "{after_control:?}: {}", r.text());
    println!(
        "spin cron, wrong token: {} ticks answered 401 (the cron plugin reported {reported} \
         failures 'answered 401'); sync_runs for the due service: 0; then one tick with the right \
         token: 200, {} run ({})",
        all.len(),
        after_control.len(),
        after_control[0].0
    );
}
