//! Conflicts over HTTP: list, inspect, resolve one or many — authorization, query and body
//! parsing, rendering, and the mapping of a [`Failure`] to a problem. What a resolution does is
//! the use case's, [`crate::app::conflicts`].

use std::collections::HashMap;

use chrono::DateTime;
use http::StatusCode;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::auth;
use super::input::{
    JSON_BODY_LIMIT, MAX_BULK_IDS, decode_cursor, encode_cursor, json_body, page_limit, query,
    uuid_list,
};
use super::routing::Params;
use super::{ApiResult, Ctx, Request, json_response};
use crate::app::access::Role;
use crate::app::conflicts::{
    self as uc, Decision, Failure, STATUSES, Selection, Strategy, TYPES, allowed_resolutions,
};
use crate::base::error::ApiError;
use crate::domain::store::conflicts as db;
use crate::domain::sync::{ConflictField, Field};

fn render(c: &db::ConflictRow) -> Value {
    json!({
        "id": c.id,
        "service_id": c.service_id,
        "service_name": c.service_name,
        "device_id": c.device_id,
        "device_name": c.device_name,
        "external_device_id": c.external_device_id,
        "field_name": c.field_name,
        "conflict_type": c.conflict_type,
        "base_value": c.base_value,
        "local_value": c.local_value,
        "remote_value": c.remote_value,
        "local_updated_at": c.local_updated_at,
        "remote_updated_at": c.remote_updated_at,
        "detected_run_id": c.detected_run_id,
        "resolution_status": c.resolution_status,
        "resolution_strategy": c.resolution_strategy,
        "resolved_value": c.resolved_value,
        "resolved_by": c.resolved_by,
        "resolved_at": c.resolved_at,
        "allowed_resolutions": if c.resolution_status == "pending" {
            allowed_resolutions(&c.field_name)
        } else {
            &[]
        },
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    })
}

fn one_of(value: &str, allowed: &[&str], name: &str) -> Result<String, ApiError> {
    if allowed.contains(&value) {
        Ok(value.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "{name} must be one of {}",
            allowed.join(", ")
        )))
    }
}

fn field_name(value: &str) -> Result<String, ApiError> {
    ConflictField::parse(value)
        .map(|f| f.as_str().to_owned())
        .ok_or_else(|| {
            let mut names: Vec<&str> = Field::ALL.iter().map(|f| f.as_str()).collect();
            names.extend(["device", "identity"]);
            ApiError::bad_request(format!("field_name must be one of {}", names.join(", ")))
        })
}

fn uuid_param(value: &str, name: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(value).map_err(|_| ApiError::bad_request(format!("{name} must be a uuid")))
}

/// The list's filters from query parameters; an invalid value is a 400.
fn list_filter(q: &HashMap<String, String>) -> Result<db::Filter, ApiError> {
    Ok(db::Filter {
        status: q
            .get("status")
            .map(|s| one_of(s, &STATUSES, "status"))
            .transpose()?,
        service_id: q
            .get("service_id")
            .map(|s| uuid_param(s, "service_id"))
            .transpose()?,
        device_id: q
            .get("device_id")
            .map(|s| uuid_param(s, "device_id"))
            .transpose()?,
        field_name: q.get("field_name").map(|s| field_name(s)).transpose()?,
        conflict_type: q
            .get("conflict_type")
            .map(|s| one_of(s, &TYPES, "conflict_type"))
            .transpose()?,
    })
}

fn cursor_after(q: &HashMap<String, String>) -> Result<Option<db::After>, ApiError> {
    let Some(c) = decode_cursor(q)? else {
        return Ok(None);
    };
    let created_at = c
        .get("t")
        .and_then(Value::as_str)
        .filter(|t| DateTime::parse_from_rfc3339(t).is_ok());
    let id = c
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok());
    match (created_at, id) {
        (Some(t), Some(id)) => Ok(Some(db::After {
            created_at: t.to_owned(),
            id,
        })),
        _ => Err(ApiError::bad_request("invalid cursor")),
    }
}

/// `GET /api/v1/orgs/:org_id/conflicts` — newest first, filtered, cursor-paginated.
pub async fn list(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let q = query(req);
    let filter = list_filter(&q)?;
    let limit = page_limit(&q)?;
    let after = cursor_after(&q)?;
    let rows = uc::list(ctx, caller.org_id, &filter, after.as_ref(), limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = more
        .then(|| {
            page.last()
                .map(|r| encode_cursor(&json!({"t": r.created_at, "id": r.id})))
        })
        .flatten();
    let items: Vec<Value> = page.iter().map(render).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "next_cursor": next}),
    ))
}

/// `GET /api/v1/orgs/:org_id/conflicts/:conflict_id`.
pub async fn get(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Viewer).await?;
    let id = auth::path_uuid(params, "conflict_id")?;
    let row = uc::get(ctx, caller.org_id, id).await?;
    Ok(json_response(StatusCode::OK, &render(&row)))
}

fn body_object<'a>(body: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let unknown: Vec<&String> = obj
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "unknown keys: {}",
            unknown
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_extension("unknown_keys", json!(unknown)));
    }
    Ok(obj)
}

/// Parse `{resolution, value?, device_id?}`. `bulk` refuses `link`, which names one conflict's
/// candidate.
fn parse_decision(obj: &Map<String, Value>, bulk: bool) -> Result<Decision, ApiError> {
    let strategy = obj
        .get("resolution")
        .and_then(Value::as_str)
        .and_then(Strategy::parse)
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "resolution must be one of {}",
                Strategy::NAMES.join(", ")
            ))
        })?;
    let value = obj.get("value").cloned();
    match (strategy, &value) {
        (Strategy::Custom, None) => {
            return Err(ApiError::unprocessable("a custom resolution needs a value"));
        }
        (s, Some(_)) if s != Strategy::Custom => {
            return Err(ApiError::unprocessable(
                "value is only accepted with resolution custom",
            ));
        }
        _ => {}
    }
    let device_id = match obj.get("device_id") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| ApiError::unprocessable("device_id must be a uuid"))?,
        ),
    };
    match (strategy, device_id) {
        (Strategy::Link, _) if bulk => Err(ApiError::unprocessable(
            "link names one conflict's candidate: resolve identity conflicts one at a time",
        )),
        (Strategy::Link, None) => Err(ApiError::unprocessable(
            "link needs device_id, one of the local candidates the conflict lists",
        )),
        (s, Some(_)) if s != Strategy::Link => Err(ApiError::unprocessable(
            "device_id is only accepted with resolution link",
        )),
        _ => Ok(Decision {
            strategy,
            value,
            device_id,
        }),
    }
}

/// The filter of a bulk resolution (`status` is always pending).
fn bulk_filter(v: &Value) -> Result<db::Filter, ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::unprocessable("filter must be an object"))?;
    let unknown: Vec<&String> = obj
        .keys()
        .filter(|k| {
            !["service_id", "device_id", "field_name", "conflict_type"].contains(&k.as_str())
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request("unknown filter keys")
            .with_extension("unknown_keys", json!(unknown)));
    }
    let text = |key: &str| -> Result<Option<&str>, ApiError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::unprocessable(format!("{key} must be a string"))),
        }
    };
    let unprocessable = |e: ApiError| ApiError::unprocessable(e.detail.unwrap_or_default());
    Ok(db::Filter {
        status: None,
        service_id: text("service_id")?
            .map(|s| uuid_param(s, "service_id"))
            .transpose()
            .map_err(unprocessable)?,
        device_id: text("device_id")?
            .map(|s| uuid_param(s, "device_id"))
            .transpose()
            .map_err(unprocessable)?,
        field_name: text("field_name")?
            .map(field_name)
            .transpose()
            .map_err(unprocessable)?,
        conflict_type: text("conflict_type")?
            .map(|s| one_of(s, &TYPES, "conflict_type"))
            .transpose()
            .map_err(unprocessable)?,
    })
}

/// A conflict that was not resolved, as a problem: 404, 422 for a request that does not fit the
/// conflict, 409 otherwise; `code` names the reason.
fn problem(f: Failure) -> ApiError {
    let code = f.code();
    let err = match f {
        Failure::Db(e) => return e.into(),
        Failure::NotFound => ApiError::not_found(f.detail()),
        Failure::Invalid(_) => ApiError::unprocessable(f.detail()),
        _ => ApiError::conflict(f.detail()),
    };
    err.with_extension("code", json!(code))
}

/// `POST /api/v1/orgs/:org_id/conflicts/:conflict_id/resolve` — answers the resolved conflict.
pub async fn resolve(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Member).await?;
    let id = auth::path_uuid(params, "conflict_id")?;
    let body = json_body(req, JSON_BODY_LIMIT)?;
    let obj = body_object(&body, &["resolution", "value", "device_id"])?;
    let decision = parse_decision(obj, false)?;
    match uc::resolve_one(ctx, caller.org_id, caller.user_id, id, &decision).await? {
        Ok(row) => Ok(json_response(StatusCode::OK, &render(&row))),
        Err(f) => Err(problem(f)),
    }
}

/// `POST /api/v1/orgs/:org_id/conflicts/resolve` — `{ids | filter, resolution, value?}`; answers
/// one result per conflict. Each conflict is atomic on its own; the batch is not.
pub async fn bulk_resolve(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let caller = auth::authorize(req, params, ctx, Role::Member).await?;
    // Up to 1000 ids plus a custom value: allow more than a single request's body.
    let body = json_body(req, 4 * JSON_BODY_LIMIT)?;
    let obj = body_object(&body, &["ids", "filter", "resolution", "value", "dry_run"])?;
    let decision = parse_decision(obj, true)?;
    let dry_run = match obj.get("dry_run") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::unprocessable("dry_run must be true or false")),
    };
    let selection = match (obj.get("ids"), obj.get("filter")) {
        (Some(_), None) => Selection::Ids(uuid_list(&body, "ids", MAX_BULK_IDS)?),
        (None, Some(f)) => Selection::Filter {
            filter: bulk_filter(f)?,
            max: MAX_BULK_IDS,
        },
        _ => {
            return Err(ApiError::unprocessable(
                "name the conflicts by ids or by filter (exactly one of them)",
            ));
        }
    };
    if dry_run {
        // The server's own preview: the same checks, what each side holds now and will hold,
        // nothing written.
        let (previews, has_more) =
            uc::preview_many(ctx, caller.org_id, caller.user_id, selection, &decision).await?;
        let ok = previews.iter().filter(|(_, p)| p.is_ok()).count();
        let results: Vec<Value> = previews
            .into_iter()
            .map(|(id, outcome)| match outcome {
                Ok(mut v) => {
                    v["id"] = json!(id);
                    v["status"] = json!("would_resolve");
                    v
                }
                Err(f) => {
                    json!({"id": id, "status": "error", "code": f.code(), "error": f.detail()})
                }
            })
            .collect();
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "dry_run": true,
                "resolution": decision.strategy.as_str(),
                "would_resolve": ok,
                "failed": results.len() - ok,
                "has_more": has_more,
                "results": results,
            }),
        ));
    }
    let bulk = uc::resolve_many(ctx, caller.org_id, caller.user_id, selection, &decision).await?;
    let resolved = bulk.resolved();
    let results: Vec<Value> = bulk
        .results
        .iter()
        .map(|(id, outcome)| match outcome {
            Ok(()) => json!({"id": id, "status": "resolved"}),
            Err(f) => json!({"id": id, "status": "error", "code": f.code(), "error": f.detail()}),
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "resolution": decision.strategy.as_str(),
            "resolved": resolved,
            "failed": results.len() - resolved,
            "has_more": bulk.has_more,
            "results": results,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(body: Value) -> Result<Decision, ApiError> {
        parse_decision(body.as_object().unwrap(), false)
    }

    #[test]
    fn request_bodies_are_checked() {
        assert!(decision(json!({"resolution": "custom"})).is_err());
        assert!(decision(json!({"resolution": "local", "value": 1})).is_err());
        assert!(decision(json!({"resolution": "link"})).is_err());
        assert!(decision(json!({"resolution": "remote", "device_id": Uuid::new_v4()})).is_err());
        assert!(decision(json!({"resolution": "sideways"})).is_err());
        assert!(decision(json!({"resolution": "custom", "value": null})).is_ok());
        assert!(decision(json!({"resolution": "link", "device_id": Uuid::new_v4()})).is_ok());
        let bulk_link = json!({"resolution": "link", "device_id": Uuid::new_v4()});
        assert!(parse_decision(bulk_link.as_object().unwrap(), true).is_err());
        assert_eq!(
            body_object(&json!({"resolution": "local", "x": 1}), &["resolution"])
                .unwrap_err()
                .status,
            400
        );
    }
}
