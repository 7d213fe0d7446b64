//! Golioth failures as one typed error: the HTTP status classes of GOLIOTH_API.md §7 (grpc-gateway
//! defaults), the `{code, message, details}` body, transport failures, and whether a retry can help.
//!
//! No variant carries request headers or the URL's credentials, so an error can be logged or
//! shown in a sync log without leaking the API key.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::base::ports::HttpError;

/// The error body every Golioth operation answers with (`rpcStatus`): `{"code": <gRPC code>,
/// "message": "…", "details": [{"@type": …}]}`. Fields are optional because a proxy in front of
/// Golioth may answer with something else entirely.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiStatus {
    pub http_status: u16,
    /// The gRPC status code (e.g. 5 NotFound, 6 AlreadyExists, 16 Unauthenticated).
    pub code: Option<i64>,
    pub message: String,
    pub details: Vec<Value>,
}

/// The longest server message kept in an error; a misbehaving proxy can answer with megabytes.
const MAX_MESSAGE: usize = 300;

impl ApiStatus {
    /// Parse an error response body. A body that is not the documented JSON keeps a bounded,
    /// lossy excerpt of its text as the message.
    pub fn parse(http_status: u16, body: &[u8]) -> ApiStatus {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        match parsed.as_ref().and_then(Value::as_object) {
            Some(obj) => ApiStatus {
                http_status,
                code: obj.get("code").and_then(|c| {
                    c.as_i64()
                        .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
                }),
                message: obj
                    .get("message")
                    .and_then(Value::as_str)
                    .map(|m| truncate(m, MAX_MESSAGE))
                    .unwrap_or_default(),
                details: obj
                    .get("details")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            },
            None => ApiStatus {
                http_status,
                code: None,
                message: truncate(&String::from_utf8_lossy(body), MAX_MESSAGE),
                details: Vec::new(),
            },
        }
    }

    /// Golioth's duplicate messages are `… already being used` ([PGT] matches the text, not the
    /// status); "already exists" is grpc's generic AlreadyExists wording.
    fn says_duplicate(&self) -> bool {
        let m = self.message.to_ascii_lowercase();
        m.contains("already being used")
            || m.contains("already exists")
            || m.contains("already in use")
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl fmt::Display for ApiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(
                f,
                "HTTP {}, code {}: {}",
                self.http_status, code, self.message
            ),
            None => write!(f, "HTTP {}: {}", self.http_status, self.message),
        }
    }
}

/// gRPC code AlreadyExists, which grpc-gateway maps to 409.
const GRPC_ALREADY_EXISTS: i64 = 6;

/// A failed Golioth call.
#[derive(Debug, thiserror::Error)]
pub enum GoliothError {
    /// 400: InvalidArgument / FailedPrecondition / OutOfRange (e.g. an unknown tag id on create).
    #[error("Golioth rejected the request ({0})")]
    BadRequest(ApiStatus),
    /// 401: the API key is missing, wrong or revoked.
    #[error("Golioth did not accept the API key ({0})")]
    Unauthorized(ApiStatus),
    /// 403: the key is valid but not for this project (keys are project-scoped).
    #[error("Golioth denied access ({0})")]
    Forbidden(ApiStatus),
    /// 404: no such device, tag, path or project.
    #[error("not found in Golioth ({0})")]
    NotFound(ApiStatus),
    /// The name, hardware id, tag name or identity is already taken: a 409 AlreadyExists or any
    /// 4xx whose message says "already being used"/"already exists". The exact status Golioth
    /// uses for duplicates is UNCERTAIN (GOLIOTH_API.md §4.1), hence the message check.
    #[error("already exists in Golioth ({0})")]
    Duplicate(ApiStatus),
    /// 409 other than a duplicate (gRPC Aborted).
    #[error("conflicting concurrent change in Golioth ({0})")]
    Conflict(ApiStatus),
    /// 429 ResourceExhausted. Whether Golioth sends `Retry-After` is UNCERTAIN (§7).
    #[error("rate limited by Golioth ({status}){}", fmt_retry_after(*.retry_after))]
    RateLimited {
        status: ApiStatus,
        retry_after: Option<Duration>,
    },
    /// 5xx other than 501, and 408: transient on Golioth's side.
    #[error("Golioth server error ({status}){}", fmt_retry_after(*.retry_after))]
    Server {
        status: ApiStatus,
        retry_after: Option<Duration>,
    },
    /// 501 Unimplemented: grpc-gateway's answer to a wrong method on a known route. A bug in the
    /// caller, never transient (§11.11).
    #[error("Golioth does not implement this method on this path ({0})")]
    NotImplemented(ApiStatus),
    /// Any other status.
    #[error("unexpected answer from Golioth ({0})")]
    UnexpectedStatus(ApiStatus),
    /// No response within the per-request timeout.
    #[error("Golioth request timed out")]
    Timeout,
    /// The connection failed or broke before a full response arrived.
    #[error("could not reach Golioth: {0}")]
    Transport(String),
    /// The host refused the outbound request (e.g. Spin's `allowed_outbound_hosts`).
    #[error("outbound request to Golioth refused by the host: {0}")]
    Denied(String),
    /// A 2xx response whose body is not the documented shape (possibly cut in transit).
    #[error("unreadable response from Golioth: {0}")]
    Decode(String),
    /// The caller's input or configuration cannot form a valid request.
    #[error("invalid Golioth request: {0}")]
    InvalidInput(String),
}

fn fmt_retry_after(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!(", retry after {:.3}s", d.as_secs_f64()),
        None => String::new(),
    }
}

impl GoliothError {
    /// Classify a non-2xx response (GOLIOTH_API.md §7's status table).
    pub fn from_response(
        http_status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
    ) -> GoliothError {
        let status = ApiStatus::parse(http_status, body);
        match http_status {
            429 => GoliothError::RateLimited {
                status,
                retry_after,
            },
            s if (400..500).contains(&s) && status.says_duplicate() => {
                GoliothError::Duplicate(status)
            }
            409 if status.code == Some(GRPC_ALREADY_EXISTS) => GoliothError::Duplicate(status),
            409 => GoliothError::Conflict(status),
            400 => GoliothError::BadRequest(status),
            401 => GoliothError::Unauthorized(status),
            403 => GoliothError::Forbidden(status),
            404 => GoliothError::NotFound(status),
            501 => GoliothError::NotImplemented(status),
            408 | 500..=599 => GoliothError::Server {
                status,
                retry_after,
            },
            _ => GoliothError::UnexpectedStatus(status),
        }
    }

    /// Whether the same request may succeed later: 429, 5xx (not 501), 408, timeouts, broken
    /// connections, and bodies cut in transit. Every 4xx is final.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GoliothError::RateLimited { .. }
                | GoliothError::Server { .. }
                | GoliothError::Timeout
                | GoliothError::Transport(_)
                | GoliothError::Decode(_)
        )
    }

    /// Whether the request may have taken effect although it failed: no answer in time, a
    /// connection broken after the request was sent, an unreadable body, or any 5xx (a proxy's
    /// 503 does not prove the request never reached Golioth). A write that ends like this is
    /// resolved by looking (see `GoliothClient::create_device`), never reported as failed on a
    /// guess. Only 429 is a refusal before anything ran.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            GoliothError::Timeout
                | GoliothError::Transport(_)
                | GoliothError::Decode(_)
                | GoliothError::Server { .. }
        )
    }

    pub fn is_duplicate(&self) -> bool {
        matches!(self, GoliothError::Duplicate(_))
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, GoliothError::NotFound(_))
    }

    /// The server's `Retry-After`, already parsed (not clamped).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GoliothError::RateLimited { retry_after, .. }
            | GoliothError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The parsed error body, for responses that had one.
    pub fn api_status(&self) -> Option<&ApiStatus> {
        match self {
            GoliothError::BadRequest(s)
            | GoliothError::Unauthorized(s)
            | GoliothError::Forbidden(s)
            | GoliothError::NotFound(s)
            | GoliothError::Duplicate(s)
            | GoliothError::Conflict(s)
            | GoliothError::NotImplemented(s)
            | GoliothError::UnexpectedStatus(s)
            | GoliothError::RateLimited { status: s, .. }
            | GoliothError::Server { status: s, .. } => Some(s),
            _ => None,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        self.api_status().map(|s| s.http_status)
    }
}

impl From<HttpError> for GoliothError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Timeout => GoliothError::Timeout,
            HttpError::Connect(m) | HttpError::Other(m) => GoliothError::Transport(m),
            HttpError::Denied(m) => GoliothError::Denied(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16, body: &str) -> GoliothError {
        GoliothError::from_response(status, body.as_bytes(), None)
    }

    #[test]
    fn status_table() {
        let body = r#"{"code":3,"message":"bad","details":[]}"#;
        assert!(matches!(classify(400, body), GoliothError::BadRequest(_)));
        assert!(matches!(
            classify(401, r#"{"code":16,"message":"unauthenticated"}"#),
            GoliothError::Unauthorized(_)
        ));
        assert!(matches!(classify(403, body), GoliothError::Forbidden(_)));
        assert!(matches!(classify(404, body), GoliothError::NotFound(_)));
        assert!(matches!(
            classify(409, r#"{"code":10,"message":"aborted"}"#),
            GoliothError::Conflict(_)
        ));
        assert!(matches!(
            classify(409, r#"{"code":6,"message":"x"}"#),
            GoliothError::Duplicate(_)
        ));
        assert!(matches!(
            classify(429, body),
            GoliothError::RateLimited { .. }
        ));
        assert!(matches!(classify(500, body), GoliothError::Server { .. }));
        assert!(matches!(classify(503, body), GoliothError::Server { .. }));
        assert!(matches!(
            classify(501, body),
            GoliothError::NotImplemented(_)
        ));
        assert!(matches!(
            classify(418, body),
            GoliothError::UnexpectedStatus(_)
        ));
    }

    #[test]
    fn duplicate_by_message_on_any_4xx() {
        for status in [400, 409, 412] {
            let e = classify(
                status,
                r#"{"code":9,"message":"tag name already being used"}"#,
            );
            assert!(e.is_duplicate(), "{status}");
            assert!(!e.is_retryable());
        }
        assert!(classify(400, r#"{"message":"Device Already Exists"}"#).is_duplicate());
        // 5xx never counts as a duplicate, whatever it says.
        assert!(!classify(500, r#"{"message":"already exists"}"#).is_duplicate());
    }

    #[test]
    fn retryable_classes() {
        assert!(classify(429, "").is_retryable());
        assert!(classify(503, "").is_retryable());
        assert!(classify(502, "").is_retryable());
        assert!(classify(408, "").is_retryable());
        for s in [400, 401, 403, 404, 409, 501] {
            assert!(!classify(s, "{}").is_retryable(), "{s}");
        }
        assert!(GoliothError::Timeout.is_retryable());
        assert!(!GoliothError::Denied("x".into()).is_retryable());
        assert!(classify(503, "").outcome_unknown());
        assert!(classify(500, "").outcome_unknown());
        assert!(!classify(429, "").outcome_unknown());
    }

    #[test]
    fn body_parsing_is_bounded_and_lossy() {
        let s = ApiStatus::parse(502, b"<html>bad gateway</html>");
        assert_eq!(s.code, None);
        assert_eq!(s.message, "<html>bad gateway</html>");
        let long = "é".repeat(1000);
        assert!(ApiStatus::parse(500, long.as_bytes()).message.len() <= MAX_MESSAGE + 4);
        let s = ApiStatus::parse(
            404,
            br#"{"code":"5","message":"device not found","details":[{"@type":"x"}]}"#,
        );
        assert_eq!(s.code, Some(5));
        assert_eq!(s.details.len(), 1);
        assert_eq!(s.to_string(), "HTTP 404, code 5: device not found");
    }

    #[test]
    fn retry_after_shows_in_display() {
        let e = GoliothError::from_response(429, b"{}", Some(Duration::from_millis(1500)));
        assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));
        assert!(e.to_string().contains("retry after 1.500s"));
    }
}
