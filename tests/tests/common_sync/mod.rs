//! Helpers shared by the sync engine, runs and tick tests: an app wired to a Golioth simulator,
//! an organization with members, services on simulator projects, local devices, snapshots of
//! both sides for "same end state" comparisons, and an in-process tick with explicit `now`.
// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use harness::{AppOptions, ENCRYPTION_KEY, INTERNAL_TOKEN, JWT_SECRET, TestApp, TestResponse};
use host::simulator::{ProjectSpec, SeedSpec, SimOptions, Simulator, SimulatorHandle};
use serde_json::{Value, json};
use shared::app::engine::TickOutcome;
use shared::base::ctx::Ctx;
use shared::runtime::native::{PgPool, ReqwestHttp, SystemClock};
use uuid::Uuid;

/// An app, a simulator, and one organization with a member, an admin and a viewer.
pub struct Env {
    pub app: TestApp,
    pub sim: SimulatorHandle,
    pub org: Uuid,
    pub admin: String,
    pub member: String,
    pub viewer: String,
    pool: PgPool,
    http: ReqwestHttp,
}

/// A service on its own simulator project.
#[derive(Debug, Clone)]
pub struct Svc {
    pub id: Uuid,
    pub project: String,
    pub api_key: String,
}

pub async fn env() -> Env {
    env_with(&[]).await
}

/// `vars` override application variables (e.g. `slice_budget_ms`).
pub async fn env_with(vars: &[(&str, &str)]) -> Env {
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let mut v: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.insert("golioth_base_url".into(), sim.base_url());
    let app = harness::spawn_app_with(AppOptions { vars: v }).await;
    let org = app.seed_org("acme").await;
    let admin = app.jwt(app.seed_member(org, "admin").await);
    let member = app.jwt(app.seed_member(org, "member").await);
    let viewer = app.jwt(app.seed_member(org, "viewer").await);
    let pool = PgPool::new(&app.app_db_url, 32).unwrap();
    Env {
        app,
        sim,
        org,
        admin,
        member,
        viewer,
        pool,
        http: ReqwestHttp::default(),
    }
}

impl Env {
    pub fn base(&self) -> String {
        format!("/api/v1/orgs/{}", self.org)
    }

    /// A simulator project and a service on it (`config` is merged into the service config).
    pub async fn service(&self, name: &str, config: Value) -> Svc {
        let project = format!("proj-{name}");
        let api_key = format!("key-{name}-0001");
        self.sim
            .create_project(ProjectSpec::new(&project, &api_key))
            .unwrap();
        let mut cfg = json!({"project_id": project, "base_url": self.sim.base_url()});
        if let (Some(c), Some(extra)) = (cfg.as_object_mut(), config.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        let r = self
            .app
            .post(
                &format!("{}/services", self.base()),
                Some(&self.admin),
                &json!({"name": name, "config": cfg, "api_key": api_key}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        Svc {
            id: r.json()["id"].as_str().unwrap().parse().unwrap(),
            project,
            api_key,
        }
    }

    /// Turn on scheduled syncs of `svc` every `interval_seconds` (through the API, as an admin).
    pub async fn schedule(&self, svc: &Svc, interval_seconds: u32) {
        let r = self
            .app
            .request(
                "PATCH",
                &format!("{}/services/{}", self.base(), svc.id),
                Some(&self.admin),
                Some(&json!({"sync_enabled": true, "sync_interval_seconds": interval_seconds})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// Seed `n` Golioth devices named `{prefix}-000000…` with tags `t1`/`t2`.
    pub fn seed_remote(&self, svc: &Svc, prefix: &str, n: usize) -> Vec<String> {
        self.sim
            .seed(
                &svc.project,
                &SeedSpec {
                    count: n,
                    name_prefix: prefix.into(),
                    tags: vec!["t1".into(), "t2".into()],
                    ..SeedSpec::default()
                },
            )
            .unwrap()
    }

    /// Insert `n` local devices `{prefix}-000000…` (hardware id `hw-{prefix}-…`, tag `local`,
    /// every fifth disabled) and assign them to `svc`. Returns their ids in name order.
    pub async fn seed_local(&self, svc: &Svc, prefix: &str, n: usize) -> Vec<Uuid> {
        let db = self.app.admin().await;
        let rows = db
            .query(
                "WITH ins AS ( \
                     INSERT INTO devices (organization_id, name, hardware_ids, tags, enabled) \
                     SELECT $1, $2 || '-' || lpad(i::text, 6, '0'), \
                            ARRAY['hw-' || $2 || '-' || lpad(i::text, 6, '0')], ARRAY['local'], \
                            i % 5 <> 4 \
                     FROM generate_series(0, $3::int - 1) AS i RETURNING id, name), \
                 asg AS (INSERT INTO device_service_assignments (organization_id, device_id, service_id) \
                         SELECT $1, id, $4 FROM ins) \
                 SELECT id FROM ins ORDER BY name",
                &[&self.org, &prefix, &(n as i32), &svc.id],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    pub async fn sync(&self, svc: &Svc, body: Value) -> TestResponse {
        self.app
            .post(
                &format!("{}/services/{}/sync", self.base(), svc.id),
                Some(&self.member),
                &body,
            )
            .await
    }

    /// POST sync until the run finishes (a small slice budget answers 202 several times).
    pub async fn sync_done(&self, svc: &Svc, body: Value) -> Value {
        for _ in 0..200 {
            let r = self.sync(svc, body.clone()).await;
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
        panic!("the run did not finish");
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.app
            .get(&format!("{}{path}", self.base()), Some(&self.viewer))
            .await
    }

    /// The local side of `svc`: name → (enabled, tags, hardware ids, deleted, Golioth id, has base).
    pub async fn local_state(&self, svc: &Svc) -> BTreeMap<String, Value> {
        let db = self.app.admin().await;
        let rows = db
            .query(
                "SELECT d.name, d.enabled, d.tags, d.hardware_ids, d.deleted_at IS NOT NULL AS deleted, \
                        a.external_device_id, a.base IS NOT NULL AS has_base, a.sync_status, \
                        a.device_id IS NOT NULL AS assigned \
                 FROM devices d \
                 LEFT JOIN device_service_assignments a ON a.device_id = d.id AND a.service_id = $2 \
                 WHERE d.organization_id = $1 ORDER BY d.name",
                &[&self.org, &svc.id],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                let mut tags: Vec<String> = r.get(2);
                tags.sort();
                let mut hw: Vec<String> = r.get(3);
                hw.sort();
                let ext: Option<String> = r.get(5);
                let remote_name = ext
                    .as_deref()
                    .and_then(|e| self.sim.device(&svc.project, e))
                    .map(|d| d.name);
                (
                    r.get::<_, String>(0),
                    json!({
                        "enabled": r.get::<_, bool>(1), "tags": tags, "hardware_ids": hw,
                        "deleted": r.get::<_, bool>(4), "linked_to": remote_name,
                        "linked": ext.is_some(), "has_base": r.get::<_, bool>(6),
                        "sync_status": r.get::<_, Option<String>>(7),
                        "assigned": r.get::<_, bool>(8),
                    }),
                )
            })
            .collect()
    }

    /// The Golioth side of `svc`: name → (enabled, tag names, hardware ids).
    pub fn remote_state(&self, svc: &Svc) -> BTreeMap<String, Value> {
        let tag_names = self.tag_names(svc);
        self.sim
            .device_ids(&svc.project)
            .iter()
            .filter_map(|id| self.sim.device(&svc.project, id))
            .map(|d| {
                let mut tags: Vec<String> = d
                    .tag_ids
                    .iter()
                    .map(|t| tag_names.get(t).cloned().unwrap_or_else(|| t.clone()))
                    .collect();
                tags.sort();
                let mut hw = d.hardware_ids.clone();
                hw.sort();
                (
                    d.name.clone(),
                    json!({"enabled": d.enabled, "tags": tags, "hardware_ids": hw}),
                )
            })
            .collect()
    }

    fn tag_names(&self, svc: &Svc) -> HashMap<String, String> {
        ["t1", "t2", "local", "extra", "new-tag"]
            .iter()
            .filter_map(|n| {
                self.sim
                    .tag_id(&svc.project, n)
                    .map(|id| (id, (*n).to_owned()))
            })
            .collect()
    }

    /// What "no writes" is measured by on the database side: device versions, device log rows,
    /// assignment and conflict rows.
    pub async fn db_fingerprint(&self) -> Value {
        let db = self.app.admin().await;
        let row = db
            .query_one(
                "SELECT (SELECT coalesce(sum(version), 0)::int8 FROM devices WHERE organization_id = $1), \
                        (SELECT count(*) FROM devices WHERE organization_id = $1), \
                        (SELECT count(*) FROM golioth_sync_log WHERE organization_id = $1 \
                           AND device_id IS NOT NULL), \
                        (SELECT coalesce(max(updated_at)::text, '') FROM device_service_assignments \
                           WHERE organization_id = $1), \
                        (SELECT count(*) FROM device_conflicts WHERE organization_id = $1), \
                        (SELECT coalesce(max(updated_at)::text, '') FROM device_conflicts \
                           WHERE organization_id = $1)",
                &[&self.org],
            )
            .await
            .unwrap();
        json!({
            "version_sum": row.get::<_, i64>(0), "devices": row.get::<_, i64>(1),
            "device_log_rows": row.get::<_, i64>(2), "assignments_updated": row.get::<_, String>(3),
            "conflicts": row.get::<_, i64>(4), "conflicts_updated": row.get::<_, String>(5),
        })
    }

    /// The settings a tick needs, as the host would render them.
    pub fn config(&self) -> HashMap<String, String> {
        [
            ("jwt_secret", JWT_SECRET.to_owned()),
            ("encryption_key", ENCRYPTION_KEY.to_owned()),
            ("internal_token", INTERNAL_TOKEN.to_owned()),
            ("golioth_base_url", self.sim.base_url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// One scheduler step at `now` with `budget`: in-process on the native host (the app role's
    /// connection, like the host). Under Spin it is a real `POST /internal/tick` to the app,
    /// which ticks at the real time with the configured budget: a test that needs another `now`
    /// must be marked native-only.
    pub async fn tick(&self, now: DateTime<Utc>, budget: Duration) -> TickOutcome {
        if harness::on_spin() {
            let skew = (now - Utc::now()).num_milliseconds().abs();
            assert!(
                skew < 5_000,
                "a tick at {now} cannot be sent to Spin: mark the test native-only"
            );
            let _ = budget;
            let r = self
                .app
                .send(
                    self.app
                        .client
                        .post(format!("{}/internal/tick", self.app.base_url))
                        .bearer_auth(INTERNAL_TOKEN),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            return serde_json::from_slice(&r.body)
                .unwrap_or_else(|e| panic!("tick answer: {e}: {}", r.text()));
        }
        let db = self.pool.lazy();
        let config = self.config();
        let ctx = Ctx::new(&db, &self.http, &SystemClock, &config);
        shared::app::engine::tick(&ctx, now, budget).await
    }

    /// A run row, read as the owner.
    pub async fn run_row(&self, run: Uuid) -> Value {
        let db = self.app.admin().await;
        let r = db
            .query_one(
                "SELECT status, attempt, max_attempts, run_after::text, error, stats, phase, \
                        lease_owner, to_char(run_after AT TIME ZONE 'UTC', \
                        'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
                 FROM sync_runs WHERE id = $1",
                &[&run],
            )
            .await
            .unwrap();
        json!({
            "status": r.get::<_, String>(0), "attempt": r.get::<_, i32>(1),
            "max_attempts": r.get::<_, i32>(2), "error": r.get::<_, Option<String>>(4),
            "stats": r.get::<_, Value>(5), "phase": r.get::<_, Option<String>>(6),
            "lease_owner": r.get::<_, Option<String>>(7), "run_after": r.get::<_, String>(8),
        })
    }

    /// Device list requests the simulator answered for a project's listing pages.
    pub fn list_requests(&self, svc: &Svc) -> Vec<u64> {
        let path = format!("/v1/projects/{}/devices", svc.project);
        self.sim
            .requests()
            .iter()
            .filter(|r| r.kind == "devices.list" && r.path == path && r.status == Some(200))
            .map(|r| {
                r.query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("page="))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }
}

pub fn uuid(v: &Value) -> Uuid {
    v.as_str().unwrap().parse().unwrap()
}
