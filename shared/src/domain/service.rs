//! A Golioth integration's typed, validated configuration (DESIGN §5.4) and the write requests
//! that create or change a service. Parsed at the edge: unknown keys are rejected by name, every
//! string has a length limit, and `base_url` must be one the deployment allows.
//! Uses `domain::sync` (the sync options a config carries) and `base`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::base::error::ApiError;
use crate::domain::sync::SyncOptions;

/// How Golioth Pipeline deliveries authenticate to the webhook (DESIGN §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookAuth {
    /// A static header equal to the webhook secret (Golioth Pipeline Secret), constant-time.
    #[default]
    Token,
    /// `X-Golioth-Signature: sha256=<hex>` over the raw body, optional timestamp (for relays).
    Hmac,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard,
}

pub const DEFAULT_WEBHOOK_HEADER: &str = "x-webhook-token";

fn default_header() -> String {
    DEFAULT_WEBHOOK_HEADER.to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    pub auth: WebhookAuth,
    /// Header carrying the token for `token` auth (`authorization` means `Bearer <token>`).
    #[serde(default = "default_header")]
    pub header_name: String,
    /// For `hmac`: require `X-Golioth-Timestamp` (signed as `ts.body`, ±300 s).
    pub require_timestamp: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            auth: WebhookAuth::Token,
            header_name: default_header(),
            require_timestamp: false,
        }
    }
}

/// The validated `config` of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// The Golioth project this service mirrors.
    pub project_id: String,
    /// Golioth API base URL; absent means the deployment's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(flatten)]
    pub sync: SyncOptions,
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// Create PSK credentials in Golioth for devices this service creates there.
    #[serde(default)]
    pub create_credentials: bool,
}

const TOP_KEYS: &[&str] = &[
    "project_id",
    "base_url",
    "sync_direction",
    "conflict_resolution",
    "sync_fields",
    "match_by_name",
    "on_remote_delete",
    "on_local_delete",
    "online_threshold_seconds",
    "state_paths",
    "webhook",
    "create_credentials",
];
const SYNC_FIELD_KEYS: &[&str] = &[
    "name",
    "enabled",
    "tags",
    "hardware_ids",
    "blueprint",
    "cohort",
    "status",
    "firmware",
    "metadata",
    "battery",
    "location",
    "signal",
];
const STATE_PATH_KEYS: &[&str] = &["battery", "location", "signal"];
const WEBHOOK_KEYS: &[&str] = &["auth", "header_name", "require_timestamp"];

/// Longest accepted string values.
pub const MAX_NAME_LEN: usize = 100;
pub const MAX_PROJECT_ID_LEN: usize = 64;
pub const MAX_URL_LEN: usize = 200;
pub const MAX_STATE_PATH_LEN: usize = 128;
pub const MAX_SECRET_LEN: usize = 256;
pub const MIN_WEBHOOK_SECRET_LEN: usize = 16;

fn unknown_keys(obj: &Map<String, Value>, allowed: &[&str], prefix: &str, out: &mut Vec<String>) {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            out.push(format!("{prefix}{k}"));
        }
    }
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable(detail)
}

fn valid_project_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PROJECT_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_state_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_STATE_PATH_LEN
        && !s.starts_with('/')
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'))
}

fn valid_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && http::HeaderName::from_bytes(s.as_bytes()).is_ok()
        && !s.to_ascii_lowercase().starts_with("ce-")
}

impl ServiceConfig {
    /// Parse and validate a config object. `allowed_base_urls` are the Golioth base URLs the
    /// deployment permits (the `golioth_base_url` variable, also its allowed outbound hosts).
    pub fn parse(value: &Value, allowed_base_urls: &[String]) -> Result<ServiceConfig, ApiError> {
        let obj = value
            .as_object()
            .ok_or_else(|| ApiError::bad_request("config must be a JSON object"))?;
        let mut unknown = Vec::new();
        unknown_keys(obj, TOP_KEYS, "", &mut unknown);
        for (key, allowed) in [
            ("sync_fields", SYNC_FIELD_KEYS),
            ("state_paths", STATE_PATH_KEYS),
            ("webhook", WEBHOOK_KEYS),
        ] {
            if let Some(Value::Object(inner)) = obj.get(key) {
                unknown_keys(inner, allowed, &format!("{key}."), &mut unknown);
            }
        }
        if !unknown.is_empty() {
            return Err(ApiError::bad_request(format!(
                "unknown config keys: {}",
                unknown.join(", ")
            ))
            .with_extension("unknown_keys", json!(unknown)));
        }
        let cfg: ServiceConfig = serde_json::from_value(value.clone())
            .map_err(|e| invalid(format!("invalid config: {e}")))?;
        if !valid_project_id(&cfg.project_id) {
            return Err(invalid(
                "project_id must be 1-64 characters of [A-Za-z0-9_-]",
            ));
        }
        if let Some(url) = &cfg.base_url {
            let normalized = url.trim_end_matches('/');
            if url.len() > MAX_URL_LEN || !allowed_base_urls.iter().any(|a| a == normalized) {
                return Err(invalid(format!(
                    "base_url must be one of the allowed Golioth hosts: {}",
                    allowed_base_urls.join(", ")
                )));
            }
        }
        let threshold = cfg.sync.online_threshold_seconds;
        if !(30..=7 * 24 * 3600).contains(&threshold) {
            return Err(invalid(
                "online_threshold_seconds must be between 30 and 604800",
            ));
        }
        for (name, path) in [
            ("battery", &cfg.sync.state_paths.battery),
            ("location", &cfg.sync.state_paths.location),
            ("signal", &cfg.sync.state_paths.signal),
        ] {
            if let Some(p) = path
                && !valid_state_path(p)
            {
                return Err(invalid(format!(
                    "state_paths.{name} must be a relative path of at most {MAX_STATE_PATH_LEN} characters of [A-Za-z0-9/_.-]"
                )));
            }
        }
        if !valid_header_name(&cfg.webhook.header_name) {
            return Err(invalid(
                "webhook.header_name must be a valid HTTP header name (not a Ce- header)",
            ));
        }
        Ok(ServiceConfig {
            base_url: cfg.base_url.map(|u| u.trim_end_matches('/').to_owned()),
            ..cfg
        })
    }

    /// The Golioth base URL this service talks to.
    pub fn base_url<'a>(&'a self, default: &'a str) -> &'a str {
        self.base_url.as_deref().unwrap_or(default)
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A secret field in a write request: absent (keep), null (clear) or a new value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SecretChange {
    #[default]
    Keep,
    Clear,
    Set(String),
}

/// A validated create or update request for a service.
#[derive(Debug, Clone, Default)]
pub struct ServiceWrite {
    pub name: Option<String>,
    pub config: Option<ServiceConfig>,
    pub api_key: SecretChange,
    pub webhook_secret: SecretChange,
    pub webhook_secret_previous: SecretChange,
    pub is_active: Option<bool>,
    pub sync_enabled: Option<bool>,
    pub sync_interval_seconds: Option<i32>,
}

const WRITE_KEYS: &[&str] = &[
    "name",
    "config",
    "api_key",
    "webhook_secret",
    "webhook_secret_previous",
    "is_active",
    "sync_enabled",
    "sync_interval_seconds",
];

fn secret_change(
    obj: &Map<String, Value>,
    key: &str,
    min: usize,
) -> Result<SecretChange, ApiError> {
    match obj.get(key) {
        None => Ok(SecretChange::Keep),
        Some(Value::Null) => Ok(SecretChange::Clear),
        Some(Value::String(s)) => {
            let len = s.chars().count();
            if len < min.max(1) || len > MAX_SECRET_LEN || s.chars().any(char::is_control) {
                Err(invalid(format!(
                    "{key} must be {}-{MAX_SECRET_LEN} printable characters",
                    min.max(1)
                )))
            } else {
                Ok(SecretChange::Set(s.clone()))
            }
        }
        Some(_) => Err(invalid(format!("{key} must be a string or null"))),
    }
}

impl ServiceWrite {
    /// Parse a request body. `creating` requires `name` and `config`.
    pub fn parse(
        body: &Value,
        creating: bool,
        allowed_base_urls: &[String],
    ) -> Result<ServiceWrite, ApiError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
        let mut unknown = Vec::new();
        unknown_keys(obj, WRITE_KEYS, "", &mut unknown);
        if !unknown.is_empty() {
            return Err(
                ApiError::bad_request(format!("unknown keys: {}", unknown.join(", ")))
                    .with_extension("unknown_keys", json!(unknown)),
            );
        }
        let name = match obj.get("name") {
            None => None,
            Some(Value::String(s)) => {
                let s = s.trim();
                if s.is_empty() || s.chars().count() > MAX_NAME_LEN {
                    return Err(invalid(format!("name must be 1-{MAX_NAME_LEN} characters")));
                }
                Some(s.to_owned())
            }
            Some(_) => return Err(invalid("name must be a string")),
        };
        let config = obj
            .get("config")
            .map(|c| ServiceConfig::parse(c, allowed_base_urls))
            .transpose()?;
        let flag = |k: &str| -> Result<Option<bool>, ApiError> {
            match obj.get(k) {
                None => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(_) => Err(invalid(format!("{k} must be a boolean"))),
            }
        };
        let sync_interval_seconds = match obj.get("sync_interval_seconds") {
            None => None,
            Some(v) => match v.as_i64() {
                Some(n) if (60..=7 * 24 * 3600).contains(&n) => Some(n as i32),
                _ => {
                    return Err(invalid(
                        "sync_interval_seconds must be an integer between 60 and 604800",
                    ));
                }
            },
        };
        if creating && (name.is_none() || config.is_none()) {
            return Err(invalid("name and config are required"));
        }
        Ok(ServiceWrite {
            name,
            config,
            api_key: secret_change(obj, "api_key", 1)?,
            webhook_secret: secret_change(obj, "webhook_secret", MIN_WEBHOOK_SECRET_LEN)?,
            webhook_secret_previous: secret_change(
                obj,
                "webhook_secret_previous",
                MIN_WEBHOOK_SECRET_LEN,
            )?,
            is_active: flag("is_active")?,
            sync_enabled: flag("sync_enabled")?,
            sync_interval_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec![
            "https://api.golioth.io".into(),
            "http://127.0.0.1:4100".into(),
        ]
    }

    #[test]
    fn defaults_fill_in() {
        let c = ServiceConfig::parse(&json!({"project_id": "p1"}), &allowed()).unwrap();
        assert_eq!(c.sync.online_threshold_seconds, 600);
        assert_eq!(c.webhook.auth, WebhookAuth::Token);
        assert_eq!(c.webhook.header_name, "x-webhook-token");
        assert_eq!(
            c.base_url("https://api.golioth.io"),
            "https://api.golioth.io"
        );
        let back = c.to_json();
        assert_eq!(ServiceConfig::parse(&back, &allowed()).unwrap(), c);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = ServiceConfig::parse(
            &json!({"project_id": "p", "colour": 1, "sync_fields": {"nmae": true}, "webhook": {"x": 1}}),
            &allowed(),
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(
            e.extensions["unknown_keys"],
            json!(["colour", "sync_fields.nmae", "webhook.x"])
        );
    }

    #[test]
    fn validation() {
        let bad = [
            json!({"project_id": ""}),
            json!({"project_id": "p p"}),
            json!({"project_id": "p", "base_url": "https://evil.example"}),
            json!({"project_id": "p", "online_threshold_seconds": 1}),
            json!({"project_id": "p", "state_paths": {"battery": "../x"}}),
            json!({"project_id": "p", "webhook": {"header_name": "bad header"}}),
            json!({"project_id": "p", "sync_direction": "sideways"}),
            json!({"project_id": "x".repeat(65)}),
        ];
        for b in bad {
            assert!(ServiceConfig::parse(&b, &allowed()).is_err(), "{b}");
        }
        let ok = ServiceConfig::parse(
            &json!({"project_id": "p", "base_url": "http://127.0.0.1:4100/", "state_paths": {"battery": "power/battery"}}),
            &allowed(),
        )
        .unwrap();
        assert_eq!(ok.base_url.as_deref(), Some("http://127.0.0.1:4100"));
    }

    #[test]
    fn writes() {
        let w = ServiceWrite::parse(
            &json!({"name": "n", "config": {"project_id": "p"}, "api_key": "k", "webhook_secret": null}),
            true,
            &allowed(),
        )
        .unwrap();
        assert_eq!(w.api_key, SecretChange::Set("k".into()));
        assert_eq!(w.webhook_secret, SecretChange::Clear);
        assert_eq!(w.webhook_secret_previous, SecretChange::Keep);
        assert!(ServiceWrite::parse(&json!({"name": "n"}), true, &allowed()).is_err());
        assert!(
            ServiceWrite::parse(&json!({"webhook_secret": "short"}), false, &allowed()).is_err()
        );
        assert!(
            ServiceWrite::parse(&json!({"sync_interval_seconds": 5}), false, &allowed()).is_err()
        );
        let e = ServiceWrite::parse(&json!({"owner": "me"}), false, &allowed()).unwrap_err();
        assert_eq!(e.extensions["unknown_keys"], json!(["owner"]));
    }
}
