//! Golioth Pipeline deliveries (DESIGN §6): authentication on the raw bytes, body parsing, the
//! idempotency key and the plan the store applies. Pure: headers, body, secrets and the receipt
//! time go in; a [`Plan`] or a [`Rejection`] comes out.
//!
//! # Authentication schemes (per service, `config.webhook.auth`)
//! Golioth does not sign its webhook requests; a Pipeline can only add static headers whose values
//! come from Pipeline Secrets. So:
//! - **`token`** (default, what a Golioth Pipeline uses): the header `config.webhook.header_name`
//!   (default `x-webhook-token`) carries the service's webhook secret, compared in constant time.
//!   With `header_name = authorization` the value is `Bearer <secret>`. `Ce-Subject` is required.
//! - **`hmac`** (for relays that sign): `X-Golioth-Signature: sha256=<hex>` is HMAC-SHA256 keyed
//!   with the secret's UTF-8 bytes over the raw body, or over `<ts>.<body>` when
//!   `X-Golioth-Timestamp: <unix seconds>` is sent (then it must be within ±300 s; required when
//!   `require_timestamp`). Same construction as GitHub's `X-Hub-Signature-256`.
//! - **`standard`** ([Standard Webhooks] v1): `webhook-id`, `webhook-timestamp` (±300 s) and
//!   `webhook-signature: v1,<base64> [v1,<base64> …]`, HMAC-SHA256 over `<id>.<ts>.<body>` keyed
//!   with the base64-decoded `whsec_…` secret; any listed signature may match.
//!
//! For every scheme the current **and** the previous webhook secret are accepted (rotation: a new
//! secret moves the old one to "previous"). Signatures are checked on the bytes received, before
//! any parsing: re-serialized JSON does not verify. For `hmac` and `standard` `Ce-Subject` is
//! optional (a relay may not send it); whenever it, or an envelope's `project_id`, is present it
//! must equal the service's `project_id`.
//!
//! # Answers
//! Unknown service, inactive service, bad credentials and a wrong project all give the same 401,
//! so the endpoint tells nobody which services exist. A body over 256 KiB is 413 (checked first,
//! whatever the service), another content type 415, a malformed body 400. A rejected delivery of a
//! known service leaves exactly one trace: a `webhook_deliveries` row with status `rejected`, the
//! reason in `error` and no payload. An unknown service has no organization to file it under, so
//! it leaves nothing (only the request log line).
//!
//! # Idempotency
//! The delivery key is `webhook-id`, else `Ce-Id`, else the SHA-256 of (service, device, type,
//! `Ce-Time`, body). Without `Ce-Id`/`Ce-Time` two byte-identical messages from one device within
//! the retention window count as one: the price of deduplicating retries of an unsigned sender.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/
//!
//! Uses `domain::{sync, service, crypto, golioth}` (options, config, constant-time comparison,
//! device ids) and `base`; no I/O.

pub mod parse;
pub mod verify;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use parse::{BodyFormat, Delivery, EventKind, ParseError, Shape};
pub use verify::{AuthError, hmac_signature, standard_signature};

use crate::domain::service::{ServiceConfig, WebhookAuth};
use crate::domain::sync::SyncOptions;
use crate::domain::sync::reported::state_at;

/// Largest body accepted (413 above).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Longest `Ce-Id` / `webhook-id` used as a delivery key.
pub const MAX_KEY_ID_LEN: usize = verify::MAX_ID_LEN;

/// Why a delivery was refused. Stored as the `error` of its `rejected` record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("body of {0} bytes exceeds the {MAX_BODY_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("the service is inactive")]
    Inactive,
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("missing Ce-Subject header")]
    MissingSubject,
    #[error("delivery is for project {0:?}, not the service's project")]
    WrongProject(String),
    #[error("unsupported content type {0:?}: send application/json or application/cbor")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Malformed(#[from] ParseError),
}

impl Rejection {
    /// Whether the sender proved it holds the secret (only then may its words be stored).
    pub fn authenticated(&self) -> bool {
        matches!(
            self,
            Rejection::UnsupportedMediaType(_) | Rejection::Malformed(_)
        )
    }
}

/// What the store does with one accepted delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub delivery_key: String,
    pub content_type: String,
    pub event_type: Option<String>,
    pub kind: EventKind,
    /// The Golioth device id (lower case): the assignment's `external_device_id`.
    pub device_external_id: String,
    /// The whole decoded body, kept on the delivery.
    pub payload: Value,
    /// The telemetry row's data and path (data deliveries only).
    pub data: Value,
    pub path: String,
    pub recorded_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// Move `last_seen` / `last_seen_online` (and status, see `fresh`) forward to `recorded_at`.
    pub seen: bool,
    /// Set status `offline` unless the device was seen after `recorded_at`.
    pub offline: bool,
    /// `recorded_at` is within the service's online threshold of receipt: seeing the device
    /// makes it `online` (a backfilled old message does not).
    pub fresh: bool,
    pub state: MappedState,
    /// Queue a `device_refresh` even when the device is known (lifecycle events).
    pub force_refresh: bool,
}

/// The local columns a data message feeds through the service's `state_paths`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappedState {
    pub battery_level: Option<f64>,
    pub signal_strength: Option<f64>,
    pub location: Option<Value>,
}

/// The service facts a delivery is checked against.
#[derive(Debug)]
pub struct Target<'a> {
    pub service_id: Uuid,
    pub config: &'a ServiceConfig,
    /// Current, then previous webhook secret (whichever are set).
    pub secrets: &'a [&'a str],
}

/// Check and parse one delivery for `target`, in order: size, authentication (raw bytes),
/// project, content type, body. `received` is the receipt time.
pub fn plan(
    target: &Target<'_>,
    headers: &HeaderMap,
    body: &[u8],
    received: DateTime<Utc>,
) -> Result<Plan, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Rejection::TooLarge(body.len()));
    }
    let cfg = target.config;
    verify::authenticate(
        &cfg.webhook,
        headers,
        body,
        target.secrets,
        received.timestamp(),
    )?;
    let subject = headers
        .get("ce-subject")
        .map(|v| v.to_str().map(str::trim).unwrap_or("\u{fffd}"));
    match subject {
        None | Some("") if cfg.webhook.auth == WebhookAuth::Token => {
            return Err(Rejection::MissingSubject);
        }
        Some(s) if !s.is_empty() && s != cfg.project_id => {
            return Err(Rejection::WrongProject(s.chars().take(64).collect()));
        }
        _ => {}
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let format = parse::body_format(content_type).ok_or_else(|| {
        Rejection::UnsupportedMediaType(content_type.unwrap_or("").chars().take(100).collect())
    })?;
    let payload = parse::decode(format, body)?;
    let d = parse::parse(payload, headers, received)?;
    if let Some(p) = &d.project_id
        && *p != cfg.project_id
    {
        return Err(Rejection::WrongProject(p.chars().take(64).collect()));
    }
    let delivery_key = delivery_key(
        headers,
        target.service_id,
        d.device_id.as_str(),
        d.event_type.as_deref(),
        body,
    )?;
    let opts = &cfg.sync;
    let status_group = opts.fields.status;
    let threshold = i64::try_from(opts.online_threshold_seconds).unwrap_or(i64::MAX);
    let state = if d.kind == EventKind::Data {
        mapped_state(&d.data, &d.path, opts)
    } else {
        MappedState::default()
    };
    Ok(Plan {
        delivery_key,
        content_type: content_type.unwrap_or_default().chars().take(100).collect(),
        event_type: d.event_type,
        kind: d.kind,
        device_external_id: d.device_id.as_str().to_owned(),
        fresh: received.signed_duration_since(d.time).num_seconds() <= threshold,
        seen: status_group && matches!(d.kind, EventKind::Data | EventKind::Online),
        offline: status_group && d.kind == EventKind::Offline,
        force_refresh: d.kind == EventKind::Lifecycle,
        state,
        data: d.data,
        payload: d.payload,
        path: d.path,
        recorded_at: d.time,
        received_at: received,
    })
}

fn key_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, ParseError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| ParseError::BadHeader(name))?.trim();
            if s.is_empty() {
                Ok(None)
            } else if s.len() > MAX_KEY_ID_LEN {
                Err(ParseError::BadHeader(name))
            } else {
                Ok(Some(s))
            }
        }
    }
}

/// The idempotency key: `webhook-id`, else `Ce-Id`, else a SHA-256 over the length-prefixed
/// service id, device, type, `Ce-Time` and raw body. Prefixed by source so they never collide.
pub fn delivery_key(
    headers: &HeaderMap,
    service: Uuid,
    device: &str,
    event_type: Option<&str>,
    body: &[u8],
) -> Result<String, ParseError> {
    if let Some(id) = key_header(headers, "webhook-id")? {
        return Ok(format!("webhook-id:{id}"));
    }
    if let Some(id) = key_header(headers, "ce-id")? {
        return Ok(format!("ce-id:{id}"));
    }
    let ce_time = headers
        .get("ce-time")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let mut h = Sha256::new();
    for part in [
        service.as_bytes().as_slice(),
        device.as_bytes(),
        event_type.unwrap_or_default().as_bytes(),
        ce_time,
        body,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Where a LightDB-style state path (`sensors/battery`) points inside one data message sent to
/// stream `path`: a state path under the stream path is read inside the data
/// (`sensor/battery` in a message to `sensor` → `data.battery`); the stream path itself is the
/// whole data; any other state path is read from the data's root.
pub fn lookup<'a>(data: &'a Value, path: &str, state_path: &str) -> Option<&'a Value> {
    let sp = state_path.trim_matches('/');
    let p = path.trim_matches('/');
    let found = if p.is_empty() {
        state_at(data, sp)
    } else if sp == p {
        Some(data)
    } else if let Some(rest) = sp.strip_prefix(p).and_then(|r| r.strip_prefix('/')) {
        state_at(data, rest)
    } else {
        state_at(data, sp)
    };
    found.filter(|v| !v.is_null())
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

/// The mapped columns a data message carries, limited to the synced field groups.
pub fn mapped_state(data: &Value, path: &str, opts: &SyncOptions) -> MappedState {
    let paths = &opts.state_paths;
    let at = |enabled: bool, sp: &Option<String>| {
        sp.as_deref()
            .filter(|_| enabled)
            .and_then(|sp| lookup(data, path, sp))
    };
    MappedState {
        battery_level: at(opts.fields.battery, &paths.battery).and_then(number),
        signal_strength: at(opts.fields.signal, &paths.signal).and_then(number),
        location: at(opts.fields.location, &paths.location).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    const DEV: &str = "612d3cecf3ee17d321adbec6";
    const SECRET: &str = "pipeline-secret-0123456789";

    fn config(extra: Value) -> ServiceConfig {
        let mut base = json!({"project_id": "proj",
            "state_paths": {"battery": "power/battery", "signal": "rssi", "location": "gps"}});
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        ServiceConfig::parse(&base, &[]).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn golioth(path: &str) -> HeaderMap {
        headers(&[
            ("content-type", "application/json"),
            ("ce-source", DEV),
            ("ce-subject", "proj"),
            ("ce-type", &format!("io.golioth.data.v1/.s/{path}")),
            ("ce-time", "2026-05-01T11:59:00Z"),
            ("x-webhook-token", SECRET),
        ])
    }

    fn now() -> DateTime<Utc> {
        "2026-05-01T12:00:00Z".parse().unwrap()
    }

    fn run(cfg: &ServiceConfig, h: &HeaderMap, body: &[u8]) -> Result<Plan, Rejection> {
        let secrets = [SECRET];
        let t = Target {
            service_id: Uuid::nil(),
            config: cfg,
            secrets: &secrets,
        };
        plan(&t, h, body, now())
    }

    #[test]
    fn a_golioth_delivery_becomes_a_plan() {
        let cfg = config(json!({}));
        let body = br#"{"battery": 81, "voltage": 3.7}"#;
        let p = run(&cfg, &golioth("power"), body).unwrap();
        assert_eq!(p.kind, EventKind::Data);
        assert_eq!(p.device_external_id, DEV);
        assert_eq!(p.path, "power");
        assert_eq!(p.state.battery_level, Some(81.0));
        assert_eq!(p.state.signal_strength, None);
        assert!(p.seen && p.fresh && !p.offline && !p.force_refresh);
        assert!(p.delivery_key.starts_with("sha256:"));
        assert_eq!(
            p.recorded_at,
            "2026-05-01T11:59:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        // Same bytes, same key; another body, another key; Ce-Id wins when sent.
        assert_eq!(
            run(&cfg, &golioth("power"), body).unwrap().delivery_key,
            p.delivery_key
        );
        assert_ne!(
            run(&cfg, &golioth("power"), br#"{"battery": 80}"#)
                .unwrap()
                .delivery_key,
            p.delivery_key
        );
        let mut with_id = golioth("power");
        with_id.insert("ce-id", HeaderValue::from_static("evt-1"));
        assert_eq!(
            run(&cfg, &with_id, body).unwrap().delivery_key,
            "ce-id:evt-1"
        );
        with_id.insert("webhook-id", HeaderValue::from_static("msg_1"));
        assert_eq!(
            run(&cfg, &with_id, body).unwrap().delivery_key,
            "webhook-id:msg_1"
        );
    }

    #[test]
    fn order_of_checks() {
        let cfg = config(json!({}));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            run(&cfg, &HeaderMap::new(), &big),
            Err(Rejection::TooLarge(MAX_BODY_BYTES + 1))
        );
        // Bad auth comes before anything about the body.
        let mut h = golioth("x");
        h.insert(
            "x-webhook-token",
            HeaderValue::from_static("wrong-secret-00000"),
        );
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            run(&cfg, &h, b"{"),
            Err(Rejection::Auth(AuthError::Mismatch))
        );
        // Then the project.
        let mut h = golioth("x");
        h.insert("ce-subject", HeaderValue::from_static("other"));
        assert_eq!(
            run(&cfg, &h, b"{}"),
            Err(Rejection::WrongProject("other".into()))
        );
        let mut h = golioth("x");
        h.remove("ce-subject");
        assert_eq!(run(&cfg, &h, b"{}"), Err(Rejection::MissingSubject));
        // Then the content type, then the body.
        let mut h = golioth("x");
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        assert!(matches!(
            run(&cfg, &h, b"{}"),
            Err(Rejection::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            run(&cfg, &golioth("x"), b"{"),
            Err(Rejection::Malformed(ParseError::Json(_)))
        ));
        // The envelope's project is checked like Ce-Subject.
        let body = json!({"data": {}, "device_id": DEV, "project_id": "other",
                          "timestamp": {"seconds": 1, "nanos": 0}});
        assert_eq!(
            run(&cfg, &golioth("x"), body.to_string().as_bytes()),
            Err(Rejection::WrongProject("other".into()))
        );
    }

    #[test]
    fn signed_schemes_do_not_require_ce_subject_but_check_it() {
        let cfg = config(json!({"webhook": {"auth": "hmac"}}));
        let body = br#"{"type": "device.online", "device_id": "612d3cecf3ee17d321adbec6"}"#;
        let sig = hmac_signature(SECRET, None, body);
        let h = headers(&[
            ("content-type", "application/json"),
            ("x-golioth-signature", &sig),
        ]);
        let p = run(&cfg, &h, body).unwrap();
        assert_eq!(p.kind, EventKind::Online);
        assert!(p.seen);
        let mut wrong = h.clone();
        wrong.insert("ce-subject", HeaderValue::from_static("elsewhere"));
        assert_eq!(
            run(&cfg, &wrong, body),
            Err(Rejection::WrongProject("elsewhere".into()))
        );
    }

    #[test]
    fn stale_messages_are_seen_but_do_not_make_a_device_online() {
        let cfg = config(json!({"online_threshold_seconds": 60}));
        let body = br#"{"t": "2026-05-01T11:50:00Z"}"#;
        let p = run(&cfg, &golioth("x"), body).unwrap();
        assert!(p.seen);
        assert!(!p.fresh);
    }

    #[test]
    fn selective_sync_and_lifecycle() {
        let cfg = config(json!({"sync_fields": {"status": false, "battery": false}}));
        let p = run(&cfg, &golioth("power"), br#"{"battery": 5}"#).unwrap();
        assert!(!p.seen);
        assert_eq!(p.state.battery_level, None);
        let body = json!({"type": "device.updated", "device_id": DEV});
        let p = run(
            &config(json!({})),
            &golioth("x"),
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(p.kind, EventKind::Lifecycle);
        assert!(p.force_refresh && !p.seen);
    }

    #[test]
    fn state_path_lookup() {
        let data = json!({"battery": 80, "power": {"battery": 70}, "lat": 1});
        assert_eq!(lookup(&data, "power", "power/battery"), Some(&json!(80)));
        assert_eq!(lookup(&data, "", "power/battery"), Some(&json!(70)));
        assert_eq!(lookup(&data, "other", "power/battery"), Some(&json!(70)));
        assert_eq!(lookup(&data, "gps", "gps"), Some(&data));
        assert_eq!(lookup(&data, "gps", "nothing/here"), None);
        assert_eq!(lookup(&json!({"b": null}), "", "b"), None);
        let cfg = config(json!({}));
        let s = mapped_state(&json!({"lat": 1.5, "lon": 2.5}), "gps", &cfg.sync);
        assert_eq!(s.location, Some(json!({"lat": 1.5, "lon": 2.5})));
        let s = mapped_state(&json!({"rssi": "-71"}), "net", &cfg.sync);
        assert_eq!(s.signal_strength, Some(-71.0));
    }
}
