//! The Golioth webhook (issue 5, DESIGN §6) through the native host, with the simulator playing
//! the Pipeline: the three authentication schemes and their rejections, secret rotation, JSON /
//! CBOR / both envelopes, idempotency under 1,000 concurrent copies, grouped commits, order
//! safety, unknown
//! devices queueing one `device_refresh`, and the 413 / 415 / 400 paths leaving only a
//! `rejected` record.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use harness::{TestApp, TestResponse, spawn_app};
use host::simulator::{Delivery, PipelineConfig, SimOptions, Simulator, SimulatorHandle};
use serde_json::{Value, json};
use shared::domain::webhook::{hmac_signature, standard_signature};
use uuid::Uuid;

const PROJECT: &str = "hook-project";
const SECRET: &str = "pipeline-secret-0123456789abcdef";
const OLD_SECRET: &str = "pipeline-secret-old-0123456789ab";

/// Request headers as sent.
type Headers = Vec<(&'static str, String)>;

struct Env {
    app: TestApp,
    sim: SimulatorHandle,
    org: Uuid,
    admin: String,
}

impl Env {
    async fn new() -> Env {
        let app = spawn_app().await;
        let sim = Simulator::start(SimOptions::default()).await.unwrap();
        let org = app.seed_org("hooks").await;
        let admin = app.jwt(app.seed_member(org, "admin").await);
        Env {
            app,
            sim,
            org,
            admin,
        }
    }

    /// A service with the given `config.webhook` and webhook secret; returns its id.
    async fn service(&self, webhook: Value, secret: &str) -> Uuid {
        let body = json!({
            "name": format!("svc-{}", Uuid::new_v4().simple()),
            "config": {"project_id": PROJECT, "webhook": webhook,
                       "state_paths": {"battery": "power/battery", "signal": "rssi",
                                       "location": "gps"}},
            "api_key": "golioth-api-key",
            "webhook_secret": secret,
        });
        let r = self
            .app
            .post(
                &format!("/api/v1/orgs/{}/services", self.org),
                Some(&self.admin),
                &body,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().unwrap().parse().unwrap()
    }

    async fn patch_service(&self, service: Uuid, body: Value) {
        let r = self
            .app
            .request(
                "PATCH",
                &format!("/api/v1/orgs/{}/services/{service}", self.org),
                Some(&self.admin),
                Some(&body),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// A local device linked to Golioth device `golioth_id` through `service`.
    async fn device(&self, service: Uuid, golioth_id: &str) -> Uuid {
        let id = Uuid::new_v4();
        let db = self.app.admin().await;
        db.execute(
            "INSERT INTO devices (id, organization_id, name) VALUES ($1, $2, $3)",
            &[&id, &self.org, &format!("dev-{golioth_id}")],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO device_service_assignments (organization_id, device_id, service_id, \
                 external_device_id) VALUES ($1, $2, $3, $4)",
            &[&self.org, &id, &service, &golioth_id],
        )
        .await
        .unwrap();
        id
    }

    fn url(&self, service: Uuid) -> String {
        format!("{}/webhooks/golioth/{service}", self.app.base_url)
    }

    async fn post(&self, service: Uuid, headers: &[(&str, String)], body: &[u8]) -> TestResponse {
        self.post_url(&self.url(service), headers, body).await
    }

    async fn post_url(&self, url: &str, headers: &[(&str, String)], body: &[u8]) -> TestResponse {
        let mut req = self.app.client.post(url).body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        self.app.send(req).await
    }

    async fn count(&self, sql: &str) -> i64 {
        self.app
            .admin()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// `(status, error, payload is null)` of every delivery of `service`, oldest first.
    async fn deliveries(&self, service: Uuid) -> Vec<(String, Option<String>, bool)> {
        self.app
            .admin()
            .await
            .query(
                "SELECT status, error, payload IS NULL FROM webhook_deliveries \
                 WHERE service_id = $1 ORDER BY received_at, id",
                &[&service],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// `(last_seen, last_seen_online, status, battery, signal, location)` of a local device.
    async fn state(
        &self,
        device: Uuid,
    ) -> (
        Option<String>,
        Option<String>,
        String,
        Option<f64>,
        Option<f64>,
        Option<Value>,
    ) {
        let r = self
            .app
            .admin()
            .await
            .query_one(
                "SELECT gs_ts(last_seen), gs_ts(last_seen_online), status, battery_level, \
                     signal_strength, location FROM devices WHERE id = $1",
                &[&device],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
    }
}

fn golioth_id(n: u32) -> String {
    format!("6a00000000000000{n:08x}")
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The CloudEvents headers a Pipeline sends, plus `extra`.
fn golioth_headers(device: &str, time: DateTime<Utc>, extra: &[(&'static str, String)]) -> Headers {
    let mut h = vec![
        ("content-type", "application/json".to_owned()),
        ("ce-source", device.to_owned()),
        ("ce-subject", PROJECT.to_owned()),
        ("ce-type", "io.golioth.data.v1/.s/sensor".to_owned()),
        ("ce-time", time.to_rfc3339_opts(SecondsFormat::Millis, true)),
    ];
    h.extend(extra.iter().cloned());
    h
}

fn without(h: &Headers, name: &str) -> Headers {
    h.iter().filter(|(k, _)| *k != name).cloned().collect()
}

fn with(h: &Headers, name: &'static str, value: &str) -> Headers {
    let mut out = without(h, name);
    out.push((name, value.to_owned()));
    out
}

/// A 401 problem body without its per-request id: what must be identical across causes.
fn problem(r: &TestResponse) -> Value {
    let mut v = r.json();
    v.as_object_mut().unwrap().remove("request_id");
    v
}

fn assert_401(r: &TestResponse, expected: &Value, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    assert_eq!(&problem(r), expected, "{what}: one answer for every cause");
}

fn delivery(device: &str, path: &str, payload: Value, time: DateTime<Utc>) -> Delivery {
    Delivery {
        project_id: PROJECT.into(),
        device_id: device.to_owned(),
        path: path.into(),
        payload,
        time: Some(time),
        id: None,
    }
}

#[tokio::test]
async fn token_scheme_accepts_golioth_deliveries_and_rejects_everything_else() {
    let env = Env::new().await;
    let svc = env.service(json!({"auth": "token"}), OLD_SECRET).await;
    let dev = golioth_id(1);
    let local = env.device(svc, &dev).await;
    let now = Utc::now();

    // The simulator as the Pipeline, token from a Pipeline Secret.
    let pipe = env
        .sim
        .pipeline(PipelineConfig::webhook(env.url(svc)).header("x-webhook-token", OLD_SECRET));
    let out = pipe
        .deliver(&delivery(&dev, "sensor", json!({"temp": 20}), now))
        .await;
    assert_eq!(out.status, Some(200), "{out:?}");
    let v: Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(v["status"], "processed");
    assert_eq!(v["refresh_queued"], false);
    assert!(v["delivery_id"].is_string());

    // Rotation: the new secret and the previous one are both accepted, a third is not.
    env.patch_service(svc, json!({"webhook_secret": SECRET}))
        .await;
    for (i, token) in [SECRET, OLD_SECRET].into_iter().enumerate() {
        let pipe = env
            .sim
            .pipeline(PipelineConfig::webhook(env.url(svc)).header("x-webhook-token", token));
        let out = pipe
            .deliver(&delivery(&dev, "sensor", json!({"temp": 21 + i}), now))
            .await;
        assert_eq!(out.status, Some(200), "{token}: {out:?}");
    }

    let good = golioth_headers(&dev, now, &[("x-webhook-token", SECRET.to_owned())]);
    let body = br#"{"temp": 30}"#;
    let unknown = env.post(Uuid::new_v4(), &good, body).await;
    assert_eq!(unknown.status, 401);
    let expected = problem(&unknown);
    assert_eq!(unknown.content_type(), "application/problem+json");
    let not_a_uuid = env
        .post_url(
            &format!("{}/webhooks/golioth/nope", env.app.base_url),
            &good,
            body,
        )
        .await;
    assert_401(&not_a_uuid, &expected, "malformed service id");

    let before = env.deliveries(svc).await.len();
    let cases: Vec<(&str, Headers)> = vec![
        (
            "wrong secret",
            with(&good, "x-webhook-token", "not-the-secret-0000000"),
        ),
        ("missing header", without(&good, "x-webhook-token")),
        ("empty header", with(&good, "x-webhook-token", "")),
        ("bearer instead of the custom header", {
            let mut h = without(&good, "x-webhook-token");
            h.push(("authorization", format!("Bearer {SECRET}")));
            h
        }),
        (
            "wrong Ce-Subject",
            with(&good, "ce-subject", "another-project"),
        ),
        ("missing Ce-Subject", without(&good, "ce-subject")),
    ];
    for (what, headers) in &cases {
        let r = env.post(svc, headers, body).await;
        assert_401(&r, &expected, what);
    }
    let rows = env.deliveries(svc).await;
    assert_eq!(
        rows.len(),
        before + cases.len(),
        "one rejected record per refusal"
    );
    for (status, error, payload_null) in &rows[before..] {
        assert_eq!(status, "rejected");
        assert!(error.as_deref().is_some_and(|e| !e.is_empty()));
        assert!(payload_null, "no payload from unauthenticated callers");
    }
    assert!(
        rows[before..]
            .iter()
            .any(|(_, e, _)| e.as_deref().unwrap().contains("project"))
    );
    assert_eq!(
        env.count("SELECT count(*) FROM device_telemetry").await,
        3,
        "only the three accepted deliveries left telemetry"
    );

    // An unknown service leaves no record at all (there is no organization to file it under).
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        rows.len() as i64
    );

    // Inactive: the same 401, and a rejected record.
    env.patch_service(svc, json!({"is_active": false})).await;
    let r = env.post(svc, &good, body).await;
    assert_401(&r, &expected, "inactive service");
    let last = env.deliveries(svc).await.pop().unwrap();
    assert_eq!(last.0, "rejected");
    assert!(last.1.unwrap().contains("inactive"));

    // `Authorization: Bearer` when the service says so.
    let svc2 = env
        .service(json!({"header_name": "authorization"}), SECRET)
        .await;
    env.device(svc2, &golioth_id(2)).await;
    let pipe = env.sim.pipeline(
        PipelineConfig::webhook(env.url(svc2)).header("Authorization", format!("Bearer {SECRET}")),
    );
    let out = pipe
        .deliver(&delivery(&golioth_id(2), "sensor", json!({"temp": 1}), now))
        .await;
    assert_eq!(out.status, Some(200), "{out:?}");
    let r = env
        .post(
            svc2,
            &golioth_headers(&golioth_id(2), now, &[("x-webhook-token", SECRET.into())]),
            body,
        )
        .await;
    assert_401(&r, &expected, "token in the wrong header");
    let (seen, ..) = env.state(local).await;
    assert!(seen.is_some());
}

#[tokio::test]
async fn hmac_scheme_verifies_the_raw_body_and_the_timestamp() {
    let env = Env::new().await;
    let svc = env.service(json!({"auth": "hmac"}), OLD_SECRET).await;
    env.patch_service(svc, json!({"webhook_secret": SECRET}))
        .await;
    let dev = golioth_id(3);
    env.device(svc, &dev).await;
    let now = Utc::now();
    let body = br#"{"temp": 21.5,  "n": 1}"#;
    let base = golioth_headers(&dev, now, &[]);
    let signed = |secret: &str, ts: Option<i64>, body: &[u8]| {
        let mut h = with(
            &base,
            "x-golioth-signature",
            &hmac_signature(secret, ts, body),
        );
        if let Some(t) = ts {
            h.push(("x-golioth-timestamp", t.to_string()));
        }
        h
    };

    let r = env.post(svc, &signed(SECRET, None, body), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "processed");
    let body2 = br#"{"temp": 22}"#;
    let r = env
        .post(svc, &signed(SECRET, Some(now.timestamp()), body2), body2)
        .await;
    assert_eq!(r.status, 200, "with a timestamp: {}", r.text());
    let body3 = br#"{"temp": 23}"#;
    let r = env.post(svc, &signed(OLD_SECRET, None, body3), body3).await;
    assert_eq!(
        r.status,
        200,
        "the previous secret during rotation: {}",
        r.text()
    );

    let unknown = env
        .post(Uuid::new_v4(), &signed(SECRET, None, body), body)
        .await;
    let expected = problem(&unknown);
    let reserialized = serde_json::to_vec(&serde_json::from_slice::<Value>(body).unwrap()).unwrap();
    let fresh = br#"{"temp": 99}"#;
    let cases: Vec<(&str, Headers, &[u8])> = vec![
        (
            "wrong secret",
            signed("wrong-secret-0123456789", None, fresh),
            fresh,
        ),
        ("missing signature", base.clone(), fresh),
        (
            "stale timestamp",
            signed(SECRET, Some(now.timestamp() - 600), fresh),
            fresh,
        ),
        (
            "future timestamp",
            signed(SECRET, Some(now.timestamp() + 600), fresh),
            fresh,
        ),
        (
            "signature over re-serialized JSON",
            signed(SECRET, None, &reserialized),
            body,
        ),
        (
            "wrong Ce-Subject",
            with(
                &signed(SECRET, None, fresh),
                "ce-subject",
                "another-project",
            ),
            fresh,
        ),
    ];
    for (what, headers, b) in &cases {
        let r = env.post(svc, headers, b).await;
        assert_401(&r, &expected, what);
    }
    let rows = env.deliveries(svc).await;
    assert_eq!(rows.len(), 3 + cases.len());
    assert!(rows[3..].iter().all(|(s, _, p)| s == "rejected" && *p));
    assert_eq!(env.count("SELECT count(*) FROM device_telemetry").await, 3);

    // require_timestamp: a body-only signature is refused, a timestamped one accepted.
    env.patch_service(
        svc,
        json!({"config": {"project_id": PROJECT, "webhook": {"auth": "hmac", "require_timestamp": true}}}),
    )
    .await;
    let b = br#"{"temp": 40}"#;
    let r = env.post(svc, &signed(SECRET, None, b), b).await;
    assert_401(&r, &expected, "timestamp required");
    let r = env
        .post(svc, &signed(SECRET, Some(now.timestamp()), b), b)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `whsec_` + base64 of 32 bytes of `seed` (Standard Webhooks secrets).
fn whsec(seed: u8) -> String {
    match seed {
        1 => "whsec_AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        2 => "whsec_AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
        7 => "whsec_BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        _ => "whsec_CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=",
    }
    .to_owned()
}

#[tokio::test]
async fn standard_webhooks_scheme() {
    let env = Env::new().await;
    let old = whsec(1);
    let new = whsec(2);
    let svc = env.service(json!({"auth": "standard"}), &old).await;
    env.patch_service(svc, json!({"webhook_secret": new})).await;
    let dev = golioth_id(4);
    env.device(svc, &dev).await;
    let now = Utc::now().timestamp();
    // A relay forwarding the platform envelope: no CloudEvents headers at all.
    let signed = |secret: &str, id: &str, ts: i64, sig_body: &[u8]| {
        vec![
            ("content-type", "application/json".to_owned()),
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                standard_signature(secret, id, ts, sig_body).unwrap(),
            ),
        ]
    };
    let body = format!(
        r#"{{"type": "device.data", "device_id": "{dev}", "data": {{"power": {{"battery": 55}}}}}}"#
    );
    let body = body.as_bytes();
    let r = env.post(svc, &signed(&new, "msg_1", now, body), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "processed");
    let r = env.post(svc, &signed(&old, "msg_2", now, body), body).await;
    assert_eq!(r.status, 200, "previous secret: {}", r.text());
    // Several signatures (the sender rotating): any one may match.
    let mut multi = signed(&new, "msg_3", now, body);
    let other = standard_signature(&whsec(9), "msg_3", now, body).unwrap();
    multi[3].1 = format!("{other} {}", multi[3].1);
    let r = env.post(svc, &multi, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The same webhook-id again is a duplicate, even re-signed with a new timestamp.
    let r = env
        .post(svc, &signed(&new, "msg_1", now + 1, body), body)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "duplicate"}));

    let unknown = env
        .post(Uuid::new_v4(), &signed(&new, "msg_x", now, body), body)
        .await;
    let expected = problem(&unknown);
    let reserialized = serde_json::to_vec(&serde_json::from_slice::<Value>(body).unwrap()).unwrap();
    let cases: Vec<(&str, Headers)> = vec![
        ("wrong secret", signed(&whsec(7), "msg_4", now, body)),
        (
            "missing signature",
            without(&signed(&new, "msg_4", now, body), "webhook-signature"),
        ),
        (
            "missing id",
            without(&signed(&new, "msg_4", now, body), "webhook-id"),
        ),
        ("stale timestamp", signed(&new, "msg_4", now - 600, body)),
        ("future timestamp", signed(&new, "msg_4", now + 600, body)),
        (
            "re-serialized JSON",
            signed(&new, "msg_4", now, &reserialized),
        ),
        (
            "wrong Ce-Subject",
            with(
                &signed(&new, "msg_4", now, body),
                "ce-subject",
                "another-project",
            ),
        ),
    ];
    for (what, headers) in &cases {
        let r = env.post(svc, headers, body).await;
        assert_401(&r, &expected, what);
    }
    let rows = env.deliveries(svc).await;
    assert_eq!(rows.len(), 3 + cases.len());
    assert!(rows[3..].iter().all(|(s, _, p)| s == "rejected" && *p));
    assert_eq!(env.count("SELECT count(*) FROM device_telemetry").await, 3);
    let battery: Option<f64> = env
        .app
        .admin()
        .await
        .query_one("SELECT battery_level FROM devices", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        battery,
        Some(55.0),
        "stream root: state path read from the data"
    );
}

#[tokio::test]
async fn json_cbor_and_both_envelopes_are_ingested() {
    let env = Env::new().await;
    let svc = env.service(json!({}), SECRET).await;
    let dev = golioth_id(5);
    let local = env.device(svc, &dev).await;
    let t0 = Utc::now() - Duration::seconds(60);
    let base = PipelineConfig::webhook(env.url(svc)).header("x-webhook-token", SECRET);
    let pipes = [
        ("json", env.sim.pipeline(base.clone())),
        ("cbor", env.sim.pipeline(base.clone().cbor())),
        (
            "json+meta",
            env.sim.pipeline(base.clone().inject_metadata()),
        ),
        (
            "cbor+meta",
            env.sim.pipeline(base.clone().cbor().inject_metadata()),
        ),
    ];
    for (i, (what, pipe)) in pipes.iter().enumerate() {
        let at = t0 + Duration::seconds(i as i64 * 10);
        let out = pipe
            .deliver(&delivery(
                &dev,
                "power",
                json!({"battery": 50 + i, "volts": 3.5, "label": what}),
                at,
            ))
            .await;
        assert_eq!(out.status, Some(200), "{what}: {out:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&out.body).unwrap()["status"],
            "processed"
        );
    }
    let rows = env
        .app
        .admin()
        .await
        .query(
            "SELECT path, data, gs_ts(recorded_at), device_id FROM device_telemetry ORDER BY recorded_at",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    for (i, row) in rows.iter().enumerate() {
        let (what, _) = &pipes[i];
        assert_eq!(row.get::<_, String>(0), "power", "{what}");
        assert_eq!(
            row.get::<_, Value>(1),
            json!({"battery": 50 + i, "volts": 3.5, "label": what}),
            "{what}: the data, not the envelope"
        );
        assert_eq!(
            row.get::<_, String>(2),
            ts(t0 + Duration::seconds(i as i64 * 10)),
            "{what}"
        );
        assert_eq!(row.get::<_, Uuid>(3), local);
    }
    let payloads: Vec<(String, Value)> = env
        .app
        .admin()
        .await
        .query(
            "SELECT content_type, payload FROM webhook_deliveries ORDER BY received_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(payloads[1].0, "application/cbor");
    assert_eq!(
        payloads[3].1["device_id"], dev,
        "the envelope is kept on the delivery"
    );
    let (seen, online, status, battery, ..) = env.state(local).await;
    let newest = ts(t0 + Duration::seconds(30));
    assert_eq!(seen.as_deref(), Some(newest.as_str()));
    assert_eq!(online.as_deref(), Some(newest.as_str()));
    assert_eq!(status, "online");
    assert_eq!(battery, Some(53.0));

    // The original platform's envelope, relayed with a token: data, online, offline.
    let relay = |body: Value| {
        let h = vec![
            ("content-type", "application/json".to_owned()),
            ("ce-subject", PROJECT.to_owned()),
            ("x-webhook-token", SECRET.to_owned()),
        ];
        (h, body.to_string().into_bytes())
    };
    let t5 = t0 + Duration::seconds(50);
    let (h, b) = relay(
        json!({"type": "device.data", "device_id": dev, "path": "net",
                              "data": {"rssi": -70, "gps": {"lat": 1.5, "lon": 2.5}},
                              "timestamp": t5.to_rfc3339()}),
    );
    let r = env.post(svc, &h, &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (seen, _, _, _, signal, location) = env.state(local).await;
    assert_eq!(seen.as_deref(), Some(ts(t5).as_str()));
    assert_eq!(signal, Some(-70.0));
    assert_eq!(location, Some(json!({"lat": 1.5, "lon": 2.5})));
    let t6 = t0 + Duration::seconds(55);
    let (h, b) =
        relay(json!({"type": "device.offline", "device_id": dev, "timestamp": t6.to_rfc3339()}));
    assert_eq!(env.post(svc, &h, &b).await.status, 200);
    assert_eq!(env.state(local).await.2, "offline");
    // An offline event older than the last sighting changes nothing.
    let (h, b) = relay(json!({"type": "device.online", "device_id": dev,
                              "timestamp": (t0 + Duration::seconds(58)).to_rfc3339()}));
    assert_eq!(env.post(svc, &h, &b).await.status, 200);
    assert_eq!(env.state(local).await.2, "online");
    let (h, b) =
        relay(json!({"type": "device.offline", "device_id": dev, "timestamp": t6.to_rfc3339()}));
    assert_eq!(env.post(svc, &h, &b).await.json()["status"], "duplicate");
    let (h, b) = relay(json!({"type": "device.offline", "device_id": dev,
                              "timestamp": (t0 + Duration::seconds(57)).to_rfc3339()}));
    assert_eq!(env.post(svc, &h, &b).await.status, 200);
    assert_eq!(env.state(local).await.2, "online");
    assert_eq!(env.count("SELECT count(*) FROM device_telemetry").await, 5);
    // Lifecycle events are not trusted: they queue a refresh of a known device too.
    let (h, b) = relay(json!({"type": "device.updated", "device_id": dev, "data": {"name": "x"}}));
    let r = env.post(svc, &h, &b).await;
    assert_eq!(r.json()["refresh_queued"], true, "{}", r.text());
    assert_eq!(
        env.count("SELECT count(*) FROM sync_runs WHERE operation = 'device_refresh'")
            .await,
        1
    );
    assert_eq!(
        env.state(local).await.2,
        "online",
        "the payload changed nothing"
    );
}

#[tokio::test]
async fn a_thousand_concurrent_copies_make_one_telemetry_row() {
    let env = Env::new().await;
    let svc = env.service(json!({}), SECRET).await;
    let dev = golioth_id(6);
    env.device(svc, &dev).await;
    let pipe = env
        .sim
        .pipeline(PipelineConfig::webhook(env.url(svc)).header("x-webhook-token", SECRET));
    let d = delivery(
        &dev,
        "sensor",
        json!({"temp": 20, "power": {"battery": 90}}),
        Utc::now(),
    );
    let copies = vec![d; 1000];
    // All 1,000 in flight at once (one connection each).
    let outs = pipe.deliver_all(&copies, copies.len()).await;
    let mut processed = 0;
    let mut duplicate = 0;
    for o in &outs {
        assert_eq!(o.status, Some(200), "{o:?}");
        match serde_json::from_str::<Value>(&o.body).unwrap()["status"].as_str() {
            Some("processed") => processed += 1,
            Some("duplicate") => duplicate += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((processed, duplicate), (1, 999));
    assert_eq!(env.count("SELECT count(*) FROM device_telemetry").await, 1);
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        1
    );
}

/// Many deliveries at once go through the host's group commit (`app::ingest::batch`): several
/// share one transaction. Each is still stored exactly once (a copy sent alongside is answered
/// `duplicate`), every device ends with the state of its newest delivery whatever the order of
/// arrival and commit, and each unknown device queues one refresh.
#[tokio::test]
async fn concurrent_deliveries_are_grouped_stored_once_and_the_newest_wins() {
    let env = Env::new().await;
    let svc = env.service(json!({}), SECRET).await;
    let pipe = env
        .sim
        .pipeline(PipelineConfig::webhook(env.url(svc)).header("x-webhook-token", SECRET));
    let base = Utc::now() - Duration::seconds(600);
    let (devices, per_device) = (20u32, 10i64);
    let mut locals = Vec::new();
    let mut sends = Vec::new();
    for n in 0..devices {
        let dev = golioth_id(100 + n);
        locals.push((env.device(svc, &dev).await, dev.clone()));
        for i in 0..per_device {
            // Times shuffled per device: the newest (i = 7) is neither first nor last.
            let at = base + Duration::seconds(((i * 7) % per_device) * 10 + i64::from(n));
            let mut d = delivery(&dev, "power", json!({"battery": i}), at);
            d.id = Some(format!("batch-{n}-{i}"));
            // Every delivery twice: the copy must be recognised however the two are grouped.
            sends.push(d.clone());
            sends.push(d);
        }
    }
    let unknown = [golioth_id(900), golioth_id(901)];
    for (k, dev) in unknown.iter().enumerate() {
        for i in 0..3 {
            let mut d = delivery(dev, "power", json!({"battery": i}), base);
            d.id = Some(format!("unknown-{k}-{i}"));
            sends.push(d);
        }
    }
    // One delivery first, so the burst finds its service read (`api::service_cache`): requests
    // that read it themselves hold a connection and store their delivery at once, alone.
    let first = pipe
        .deliver(&delivery(&unknown[0], "power", json!({}), base))
        .await;
    assert_eq!(first.status, Some(200), "{first:?}");
    let outs = pipe.deliver_all(&sends, sends.len()).await;
    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    for o in &outs {
        assert_eq!(o.status, Some(200), "{o:?}");
        let status = serde_json::from_str::<Value>(&o.body).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned();
        *by_status.entry(status).or_default() += 1;
    }
    let linked = (devices as usize) * (per_device as usize);
    assert_eq!(by_status.get("processed"), Some(&linked), "{by_status:?}");
    assert_eq!(by_status.get("duplicate"), Some(&linked), "{by_status:?}");
    assert_eq!(by_status.get("unmatched"), Some(&6), "{by_status:?}");
    let db = env.app.admin().await;
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT xmin::text) FROM webhook_deliveries \
             WHERE service_id = $1",
            &[&svc],
        )
        .await
        .unwrap();
    let (rows, transactions): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(rows, linked as i64 + 7, "each delivery stored once");
    assert!(
        transactions < rows,
        "{rows} deliveries in {transactions} transactions: none were grouped"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM device_telemetry").await,
        linked as i64
    );
    let newest_i = (0..per_device)
        .max_by_key(|i| (i * 7) % per_device)
        .unwrap();
    for (n, (local, _)) in locals.iter().enumerate() {
        let newest = base + Duration::seconds(((newest_i * 7) % per_device) * 10 + n as i64);
        let (seen, _, status, battery, ..) = env.state(*local).await;
        assert_eq!(seen.as_deref(), Some(ts(newest).as_str()), "device {n}");
        assert_eq!(status, "online", "device {n}");
        assert_eq!(
            battery,
            Some(newest_i as f64),
            "device {n}: the newest delivery's value"
        );
    }
    for dev in &unknown {
        let runs: i64 = db
            .query_one(
                "SELECT count(*) FROM sync_runs WHERE service_id = $1 \
                 AND operation = 'device_refresh' AND params ->> 'device_id' = $2",
                &[&svc, dev],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(runs, 1, "one refresh for {dev}");
    }
}

#[tokio::test]
async fn deliveries_sent_newest_first_leave_the_newest_state() {
    let env = Env::new().await;
    let svc = env.service(json!({}), SECRET).await;
    let dev = golioth_id(7);
    let local = env.device(svc, &dev).await;
    let pipe = env
        .sim
        .pipeline(PipelineConfig::webhook(env.url(svc)).header("x-webhook-token", SECRET));
    let newest = Utc::now() - Duration::seconds(5);
    // Five messages, newest first; each carries its own battery level and time.
    for i in 0..5i64 {
        let at = newest - Duration::seconds(i * 20);
        let out = pipe
            .deliver(&delivery(&dev, "power", json!({"battery": 100 - i}), at))
            .await;
        assert_eq!(out.status, Some(200), "{out:?}");
    }
    // A message for another path, older still, with only a signal value: it applies (no newer
    // signal is known) but does not move last_seen.
    let old = newest - Duration::seconds(200);
    let out = pipe
        .deliver(&delivery(&dev, "net", json!({"rssi": -80}), old))
        .await;
    assert_eq!(out.status, Some(200));
    let (seen, online, status, battery, signal, _) = env.state(local).await;
    assert_eq!(seen.as_deref(), Some(ts(newest).as_str()));
    assert_eq!(online.as_deref(), Some(ts(newest).as_str()));
    assert_eq!(status, "online");
    assert_eq!(
        battery,
        Some(100.0),
        "late deliveries never roll state back"
    );
    assert_eq!(signal, Some(-80.0));
    assert_eq!(env.count("SELECT count(*) FROM device_telemetry").await, 6);
    let reported: Value = env
        .app
        .admin()
        .await
        .query_one("SELECT metadata -> 'golioth_reported_at' FROM devices", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reported["battery_level"], ts(newest));
    assert_eq!(reported["signal_strength"], ts(old));

    // A stale message (older than the online threshold) moves last_seen but does not make an
    // offline device online.
    let stale = Utc::now() - Duration::seconds(1200);
    let dev2 = golioth_id(8);
    let local2 = env.device(svc, &dev2).await;
    env.app
        .admin()
        .await
        .execute(
            "UPDATE devices SET status = 'offline' WHERE id = $1",
            &[&local2],
        )
        .await
        .unwrap();
    let out = pipe
        .deliver(&delivery(&dev2, "x", json!({"v": 1}), stale))
        .await;
    assert_eq!(out.status, Some(200));
    let (seen2, _, status2, ..) = env.state(local2).await;
    assert_eq!(seen2.as_deref(), Some(ts(stale).as_str()));
    assert_eq!(status2, "offline");
}

#[tokio::test]
async fn an_unknown_device_queues_exactly_one_refresh() {
    let env = Env::new().await;
    let svc = env.service(json!({}), SECRET).await;
    let stranger = golioth_id(9);
    let pipe = env
        .sim
        .pipeline(PipelineConfig::webhook(env.url(svc)).header("x-webhook-token", SECRET));
    let now = Utc::now();
    let deliveries: Vec<Delivery> = (0..3)
        .map(|i| {
            delivery(
                &stranger,
                "sensor",
                json!({"n": i}),
                now - Duration::seconds(i),
            )
        })
        .collect();
    let outs = pipe.deliver_all(&deliveries, 3).await;
    let bodies: Vec<Value> = outs
        .iter()
        .map(|o| serde_json::from_str(&o.body).unwrap())
        .collect();
    assert!(
        bodies.iter().all(|b| b["status"] == "unmatched"),
        "{bodies:?}"
    );
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b["refresh_queued"] == true)
            .count(),
        1
    );
    let runs = env
        .app
        .admin()
        .await
        .query(
            "SELECT organization_id, service_id, status, params FROM sync_runs \
             WHERE operation = 'device_refresh'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].get::<_, Uuid>(0), env.org);
    assert_eq!(runs[0].get::<_, Uuid>(1), svc);
    assert_eq!(runs[0].get::<_, String>(2), "queued");
    assert_eq!(runs[0].get::<_, Value>(3), json!({"device_id": stranger}));
    // Kept, unmatched, with their payloads; no telemetry, no device.
    let rows = env.deliveries(svc).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|(s, _, null)| s == "unmatched" && !null));
    assert_eq!(env.count("SELECT count(*) FROM device_telemetry").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM devices").await, 0);
}

#[tokio::test]
async fn oversized_unsupported_and_malformed_bodies_leave_only_a_rejection() {
    let env = Env::new().await;
    let svc = env.service(json!({}), SECRET).await;
    let dev = golioth_id(10);
    let local = env.device(svc, &dev).await;
    let good = golioth_headers(&dev, Utc::now(), &[("x-webhook-token", SECRET.to_owned())]);
    let before = env.state(local).await;

    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(256 * 1024));
    let r = env.post(svc, &good, big.as_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.content_type(), "application/problem+json");
    // The size limit answers the same whether or not the service exists.
    assert_eq!(
        env.post(Uuid::new_v4(), &good, big.as_bytes()).await.status,
        413
    );

    let r = env
        .post(svc, &with(&good, "content-type", "text/plain"), b"temp=1")
        .await;
    assert_eq!(r.status, 415, "{}", r.text());
    let r = env
        .post(svc, &without(&good, "content-type"), br#"{"temp": 1}"#)
        .await;
    assert_eq!(r.status, 415, "no content type");

    let malformed: Vec<(&str, Headers, &[u8])> = vec![
        ("truncated JSON", good.clone(), br#"{"temp": "#),
        ("empty body", good.clone(), b""),
        (
            "CBOR that is not CBOR",
            with(&good, "content-type", "application/cbor"),
            &[0xff, 0x00],
        ),
        ("no device", without(&good, "ce-source"), br#"{"temp": 1}"#),
        (
            "not a device id",
            with(&good, "ce-source", "device-1"),
            br#"{"temp": 1}"#,
        ),
        (
            "unknown event",
            good.clone(),
            br#"{"type": "device.moved", "device_id": "6a0000000000000000000001"}"#,
        ),
    ];
    for (what, h, b) in &malformed {
        let r = env.post(svc, h, b).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.content_type(), "application/problem+json");
    }

    let rows = env.deliveries(svc).await;
    assert_eq!(
        rows.len(),
        3 + malformed.len(),
        "one record per refusal, none for the unknown service"
    );
    for (status, error, payload_null) in &rows {
        assert_eq!(status, "rejected");
        assert!(payload_null);
        assert!(error.as_deref().is_some_and(|e| !e.is_empty()));
    }
    assert!(rows[0].1.as_deref().unwrap().contains("exceeds"));
    assert_eq!(env.count("SELECT count(*) FROM device_telemetry").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM sync_runs").await, 0);
    assert_eq!(env.state(local).await, before, "the device is untouched");
}

/// The organizations whose services `tx` can see.
async fn visible_orgs(
    tx: &dyn shared::base::ports::Db,
) -> Result<Vec<String>, shared::base::ports::DbError> {
    let rows = tx
        .query(
            "SELECT organization_id::text AS org FROM device_services",
            &[],
        )
        .await?;
    rows.iter().map(|r| r.get::<String>("org")).collect()
}

/// The webhook's first statement (`gs_webhook_service`, as the application role) reads the one
/// service and scopes its transaction to the service's organization: inside a transaction until
/// its end, alone only for the statement. An unknown service leaves no organization set.
#[tokio::test]
async fn the_service_lookup_scopes_the_transaction_to_the_services_organization() {
    use shared::base::ports::{DbError, transaction};
    use shared::domain::store::webhooks;
    let e = Env::new().await;
    let svc = e.service(json!({}), SECRET).await;
    let other_org = e.app.seed_org("elsewhere").await;
    let other_svc = Uuid::new_v4();
    e.app
        .admin()
        .await
        .execute(
            "INSERT INTO device_services (id, organization_id, name) VALUES ($1, $2, 'other')",
            &[&other_svc, &other_org],
        )
        .await
        .unwrap();
    let pool = shared::runtime::native::PgPool::new(&e.app.app_db_url, 1).unwrap();
    let db = pool.lazy();
    for (id, org) in [
        (svc, Some(e.org)),
        (other_svc, Some(other_org)),
        (Uuid::new_v4(), None),
    ] {
        let (found, seen) = transaction(&db, |tx| {
            Box::pin(async move {
                let found = webhooks::service(tx, id).await?;
                Ok::<_, DbError>((found, visible_orgs(tx).await?))
            })
        })
        .await
        .unwrap();
        assert_eq!(found.as_ref().map(|s| s.org_id), org);
        let expected: Vec<String> = org.iter().map(Uuid::to_string).collect();
        assert_eq!(seen, expected, "visible in the transaction");
        // Alone, the statement's scope ends with it.
        let found = webhooks::service(&db, id).await.unwrap();
        assert_eq!(found.map(|s| s.org_id), org);
        assert!(
            visible_orgs(&db).await.unwrap().is_empty(),
            "nothing left set"
        );
    }
    let found = webhooks::service(&db, svc).await.unwrap().unwrap();
    assert!(found.is_active && found.credentials.is_some());
    assert_eq!(found.config["project_id"], PROJECT);
}
