//! The simulated Golioth REST API under `/v1/…`: routing (404 for unknown paths, 501 for a wrong
//! method on a known route, as grpc-gateway does), `x-api-key` per project, query validation,
//! and the latency / fault / counter layer around every request.

use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::faults::{Control, Fault, RequestInfo};
use super::model::{DeviceQuery, SimError, SimResult, StateOp, World};

/// State shared by the server and every handle.
#[derive(Debug)]
pub(crate) struct Inner {
    /// Read-only operations share it, so concurrent list pages are built in parallel as a real
    /// server would answer them; writes take it alone.
    pub world: RwLock<World>,
    pub control: Mutex<Control>,
}

impl Inner {
    /// A poisoned lock only means a panic elsewhere; the data is still consistent enough for a
    /// test double, so keep serving.
    pub fn world(&self) -> RwLockWriteGuard<'_, World> {
        self.world.write().unwrap_or_else(|e| e.into_inner())
    }
    pub fn world_read(&self) -> RwLockReadGuard<'_, World> {
        self.world.read().unwrap_or_else(|e| e.into_inner())
    }
    pub fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The operations the simulator implements.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    ListProjects,
    GetProject,
    ListDevices,
    CreateDevice,
    GetDevice(String),
    UpdateDevice(String),
    ReplaceDevice(String),
    DeleteDevice(String),
    ListCredentials(String),
    CreateCredential(String),
    GetState(String, Vec<String>),
    WriteState(String, Vec<String>, StateOp),
    ListTags,
    CreateTag,
    GetTag(String),
    UpdateTag(String),
    DeleteTag(String),
    ListBlueprints,
    CreateBlueprint,
    GetBlueprint(String),
    DeleteBlueprint(String),
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::ListProjects => "projects.list",
            Op::GetProject => "project.get",
            Op::ListDevices => "devices.list",
            Op::CreateDevice => "device.create",
            Op::GetDevice(_) => "device.get",
            Op::UpdateDevice(_) => "device.update",
            Op::ReplaceDevice(_) => "device.replace",
            Op::DeleteDevice(_) => "device.delete",
            Op::ListCredentials(_) => "credentials.list",
            Op::CreateCredential(_) => "credential.create",
            Op::GetState(..) => "state.get",
            Op::WriteState(_, _, StateOp::Delete) => "state.delete",
            Op::WriteState(..) => "state.write",
            Op::ListTags => "tags.list",
            Op::CreateTag => "tag.create",
            Op::GetTag(_) => "tag.get",
            Op::UpdateTag(_) => "tag.update",
            Op::DeleteTag(_) => "tag.delete",
            Op::ListBlueprints => "blueprints.list",
            Op::CreateBlueprint => "blueprint.create",
            Op::GetBlueprint(_) => "blueprint.get",
            Op::DeleteBlueprint(_) => "blueprint.delete",
        }
    }

    fn is_write(&self) -> bool {
        !matches!(
            self,
            Op::ListProjects
                | Op::GetProject
                | Op::ListDevices
                | Op::GetDevice(_)
                | Op::ListCredentials(_)
                | Op::GetState(..)
                | Op::ListTags
                | Op::GetTag(_)
                | Op::ListBlueprints
                | Op::GetBlueprint(_)
        )
    }
}

/// Decode `%XX` escapes of one path segment (invalid escapes stay as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Map a method and path to an operation and its project.
fn route(method: &Method, path: &str) -> SimResult<(Option<String>, Op)> {
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.clone();
    let wrong = || Err(SimError::method_not_allowed());
    let (project, op) = match s.as_slice() {
        ["v1", "projects"] => match m {
            Method::GET => (None, Op::ListProjects),
            _ => return wrong(),
        },
        ["v1", "projects", p] => match m {
            Method::GET => (Some(p), Op::GetProject),
            _ => return wrong(),
        },
        ["v1", "projects", p, "devices"] => match m {
            Method::GET => (Some(p), Op::ListDevices),
            Method::POST => (Some(p), Op::CreateDevice),
            _ => return wrong(),
        },
        ["v1", "projects", p, "devices", id] => {
            let id = (*id).to_owned();
            match m {
                Method::GET => (Some(p), Op::GetDevice(id)),
                Method::PATCH => (Some(p), Op::UpdateDevice(id)),
                Method::PUT => (Some(p), Op::ReplaceDevice(id)),
                Method::DELETE => (Some(p), Op::DeleteDevice(id)),
                _ => return wrong(),
            }
        }
        ["v1", "projects", p, "devices", id, "credentials"] => {
            let id = (*id).to_owned();
            match m {
                Method::GET => (Some(p), Op::ListCredentials(id)),
                Method::POST => (Some(p), Op::CreateCredential(id)),
                _ => return wrong(),
            }
        }
        ["v1", "projects", p, "devices", id, "data", rest @ ..] => {
            let id = (*id).to_owned();
            let path: Vec<String> = rest
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| (*s).to_owned())
                .collect();
            match m {
                Method::GET => (Some(p), Op::GetState(id, path)),
                Method::PUT | Method::POST => (Some(p), Op::WriteState(id, path, StateOp::Set)),
                Method::PATCH => (Some(p), Op::WriteState(id, path, StateOp::Merge)),
                Method::DELETE => (Some(p), Op::WriteState(id, path, StateOp::Delete)),
                _ => return wrong(),
            }
        }
        ["v1", "projects", p, "tags"] => match m {
            Method::GET => (Some(p), Op::ListTags),
            Method::POST => (Some(p), Op::CreateTag),
            _ => return wrong(),
        },
        ["v1", "projects", p, "tags", id] => {
            let id = (*id).to_owned();
            match m {
                Method::GET => (Some(p), Op::GetTag(id)),
                Method::PATCH | Method::PUT => (Some(p), Op::UpdateTag(id)),
                Method::DELETE => (Some(p), Op::DeleteTag(id)),
                _ => return wrong(),
            }
        }
        ["v1", "projects", p, "blueprints"] => match m {
            Method::GET => (Some(p), Op::ListBlueprints),
            Method::POST => (Some(p), Op::CreateBlueprint),
            _ => return wrong(),
        },
        // Golioth also has PUT/PATCH here; the simulator does not edit blueprints.
        ["v1", "projects", p, "blueprints", id] => {
            let id = (*id).to_owned();
            match m {
                Method::GET => (Some(p), Op::GetBlueprint(id)),
                Method::DELETE => (Some(p), Op::DeleteBlueprint(id)),
                _ => return wrong(),
            }
        }
        _ => return Err(SimError::route_not_found()),
    };
    Ok((project.map(|p| (*p).to_owned()), op))
}

/// Query pairs, decoded.
fn query_pairs(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `page` (≥ 0, default 0) and `perPage` (1..=100, default 100). Out-of-range `perPage` is a 400
/// here; whether Golioth clamps instead is UNCERTAIN (GOLIOTH_API.md §3).
fn paging(pairs: &[(String, String)]) -> SimResult<(u64, u64)> {
    let page = match first(pairs, "page") {
        None | Some("") => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| SimError::invalid("page must be a non-negative integer"))?,
    };
    let per_page = match first(pairs, "perPage") {
        None | Some("") => 100,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| SimError::invalid("perPage must be between 1 and 100"))?,
    };
    Ok((page, per_page))
}

fn device_query(pairs: &[(String, String)]) -> SimResult<DeviceQuery> {
    let (page, per_page) = paging(pairs)?;
    let text = |k: &str| first(pairs, k).filter(|v| !v.is_empty()).map(str::to_owned);
    let enabled = match first(pairs, "enabled") {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(SimError::invalid("enabled must be true or false")),
    };
    Ok(DeviceQuery {
        page,
        per_page,
        device_name: text("deviceName"),
        hardware_id: text("hardwareId"),
        // Repeated keys (`tags=a&tags=b`), grpc-gateway's convention: UNCERTAIN for Golioth.
        tags: pairs
            .iter()
            .filter(|(k, v)| k == "tags" && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect(),
        blueprint_id: text("blueprintId"),
        cohort_id: text("cohortId"),
        enabled,
        term: text("term"),
        state_path: text("statePath").map(|p| {
            p.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }),
    })
}

fn json_body(body: &Bytes) -> SimResult<Value> {
    serde_json::from_slice(body).map_err(|e| SimError::invalid(format!("invalid JSON body: {e}")))
}

/// Whom the request is from: the project of its `x-api-key`.
fn authorize(world: &World, headers: &HeaderMap, project: Option<&str>) -> SimResult<String> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(SimError::unauthenticated)?;
    let own = world
        .project_of_key(key)
        .ok_or_else(SimError::unauthenticated)?;
    match project {
        Some(p) if p != own => Err(SimError::permission_denied()),
        _ => Ok(own.to_owned()),
    }
}

/// Run one operation against the world: the writes here, the reads through [`read`].
fn execute(
    world: &mut World,
    project: &str,
    op: &Op,
    query: &str,
    body: &Bytes,
) -> SimResult<Value> {
    let data = |v: Value| json!({"data": v});
    match op {
        Op::CreateDevice => world.create_device(project, &json_body(body)?).map(data),
        Op::UpdateDevice(id) => world
            .update_device(project, id, &json_body(body)?, false)
            .map(data),
        Op::ReplaceDevice(id) => world
            .update_device(project, id, &json_body(body)?, true)
            .map(data),
        Op::DeleteDevice(id) => world.delete_device(project, id).map(|()| json!({})),
        Op::CreateCredential(id) => world
            .create_credential(project, id, &json_body(body)?)
            .map(data),
        Op::WriteState(id, path, op) => {
            let value = if *op == StateOp::Delete {
                Value::Null
            } else {
                json_body(body)?
            };
            world.write_state(project, id, path, *op, value)
        }
        Op::CreateTag => {
            let body = json_body(body)?;
            let name = body.get("name").and_then(Value::as_str).unwrap_or("");
            world.create_tag(project, name).map(data)
        }
        Op::UpdateTag(id) => world.rename_tag(project, id, &json_body(body)?).map(data),
        Op::DeleteTag(id) => world.delete_tag(project, id).map(|()| json!({})),
        Op::CreateBlueprint => world.create_blueprint(project, &json_body(body)?).map(data),
        Op::DeleteBlueprint(id) => world.delete_blueprint(project, id).map(|()| json!({})),
        _ => read(world, project, op, query),
    }
}

/// Run one read-only operation (`!op.is_write()`) against a shared view of the world.
fn read(world: &World, project: &str, op: &Op, query: &str) -> SimResult<Value> {
    let data = |v: Value| json!({"data": v});
    match op {
        Op::ListProjects => Ok(json!({"list": [world.project(project)?.to_json()]})),
        Op::GetProject => Ok(data(world.project(project)?.to_json())),
        Op::ListDevices => world.list_devices(project, &device_query(&query_pairs(query))?),
        Op::GetDevice(id) => world.get_device(project, id).map(data),
        Op::ListCredentials(id) => world.list_credentials(project, id),
        Op::GetState(id, path) => world.get_state(project, id, path),
        Op::ListTags => {
            let pairs = query_pairs(query);
            let (page, per_page) = paging(&pairs)?;
            world.list_tags(project, page, per_page, first(&pairs, "tagName"))
        }
        Op::GetTag(id) => world.get_tag(project, id).map(data),
        Op::ListBlueprints => {
            let pairs = query_pairs(query);
            let (page, per_page) = paging(&pairs)?;
            world.list_blueprints(project, page, per_page, first(&pairs, "blueprintName"))
        }
        Op::GetBlueprint(id) => world.get_blueprint(project, id).map(data),
        // Every write is matched in `execute`, which takes the world alone.
        _ => Err(SimError::method_not_allowed()),
    }
}

fn json_response(status: u16, body: Bytes, retry_after: Option<&str>) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(ra) = retry_after {
        builder = builder.header(header::RETRY_AFTER, ra);
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Decrements the in-flight gauge however the request ends (including a client hang-up, which
/// drops the handler future).
struct InFlight(Arc<Inner>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.control().leave();
    }
}

/// The fallback handler: every request that is not a `/_sim/` control lands here.
pub(crate) async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let routed = route(&method, &path);
    let kind = routed.as_ref().map_or("unknown", |(_, op)| op.kind());
    let pairs = query_pairs(&query);
    let page = first(&pairs, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let params: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let (seq, latency, fault) = {
        let mut c = inner.control();
        let seq = c.arrive(method.as_str(), &path, &query, kind);
        let fault = c.pick(&RequestInfo {
            method: method.as_str(),
            path: &path,
            page,
            kind,
            params: &params,
        });
        if let Some(f) = &fault {
            c.note_fault(seq, f);
        }
        (seq, c.latency, fault)
    };
    let _in_flight = InFlight(inner.clone());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    if let Some(Fault::Status {
        status,
        retry_after,
    }) = &fault
    {
        let body = json!({"code": Fault::grpc_code(*status), "message": "simulated failure",
                          "details": []});
        inner.control().finish(seq, *status);
        return json_response(
            *status,
            Bytes::from(body.to_string()),
            retry_after.as_deref(),
        );
    }

    let outcome = routed.and_then(|(project, op)| {
        if !op.is_write() {
            let world = inner.world_read();
            let own = authorize(&world, &headers, project.as_deref())?;
            return read(&world, &own, &op, &query);
        }
        let mut world = inner.world();
        let own = authorize(&world, &headers, project.as_deref())?;
        let value = execute(&mut world, &own, &op, &query, &body)?;
        drop(world);
        inner.control().count_write(op.kind());
        Ok(value)
    });
    let (status, value) = match outcome {
        Ok(v) => (200, v),
        Err(e) => (e.status, e.body()),
    };
    let bytes = Bytes::from(value.to_string());

    match fault {
        Some(Fault::Hang { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            inner.control().finish(seq, status);
            json_response(status, bytes, None)
        }
        Some(Fault::TruncatedBody) => {
            inner.control().finish(seq, status);
            json_response(status, bytes.slice(..bytes.len() / 2), None)
        }
        Some(Fault::AbortBody) => {
            inner.control().finish(seq, status);
            let half = bytes.slice(..bytes.len() / 2);
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::other("simulated connection abort")),
            ];
            Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap_or_else(|_| Response::new(Body::empty()))
        }
        Some(Fault::AppliedThenUnavailable) => {
            inner.control().finish(seq, 503);
            let body = json!({"code": Fault::grpc_code(503), "message": "simulated failure",
                              "details": []});
            json_response(503, Bytes::from(body.to_string()), None)
        }
        Some(Fault::AppliedThenDropped) => {
            inner.control().finish(seq, status);
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                vec![Err(std::io::Error::other("simulated dropped connection"))];
            Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap_or_else(|_| Response::new(Body::empty()))
        }
        _ => {
            inner.control().finish(seq, status);
            json_response(status, bytes, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_wrong_methods() {
        let ok = |m: Method, p: &str| route(&m, p).map(|(_, op)| op.kind());
        assert_eq!(
            ok(Method::GET, "/v1/projects/p/devices"),
            Ok("devices.list")
        );
        assert_eq!(
            ok(Method::POST, "/v1/projects/p/devices/"),
            Ok("device.create")
        );
        assert_eq!(
            ok(
                Method::GET,
                "/v1/projects/p/devices/612d3cecf3ee17d321adbec6/data/a/b%20c"
            ),
            Ok("state.get")
        );
        assert_eq!(
            ok(Method::DELETE, "/v1/projects/p/devices").map_err(|e| e.status),
            Err(501)
        );
        assert_eq!(ok(Method::GET, "/v1/nope").map_err(|e| e.status), Err(404));
        let (_, op) = route(&Method::PATCH, "/v1/projects/p/devices/x/data/a/b%20c").unwrap();
        assert_eq!(
            op,
            Op::WriteState("x".into(), vec!["a".into(), "b c".into()], StateOp::Merge)
        );
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("bad%2"), "bad%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn paging_rules() {
        let q = |s: &str| paging(&query_pairs(s)).map_err(|e| e.status);
        assert_eq!(q(""), Ok((0, 100)));
        assert_eq!(q("page=2&perPage=1"), Ok((2, 1)));
        assert_eq!(q("perPage=0"), Err(400));
        assert_eq!(q("perPage=101"), Err(400));
        assert_eq!(q("page=-1"), Err(400));
    }
}
