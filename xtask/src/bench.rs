//! `cargo xtask bench`: the benchmark harness (issue 9). Release build of the native host run as
//! its own process, a real Postgres, the Golioth simulator (in this process) with a per-request
//! latency, and a load generator process for webhooks. Prints one table and writes it as JSON.
//! Time is judged here and only here; tests never assert on speed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use host::pgenv;
use host::simulator::{ProjectSpec, SeedSpec, SimOptions, Simulator, SimulatorHandle};
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
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
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

    async fn service(
        &self,
        host: &HostProcess,
        org: Uuid,
        jwt: &str,
        project: &str,
    ) -> Result<Uuid> {
        let r = self
            .http
            .post(format!("{}/api/v1/orgs/{org}/services", host.base))
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
    async fn sync(&self, host: &HostProcess, org: Uuid, jwt: &str, svc: Uuid) -> Result<Value> {
        let url = format!("{}/api/v1/orgs/{org}/services/{svc}/sync", host.base);
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

    fn row(&mut self, mut v: Value) {
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
    shared::engine::PAGE_CONCURRENCY.max(1) as usize
}

/// Start a fresh host process, run `f` against it, stop it: (result, statements, peak RSS KiB).
async fn with_host<T>(
    b: &Bench,
    f: impl AsyncFnOnce(&HostProcess) -> Result<T>,
) -> Result<(T, u64, u64)> {
    let host = HostProcess::start(&b.binary, &b.env)?;
    let out = f(&host).await;
    let (statements, peak) = host.stop()?;
    Ok((out?, statements, peak))
}

/// First bidirectional syncs; returns the 10k organization (org, jwt, service, wall ms).
async fn first_syncs(b: &mut Bench) -> Result<Option<(Uuid, String, Uuid, f64)>> {
    let mut keep = None;
    for n in b.opts.sizes.clone() {
        let project = format!("bench{n}");
        b.project(&project, n)?;
        let (org, jwt) = b.org(&project).await?;
        let ((svc, result, wall, stats), statements, peak) = with_host(b, async |host| {
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
        b.row(json!({
            "scenario": format!("first bidirectional sync, {n} devices"),
            "wall_ms": ms(wall), "golioth_requests": stats.requests, "db_statements": statements,
            "peak_rss_mib": peak / 1024, "lower_bound_ms": (bound * 10.0).round() / 10.0,
            "golioth_bound_ms": golioth_bound, "pg_bulk_ms": (pg_bound * 10.0).round() / 10.0,
            "ratio_to_bound": ((wall.as_secs_f64() * 1000.0 / bound) * 100.0).round() / 100.0,
            "summary": result["summary"],
        }));
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
    let ((result, wall, stats), statements, peak) = with_host(b, async |host| {
        b.sim.reset_stats();
        let started = Instant::now();
        let result = b.sync(host, org, jwt, svc).await?;
        Ok((result, started.elapsed(), b.sim.stats()))
    })
    .await?;
    let after = device_versions(b, org).await?;
    b.row(json!({
        "scenario": "no-op resync, 10000 devices",
        "wall_ms": ms(wall), "golioth_requests": stats.requests, "db_statements": statements,
        "peak_rss_mib": peak / 1024,
        "golioth_writes": stats.writes, "local_device_writes": after - before,
        "summary": result["summary"],
    }));

    // 1 % changed on each side.
    let db = pgenv::connect(&b.admin_db).await?;
    db.execute(
        "UPDATE devices SET name = name || '-local' WHERE id IN \
         (SELECT id FROM devices WHERE organization_id = $1 ORDER BY name LIMIT 100)",
        &[&org],
    )
    .await?;
    let ids = b.sim.device_ids("bench10000");
    for id in ids.iter().rev().take(100) {
        b.sim
            .console_patch_device("bench10000", id, &json!({"enabled": false}))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let ((result, wall, stats), statements, peak) = with_host(b, async |host| {
        b.sim.reset_stats();
        let started = Instant::now();
        let result = b.sync(host, org, jwt, svc).await?;
        Ok((result, started.elapsed(), b.sim.stats()))
    })
    .await?;
    b.row(json!({
        "scenario": "resync, 1% changed on each side, 10000 devices",
        "wall_ms": ms(wall), "golioth_requests": stats.requests, "db_statements": statements,
        "peak_rss_mib": peak / 1024, "golioth_writes": stats.writes,
        "summary": result["summary"],
    }));
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
    if ids.is_empty() {
        bail!("no linked devices for the webhook benchmark");
    }
    let ids_file = std::env::temp_dir().join(format!("bench-ids-{}.txt", Uuid::new_v4()));
    std::fs::write(&ids_file, ids.join("\n"))?;
    let exe = std::env::current_exe()?;
    let host = HostProcess::start(&b.binary, &b.env)?;
    let out = Command::new(exe)
        .args([
            "loadgen",
            "--url",
            &format!("{}/webhooks/golioth/{svc}", host.base),
        ])
        .args(["--rate", &b.opts.webhook_rate.to_string()])
        .args(["--seconds", &b.opts.webhook_seconds.to_string()])
        .args(["--warmup", &b.opts.webhook_warmup.to_string()])
        .args(["--devices", &ids_file.to_string_lossy()])
        .args(["--header", &format!("x-webhook-token:{WEBHOOK_SECRET}")])
        .args(["--project", "bench10000"])
        .output()
        .context("running the load generator")?;
    let (statements, peak) = host.stop()?;
    let _ = std::fs::remove_file(&ids_file);
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "load generator output: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    b.row(json!({
        "scenario": format!("webhook ingestion at {} deliveries/s offered", b.opts.webhook_rate),
        "delivered_per_s": v["achieved_per_s"], "p50_ms": v["p50_ms"], "p99_ms": v["p99_ms"],
        "errors": v["errors"], "sent": v["sent"], "warmup_sent": v["warmup_sent"],
        "db_statements": statements,
        "peak_rss_mib": peak / 1024,
    }));
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
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
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
        };
        if let Some((org, jwt, svc, ours_ms)) = first_syncs(&mut b).await? {
            let skip = b.opts.skip.clone();
            let run = |name: &str| !skip.iter().any(|s| s == name);
            if run("resync") {
                resyncs(&mut b, org, &jwt, svc).await?;
            }
            if run("baseline") {
                baseline(&mut b, ours_ms).await?;
            }
            if run("webhook") {
                webhooks(&mut b, org, svc).await?;
            }
        }
        print_table(&b.rows);
        let out = root.join("bench-results");
        std::fs::create_dir_all(&out)?;
        let doc = json!({
            "command": "cargo xtask bench",
            "latency_ms": b.opts.latency_ms,
            "list_concurrency": list_concurrency(),
            "machine": machine(),
            "rows": b.rows,
            "total_seconds": started.elapsed().as_secs(),
        });
        std::fs::write(out.join("latest.json"), serde_json::to_vec_pretty(&doc)?)?;
        println!(
            "\nwritten to bench-results/latest.json in {}s",
            started.elapsed().as_secs()
        );
        Ok(())
    })
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
        for i in 0..total {
            let at = started + Duration::from_nanos(i * 1_000_000_000 / rate);
            tokio::time::sleep_until(at).await;
            let client = client.clone();
            let url = url.clone();
            let device = devices[(i as usize) % devices.len()].clone();
            let (hk, hv, project, run) = (hk.clone(), hv.clone(), project.clone(), run.clone());
            tasks.push(tokio::spawn(async move {
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
                let ok = matches!(&r, Ok(resp) if resp.status().is_success());
                (sent.elapsed(), ok)
            }));
        }
        let mut latencies = Vec::with_capacity(tasks.len());
        let mut errors = 0u64;
        for (i, t) in tasks.into_iter().enumerate() {
            let (d, ok) = t.await?;
            if (i as u64) < skipped {
                continue;
            }
            if !ok {
                errors += 1;
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
                   "p50_ms": pct(0.50), "p99_ms": pct(0.99)})
        );
        Ok(())
    })
}
