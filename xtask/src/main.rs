//! `cargo xtask <command>`: the project's commands.
//! - `up`: run the whole system locally (Postgres found or started, migrations, host, demo data).
//! - `test`: everything CI checks — toolchain setup, fmt, clippy (native and wasm), all tests
//!   (listing any that were skipped, e.g. the console's browser tests without Chromium), the wasm
//!   builds of every component (the console's too) and the import check.
//!   It fails if a process the tests started (a browser, chromedriver, a host, `spin up`) is
//!   still running after them: each carries the run's `GS_TEST_SUITE_ID` in its environment.
//! - `test-spin`: the Spin suite alone (the HTTP-level tests against `spin up`; `test` ends with it).
//! - `check-imports`: build the components for wasm32-wasip2 and check their imports/exports.
//! - `fuzz [--seconds N]`: run every cargo-fuzz target in `fuzz/` for N seconds (default 30).
//! - `api-fuzz`: schemathesis (from PyPI, into `target/st-venv`) against the OpenAPI document.
//! - `bench [--host spin]`: the benchmark scenarios of DESIGN §9 against a release build; with
//!   `--host spin` also against `spin up`, each beside the native figure as a ratio (BENCHMARKS.md).

/// The benchmark's simulator and load generator run in this process, on the same two cores as
/// the host they measure: mimalloc keeps their allocation cost (glibc's was a quarter of a
/// JSON-heavy process's CPU) from being charged to the host.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod api_fuzz;
mod bench;
mod bench_spin;
mod fuzz;
mod imports;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The integration test files that talk to the app over HTTP: the Spin suite runs them against
/// `spin up` (`GS_TEST_HOST=spin`). The others test the client and the simulator on their own.
const SPIN_SUITE: &[&str] = &[
    "authz_matrix",
    "bola",
    "conflicts",
    "conflicts_e2e",
    "console_browser",
    "foundation",
    "reliability",
    "runs",
    "secret_leak",
    "security",
    "services",
    "spin_cron",
    "spin_runtime",
    "sync_engine",
    "tick",
    "webhook",
    "webhook_refresh",
];

/// The Spin components: (cargo package, wasm file stem, kind).
const COMPONENTS: &[(&str, &str, imports::Kind)] = &[
    ("device-sync", "device_sync", imports::Kind::Http),
    ("golioth-webhook", "golioth_webhook", imports::Kind::Http),
    ("conflicts", "conflicts", imports::Kind::Http),
    ("scheduler", "scheduler", imports::Kind::Cron),
    ("console", "console", imports::Kind::Http),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Run a step, printing its name and duration; fail the whole command if it fails.
fn step(name: &str, mut cmd: Command) -> Result<()> {
    println!("\n==> {name}");
    let started = Instant::now();
    let status = cmd.status().with_context(|| format!("starting: {name}"))?;
    println!(
        "<== {name}: {status} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("step failed: {name}");
    }
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
        .unwrap_or(false);
    if !installed {
        let mut c = Command::new("rustup");
        c.args(["target", "add", "wasm32-wasip2"]);
        step("install the wasm32-wasip2 target", c)?;
    }
    Ok(())
}

fn build_components() -> Result<()> {
    let mut c = cargo();
    c.args(["build", "--target", "wasm32-wasip2", "--release"]);
    for (pkg, _, _) in COMPONENTS {
        c.args(["-p", pkg]);
    }
    step("build every component for wasm32-wasip2", c)
}

/// The Spin suite: the HTTP-level integration tests against the real Spin runtime. Without a
/// `spin` on PATH it says in one line that it skipped, and why.
fn test_spin(db_url: &str, suite: &str) -> Result<()> {
    let version = match host::spin_up::spin_binary() {
        Ok(_) => host::spin_up::spin_version().unwrap_or_default(),
        Err(why) => {
            println!(
                "\n==> Spin suite: SKIPPED: {why} (install Spin 3.x/4.x and the trigger-cron plugin to run it; CI installs them from ../shared/tools/spin)"
            );
            return Ok(());
        }
    };
    println!("\n==> Spin suite on {version}");
    let mut c = cargo();
    c.args([
        "build",
        "--target",
        "wasm32-wasip2",
        "--release",
        "-p",
        "spin-probe",
    ]);
    step("build the test-only spin-probe component", c)?;
    let report = target_dir().join("spin-suite-report.tsv");
    let _ = std::fs::remove_file(&report);
    let mut c = cargo();
    c.env("DATABASE_URL", db_url)
        .env(host::procs::SUITE_VAR, suite)
        .env("GS_TEST_HOST", "spin")
        .env("GS_TEST_REPORT", &report)
        .args(["test", "-p", "golioth-sync-tests", "--no-fail-fast"]);
    for t in SPIN_SUITE {
        c.args(["--test", t]);
    }
    let result = step("cargo test (GS_TEST_HOST=spin)", c);
    let survivors = check_survivors(suite);
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let mut on_spin = std::collections::BTreeSet::new();
    let mut native_only = std::collections::BTreeMap::new();
    for line in text.lines() {
        let mut f = line.splitn(3, '\t');
        match (f.next(), f.next(), f.next()) {
            (Some("spin"), Some(t), _) => {
                on_spin.insert(t.to_owned());
            }
            (Some("native-only"), Some(t), Some(why)) => {
                native_only.insert(t.to_owned(), why.to_owned());
            }
            _ => {}
        }
    }
    for (t, why) in &native_only {
        println!("  native-only: {t}: {why}");
    }
    print_skipped(&report);
    println!(
        "<== Spin suite on {version}: {} tests ran on Spin, {} native-only{}",
        on_spin.len(),
        native_only.len(),
        if result.is_ok() { "" } else { " (FAILED)" }
    );
    result.and(survivors)
}

/// A fresh id for one test run: every process it starts inherits it as `GS_TEST_SUITE_ID`.
fn suite_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Fail, naming them, if processes started by the test run `suite` are still alive once it has
/// ended (a browser, chromedriver, a host or `spin up` a test did not stop). They are killed.
fn check_survivors(suite: &str) -> Result<()> {
    // A process killed a moment ago may still be on its way out.
    let deadline = Instant::now() + std::time::Duration::from_secs(3);
    let mut left = host::procs::marked(host::procs::SUITE_VAR, suite);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        left = host::procs::marked(host::procs::SUITE_VAR, suite);
    }
    if left.is_empty() {
        println!("no process the tests started is still running");
        return Ok(());
    }
    println!(
        "FAILED: {} process(es) the tests started are still running:",
        left.len()
    );
    for (pid, cmd) in &left {
        println!("  {pid}: {}", cmd.chars().take(160).collect::<String>());
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(left.iter().map(|(pid, _)| pid.to_string()))
        .status();
    bail!("the tests left {} process(es) running", left.len())
}

/// Print the tests a report file says were skipped (`skipped\ttest\twhy`), or nothing.
fn print_skipped(report: &Path) {
    let text = std::fs::read_to_string(report).unwrap_or_default();
    let skipped: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            match (f.next(), f.next(), f.next()) {
                (Some("skipped"), Some(t), Some(why)) => Some((t, why)),
                _ => None,
            }
        })
        .collect();
    if skipped.is_empty() {
        return;
    }
    println!("SKIPPED: {} test(s) could not run here:", skipped.len());
    for (t, why) in skipped {
        println!("  skipped: {t}: {why}");
    }
}

fn check_imports() -> Result<()> {
    println!("\n==> import check");
    let dir = target_dir().join("wasm32-wasip2/release");
    let mut failed = false;
    for (pkg, stem, kind) in COMPONENTS {
        let path = dir.join(format!("{stem}.wasm"));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        match imports::check(*kind, &bytes) {
            Ok(s) => {
                println!("{pkg} ({} KiB): ok", bytes.len() / 1024);
                for i in &s.imports {
                    println!("  import {i}");
                }
                for t in &s.type_imports {
                    println!("  import type {t}");
                }
                for e in &s.exports {
                    println!("  export {e}");
                }
            }
            Err(e) => {
                println!("{pkg}: FAILED: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("import check failed");
    }
    println!("<== import check: every component passes");
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn test() -> Result<()> {
    let started = Instant::now();
    ensure_wasm_target()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server = rt.block_on(host::pgenv::locate())?;
    println!("postgres for tests: {}", server.origin);
    // Children find the same server without probing again.
    let db_url = server.admin_url.clone();
    let with_db = |mut c: Command| {
        c.env("DATABASE_URL", &db_url);
        c
    };

    let mut c = cargo();
    c.args(["fmt", "--all", "--", "--check"]);
    step("cargo fmt --check", c)?;

    let mut c = cargo();
    c.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("cargo clippy (native) -D warnings", c)?;

    let mut c = cargo();
    c.args([
        "clippy",
        "--target",
        "wasm32-wasip2",
        "-p",
        "shared",
        "-p",
        "spin-probe",
    ]);
    for (pkg, _, _) in COMPONENTS {
        c.args(["-p", pkg]);
    }
    c.args(["--", "-D", "warnings"]);
    step("cargo clippy (wasm32-wasip2) -D warnings", c)?;

    // Tests that cannot run here (the console's browser tests without Chromium) record why in
    // this report; they are listed after the step so a skip is never silent.
    let report = target_dir().join("test-report.tsv");
    let _ = std::fs::remove_file(&report);
    let suite = suite_id();
    let mut c = with_db(cargo());
    c.env("GS_TEST_REPORT", &report)
        .env(host::procs::SUITE_VAR, &suite)
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"]);
    let result = step("cargo test --workspace", c);
    print_skipped(&report);
    result?;
    check_survivors(&suite)?;

    build_components()?;
    check_imports()?;

    println!("\n==> schemathesis against openapi/openapi.json on the native host");
    api_fuzz::run(&root(), &target_dir(), 25)?;
    println!("<== schemathesis: no failures");
    fuzz::run(if std::env::var_os("CI").is_some() {
        60
    } else {
        20
    })?;
    test_spin(&db_url, &suite)?;

    println!(
        "\nall checks passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("up") => {
            let mut opts = host::dev::UpOptions::default();
            if let Some(i) = args.iter().position(|a| a == "--listen") {
                opts.listen = args
                    .get(i + 1)
                    .context("--listen ADDR")?
                    .parse()
                    .context("--listen")?;
            }
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(host::dev::up(opts))
        }
        Some("test") => test(),
        Some("test-spin") => {
            ensure_wasm_target()?;
            let server = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(host::pgenv::locate())?;
            build_components()?;
            test_spin(&server.admin_url, &suite_id())
        }
        Some("bench") => bench::run(&args[1..], &root(), &target_dir()),
        Some("loadgen") => bench::loadgen(&args[1..]),
        Some("api-fuzz") => api_fuzz::run(&root(), &target_dir(), 25),
        Some("check-imports") => {
            ensure_wasm_target()?;
            build_components()?;
            check_imports()
        }
        Some("fuzz") => fuzz::run(match args.iter().position(|a| a == "--seconds") {
            Some(i) => args
                .get(i + 1)
                .context("--seconds N")?
                .parse()
                .context("--seconds")?,
            None => 30,
        }),
        _ => bail!(
            "usage: cargo xtask up [--listen ADDR] | test | test-spin | check-imports | fuzz [--seconds N] | bench [--host spin] [--spin-webhook-rate a,b] [--latency-ms N] [--sizes a,b,c] [--webhook-rate N] [--webhook-seconds N] [--skip resync,baseline,webhook] [--lost-answers SHARE]"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_left_by_the_tests_fails_the_run_and_is_killed() {
        let suite = suite_id();
        assert!(check_survivors(&suite).is_ok(), "nothing started yet");
        // A grandchild that outlives its parent, as a browser outlives a killed chromedriver.
        let status = Command::new("sh")
            .args(["-c", "sleep 300 >/dev/null 2>&1 &"])
            .env(host::procs::SUITE_VAR, &suite)
            .status()
            .unwrap();
        assert!(status.success());
        let err = check_survivors(&suite).unwrap_err();
        assert!(format!("{err}").contains("left 1 process"), "{err}");
        // check_survivors killed it: the next check passes.
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while !host::procs::marked(host::procs::SUITE_VAR, &suite).is_empty() {
            assert!(Instant::now() < deadline, "the survivor was not killed");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(check_survivors(&suite).is_ok());
    }
}
