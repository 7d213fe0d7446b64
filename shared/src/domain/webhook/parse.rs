//! Parsing an authenticated delivery: the body (JSON, or CBOR converted to JSON), its shape
//! (plain data, the `inject-metadata` envelope, the original platform's event envelope), the
//! device, the stream path and the message time. Pure; the receipt time is passed in.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration, SubsecRound, TimeZone, Utc};
use http::HeaderMap;
use serde_json::{Map, Number, Value};

use crate::domain::golioth::GoliothDeviceId;

/// How far ahead of our clock a message time may be and still count (device clock skew). Later
/// times are not trusted: one would pin `last_seen` in the future, since state never moves back.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// Longest `Ce-Type` / event type / path kept.
pub const MAX_TYPE_LEN: usize = 256;

/// The body encodings accepted, from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Cbor,
}

/// `application/json` (or `+json`, `text/json`) and `application/cbor` (or `+cbor`); parameters
/// such as `charset` are ignored. Anything else, or no `Content-Type`, is unsupported (415).
pub fn body_format(content_type: Option<&str>) -> Option<BodyFormat> {
    let ct = content_type?.to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence == "text/json" || essence.ends_with("+json") {
        Some(BodyFormat::Json)
    } else if essence == "application/cbor" || essence.ends_with("+cbor") {
        Some(BodyFormat::Cbor)
    } else {
        None
    }
}

/// A malformed delivery (400). The text is safe to show the sender and to store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty body")]
    Empty,
    #[error("malformed JSON body: {0}")]
    Json(String),
    #[error("malformed CBOR body: {0}")]
    Cbor(String),
    #[error("the body contains a NUL character, which cannot be stored")]
    Nul,
    #[error("no device id: send Ce-Source or a body device_id")]
    NoDevice,
    #[error("the device id is not a Golioth device id (24 hex characters)")]
    BadDevice,
    #[error("Ce-Source and the body's device_id name different devices")]
    DeviceMismatch,
    #[error("unknown event type {0:?}")]
    UnknownEvent(String),
    #[error("a device.data event needs data")]
    MissingData,
    #[error("malformed {0} header")]
    BadHeader(&'static str),
}

/// Which of the accepted body shapes a delivery has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The device's data message itself (what a Pipeline sends without transformers).
    Plain,
    /// `{data, device_id, project_id, timestamp{seconds, nanos}}` from `inject-metadata`.
    InjectMetadata,
    /// `{type: device.*, device_id, data?, timestamp?}`: the original platform's relay envelope.
    Event,
}

/// What a delivery asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Device data: telemetry, last seen, mapped state.
    Data,
    /// `device.online`: last seen, no telemetry.
    Online,
    /// `device.offline`: status offline unless the device was seen later.
    Offline,
    /// `device.created|updated|deleted`: not trusted; a `device_refresh` run fetches the device.
    Lifecycle,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Data => "data",
            EventKind::Online => "online",
            EventKind::Offline => "offline",
            EventKind::Lifecycle => "lifecycle",
        }
    }
}

/// A parsed delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub shape: Shape,
    pub kind: EventKind,
    /// The envelope's `type`, else `Ce-Type`.
    pub event_type: Option<String>,
    pub device_id: GoliothDeviceId,
    /// The project named in the body (`project_id` of an envelope), to check like `Ce-Subject`.
    pub project_id: Option<String>,
    /// The stream path without `/.s/` (e.g. `sensor`); empty for the root or when unknown.
    pub path: String,
    /// Message time, microsecond precision, never later than receipt.
    pub time: DateTime<Utc>,
    /// The whole decoded body (CBOR converted to JSON).
    pub payload: Value,
    /// The device's data: the body, or an envelope's `data`.
    pub data: Value,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, ParseError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()).filter(|s| !s.is_empty()))
            .map_err(|_| ParseError::BadHeader(name)),
    }
}

/// Decode the body into JSON.
pub fn decode(format: BodyFormat, body: &[u8]) -> Result<Value, ParseError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let v = match format {
        BodyFormat::Json => {
            serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?
        }
        BodyFormat::Cbor => {
            let mut cursor = std::io::Cursor::new(body);
            let v: ciborium::Value =
                ciborium::from_reader(&mut cursor).map_err(|e| ParseError::Cbor(e.to_string()))?;
            if usize::try_from(cursor.position()).ok() != Some(body.len()) {
                return Err(ParseError::Cbor(
                    "trailing bytes after the first item".into(),
                ));
            }
            cbor_to_json(v)?
        }
    };
    if has_nul(&v) {
        return Err(ParseError::Nul);
    }
    Ok(v)
}

/// CBOR → JSON: integers stay numbers when they fit 64 bits (else decimal text), non-finite
/// floats become null, byte strings base64 text, tags are dropped for their content, integer map
/// keys become their decimal text. Other map keys cannot be represented (400).
fn cbor_to_json(v: ciborium::Value) -> Result<Value, ParseError> {
    use ciborium::Value as C;
    Ok(match v {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => {
            let n = i128::from(i);
            if let Ok(x) = i64::try_from(n) {
                Value::Number(x.into())
            } else if let Ok(x) = u64::try_from(n) {
                Value::Number(x.into())
            } else {
                Value::String(n.to_string())
            }
        }
        C::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        C::Text(s) => Value::String(s),
        C::Bytes(b) => Value::String(B64.encode(b)),
        C::Tag(_, inner) => cbor_to_json(*inner)?,
        C::Array(items) => Value::Array(
            items
                .into_iter()
                .map(cbor_to_json)
                .collect::<Result<_, _>>()?,
        ),
        C::Map(entries) => {
            let mut m = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key = match k {
                    C::Text(s) => s,
                    C::Integer(i) => i128::from(i).to_string(),
                    _ => return Err(ParseError::Cbor("map keys must be text or integers".into())),
                };
                m.insert(key, cbor_to_json(v)?);
            }
            Value::Object(m)
        }
        _ => return Err(ParseError::Cbor("unsupported CBOR value".into())),
    })
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

const INJECT_METADATA_KEYS: [&str; 4] = ["data", "device_id", "project_id", "timestamp"];

fn shape_of(v: &Value) -> Shape {
    let Value::Object(m) = v else {
        return Shape::Plain;
    };
    if m.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.starts_with("device."))
        && m.contains_key("device_id")
    {
        return Shape::Event;
    }
    let only_envelope_keys = m.keys().all(|k| INJECT_METADATA_KEYS.contains(&k.as_str()));
    if only_envelope_keys
        && m.contains_key("data")
        && m.get("device_id").is_some_and(Value::is_string)
        && (m.get("timestamp").is_some_and(Value::is_object)
            || m.get("project_id").is_some_and(Value::is_string))
    {
        return Shape::InjectMetadata;
    }
    Shape::Plain
}

/// `io.golioth.data.v1/.s/<path>` → `<path>`; another type gives the root (empty path).
pub fn path_from_ce_type(ce_type: &str) -> String {
    ce_type
        .strip_prefix("io.golioth.data.v1")
        .map(|rest| rest.trim_start_matches('/'))
        .map(|rest| rest.strip_prefix(".s").unwrap_or(rest))
        .map(|rest| rest.trim_matches('/').to_owned())
        .unwrap_or_default()
}

/// A time in any of the forms devices and Golioth use: RFC 3339 text, Unix time as a number or
/// numeric text (seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude), or
/// `{seconds, nanos}`.
pub fn time_from_value(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => n.as_f64().and_then(from_unix_number),
        Value::String(s) => {
            let s = s.trim();
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&Utc))
                .or_else(|| s.parse::<f64>().ok().and_then(from_unix_number))
        }
        Value::Object(m) => {
            let secs = m.get("seconds").and_then(|s| match s {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            })?;
            let nanos = m.get("nanos").and_then(Value::as_u64).unwrap_or(0);
            Utc.timestamp_opt(secs, u32::try_from(nanos).ok()?).single()
        }
        _ => None,
    }
}

fn from_unix_number(n: f64) -> Option<DateTime<Utc>> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let micros = if n >= 1e17 {
        n / 1e3
    } else if n >= 1e14 {
        n
    } else if n >= 1e11 {
        n * 1e3
    } else {
        n * 1e6
    };
    if micros > 1e17 {
        return None;
    }
    DateTime::from_timestamp_micros(micros as i64)
}

/// A message time is used when it is after 2000-01-01 (a smaller number is an uptime counter,
/// not a clock) and at most [`MAX_CLOCK_SKEW_SECS`] ahead of receipt; within the skew it is
/// clamped to receipt.
fn plausible(t: DateTime<Utc>, received: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let floor = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single()?;
    if t < floor || t > received + Duration::seconds(MAX_CLOCK_SKEW_SECS) {
        return None;
    }
    Some(t.min(received).trunc_subsecs(6))
}

const TIME_KEYS: [&str; 4] = ["t", "ts", "time", "timestamp"];

/// Parse a decoded body with its CloudEvents headers.
pub fn parse(
    payload: Value,
    headers: &HeaderMap,
    received: DateTime<Utc>,
) -> Result<Delivery, ParseError> {
    let shape = shape_of(&payload);
    let ce_type = header(headers, "ce-type")?;
    let ce_source = header(headers, "ce-source")?;
    let ce_time = header(headers, "ce-time")?;
    if ce_type.is_some_and(|t| t.len() > MAX_TYPE_LEN) {
        return Err(ParseError::BadHeader("ce-type"));
    }
    let envelope = match (&payload, shape) {
        (Value::Object(m), Shape::InjectMetadata | Shape::Event) => Some(m),
        _ => None,
    };
    let field = |k: &str| envelope.and_then(|m| m.get(k));

    let (kind, event_type) = match shape {
        Shape::Event => {
            let t = field("type").and_then(Value::as_str).unwrap_or_default();
            let kind = match t {
                "device.data" => EventKind::Data,
                "device.online" => EventKind::Online,
                "device.offline" => EventKind::Offline,
                "device.created" | "device.updated" | "device.deleted" => EventKind::Lifecycle,
                other => {
                    return Err(ParseError::UnknownEvent(
                        other.chars().take(MAX_TYPE_LEN).collect(),
                    ));
                }
            };
            (kind, Some(t.to_owned()))
        }
        _ => (EventKind::Data, ce_type.map(str::to_owned)),
    };

    // The device: Ce-Source and/or the envelope's device_id, which must agree. A Ce-Source that
    // is not a device id (the legacy Output Streams sent a gateway name) yields to the envelope.
    let from_body = match field("device_id") {
        None => None,
        Some(Value::String(s)) => {
            Some(GoliothDeviceId::parse(s).map_err(|_| ParseError::BadDevice)?)
        }
        Some(_) => return Err(ParseError::BadDevice),
    };
    let from_header = ce_source.map(GoliothDeviceId::parse);
    let device_id = match (from_header, from_body) {
        (Some(Ok(h)), Some(b)) if h != b => return Err(ParseError::DeviceMismatch),
        (Some(Ok(h)), _) => h,
        (_, Some(b)) => b,
        (Some(Err(_)), None) => return Err(ParseError::BadDevice),
        (None, None) => return Err(ParseError::NoDevice),
    };

    let project_id = match field("project_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };

    let path = match (ce_type, field("path").and_then(Value::as_str)) {
        (Some(t), _) if t.starts_with("io.golioth.data.v1") => path_from_ce_type(t),
        (_, Some(p)) => p.trim_matches('/').to_owned(),
        _ => String::new(),
    };
    if path.len() > MAX_TYPE_LEN {
        return Err(ParseError::BadHeader("ce-type"));
    }

    let data = match shape {
        Shape::Plain => payload.clone(),
        Shape::InjectMetadata => field("data").cloned().unwrap_or(Value::Null),
        Shape::Event => match field("data") {
            Some(d) if !d.is_null() => d.clone(),
            _ if kind == EventKind::Data => return Err(ParseError::MissingData),
            _ => Value::Null,
        },
    };

    // Time: the data's own t/ts/time/timestamp, else the envelope's timestamp, else Ce-Time,
    // else receipt.
    let from_data = data.as_object().and_then(|m| {
        TIME_KEYS
            .iter()
            .filter_map(|k| m.get(*k))
            .filter_map(time_from_value)
            .find_map(|t| plausible(t, received))
    });
    let time = from_data
        .or_else(|| {
            field("timestamp")
                .and_then(time_from_value)
                .and_then(|t| plausible(t, received))
        })
        .or_else(|| {
            ce_time
                .and_then(|s| time_from_value(&Value::String(s.to_owned())))
                .and_then(|t| plausible(t, received))
        })
        .unwrap_or_else(|| received.trunc_subsecs(6));

    Ok(Delivery {
        shape,
        kind,
        event_type,
        device_id,
        project_id,
        path,
        time,
        payload,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    const DEV: &str = "612d3cecf3ee17d321adbec6";

    fn received() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap()
    }

    fn ce(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn golioth_headers() -> HeaderMap {
        ce(&[
            ("ce-source", DEV),
            ("ce-subject", "proj"),
            ("ce-type", "io.golioth.data.v1/.s/sensor"),
            ("ce-time", "2026-05-01T11:59:00Z"),
        ])
    }

    #[test]
    fn content_types() {
        assert_eq!(
            body_format(Some("application/json")),
            Some(BodyFormat::Json)
        );
        assert_eq!(
            body_format(Some("Application/JSON; charset=utf-8")),
            Some(BodyFormat::Json)
        );
        assert_eq!(
            body_format(Some("application/cloudevents+json")),
            Some(BodyFormat::Json)
        );
        assert_eq!(
            body_format(Some("application/cbor")),
            Some(BodyFormat::Cbor)
        );
        assert_eq!(body_format(Some("application/octet-stream")), None);
        assert_eq!(body_format(Some("text/plain")), None);
        assert_eq!(body_format(None), None);
    }

    #[test]
    fn plain_json_takes_everything_from_the_headers() {
        let v = decode(BodyFormat::Json, br#"{"temp": 21.5}"#).unwrap();
        let d = parse(v, &golioth_headers(), received()).unwrap();
        assert_eq!(d.shape, Shape::Plain);
        assert_eq!(d.kind, EventKind::Data);
        assert_eq!(d.device_id.as_str(), DEV);
        assert_eq!(d.path, "sensor");
        assert_eq!(
            d.event_type.as_deref(),
            Some("io.golioth.data.v1/.s/sensor")
        );
        assert_eq!(d.time, Utc.with_ymd_and_hms(2026, 5, 1, 11, 59, 0).unwrap());
        assert_eq!(d.data, json!({"temp": 21.5}));
        assert_eq!(d.project_id, None);
    }

    #[test]
    fn time_precedence_payload_then_envelope_then_ce_time_then_receipt() {
        let h = golioth_headers();
        // Payload `ts` in milliseconds wins over Ce-Time.
        let d = parse(json!({"ts": 1_777_636_500_000_i64}), &h, received()).unwrap();
        assert_eq!(d.time, DateTime::from_timestamp(1_777_636_500, 0).unwrap());
        // `t` in seconds, RFC 3339 `time`, `{seconds, nanos}` `timestamp`.
        let d = parse(json!({"t": 1_777_636_000}), &h, received()).unwrap();
        assert_eq!(d.time, DateTime::from_timestamp(1_777_636_000, 0).unwrap());
        let d = parse(
            json!({"time": "2026-05-01T10:00:00.123456789+02:00"}),
            &h,
            received(),
        )
        .unwrap();
        assert_eq!(
            d.time,
            "2026-05-01T08:00:00.123456Z"
                .parse::<DateTime<Utc>>()
                .unwrap()
        );
        // An uptime counter is not a clock: falls back to Ce-Time.
        let d = parse(json!({"t": 12345}), &h, received()).unwrap();
        assert_eq!(d.time, Utc.with_ymd_and_hms(2026, 5, 1, 11, 59, 0).unwrap());
        // A time far in the future is ignored; one within the skew is clamped to receipt.
        let d = parse(json!({"t": "2027-01-01T00:00:00Z"}), &h, received()).unwrap();
        assert_eq!(d.time, Utc.with_ymd_and_hms(2026, 5, 1, 11, 59, 0).unwrap());
        let d = parse(json!({"t": "2026-05-01T12:01:00Z"}), &h, received()).unwrap();
        assert_eq!(d.time, received());
        // No time anywhere: receipt.
        let d = parse(json!({"x": 1}), &ce(&[("ce-source", DEV)]), received()).unwrap();
        assert_eq!(d.time, received());
        assert_eq!(d.path, "");
    }

    #[test]
    fn inject_metadata_envelope() {
        let body = json!({"data": {"battery": 80}, "device_id": DEV, "project_id": "proj",
                          "timestamp": {"seconds": 1_777_636_200, "nanos": 500_000_000}});
        let d = parse(body.clone(), &golioth_headers(), received()).unwrap();
        assert_eq!(d.shape, Shape::InjectMetadata);
        assert_eq!(d.data, json!({"battery": 80}));
        assert_eq!(d.project_id.as_deref(), Some("proj"));
        assert_eq!(
            d.time,
            DateTime::from_timestamp(1_777_636_200, 500_000_000).unwrap()
        );
        assert_eq!(d.payload, body);
        // Without Ce-Source the envelope names the device; a disagreeing Ce-Source is refused.
        let d = parse(body.clone(), &ce(&[]), received()).unwrap();
        assert_eq!(d.device_id.as_str(), DEV);
        let other = ce(&[("ce-source", "aaaaaaaaaaaaaaaaaaaaaaaa")]);
        assert_eq!(
            parse(body, &other, received()),
            Err(ParseError::DeviceMismatch)
        );
        // A device payload that merely has a `data` key stays plain.
        let d = parse(
            json!({"data": 1, "unit": "C"}),
            &golioth_headers(),
            received(),
        )
        .unwrap();
        assert_eq!(d.shape, Shape::Plain);
    }

    #[test]
    fn platform_event_envelope() {
        let h = ce(&[]);
        let d = parse(
            json!({"type": "device.data", "device_id": DEV.to_uppercase(), "path": "/env/",
                   "data": {"temp": 3}, "timestamp": "2026-05-01T11:00:00Z"}),
            &h,
            received(),
        )
        .unwrap();
        assert_eq!(d.shape, Shape::Event);
        assert_eq!(d.kind, EventKind::Data);
        assert_eq!(d.device_id.as_str(), DEV, "ids are lower-cased");
        assert_eq!(d.path, "env");
        assert_eq!(d.event_type.as_deref(), Some("device.data"));
        assert_eq!(d.time, Utc.with_ymd_and_hms(2026, 5, 1, 11, 0, 0).unwrap());
        for (t, k) in [
            ("device.online", EventKind::Online),
            ("device.offline", EventKind::Offline),
            ("device.created", EventKind::Lifecycle),
            ("device.updated", EventKind::Lifecycle),
            ("device.deleted", EventKind::Lifecycle),
        ] {
            let d = parse(json!({"type": t, "device_id": DEV}), &h, received()).unwrap();
            assert_eq!(d.kind, k, "{t}");
        }
        assert_eq!(
            parse(
                json!({"type": "device.exploded", "device_id": DEV}),
                &h,
                received()
            ),
            Err(ParseError::UnknownEvent("device.exploded".into()))
        );
        assert_eq!(
            parse(
                json!({"type": "device.data", "device_id": DEV}),
                &h,
                received()
            ),
            Err(ParseError::MissingData)
        );
        assert_eq!(
            parse(
                json!({"type": "device.online", "device_id": "nope"}),
                &h,
                received()
            ),
            Err(ParseError::BadDevice)
        );
    }

    #[test]
    fn device_is_required() {
        assert_eq!(
            parse(json!({"a": 1}), &ce(&[]), received()),
            Err(ParseError::NoDevice)
        );
        assert_eq!(
            parse(
                json!({"a": 1}),
                &ce(&[("ce-source", "golioth/app/gateway/coap")]),
                received()
            ),
            Err(ParseError::BadDevice)
        );
    }

    #[test]
    fn cbor_bodies() {
        let mut buf = Vec::new();
        ciborium::into_writer(
            &json!({"temp": 21.5, "n": -3, "ok": true, "list": [1, "a", null]}),
            &mut buf,
        )
        .unwrap();
        assert_eq!(
            decode(BodyFormat::Cbor, &buf).unwrap(),
            json!({"temp": 21.5, "n": -3, "ok": true, "list": [1, "a", null]})
        );
        // Bytes, tags, integer keys.
        let v = ciborium::Value::Map(vec![
            (
                ciborium::Value::Integer(1.into()),
                ciborium::Value::Bytes(vec![1, 2, 3]),
            ),
            (
                ciborium::Value::Text("t".into()),
                ciborium::Value::Tag(1, Box::new(ciborium::Value::Integer(1_700_000_000.into()))),
            ),
        ]);
        let mut buf = Vec::new();
        ciborium::into_writer(&v, &mut buf).unwrap();
        assert_eq!(
            decode(BodyFormat::Cbor, &buf).unwrap(),
            json!({"1": "AQID", "t": 1_700_000_000})
        );
        // Truncated and trailing input.
        assert!(matches!(
            decode(BodyFormat::Cbor, &buf[..buf.len() - 1]),
            Err(ParseError::Cbor(_))
        ));
        let mut trailing = buf.clone();
        trailing.push(0x01);
        assert!(matches!(
            decode(BodyFormat::Cbor, &trailing),
            Err(ParseError::Cbor(_))
        ));
        // JSON sent as CBOR is malformed CBOR (or trailing bytes), not silently accepted.
        assert!(decode(BodyFormat::Cbor, br#"{"a": 1}"#).is_err());
    }

    #[test]
    fn malformed_bodies() {
        assert_eq!(decode(BodyFormat::Json, b""), Err(ParseError::Empty));
        assert_eq!(decode(BodyFormat::Json, b"  \n"), Err(ParseError::Empty));
        assert!(matches!(
            decode(BodyFormat::Json, b"{\"a\":"),
            Err(ParseError::Json(_))
        ));
        assert_eq!(
            decode(BodyFormat::Json, br#"{"a": "x\u0000y"}"#),
            Err(ParseError::Nul)
        );
    }

    #[test]
    fn ce_type_paths() {
        assert_eq!(path_from_ce_type("io.golioth.data.v1/.s/sensor"), "sensor");
        assert_eq!(
            path_from_ce_type("io.golioth.data.v1/.s/env/temp"),
            "env/temp"
        );
        assert_eq!(path_from_ce_type("io.golioth.data.v1/.s"), "");
        assert_eq!(path_from_ce_type("DEVICE_STREAM_TYPE"), "");
    }
}
