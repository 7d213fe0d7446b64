//! The secret-leak test (issue 8): a full run — service set-up, key test, syncs (including one
//! that fails because Golioth revoked the key), webhook deliveries good and bad, every read
//! route — while collecting every response body, every log line the service wrote, and every
//! text the database holds outside the encrypted credentials column, and any panic message;
//! then search all of it for the secrets (the encryption key also as raw bytes and hex, and the
//! database password).

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use harness::{
    APP_ROLE_PASSWORD, ENCRYPTION_KEY, Host, INTERNAL_TOKEN, JWT_SECRET, spawn_app_with,
};
use host::simulator::{ProjectSpec, SeedSpec, SimOptions, Simulator};
use serde_json::json;

#[tokio::test]
async fn no_secret_appears_in_responses_logs_or_the_database() {
    shared::base::log::capture(true);
    // Panic messages too (none is expected on a request path; if one happens, it must not
    // carry a secret either).
    let panics: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut p) = sink.lock() {
            p.push(info.to_string());
        }
    }));
    let api_key = format!("golioth-key-{}", uuid::Uuid::new_v4().simple());
    let webhook_secret = format!("webhook-secret-{}", uuid::Uuid::new_v4().simple());
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    sim.create_project(ProjectSpec::new("leak-project", api_key.clone()))
        .unwrap();
    let ids = sim
        .seed(
            "leak-project",
            &SeedSpec {
                count: 20,
                name_prefix: "leak".into(),
                tags: vec!["t".into()],
                with_state: true,
                ..SeedSpec::default()
            },
        )
        .unwrap();
    let mut vars = std::collections::HashMap::new();
    vars.insert("golioth_base_url".to_owned(), sim.base_url());
    let app = spawn_app_with(harness::AppOptions { vars }).await;
    let org = app.seed_org("leak").await;
    let admin = app.jwt(app.seed_member(org, "owner").await);
    let mut bodies: Vec<String> = Vec::new();

    let base = format!("/api/v1/orgs/{org}");
    let r = app
        .post(
            &format!("{base}/services"),
            Some(&admin),
            &json!({"name": "leaky", "config": {"project_id": "leak-project", "base_url": sim.base_url()},
                    "api_key": api_key, "webhook_secret": webhook_secret}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let svc = r.json()["id"].as_str().unwrap().to_owned();
    bodies.push(r.text());
    let svc_base = format!("{base}/services/{svc}");

    for (method, path, body) in [
        ("GET", format!("{base}/services"), None),
        ("GET", svc_base.clone(), None),
        ("POST", format!("{svc_base}/test"), Some(json!({}))),
        (
            "PATCH",
            svc_base.clone(),
            Some(json!({"config": {"project_id": "x", "bogus": 1}})),
        ),
        ("PATCH", svc_base.clone(), Some(json!({"api_key": 42}))),
        (
            "POST",
            format!("{svc_base}/sync"),
            Some(json!({"operation": "bidirectional"})),
        ),
        ("GET", format!("{base}/sync-runs"), None),
        ("GET", format!("{base}/sync-log?limit=200"), None),
        ("GET", format!("{svc_base}/stats"), None),
        ("GET", format!("{base}/conflicts"), None),
        ("GET", format!("{svc_base}/assignments"), None),
    ] {
        let r = app
            .request(method, &path, Some(&admin), body.as_ref())
            .await;
        assert!(r.status < 500, "{method} {path}: {} {}", r.status, r.text());
        bodies.push(r.text());
    }

    // Webhook deliveries: a good one, a bad token, a near-miss token.
    for token in [
        webhook_secret.clone(),
        "wrong".to_owned(),
        format!("{webhook_secret}x"),
    ] {
        let r = app
            .send(
                app.client
                    .post(format!("{}/webhooks/golioth/{svc}", app.base_url))
                    .header("x-webhook-token", token)
                    .header("content-type", "application/json")
                    .header("ce-source", &ids[0])
                    .header("ce-subject", "leak-project")
                    .header("ce-type", "io.golioth.data.v1/.s/sensor")
                    .body(r#"{"battery": 50}"#),
            )
            .await;
        bodies.push(r.text());
        bodies.push(format!("{:?}", r.headers));
    }

    // Golioth revokes the key: the next sync and the key test fail; their errors are kept too.
    sim.revoke_api_key(&api_key);
    for (method, path, body) in [
        ("POST", format!("{svc_base}/test"), Some(json!({}))),
        (
            "POST",
            format!("{svc_base}/sync"),
            Some(json!({"operation": "bidirectional", "force": true})),
        ),
        ("GET", format!("{base}/sync-runs"), None),
        ("GET", format!("{base}/sync-log?limit=200"), None),
    ] {
        let r = app
            .request(method, &path, Some(&admin), body.as_ref())
            .await;
        bodies.push(r.text());
    }

    // Everything the database holds as text, except the encrypted credentials.
    let db = app.admin().await;
    let mut stored: Vec<String> = Vec::new();
    for q in [
        "SELECT coalesce(details::text, '') FROM golioth_sync_log",
        "SELECT concat_ws(' ', params::text, cursor::text, stats::text, error, phase) FROM sync_runs",
        "SELECT concat_ws(' ', base_value::text, local_value::text, remote_value::text, resolved_value::text) FROM device_conflicts",
        "SELECT concat_ws(' ', payload::text, error, delivery_key, device_external_id) FROM webhook_deliveries",
        "SELECT concat_ws(' ', name, config::text) FROM device_services",
        "SELECT concat_ws(' ', last_error, base::text) FROM device_service_assignments",
        "SELECT data::text FROM device_telemetry",
        "SELECT concat_ws(' ', name, metadata::text) FROM devices",
    ] {
        for row in db.query(q, &[]).await.unwrap() {
            stored.push(row.get::<_, Option<String>>(0).unwrap_or_default());
        }
    }
    // Under Spin, everything Spin and the components wrote to their log folder.
    let logs = match app.host() {
        Host::Spin(spin) => spin.log_lines(),
        Host::Native(_) => shared::base::log::captured(),
        Host::Process(_) => unreachable!("this test never starts a host process"),
    };
    shared::base::log::capture(false);
    assert!(!logs.is_empty(), "the service logged nothing?");
    std::panic::set_hook(previous);
    let panics: Vec<String> = panics.lock().map(|p| p.clone()).unwrap_or_default();

    // The encryption key as configured (base64), as its raw bytes and as hex.
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(ENCRYPTION_KEY)
        .unwrap();
    let key_raw = String::from_utf8_lossy(&key_bytes).into_owned();
    let key_hex: String = key_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secrets = [
        ("Golioth API key", api_key.as_str()),
        ("webhook secret", webhook_secret.as_str()),
        ("encryption key", ENCRYPTION_KEY),
        ("encryption key bytes", key_raw.as_str()),
        ("encryption key hex", key_hex.as_str()),
        ("JWT secret", JWT_SECRET),
        ("internal token", INTERNAL_TOKEN),
        ("database password", APP_ROLE_PASSWORD),
    ];
    for (what, secret) in secrets {
        for (where_, texts) in [
            ("responses", &bodies),
            ("logs", &logs),
            ("database", &stored),
            ("panics", &panics),
        ] {
            if let Some(t) = texts.iter().find(|t| t.contains(secret)) {
                panic!("the {what} appears in {where_}: {t}");
            }
        }
    }
    // Secrets' distinctive halves do not appear either (no partial echo beyond the last 4).
    let half = &api_key[..api_key.len() - 4];
    assert!(
        !bodies
            .iter()
            .chain(&logs)
            .chain(&stored)
            .any(|t| t.contains(half)),
        "a prefix of the API key leaked"
    );
}
