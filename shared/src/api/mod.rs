//! The HTTP layer, shared by both hosts: the per-component route tables, the dispatcher
//! (routing, CORS, request log, problem+json rendering) and one thin module per endpoint group
//! (authorize, parse the input into typed values, call one use case, render the answer).
//!
//! Owns routes, input parsing, authorization and rendering; holds no SQL, no transaction and no
//! business rule. Uses `app` (the use cases), and `domain`/`base` for types only.

mod assignments;
pub mod auth;
mod conflicts;
mod health;
pub mod input;
mod me;
pub mod routing;
mod runs;
mod services;
mod stats;
mod sync;
mod sync_log;
mod tick;
mod webhook;

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde_json::json;

use crate::api::routing::{Params, RoutePattern};
use crate::base::ctx::Ctx;
use crate::base::error::ApiError;
use crate::base::settings::Settings;

pub type Request = http::Request<Bytes>;
pub type Response = http::Response<Bytes>;
pub type ApiResult = Result<Response, ApiError>;

/// The Spin components that serve HTTP. Ids are the component ids of `spin.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    DeviceSync,
    GoliothWebhook,
    Conflicts,
}

impl Component {
    pub const ALL: [Component; 3] = [
        Component::DeviceSync,
        Component::GoliothWebhook,
        Component::Conflicts,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Component::DeviceSync => "device-sync",
            Component::GoliothWebhook => "golioth-webhook",
            Component::Conflicts => "conflicts",
        }
    }

    pub fn from_id(id: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.id() == id)
    }
}

/// Every endpoint of every component. Handlers are matched on this enum, so a route without a
/// handler cannot compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Tick,
    Me,
    ListServices,
    CreateService,
    GetService,
    UpdateService,
    DeleteService,
    TestService,
    ListAssignments,
    AddAssignments,
    RemoveAssignments,
    StartSync,
    ServiceStats,
    ListRuns,
    GetRun,
    CancelRun,
    SyncLog,
    Webhook,
    ListConflicts,
    GetConflict,
    ResolveConflict,
    BulkResolve,
}

/// Who may call a route: the authorization matrix, written down once, next to the routes.
/// Handlers enforce it (`auth::authorize` / `auth::authorize_internal` / webhook secrets) and
/// `tests/tests/authz_matrix.rs` holds every handler to this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health).
    Public,
    /// The `internal_token` secret (the scheduler tick).
    Internal,
    /// The service's webhook secret (Golioth Pipelines).
    WebhookSecret,
    /// Any valid bearer token, about its own user only (`/api/v1/me`); no organization.
    User,
    /// A member of the organization in the path with at least this role; non-members get 404.
    Org(crate::app::access::Role),
}

/// One row of a component's route table.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub pattern: &'static str,
    pub endpoint: Endpoint,
    pub access: Access,
}

const fn r(
    method: &'static str,
    pattern: &'static str,
    endpoint: Endpoint,
    access: Access,
) -> Route {
    Route {
        method,
        pattern,
        endpoint,
        access,
    }
}

/// The route table of each component. `spin.toml` maps the same patterns to the component; a
/// test holds the two (and the OpenAPI document) together.
pub fn routes(component: Component) -> &'static [Route] {
    use Endpoint::*;
    const VIEWER: Access = Access::Org(crate::app::access::Role::Viewer);
    const MEMBER: Access = Access::Org(crate::app::access::Role::Member);
    const ADMIN: Access = Access::Org(crate::app::access::Role::Admin);
    const DEVICE_SYNC: &[Route] = &[
        r("GET", "/health", Health, Access::Public),
        r("POST", "/internal/tick", Tick, Access::Internal),
        r("GET", "/api/v1/me", Me, Access::User),
        r("GET", "/api/v1/orgs/:org_id/services", ListServices, VIEWER),
        r(
            "POST",
            "/api/v1/orgs/:org_id/services",
            CreateService,
            ADMIN,
        ),
        r(
            "GET",
            "/api/v1/orgs/:org_id/services/:service_id",
            GetService,
            VIEWER,
        ),
        r(
            "PATCH",
            "/api/v1/orgs/:org_id/services/:service_id",
            UpdateService,
            ADMIN,
        ),
        r(
            "DELETE",
            "/api/v1/orgs/:org_id/services/:service_id",
            DeleteService,
            ADMIN,
        ),
        r(
            "POST",
            "/api/v1/orgs/:org_id/services/:service_id/test",
            TestService,
            MEMBER,
        ),
        r(
            "GET",
            "/api/v1/orgs/:org_id/services/:service_id/assignments",
            ListAssignments,
            VIEWER,
        ),
        r(
            "POST",
            "/api/v1/orgs/:org_id/services/:service_id/assignments",
            AddAssignments,
            ADMIN,
        ),
        r(
            "DELETE",
            "/api/v1/orgs/:org_id/services/:service_id/assignments",
            RemoveAssignments,
            ADMIN,
        ),
        r(
            "POST",
            "/api/v1/orgs/:org_id/services/:service_id/sync",
            StartSync,
            MEMBER,
        ),
        r(
            "GET",
            "/api/v1/orgs/:org_id/services/:service_id/stats",
            ServiceStats,
            VIEWER,
        ),
        r("GET", "/api/v1/orgs/:org_id/sync-runs", ListRuns, VIEWER),
        r(
            "GET",
            "/api/v1/orgs/:org_id/sync-runs/:run_id",
            GetRun,
            VIEWER,
        ),
        r(
            "POST",
            "/api/v1/orgs/:org_id/sync-runs/:run_id/cancel",
            CancelRun,
            MEMBER,
        ),
        r("GET", "/api/v1/orgs/:org_id/sync-log", SyncLog, VIEWER),
    ];
    const WEBHOOK: &[Route] = &[r(
        "POST",
        "/webhooks/golioth/:service_id",
        Webhook,
        Access::WebhookSecret,
    )];
    const CONFLICTS: &[Route] = &[
        r(
            "GET",
            "/api/v1/orgs/:org_id/conflicts",
            ListConflicts,
            VIEWER,
        ),
        r(
            "POST",
            "/api/v1/orgs/:org_id/conflicts/resolve",
            BulkResolve,
            MEMBER,
        ),
        r(
            "GET",
            "/api/v1/orgs/:org_id/conflicts/:conflict_id",
            GetConflict,
            VIEWER,
        ),
        r(
            "POST",
            "/api/v1/orgs/:org_id/conflicts/:conflict_id/resolve",
            ResolveConflict,
            MEMBER,
        ),
    ];
    match component {
        Component::DeviceSync => DEVICE_SYNC,
        Component::GoliothWebhook => WEBHOOK,
        Component::Conflicts => CONFLICTS,
    }
}

fn parsed_routes(component: Component) -> &'static [(RoutePattern, Route)] {
    static CACHE: OnceLock<Vec<Vec<(RoutePattern, Route)>>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        Component::ALL
            .iter()
            .map(|c| {
                routes(*c)
                    .iter()
                    .filter_map(|r| RoutePattern::parse(r.pattern).ok().map(|p| (p, *r)))
                    .collect()
            })
            .collect()
    });
    let idx = Component::ALL
        .iter()
        .position(|c| *c == component)
        .unwrap_or_default();
    &all[idx]
}

/// What routing decided for one request.
enum Resolved {
    Found(Endpoint, Params),
    WrongMethod(Vec<&'static str>),
    NotFound,
}

fn resolve(component: Component, method: &Method, path: &str) -> Resolved {
    let table = parsed_routes(component);
    // Most specific pattern first (Spin's rule), then the method among that pattern's rows.
    let mut candidates: Vec<(&RoutePattern, &Route, Params)> = table
        .iter()
        .filter_map(|(p, r)| p.matches(path).map(|m| (p, r, m)))
        .collect();
    if candidates.is_empty() {
        return Resolved::NotFound;
    }
    if let Some(i) = candidates
        .iter()
        .position(|(_, r, _)| r.method == method.as_str())
    {
        let (_, r, params) = candidates.swap_remove(i);
        return Resolved::Found(r.endpoint, params);
    }
    let mut allow: Vec<&'static str> = candidates.iter().map(|(_, r, _)| r.method).collect();
    allow.push("OPTIONS");
    allow.dedup();
    Resolved::WrongMethod(allow)
}

fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn cors_origin(req: &Request, settings: &Settings) -> Option<HeaderValue> {
    let origin = req.headers().get(http::header::ORIGIN)?.to_str().ok()?;
    settings
        .cors_allowed_origins
        .iter()
        .any(|o| o == origin)
        .then(|| HeaderValue::from_str(origin).ok())
        .flatten()
}

/// Serve one request for `component`: route, authorize inside the handler, render errors as
/// problem+json, add CORS headers, and log one line.
pub async fn dispatch(component: Component, req: Request, ctx: &Ctx<'_>) -> Response {
    let started = Instant::now();
    let rid = request_id(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let origin = cors_origin(&req, &ctx.settings);

    let (result, route) = if method == Method::OPTIONS {
        (Ok(preflight(origin.is_some())), "OPTIONS")
    } else {
        match resolve(component, &method, &path) {
            Resolved::Found(endpoint, params) => {
                let route = routes(component)
                    .iter()
                    .find(|r| r.endpoint == endpoint)
                    .map_or("", |r| r.pattern);
                (handle(endpoint, req, &params, ctx).await, route)
            }
            Resolved::WrongMethod(allow) => (Err(ApiError::method_not_allowed(&allow)), ""),
            Resolved::NotFound => (Err(ApiError::not_found(format!("no route for {path}"))), ""),
        }
    };

    let mut response = match result {
        Ok(resp) => resp,
        Err(err) => {
            if err.status.is_server_error() {
                crate::base::log::error(
                    "request failed",
                    json!({"request_id": rid, "route": route, "status": err.status.as_u16(),
                           "cause": err.cause().unwrap_or("")}),
                );
            }
            err.into_response(&rid)
        }
    };
    if let Some(origin) = origin {
        let h = response.headers_mut();
        h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(http::header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Ok(v) = HeaderValue::from_str(&rid) {
        response.headers_mut().insert("x-request-id", v);
    }
    crate::base::log::info(
        "request",
        json!({"request_id": rid, "component": component.id(), "method": method.as_str(),
               "route": route, "status": response.status().as_u16(),
               "duration_ms": started.elapsed().as_millis() as u64}),
    );
    response
}

fn preflight(allowed: bool) -> Response {
    let mut resp = http::Response::new(Bytes::new());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    if allowed {
        let h = resp.headers_mut();
        h.insert(
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PATCH, DELETE, OPTIONS"),
        );
        h.insert(
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, x-request-id"),
        );
        h.insert(
            http::header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    resp
}

async fn handle(endpoint: Endpoint, req: Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let req = &req;
    match endpoint {
        Endpoint::Health => health::health(ctx).await,
        Endpoint::Me => me::get(req, params, ctx).await,
        Endpoint::ListServices => services::list(req, params, ctx).await,
        Endpoint::CreateService => services::create(req, params, ctx).await,
        Endpoint::GetService => services::get(req, params, ctx).await,
        Endpoint::UpdateService => services::update(req, params, ctx).await,
        Endpoint::DeleteService => services::delete(req, params, ctx).await,
        Endpoint::TestService => services::test(req, params, ctx).await,
        Endpoint::ListAssignments => assignments::list(req, params, ctx).await,
        Endpoint::AddAssignments => assignments::add(req, params, ctx).await,
        Endpoint::RemoveAssignments => assignments::remove(req, params, ctx).await,
        Endpoint::StartSync => sync::start(req, params, ctx).await,
        Endpoint::ServiceStats => stats::get(req, params, ctx).await,
        Endpoint::ListRuns => runs::list(req, params, ctx).await,
        Endpoint::GetRun => runs::get(req, params, ctx).await,
        Endpoint::CancelRun => runs::cancel(req, params, ctx).await,
        Endpoint::SyncLog => sync_log::list(req, params, ctx).await,
        Endpoint::Tick => tick::tick(req, params, ctx).await,
        Endpoint::Webhook => webhook::receive(req, params, ctx).await,
        Endpoint::ListConflicts => conflicts::list(req, params, ctx).await,
        Endpoint::GetConflict => conflicts::get(req, params, ctx).await,
        Endpoint::ResolveConflict => conflicts::resolve(req, params, ctx).await,
        Endpoint::BulkResolve => conflicts::bulk_resolve(req, params, ctx).await,
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = http::Response::new(Bytes::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_parses_and_component_ids_round_trip() {
        for c in Component::ALL {
            assert_eq!(Component::from_id(c.id()), Some(c));
            assert_eq!(parsed_routes(c).len(), routes(c).len(), "{c:?}");
        }
    }

    #[test]
    fn literal_beats_param_and_methods_are_checked() {
        let m = |method: &str, path: &str| match resolve(
            Component::Conflicts,
            &Method::from_bytes(method.as_bytes()).unwrap(),
            path,
        ) {
            Resolved::Found(e, _) => format!("{e:?}"),
            Resolved::WrongMethod(a) => format!("405 {a:?}"),
            Resolved::NotFound => "404".into(),
        };
        assert_eq!(m("POST", "/api/v1/orgs/o/conflicts/resolve"), "BulkResolve");
        assert_eq!(m("GET", "/api/v1/orgs/o/conflicts/c1"), "GetConflict");
        assert_eq!(
            m("POST", "/api/v1/orgs/o/conflicts/c1/resolve"),
            "ResolveConflict"
        );
        assert_eq!(
            m("DELETE", "/api/v1/orgs/o/conflicts/c1"),
            "405 [\"GET\", \"OPTIONS\"]"
        );
        assert_eq!(m("GET", "/nope"), "404");
    }
}
