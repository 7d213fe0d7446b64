//! The native HTTP server: hyper on tokio, one current-thread runtime + `LocalSet` per worker
//! thread (the shared handlers are `!Send`, like Spin's), all workers accepting on one socket.
//! Requests are routed with `spin.toml`'s table and served by the same `shared::api::dispatch`
//! the Spin components call; each component sees its own rendered variables. The `console`
//! component's routes are served by the same `golioth_console::handle` its Spin component calls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use shared::api::routing::{self, RoutePattern};
use shared::api::{self, Component};
use shared::base::ctx::Ctx;
use shared::base::error::ApiError;
use shared::base::settings::vars;
use shared::runtime::native::{PgPool, ReqwestHttp, SystemClock};
use tokio::sync::watch;

use crate::manifest::{Manifest, Target};

/// Largest request body the host reads at all (Akamai's cap); handlers set tighter limits.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// How to run the host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub listen: SocketAddr,
    pub threads: usize,
    /// Run the scheduler tick in-process at this interval (what the cron component does on Spin).
    pub tick_interval: Option<Duration>,
    pub pool_size: usize,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            threads: 2,
            tick_interval: Some(Duration::from_secs(60)),
            pool_size: 16,
        }
    }
}

struct ComponentState {
    vars: HashMap<String, String>,
    pool: PgPool,
}

struct State {
    /// `spin.toml`'s routes: pattern → (what serves it, the pattern text for `spin-matched-route`).
    routes: Vec<(RoutePattern, (Target, String))>,
    components: HashMap<Component, ComponentState>,
    http: ReqwestHttp,
}

/// A running host. Dropping it (or calling `shutdown`) stops the workers.
pub struct RunningHost {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl RunningHost {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting and wait for the worker threads.
    pub fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    /// Block until the workers stop (they stop only on shutdown).
    pub fn wait(mut self) {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Start the host for `manifest` with the resolved application variables `app_vars`.
pub fn start(
    manifest: &Manifest,
    app_vars: &HashMap<String, String>,
    opts: HostOptions,
) -> Result<RunningHost> {
    let routes = manifest
        .route_table()?
        .into_iter()
        .map(|(p, c)| {
            let text = p.as_str().to_owned();
            (p, (c, text))
        })
        .collect();
    let mut pools: HashMap<String, PgPool> = HashMap::new();
    let mut components = HashMap::new();
    for c in Component::ALL {
        let vars = manifest.component_variables(c.id(), app_vars)?;
        let url = vars
            .get(vars::DB_URL)
            .with_context(|| format!("component {} has no db_url variable", c.id()))?;
        let pool = match pools.get(url) {
            Some(p) => p.clone(),
            None => {
                let p = PgPool::new(url, opts.pool_size)
                    .map_err(|e| anyhow::anyhow!("database pool for {}: {e}", c.id()))?;
                pools.insert(url.clone(), p.clone());
                p
            }
        };
        components.insert(c, ComponentState { vars, pool });
    }
    let state = Arc::new(State {
        routes,
        components,
        http: ReqwestHttp::default(),
    });

    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("binding {}", opts.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..opts.threads.max(1) {
        let l = listener.try_clone()?;
        let state = state.clone();
        let rx = rx.clone();
        let tick = if i == 0 { opts.tick_interval } else { None };
        workers.push(
            std::thread::Builder::new()
                .name(format!("host-worker-{i}"))
                .spawn(move || worker(l, state, rx, tick))?,
        );
    }
    Ok(RunningHost {
        addr,
        shutdown: tx,
        workers,
    })
}

fn worker(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    tick: Option<Duration>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            shared::base::log::error("worker runtime failed", json!({"error": e.to_string()}));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                shared::base::log::error("listener failed", json!({"error": e.to_string()}));
                return;
            }
        };
        if let Some(every) = tick {
            let state = state.clone();
            let mut stop = shutdown.clone();
            tokio::task::spawn_local(async move {
                let mut interval = tokio::time::interval(every);
                interval.tick().await;
                loop {
                    tokio::select! {
                        _ = interval.tick() => run_tick(&state).await,
                        _ = stop.changed() => break,
                    }
                }
            });
        }
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    tokio::task::spawn_local(serve_connection(stream, move |req| {
                        let state = state.clone();
                        async move { handle(&state, req).await }
                    }));
                }
                _ = shutdown.changed() => break,
            }
        }
    });
}

/// Serve one HTTP/1 connection with `handler`. A handler that panics is answered with the opaque
/// 500 problem+json (the panic is logged), never with a dropped connection: the connection stays
/// open for the client's next request.
pub async fn serve_connection<F, Fut>(stream: tokio::net::TcpStream, handler: F)
where
    F: Fn(hyper::Request<Incoming>) -> Fut + 'static,
    Fut: std::future::Future<Output = hyper::Response<Full<Bytes>>> + 'static,
{
    let handler = Rc::new(handler);
    let service = service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(unwinding_to_500(handler(req)).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Run a request's future; if it panics, log the panic and answer a 500 problem+json.
async fn unwinding_to_500(
    fut: impl std::future::Future<Output = hyper::Response<Full<Bytes>>>,
) -> hyper::Response<Full<Bytes>> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let cause = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            problem(ApiError::internal(format!("handler panicked: {cause}")))
        }
    }
}

/// The in-process equivalent of the cron component: POST /internal/tick with the internal token.
async fn run_tick(state: &State) {
    let Some(cs) = state.components.get(&Component::DeviceSync) else {
        return;
    };
    let token = cs
        .vars
        .get(vars::INTERNAL_TOKEN)
        .cloned()
        .unwrap_or_default();
    let req = http::Request::builder()
        .method("POST")
        .uri("/internal/tick")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Bytes::from_static(b"{}"));
    let Ok(req) = req else { return };
    let resp = dispatch(state, Component::DeviceSync, req).await;
    if !resp.status().is_success() {
        shared::base::log::warn(
            "scheduled tick failed",
            json!({"status": resp.status().as_u16(),
                   "body": String::from_utf8_lossy(resp.body()).chars().take(300).collect::<String>()}),
        );
    }
}

async fn dispatch(state: &State, component: Component, req: api::Request) -> api::Response {
    let cs = &state.components[&component];
    let db = cs.pool.lazy();
    let ctx = Ctx::new(&db, &state.http, &SystemClock, &cs.vars);
    api::dispatch(component, req, &ctx).await
}

fn problem(err: ApiError) -> hyper::Response<Full<Bytes>> {
    let request_id = uuid::Uuid::new_v4().to_string();
    if let Some(cause) = err.cause() {
        shared::base::log::error(
            "request failed",
            json!({"request_id": request_id, "status": err.status.as_u16(), "cause": cause}),
        );
    }
    let resp = err.into_response(&request_id);
    let (parts, body) = resp.into_parts();
    hyper::Response::from_parts(parts, Full::new(body))
}

async fn handle(state: &State, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let Some(((component, matched), params)) = routing::select(&state.routes, &path) else {
        return problem(ApiError::not_found(format!("no route for {path}")));
    };
    let component = match *component {
        Target::Api(c) => c,
        // The console component: static files from the `golioth-console` crate, the same bytes
        // and headers as under Spin (no database, no request body).
        Target::Console => {
            let (parts, body) = golioth_console::handle(&req).into_parts();
            return hyper::Response::from_parts(parts, Full::new(Bytes::from(body)));
        }
    };
    let (mut parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return problem(ApiError::payload_too_large(MAX_BODY_BYTES)),
    };
    // Like Spin: client-sent spin-* headers are dropped, and the routing headers are set.
    let spin_headers: Vec<_> = parts
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for k in spin_headers {
        parts.headers.remove(k);
    }
    for (name, value) in params.iter() {
        let header = format!("spin-path-match-{}", name.replace('_', "-"));
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(header.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            parts.headers.insert(n, v);
        }
    }
    if let Ok(v) = http::HeaderValue::from_str(matched) {
        parts.headers.insert("spin-matched-route", v);
    }
    let req = http::Request::from_parts(parts, body);
    let resp = dispatch(state, component, req).await;
    let (parts, body) = resp.into_parts();
    hyper::Response::from_parts(parts, Full::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Read one HTTP/1.1 response (headers and a `content-length` body) from `stream`.
    async fn read_response(stream: &mut tokio::net::TcpStream) -> (String, String) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.expect("reading the answer");
            assert!(n > 0, "the connection was closed without an answer");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                    return (head, body);
                }
            }
        }
    }

    /// A handler that panics is answered with the opaque 500 problem+json, and the same
    /// connection then serves the next request.
    #[test]
    fn a_panicking_handler_gets_a_500_problem_not_a_dropped_connection() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::task::spawn_local(async move {
                let (stream, _) = listener.accept().await.unwrap();
                serve_connection(stream, |req: hyper::Request<Incoming>| async move {
                    if req.uri().path() == "/panic" {
                        panic!("boom in a handler");
                    }
                    hyper::Response::new(Full::new(Bytes::from_static(b"ok")))
                })
                .await;
            });
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /panic HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let (head, body) = read_response(&mut stream).await;
            assert!(head.starts_with("HTTP/1.1 500"), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/problem+json"),
                "{head}"
            );
            let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(problem["status"], 500);
            assert!(problem["request_id"].is_string(), "{problem}");
            assert!(!body.contains("boom"), "the panic message leaked: {body}");
            stream
                .write_all(b"GET /fine HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let (head, body) = read_response(&mut stream).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(body, "ok");
        });
    }
}
