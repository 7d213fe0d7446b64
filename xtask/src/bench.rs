//! `cargo xtask bench`: the benchmark harness (issue 9). Release build of the native host run as
//! its own process, a real Postgres, the Golioth simulator (in this process) with a per-request
//! latency, and a load generator process for webhooks. Prints one table and writes it as JSON.
//! Time is judged here and only here; tests never assert on speed. `--host spin` runs the
//! scenarios a second time under `spin up` of the same app and prints both side by side
//! (`bench_spin.rs`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use host::pgenv;
use host::simulator::{FaultRates, ProjectSpec, SeedSpec, SimOptions, Simulator, SimulatorHandle};
use host::spin_up::SpinApp;
use serde_json::{Value, json};
use uuid::Uuid;

const JWT_SECRET: &str = "bench-jwt-secret";
const INTERNAL_TOKEN: &str = "bench-internal-token";
const WEBHOOK_SECRET: &str = "bench-webhook-secret-0123456789";

/// Benchmark knobs (`cargo xtask bench --latency-ms 50 --sizes 1000,10000,100000`).
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub latency_ms: u64,
    pub sizes: Vec<usize>,
    pub webhook_rate: u64,
    pub webhook_seconds: u64,
    /// Seconds of the same load sent before the measured window and left out of it (the host's
    /// connection pool fills and its statements are prepared meanwhile).
    pub webhook_warmup: u64,
    /// Scenarios left out (`--skip baseline,webhook`), for quicker profiling runs.
    pub skip: Vec<String>,
    /// `--host spin`: run the scenarios on the native host and then under `spin up` of the same
    /// app, each with a fresh database and simulator, and print them side by side. `--host
    /// native` (the default) is the native run alone.
    pub spin: bool,
    /// `--spin-webhook-rate a,b,…`: the rates offered to the webhook under Spin (one row each;
    /// the native host is run at each of them too, beside its own `--webhook-rate`).
    pub spin_webhook_rates: Vec<u64>,
    /// `--lost-answers SHARE`: the simulator applies this share of Golioth writes and loses the
    /// answer (half as a 503, half as a dropped connection), to measure what resolving lost
    /// answers by looking costs. 0 (the default) measures the undisturbed path.
    pub lost_answers: f64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            latency_ms: 50,
            sizes: vec![1_000, 10_000, 100_000],
            webhook_rate: 2_000,
            webhook_seconds: 10,
            webhook_warmup: 2,
            skip: Vec::new(),
            spin: false,
            spin_webhook_rates: vec![1_000],
            lost_answers: 0.0,
        }
    }
}

impl BenchOptions {
    pub fn parse(args: &[String]) -> Result<BenchOptions> {
        let mut o = BenchOptions::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut next = || it.next().context("missing value");
            match a.as_str() {
                "--latency-ms" => o.latency_ms = next()?.parse()?,
                "--sizes" => {
                    o.sizes = next()?
                        .split(',')
                        .map(|s| s.trim().parse())
                        .collect::<Result<_, _>>()?
                }
                "--webhook-rate" => o.webhook_rate = next()?.parse()?,
                "--webhook-seconds" => o.webhook_seconds = next()?.parse()?,
                "--webhook-warmup" => o.webhook_warmup = next()?.parse()?,
                "--skip" => o.skip = next()?.split(',').map(|s| s.trim().to_owned()).collect(),
                "--host" => {
                    o.spin = match next()?.as_str() {
                        "native" => false,
                        "spin" => true,
                        other => bail!("--host native|spin, not {other}"),
                    }
                }
                "--spin-webhook-rate" => {
                    o.spin_webhook_rates = next()?
                        .split(',')
                        .map(|s| s.trim().parse())
                        .collect::<Result<_, _>>()?
                }
                "--lost-answers" => o.lost_answers = next()?.parse()?,
                other => bail!("unknown bench option {other}"),
            }
        }
        Ok(o)
    }
}

/// The host as a separate release process, so its memory and statements are its own.
struct HostProcess {
    child: Child,
    base: String,
    /// The host's shutdown report line, read from its stdout.
    shutdown: std::sync::mpsc::Receiver<String>,
}

impl HostProcess {
    fn start(binary: &PathBuf, env: &HashMap<String, String>) -> Result<HostProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new(binary)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--threads",
                "2",
            ])
            .args(["--tick-seconds", "0"])
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the host")?;
        let stdout = child.stdout.take().context("host stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // Wait for "listening on …".
        for line in lines.by_ref() {
            if line?.starts_with("listening on") {
                break;
            }
        }
        // Keep draining stdout in the background (request logs) and keep the last JSON event.
        // `BENCH_HOST_LOG=<file>` keeps the host's log lines (slice timings) for profiling.
        let mut keep = std::env::var_os("BENCH_HOST_LOG").and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        });
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(f) = keep.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if line.contains("\"event\":\"shutdown\"") {
                    let _ = tx.send(line);
                }
            }
        });
        Ok(HostProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            shutdown: rx,
        })
    }

    fn peak_rss_kib(&self) -> u64 {
        crate::bench_spin::peak_rss_kib(self.child.id())
    }

    /// Stop with SIGTERM and return (db statements, peak RSS KiB).
    fn stop(mut self) -> Result<(u64, u64)> {
        let peak = self.peak_rss_kib();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let line = self.shutdown.recv_timeout(Duration::from_secs(10)).ok();
        let statements = line
            .and_then(|l| serde_json::from_str::<Value>(&l).ok())
            .and_then(|v| v["db_statements"].as_u64())
            .unwrap_or(0);
        Ok((statements, peak))
    }
}

/// Which host a pass of the benchmark runs the product on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKind {
    Native,
    Spin,
}

impl HostKind {
    fn name(self) -> &'static str {
        match self {
            HostKind::Native => "native",
            HostKind::Spin => "spin",
        }
    }
}

/// The product under test: the native host as its own process, or `spin up` of the app.
enum Running {
    Native(HostProcess),
    Spin { app: SpinApp, base: String },
}

/// What a host used while it ran: the native host's own statement count (Spin reports none),
/// its peak RSS, and extra row fields: with `--host spin` the database's counters over the same
/// interval, and Spin's trigger process' own peak RSS.
struct Usage {
    statements: Option<u64>,
    peak_kib: u64,
    extra: Option<Value>,
}

impl Running {
    fn base(&self) -> &str {
        match self {
            Running::Native(h) => &h.base,
            Running::Spin { base, .. } => base,
        }
    }

    /// The processes whose CPU is the host's.
    fn procs(&self) -> crate::bench_spin::HostProcs {
        match self {
            Running::Native(h) => crate::bench_spin::HostProcs::Pid(h.child.id()),
            Running::Spin { app, .. } => crate::bench_spin::HostProcs::Group(app.pid()),
        }
    }

    fn stop(self) -> Result<Usage> {
        match self {
            Running::Native(h) => {
                let (statements, peak_kib) = h.stop()?;
                Ok(Usage {
                    statements: Some(statements),
                    peak_kib,
                    extra: None,
                })
            }
            Running::Spin { mut app, .. } => {
                // `spin up` and its `spin trigger http` child (which serves the requests).
                let (peak_kib, trigger_kib) = crate::bench_spin::spin_peak_rss_kib(app.pid());
                app.stop();
                Ok(Usage {
                    statements: None,
                    peak_kib,
                    extra: Some(json!({"spin_trigger_peak_rss_mib": trigger_kib / 1024})),
                })
            }
        }
    }
}

struct Bench {
    opts: BenchOptions,
    binary: PathBuf,
    env: HashMap<String, String>,
    admin_db: String,
    sim: SimulatorHandle,
    http: reqwest::Client,
    rows: Vec<Value>,
    /// `/proc/stat` CPU counters when the previous row was written (see [`cpu_times`]).
    cpu_mark: Option<(u64, u64)>,
    /// The host of the current pass.
    host: HostKind,
    /// `--host spin` only: the database's counters, read around each scenario.
    stats: Option<Arc<crate::bench_spin::PgStats>>,
}

/// All CPU time and the part of it stolen by the hypervisor (`/proc/stat`, clock ticks), or
/// `None` where that file does not exist. On a shared virtual machine stolen time slows every
/// scenario; each row reports how much of its interval was stolen so a slow run says why.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some((v.iter().take(8).sum(), *v.get(7)?))
}

fn mint(user: Uuid) -> Result<String> {
    host::dev::mint_jwt(
        JWT_SECRET,
        &user.to_string(),
        Duration::from_secs(24 * 3600),
    )
}

impl Bench {
    async fn org(&self, name: &str) -> Result<(Uuid, String)> {
        let db = pgenv::connect(&self.admin_db).await?;
        let org = Uuid::new_v4();
        let user = Uuid::new_v4();
        db.execute(
            "INSERT INTO organizations (id, name, slug) VALUES ($1, $2, $3)",
            &[&org, &name, &format!("{name}-{}", org.simple())],
        )
        .await?;
        db.execute(
            "INSERT INTO organization_members (organization_id, user_id, role) VALUES ($1, $2, 'owner')",
            &[&org, &user],
        )
        .await?;
        Ok((org, mint(user)?))
    }

    async fn service(&self, host: &Running, org: Uuid, jwt: &str, project: &str) -> Result<Uuid> {
        let r = self
            .http
            .post(format!("{}/api/v1/orgs/{org}/services", host.base()))
            .bearer_auth(jwt)
            .json(&json!({
                "name": format!("bench-{project}"),
                "config": {"project_id": project, "base_url": self.sim.base_url(),
                           "state_paths": {"battery": "battery", "signal": "signal", "location": "location"}},
                "api_key": format!("key-{project}"),
                "webhook_secret": WEBHOOK_SECRET,
            }))
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!("creating a service: {status} {v}");
        }
        Ok(v["id"].as_str().context("service id")?.parse()?)
    }

    /// Run a sync to completion through the API (re-posting resumes the running run).
    async fn sync(&self, host: &Running, org: Uuid, jwt: &str, svc: Uuid) -> Result<Value> {
        let url = format!("{}/api/v1/orgs/{org}/services/{svc}/sync", host.base());
        for _ in 0..10_000 {
            let r = self
                .http
                .post(&url)
                .bearer_auth(jwt)
                .json(&json!({"operation": "bidirectional"}))
                .send()
                .await?;
            let status = r.status().as_u16();
            let v: Value = r.json().await?;
            match (status, v["status"].as_str()) {
                (200, Some("completed")) => return Ok(v),
                (200, Some(other)) => bail!("sync ended {other}: {v}"),
                (202, _) => continue,
                _ => bail!("sync answered {status}: {v}"),
            }
        }
        bail!("sync did not finish")
    }

    fn project(&self, name: &str, devices: usize) -> Result<()> {
        self.sim
            .create_project(ProjectSpec::new(name, format!("key-{name}")))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.sim
            .seed(
                name,
                &SeedSpec {
                    count: devices,
                    name_prefix: name.into(),
                    tags: vec!["a".into(), "b".into(), "c".into()],
                    with_state: true,
                    // Reports well past the online threshold, so derived status is stable
                    // between runs and a no-op resync has nothing to change.
                    last_report: Some(chrono::Utc::now() - chrono::Duration::days(2)),
                    firmware_version: Some("1.0.0".into()),
                    ..SeedSpec::default()
                },
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    }

    /// Postgres time for N device rows in one bulk statement (rolled back).
    async fn bulk_insert_ms(&self, org: Uuid, n: usize) -> Result<f64> {
        let db = pgenv::connect(&self.admin_db).await?;
        let rows: Vec<Value> = (0..n)
            .map(|i| {
                json!({"name": format!("bulk-{i:06}"), "hardware_ids": [format!("hw-bulk-{i:06}")],
                       "tags": ["a"], "enabled": true})
            })
            .collect();
        let payload = Value::Array(rows);
        db.batch_execute("BEGIN").await?;
        let started = Instant::now();
        db.execute(
            "INSERT INTO devices (organization_id, name, hardware_ids, tags, enabled) \
             SELECT $1, x.name, x.hardware_ids, x.tags, x.enabled \
             FROM jsonb_to_recordset($2::jsonb) AS x(name text, hardware_ids text[], tags text[], enabled bool)",
            &[&org, &payload],
        )
        .await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        db.batch_execute("ROLLBACK").await?;
        Ok(ms)
    }

    /// Start the host of the current pass.
    fn start_host(&self) -> Result<Running> {
        Ok(match self.host {
            HostKind::Native => Running::Native(HostProcess::start(&self.binary, &self.env)?),
            HostKind::Spin => {
                let app = crate::bench_spin::start(&self.env)?;
                let base = app.base_url();
                Running::Spin { app, base }
            }
        })
    }

    /// `--host spin`: the database's counters once no session is left on it.
    async fn pg_mark(&self) -> Result<Option<crate::bench_spin::PgCounters>> {
        match &self.stats {
            Some(s) => {
                s.wait_idle().await?;
                Ok(Some(s.counters().await?))
            }
            None => Ok(None),
        }
    }

    /// `--host spin`: the counters' change since `before`, once the host's sessions are gone.
    async fn pg_since(
        &self,
        before: Option<crate::bench_spin::PgCounters>,
    ) -> Result<Option<Value>> {
        match (&self.stats, before) {
            (Some(s), Some(before)) => {
                s.wait_idle().await?;
                Ok(Some(crate::bench_spin::counters_json(
                    before,
                    s.counters().await?,
                )))
            }
            _ => Ok(None),
        }
    }

    /// A row with what its host used.
    fn row_used(&mut self, mut v: Value, usage: &Usage) {
        if let (Some(pg), Some(m)) = (
            usage.extra.as_ref().and_then(Value::as_object),
            v.as_object_mut(),
        ) {
            for (k, x) in pg {
                m.insert(k.clone(), x.clone());
            }
        }
        self.row(v);
    }

    fn row(&mut self, mut v: Value) {
        if self.stats.is_some() {
            v["host"] = json!(self.host.name());
        }
        let now = cpu_times();
        if let (Some((t0, s0)), Some((t1, s1))) = (self.cpu_mark, now)
            && t1 > t0
        {
            v["cpu_steal_pct"] =
                json!(((s1 - s0) as f64 * 1000.0 / (t1 - t0) as f64).round() / 10.0);
        }
        self.cpu_mark = now;
        println!("{v}");
        self.rows.push(v);
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// The listing pages the engine fetches at once.
fn list_concurrency() -> usize {
    shared::app::engine::PAGE_CONCURRENCY.max(1) as usize
}

/// The fields of two optional JSON objects in one.
fn merge(a: Option<Value>, b: Option<Value>) -> Option<Value> {
    match (a, b) {
        (Some(mut a), Some(Value::Object(b))) => {
            if let Some(m) = a.as_object_mut() {
                m.extend(b);
            }
            Some(a)
        }
        (a, None) => a,
        (None, b) => b,
        (Some(a), Some(_)) => Some(a),
    }
}

/// Start a fresh host (of the current pass), run `f` against it, stop it: (result, usage).
async fn with_host<T>(b: &Bench, f: impl AsyncFnOnce(&Running) -> Result<T>) -> Result<(T, Usage)> {
    let before = b.pg_mark().await?;
    let host = b.start_host()?;
    let out = f(&host).await;
    let mut usage = host.stop()?;
    usage.extra = merge(usage.extra, b.pg_since(before).await?);
    Ok((out?, usage))
}

/// First bidirectional syncs; returns the 10k organization (org, jwt, service, wall ms).
async fn first_syncs(b: &mut Bench) -> Result<Option<(Uuid, String, Uuid, f64)>> {
    let mut keep = None;
    // Under Spin the 100k size is left out (the native run has it).
    let sizes: Vec<usize> = match b.host {
        HostKind::Native => b.opts.sizes.clone(),
        HostKind::Spin => b
            .opts
            .sizes
            .iter()
            .copied()
            .filter(|n| *n <= 10_000)
            .collect(),
    };
    for n in sizes {
        let project = format!("bench{n}");
        b.project(&project, n)?;
        let (org, jwt) = b.org(&project).await?;
        let ((svc, result, wall, stats), usage) = with_host(b, async |host| {
            let svc = b.service(host, org, &jwt, &project).await?;
            b.sim.reset_stats();
            let started = Instant::now();
            let result = b.sync(host, org, &jwt, svc).await?;
            Ok((svc, result, started.elapsed(), b.sim.stats()))
        })
        .await?;
        let pages = n.div_ceil(100);
        let golioth_bound = pages.div_ceil(list_concurrency()) as f64 * b.opts.latency_ms as f64;
        let pg_bound = b.bulk_insert_ms(org, n).await?;
        let bound = golioth_bound + pg_bound;
        b.row_used(json!({
            "scenario": format!("first bidirectional sync, {n} devices"),
            "wall_ms": ms(wall), "golioth_requests": stats.requests, "db_statements": usage.statements,
            "peak_rss_mib": usage.peak_kib / 1024, "lower_bound_ms": (bound * 10.0).round() / 10.0,
            "golioth_bound_ms": golioth_bound, "pg_bulk_ms": (pg_bound * 10.0).round() / 10.0,
            "ratio_to_bound": ((wall.as_secs_f64() * 1000.0 / bound) * 100.0).round() / 100.0,
            "summary": result["summary"],
        }), &usage);
        if n == 10_000 {
            keep = Some((org, jwt, svc, wall.as_secs_f64() * 1000.0));
        }
    }
    Ok(keep)
}

async fn device_versions(b: &Bench, org: Uuid) -> Result<i64> {
    let db = pgenv::connect(&b.admin_db).await?;
    Ok(db
        .query_one(
            "SELECT coalesce(sum(version), 0)::int8 FROM devices WHERE organization_id = $1",
            &[&org],
        )
        .await?
        .get(0))
}

async fn resyncs(b: &mut Bench, org: Uuid, jwt: &str, svc: Uuid) -> Result<()> {
    // No-op resync.
    let before = device_versions(b, org).await?;
    let ((result, wall, stats), usage) = with_host(b, async |host| {
        b.sim.reset_stats();
        let started = Instant::now();
        let result = b.sync(host, org, jwt, svc).await?;
        Ok((result, started.elapsed(), b.sim.stats()))
    })
    .await?;
    let after = device_versions(b, org).await?;
    b.row_used(json!({
        "scenario": "no-op resync, 10000 devices",
        "wall_ms": ms(wall), "golioth_requests": stats.requests, "db_statements": usage.statements,
        "peak_rss_mib": usage.peak_kib / 1024,
        "golioth_writes": stats.writes, "local_device_writes": after - before,
        "summary": result["summary"],
    }), &usage);

    // 1 % changed on each side.
    let db = pgenv::connect(&b.admin_db).await?;
    db.execute(
        "UPDATE devices SET name = name || '-local' WHERE id IN \
         (SELECT id FROM devices WHERE organization_id = $1 ORDER BY name LIMIT 100)",
        &[&org],
    )
    .await?;
    drop(db);
    let ids = b.sim.device_ids("bench10000");
    for id in ids.iter().rev().take(100) {
        b.sim
            .console_patch_device("bench10000", id, &json!({"enabled": false}))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let ((result, wall, stats), usage) = with_host(b, async |host| {
        b.sim.reset_stats();
        let started = Instant::now();
        let result = b.sync(host, org, jwt, svc).await?;
        Ok((result, started.elapsed(), b.sim.stats()))
    })
    .await?;
    b.row_used(json!({
        "scenario": "resync, 1% changed on each side, 10000 devices",
        "wall_ms": ms(wall), "golioth_requests": stats.requests, "db_statements": usage.statements,
        "peak_rss_mib": usage.peak_kib / 1024, "golioth_writes": stats.writes,
        "summary": result["summary"],
    }), &usage);
    Ok(())
}

/// Devices of the first-export scenario: every one is a Golioth create (and a fifth a disable
/// after it), at most `REMOTE_CONCURRENCY` (8) in flight, so 2,000 already take 12.5 s of
/// simulated latency at 50 ms.
const EXPORT_DEVICES: usize = 2_000;

/// First export: 2,000 local devices assigned to a service whose Golioth project is empty, one
/// sync. Every create is written ahead (the assignment's `pending_create`, one statement per
/// slice) before it is sent.
async fn first_export(b: &mut Bench) -> Result<()> {
    let n = EXPORT_DEVICES;
    let project = format!("export{n}");
    b.project(&project, 0)?;
    let (org, jwt) = b.org(&project).await?;
    let ((result, wall, stats), usage) = with_host(b, async |host| {
        let svc = b.service(host, org, &jwt, &project).await?;
        let db = pgenv::connect(&b.admin_db).await?;
        db.execute(
            "WITH ins AS ( \
                 INSERT INTO devices (organization_id, name, hardware_ids, tags, enabled) \
                 SELECT $1, 'exp-' || lpad(i::text, 6, '0'), \
                        ARRAY['hw-exp-' || lpad(i::text, 6, '0')], ARRAY['a'], i % 5 <> 4 \
                 FROM generate_series(0, $2::int - 1) AS i RETURNING id) \
             INSERT INTO device_service_assignments (organization_id, device_id, service_id) \
             SELECT $1, id, $3 FROM ins",
            &[&org, &(n as i32), &svc],
        )
        .await?;
        drop(db);
        b.sim.reset_stats();
        let started = Instant::now();
        let result = b.sync(host, org, &jwt, svc).await?;
        Ok((result, started.elapsed(), b.sim.stats()))
    })
    .await?;
    // Creates, then the disables, each at REMOTE_CONCURRENCY in flight.
    let writes = n + n / 5;
    let bound = writes.div_ceil(8) as f64 * b.opts.latency_ms as f64;
    b.row_used(json!({
        "scenario": format!("first export, {n} devices (each a Golioth create)"),
        "wall_ms": ms(wall), "golioth_requests": stats.requests, "db_statements": usage.statements,
        "peak_rss_mib": usage.peak_kib / 1024, "lower_bound_ms": bound,
        "ratio_to_bound": ((wall.as_secs_f64() * 1000.0 / bound) * 100.0).round() / 100.0,
        "golioth_writes": stats.writes, "summary": result["summary"],
    }), &usage);
    Ok(())
}

/// The original's approach on the same 10,000 devices: pages fetched one after another, then
/// one read and one write statement per device.
async fn baseline(b: &mut Bench, ours_ms: f64) -> Result<()> {
    let (org, _) = b.org("baseline").await?;
    let db = pgenv::connect(&b.admin_db).await?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut page = 0;
    let mut seen = 0usize;
    loop {
        let v: Value = client
            .get(format!(
                "{}/v1/projects/bench10000/devices?page={page}&perPage=100",
                b.sim.base_url()
            ))
            .header("x-api-key", "key-bench10000")
            .send()
            .await?
            .json()
            .await?;
        let list = v["list"].as_array().cloned().unwrap_or_default();
        for d in &list {
            let name = d["name"].as_str().unwrap_or_default();
            let existing = db
                .query_opt(
                    "SELECT id FROM devices WHERE organization_id = $1 AND name = $2",
                    &[&org, &name],
                )
                .await?;
            match existing {
                Some(row) => {
                    let id: Uuid = row.get(0);
                    db.execute(
                        "UPDATE devices SET enabled = $2 WHERE id = $1",
                        &[&id, &true],
                    )
                    .await?;
                }
                None => {
                    db.execute(
                        "INSERT INTO devices (organization_id, name) VALUES ($1, $2)",
                        &[&org, &name],
                    )
                    .await?;
                }
            }
        }
        seen += list.len();
        if list.len() < 100 {
            break;
        }
        page += 1;
    }
    let wall = started.elapsed();
    b.row(json!({
        "scenario": "per-device baseline (1 read + 1 write per device), 10000 devices",
        "wall_ms": ms(wall), "devices": seen,
        "ratio_baseline_to_ours": ((wall.as_secs_f64() * 1000.0 / ours_ms) * 10.0).round() / 10.0,
    }));
    Ok(())
}

async fn webhooks(b: &mut Bench, org: Uuid, svc: Uuid) -> Result<()> {
    let db = pgenv::connect(&b.admin_db).await?;
    let ids: Vec<String> = db
        .query(
            "SELECT external_device_id FROM device_service_assignments \
             WHERE organization_id = $1 AND external_device_id IS NOT NULL LIMIT 1000",
            &[&org],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(db);
    if ids.is_empty() {
        bail!("no linked devices for the webhook benchmark");
    }
    let ids_file = std::env::temp_dir().join(format!("bench-ids-{}.txt", Uuid::new_v4()));
    std::fs::write(&ids_file, ids.join("\n"))?;
    // With `--host spin` the native host also runs at each Spin rate, so every Spin row has a
    // native row at the same offered rate beside it.
    let rates = match (b.stats.is_some(), b.host) {
        (false, _) => vec![b.opts.webhook_rate],
        (true, HostKind::Native) => {
            let mut r = vec![b.opts.webhook_rate];
            for x in &b.opts.spin_webhook_rates {
                if !r.contains(x) {
                    r.push(*x);
                }
            }
            r
        }
        (true, HostKind::Spin) => b.opts.spin_webhook_rates.clone(),
    };
    let mut result = Ok(());
    for rate in rates {
        result = webhook_run(b, svc, rate, &ids_file).await;
        if result.is_err() {
            break;
        }
    }
    let _ = std::fs::remove_file(&ids_file);
    result
}

/// One webhook run: a fresh host, the load generator at `rate` deliveries/s, one row. With
/// `--host spin` the row also says where the CPU went, how many Postgres sessions the host held
/// and opened, and which errors it answered.
async fn webhook_run(b: &mut Bench, svc: Uuid, rate: u64, ids_file: &Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    let before = b.pg_mark().await?;
    let host = b.start_host()?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "loadgen",
        "--url",
        &format!("{}/webhooks/golioth/{svc}", host.base()),
    ])
    .args(["--rate", &rate.to_string()])
    .args(["--seconds", &b.opts.webhook_seconds.to_string()])
    .args(["--warmup", &b.opts.webhook_warmup.to_string()])
    .args(["--devices", &ids_file.to_string_lossy()])
    .args(["--header", &format!("x-webhook-token:{WEBHOOK_SECRET}")])
    .args(["--project", "bench10000"]);
    let (out, load) = match &b.stats {
        None => (cmd.output().context("running the load generator"), None),
        Some(stats) => {
            let child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("running the load generator")?;
            let sampler =
                crate::bench_spin::Sampler::start(stats.clone(), host.procs(), child.id());
            let out = child.wait_with_output();
            let samples = sampler.finish().await;
            let from = b.opts.webhook_warmup as f64;
            let load = crate::bench_spin::summarize(
                &samples,
                from,
                from + b.opts.webhook_seconds as f64,
                crate::bench_spin::clk_tck(),
            );
            (out.context("running the load generator"), Some(load))
        }
    };
    let mut usage = host.stop()?;
    usage.extra = merge(usage.extra, b.pg_since(before).await?);
    let out = out?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "load generator output: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let mut row = json!({
        "scenario": format!("webhook ingestion at {rate} deliveries/s offered"),
        "delivered_per_s": v["achieved_per_s"], "p50_ms": v["p50_ms"], "p99_ms": v["p99_ms"],
        "errors": v["errors"], "sent": v["sent"], "warmup_sent": v["warmup_sent"],
        "db_statements": usage.statements,
        "peak_rss_mib": usage.peak_kib / 1024,
    });
    if let Some(load) = load {
        row["offered_per_s"] = json!(rate);
        row["status"] = v["status"].clone();
        row["transport_errors"] = v["transport_errors"].clone();
        row["max_in_flight"] = v["max_in_flight"].clone();
        row["load"] = load;
    }
    b.row_used(row, &usage);
    Ok(())
}

fn print_table(rows: &[Value]) {
    println!(
        "\n| scenario | wall ms | Golioth requests | DB statements | peak RSS MiB | lower bound ms | ratio | writes G/L | other |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let f = |k: &str| match &r[k] {
            Value::Null => "".to_owned(),
            v => v.to_string(),
        };
        let other = [
            "ratio_baseline_to_ours",
            "delivered_per_s",
            "p50_ms",
            "p99_ms",
            "errors",
            "db_transactions",
            "pg_sessions_opened",
            "cpu_steal_pct",
        ]
        .iter()
        .filter(|k| !r[**k].is_null())
        .map(|k| format!("{k}={}", r[*k]))
        .collect::<Vec<_>>()
        .join(" ");
        let writes = if r["golioth_writes"].is_null() {
            String::new()
        } else {
            format!("{}/{}", f("golioth_writes"), f("local_device_writes"))
        };
        let spin = if r["host"] == "spin" { " [spin]" } else { "" };
        println!(
            "| {}{spin} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r["scenario"].as_str().unwrap_or(""),
            f("wall_ms"),
            f("golioth_requests"),
            f("db_statements"),
            f("peak_rss_mib"),
            f("lower_bound_ms"),
            f("ratio_to_bound"),
            writes,
            other
        );
    }
}

/// `cargo xtask` is a debug build, but the simulator and the load generator run inside this
/// process: build the host and xtask in release and hand the benchmark to the release xtask, so
/// nothing measured runs unoptimized.
pub fn run(args: &[String], root: &std::path::Path, target: &std::path::Path) -> Result<()> {
    let opts = BenchOptions::parse(args)?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "golioth-sync-host",
            "--bin",
            "golioth-sync",
            "-p",
            "xtask",
            "--bin",
            "xtask",
        ])
        .status()?;
    if !status.success() {
        bail!("release build failed");
    }
    if opts.spin {
        // What spin.toml's component sources point at.
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(root)
            .args(["build", "--target", "wasm32-wasip2", "--release"]);
        for p in crate::bench_spin::WASM_PACKAGES {
            c.args(["-p", p]);
        }
        if !c.status()?.success() {
            bail!("wasm build of the components failed");
        }
    }
    if cfg!(debug_assertions) {
        let status = Command::new(target.join("release/xtask"))
            .current_dir(root)
            .arg("bench")
            .args(args)
            .status()
            .context("starting the release xtask")?;
        if !status.success() {
            bail!("benchmark failed");
        }
        return Ok(());
    }
    // `BENCH_HOST_BIN=<file>`: another build of the host, for A/B runs against the same
    // simulator, database and load generator.
    let binary = std::env::var_os("BENCH_HOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("release/golioth-sync"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let started = Instant::now();
        let server = pgenv::locate().await?;
        let db_name = "golioth_sync_bench";
        let (admin_db, sim, env) = prepare(&server, db_name, &opts).await?;
        let stats = if opts.spin {
            Some(Arc::new(
                crate::bench_spin::PgStats::connect(&server.admin_url, db_name).await?,
            ))
        } else {
            None
        };
        let mut b = Bench {
            opts,
            binary,
            env,
            admin_db,
            sim,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            rows: Vec::new(),
            cpu_mark: cpu_times(),
            host: HostKind::Native,
            stats,
        };
        let skip = b.opts.skip.clone();
        let run = |name: &str| !skip.iter().any(|s| s == name);
        // `--skip native` (with `--host spin`): only the Spin pass, for quicker iterations.
        let native = run("native") || !b.opts.spin;
        if !native {
            println!("native pass skipped (--skip native)");
        } else if let Some((org, jwt, svc, ours_ms)) = first_syncs(&mut b).await? {
            if run("resync") {
                resyncs(&mut b, org, &jwt, svc).await?;
            }
            if run("export") {
                first_export(&mut b).await?;
            }
            if run("baseline") {
                baseline(&mut b, ours_ms).await?;
            }
            if run("webhook") {
                webhooks(&mut b, org, svc).await?;
            }
        }
        if b.opts.spin {
            // The same scenarios under `spin up`, from the same starting point: a fresh bench
            // database and a fresh simulator, so its first syncs are first syncs too.
            b.sim.shutdown();
            let (admin_db, sim, env) = prepare(&server, db_name, &b.opts).await?;
            (b.admin_db, b.sim, b.env, b.host) = (admin_db, sim, env, HostKind::Spin);
            b.cpu_mark = cpu_times();
            println!(
                "\nunder {}",
                host::spin_up::spin_version().unwrap_or_else(|| "spin".into())
            );
            if let Some((org, jwt, svc, _)) = first_syncs(&mut b).await? {
                if run("resync") {
                    resyncs(&mut b, org, &jwt, svc).await?;
                }
                if run("export") {
                    first_export(&mut b).await?;
                }
                if run("webhook") {
                    webhooks(&mut b, org, svc).await?;
                }
            }
        }
        print_table(&b.rows);
        if b.opts.spin {
            crate::bench_spin::print_comparison(&b.rows);
        }
        let out = root.join("bench-results");
        std::fs::create_dir_all(&out)?;
        let (command, file) = if b.opts.spin {
            ("cargo xtask bench --host spin", "latest-spin.json")
        } else {
            ("cargo xtask bench", "latest.json")
        };
        let mut doc = json!({
            "command": command,
            "latency_ms": b.opts.latency_ms,
            "list_concurrency": list_concurrency(),
            "machine": machine(),
            "rows": b.rows,
            "total_seconds": started.elapsed().as_secs(),
        });
        if b.opts.spin {
            doc["spin"] = json!(host::spin_up::spin_version());
            doc["args"] = json!(args);
        }
        std::fs::write(out.join(file), serde_json::to_vec_pretty(&doc)?)?;
        println!(
            "\nwritten to bench-results/{file} in {}s",
            started.elapsed().as_secs()
        );
        Ok(())
    })
}

/// A fresh bench database (migrated; the application role's password set), a fresh simulator
/// with the options' latency (and lost answers), and the application variables as
/// `SPIN_VARIABLE_<NAME>`.
async fn prepare(
    server: &pgenv::PgServer,
    db_name: &str,
    opts: &BenchOptions,
) -> Result<(String, SimulatorHandle, HashMap<String, String>)> {
    let admin = pgenv::connect(&server.admin_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await?;
    let admin_db = pgenv::with_database(&server.admin_url, db_name)?;
    host::migrate::apply(&admin_db).await?;
    pgenv::connect(&admin_db)
        .await?
        .batch_execute("ALTER ROLE golioth_sync_app PASSWORD 'bench'")
        .await?;
    let sim = Simulator::start(SimOptions {
        request_log_capacity: 0,
        ..SimOptions::default()
    })
    .await?;
    sim.set_latency(Duration::from_millis(opts.latency_ms));
    if opts.lost_answers > 0.0 {
        sim.set_fault_rates(FaultRates {
            seed: 7,
            lost_unavailable: opts.lost_answers / 2.0,
            lost_dropped: opts.lost_answers / 2.0,
            ..FaultRates::default()
        });
    }
    let env: HashMap<String, String> = [
        ("db_host", pgenv::host_port(&server.admin_url)?),
        ("db_name", db_name.to_owned()),
        ("db_password", "bench".to_owned()),
        ("jwt_secret", JWT_SECRET.to_owned()),
        ("encryption_key", host::dev::DEV_ENCRYPTION_KEY.to_owned()),
        ("internal_token", INTERNAL_TOKEN.to_owned()),
        ("golioth_base_url", sim.base_url()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("SPIN_VARIABLE_{}", k.to_ascii_uppercase()), v))
    .collect();
    Ok((admin_db, sim, env))
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    json!({"cpus": cpus, "cpu": model, "memory": mem})
}

/// The webhook load generator, run as its own process: an open loop that sends at a fixed rate
/// and records each delivery's latency.
pub fn loadgen(args: &[String]) -> Result<()> {
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
            .with_context(|| format!("loadgen needs {k}"))
    };
    let url = get("--url")?;
    let rate: u64 = get("--rate")?.parse()?;
    let seconds: u64 = get("--seconds")?.parse()?;
    let warmup: u64 = get("--warmup").map_or(Ok(0), |w| w.parse())?;
    let devices: Vec<String> = std::fs::read_to_string(get("--devices")?)?
        .lines()
        .map(str::to_owned)
        .collect();
    let (hk, hv) = get("--header")?
        .split_once(':')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .context("--header name:value")?;
    let project = get("--project")?;
    // Delivery ids unique to this run, so a rerun against the same database is not all duplicates.
    let run = Uuid::new_v4().simple().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .timeout(Duration::from_secs(10))
            .build()?;
        // The first `warmup` seconds are sent at the same rate and left out of every number.
        let skipped = rate * warmup;
        let total = skipped + rate * seconds;
        let started = tokio::time::Instant::now();
        let measured_from = started + Duration::from_secs(warmup);
        let mut tasks = Vec::with_capacity(total as usize);
        // Requests sent and not yet answered, and the most there ever were at once.
        let in_flight = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let max_in_flight = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for i in 0..total {
            let at = started + Duration::from_nanos(i * 1_000_000_000 / rate);
            tokio::time::sleep_until(at).await;
            let client = client.clone();
            let url = url.clone();
            let device = devices[(i as usize) % devices.len()].clone();
            let (hk, hv, project, run) = (hk.clone(), hv.clone(), project.clone(), run.clone());
            let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
            tasks.push(tokio::spawn(async move {
                use std::sync::atomic::Ordering::Relaxed;
                let now = in_flight.fetch_add(1, Relaxed) + 1;
                max_in_flight.fetch_max(now, Relaxed);
                // Latency counts from the scheduled send time, so a load generator running late
                // cannot hide queueing (no coordinated omission).
                let sent = at;
                let body = json!({"battery": (i % 100) as i64, "seq": i, "ts": chrono::Utc::now().to_rfc3339()});
                let r = client
                    .post(&url)
                    .header(hk, hv)
                    .header("content-type", "application/json")
                    .header("ce-source", &device)
                    .header("ce-subject", &project)
                    .header("ce-type", "io.golioth.data.v1/.s/sensor")
                    .header("ce-id", format!("bench-{run}-{i}"))
                    .body(body.to_string())
                    .send()
                    .await;
                in_flight.fetch_sub(1, Relaxed);
                // The HTTP status, or what kind of transport error there was instead.
                let outcome = match &r {
                    Ok(resp) => Ok(resp.status().as_u16()),
                    Err(e) if e.is_timeout() => Err("timeout"),
                    Err(e) if e.is_connect() => Err("connect"),
                    Err(_) => Err("other"),
                };
                (sent.elapsed(), outcome)
            }));
        }
        let mut latencies = Vec::with_capacity(tasks.len());
        let mut errors = 0u64;
        let mut statuses: std::collections::BTreeMap<String, u64> = Default::default();
        let mut transport: std::collections::BTreeMap<&str, u64> =
            [("connect", 0), ("timeout", 0), ("other", 0)].into_iter().collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let (d, outcome) = t.await?;
            if (i as u64) < skipped {
                continue;
            }
            match outcome {
                Ok(status) => {
                    if !(200..300).contains(&status) {
                        errors += 1;
                    }
                    *statuses.entry(status.to_string()).or_default() += 1;
                }
                Err(kind) => {
                    errors += 1;
                    *transport.entry(kind).or_default() += 1;
                }
            }
            latencies.push(d);
        }
        let elapsed = measured_from.elapsed();
        let total = total - skipped;
        latencies.sort();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| ms(*d))
        };
        println!(
            "{}",
            json!({"sent": total, "warmup_sent": skipped, "errors": errors,
                   "achieved_per_s": ((total - errors) as f64 / elapsed.as_secs_f64()).round(),
                   "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                   "status": statuses, "transport_errors": transport,
                   "max_in_flight": max_in_flight.load(std::sync::atomic::Ordering::Relaxed)})
        );
        Ok(())
    })
}
