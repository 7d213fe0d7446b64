//! Fuzz target: a service's `config` and the create/update bodies that carry it
//! (`ServiceConfig::parse`, `ServiceWrite::parse`), fed any JSON a client can send.
//!
//! Beyond "no panic": a config that parses must survive its own storage round trip, because the
//! stored `to_json()` is parsed again by the same function on every read and every sync run.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use shared::domain::service::{ServiceConfig, ServiceWrite};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let allowed = [
        "https://api.golioth.io".to_owned(),
        "http://127.0.0.1:4100".to_owned(),
    ];
    match ServiceConfig::parse(&value, &allowed) {
        Ok(cfg) => {
            let stored = cfg.to_json();
            let reread = ServiceConfig::parse(&stored, &allowed)
                .unwrap_or_else(|e| panic!("a stored config no longer parses: {e}\n{stored}"));
            assert_eq!(reread, cfg, "the stored config reads back different");
            let _ = cfg.base_url("https://api.golioth.io");
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = e.into_response("fuzz");
        }
    }
    for creating in [false, true] {
        if let Err(e) = ServiceWrite::parse(&value, creating, &allowed) {
            let _ = e.into_response("fuzz");
        }
    }
    // The same value as the `config` of a create request, as the API receives it.
    let body = json!({"name": "fuzz", "config": value});
    let _ = ServiceWrite::parse(&body, true, &allowed);
});
