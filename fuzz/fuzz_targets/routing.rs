//! Fuzz target: Spin route patterns and request paths (`RoutePattern::parse`, `matches`,
//! `routing::select`). The first line of the input is a pattern, the rest a request path, which
//! is also matched against every component's real route table.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shared::api::{Component, routes};
use shared::api::routing::{RoutePattern, select};

/// Every component's route table, parsed once.
fn tables() -> &'static [Vec<(RoutePattern, &'static str)>] {
    static TABLES: OnceLock<Vec<Vec<(RoutePattern, &'static str)>>> = OnceLock::new();
    TABLES.get_or_init(|| {
        Component::ALL
            .into_iter()
            .map(|c| {
                routes(c)
                    .iter()
                    .map(|r| {
                        (
                            RoutePattern::parse(r.pattern).expect("a route table pattern"),
                            r.method,
                        )
                    })
                    .collect()
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, path) = text.split_once('\n').unwrap_or((text, text));

    if let Ok(p) = RoutePattern::parse(pattern) {
        assert_eq!(p.as_str(), pattern);
        let names: Vec<&str> = p.param_names().collect();
        if let Some(params) = p.matches(path) {
            let got: Vec<(&str, &str)> = params.iter().collect();
            assert_eq!(got.len(), names.len(), "one value per parameter");
            for ((name, value), expected) in got.iter().zip(&names) {
                assert_eq!(name, expected);
                assert!(!value.is_empty() && !value.contains('/'), "{value:?}");
            }
        }
        let table = [(p.clone(), 0u8)];
        let _ = select(&table, path);
    }

    for table in tables() {
        if let Some((_, params)) = select(table, path) {
            let _ = params.get("org_id");
        }
    }
});
