//! The Golioth simulator: an HTTP server with the documented Golioth API shapes
//! (GOLIOTH_API.md), for tests, `cargo xtask up` and benchmarks.
//!
//! Start it with [`Simulator::start`]; the [`SimulatorHandle`] is both the base URL to point a
//! client at and the remote control: projects and keys, deterministic seeding, console edits,
//! device reports, latency, fault injection, counters and the request log, and a
//! [`Pipeline`] that plays Golioth's webhook deliveries. The same controls are served over HTTP
//! under `/_sim/` (see [`control`]).
//!
//! Where GOLIOTH_API.md is UNCERTAIN the simulator picks the likeliest behaviour and says so in a
//! comment; tests in `tests/tests/golioth_simulator.rs` pin its bodies to the documented examples.

mod api;
pub mod control;
pub mod faults;
pub mod model;
pub mod pipeline;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::task::JoinHandle;

use api::Inner;
pub use faults::{Fault, FaultRates, FaultRule, RequestMatch, RequestRecord, SimStats};
pub use model::{
    ProjectSpec, SeedSpec, SimBlueprint, SimCredential, SimDevice, SimError, SimResult, SimTag,
    StateOp,
};
pub use pipeline::{
    Delivery, DeliveryOutcome, PayloadFormat, Pipeline, PipelineConfig, PreparedDelivery, prepare,
};

use faults::Control;
use model::World;

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Default `127.0.0.1:0` (a free port; read it back from [`SimulatorHandle::base_url`]).
    pub bind: SocketAddr,
    /// Requests kept in the log (oldest dropped first); 0 keeps none. Counters are unaffected.
    pub request_log_capacity: usize,
    /// Serve the `/_sim/` control endpoints.
    pub control_endpoints: bool,
    /// When set, `/_sim/` requests must carry `x-sim-token: <token>`.
    pub control_token: Option<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            request_log_capacity: 100_000,
            control_endpoints: true,
            control_token: None,
        }
    }
}

/// Entry point.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Bind and serve on the current tokio runtime.
    pub async fn start(opts: SimOptions) -> std::io::Result<SimulatorHandle> {
        let inner = Arc::new(Inner {
            world: RwLock::new(World::default()),
            control: Mutex::new(Control::new(opts.request_log_capacity)),
        });
        let listener = tokio::net::TcpListener::bind(opts.bind).await?;
        let addr = listener.local_addr()?;
        let app = router(inner.clone(), &opts);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SimulatorHandle {
            inner,
            addr,
            server: Arc::new(ServerTask(task)),
        })
    }
}

/// The whole app: `/_sim/` controls (when enabled) and the Golioth API as the fallback.
fn router(inner: Arc<Inner>, opts: &SimOptions) -> Router {
    let api = Router::new()
        .fallback(api::handle)
        .with_state(inner.clone());
    if opts.control_endpoints {
        control::router(inner, opts.control_token.clone()).merge(api)
    } else {
        api
    }
}

/// Stops the server when the last handle is dropped.
#[derive(Debug)]
struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A project created by [`SimulatorHandle::create_demo_project`].
#[derive(Debug, Clone, PartialEq)]
pub struct DemoProject {
    pub project_id: String,
    pub organization_id: String,
    pub api_key: String,
    pub device_ids: Vec<String>,
}

/// The running simulator. Cheap to clone; the server stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SimulatorHandle {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: Arc<ServerTask>,
}

impl SimulatorHandle {
    /// `http://127.0.0.1:<port>`: what a client uses as its Golioth base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving now (other clones keep the state readable).
    pub fn shutdown(&self) {
        self.server.0.abort();
    }

    // ---- projects, keys, tags, blueprints -------------------------------------------------

    pub fn create_project(&self, spec: ProjectSpec) -> SimResult<()> {
        self.inner.world().create_project(&spec)
    }

    pub fn add_api_key(&self, project: &str, key: &str) -> SimResult<()> {
        self.inner.world().add_api_key(project, key)
    }

    pub fn revoke_api_key(&self, key: &str) {
        self.inner.world().revoke_api_key(key);
    }

    /// A tag, created as in the console; returns its id.
    pub fn create_tag(&self, project: &str, name: &str) -> SimResult<String> {
        let v = self.inner.world().create_tag(project, name)?;
        Ok(id_of(&v))
    }

    /// A blueprint; returns its id.
    pub fn create_blueprint(&self, project: &str, name: &str) -> SimResult<String> {
        let body =
            serde_json::json!({"name": name, "boardId": "nrf9160dk_nrf9160", "platform": "zephyr"});
        let v = self.inner.world().create_blueprint(project, &body)?;
        Ok(id_of(&v))
    }

    pub fn tag_id(&self, project: &str, name: &str) -> Option<String> {
        let w = self.inner.world();
        w.project(project)
            .ok()?
            .tag_by_name(name)
            .map(|t| t.id.clone())
    }

    /// Deterministic devices (see [`SeedSpec`]); returns their ids in creation order.
    pub fn seed(&self, project: &str, spec: &SeedSpec) -> SimResult<Vec<String>> {
        self.inner.world().seed(project, spec)
    }

    /// A demo project for local runs: `devices` devices with tags, a blueprint, state, recent
    /// reports and firmware. Deterministic except for report times (relative to now).
    pub fn create_demo_project(
        &self,
        project_id: &str,
        api_key: &str,
        devices: usize,
    ) -> SimResult<DemoProject> {
        let organization_id = format!("org-{project_id}");
        self.create_project(ProjectSpec {
            id: project_id.to_owned(),
            api_key: api_key.to_owned(),
            name: Some("Demo project".into()),
            organization_id: Some(organization_id.clone()),
        })?;
        let ids = self.seed(
            project_id,
            &SeedSpec {
                count: devices,
                name_prefix: "demo".into(),
                tags: vec!["demo".into(), "indoor".into(), "outdoor".into()],
                blueprint: Some("demo-board".into()),
                with_state: true,
                last_report: Some(Utc::now()),
                firmware_version: Some("1.0.0".into()),
                disabled_every: 10,
                ..SeedSpec::default()
            },
        )?;
        Ok(DemoProject {
            project_id: project_id.to_owned(),
            organization_id,
            api_key: api_key.to_owned(),
            device_ids: ids,
        })
    }

    // ---- devices, "as the console would" -------------------------------------------------

    /// Create a device outside the API (a remote creation the sync should discover). `body` is a
    /// create body (`{"name", "hardwareIds", "tagIds", …}`). Returns the device JSON.
    pub fn console_create_device(&self, project: &str, body: &Value) -> SimResult<Value> {
        self.inner.world().create_device(project, body)
    }

    /// Apply a PATCH body (`goliothDeviceUpdate`) outside the API: a remote change. Moves
    /// `updatedAt`; not counted as an API write.
    pub fn console_patch_device(&self, project: &str, id: &str, patch: &Value) -> SimResult<Value> {
        self.inner.world().update_device(project, id, patch, false)
    }

    /// Edit a device with a closure; uniqueness and references are checked, `updatedAt` moves.
    pub fn console_edit(
        &self,
        project: &str,
        id: &str,
        edit: impl FnOnce(&mut SimDevice),
    ) -> SimResult<Value> {
        self.inner.world().edit_device(project, id, |d| {
            edit(d);
            Ok(())
        })
    }

    pub fn console_delete_device(&self, project: &str, id: &str) -> SimResult<()> {
        self.inner.world().delete_device(project, id)
    }

    /// The device reported at `at`: `metadata.lastReport` and `lastSeenOnline` move, `updatedAt`
    /// does not (GOLIOTH_API.md §2.2, one observation).
    pub fn report(&self, project: &str, id: &str, at: DateTime<Utc>) -> SimResult<()> {
        self.inner.world().with_device_reported(project, id, |d| {
            d.last_report = Some(at);
            d.last_seen_online = Some(at);
        })
    }

    /// The device wrote LightDB State at `path` (slash-separated; empty = whole document).
    pub fn set_state(&self, project: &str, id: &str, path: &str, value: Value) -> SimResult<()> {
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        self.inner
            .world()
            .write_state(project, id, &segs, StateOp::Set, value)
            .map(|_| ())
    }

    /// The device reported firmware `version` for `package` (`metadata.update`).
    pub fn set_firmware(
        &self,
        project: &str,
        id: &str,
        package: &str,
        version: &str,
    ) -> SimResult<()> {
        self.inner.world().with_device_reported(project, id, |d| {
            d.firmware.insert(package.to_owned(), version.to_owned());
        })
    }

    pub fn device(&self, project: &str, id: &str) -> Option<SimDevice> {
        let w = self.inner.world();
        w.project(project).ok()?.device(id).cloned()
    }

    /// The device as the API renders it.
    pub fn device_json(&self, project: &str, id: &str) -> Option<Value> {
        self.device(project, id).map(|d| d.to_json())
    }

    pub fn device_count(&self, project: &str) -> usize {
        let w = self.inner.world();
        w.project(project).map_or(0, |p| p.device_count())
    }

    /// Device ids in listing (creation) order.
    pub fn device_ids(&self, project: &str) -> Vec<String> {
        let w = self.inner.world();
        w.project(project)
            .map(|p| p.device_ids().to_vec())
            .unwrap_or_default()
    }

    pub fn device_id_by_name(&self, project: &str, name: &str) -> Option<String> {
        let w = self.inner.world();
        let p = w.project(project).ok()?;
        p.device_ids()
            .iter()
            .find(|id| p.device(id).is_some_and(|d| d.name == name))
            .cloned()
    }

    pub fn credentials(&self, project: &str) -> Vec<SimCredential> {
        let w = self.inner.world();
        w.project(project)
            .map(|p| p.credentials().to_vec())
            .unwrap_or_default()
    }

    // ---- latency, faults, counters -------------------------------------------------------

    /// Added before every API request is processed.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.control().latency = latency;
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.inner.control().add_rule(rule);
    }

    pub fn set_fault_rates(&self, rates: FaultRates) {
        self.inner.control().set_rates(rates);
    }

    pub fn clear_faults(&self) {
        let mut c = self.inner.control();
        c.rules.clear();
        c.rates = None;
    }

    pub fn stats(&self) -> SimStats {
        self.inner.control().stats.clone()
    }

    /// The request log, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.control().log.iter().cloned().collect()
    }

    /// Zero the counters and clear the request log (faults and latency stay).
    pub fn reset_stats(&self) {
        self.inner.control().reset();
    }

    /// Wait until `cond` holds on the counters, polling; false after `timeout`. For tests that
    /// must wait on the server (e.g. a hung request arriving) instead of sleeping blindly.
    pub async fn wait_for(&self, timeout: Duration, cond: impl Fn(&SimStats) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(&self.stats()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // ---- pipelines -----------------------------------------------------------------------

    /// A pipeline whose deliveries also count as device reports in this simulator.
    pub fn pipeline(&self, config: PipelineConfig) -> Pipeline {
        Pipeline::with_sim(config, Some(self.inner.clone()))
    }
}

fn id_of(v: &Value) -> String {
    v.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}
