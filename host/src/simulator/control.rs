//! HTTP control endpoints under `/_sim/`, so someone running `cargo xtask up` can poke the
//! simulator with curl: create projects, seed, edit devices as the console would, report, set
//! latency and faults, read counters, and play a pipeline. They mirror the Rust API of
//! [`super::SimulatorHandle`] and never count as Golioth traffic.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::Inner;
use super::faults::{FaultRates, FaultRule};
use super::model::{ProjectSpec, SeedSpec, SimError, StateOp};
use super::pipeline::{Delivery, Pipeline, PipelineConfig};

struct Ctl(SimError);

impl IntoResponse for Ctl {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(self.0.body())).into_response()
    }
}

impl From<SimError> for Ctl {
    fn from(e: SimError) -> Self {
        Ctl(e)
    }
}

type CtlResult = Result<Json<Value>, Ctl>;

fn data(v: Value) -> CtlResult {
    Ok(Json(json!({"data": v})))
}

#[derive(Clone)]
struct CtlState {
    inner: Arc<Inner>,
    token: Option<String>,
}

async fn require_token(State(s): State<CtlState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let given = req
            .headers()
            .get("x-sim-token")
            .and_then(|v| v.to_str().ok());
        if given != Some(token.as_str()) {
            return Ctl(SimError::new(401, 16, "missing or wrong x-sim-token")).into_response();
        }
    }
    next.run(req).await
}

async fn create_project(State(s): State<CtlState>, Json(spec): Json<ProjectSpec>) -> CtlResult {
    let mut w = s.inner.world();
    w.create_project(&spec)?;
    data(w.project(&spec.id)?.to_json())
}

async fn seed(
    State(s): State<CtlState>,
    Path(project): Path<String>,
    Json(spec): Json<SeedSpec>,
) -> CtlResult {
    let ids = s.inner.world().seed(&project, &spec)?;
    data(json!({"count": ids.len(), "firstId": ids.first(), "lastId": ids.last()}))
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

async fn create_tag(
    State(s): State<CtlState>,
    Path(project): Path<String>,
    Json(body): Json<NameBody>,
) -> CtlResult {
    data(s.inner.world().create_tag(&project, &body.name)?)
}

async fn create_device(
    State(s): State<CtlState>,
    Path(project): Path<String>,
    Json(body): Json<Value>,
) -> CtlResult {
    data(s.inner.world().create_device(&project, &body)?)
}

async fn edit_device(
    State(s): State<CtlState>,
    Path((project, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> CtlResult {
    data(s.inner.world().update_device(&project, &id, &body, false)?)
}

async fn delete_device(
    State(s): State<CtlState>,
    Path((project, id)): Path<(String, String)>,
) -> CtlResult {
    s.inner.world().delete_device(&project, &id)?;
    Ok(Json(json!({})))
}

/// A device report: when it was last heard from, and optionally a state value or firmware.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ReportBody {
    at: Option<DateTime<Utc>>,
    state_path: Option<String>,
    state: Option<Value>,
    firmware_version: Option<String>,
}

async fn report(
    State(s): State<CtlState>,
    Path((project, id)): Path<(String, String)>,
    Json(body): Json<ReportBody>,
) -> CtlResult {
    let mut w = s.inner.world();
    let at = body.at.unwrap_or_else(Utc::now);
    w.with_device_reported(&project, &id, |d| {
        d.last_report = Some(at);
        d.last_seen_online = Some(at);
        if let Some(v) = &body.firmware_version {
            d.firmware.insert("main".into(), v.clone());
        }
    })?;
    if let Some(value) = body.state {
        let path: Vec<String> = body
            .state_path
            .unwrap_or_default()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        w.write_state(&project, &id, &path, StateOp::Set, value)?;
    }
    data(w.get_device(&project, &id)?)
}

#[derive(Deserialize)]
struct LatencyBody {
    ms: u64,
}

async fn set_latency(State(s): State<CtlState>, Json(body): Json<LatencyBody>) -> CtlResult {
    s.inner.control().latency = Duration::from_millis(body.ms);
    Ok(Json(json!({})))
}

async fn add_fault(State(s): State<CtlState>, Json(rule): Json<FaultRule>) -> CtlResult {
    s.inner.control().add_rule(rule);
    Ok(Json(json!({})))
}

async fn set_rates(State(s): State<CtlState>, Json(rates): Json<FaultRates>) -> CtlResult {
    s.inner.control().set_rates(rates);
    Ok(Json(json!({})))
}

async fn clear_faults(State(s): State<CtlState>) -> CtlResult {
    let mut c = s.inner.control();
    c.rules.clear();
    c.rates = None;
    Ok(Json(json!({})))
}

async fn stats(State(s): State<CtlState>) -> CtlResult {
    let stats = s.inner.control().stats.clone();
    serde_json::to_value(stats)
        .map(|v| Json(json!({"data": v})))
        .map_err(|e| Ctl(SimError::new(500, 13, e.to_string())))
}

async fn reset_stats(State(s): State<CtlState>) -> CtlResult {
    s.inner.control().reset();
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeliverBody {
    pipeline: PipelineConfig,
    deliveries: Vec<Delivery>,
    #[serde(default)]
    concurrency: Option<usize>,
}

async fn deliver(State(s): State<CtlState>, Json(body): Json<DeliverBody>) -> CtlResult {
    let pipeline = Pipeline::with_sim(body.pipeline, Some(s.inner.clone()));
    let outcomes = pipeline
        .deliver_all(&body.deliveries, body.concurrency.unwrap_or(4))
        .await;
    let list =
        serde_json::to_value(outcomes).map_err(|e| Ctl(SimError::new(500, 13, e.to_string())))?;
    Ok(Json(json!({"list": list})))
}

/// The `/_sim/` routes.
pub(crate) fn router(inner: Arc<Inner>, token: Option<String>) -> Router {
    let state = CtlState { inner, token };
    Router::new()
        .route("/_sim/projects", post(create_project))
        .route("/_sim/projects/{p}/seed", post(seed))
        .route("/_sim/projects/{p}/tags", post(create_tag))
        .route("/_sim/projects/{p}/devices", post(create_device))
        .route(
            "/_sim/projects/{p}/devices/{id}",
            patch(edit_device).delete(delete_device),
        )
        .route("/_sim/projects/{p}/devices/{id}/report", post(report))
        .route("/_sim/latency", put(set_latency))
        .route("/_sim/faults", post(add_fault).delete(clear_faults))
        .route("/_sim/faults/rates", put(set_rates))
        .route("/_sim/stats", get(stats).delete(reset_stats))
        .route("/_sim/pipeline/deliver", post(deliver))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}
