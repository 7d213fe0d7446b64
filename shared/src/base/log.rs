//! Structured logging: one JSON object per line on stdout (Spin collects component stdout).
//! Callers pass only non-secret fields; secrets are typed (`Secret`) and cannot be formatted.
//! Owns the log format. Uses nothing else of the crate (bottom of `base`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Map, Value};

static ENABLED: AtomicBool = AtomicBool::new(true);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static CAPTURE: Mutex<Option<Vec<String>>> = Mutex::new(None);

/// Turn log output on or off (test harnesses silence the in-process host).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Start (or stop) keeping a copy of every log line in memory, so a test can search everything
/// the service logged (the secret-leak test does). Capturing works even while output is off.
pub fn capture(on: bool) {
    if let Ok(mut c) = CAPTURE.lock() {
        *c = on.then(Vec::new);
    }
}

/// The lines captured since `capture(true)`.
pub fn captured() -> Vec<String> {
    CAPTURE
        .lock()
        .ok()
        .and_then(|c| c.clone())
        .unwrap_or_default()
}

/// Emit one log line with `level`, `msg` and the given fields.
pub fn emit(level: &str, msg: &str, fields: Value) {
    let capturing = CAPTURE.lock().map(|c| c.is_some()).unwrap_or(false);
    if !ENABLED.load(Ordering::Relaxed) && !capturing {
        return;
    }
    let mut line = Map::new();
    line.insert("ts".into(), Value::String(chrono::Utc::now().to_rfc3339()));
    line.insert("level".into(), Value::String(level.to_owned()));
    line.insert("msg".into(), Value::String(msg.to_owned()));
    if let Value::Object(f) = fields {
        line.extend(f);
    }
    let text = Value::Object(line).to_string();
    if capturing
        && let Ok(mut c) = CAPTURE.lock()
        && let Some(lines) = c.as_mut()
    {
        lines.push(text.clone());
    }
    if ENABLED.load(Ordering::Relaxed) {
        write_line(&text);
    }
}

/// Write one line to stdout. Logging never fails a request: a closed or full stdout (a pipe whose
/// reader went away, `EPIPE`) drops the line and counts it instead of panicking as `println!`
/// would.
fn write_line(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Log lines that could not be written (stdout closed or failing).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

pub fn info(msg: &str, fields: Value) {
    emit("info", msg, fields);
}

pub fn warn(msg: &str, fields: Value) {
    emit("warn", msg, fields);
}

pub fn error(msg: &str, fields: Value) {
    emit("error", msg, fields);
}
