//! Structured logging: one JSON object per line on stdout (Spin collects component stdout).
//! Callers pass only non-secret fields; secrets are typed (`Secret`) and cannot be formatted.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turn log output on or off (test harnesses silence the in-process host).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Emit one log line with `level`, `msg` and the given fields.
pub fn emit(level: &str, msg: &str, fields: Value) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let mut line = Map::new();
    line.insert("ts".into(), Value::String(chrono::Utc::now().to_rfc3339()));
    line.insert("level".into(), Value::String(level.to_owned()));
    line.insert("msg".into(), Value::String(msg.to_owned()));
    if let Value::Object(f) = fields {
        line.extend(f);
    }
    println!("{}", Value::Object(line));
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
