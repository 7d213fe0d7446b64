//! Conflicts through the native host: listing with filters and cursors, resolving one conflict
//! (local / remote / custom, identity, delete-vs-modify) or many in bulk, the audit trail and the
//! queued `device_refresh` run, and the authorization rules (401 / 403 / 404).
//!
//! Conflicts are inserted through the owner connection, as the sync engine would record them.

use harness::{TestApp, spawn_app};
use serde_json::{Value, json};
use uuid::Uuid;

struct Org {
    id: Uuid,
    admin: String,
    member: String,
    member_id: Uuid,
    viewer: String,
}

async fn org(app: &TestApp, name: &str) -> Org {
    let id = app.seed_org(name).await;
    let member_id = app.seed_member(id, "member").await;
    Org {
        id,
        admin: app.jwt(app.seed_member(id, "admin").await),
        member: app.jwt(member_id),
        member_id,
        viewer: app.jwt(app.seed_member(id, "viewer").await),
    }
}

async fn service(app: &TestApp, o: &Org, name: &str) -> Uuid {
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/services", o.id),
            Some(&o.admin),
            &json!({"name": name, "config": {"project_id": "p1"}, "api_key": "k"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    Uuid::parse_str(r.json()["id"].as_str().unwrap()).unwrap()
}

fn ext(n: usize) -> String {
    format!("{n:024x}")
}

async fn device(app: &TestApp, org: Uuid, name: &str) -> Uuid {
    app.admin()
        .await
        .query_one(
            "INSERT INTO devices (organization_id, name, tags) VALUES ($1, $2, '{a}') RETURNING id",
            &[&org, &name],
        )
        .await
        .unwrap()
        .get(0)
}

async fn assign(app: &TestApp, org: Uuid, svc: Uuid, dev: Uuid, external: &str, base: Value) {
    app.admin()
        .await
        .execute(
            "INSERT INTO device_service_assignments \
                 (organization_id, device_id, service_id, external_device_id, base, sync_status) \
             VALUES ($1, $2, $3, $4, $5, 'conflict')",
            &[&org, &dev, &svc, &external, &base],
        )
        .await
        .unwrap();
}

/// A pending conflict, as the sync engine records it: about (device, Golioth id), of (field, type),
/// with [base, local, remote] values.
async fn conflict(
    app: &TestApp,
    org: Uuid,
    svc: Uuid,
    (dev, external): (Option<Uuid>, Option<&str>),
    (field, kind): (&str, &str),
    values: [Option<Value>; 3],
) -> Uuid {
    let [base, local, remote] = values;
    app.admin()
        .await
        .query_one(
            "INSERT INTO device_conflicts (organization_id, service_id, device_id, external_device_id, \
                 field_name, conflict_type, base_value, local_value, remote_value, \
                 local_updated_at, remote_updated_at, detected_run_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() - interval '1 minute', now(), \
                     gen_random_uuid()) RETURNING id",
            &[
                &org, &svc, &dev, &external, &field, &kind, &base, &local, &remote,
            ],
        )
        .await
        .unwrap()
        .get(0)
}

/// A device named `local`, linked with base `{"name": base}`, and a pending name conflict.
async fn name_conflict(
    app: &TestApp,
    o: &Org,
    svc: Uuid,
    n: usize,
    (base, local, remote): (&str, &str, &str),
) -> (Uuid, Uuid) {
    let dev = device(app, o.id, local).await;
    assign(
        app,
        o.id,
        svc,
        dev,
        &ext(n),
        json!({"name": base, "tags": ["a"]}),
    )
    .await;
    let id = conflict(
        app,
        o.id,
        svc,
        (Some(dev), Some(&ext(n))),
        ("name", "concurrent_modification"),
        [Some(json!(base)), Some(json!(local)), Some(json!(remote))],
    )
    .await;
    (dev, id)
}

fn conflicts(o: &Org) -> String {
    format!("/api/v1/orgs/{}/conflicts", o.id)
}

async fn device_name(app: &TestApp, dev: Uuid) -> String {
    app.admin()
        .await
        .query_one("SELECT name FROM devices WHERE id = $1", &[&dev])
        .await
        .unwrap()
        .get(0)
}

async fn base_of(app: &TestApp, dev: Uuid, svc: Uuid) -> Option<Value> {
    app.admin()
        .await
        .query_one(
            "SELECT base FROM device_service_assignments WHERE device_id = $1 AND service_id = $2",
            &[&dev, &svc],
        )
        .await
        .unwrap()
        .get(0)
}

/// (params of every queued device_refresh run of the service).
async fn refresh_runs(app: &TestApp, svc: Uuid) -> Vec<Value> {
    app.admin()
        .await
        .query(
            "SELECT params FROM sync_runs WHERE service_id = $1 AND operation = 'device_refresh' \
               AND status = 'queued' ORDER BY params->>'local_device_id'",
            &[&svc],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn audit_rows(app: &TestApp, conflict: Uuid) -> Vec<Value> {
    app.admin()
        .await
        .query(
            "SELECT details FROM golioth_sync_log \
             WHERE operation = 'conflict_resolved' AND details->>'conflict_id' = $1::text::uuid::text",
            &[&conflict.to_string()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Resolve one name conflict (base "B", local "L", remote "R") and check every effect.
async fn resolve_and_check(body: Value, expected_local: &str, strategy: &str) {
    let app = spawn_app().await;
    let o = org(&app, "acme").await;
    let svc = service(&app, &o, "prod").await;
    let (dev, id) = name_conflict(&app, &o, svc, 1, ("B", "L", "R")).await;

    let r = app
        .post(
            &format!("{}/{id}/resolve", conflicts(&o)),
            Some(&o.member),
            &body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!(c["id"], json!(id));
    assert_eq!(c["resolution_status"], "resolved");
    assert_eq!(c["resolution_strategy"], strategy);
    assert_eq!(c["resolved_value"], json!(expected_local));
    assert_eq!(c["resolved_by"], json!(o.member_id));
    assert!(c["resolved_at"].as_str().unwrap().ends_with('Z'), "{c}");
    assert_eq!(c["device_name"], expected_local);

    // Local value = the choice; base for the field = Golioth's value, other base fields kept.
    assert_eq!(device_name(&app, dev).await, expected_local);
    assert_eq!(
        base_of(&app, dev, svc).await,
        Some(json!({"name": "R", "tags": ["a"]}))
    );

    // The row, from the database.
    let row = app
        .admin()
        .await
        .query_one(
            "SELECT resolution_status, resolution_strategy, resolved_by, resolved_value, \
                    resolved_at IS NOT NULL AND resolved_at <= now() \
             FROM device_conflicts WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "resolved");
    assert_eq!(row.get::<_, String>(1), strategy);
    assert_eq!(row.get::<_, Uuid>(2), o.member_id);
    assert_eq!(row.get::<_, Value>(3), json!(expected_local));
    assert!(row.get::<_, bool>(4));

    // One audit row with the before/after values.
    let audit = audit_rows(&app, id).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    let d = &audit[0];
    assert_eq!(d["field"], "name");
    assert_eq!(d["resolution"], strategy);
    assert_eq!(d["before"]["local"], "L");
    assert_eq!(d["before"]["remote"], "R");
    assert_eq!(d["after"]["local"], json!(expected_local));
    assert_eq!(d["after"]["base"], "R");
    assert_eq!(d["resolved_by"], json!(o.member_id));
    let log = app
        .admin()
        .await
        .query_one(
            "SELECT service_id, device_id, status FROM golioth_sync_log \
             WHERE operation = 'conflict_resolved'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(log.get::<_, Uuid>(0), svc);
    assert_eq!(log.get::<_, Uuid>(1), dev);

    // Exactly one queued device_refresh run naming both ids, requested by the caller.
    assert_eq!(
        refresh_runs(&app, svc).await,
        vec![json!({"device_id": ext(1), "local_device_id": dev})]
    );
    let requested: Uuid = app
        .admin()
        .await
        .query_one(
            "SELECT requested_by FROM sync_runs WHERE service_id = $1",
            &[&svc],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(requested, o.member_id);

    // A second resolution is refused and changes nothing.
    let again = app
        .post(
            &format!("{}/{id}/resolve", conflicts(&o)),
            Some(&o.member),
            &json!({"resolution": "remote"}),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.content_type(), "application/problem+json");
    assert_eq!(again.json()["code"], "not_pending");
    assert_eq!(device_name(&app, dev).await, expected_local);
    assert_eq!(audit_rows(&app, id).await.len(), 1);
    assert_eq!(refresh_runs(&app, svc).await.len(), 1);
}

#[tokio::test]
async fn resolving_with_the_local_value() {
    resolve_and_check(json!({"resolution": "local"}), "L", "local").await;
}

#[tokio::test]
async fn resolving_with_the_remote_value() {
    resolve_and_check(json!({"resolution": "remote"}), "R", "remote").await;
}

#[tokio::test]
async fn resolving_with_a_custom_value() {
    resolve_and_check(
        json!({"resolution": "custom", "value": "Chosen"}),
        "Chosen",
        "custom",
    )
    .await;
}

#[tokio::test]
async fn a_custom_value_is_type_checked_and_bodies_are_validated() {
    let app = spawn_app().await;
    let o = org(&app, "acme").await;
    let svc = service(&app, &o, "prod").await;
    let dev = device(&app, o.id, "d").await;
    assign(&app, o.id, svc, dev, &ext(1), json!({"enabled": true})).await;
    let id = conflict(
        &app,
        o.id,
        svc,
        (Some(dev), Some(&ext(1))),
        ("enabled", "concurrent_modification"),
        [Some(json!(false)), Some(json!(true)), Some(json!(false))],
    )
    .await;
    let url = format!("{}/{id}/resolve", conflicts(&o));
    for (body, status) in [
        (json!({"resolution": "custom", "value": "yes"}), 422),
        (json!({"resolution": "custom", "value": [1]}), 422),
        (json!({"resolution": "custom"}), 422),
        (json!({"resolution": "local", "value": true}), 422),
        (json!({"resolution": "sideways"}), 422),
        (json!({"resolution": "link", "device_id": dev}), 422),
        (json!({"resolution": "local", "extra": 1}), 400),
        (json!([1]), 400),
    ] {
        let r = app.post(&url, Some(&o.member), &body).await;
        assert_eq!(r.status, status, "{body} -> {}", r.text());
        assert_eq!(r.content_type(), "application/problem+json");
    }
    let c = app
        .get(&format!("{}/{id}", conflicts(&o)), Some(&o.viewer))
        .await;
    assert_eq!(c.json()["resolution_status"], "pending");
    assert!(audit_rows(&app, id).await.is_empty());

    // A well-typed custom value goes through.
    let r = app
        .post(
            &url,
            Some(&o.member),
            &json!({"resolution": "custom", "value": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let enabled: bool = app
        .admin()
        .await
        .query_one("SELECT enabled FROM devices WHERE id = $1", &[&dev])
        .await
        .unwrap()
        .get(0);
    assert!(!enabled);
}

#[tokio::test]
async fn a_conflict_whose_device_changed_since_detection_is_not_overwritten() {
    let app = spawn_app().await;
    let o = org(&app, "acme").await;
    let svc = service(&app, &o, "prod").await;
    let (dev, id) = name_conflict(&app, &o, svc, 1, ("B", "L", "R")).await;
    // The platform edits the name after the sync recorded the conflict.
    app.admin()
        .await
        .execute("UPDATE devices SET name = 'edited' WHERE id = $1", &[&dev])
        .await
        .unwrap();
    let r = app
        .post(
            &format!("{}/{id}/resolve", conflicts(&o)),
            Some(&o.member),
            &json!({"resolution": "remote"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["code"], "stale");
    assert_eq!(device_name(&app, dev).await, "edited");
    assert!(refresh_runs(&app, svc).await.is_empty());

    // An edit of another field does not make the name conflict stale.
    let (dev2, id2) = name_conflict(&app, &o, svc, 2, ("B", "L", "R")).await;
    app.admin()
        .await
        .execute("UPDATE devices SET enabled = false WHERE id = $1", &[&dev2])
        .await
        .unwrap();
    let r = app
        .post(
            &format!("{}/{id2}/resolve", conflicts(&o)),
            Some(&o.member),
            &json!({"resolution": "remote"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(device_name(&app, dev2).await, "R");
}

#[tokio::test]
async fn list_filters_paginates_and_rejects_bad_filters() {
    let app = spawn_app().await;
    let o = org(&app, "acme").await;
    let svc = service(&app, &o, "prod").await;
    let other_svc = service(&app, &o, "staging").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(name_conflict(&app, &o, svc, n, ("B", "L", "R")).await.1);
    }
    let (dev_s, in_staging) = name_conflict(&app, &o, other_svc, 9, ("B", "L", "R")).await;
    let tags = conflict(
        &app,
        o.id,
        svc,
        (Some(dev_s), None),
        ("cohort_id", "first_sync_mismatch"),
        [None, Some(json!(null)), Some(json!("c1"))],
    )
    .await;

    // Everything, newest first, 3 per page, following next_cursor.
    let mut seen = Vec::new();
    let mut url = format!("{}?limit=3", conflicts(&o));
    loop {
        let r = app.get(&url, Some(&o.viewer)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("{}?limit=3&cursor={c}", conflicts(&o)),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 7);
    assert_eq!(seen[0], tags.to_string(), "newest first");

    // Items carry the device name, values, times, detecting run and resolution fields.
    let r = app
        .get(
            &format!("{}?service_id={svc}&field_name=name", conflicts(&o)),
            Some(&o.viewer),
        )
        .await;
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 5);
    let item = &items[0];
    for key in [
        "device_name",
        "base_value",
        "local_value",
        "remote_value",
        "local_updated_at",
        "remote_updated_at",
        "detected_run_id",
        "created_at",
    ] {
        assert!(!item[key].is_null(), "{key} in {item}");
    }
    assert_eq!(item["device_name"], "L");
    assert_eq!(item["service_name"], "prod");
    assert_eq!(item["resolved_by"], Value::Null);
    assert_eq!(
        item["allowed_resolutions"],
        json!(["local", "remote", "custom"])
    );

    for (query, expected) in [
        (format!("service_id={other_svc}"), 1),
        (format!("device_id={dev_s}"), 2),
        ("conflict_type=first_sync_mismatch".to_owned(), 1),
        ("field_name=cohort_id".to_owned(), 1),
        ("status=pending".to_owned(), 7),
        ("status=resolved".to_owned(), 0),
    ] {
        let r = app
            .get(&format!("{}?{query}", conflicts(&o)), Some(&o.viewer))
            .await;
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        assert_eq!(
            r.json()["items"].as_array().unwrap().len(),
            expected,
            "{query}"
        );
    }

    // After resolving one, the status filter sees it with who/how/when.
    let r = app
        .post(
            &format!("{}/{in_staging}/resolve", conflicts(&o)),
            Some(&o.member),
            &json!({"resolution": "local"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app
        .get(
            &format!("{}?status=resolved", conflicts(&o)),
            Some(&o.viewer),
        )
        .await;
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["resolved_by"], json!(o.member_id));
    assert_eq!(items[0]["resolution_strategy"], "local");
    assert!(items[0]["resolved_at"].is_string());
    assert_eq!(items[0]["allowed_resolutions"], json!([]));

    for query in [
        "status=open",
        "service_id=nope",
        "device_id=1",
        "field_name=colour",
        "conflict_type=other",
        "limit=0",
        "limit=201",
        "cursor=%%%",
        "cursor=e30",
    ] {
        let r = app
            .get(&format!("{}?{query}", conflicts(&o)), Some(&o.viewer))
            .await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert_eq!(r.content_type(), "application/problem+json");
    }

    // One conflict by id.
    let r = app
        .get(&format!("{}/{}", conflicts(&o), ids[0]), Some(&o.viewer))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], json!(ids[0]));
    assert_eq!(r.json()["external_device_id"], ext(0));
    let r = app
        .get(
            &format!("{}/{}", conflicts(&o), Uuid::new_v4()),
            Some(&o.viewer),
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn roles_tokens_and_tenants() {
    let app = spawn_app().await;
    let o = org(&app, "acme").await;
    let other = org(&app, "globex").await;
    let svc = service(&app, &o, "prod").await;
    let (dev, id) = name_conflict(&app, &o, svc, 1, ("B", "L", "R")).await;
    let resolve = format!("{}/{id}/resolve", conflicts(&o));
    let bulk = format!("{}/resolve", conflicts(&o));
    let body = json!({"resolution": "remote"});
    let bulk_body = json!({"ids": [id], "resolution": "remote"});

    // Viewers read but do not resolve.
    assert_eq!(app.get(&conflicts(&o), Some(&o.viewer)).await.status, 200);
    assert_eq!(
        app.get(&format!("{}/{id}", conflicts(&o)), Some(&o.viewer))
            .await
            .status,
        200
    );
    assert_eq!(app.post(&resolve, Some(&o.viewer), &body).await.status, 403);
    assert_eq!(
        app.post(&bulk, Some(&o.viewer), &bulk_body).await.status,
        403
    );

    // Another organization's members get 404 on every route, whatever their role there.
    for token in [&other.admin, &other.member, &other.viewer] {
        for (method, path, b) in [
            ("GET", conflicts(&o), None),
            ("GET", format!("{}/{id}", conflicts(&o)), None),
            ("POST", resolve.clone(), Some(&body)),
            ("POST", bulk.clone(), Some(&bulk_body)),
        ] {
            let r = app.request(method, &path, Some(token), b).await;
            assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
            assert_eq!(r.content_type(), "application/problem+json");
        }
    }
    // ... and through their own organization the conflict does not exist.
    let r = app
        .get(&format!("{}/{id}", conflicts(&other)), Some(&other.viewer))
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .post(
            &format!("{}/{id}/resolve", conflicts(&other)),
            Some(&other.member),
            &body,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = app
        .post(
            &format!("{}/resolve", conflicts(&other)),
            Some(&other.member),
            &bulk_body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["code"], "not_found");
    let r = app.get(&conflicts(&other), Some(&other.viewer)).await;
    assert_eq!(r.json()["items"], json!([]));

    // No token, a forged one, an expired one: 401.
    let forged = harness::mint_jwt(
        "not-the-secret-0123456789abcdef",
        &o.member_id.to_string(),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": o.member_id, "exp": chrono::Utc::now().timestamp() - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(harness::JWT_SECRET.as_bytes()),
    )
    .unwrap();
    for token in [None, Some(forged.as_str()), Some(expired.as_str())] {
        for (method, path, b) in [
            ("GET", conflicts(&o), None),
            ("GET", format!("{}/{id}", conflicts(&o)), None),
            ("POST", resolve.clone(), Some(&body)),
            ("POST", bulk.clone(), Some(&bulk_body)),
        ] {
            let r = app.request(method, &path, token, b).await;
            assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
        }
    }

    // Nothing was resolved by any of that.
    assert_eq!(device_name(&app, dev).await, "L");
    assert!(audit_rows(&app, id).await.is_empty());
    // Admins and owners resolve too.
    let r = app.post(&resolve, Some(&o.admin), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn bulk_resolution_of_500_conflicts_audits_each_one() {
    let app = spawn_app().await;
    let o = org(&app, "acme").await;
    let svc = service(&app, &o, "prod").await;
    // 500 devices, links and pending name conflicts, seeded in three statements.
    let admin = app.admin().await;
    admin
        .execute(
            "INSERT INTO devices (organization_id, name) \
             SELECT $1, 'local-' || n FROM generate_series(1, 500) n",
            &[&o.id],
        )
        .await
        .unwrap();
    admin
        .execute(
            "INSERT INTO device_service_assignments \
                 (organization_id, device_id, service_id, external_device_id, base) \
             SELECT $1, id, $2, lpad(to_hex(substring(name from 7)::int), 24, '0'), \
                    jsonb_build_object('name', 'base') \
             FROM devices WHERE organization_id = $1",
            &[&o.id, &svc],
        )
        .await
        .unwrap();
    let ids: Vec<Uuid> = admin
        .query(
            "INSERT INTO device_conflicts (organization_id, service_id, device_id, external_device_id, \
                 field_name, conflict_type, base_value, local_value, remote_value) \
             SELECT $1, $2, d.id, a.external_device_id, 'name', 'concurrent_modification', \
                    '\"base\"', to_jsonb(d.name), to_jsonb('remote-' || d.name) \
             FROM devices d JOIN device_service_assignments a ON a.device_id = d.id \
             WHERE d.organization_id = $1 RETURNING id",
            &[&o.id, &svc],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 500);

    let r = app
        .post(
            &format!("{}/resolve", conflicts(&o)),
            Some(&o.member),
            &json!({"ids": ids, "resolution": "remote"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["resolved"], 500, "{body}");
    assert_eq!(body["failed"], 0);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 500);
    for (res, id) in results.iter().zip(&ids) {
        assert_eq!(res["id"], json!(id));
        assert_eq!(res["status"], "resolved");
    }

    let counts = admin
        .query_one(
            "SELECT \
               (SELECT count(*) FROM device_conflicts WHERE resolution_status = 'resolved' \
                  AND resolved_by = $2 AND resolution_strategy = 'remote'), \
               (SELECT count(*) FROM devices WHERE organization_id = $1 AND name LIKE 'remote-local-%'), \
               (SELECT count(*) FROM device_service_assignments \
                  WHERE base->>'name' LIKE 'remote-local-%'), \
               (SELECT count(DISTINCT details->>'conflict_id') FROM golioth_sync_log \
                  WHERE operation = 'conflict_resolved'), \
               (SELECT count(*) FROM golioth_sync_log WHERE operation = 'conflict_resolved'), \
               (SELECT count(*) FROM sync_runs WHERE operation = 'device_refresh' \
                  AND status = 'queued')",
            &[&o.id, &o.member_id],
        )
        .await
        .unwrap();
    for i in 0..6 {
        assert_eq!(counts.get::<_, i64>(i), 500, "column {i}");
    }

    // Again: every one is now an error of its own, nothing is written twice.
    let r = app
        .post(
            &format!("{}/resolve", conflicts(&o)),
            Some(&o.member),
            &json!({"ids": ids, "resolution": "local"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["failed"], 500);
    assert_eq!(r.json()["results"][0]["code"], "not_pending");
    let logged: i64 = admin
        .query_one(
            "SELECT count(*) FROM golioth_sync_log WHERE operation = 'conflict_resolved'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 500);
}

#[tokio::test]
async fn bulk_resolution_by_filter_reports_each_conflict() {
    let app = spawn_app().await;
    let o = org(&app, "acme").await;
    let svc = service(&app, &o, "prod").await;
    let other_svc = service(&app, &o, "staging").await;
    let (d1, c1) = name_conflict(&app, &o, svc, 1, ("B", "L1", "R1")).await;
    let (d2, c2) = name_conflict(&app, &o, svc, 2, ("B", "L2", "R2")).await;
    let (_, elsewhere) = name_conflict(&app, &o, other_svc, 3, ("B", "L3", "R3")).await;
    // A second conflict on d1 (another field) and a stale one on d2's twin field.
    let cohort = conflict(
        &app,
        o.id,
        svc,
        (Some(d1), Some(&ext(1))),
        ("cohort_id", "concurrent_modification"),
        [Some(json!("c0")), Some(json!(null)), Some(json!("c9"))],
    )
    .await;
    app.admin()
        .await
        .execute("UPDATE devices SET name = 'edited' WHERE id = $1", &[&d2])
        .await
        .unwrap();

    // Custom "X" for every pending conflict of the service: the cohort accepts a string too.
    let r = app
        .post(
            &format!("{}/resolve", conflicts(&o)),
            Some(&o.member),
            &json!({"filter": {"service_id": svc}, "resolution": "custom", "value": "X"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["has_more"], false);
    let by_id: std::collections::HashMap<String, Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    assert_eq!(by_id.len(), 3, "{body}");
    assert_eq!(by_id[&c1.to_string()]["status"], "resolved");
    assert_eq!(by_id[&cohort.to_string()]["status"], "resolved");
    assert_eq!(by_id[&c2.to_string()]["status"], "error");
    assert_eq!(by_id[&c2.to_string()]["code"], "stale");
    assert!(by_id[&c2.to_string()]["error"].is_string());
    assert!(!by_id.contains_key(&elsewhere.to_string()));

    // d1 was written once with both values; one refresh run for it, none for d2.
    let row = app
        .admin()
        .await
        .query_one("SELECT name, cohort_id FROM devices WHERE id = $1", &[&d1])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "X");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("X"));
    assert_eq!(
        base_of(&app, d1, svc).await,
        Some(json!({"name": "R1", "cohort_id": "c9", "tags": ["a"]}))
    );
    assert_eq!(
        refresh_runs(&app, svc).await,
        vec![json!({"device_id": ext(1), "local_device_id": d1})]
    );
    assert_eq!(device_name(&app, d2).await, "edited");

    // A custom value of the wrong type fails per conflict; body errors fail the request.
    let r = app
        .post(
            &format!("{}/resolve", conflicts(&o)),
            Some(&o.member),
            &json!({"filter": {"service_id": other_svc}, "resolution": "custom", "value": 5}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["code"], "invalid");
    let bulk = format!("{}/resolve", conflicts(&o));
    for (body, status) in [
        (json!({"resolution": "local"}), 422),
        (
            json!({"ids": [c1], "filter": {}, "resolution": "local"}),
            422,
        ),
        (json!({"ids": [], "resolution": "local"}), 422),
        (json!({"ids": ["x"], "resolution": "local"}), 422),
        (
            json!({"ids": [c1], "resolution": "link", "device_id": d1}),
            400,
        ),
        (
            json!({"filter": {"colour": "red"}, "resolution": "local"}),
            400,
        ),
        (
            json!({"filter": {"field_name": "colour"}, "resolution": "local"}),
            422,
        ),
    ] {
        let r = app.post(&bulk, Some(&o.member), &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
    }
    let too_many: Vec<Uuid> = (0..1001).map(|_| Uuid::new_v4()).collect();
    let r = app
        .post(
            &bulk,
            Some(&o.member),
            &json!({"ids": too_many, "resolution": "local"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
}

#[tokio::test]
async fn identity_conflicts_link_a_candidate_or_create_a_device() {
    let app = spawn_app().await;
    let o = org(&app, "acme").await;
    let svc = service(&app, &o, "prod").await;
    let a = device(&app, o.id, "twin-a").await;
    let b = device(&app, o.id, "twin-b").await;
    let stranger = device(&app, o.id, "stranger").await;
    let candidates = json!([
        {"id": a, "name": "twin-a", "hardware_ids": ["hw1"]},
        {"id": b, "name": "twin-b", "hardware_ids": ["hw1"]},
    ]);
    let identity = |n: usize| {
        let candidates = candidates.clone();
        let app = &app;
        let o = &o;
        async move {
            conflict(
                app,
                o.id,
                svc,
                (None, Some(&ext(n))),
                ("identity", "identity"),
                [
                    None,
                    Some(candidates),
                    Some(json!({"id": ext(n), "name": format!("golioth-{n}"),
                                "hardware_ids": ["hw1"]})),
                ],
            )
            .await
        }
    };
    let first = identity(1).await;
    let url = format!("{}/{first}/resolve", conflicts(&o));
    for (body, status) in [
        (json!({"resolution": "link", "device_id": stranger}), 422),
        (json!({"resolution": "local"}), 422),
        (json!({"resolution": "link"}), 422),
    ] {
        let r = app.post(&url, Some(&o.member), &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
    }
    let r = app
        .post(
            &url,
            Some(&o.member),
            &json!({"resolution": "link", "device_id": b}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!(c["resolution_strategy"], "link");
    assert_eq!(c["device_id"], json!(b));
    assert_eq!(c["resolved_value"]["device_id"], json!(b));
    let link = app
        .admin()
        .await
        .query_one(
            "SELECT external_device_id, base FROM device_service_assignments \
             WHERE device_id = $1 AND service_id = $2",
            &[&b, &svc],
        )
        .await
        .unwrap();
    assert_eq!(link.get::<_, String>(0), ext(1));
    assert_eq!(link.get::<_, Option<Value>>(1), None, "first sync next");
    assert_eq!(audit_rows(&app, first).await.len(), 1);
    assert_eq!(
        refresh_runs(&app, svc).await,
        vec![json!({"device_id": ext(1), "local_device_id": b})]
    );

    // Linking b again to another Golioth device is refused: b already has a twin.
    let second = identity(2).await;
    let r = app
        .post(
            &format!("{}/{second}/resolve", conflicts(&o)),
            Some(&o.member),
            &json!({"resolution": "link", "device_id": b}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    // Creating a new device for it works.
    let r = app
        .post(
            &format!("{}/{second}/resolve", conflicts(&o)),
            Some(&o.member),
            &json!({"resolution": "create"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let created = Uuid::parse_str(r.json()["device_id"].as_str().unwrap()).unwrap();
    assert!(![a, b, stranger].contains(&created));
    assert_eq!(r.json()["device_name"], "golioth-2");
    let row = app
        .admin()
        .await
        .query_one(
            "SELECT d.hardware_ids, a.external_device_id, a.base IS NULL FROM devices d \
             JOIN device_service_assignments a ON a.device_id = d.id WHERE d.id = $1",
            &[&created],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<String>>(0), vec!["hw1".to_owned()]);
    assert_eq!(row.get::<_, String>(1), ext(2));
    assert!(row.get::<_, bool>(2));
    assert_eq!(refresh_runs(&app, svc).await.len(), 2);
}

#[tokio::test]
async fn delete_vs_modify_conflicts_follow_the_sync_core() {
    let app = spawn_app().await;
    let o = org(&app, "acme").await;
    let svc = service(&app, &o, "prod").await;
    let url = |id: Uuid| format!("{}/{id}/resolve", conflicts(&o));
    let values = |name: &str| {
        json!({"name": name, "enabled": true, "tags": ["a"], "hardware_ids": [],
               "blueprint_id": null, "cohort_id": null})
    };

    // Golioth deleted it, the platform edited it. Keep the local device: the link is reset so the
    // next sync creates it in Golioth again.
    let kept = device(&app, o.id, "edited").await;
    assign(&app, o.id, svc, kept, &ext(1), values("old")).await;
    let c = conflict(
        &app,
        o.id,
        svc,
        (Some(kept), Some(&ext(1))),
        ("device", "delete_vs_modify"),
        [Some(values("old")), Some(values("edited")), None],
    )
    .await;
    let r = app
        .post(
            &url(c),
            Some(&o.member),
            &json!({"resolution": "custom", "value": 1}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let r = app
        .post(&url(c), Some(&o.member), &json!({"resolution": "local"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["resolved_value"]["op"], "reset_link");
    let row = app
        .admin()
        .await
        .query_one(
            "SELECT external_device_id, base FROM device_service_assignments WHERE device_id = $1",
            &[&kept],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, Option<Value>>(1), None);
    assert_eq!(
        refresh_runs(&app, svc).await,
        vec![json!({"local_device_id": kept})]
    );

    // Accept Golioth's deletion: base := the local values, so the next sync deletes locally.
    let gone = device(&app, o.id, "edited").await;
    assign(&app, o.id, svc, gone, &ext(2), values("old")).await;
    let c = conflict(
        &app,
        o.id,
        svc,
        (Some(gone), Some(&ext(2))),
        ("device", "delete_vs_modify"),
        [Some(values("old")), Some(values("edited")), None],
    )
    .await;
    let r = app
        .post(&url(c), Some(&o.member), &json!({"resolution": "remote"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(base_of(&app, gone, svc).await, Some(values("edited")));

    // Deleted locally, edited in Golioth; keep Golioth's: restore with its values.
    let restored = device(&app, o.id, "old").await;
    app.admin()
        .await
        .execute(
            "UPDATE devices SET deleted_at = now() WHERE id = $1",
            &[&restored],
        )
        .await
        .unwrap();
    assign(&app, o.id, svc, restored, &ext(3), values("old")).await;
    let c = conflict(
        &app,
        o.id,
        svc,
        (Some(restored), Some(&ext(3))),
        ("device", "delete_vs_modify"),
        [Some(values("old")), None, Some(values("renamed"))],
    )
    .await;
    let r = app
        .post(&url(c), Some(&o.member), &json!({"resolution": "remote"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let row = app
        .admin()
        .await
        .query_one(
            "SELECT name, deleted_at IS NULL FROM devices WHERE id = $1",
            &[&restored],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "renamed");
    assert!(row.get::<_, bool>(1));
    assert_eq!(base_of(&app, restored, svc).await, Some(values("renamed")));
    assert_eq!(audit_rows(&app, c).await.len(), 1);
}

/// The bulk resolve's `dry_run`: the server's own preview. Each conflict is checked as resolving
/// it would check it (a stale one and a second write to the same field fail with their reason,
/// an identity conflict cannot take "local"), the answer says what each side holds now and will
/// hold, and nothing is written: no conflict resolved, no device changed, no audit row, no run.
#[tokio::test]
async fn a_bulk_dry_run_previews_each_resolution_and_writes_nothing() {
    let app = spawn_app().await;
    let o = org(&app, "acme").await;
    let svc = service(&app, &o, "prod").await;
    let (d1, c1) = name_conflict(&app, &o, svc, 1, ("B", "L1", "R1")).await;
    let (d2, c2) = name_conflict(&app, &o, svc, 2, ("B", "L2", "R2")).await;
    app.admin()
        .await
        .execute("UPDATE devices SET name = 'edited' WHERE id = $1", &[&d2])
        .await
        .unwrap();
    let identity = conflict(
        &app,
        o.id,
        svc,
        (None, Some(&ext(9))),
        ("identity", "identity"),
        [
            None,
            Some(json!([])),
            Some(json!({"id": ext(9), "name": "g"})),
        ],
    )
    .await;
    let url = format!("{}/resolve", conflicts(&o));
    let body = json!({"ids": [c1, c2, identity, c1], "resolution": "remote", "dry_run": true});
    let r = app.post(&url, Some(&o.member), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    assert_eq!(p["dry_run"], true);
    assert_eq!(
        (p["would_resolve"].as_u64(), p["failed"].as_u64()),
        (Some(1), Some(2)),
        "{p}"
    );
    let results = p["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "each id once: {p}");
    assert_eq!(
        results[0],
        json!({"id": c1, "status": "would_resolve", "field": "name",
               "local_now": "L1", "remote_now": "R1", "value": "R1"})
    );
    assert_eq!(results[1]["status"], "error");
    assert_eq!(results[1]["code"], "stale", "{p}");
    assert_eq!(results[2]["status"], "error");
    assert_eq!(results[2]["code"], "invalid", "{p}");
    // Nothing written.
    let admin = app.admin().await;
    let pending: i64 = admin
        .query_one(
            "SELECT count(*) FROM device_conflicts WHERE resolution_status = 'pending'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 3);
    assert_eq!(device_name(&app, d1).await, "L1");
    assert!(audit_rows(&app, c1).await.is_empty());
    assert!(refresh_runs(&app, svc).await.is_empty());
    // A viewer may not preview (same access as resolving); a bad dry_run is a 422.
    let r = app.post(&url, Some(&o.viewer), &body).await;
    assert_eq!(r.status, 403);
    let r = app
        .post(
            &url,
            Some(&o.member),
            &json!({"ids": [c1], "resolution": "remote", "dry_run": "yes"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.content_type(), "application/problem+json");
    // The same request without dry_run resolves what the preview said it would.
    let r = app
        .post(
            &url,
            Some(&o.member),
            &json!({"ids": [c1, c2, identity], "resolution": "remote"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["resolved"].as_u64(), r.json()["failed"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(device_name(&app, d1).await, "R1");
}
