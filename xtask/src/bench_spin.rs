//! `cargo xtask bench --host spin`: what the benchmark needs to run the product under `spin up`
//! beside the native host: starting Spin, Postgres counters per scenario (transactions and
//! sessions from `pg_stat_database`, since Spin reports no statement count), CPU and connection
//! sampling during a webhook run, and the side-by-side tables.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use host::spin_up::{self, SpinApp, SpinOptions};
use serde_json::{Value, json};

/// The wasm build `spin.toml` expects (the cron component too: Spin loads every component the
/// manifest names before `-c` narrows what runs).
pub const WASM_PACKAGES: &[&str] = &[
    "device-sync",
    "golioth-webhook",
    "conflicts",
    "scheduler",
    "console",
];

/// `spin up` of the product's HTTP components (not the cron scheduler) with the same application
/// variables the native host gets (`env` holds them as `SPIN_VARIABLE_<NAME>`). Extra knobs for
/// Spin itself (e.g. `SPIN_WASMTIME_INSTANCE_COUNT`) reach it through this process' environment.
pub fn start(env: &HashMap<String, String>) -> Result<SpinApp> {
    let manifest = host::manifest::default_path();
    let components = host::manifest::Manifest::load(&manifest)?
        .http_components()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let vars = env
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("SPIN_VARIABLE_")
                .map(|name| (name.to_ascii_lowercase(), v.clone()))
        })
        .collect();
    spin_up::start(&SpinOptions {
        manifest,
        vars,
        components,
        ..SpinOptions::default()
    })
    .context("spin up")
}

/// Peak resident set of a process (`VmHWM`, KiB), 0 if it is gone.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Postgres counters
// ---------------------------------------------------------------------------------------------

/// Counters of one database from `pg_stat_database`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgCounters {
    pub commits: i64,
    pub rollbacks: i64,
    /// Sessions (connections) established to the database (Postgres 14+).
    pub sessions: i64,
}

/// Reads `pg_stat_database` over a connection to the server's own `postgres` database, so the
/// reads do not count in the database they measure.
pub struct PgStats {
    client: tokio_postgres::Client,
    db: String,
}

impl PgStats {
    pub async fn connect(server_admin_url: &str, db: &str) -> Result<PgStats> {
        Ok(PgStats {
            client: host::pgenv::connect(server_admin_url).await?,
            db: db.to_owned(),
        })
    }

    /// Wait (at most 10 s) until no session is connected to the database: a backend flushes its
    /// counters when it exits, so a reading taken before that would miss some.
    pub async fn wait_idle(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n: i64 = self
                .client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                    &[&self.db],
                )
                .await?
                .get(0);
            if n == 0 || Instant::now() > deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn counters(&self) -> Result<PgCounters> {
        let row = self
            .client
            .query_one(
                "SELECT xact_commit, xact_rollback, sessions FROM pg_stat_database WHERE datname = $1",
                &[&self.db],
            )
            .await?;
        Ok(PgCounters {
            commits: row.get(0),
            rollbacks: row.get(1),
            sessions: row.get(2),
        })
    }

    /// Sessions of the database by state (`active`, `idle`, `idle in transaction`, …).
    pub async fn connections(&self) -> Result<BTreeMap<String, i64>> {
        let rows = self
            .client
            .query(
                "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity \
                 WHERE datname = $1 GROUP BY 1",
                &[&self.db],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// The difference of two readings, as row fields.
pub fn counters_json(before: PgCounters, after: PgCounters) -> Value {
    json!({
        "db_transactions": (after.commits - before.commits) + (after.rollbacks - before.rollbacks),
        "db_rollbacks": after.rollbacks - before.rollbacks,
        "pg_sessions_opened": after.sessions - before.sessions,
    })
}

// ---------------------------------------------------------------------------------------------
// CPU
// ---------------------------------------------------------------------------------------------

/// Clock ticks per second (`getconf CLK_TCK`, 100 where that fails).
pub fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// One process from `/proc/<pid>/stat`; CPU in clock ticks.
struct ProcStat {
    pid: u32,
    ppid: u32,
    pgrp: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime (its children that exited and were waited for).
    children: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        own: n(11)? + n(12)?,
        children: n(13)? + n(14)?,
    })
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The processes of a process group (`spin up` runs its HTTP trigger as a child process,
/// `spin trigger http`, in the group `spin_up` gives it).
fn group(pgrp: u32) -> Vec<ProcStat> {
    all_pids()
        .into_iter()
        .filter_map(proc_stat)
        .filter(|p| p.pgrp == pgrp)
        .collect()
}

/// What a host is, for CPU and memory accounting: one process (the native host) or a process
/// group (`spin up` and its trigger process).
#[derive(Debug, Clone, Copy)]
pub enum HostProcs {
    Pid(u32),
    Group(u32),
}

/// CPU ticks a process has used (itself and its reaped children).
fn proc_ticks(pid: u32) -> u64 {
    proc_stat(pid).map_or(0, |p| p.own + p.children)
}

fn host_ticks(h: HostProcs) -> u64 {
    match h {
        HostProcs::Pid(pid) => proc_ticks(pid),
        HostProcs::Group(g) => group(g).iter().map(|p| p.own + p.children).sum(),
    }
}

/// Peak RSS of Spin: (the sum over its process group, the largest process' own), KiB. The
/// trigger process serves the requests; `spin up` itself only waits for it.
pub fn spin_peak_rss_kib(pgrp: u32) -> (u64, u64) {
    let peaks: Vec<u64> = group(pgrp).iter().map(|p| peak_rss_kib(p.pid)).collect();
    (peaks.iter().sum(), peaks.iter().copied().max().unwrap_or(0))
}

/// CPU ticks used by every Postgres process on this machine: the live ones plus what the
/// postmaster collected from the backends that already exited (so a backend that lives for one
/// request is counted too). Other users of the same server are included.
pub fn postgres_ticks() -> u64 {
    let procs: Vec<ProcStat> = all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(proc_stat)
        .collect();
    let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    procs
        .iter()
        // The postmaster (its parent is not a Postgres process) holds its exited children's CPU.
        .map(|p| {
            p.own
                + if pids.contains(&p.ppid) {
                    0
                } else {
                    p.children
                }
        })
        .sum()
}

/// (busy, all) ticks of the whole machine from `/proc/stat` (busy excludes idle and iowait).
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let all: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (all.saturating_sub(idle), all)
}

// ---------------------------------------------------------------------------------------------
// Sampling during a webhook run
// ---------------------------------------------------------------------------------------------

/// One reading taken during a run.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub t: f64,
    pub host: u64,
    pub postgres: u64,
    pub loadgen: u64,
    pub bench: u64,
    pub busy: u64,
    pub all: u64,
    pub connections: BTreeMap<String, i64>,
}

/// Reads CPU and connections every 250 ms until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    pub fn start(stats: Arc<PgStats>, host: HostProcs, loadgen_pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let me = std::process::id();
            let mut out = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let (busy, all) = machine_ticks();
                out.push(Sample {
                    t: started.elapsed().as_secs_f64(),
                    host: host_ticks(host),
                    postgres: postgres_ticks(),
                    loadgen: proc_ticks(loadgen_pid),
                    bench: proc_ticks(me),
                    busy,
                    all,
                    connections: stats.connections().await.unwrap_or_default(),
                });
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            out
        });
        Sampler { stop, task }
    }

    pub async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// CPU (percent of one core) of each party and the Postgres connections over the measured
/// window `[from, to]` seconds after the load generator started.
pub fn summarize(samples: &[Sample], from: f64, to: f64, tck: f64) -> Value {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t >= from - 0.125 && s.t <= to + 0.125)
        .collect();
    let (Some(a), Some(b)) = (inside.first(), inside.last()) else {
        return Value::Null;
    };
    let secs = (b.t - a.t).max(0.001);
    let pct = |x: u64, y: u64| ((y.saturating_sub(x)) as f64 / tck / secs * 1000.0).round() / 10.0;
    let host = pct(a.host, b.host);
    let postgres = pct(a.postgres, b.postgres);
    let loadgen = pct(a.loadgen, b.loadgen);
    let bench = pct(a.bench, b.bench);
    let busy = pct(a.busy, b.busy);
    let cores = ((b.all - a.all) as f64 / tck / secs).round();
    let mut max_by_state: BTreeMap<String, i64> = BTreeMap::new();
    let mut max_total = 0;
    for s in &inside {
        for (k, v) in &s.connections {
            let m = max_by_state.entry(k.clone()).or_default();
            *m = (*m).max(*v);
        }
        max_total = max_total.max(s.connections.values().sum::<i64>());
    }
    json!({
        "window_s": (secs * 10.0).round() / 10.0,
        "cpu_pct_of_one_core": {
            "host": host, "postgres": postgres, "loadgen": loadgen, "bench_process": bench,
            "rest": ((busy - host - postgres - loadgen - bench) * 10.0).round() / 10.0,
            "machine_busy": busy, "machine_cores": cores,
        },
        "pg_connections_max": max_total,
        "pg_connections_max_by_state": max_by_state,
    })
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn ratio(n: &Value, s: &Value) -> String {
    match (num(n), num(s)) {
        (Some(n), Some(s)) if n > 0.0 => format!("{:.2}", s / n),
        _ => String::new(),
    }
}

/// Errors of a webhook row by kind: HTTP statuses other than 2xx and transport errors.
fn error_kinds(r: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = r["status"].as_object() {
        for (k, v) in m {
            if !k.starts_with('2') {
                parts.push(format!("HTTP {k}: {v}"));
            }
        }
    }
    if let Some(m) = r["transport_errors"].as_object() {
        for (k, v) in m {
            if v.as_u64().unwrap_or(0) > 0 {
                parts.push(format!("{k}: {v}"));
            }
        }
    }
    parts.join(", ")
}

/// The native / Spin pairs: same scenario, one row from each host.
fn pairs(rows: &[Value]) -> Vec<(&Value, &Value)> {
    let mut out = Vec::new();
    for s in rows.iter().filter(|r| r["host"] == "spin") {
        if let Some(n) = rows
            .iter()
            .find(|r| r["host"] == "native" && r["scenario"] == s["scenario"])
        {
            out.push((n, s));
        }
    }
    out
}

/// `scenario | native | spin | ratio spin/native`, then resources, then the webhook runs.
pub fn print_comparison(rows: &[Value]) {
    println!("\n| scenario | native | spin | ratio spin/native |");
    println!("|---|---|---|---|");
    for (n, s) in pairs(rows) {
        let name = s["scenario"].as_str().unwrap_or("");
        if !s["wall_ms"].is_null() {
            println!(
                "| {name}: wall ms | {} | {} | {} |",
                cell(&n["wall_ms"]),
                cell(&s["wall_ms"]),
                ratio(&n["wall_ms"], &s["wall_ms"])
            );
        }
        if !s["p99_ms"].is_null() {
            for (k, label) in [
                ("delivered_per_s", "delivered/s"),
                ("p50_ms", "p50 ms"),
                ("p99_ms", "p99 ms"),
            ] {
                println!(
                    "| {name}: {label} | {} | {} | {} |",
                    cell(&n[k]),
                    cell(&s[k]),
                    ratio(&n[k], &s[k])
                );
            }
            let errs = |r: &Value| {
                let kinds = error_kinds(r);
                if kinds.is_empty() {
                    cell(&r["errors"])
                } else {
                    format!("{} ({kinds})", cell(&r["errors"]))
                }
            };
            println!("| {name}: errors | {} | {} | |", errs(n), errs(s));
        }
    }

    println!(
        "\n| scenario | peak RSS MiB native | peak RSS MiB spin (spin up + trigger) | DB statements native | DB transactions native | DB transactions spin | Postgres sessions native | Postgres sessions spin |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (n, s) in pairs(rows) {
        println!(
            "| {} | {} | {} (trigger {}) | {} | {} | {} | {} | {} |",
            s["scenario"].as_str().unwrap_or(""),
            cell(&n["peak_rss_mib"]),
            cell(&s["peak_rss_mib"]),
            cell(&s["spin_trigger_peak_rss_mib"]),
            cell(&n["db_statements"]),
            cell(&n["db_transactions"]),
            cell(&s["db_transactions"]),
            cell(&n["pg_sessions_opened"]),
            cell(&s["pg_sessions_opened"]),
        );
    }

    let hooks: Vec<&Value> = rows.iter().filter(|r| !r["p99_ms"].is_null()).collect();
    if hooks.is_empty() {
        return;
    }
    println!(
        "\n| webhook run | delivered/s | p50 ms | p99 ms | errors (by kind) | max in flight | CPU % of a core: host / Postgres / loadgen / bench / rest | Postgres connections max (by state) | sessions opened | transactions per delivery |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in hooks {
        let cpu = &r["load"]["cpu_pct_of_one_core"];
        let sent = r["sent"].as_f64().unwrap_or(0.0) + r["warmup_sent"].as_f64().unwrap_or(0.0);
        let per = r["db_transactions"]
            .as_f64()
            .filter(|_| sent > 0.0)
            .map_or(String::new(), |t| format!("{:.2}", t / sent));
        let by_state = r["load"]["pg_connections_max_by_state"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        println!(
            "| {} at {}/s | {} | {} | {} | {} {} | {} | {} / {} / {} / {} / {} | {} ({by_state}) | {} | {per} |",
            r["host"].as_str().unwrap_or(""),
            cell(&r["offered_per_s"]),
            cell(&r["delivered_per_s"]),
            cell(&r["p50_ms"]),
            cell(&r["p99_ms"]),
            cell(&r["errors"]),
            error_kinds(r),
            cell(&r["max_in_flight"]),
            cell(&cpu["host"]),
            cell(&cpu["postgres"]),
            cell(&cpu["loadgen"]),
            cell(&cpu["bench_process"]),
            cell(&cpu["rest"]),
            cell(&r["load"]["pg_connections_max"]),
            cell(&r["pg_sessions_opened"]),
        );
    }
}
