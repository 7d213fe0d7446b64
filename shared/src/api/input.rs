//! Reading request input at the edge: JSON bodies with a size limit and a content type, query
//! parameters, page limits and opaque cursors.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::Request;
use crate::base::error::ApiError;

/// Default body limit of JSON API routes.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;
/// Largest `limit` a list accepts (DESIGN §5.2).
pub const MAX_PAGE_LIMIT: i64 = 200;
pub const DEFAULT_PAGE_LIMIT: i64 = 50;
/// Most ids one bulk request may name.
pub const MAX_BULK_IDS: usize = 1000;

/// Parse a JSON body: 413 over `limit`, 415 for another content type, 400 when malformed.
pub fn json_body(req: &Request, limit: usize) -> Result<Value, ApiError> {
    let body = req.body();
    if body.len() > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    if let Some(ct) = req.headers().get(http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::unsupported_media_type("send application/json"));
        }
    }
    if body.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// Query parameters (last one wins).
pub fn query(req: &Request) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// `limit` in 1..=200 (default 50).
pub fn page_limit(q: &HashMap<String, String>) -> Result<i64, ApiError> {
    match q.get("limit") {
        None => Ok(DEFAULT_PAGE_LIMIT),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be an integer between 1 and {MAX_PAGE_LIMIT}"
            ))),
        },
    }
}

/// Encode a cursor (an opaque token for the client).
pub fn encode_cursor(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Decode a cursor made by [`encode_cursor`]; anything else is a 400.
pub fn decode_cursor(q: &HashMap<String, String>) -> Result<Option<Value>, ApiError> {
    let Some(c) = q.get("cursor") else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("invalid cursor"))
}

/// A list of uuids under `key` in a JSON body, 1..=max of them.
pub fn uuid_list(body: &Value, key: &str, max: usize) -> Result<Vec<uuid::Uuid>, ApiError> {
    let arr = body
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::unprocessable(format!("{key} must be an array of ids")))?;
    if arr.is_empty() || arr.len() > max {
        return Err(ApiError::unprocessable(format!(
            "{key} must hold between 1 and {max} ids"
        )));
    }
    arr.iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .ok_or_else(|| ApiError::unprocessable(format!("{key} holds an invalid id")))
        })
        .collect()
}
