//! Services and assignments through the native host: validated config, write-only encrypted
//! secrets, role rules, tenant isolation (404 for another organization), and the key test
//! against the Golioth simulator.

use harness::{TestApp, spawn_app, spawn_app_with};
use host::simulator::{ProjectSpec, SimOptions, Simulator};
use serde_json::{Value, json};
use uuid::Uuid;

struct Org {
    id: Uuid,
    admin: String,
    member: String,
    viewer: String,
}

async fn org(app: &TestApp, name: &str) -> Org {
    let id = app.seed_org(name).await;
    Org {
        id,
        admin: app.jwt(app.seed_member(id, "admin").await),
        member: app.jwt(app.seed_member(id, "member").await),
        viewer: app.jwt(app.seed_member(id, "viewer").await),
    }
}

fn base(org: &Org) -> String {
    format!("/api/v1/orgs/{}/services", org.id)
}

async fn create(app: &TestApp, org: &Org, body: Value) -> Value {
    let r = app.post(&base(org), Some(&org.admin), &body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn create_read_update_delete_with_write_only_secrets() {
    let app = spawn_app().await;
    let o = org(&app, "acme").await;
    let svc = create(
        &app,
        &o,
        json!({"name": "prod", "config": {"project_id": "proj-1", "conflict_resolution": "local_wins"},
               "api_key": "golioth-api-key-WXYZ", "webhook_secret": "whsec-abcdefghijklmnop-1234"}),
    )
    .await;
    let text = svc.to_string();
    assert!(!text.contains("golioth-api-key"), "{text}");
    assert!(!text.contains("abcdefghijklmnop"), "{text}");
    assert_eq!(svc["credentials"]["api_key_set"], true);
    assert_eq!(svc["credentials"]["api_key_last4"], "WXYZ");
    assert_eq!(svc["credentials"]["webhook_secret_last4"], "1234");
    assert_eq!(svc["config"]["conflict_resolution"], "local_wins");
    assert_eq!(svc["config"]["sync_direction"], "bidirectional");
    let id = svc["id"].as_str().unwrap().to_owned();

    // Stored encrypted: the key's bytes are nowhere in the row.
    let row = app
        .admin()
        .await
        .query_one(
            "SELECT credentials, config::text FROM device_services WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    let creds: Vec<u8> = row.get(0);
    assert!(!creds.windows(8).any(|w| w == b"api-key-"));
    assert!(!row.get::<_, String>(1).contains("golioth-api-key"));

    // Viewers read, list shows it.
    let r = app.get(&base(&o), Some(&o.viewer)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    let r = app
        .get(&format!("{}/{id}", base(&o)), Some(&o.viewer))
        .await;
    assert_eq!(r.status, 200);

    // Rotating the webhook secret keeps the old one as "previous".
    let r = app
        .request(
            "PATCH",
            &format!("{}/{id}", base(&o)),
            Some(&o.admin),
            Some(&json!({"webhook_secret": "whsec-new-secret-value-5678", "sync_enabled": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["credentials"]["webhook_secret_last4"], "5678");
    assert_eq!(v["credentials"]["webhook_secret_previous_set"], true);
    assert_eq!(v["credentials"]["api_key_last4"], "WXYZ");
    assert_eq!(v["sync_enabled"], true);
    assert!(v["next_sync_at"].is_string());

    // Members cannot manage services; admins delete.
    let r = app
        .request(
            "DELETE",
            &format!("{}/{id}", base(&o)),
            Some(&o.member),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = app
        .request(
            "DELETE",
            &format!("{}/{id}", base(&o)),
            Some(&o.admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = app.get(&format!("{}/{id}", base(&o)), Some(&o.admin)).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn config_validation_names_unknown_keys_and_limits() {
    let app = spawn_app().await;
    let o = org(&app, "v").await;
    let cases = [
        (
            json!({"name": "a", "config": {"project_id": "p", "colour": "red"}}),
            400,
            Some("colour"),
        ),
        (
            json!({"name": "a", "config": {"project_id": "p"}, "extra": 1}),
            400,
            Some("extra"),
        ),
        (json!({"name": "a"}), 422, None),
        (
            json!({"name": "", "config": {"project_id": "p"}}),
            422,
            None,
        ),
        (
            json!({"name": "x".repeat(101), "config": {"project_id": "p"}}),
            422,
            None,
        ),
        (
            json!({"name": "a", "config": {"project_id": "p", "base_url": "https://evil.example"}}),
            422,
            None,
        ),
        (
            json!({"name": "a", "config": {"project_id": "p"}, "webhook_secret": "short"}),
            422,
            None,
        ),
        (
            json!({"name": "a", "config": {"project_id": "p"}, "api_key": "k".repeat(300)}),
            422,
            None,
        ),
    ];
    for (body, status, unknown) in cases {
        let r = app.post(&base(&o), Some(&o.admin), &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert_eq!(r.content_type(), "application/problem+json");
        if let Some(k) = unknown {
            assert!(
                r.json()["unknown_keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v == k),
                "{}",
                r.text()
            );
        }
    }
    // Malformed JSON, wrong content type, oversized body.
    let r = app
        .send(
            app.client
                .post(format!("{}{}", app.base_url, base(&o)))
                .bearer_auth(&o.admin)
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = app
        .send(
            app.client
                .post(format!("{}{}", app.base_url, base(&o)))
                .bearer_auth(&o.admin)
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert_eq!(r.status, 415);
    let big = json!({"name": "a", "config": {"project_id": "p"}, "pad": "x".repeat(70_000)});
    let r = app.post(&base(&o), Some(&o.admin), &big).await;
    assert_eq!(r.status, 413);
    let n: i64 = app
        .admin()
        .await
        .query_one("SELECT count(*) FROM device_services", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing half-written");

    // Duplicate names are a 409.
    create(
        &app,
        &o,
        json!({"name": "dup", "config": {"project_id": "p"}}),
    )
    .await;
    let r = app
        .post(
            &base(&o),
            Some(&o.admin),
            &json!({"name": "dup", "config": {"project_id": "p"}}),
        )
        .await;
    assert_eq!(r.status, 409);
}

#[tokio::test]
async fn other_organizations_get_404_and_tokens_are_checked() {
    let app = spawn_app().await;
    let a = org(&app, "a").await;
    let b = org(&app, "b").await;
    let svc = create(
        &app,
        &a,
        json!({"name": "s", "config": {"project_id": "p"}}),
    )
    .await;
    let id = svc["id"].as_str().unwrap();
    // B's admin on A's org: 404 everywhere; on B's org with A's service id: 404 too.
    for (method, path) in [
        ("GET", base(&a)),
        ("GET", format!("{}/{id}", base(&a))),
        ("PATCH", format!("{}/{id}", base(&a))),
        ("DELETE", format!("{}/{id}", base(&a))),
        ("GET", format!("{}/{id}", base(&b))),
        ("PATCH", format!("{}/{id}", base(&b))),
        ("DELETE", format!("{}/{id}", base(&b))),
        ("GET", format!("{}/{id}/assignments", base(&b))),
        ("POST", format!("{}/{id}/test", base(&b))),
    ] {
        let r = app
            .request(method, &path, Some(&b.admin), Some(&json!({"name": "x"})))
            .await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
    }
    // Missing, expired, forged and alg:none tokens.
    let user = Uuid::new_v4();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user.to_string(), "exp": chrono::Utc::now().timestamp() - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(harness::JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let forged = harness::mint_jwt(
        "not-the-secret",
        &user.to_string(),
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    for token in [
        None,
        Some("garbage"),
        Some(expired.as_str()),
        Some(forged.as_str()),
    ] {
        let r = app.get(&base(&a), token).await;
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(r.content_type(), "application/problem+json");
    }
    // The row is untouched.
    let r = app
        .get(&format!("{}/{id}", base(&a)), Some(&a.viewer))
        .await;
    assert_eq!(r.json()["name"], "s");
}

#[tokio::test]
async fn assignments_add_list_remove() {
    let app = spawn_app().await;
    let o = org(&app, "asg").await;
    let other = app.seed_org("other").await;
    let svc = create(
        &app,
        &o,
        json!({"name": "s", "config": {"project_id": "p"}}),
    )
    .await;
    let sid = svc["id"].as_str().unwrap();
    let db = app.admin().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let id: Uuid = db
            .query_one(
                "INSERT INTO devices (organization_id, name) VALUES ($1, $2) RETURNING id",
                &[&o.id, &format!("dev-{i}")],
            )
            .await
            .unwrap()
            .get(0);
        ids.push(id);
    }
    let foreign: Uuid = db
        .query_one(
            "INSERT INTO devices (organization_id, name) VALUES ($1, 'theirs') RETURNING id",
            &[&other],
        )
        .await
        .unwrap()
        .get(0);
    let path = format!("{}/{sid}/assignments", base(&o));
    let r = app
        .post(
            &path,
            Some(&o.admin),
            &json!({"device_ids": [ids[0], ids[1], ids[2], foreign]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["added"], 3);
    assert_eq!(r.json()["not_found"], json!([foreign.to_string()]));
    // Idempotent.
    let r = app
        .post(&path, Some(&o.admin), &json!({"device_ids": [ids[0]]}))
        .await;
    assert_eq!(r.json()["added"], 0);
    // Paginated listing.
    let r = app.get(&format!("{path}?limit=2"), Some(&o.viewer)).await;
    assert_eq!(r.status, 200);
    let page = r.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let r = app
        .get(&format!("{path}?limit=2&cursor={cursor}"), Some(&o.viewer))
        .await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    assert!(r.json()["next_cursor"].is_null());
    let r = app.get(&format!("{path}?limit=500"), Some(&o.viewer)).await;
    assert_eq!(r.status, 400);
    // Viewers cannot change assignments; admins remove.
    let r = app
        .post(&path, Some(&o.viewer), &json!({"device_ids": [ids[0]]}))
        .await;
    assert_eq!(r.status, 403);
    let r = app
        .request(
            "DELETE",
            &path,
            Some(&o.admin),
            Some(&json!({"device_ids": [ids[0], ids[1]]})),
        )
        .await;
    assert_eq!(r.json()["removed"], 2);
    // Too many ids.
    let many: Vec<String> = (0..1001).map(|_| Uuid::new_v4().to_string()).collect();
    let r = app
        .post(&path, Some(&o.admin), &json!({"device_ids": many}))
        .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn test_endpoint_checks_the_key_against_golioth() {
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let mut spec = ProjectSpec::new("proj-1", "key-good-0001");
    spec.name = Some("Fleet One".into());
    sim.create_project(spec).unwrap();
    let mut vars = std::collections::HashMap::new();
    vars.insert("golioth_base_url".to_owned(), sim.base_url());
    let app = spawn_app_with(harness::AppOptions { vars }).await;
    let o = org(&app, "t").await;
    let good = create(
        &app,
        &o,
        json!({"name": "good", "config": {"project_id": "proj-1", "base_url": sim.base_url()}, "api_key": "key-good-0001"}),
    )
    .await;
    let bad = create(
        &app,
        &o,
        json!({"name": "bad", "config": {"project_id": "proj-1", "base_url": sim.base_url()}, "api_key": "key-bad-0002"}),
    )
    .await;
    let r = app
        .post(
            &format!("{}/{}/test", base(&o), good["id"].as_str().unwrap()),
            Some(&o.member),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["project"]["name"], "Fleet One");
    let r = app
        .post(
            &format!("{}/{}/test", base(&o), bad["id"].as_str().unwrap()),
            Some(&o.member),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["golioth_status"], 401);
    assert!(!r.text().contains("key-bad"), "{}", r.text());
    assert!(!r.text().contains(&sim.base_url()), "{}", r.text());
}
