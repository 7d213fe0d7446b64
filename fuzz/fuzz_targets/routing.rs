//! Fuzz target: Spin route patterns and request paths (`RoutePattern::parse`, `matches`,
//! `routing::select`). The first line of the input is a pattern, the rest a request path, which
//! is also matched against every component's real route table.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::api::{Component, routes};
use shared::routing::{RoutePattern, select};

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

    for component in Component::ALL {
        let table: Vec<(RoutePattern, &str)> = routes(component)
            .iter()
            .map(|r| {
                (
                    RoutePattern::parse(r.pattern).expect("a route table pattern"),
                    r.method,
                )
            })
            .collect();
        if let Some((_, params)) = select(&table, path) {
            let _ = params.get("org_id");
        }
    }
});
