//! POST …/services/:service_id/sync: start (or return the active) sync run and process slices
//! of it within the request's time budget — 200 when it finished, 202 with progress otherwise.
//! Parses the body into [`StartRun`]; the use case is [`crate::app::runs::start`].

use http::StatusCode;
use serde_json::{Value, json};

use super::auth;
use super::input::{JSON_BODY_LIMIT, MAX_BULK_IDS, json_body, uuid_list};
use super::routing::Params;
use super::{ApiResult, Ctx, Request, json_response};
use crate::app::access::Role;
use crate::app::runs::{self, OPERATIONS, StartRun};
use crate::base::error::ApiError;

const KEYS: &[&str] = &["operation", "device_ids", "dry_run", "force"];

/// Parse and validate a sync request body.
fn parse(body: &Value) -> Result<StartRun, ApiError> {
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
    Ok(StartRun {
        operation,
        device_ids,
        dry_run: flag("dry_run")?,
        force: flag("force")?,
    })
}

pub async fn start(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Member).await?;
    let service_id = auth::path_uuid(params, "service_id")?;
    let body = json_body(req, JSON_BODY_LIMIT)?;
    let request = parse(&body)?;
    let (run, existing) =
        runs::start(ctx, caller.org_id, caller.user_id, service_id, &request).await?;
    let (org, id) = (run.org_id, run.id);
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
    use uuid::Uuid;

    #[test]
    fn parses_and_names_unknown_keys() {
        let r = parse(&json!({"operation": "import", "dry_run": true})).unwrap();
        assert_eq!(r.operation, "import");
        assert!(r.dry_run && !r.force && r.device_ids.is_none());
        let e = parse(&json!({"operation": "import", "mode": 1, "x": 2})).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.extensions["unknown_keys"], json!(["mode", "x"]));
        assert_eq!(
            parse(&json!({"operation": "sideways"})).unwrap_err().status,
            422
        );
        assert_eq!(parse(&json!({})).unwrap_err().status, 422);
        let many: Vec<String> = (0..1001).map(|_| Uuid::new_v4().to_string()).collect();
        assert_eq!(
            parse(&json!({"operation": "export", "device_ids": many}))
                .unwrap_err()
                .status,
            422
        );
        assert_eq!(
            parse(&json!({"operation": "export", "force": "yes"}))
                .unwrap_err()
                .status,
            422
        );
    }
}
