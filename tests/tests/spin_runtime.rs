//! The zero-row guard on both hosts. Natively: each kind of statement that yields zero rows goes
//! through the native `PgDb` (which sends the same guarded statements Spin gets) and answers an
//! empty list; order is kept. Under Spin (`GS_TEST_HOST=spin`): the test-only `spin-probe`
//! component runs the same cases through the product's Spin adapter and must answer; and the
//! canary shows that without the guard, Spin 4.0.0–4.0.2 never answer a zero-row query.

use std::collections::HashMap;
use std::time::Duration;

use harness::{on_spin, spawn_app, start_spin};
use host::spin_up::{SpinOptions, spin_version};
use serde_json::Value;
use shared::base::ports::Db;
use shared::runtime::native::PgPool;
use spin_probe::{ORDERED_CASE, ZERO_ROW_CASES};

fn probe_manifest() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("spin-probe/spin.toml")
}

fn probe_vars(app: &harness::TestApp) -> HashMap<String, String> {
    ["db_host", "db_name", "db_user", "db_password"]
        .iter()
        .map(|k| ((*k).to_owned(), app.vars()[*k].clone()))
        .collect()
}

#[tokio::test]
async fn every_kind_of_zero_row_statement_answers_an_empty_list_and_order_is_kept() {
    let app = spawn_app().await;
    if on_spin() {
        let probe = start_spin(&SpinOptions {
            manifest: probe_manifest(),
            vars: probe_vars(&app),
            ..SpinOptions::default()
        });
        // A hang (the host bug) ends in this client's timeout and fails the test.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let resp = client
            .get(format!("{}/guarded", probe.base_url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the guarded probe did not answer: {e}\n{}", probe.logs()));
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let cases = body["cases"].as_array().unwrap();
        assert_eq!(cases.len(), ZERO_ROW_CASES.len());
        for (c, (kind, _)) in cases.iter().zip(ZERO_ROW_CASES) {
            assert_eq!(c["case"], *kind);
            assert_eq!(c["rows"], 0, "{c}");
            println!(
                "spin: {kind}: 0 rows in {:.1} ms",
                c["ms"].as_f64().unwrap_or(-1.0)
            );
        }
        let ordered: Vec<i64> = serde_json::from_value(body["ordered"].clone()).unwrap();
        assert_eq!(ordered, (1..=50).rev().collect::<Vec<i64>>());
    } else {
        let pool = PgPool::new(&app.app_db_url, 2).unwrap();
        let db = pool.lazy();
        for (kind, sql) in ZERO_ROW_CASES {
            let rows = db
                .query(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert!(rows.is_empty(), "{kind}");
        }
        let ordered: Vec<i64> = db
            .query(ORDERED_CASE, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<i64>("n").unwrap())
            .collect();
        assert_eq!(ordered, (1..=50).rev().collect::<Vec<i64>>());
    }
}

/// The canary: on Spin 4.0.0–4.0.2, a zero-row `query` sent without the guard never answers.
/// If this ever fails there, the guard may be guarding against nothing; on other Spin versions it
/// only reports what it saw.
#[tokio::test]
async fn without_the_guard_spin_4_0_never_answers_a_zero_row_query() {
    if !on_spin() {
        println!("spin-only: this test shows a Spin host bug; skipped on the native host");
        return;
    }
    let app = spawn_app().await;
    let version = spin_version().unwrap_or_default();
    let affected = ["spin 4.0.0", "spin 4.0.1", "spin 4.0.2"]
        .iter()
        .any(|v| version.starts_with(&format!("{v} ")));
    let probe = start_spin(&SpinOptions {
        manifest: probe_manifest(),
        vars: probe_vars(&app),
        ..SpinOptions::default()
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Every kind at once: each unguarded request either answers or runs into the 5 s timeout.
    let outcomes = futures::future::join_all(ZERO_ROW_CASES.iter().map(|(kind, _)| {
        let req = client.get(format!("{}/raw?case={kind}", probe.base_url()));
        async move { (*kind, req.send().await) }
    }))
    .await;
    for (kind, raw) in outcomes {
        match (&raw, affected) {
            (Err(e), true) => {
                assert!(e.is_timeout(), "{kind}: {e}");
                println!(
                    "{version}: unguarded {kind}: no answer within 5 s (spinframework/spin#3671)"
                );
            }
            (Ok(r), true) => panic!(
                "{version} answered an unguarded zero-row {kind} ({}): the host bug is gone",
                r.status()
            ),
            (_, false) => println!("{version}: unguarded {kind}: {raw:?}"),
        }
    }
}
