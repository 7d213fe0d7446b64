//! The Golioth simulator held against GOLIOTH_API.md: its response bodies are compared with the
//! documented examples (the §2.2 device, the list envelope, the `rpcStatus` error body, `{}` on
//! delete), so the fake cannot drift from the real API unnoticed. Also its rules (uniqueness,
//! PATCH semantics, keys per project), controls, faults and pipeline deliveries.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use host::simulator::{
    Delivery, Fault, FaultRule, PipelineConfig, ProjectSpec, RequestMatch, SeedSpec, SimOptions,
    Simulator, SimulatorHandle,
};
use serde_json::{Value, json};

const P: &str = "sim-project";
const KEY: &str = "sim-project-key";

/// GOLIOTH_API.md §2.2, verbatim. `certificateId` (certificate-auth devices only) and `data`
/// (only with `statePath`/`streamPath`) are conditional.
const DOC_DEVICE: &str = r#"{
  "id": "68bf1cc5425dd2ea93f248a3",
  "name": "C253700003",
  "hardwareIds": ["20250908181325-c253700003"],
  "tagIds": ["<tagId>", "..."],
  "blueprintId": "<blueprintId>",
  "cohortId": "nrf9151-cell-gateways",
  "certificateId": "<only for certificate-auth devices>",
  "enabled": true,
  "status": "-",
  "lastReport": "2025-11-09T23:35:06.957Z",
  "createdAt": "2025-09-08T18:13:25.775Z",
  "updatedAt": "2025-09-08T18:13:25.775Z",
  "metadata": {
    "lastReport": "<date-time>",
    "lastSeenOnline": "2025-11-09T20:23:38.628Z",
    "lastSeenOffline": null,
    "status": "-",
    "lastSettingsStatus": {
      "status": "in-sync",
      "statusDetail": "…",
      "reportedVersion": "…",
      "syncTime": "<date-time>",
      "errors": [{"key": "…", "code": 1, "codeDescription": "…", "deviceDetails": "…"}]
    },
    "update": {
      "main": {"package": "main", "version": "1.0.0", "state": "IDLE", "stateCode": "0",
               "reason": "ready state", "reasonCode": "0", "target": "", "time": "<date-time>"}
    }
  },
  "data": {"…": "only present when statePath/streamPath was requested"}
}"#;

/// GOLIOTH_API.md §2.1/§3 (the docs' auth example): the list envelope.
const DOC_LIST: &str = r#"{ "list": [ {} ], "page":0, "perPage":100, "total":1 }"#;

/// GOLIOTH_API.md §7: the `rpcStatus` error body.
const DOC_ERROR: &str = r#"{"code": 5, "message": "<text>", "details": []}"#;

/// GOLIOTH_API.md §5: tag and blueprint objects.
const DOC_TAG: &str =
    r#"{"id": "t", "name": "n", "createdAt": "<date-time>", "updatedAt": "<date-time>"}"#;
const DOC_BLUEPRINT: &str = r#"{"id": "b", "name": "n", "boardId": "nrf9160dk_nrf9160", "platform": "zephyr", "createdAt": "<date-time>", "updatedAt": "<date-time>"}"#;

/// GOLIOTH_API.md §1: `{"list":[{"id","name","organizationId","roles","createdAt","updatedAt"}]}`.
const DOC_PROJECT: &str = r#"{"id": "p", "name": "n", "organizationId": "o", "roles": [], "createdAt": "<date-time>", "updatedAt": "<date-time>"}"#;

fn doc(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

fn is_doc_time(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s == "<date-time>" || DateTime::parse_from_rfc3339(s).is_ok())
}

/// Golioth's timestamp format: RFC 3339, UTC `Z`, milliseconds.
fn is_golioth_time(s: &str) -> bool {
    DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z') && s.len() == 24
}

/// `actual` has the documented shape: the same keys (minus `optional` ones, which may be
/// absent), and values of the same JSON types, recursively; documented timestamps must be
/// Golioth-formatted timestamps.
fn assert_shape(documented: &Value, actual: &Value, optional: &[&str], at: &str) {
    match (documented, actual) {
        (Value::Object(d), Value::Object(a)) => {
            let doc_keys: BTreeSet<&String> = d.keys().collect();
            let act_keys: BTreeSet<&String> = a.keys().collect();
            let extra: Vec<_> = act_keys.difference(&doc_keys).collect();
            assert!(extra.is_empty(), "{at}: undocumented keys {extra:?}");
            for k in doc_keys {
                let here = format!("{at}.{k}");
                match a.get(k) {
                    Some(v) => assert_shape(&d[k], v, optional, &here),
                    None => assert!(optional.contains(&here.as_str()), "{here}: missing"),
                }
            }
        }
        (Value::Array(d), Value::Array(a)) => {
            if let Some(d0) = d.first() {
                for (i, item) in a.iter().enumerate() {
                    assert_shape(d0, item, optional, &format!("{at}[{i}]"));
                }
            }
        }
        (d, a) if is_doc_time(d) => {
            let s = a
                .as_str()
                .unwrap_or_else(|| panic!("{at}: expected a timestamp, got {a}"));
            assert!(
                is_golioth_time(s),
                "{at}: {s} is not like 2025-09-08T18:13:25.775Z"
            );
        }
        (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::Null, Value::Null) => {}
        (d, a) => panic!("{at}: documented {d}, simulator answered {a}"),
    }
}

struct Env {
    sim: SimulatorHandle,
    http: reqwest::Client,
}

impl Env {
    async fn new() -> Env {
        let sim = Simulator::start(SimOptions::default()).await.unwrap();
        sim.create_project(ProjectSpec {
            id: P.into(),
            api_key: KEY.into(),
            name: Some("Simulated".into()),
            organization_id: Some("acme-org".into()),
        })
        .unwrap();
        Env {
            sim,
            http: reqwest::Client::new(),
        }
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, _, bytes) = self.raw(method, path, key, body).await;
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        (status, v)
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Bytes) {
        let url = format!("{}{path}", self.sim.base_url());
        let mut req = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.bytes().await.unwrap())
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, Some(KEY), body).await
    }

    fn path(rest: &str) -> String {
        format!("/v1/projects/{P}{rest}")
    }
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: i64) {
    assert_eq!(status, want_status, "{body}");
    assert_shape(&doc(DOC_ERROR), body, &[], "error");
    assert_eq!(body["code"], json!(want_code), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

// ---------------------------------------------------------------------------------------------
// Bodies pinned to the documented examples
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn device_json_has_the_documented_shape() {
    let env = Env::new().await;
    let tag = env.sim.create_tag(P, "red").unwrap();
    let bp = env.sim.create_blueprint(P, "board").unwrap();
    let (status, created) = env
        .call(
            "POST",
            &Env::path("/devices"),
            Some(
                json!({"name": "C253700003", "hardwareIds": ["20250908181325-c253700003"],
                        "tagIds": [tag], "blueprintId": bp, "cohortId": "nrf9151-cell-gateways"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "create answers 200, not 201: {created}");
    let keys: Vec<&String> = created.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["data"], "single objects are wrapped in data");
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    env.sim.set_firmware(P, &id, "main", "1.0.0").unwrap();
    env.sim
        .report(
            P,
            &id,
            Utc.with_ymd_and_hms(2025, 11, 9, 23, 35, 6).unwrap(),
        )
        .unwrap();

    let (status, got) = env
        .call("GET", &Env::path(&format!("/devices/{id}")), None)
        .await;
    assert_eq!(status, 200);
    let device = &got["data"];
    assert_shape(&doc(DOC_DEVICE), device, &[".certificateId", ".data"], "");
    assert_eq!(id.len(), 24);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        device["status"],
        json!("-"),
        "the deprecated status is always -"
    );
    assert_eq!(device["metadata"]["status"], json!("-"));
    assert_eq!(device["metadata"]["lastSeenOffline"], Value::Null);
    assert_eq!(device["lastReport"], device["metadata"]["lastReport"]);
    assert_eq!(
        device["metadata"]["lastReport"],
        json!("2025-11-09T23:35:06.000Z")
    );
    assert_eq!(
        device["metadata"]["update"]["main"]["version"],
        json!("1.0.0")
    );
    assert!(
        device.get("projectId").is_none(),
        "the API returns no projectId"
    );
    assert!(device.get("data").is_none(), "data only with statePath");

    // Without blueprint and cohort those keys are absent, as [PGT]'s `in` checks expect.
    let (_, bare) = env
        .call(
            "POST",
            &Env::path("/devices"),
            Some(json!({"name": "bare"})),
        )
        .await;
    let bare = &bare["data"];
    assert!(bare.get("blueprintId").is_none() && bare.get("cohortId").is_none());
    assert_eq!(bare["metadata"]["lastReport"], Value::Null);
    let hw = bare["hardwareIds"][0].as_str().unwrap();
    assert!(
        hw.ends_with("-bare") && hw.len() == "20211203113100-bare".len(),
        "{hw}"
    );
}

#[tokio::test]
async fn the_list_envelope_is_unwrapped() {
    let env = Env::new().await;
    let spec = SeedSpec {
        count: 1,
        last_report: Some(Utc::now()),
        firmware_version: Some("1.0.0".into()),
        ..SeedSpec::default()
    };
    env.sim.seed(P, &spec).unwrap();
    let (status, body) = env.call("GET", &Env::path("/devices"), None).await;
    assert_eq!(status, 200);
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["list", "page", "perPage", "total"]));
    let documented = doc(DOC_LIST);
    assert_eq!(body["page"], documented["page"]);
    assert_eq!(body["perPage"], documented["perPage"]);
    assert_eq!(body["total"], documented["total"]);
    // No blueprint or cohort was set, so those keys are absent.
    assert_shape(
        &doc(DOC_DEVICE),
        &body["list"][0],
        &[".certificateId", ".data", ".blueprintId", ".cohortId"],
        "",
    );
}

#[tokio::test]
async fn pages_are_zero_based_stable_and_bounded() {
    let env = Env::new().await;
    let ids = env.sim.seed(P, &SeedSpec::devices(7)).unwrap();
    let (_, p1) = env
        .call("GET", &Env::path("/devices?page=1&perPage=3"), None)
        .await;
    assert_eq!(
        (
            p1["page"].clone(),
            p1["perPage"].clone(),
            p1["total"].clone()
        ),
        (json!(1), json!(3), json!(7))
    );
    let got: Vec<&str> = p1["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        ids[3..6].iter().map(String::as_str).collect::<Vec<_>>(),
        "creation order"
    );
    let (_, p9) = env
        .call("GET", &Env::path("/devices?page=9&perPage=3"), None)
        .await;
    assert_eq!(p9["list"], json!([]));
    assert_eq!(p9["total"], json!(7));
    for bad in ["perPage=0", "perPage=101", "page=-1", "perPage=x"] {
        let (status, body) = env
            .call("GET", &Env::path(&format!("/devices?{bad}")), None)
            .await;
        assert_error(status, &body, 400, 3);
    }
}

#[tokio::test]
async fn delete_answers_200_with_an_empty_object() {
    let env = Env::new().await;
    let id = env.sim.seed(P, &SeedSpec::devices(1)).unwrap().remove(0);
    let (status, _, bytes) = env
        .raw(
            "DELETE",
            &Env::path(&format!("/devices/{id}")),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), json!({}));
    let (status, body) = env
        .call("GET", &Env::path(&format!("/devices/{id}")), None)
        .await;
    assert_error(status, &body, 404, 5);
    let (status, body) = env
        .call("DELETE", &Env::path(&format!("/devices/{id}")), None)
        .await;
    assert_error(status, &body, 404, 5);
}

#[tokio::test]
async fn error_bodies_are_rpc_status() {
    let env = Env::new().await;
    env.sim
        .create_project(ProjectSpec::new("other", "other-key"))
        .unwrap();
    let id = env.sim.seed(P, &SeedSpec::devices(2)).unwrap().remove(0);
    let dev = Env::path(&format!("/devices/{id}"));

    let (s, b) = env.call_with("GET", &dev, None, None).await;
    assert_error(s, &b, 401, 16);
    let (s, b) = env.call_with("GET", &dev, Some("nope"), None).await;
    assert_error(s, &b, 401, 16);
    let (s, b) = env.call_with("GET", &dev, Some("other-key"), None).await;
    assert_error(s, &b, 403, 7);
    let (s, b) = env
        .call_with("GET", "/v1/projects/other/devices", Some(KEY), None)
        .await;
    assert_error(s, &b, 403, 7);

    let (s, b) = env
        .call("GET", &Env::path("/devices/not-an-id"), None)
        .await;
    assert_error(s, &b, 400, 3);
    assert_eq!(b["message"], json!("hex string is not a valid ObjectID"));
    let (s, b) = env
        .call("GET", &Env::path("/devices/6500ffffffffffffffffffff"), None)
        .await;
    assert_error(s, &b, 404, 5);

    let (s, b) = env
        .call(
            "POST",
            &Env::path("/devices"),
            Some(json!({"name": "device-000001"})),
        )
        .await;
    assert_error(s, &b, 409, 6);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("already being used"),
        "{b}"
    );
    let (s, b) = env
        .call(
            "POST",
            &Env::path("/devices"),
            Some(json!({"name": "x", "hardwareIds": ["hw-device-000000"]})),
        )
        .await;
    assert_error(s, &b, 409, 6);
    let (s, b) = env
        .call(
            "POST",
            &Env::path("/devices"),
            Some(json!({"name": "x", "tagIds": ["6500aaaaaaaaaaaaaaaaaaaa"]})),
        )
        .await;
    assert_eq!(s, 400, "tags are referenced by id and must exist: {b}");
    let (s, b) = env
        .call(
            "POST",
            &Env::path("/devices"),
            Some(json!({"hardwareIds": ["z"]})),
        )
        .await;
    assert_error(s, &b, 400, 3);

    // A wrong method on a known route is grpc-gateway's 501; an unknown route is 404.
    let (s, b) = env.call("DELETE", &Env::path("/devices"), None).await;
    assert_error(s, &b, 501, 12);
    let (s, b) = env.call("POST", &dev, Some(json!({}))).await;
    assert_error(s, &b, 501, 12);
    let (s, b) = env
        .call("GET", "/v1/projects/sim-project/nothing", None)
        .await;
    assert_error(s, &b, 404, 5);
    // Routing comes before authentication, as in grpc-gateway.
    let (s, b) = env
        .call_with("PUT", &Env::path("/devices"), None, None)
        .await;
    assert_error(s, &b, 501, 12);
}

#[tokio::test]
async fn projects_tags_and_blueprints_have_the_documented_shapes() {
    let env = Env::new().await;
    let (s, all) = env.call("GET", "/v1/projects", None).await;
    assert_eq!(s, 200);
    let keys: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["list"], "GET /v1/projects returns {{list}} only");
    assert_shape(&doc(DOC_PROJECT), &all["list"][0], &[], "project");
    let (_, one) = env.call("GET", &Env::path(""), None).await;
    assert_shape(&doc(DOC_PROJECT), &one["data"], &[], "project");
    assert_eq!(one["data"]["organizationId"], json!("acme-org"));

    let (s, tag) = env
        .call("POST", &Env::path("/tags"), Some(json!({"name": "red"})))
        .await;
    assert_eq!(s, 200);
    assert_shape(&doc(DOC_TAG), &tag["data"], &[], "tag");
    let (s, dup) = env
        .call("POST", &Env::path("/tags"), Some(json!({"name": "red"})))
        .await;
    assert_error(s, &dup, 409, 6);
    assert_eq!(dup["message"], json!("tag name already being used"));
    let (_, tags) = env.call("GET", &Env::path("/tags?tagName=red"), None).await;
    assert_eq!(tags["total"], json!(1));
    assert_shape(&doc(DOC_TAG), &tags["list"][0], &[], "tags.list[0]");

    let (s, bp) = env
        .call(
            "POST",
            &Env::path("/blueprints"),
            Some(json!({"name": "b1", "boardId": "nrf9160dk_nrf9160", "platform": "zephyr"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_shape(&doc(DOC_BLUEPRINT), &bp["data"], &[], "blueprint");
    let (s, dup) = env
        .call(
            "POST",
            &Env::path("/blueprints"),
            Some(json!({"name": "b1"})),
        )
        .await;
    assert_error(s, &dup, 409, 6);
    assert_eq!(dup["message"], json!("blueprint name already being used"));
    let (_, bps) = env.call("GET", &Env::path("/blueprints"), None).await;
    assert_eq!(
        (
            bps["page"].clone(),
            bps["perPage"].clone(),
            bps["total"].clone()
        ),
        (json!(0), json!(100), json!(1))
    );
}

// ---------------------------------------------------------------------------------------------
// Rules: PATCH, updatedAt, state, credentials
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn patch_follows_device_update_semantics() {
    let env = Env::new().await;
    let red = env.sim.create_tag(P, "red").unwrap();
    let blue = env.sim.create_tag(P, "blue").unwrap();
    let bp = env.sim.create_blueprint(P, "board").unwrap();
    let (_, c) = env
        .call(
            "POST",
            &Env::path("/devices"),
            Some(json!({"name": "d", "hardwareIds": ["h1"], "tagIds": [red],
                  "blueprintId": bp, "cohortId": "c1"})),
        )
        .await;
    let id = c["data"]["id"].as_str().unwrap().to_owned();
    let path = Env::path(&format!("/devices/{id}"));
    let (_, other) = env
        .call(
            "POST",
            &Env::path("/devices"),
            Some(json!({"name": "other", "hardwareIds": ["h9"]})),
        )
        .await;
    assert_eq!(other["data"]["name"], json!("other"));

    let (s, p) = env
        .call(
            "PATCH",
            &path,
            Some(
                json!({"addTagId": [blue], "removeTagId": [red], "addHardwareId": ["h2"],
                  "removeHardwareId": ["h1"], "enabled": false, "cohortId": "", "blueprintId": null,
                  "unknownField": 1}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    let d = &p["data"];
    assert_eq!(d["tagIds"], json!([blue]));
    assert_eq!(d["hardwareIds"], json!(["h2"]));
    assert_eq!(d["enabled"], json!(false));
    assert!(d.get("cohortId").is_none() && d.get("blueprintId").is_none());
    assert_eq!(d["name"], json!("d"), "PATCH leaves unsent fields alone");
    assert!(
        d["updatedAt"].as_str() > c["data"]["updatedAt"].as_str(),
        "updatedAt moves"
    );

    let (_, p) = env
        .call(
            "PATCH",
            &path,
            Some(json!({"tagIds": [red, blue], "hardwareIds": ["h3"]})),
        )
        .await;
    assert_eq!(p["data"]["tagIds"], json!([red, blue]));
    assert_eq!(p["data"]["hardwareIds"], json!(["h3"]));
    let (_, p) = env
        .call("PATCH", &path, Some(json!({"addTagId": [red]})))
        .await;
    assert_eq!(
        p["data"]["tagIds"],
        json!([red, blue]),
        "adding a present tag is a no-op"
    );

    let (s, b) = env
        .call("PATCH", &path, Some(json!({"name": "other"})))
        .await;
    assert_error(s, &b, 409, 6);
    let (s, b) = env
        .call("PATCH", &path, Some(json!({"addHardwareId": ["h9"]})))
        .await;
    assert_error(s, &b, 409, 6);
    let (s, _) = env
        .call(
            "PATCH",
            &path,
            Some(json!({"addTagId": ["6500aaaaaaaaaaaaaaaaaaaa"]})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, b) = env
        .call("PATCH", &path, Some(json!({"enabled": "yes"})))
        .await;
    assert_error(s, &b, 400, 3);
    // Failed writes change nothing.
    let (_, now) = env.call("GET", &path, None).await;
    assert_eq!(now["data"]["tagIds"], json!([red, blue]));
    assert_eq!(now["data"]["name"], json!("d"));

    // PUT replaces the device in its entirety.
    let (s, put) = env
        .call(
            "PUT",
            &path,
            Some(json!({"name": "d2", "hardwareIds": ["h4"]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(put["data"]["tagIds"], json!([]));
    assert_eq!(put["data"]["enabled"], json!(false));

    let stats = env.sim.stats();
    assert_eq!(
        stats.writes_by_kind.get("device.update"),
        Some(&3),
        "{stats:?}"
    );
    assert_eq!(stats.writes_by_kind.get("device.replace"), Some(&1));
}

#[tokio::test]
async fn console_edits_move_updated_at_and_reports_do_not() {
    let env = Env::new().await;
    let id = env.sim.seed(P, &SeedSpec::devices(2)).unwrap().remove(0);
    let before = env.sim.device(P, &id).unwrap();
    let later = Utc::now();
    env.sim.report(P, &id, later).unwrap();
    let reported = env.sim.device(P, &id).unwrap();
    assert_eq!(reported.updated_at, before.updated_at);
    assert_eq!(reported.last_report, Some(later));
    assert_eq!(reported.last_seen_online, Some(later));

    let edited = env
        .sim
        .console_edit(P, &id, |d| d.name = "renamed".into())
        .unwrap();
    assert_eq!(edited["name"], json!("renamed"));
    let after = env.sim.device(P, &id).unwrap();
    assert!(after.updated_at > before.updated_at);
    let again = env
        .sim
        .console_patch_device(P, &id, &json!({"enabled": false}))
        .unwrap();
    assert!(again["updatedAt"].as_str() > edited["updatedAt"].as_str());
    assert!(
        env.sim
            .console_edit(P, &id, |d| d.name = "device-000001".into())
            .is_err(),
        "still unique"
    );
    assert_eq!(
        env.sim.stats().writes,
        0,
        "console edits are not API writes"
    );
}

#[tokio::test]
async fn lightdb_state_documents_and_state_path() {
    let env = Env::new().await;
    let id = env
        .sim
        .seed(
            P,
            &SeedSpec {
                count: 2,
                with_state: true,
                ..SeedSpec::default()
            },
        )
        .unwrap()
        .remove(1);
    let data = |rest: &str| Env::path(&format!("/devices/{id}/data{rest}"));
    let (s, b) = env.call("GET", &data("/battery"), None).await;
    assert_eq!((s, b), (200, json!({"data": 99})));
    let (_, whole) = env.call("GET", &data(""), None).await;
    let want = SeedSpec::state_of(1);
    assert_eq!(whole["data"]["battery"], want["battery"]);
    assert_eq!(whole["data"]["signal"], want["signal"]);
    let lat = |v: &Value| v["location"]["lat"].as_f64().unwrap();
    assert!((lat(&whole["data"]) - lat(&want)).abs() < 1e-9);
    let (s, b) = env
        .call("POST", &data("/desired/temp"), Some(json!({"min": 20})))
        .await;
    assert_eq!((s, b), (200, json!({"data": {"min": 20}})));
    let (_, b) = env
        .call("PATCH", &data("/desired/temp"), Some(json!({"max": 25})))
        .await;
    assert_eq!(b, json!({"data": {"min": 20, "max": 25}}));
    let (s, b) = env.call("DELETE", &data("/desired"), None).await;
    assert_eq!((s, b), (200, json!({})));
    let (_, b) = env.call("GET", &data("/desired"), None).await;
    assert_eq!(b, json!({"data": null}));

    let (_, list) = env
        .call("GET", &Env::path("/devices?statePath=location/lat"), None)
        .await;
    let got = list["list"][1]["data"].as_f64().unwrap();
    assert!((got - lat(&want)).abs() < 1e-9, "{got}");
    assert_eq!(env.sim.stats().writes_by_kind.get("state.write"), Some(&2));
}

#[tokio::test]
async fn psk_credentials_are_unique_per_project() {
    let env = Env::new().await;
    let id = env.sim.seed(P, &SeedSpec::devices(1)).unwrap().remove(0);
    let path = Env::path(&format!("/devices/{id}/credentials"));
    let body = json!({"type": "PRE_SHARED_KEY", "identity": "dev-1", "preSharedKey": "s3cr3t"});
    let (s, b) = env.call("POST", &path, Some(body.clone())).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["identity"], json!(format!("dev-1@{P}")));
    assert!(!b.to_string().contains("s3cr3t"), "the key is not echoed");
    let (s, b) = env.call("POST", &path, Some(body)).await;
    assert_error(s, &b, 409, 6);
}

#[tokio::test]
async fn filters_match_fully() {
    let env = Env::new().await;
    env.sim
        .seed(
            P,
            &SeedSpec {
                count: 30,
                tags: vec!["a".into(), "b".into()],
                disabled_every: 10,
                ..SeedSpec::default()
            },
        )
        .unwrap();
    let a = env.sim.tag_id(P, "a").unwrap();
    let b = env.sim.tag_id(P, "b").unwrap();
    let total = |q: String| {
        let env = &env;
        async move {
            env.call("GET", &Env::path(&format!("/devices?{q}")), None)
                .await
                .1["total"]
                .clone()
        }
    };
    assert_eq!(total("deviceName=device-000007".into()).await, json!(1));
    assert_eq!(
        total("deviceName=device-00000".into()).await,
        json!(0),
        "full match only"
    );
    assert_eq!(total("hardwareId=hw-device-000029".into()).await, json!(1));
    assert_eq!(
        total(format!("tags={a}&tags={b}")).await,
        json!(10),
        "all tags: every third device has both"
    );
    assert_eq!(total("enabled=false".into()).await, json!(3));
    assert_eq!(
        total("term=-00002".into()).await,
        json!(10),
        "devices 20..=29"
    );
}

#[tokio::test]
async fn seeding_is_deterministic_and_scales_to_100000() {
    let page = |sim: SimulatorHandle| async move {
        let env = Env {
            sim,
            http: reqwest::Client::new(),
        };
        env.sim.create_project(ProjectSpec::new(P, KEY)).unwrap();
        let spec = SeedSpec {
            count: 250,
            tags: vec!["x".into()],
            with_state: true,
            last_report: Some(Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap()),
            firmware_version: Some("2.0.0".into()),
            ..SeedSpec::default()
        };
        env.sim.seed(P, &spec).unwrap();
        env.call("GET", &Env::path("/devices?page=2&statePath=battery"), None)
            .await
            .1
    };
    let a = page(Simulator::start(SimOptions::default()).await.unwrap()).await;
    let b = page(Simulator::start(SimOptions::default()).await.unwrap()).await;
    assert_eq!(a, b);
    assert_eq!(a["list"].as_array().unwrap().len(), 50);

    let env = Env::new().await;
    let ids = env.sim.seed(P, &SeedSpec::devices(100_000)).unwrap();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 100_000);
    let (_, last) = env.call("GET", &Env::path("/devices?page=999"), None).await;
    assert_eq!(last["list"].as_array().unwrap().len(), 100);
    assert_eq!(last["list"][99]["id"], json!(ids[99_999]));
    assert_eq!(last["total"], json!(100_000));
    let (_, one) = env
        .call("GET", &Env::path("/devices?deviceName=device-054321"), None)
        .await;
    assert_eq!(one["list"][0]["id"], json!(ids[54_321]));
}

// ---------------------------------------------------------------------------------------------
// Faults, counters, controls
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn faults_are_scripted_per_page_and_path() {
    let env = Env::new().await;
    let ids = env.sim.seed(P, &SeedSpec::devices(5)).unwrap();
    env.sim.add_fault(FaultRule::times(
        1,
        RequestMatch::kind("devices.list"),
        Fault::rate_limited(Some(3)),
    ));
    let (s, headers, body) = env
        .raw("GET", &Env::path("/devices"), Some(KEY), None)
        .await;
    assert_eq!(s, 429);
    assert_eq!(headers.get("retry-after").unwrap(), "3");
    assert_error(s, &serde_json::from_slice(&body).unwrap(), 429, 8);
    let (s, _) = env.call("GET", &Env::path("/devices"), None).await;
    assert_eq!(s, 200, "used up");

    env.sim.add_fault(FaultRule::always(
        RequestMatch::devices_page(1).method("GET"),
        Fault::unavailable(None),
    ));
    let (s, _) = env
        .call("GET", &Env::path("/devices?page=1&perPage=2"), None)
        .await;
    assert_eq!(s, 503);
    let (s, _) = env
        .call("GET", &Env::path("/devices?page=1&perPage=2"), None)
        .await;
    assert_eq!(s, 503, "always");
    let (s, _) = env
        .call("GET", &Env::path("/devices?page=0&perPage=2"), None)
        .await;
    assert_eq!(s, 200);

    let one = Env::path(&format!("/devices/{}", ids[3]));
    env.sim.add_fault(FaultRule::always(
        RequestMatch::path(one.clone()),
        Fault::internal(),
    ));
    assert_eq!(env.call("GET", &one, None).await.0, 500);
    assert_eq!(
        env.call("GET", &Env::path(&format!("/devices/{}", ids[2])), None)
            .await
            .0,
        200
    );
    let (s, b) = env
        .call("PATCH", &one, Some(json!({"enabled": false})))
        .await;
    assert_eq!(s, 500, "{b}");
    assert!(
        env.sim.device(P, &ids[3]).unwrap().enabled,
        "a status fault writes nothing"
    );

    env.sim.clear_faults();
    env.sim.add_fault(FaultRule::times(
        1,
        RequestMatch::kind("device.get"),
        Fault::TruncatedBody,
    ));
    let (s, headers, body) = env
        .raw(
            "GET",
            &Env::path(&format!("/devices/{}", ids[0])),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        headers.get("content-length").unwrap().to_str().unwrap(),
        body.len().to_string()
    );
    assert!(serde_json::from_slice::<Value>(&body).is_err(), "cut JSON");

    let stats = env.sim.stats();
    assert_eq!(stats.faults_injected, 6);
    assert!(stats.by_method.get("GET").copied().unwrap_or(0) >= 8);
    let log = env.sim.requests();
    assert_eq!(log.len() as u64, stats.requests);
    assert_eq!(log[0].status, Some(429));
    assert_eq!(log[0].fault.as_deref(), Some("status_429"));
}

#[tokio::test]
async fn a_hang_outlives_the_client_and_the_write_still_happens() {
    let env = Env::new().await;
    let id = env.sim.seed(P, &SeedSpec::devices(1)).unwrap().remove(0);
    env.sim.add_fault(FaultRule::times(
        1,
        RequestMatch::kind("device.update"),
        Fault::hang(Duration::from_secs(30)),
    ));
    let url = format!(
        "{}{}",
        env.sim.base_url(),
        Env::path(&format!("/devices/{id}"))
    );
    let err = env
        .http
        .patch(url)
        .header("x-api-key", KEY)
        .timeout(Duration::from_millis(300))
        .body(json!({"name": "after-hang"}).to_string())
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(env.sim.device(P, &id).unwrap().name, "after-hang");
    assert!(
        env.sim
            .wait_for(Duration::from_secs(5), |s| s.in_flight == 0)
            .await,
        "the abandoned request is dropped"
    );
}

#[tokio::test]
async fn control_endpoints_drive_the_simulator_over_http() {
    let sim = Simulator::start(SimOptions {
        control_token: Some("ctl".into()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let ctl = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{base}{path}"))
            .header("x-sim-token", "ctl")
            .json(&body)
            .send()
    };
    let denied = http
        .post(format!("{base}/_sim/projects"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 401);

    let r = ctl(
        reqwest::Method::POST,
        "/_sim/projects",
        json!({"id": "demo", "apiKey": "k"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = ctl(
        reqwest::Method::POST,
        "/_sim/projects/demo/seed",
        json!({"count": 50, "tags": ["t"], "withState": true}),
    )
    .await
    .unwrap();
    let seeded: Value = r.json().await.unwrap();
    assert_eq!(seeded["data"]["count"], json!(50));
    let id = seeded["data"]["firstId"].as_str().unwrap().to_owned();

    let r = ctl(
        reqwest::Method::PATCH,
        &format!("/_sim/projects/demo/devices/{id}"),
        json!({"name": "console-name"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = ctl(reqwest::Method::POST, &format!("/_sim/projects/demo/devices/{id}/report"),
                json!({"at": "2025-11-09T23:35:06.957Z", "statePath": "battery", "state": 12, "firmwareVersion": "3.1.0"}))
        .await
        .unwrap();
    let reported: Value = r.json().await.unwrap();
    assert_eq!(
        reported["data"]["metadata"]["lastReport"],
        json!("2025-11-09T23:35:06.957Z")
    );
    assert_eq!(
        reported["data"]["metadata"]["update"]["main"]["version"],
        json!("3.1.0")
    );
    assert_eq!(sim.device("demo", &id).unwrap().state["battery"], json!(12));

    ctl(reqwest::Method::POST, "/_sim/faults", json!({"match": {"kind": "devices.list"}, "fault": {"type": "status", "status": 503, "retryAfter": "1"}, "times": 1}))
        .await
        .unwrap();
    let r = http
        .get(format!("{base}/v1/projects/demo/devices"))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let r = http
        .get(format!("{base}/v1/projects/demo/devices"))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    let listed: Value = r.json().await.unwrap();
    assert_eq!(listed["list"][0]["name"], json!("console-name"));
    ctl(reqwest::Method::PUT, "/_sim/latency", json!({"ms": 0}))
        .await
        .unwrap();
    ctl(
        reqwest::Method::PUT,
        "/_sim/faults/rates",
        json!({"seed": 3, "internalError": 0.0, "hangMs": 10}),
    )
    .await
    .unwrap();

    let stats: Value = ctl(reqwest::Method::GET, "/_sim/stats", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["data"]["requests"],
        json!(2),
        "controls are not counted: {stats}"
    );
    assert_eq!(stats["data"]["faultsInjected"], json!(1));
}

// ---------------------------------------------------------------------------------------------
// Pipeline deliveries
// ---------------------------------------------------------------------------------------------

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(got): State<Received>, headers: HeaderMap, body: Bytes| async move {
                    got.lock().unwrap().push((headers, body));
                    "ok"
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[tokio::test]
async fn pipeline_posts_json_and_cbor_with_cloudevents_headers() {
    let env = Env::new().await;
    let id = env.sim.seed(P, &SeedSpec::devices(1)).unwrap().remove(0);
    let before = env.sim.device(P, &id).unwrap();
    let (url, got) = receiver().await;
    let time = Utc.with_ymd_and_hms(2025, 11, 9, 23, 35, 6).unwrap();
    let delivery = Delivery {
        project_id: P.into(),
        device_id: id.clone(),
        path: "sensor".into(),
        payload: json!({"temp": 32}),
        time: Some(time),
        id: None,
    };

    let json_pipe = env
        .sim
        .pipeline(PipelineConfig::webhook(&url).header("x-webhook-token", "tok"));
    let out = json_pipe.deliver(&delivery).await;
    assert!(out.is_success(), "{out:?}");
    let cbor_pipe = env.sim.pipeline(
        PipelineConfig::webhook(&url)
            .cbor()
            .inject_metadata()
            .header("Authorization", "Bearer abc"),
    );
    let outs = cbor_pipe
        .deliver_all(&[delivery.clone(), delivery.clone()], 2)
        .await;
    assert!(outs.iter().all(|o| o.is_success()));

    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    let (h, body) = &got[0];
    assert_eq!(header(h, "ce-source"), id);
    assert_eq!(header(h, "ce-subject"), P);
    assert_eq!(header(h, "ce-type"), "io.golioth.data.v1/.s/sensor");
    assert_eq!(
        DateTime::parse_from_rfc3339(header(h, "ce-time")).unwrap(),
        time
    );
    assert_eq!(header(h, "content-type"), "application/json");
    assert_eq!(header(h, "x-webhook-token"), "tok");
    assert!(h.get("ce-id").is_none(), "not documented for pipelines");
    assert_eq!(
        serde_json::from_slice::<Value>(body).unwrap(),
        json!({"temp": 32}),
        "the payload, not an envelope"
    );

    let (h, body) = &got[1];
    assert_eq!(header(h, "content-type"), "application/cbor");
    assert_eq!(header(h, "authorization"), "Bearer abc");
    let v: Value = ciborium::from_reader(body.as_ref()).unwrap();
    assert_eq!(
        v,
        json!({"data": {"temp": 32}, "device_id": id, "project_id": P,
               "timestamp": {"seconds": time.timestamp(), "nanos": 0}})
    );

    let after = env.sim.device(P, &id).unwrap();
    assert_eq!(after.last_report, Some(time), "sending data is a report");
    assert_eq!(after.updated_at, before.updated_at);
}

#[tokio::test]
async fn pipeline_reports_webhook_failures() {
    let env = Env::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pipe = env.sim.pipeline(PipelineConfig::webhook(format!(
        "http://127.0.0.1:{port}/hook"
    )));
    let out = pipe
        .deliver(&Delivery {
            project_id: P.into(),
            device_id: "6500ffffffffffffffffffff".into(),
            path: "x".into(),
            payload: json!(1),
            time: None,
            id: None,
        })
        .await;
    assert!(!out.is_success());
    assert!(out.status.is_none() && out.error.is_some());
}
