//! Fuzz target: a Golioth Pipeline delivery end to end through `webhook::plan` (size, the three
//! authentication schemes on the raw bytes, project, content type, JSON/CBOR body, shapes, device,
//! time, idempotency key, mapped state), plus the parse and verify functions on their own.
//!
//! Input: one mode byte, then header lines `name: value` up to an empty line, then the body. Mode
//! bits: 0-1 the scheme (`token`, `hmac`, `standard`, `token` in `Authorization: Bearer`), 2 let
//! the harness sign the delivery correctly (so the parsers behind authentication are reached),
//! 3 `require_timestamp`, 4 a previous secret as well (rotation).

#![no_main]

use chrono::{TimeZone, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use shared::domain::service::ServiceConfig;
use shared::domain::webhook::parse::{self, BodyFormat};
use shared::domain::webhook::verify::{self, standard_key};
use shared::domain::webhook::{
    Target, delivery_key, hmac_signature, mapped_state, plan, standard_signature,
};
use uuid::Uuid;

const TOKEN: &str = "pipeline-secret-0123456789";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PREVIOUS: &str = "previous-secret-0123456789";
const WHSEC_PREVIOUS: &str = "whsec_cHJldmlvdXMtc2VjcmV0LTAxMjM0NTY3";

fn split(data: &[u8]) -> (HeaderMap, &[u8]) {
    let mut headers = HeaderMap::new();
    let mut rest = data;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..i];
        rest = &rest[i + 1..];
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            headers.append(n, v);
        }
    }
    (headers, rest)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let (mut headers, body) = split(data);
    let received = Utc.with_ymd_and_hms(2025, 11, 9, 20, 0, 0).unwrap();
    let now = received.timestamp();

    let (auth, header_name) = match mode & 3 {
        0 => ("token", "x-webhook-token"),
        1 => ("hmac", "x-webhook-token"),
        2 => ("standard", "x-webhook-token"),
        _ => ("token", "authorization"),
    };
    let config = ServiceConfig::parse(
        &json!({
            "project_id": "proj",
            "state_paths": {"battery": "power/battery", "signal": "rssi", "location": "gps"},
            "webhook": {"auth": auth, "header_name": header_name,
                        "require_timestamp": mode & 8 != 0},
        }),
        &[],
    )
    .expect("the fixed config parses");
    let standard = auth == "standard";
    let mut secrets = vec![if standard { WHSEC } else { TOKEN }];
    if mode & 16 != 0 {
        secrets.push(if standard { WHSEC_PREVIOUS } else { PREVIOUS });
    }

    if mode & 4 != 0 {
        // Sign as a legitimate sender would, replacing whatever the input says.
        let secret = secrets[secrets.len() - 1];
        let signed: Vec<(&'static str, String)> = match (mode & 3, standard) {
            (0, _) => vec![("x-webhook-token", secret.to_owned())],
            (3, _) => vec![("authorization", format!("Bearer {secret}"))],
            (_, false) => vec![
                (verify::HMAC_TIMESTAMP_HEADER, now.to_string()),
                (
                    verify::HMAC_SIGNATURE_HEADER,
                    hmac_signature(secret, Some(now), body),
                ),
            ],
            (_, true) => {
                let id = headers
                    .get(verify::STANDARD_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("msg_fuzz")
                    .trim()
                    .to_owned();
                let mut h = vec![(verify::STANDARD_TIMESTAMP_HEADER, now.to_string())];
                if let Ok(sig) = standard_signature(secret, &id, now, body) {
                    h.push((verify::STANDARD_SIGNATURE_HEADER, sig));
                }
                h
            }
        };
        for (name, value) in signed {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }

    let target = Target {
        service_id: Uuid::from_u128(7),
        config: &config,
        secrets: &secrets,
    };
    match plan(&target, &headers, body, received) {
        Ok(p) => {
            assert!(
                p.recorded_at <= received,
                "a delivery recorded in the future"
            );
            assert!(!p.delivery_key.is_empty());
        }
        Err(e) => {
            let _ = (e.to_string(), e.authenticated());
        }
    }

    // The pieces on their own, whatever authentication said.
    let _ = verify::authenticate(&config.webhook, &headers, body, &secrets, now);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = standard_key(text);
        let _ = parse::path_from_ce_type(text);
    }
    for format in [BodyFormat::Json, BodyFormat::Cbor] {
        if let Ok(v) = parse::decode(format, body) {
            let _ = parse::time_from_value(&v);
            let _ = mapped_state(&v, "", &config.sync);
            if let Ok(d) = parse::parse(v, &headers, received) {
                let _ = delivery_key(
                    &headers,
                    target.service_id,
                    d.device_id.as_str(),
                    None,
                    body,
                );
                let _ = mapped_state(&d.data, &d.path, &config.sync);
            }
        }
    }
    let _ = parse::time_from_value(&Value::String(String::from_utf8_lossy(body).into_owned()));
});
