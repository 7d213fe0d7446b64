//! One typed settings struct built from the `Config` port (Spin component variables, or the same
//! names from `SPIN_VARIABLE_*` on the native host). Secrets are wrapped so they never print.
//! Owns the variable names and their parsing. Uses `base::{ports, error}`.

use std::fmt;

use crate::base::error::ApiError;
use crate::base::ports::Config;

/// A secret string: `Debug`/`Display` print a redaction, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Variable names, shared by spin.toml's component variables and the native host.
pub mod vars {
    pub const DB_URL: &str = "db_url";
    pub const JWT_SECRET: &str = "jwt_secret";
    pub const ENCRYPTION_KEY: &str = "encryption_key";
    pub const INTERNAL_TOKEN: &str = "internal_token";
    pub const GOLIOTH_BASE_URL: &str = "golioth_base_url";
    pub const CORS_ALLOWED_ORIGINS: &str = "cors_allowed_origins";
    pub const SLICE_BUDGET_MS: &str = "slice_budget_ms";
    pub const SYNC_LOG_RETENTION_MONTHS: &str = "sync_log_retention_months";
    pub const WEBHOOK_RETENTION_DAYS: &str = "webhook_retention_days";

    /// Every variable a component may read.
    pub const ALL: &[&str] = &[
        DB_URL,
        JWT_SECRET,
        ENCRYPTION_KEY,
        INTERNAL_TOKEN,
        GOLIOTH_BASE_URL,
        CORS_ALLOWED_ORIGINS,
        SLICE_BUDGET_MS,
        SYNC_LOG_RETENTION_MONTHS,
        WEBHOOK_RETENTION_DAYS,
    ];
}

/// Settings for one request. Required secrets missing from the configuration surface as a 500
/// (misconfiguration) when a handler needs them, never as a panic.
#[derive(Debug, Clone)]
pub struct Settings {
    pub db_url: Option<Secret>,
    pub jwt_secret: Option<Secret>,
    pub encryption_key: Option<Secret>,
    pub internal_token: Option<Secret>,
    /// Golioth base URLs services may use (comma-separated variable; first is the default).
    pub golioth_base_urls: Vec<String>,
    pub cors_allowed_origins: Vec<String>,
    /// Time budget of one sync slice within a request.
    pub slice_budget_ms: u64,
}

pub const DEFAULT_GOLIOTH_BASE_URL: &str = "https://api.golioth.io";

fn list(v: Option<String>) -> Vec<String> {
    v.unwrap_or_default()
        .split(',')
        .map(|s| s.trim().trim_end_matches('/').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn secret(config: &dyn Config, name: &str) -> Option<Secret> {
    config.get(name).filter(|s| !s.is_empty()).map(Secret)
}

impl Settings {
    pub fn from_config(config: &dyn Config) -> Settings {
        let mut golioth_base_urls = list(config.get(vars::GOLIOTH_BASE_URL));
        if golioth_base_urls.is_empty() {
            golioth_base_urls.push(DEFAULT_GOLIOTH_BASE_URL.to_owned());
        }
        Settings {
            db_url: secret(config, vars::DB_URL),
            jwt_secret: secret(config, vars::JWT_SECRET),
            encryption_key: secret(config, vars::ENCRYPTION_KEY),
            internal_token: secret(config, vars::INTERNAL_TOKEN),
            golioth_base_urls,
            cors_allowed_origins: list(config.get(vars::CORS_ALLOWED_ORIGINS)),
            slice_budget_ms: config
                .get(vars::SLICE_BUDGET_MS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(20_000),
        }
    }

    /// A required secret, or a 500 naming the missing variable in the log only.
    pub fn require<'a>(field: &'a Option<Secret>, name: &str) -> Result<&'a Secret, ApiError> {
        field
            .as_ref()
            .ok_or_else(|| ApiError::internal(format!("configuration variable {name} is not set")))
    }

    pub fn default_golioth_base_url(&self) -> &str {
        &self.golioth_base_urls[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let mut m = HashMap::new();
        m.insert("jwt_secret".to_owned(), "hunter2".to_owned());
        let settings = Settings::from_config(&m);
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn defaults() {
        let settings = Settings::from_config(&HashMap::new());
        assert_eq!(
            settings.default_golioth_base_url(),
            DEFAULT_GOLIOTH_BASE_URL
        );
        assert!(settings.cors_allowed_origins.is_empty());
        assert_eq!(settings.slice_budget_ms, 20_000);
        assert!(Settings::require(&settings.jwt_secret, "jwt_secret").is_err());
    }
}
