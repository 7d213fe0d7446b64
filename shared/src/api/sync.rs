//! POST …/services/:service_id/sync: start (or return the active) sync run and process slices
//! of it within the request's time budget — 200 when it finished, 202 with progress otherwise.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::input::{JSON_BODY_LIMIT, MAX_BULK_IDS, json_body, uuid_list};
use super::services::{credentials, golioth_config, keyring, load};
use super::{ApiResult, Ctx, Request, json_response};
use crate::auth::{self, Role};
use crate::engine;
use crate::error::ApiError;
use crate::routing::Params;
use crate::store::{self, runs::NewRun};

const KEYS: &[&str] = &["operation", "device_ids", "dry_run", "force"];
const OPERATIONS: &[&str] = &["import", "export", "bidirectional"];

/// A validated sync request.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRequest {
    pub operation: String,
    pub device_ids: Option<Vec<Uuid>>,
    /// Plan and report without writing to either side.
    pub dry_run: bool,
    /// Run even if the service is inactive, and do not wait for a queued run's backoff.
    pub force: bool,
}

impl SyncRequest {
    pub fn parse(body: &Value) -> Result<SyncRequest, ApiError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
        let unknown: Vec<String> = obj
            .keys()
            .filter(|k| !KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(
                ApiError::bad_request(format!("unknown keys: {}", unknown.join(", ")))
                    .with_extension("unknown_keys", json!(unknown)),
            );
        }
        let operation = match obj.get("operation").and_then(Value::as_str) {
            Some(op) if OPERATIONS.contains(&op) => op.to_owned(),
            _ => {
                return Err(ApiError::unprocessable(
                    "operation must be one of import, export, bidirectional",
                ));
            }
        };
        let device_ids = match obj.get("device_ids") {
            None | Some(Value::Null) => None,
            Some(_) => Some(uuid_list(body, "device_ids", MAX_BULK_IDS)?),
        };
        let flag = |k: &str| -> Result<bool, ApiError> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(ApiError::unprocessable(format!("{k} must be a boolean"))),
            }
        };
        Ok(SyncRequest {
            operation,
            device_ids,
            dry_run: flag("dry_run")?,
            force: flag("force")?,
        })
    }

    fn params(&self) -> Value {
        let mut m = Map::new();
        if let Some(ids) = &self.device_ids {
            m.insert("device_ids".into(), json!(ids));
        }
        if self.dry_run {
            m.insert("dry_run".into(), json!(true));
        }
        if self.force {
            m.insert("force".into(), json!(true));
        }
        Value::Object(m)
    }
}

pub async fn start(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Member).await?;
    let service_id = auth::path_uuid(params, "service_id")?;
    let body = json_body(req, JSON_BODY_LIMIT)?;
    let request = SyncRequest::parse(&body)?;
    let org = caller.org_id;
    let service = load(ctx, org, service_id).await?;
    if !service.is_active && !request.force {
        return Err(ApiError::conflict(
            "the service is inactive; activate it or pass force: true",
        ));
    }
    // Refuse early what no attempt could do (no key, unusable config).
    let ring = keyring(ctx)?;
    golioth_config(ctx, &service, &credentials(&ring, &service)?)?;

    let now = ctx.clock.now();
    let new = NewRun {
        org_id: org,
        service_id,
        operation: request.operation.clone(),
        params: request.params(),
        requested_by: Some(caller.user_id),
        now,
    };
    let force = request.force;
    let (run, existing) = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move {
            if let Some(run) = store::runs::create(tx, &new).await? {
                return Ok::<_, ApiError>((run, false));
            }
            let run = store::runs::active_full(tx, org, service_id)
                .await?
                .ok_or_else(|| ApiError::conflict("another run just ended; try again"))?;
            if force {
                store::runs::make_due(tx, org, run.id, now).await?;
            }
            Ok((run, true))
        })
    })
    .await?;

    let budget = Duration::from_millis(ctx.settings.slice_budget_ms);
    engine::process_run(ctx, org, run.id, now, budget).await?;

    let id = run.id;
    let run = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::runs::get(tx, org, id, false).await })
    })
    .await?
    .ok_or_else(|| ApiError::not_found("no such run"))?;
    let mut body = super::runs::render(&run);
    body["existing"] = json!(existing);
    let status = if run.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut resp = json_response(status, &body);
    if let Ok(loc) = http::HeaderValue::from_str(&format!("/api/v1/orgs/{org}/sync-runs/{id}")) {
        resp.headers_mut().insert(http::header::LOCATION, loc);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_unknown_keys() {
        let r = SyncRequest::parse(&json!({"operation": "import", "dry_run": true})).unwrap();
        assert_eq!(r.operation, "import");
        assert!(r.dry_run && !r.force && r.device_ids.is_none());
        let e = SyncRequest::parse(&json!({"operation": "import", "mode": 1, "x": 2})).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.extensions["unknown_keys"], json!(["mode", "x"]));
        assert_eq!(
            SyncRequest::parse(&json!({"operation": "sideways"}))
                .unwrap_err()
                .status,
            422
        );
        assert_eq!(SyncRequest::parse(&json!({})).unwrap_err().status, 422);
        let many: Vec<String> = (0..1001).map(|_| Uuid::new_v4().to_string()).collect();
        assert_eq!(
            SyncRequest::parse(&json!({"operation": "export", "device_ids": many}))
                .unwrap_err()
                .status,
            422
        );
        assert_eq!(
            SyncRequest::parse(&json!({"operation": "export", "force": "yes"}))
                .unwrap_err()
                .status,
            422
        );
    }
}
