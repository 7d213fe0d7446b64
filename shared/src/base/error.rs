//! The one API error type: every failure a client sees is an RFC 9457 `application/problem+json`
//! body. 5xx bodies are opaque; their cause is logged here, in exactly one place.
//! Owns `ApiError`, the error every use case and handler hands up. Uses `base::ports` (`DbError`).

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

use crate::base::ports::DbError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answered to a client. Build with the constructors; 5xx keep their cause private.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: Option<String>,
    /// Extra members of the problem object (e.g. `errors`, `unknown_keys`).
    pub extensions: Map<String, Value>,
    /// Internal cause, logged for 5xx, never sent.
    cause: Option<String>,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<Option<String>>) -> Self {
        ApiError {
            status,
            title,
            detail: detail.into(),
            extensions: Map::new(),
            cause: None,
            headers: Vec::new(),
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad Request", Some(detail.into()))
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            Some(detail.into()),
        )
        .with_header("www-authenticate", "Bearer".into())
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", Some(detail.into()))
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found", Some(detail.into()))
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", Some(detail.into()))
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            Some(format!("request body exceeds {limit} bytes")),
        )
    }
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            Some(detail.into()),
        )
    }
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unprocessable Content",
            Some(detail.into()),
        )
    }
    pub fn method_not_allowed(allow: &[&str]) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            Some(format!("allowed: {}", allow.join(", "))),
        )
        .with_header("allow", allow.join(", "))
    }
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "Not Implemented",
            Some(format!("{what} is not implemented yet")),
        )
    }
    /// A transient failure (the database is down or out of connections, say): 503 with
    /// `Retry-After: 1`, so a webhook sender or a client backs off and tries again.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            Some(detail.into()),
        )
        .with_header("retry-after", "1".into())
    }
    /// An internal failure: the client sees only "internal error"; `cause` goes to the log.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            None,
        );
        e.cause = Some(cause.to_string());
        e
    }
    pub fn with_extension(mut self, key: &str, value: Value) -> Self {
        self.extensions.insert(key.to_owned(), value);
        self
    }
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }

    /// Render as `application/problem+json`. For a 500 only `type`, `title`, `status` and the
    /// request id are sent; the cause stays in the log.
    pub fn into_response(self, request_id: &str) -> http::Response<Bytes> {
        let mut body = Map::new();
        body.insert("type".into(), json!("about:blank"));
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status.as_u16()));
        // A 500 is opaque; other statuses carry only text written for clients.
        if self.status != StatusCode::INTERNAL_SERVER_ERROR {
            if let Some(d) = &self.detail {
                body.insert("detail".into(), json!(d));
            }
            for (k, v) in self.extensions {
                body.insert(k, v);
            }
        }
        body.insert("request_id".into(), json!(request_id));
        let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
        let mut resp = http::Response::new(Bytes::from(bytes));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_JSON),
        );
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Connect(_) => {
                let mut err = ApiError::unavailable("the database is unavailable");
                err.cause = Some(e.to_string());
                err
            }
            other => ApiError::internal(other),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.title)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(resp: &http::Response<Bytes>) -> Value {
        serde_json::from_slice(resp.body()).unwrap()
    }

    #[test]
    fn client_errors_carry_detail_and_extensions() {
        let r = ApiError::bad_request("unknown keys")
            .with_extension("unknown_keys", json!(["x"]))
            .into_response("r1");
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["content-type"], PROBLEM_JSON);
        let b = body(&r);
        assert_eq!(b["detail"], "unknown keys");
        assert_eq!(b["unknown_keys"], json!(["x"]));
        assert_eq!(b["status"], 400);
        assert_eq!(b["request_id"], "r1");
    }

    #[test]
    fn internal_errors_are_opaque() {
        let r = ApiError::internal("SELECT secret FROM x failed: password=hunter2")
            .with_extension("leak", json!("hunter2"))
            .into_response("r2");
        assert_eq!(r.status(), 500);
        let text = String::from_utf8(r.body().to_vec()).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("SELECT"), "{text}");
    }

    #[test]
    fn db_connect_maps_to_503_without_text() {
        let e: ApiError = DbError::Connect("postgres://user:pw@host refused".into()).into();
        let r = e.into_response("r3");
        assert_eq!(r.status(), 503);
        assert!(
            !String::from_utf8(r.body().to_vec())
                .unwrap()
                .contains("pw@host")
        );
    }
}
