//! The authorization matrix: every route of the route table against every kind of caller —
//! viewer, member, admin, owner, non-member, no token, expired token, bad signature, `alg: none`.
//! The expected outcome comes from the table itself (`shared::api::Access`), so the table is the
//! one place the matrix is written down, and this test holds every handler to it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use harness::{INTERNAL_TOKEN, JWT_SECRET, TestApp, spawn_app};
use serde_json::json;
use shared::api::{Access, Component, Route, routes};
use shared::app::access::Role;
use uuid::Uuid;

struct World {
    org: Uuid,
    service: Uuid,
    run: Uuid,
    conflict: Uuid,
    tokens: Vec<(&'static str, Option<Role>, String)>,
    bad_tokens: Vec<(&'static str, Option<String>)>,
    outsider: String,
}

fn jwt_with(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn world(app: &TestApp) -> World {
    let org = app.seed_org("matrix").await;
    let mut tokens = Vec::new();
    for (name, role) in [
        ("viewer", Role::Viewer),
        ("member", Role::Member),
        ("admin", Role::Admin),
        ("owner", Role::Owner),
    ] {
        let user = app.seed_member(org, role.as_str()).await;
        tokens.push((name, Some(role), app.jwt(user)));
    }
    let member = app.seed_member(org, "viewer").await;
    let now = chrono::Utc::now().timestamp();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload =
        URL_SAFE_NO_PAD.encode(json!({"sub": member.to_string(), "exp": now + 600}).to_string());
    let bad_tokens = vec![
        ("no token", None),
        (
            "expired",
            Some(jwt_with(
                json!({"sub": member.to_string(), "exp": now - 3600}),
                JWT_SECRET,
            )),
        ),
        (
            "bad signature",
            Some(jwt_with(
                json!({"sub": member.to_string(), "exp": now + 600}),
                "wrong-secret",
            )),
        ),
        ("alg none", Some(format!("{header}.{payload}."))),
    ];
    let outsider = app.jwt(Uuid::new_v4());
    let db = app.admin().await;
    let service: Uuid = db
        .query_one(
            "INSERT INTO device_services (organization_id, name, config) \
             VALUES ($1, 'svc', '{\"project_id\": \"p\"}') RETURNING id",
            &[&org],
        )
        .await
        .unwrap()
        .get(0);
    let device: Uuid = db
        .query_one(
            "INSERT INTO devices (organization_id, name) VALUES ($1, 'd') RETURNING id",
            &[&org],
        )
        .await
        .unwrap()
        .get(0);
    let run: Uuid = db
        .query_one(
            "INSERT INTO sync_runs (organization_id, service_id, operation, status, finished_at) \
             VALUES ($1, $2, 'import', 'completed', now()) RETURNING id",
            &[&org, &service],
        )
        .await
        .unwrap()
        .get(0);
    let conflict: Uuid = db
        .query_one(
            "INSERT INTO device_conflicts (organization_id, service_id, device_id, field_name, \
             conflict_type, base_value, local_value, remote_value) \
             VALUES ($1, $2, $3, 'name', 'concurrent_modification', '\"a\"', '\"b\"', '\"c\"') RETURNING id",
            &[&org, &service, &device],
        )
        .await
        .unwrap()
        .get(0);
    World {
        org,
        service,
        run,
        conflict,
        tokens,
        bad_tokens,
        outsider,
    }
}

fn path_for(route: &Route, w: &World, service: Uuid) -> String {
    route
        .pattern
        .replace(":org_id", &w.org.to_string())
        .replace(":service_id", &service.to_string())
        .replace(":run_id", &w.run.to_string())
        .replace(":conflict_id", &w.conflict.to_string())
}

/// A body that names nothing real, so allowed callers get a validation answer, not a change.
fn body_for(route: &Route) -> serde_json::Value {
    match route.method {
        "GET" => json!(null),
        _ => json!({"matrix_probe": true}),
    }
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_table_says() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let mut checked = 0;
    let mut failures = Vec::new();
    for component in Component::ALL {
        for route in routes(component) {
            let Access::Org(min) = route.access else {
                continue;
            };
            // A fresh service per caller for DELETE, so an allowed delete does not change what
            // the next caller sees.
            for (name, role, token) in &w.tokens {
                let service = if route.method == "DELETE" && route.pattern.ends_with(":service_id")
                {
                    app.admin()
                        .await
                        .query_one(
                            "INSERT INTO device_services (organization_id, name, config) \
                             VALUES ($1, $2, '{\"project_id\": \"p\"}') RETURNING id",
                            &[&w.org, &format!("del-{}", Uuid::new_v4())],
                        )
                        .await
                        .unwrap()
                        .get(0)
                } else {
                    w.service
                };
                let path = path_for(route, &w, service);
                let body = body_for(route);
                let r = app
                    .request(
                        route.method,
                        &path,
                        Some(token),
                        (!body.is_null()).then_some(&body),
                    )
                    .await;
                let allowed = role.is_some_and(|r| r >= min);
                let ok = if allowed {
                    ![401, 403, 404, 405, 501].contains(&r.status) && r.status < 500
                } else {
                    r.status == 403
                };
                if !ok {
                    failures.push(format!(
                        "{} {} as {name}: {} {}",
                        route.method,
                        route.pattern,
                        r.status,
                        r.text()
                    ));
                }
                checked += 1;
            }
            let path = path_for(route, &w, w.service);
            let body = body_for(route);
            let body = (!body.is_null()).then_some(&body);
            for (name, token) in &w.bad_tokens {
                let r = app
                    .request(route.method, &path, token.as_deref(), body)
                    .await;
                if r.status != 401 {
                    failures.push(format!(
                        "{} {} with {name}: {}",
                        route.method, route.pattern, r.status
                    ));
                }
                checked += 1;
            }
            let r = app
                .request(route.method, &path, Some(&w.outsider), body)
                .await;
            if r.status != 404 {
                failures.push(format!(
                    "{} {} as non-member: {}",
                    route.method, route.pattern, r.status
                ));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 19 * 9, "{checked}");
}

#[tokio::test]
async fn internal_and_public_routes() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health", None).await.status, 200);
    for token in [None, Some("wrong"), Some(JWT_SECRET)] {
        let r = app.request("POST", "/internal/tick", token, None).await;
        assert_eq!(r.status, 401, "{token:?}");
    }
    let r = app
        .request("POST", "/internal/tick", Some(INTERNAL_TOKEN), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app
        .send(
            app.client
                .post(format!(
                    "{}/webhooks/golioth/{}",
                    app.base_url,
                    Uuid::new_v4()
                ))
                .header("content-type", "application/json")
                .header("x-webhook-token", "nope")
                .body("{}"),
        )
        .await;
    assert_eq!(r.status, 401);
}

/// `GET /api/v1/me` (`Access::User`): any valid token may ask, and the answer is about its own
/// user only: the organizations it belongs to (found across tenants by the SECURITY DEFINER
/// lookup, names read under each one's row level security) with names and roles, and the token's
/// display claims. Every bad token is a 401.
#[tokio::test]
async fn me_names_the_callers_own_organizations_and_nothing_else() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let me = Route {
        method: "GET",
        pattern: "/api/v1/me",
        endpoint: shared::api::Endpoint::Me,
        access: Access::User,
    };
    assert!(
        routes(Component::DeviceSync)
            .iter()
            .any(|r| r.pattern == me.pattern && r.method == me.method && r.access == me.access),
        "the route table serves GET /api/v1/me to any user"
    );
    for (name, token) in &w.bad_tokens {
        let r = app.get(me.pattern, token.as_deref()).await;
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        assert_eq!(r.content_type(), "application/problem+json", "{name}");
    }
    // A member of two organizations (admin in one, viewer in the other), with display claims.
    let other = app.seed_org("second").await;
    let _stranger = app.seed_org("stranger").await;
    let (_, _, admin_token) = &w.tokens[2];
    let user = Uuid::new_v4();
    let admin = app.admin().await;
    for (org, role) in [(w.org, "admin"), (other, "viewer")] {
        admin
            .execute(
                "INSERT INTO organization_members (organization_id, user_id, role, created_at) \
                 VALUES ($1, $2, $3, now() - (CASE WHEN $3 = 'admin' THEN 2 ELSE 1 END) * interval '1 hour')",
                &[&org, &user, &role],
            )
            .await
            .unwrap();
    }
    let token = jwt_with(
        json!({"sub": user.to_string(), "exp": chrono::Utc::now().timestamp() + 600,
               "name": "Ada Lovelace", "email": "ada@example.com"}),
        JWT_SECRET,
    );
    let r = app.get(me.pattern, Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({
            "user": {"id": user, "name": "Ada Lovelace", "email": "ada@example.com"},
            "organizations": [
                {"id": w.org, "name": "matrix", "role": "admin"},
                {"id": other, "name": "second", "role": "viewer"},
            ],
        })
    );
    // Another user's token sees only its own membership; no display claims, no such keys.
    let r = app.get(me.pattern, Some(admin_token)).await.json();
    assert_eq!(
        r["organizations"],
        json!([{"id": w.org, "name": "matrix", "role": "admin"}])
    );
    assert_eq!(r["user"].as_object().unwrap().len(), 1, "{r}");
    // A valid token of a user in no organization: an empty list, not an error.
    let r = app.get(me.pattern, Some(&w.outsider)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["organizations"], json!([]));
    // Only GET.
    assert_eq!(
        app.post(me.pattern, Some(&token), &json!({})).await.status,
        405
    );
}
