//! `cargo xtask fuzz`: build the cargo-fuzz targets in `fuzz/` and run each for a bounded time;
//! any crash, panic, timeout or out-of-memory fails the command (issue 8, item 5).
//!
//! Only stable Rust is installed, so cargo-fuzz's nightly flags (`-Zsanitizer`, `-Cpasses`) are
//! unlocked with `RUSTC_BOOTSTRAP=1`. The equivalent by hand, from the repository root:
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run -s address <target> fuzz/corpus/<target> fuzz/seeds/<target> \
//!     -- -max_total_time=30 -rss_limit_mb=2048
//! ```
//!
//! The first corpus directory (git-ignored) collects what the fuzzer finds; `fuzz/seeds/<target>`
//! holds the committed seeds. A crash leaves its input under `fuzz/artifacts/<target>/`; replay it
//! with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`, fix the parser, commit the input to
//! `fuzz/seeds/<target>/` (every fuzz run replays the seeds first) and add a unit test next to the
//! parser. No run so far has found a crash, so no such input exists yet.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{cargo, root, step};

/// AddressSanitizer links and runs on the CI image; `none` is the fallback if it ever does not.
const SANITIZER: &str = "address";
/// Per-target memory ceiling; ASan's quarantine alone holds up to 256 MB.
const RSS_LIMIT_MB: u32 = 2048;
/// One input running this long is a hang, and fails the run (libFuzzer's default is 20 minutes).
const UNIT_TIMEOUT_SECS: u32 = 30;

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// `cargo fuzz …` from the repository root, outside the main workspace's target directory (the
/// fuzz build uses other compiler flags; sharing one directory would rebuild both every time).
/// Its binaries land in `fuzz/target/<host triple>/release/`.
fn cargo_fuzz() -> Command {
    let mut c = cargo();
    c.arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("CARGO_TARGET_DIR");
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        let mut c = cargo();
        c.args(["install", "cargo-fuzz", "--locked"]);
        step("install cargo-fuzz", c)?;
    }
    Ok(())
}

/// The targets: one per file in `fuzz/fuzz_targets`, sorted.
fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            out.push(stem.to_owned());
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(out)
}

struct Running {
    target: String,
    log: PathBuf,
    child: Child,
    started: Instant,
}

/// The triple cargo-fuzz builds for (the host), which names the directory of the binaries.
fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|t| t.trim().to_owned())
        .context("rustc -vV printed no host triple")
}

/// Run one built target directly (what `cargo fuzz run` does after its build), so every run uses
/// the binaries of the one build step and parallel runs do not queue on cargo's locks.
fn start(bin_dir: &Path, target: &str, seconds: u64, logs: &Path) -> Result<Running> {
    let corpus = fuzz_dir().join("corpus").join(target);
    let seeds = fuzz_dir().join("seeds").join(target);
    let artifacts = fuzz_dir().join("artifacts").join(target);
    fs::create_dir_all(&corpus)?;
    fs::create_dir_all(&artifacts)?;
    let log = logs.join(format!("{target}.log"));
    let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    // As cargo-fuzz sets it: Rust's ODR-like duplicate symbols are not violations.
    let mut asan = std::env::var("ASAN_OPTIONS").unwrap_or_default();
    if !asan.is_empty() {
        asan.push(':');
    }
    asan.push_str("detect_odr_violation=0");
    let mut c = Command::new(bin_dir.join(target));
    c.current_dir(root())
        .env("ASAN_OPTIONS", asan)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={UNIT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .arg(&corpus)
        .args(seeds.is_dir().then_some(&seeds))
        .stdout(out.try_clone()?)
        .stderr(out);
    let child = c
        .spawn()
        .with_context(|| format!("starting fuzz target {target}"))?;
    Ok(Running {
        target: target.to_owned(),
        log,
        child,
        started: Instant::now(),
    })
}

/// `stat::<name>: <value>` from libFuzzer's final statistics.
fn stat<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("stat::{name}:");
    log.lines()
        .find_map(|l| l.trim().strip_prefix(key.as_str()))
        .map(str::trim)
}

/// Wait for one run; print its statistics, or the crash report if it failed.
fn finish(mut r: Running) -> Result<bool> {
    let status = r.child.wait()?;
    let log = fs::read_to_string(&r.log).unwrap_or_default();
    let secs = r.started.elapsed().as_secs_f64();
    if status.success() {
        println!(
            "{}: ok, {} executions ({} exec/s), peak rss {} MB, {secs:.0}s",
            r.target,
            stat(&log, "number_of_executed_units").unwrap_or("?"),
            stat(&log, "average_exec_per_sec").unwrap_or("?"),
            stat(&log, "peak_rss_mb").unwrap_or("?"),
        );
        return Ok(true);
    }
    println!(
        "{}: FAILED ({status}) after {secs:.0}s; full log: {}",
        r.target,
        r.log.display()
    );
    // The report starts at the panic or the sanitizer's message; libFuzzer names the input last.
    let lines: Vec<&str> = log.lines().collect();
    let from = lines
        .iter()
        .position(|l| l.contains("panicked") || l.contains("ERROR:"))
        .unwrap_or(lines.len().saturating_sub(40));
    let tail = lines[from..]
        .iter()
        .skip(40)
        .filter(|l| l.contains("Test unit written to") || l.starts_with("Base64:"));
    for l in lines[from..].iter().take(40).chain(tail) {
        println!("  {l}");
    }
    Ok(false)
}

/// Build every target, then run each for `seconds_per_target` seconds (as many at once as there
/// are cores, so the CI budget is about `targets × seconds / cores` plus the build).
pub fn run(seconds_per_target: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let targets = targets()?;
    let target_dir = fuzz_dir().join("target");
    let triple = host_triple()?;

    let mut c = cargo_fuzz();
    c.args(["build", "--sanitizer", SANITIZER, "--target", &triple]);
    step("build the fuzz targets", c)?;
    let bin_dir = target_dir.join(&triple).join("release");

    let logs = target_dir.join("fuzz-logs");
    fs::create_dir_all(&logs)?;
    let parallel = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "\n==> fuzz {} targets, {seconds_per_target}s each, {parallel} at a time",
        targets.len()
    );
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut running: Vec<Running> = Vec::new();
    let mut queue = targets.iter();
    loop {
        while running.len() < parallel
            && let Some(t) = queue.next()
        {
            running.push(start(&bin_dir, t, seconds_per_target, &logs)?);
        }
        if running.is_empty() {
            break;
        }
        // Targets get the same time limit, so the oldest run ends first.
        let r = running.remove(0);
        let name = r.target.clone();
        if !finish(r)? {
            failed.push(name);
        }
    }
    println!(
        "<== fuzz: {} targets in {:.0}s",
        targets.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs under fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}
