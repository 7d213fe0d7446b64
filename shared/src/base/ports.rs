//! The four ports through which `shared` reaches the outside world: `Db`, `HttpClient`, `Clock`, `Config`.
//!
//! Each has one Spin implementation (`crate::runtime::spin`, wasm32 only) and one native implementation
//! (`crate::runtime::native`, feature `native`). The traits have no `Send` bound because Spin futures are `!Send`.
//! Owns the port traits and their value types. Uses nothing else of the crate.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::LocalBoxFuture;
use uuid::Uuid;

pub mod nonempty;

// ---------------------------------------------------------------------------------------------
// Db
// ---------------------------------------------------------------------------------------------

/// A statement parameter. Variants match what both Spin's `pg` binding and tokio-postgres bind
/// strictly by type; anything else (timestamps, uuid lists) is passed as text and cast in SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// SQL NULL; binds to any parameter type.
    Null,
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Float64(f64),
    Text(String),
    Jsonb(serde_json::Value),
    Uuid(Uuid),
    TextArray(Vec<String>),
    Bytes(Vec<u8>),
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(v.to_owned())
    }
}
impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(v)
    }
}
impl From<Uuid> for Param {
    fn from(v: Uuid) -> Self {
        Param::Uuid(v)
    }
}
impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::Int64(v)
    }
}
impl From<i32> for Param {
    fn from(v: i32) -> Self {
        Param::Int32(v)
    }
}
impl From<bool> for Param {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}
impl From<serde_json::Value> for Param {
    fn from(v: serde_json::Value) -> Self {
        Param::Jsonb(v)
    }
}
impl From<Vec<String>> for Param {
    fn from(v: Vec<String>) -> Self {
        Param::TextArray(v)
    }
}
impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

/// A decoded column value. Only the types Spin's Postgres binding maps are representable; the
/// native implementation refuses the others (notably `timestamptz`) so tests catch them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Float64(f64),
    Text(String),
    Jsonb(serde_json::Value),
    Uuid(Uuid),
    TextArray(Vec<Option<String>>),
    Bytes(Vec<u8>),
}

/// One result row: column names shared across the row set, values in column order.
#[derive(Debug, Clone)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub fn new(columns: Arc<[String]>, values: Vec<Value>) -> Self {
        Row { columns, values }
    }

    pub fn value(&self, column: &str) -> Result<&Value, DbError> {
        self.columns
            .iter()
            .position(|c| c == column)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| DbError::Decode(format!("no column {column}")))
    }

    /// Typed access: `row.get::<String>("name")`, `row.get::<Option<i64>>("n")`.
    pub fn get<T: FromValue>(&self, column: &str) -> Result<T, DbError> {
        T::from_value(self.value(column)?).map_err(|e| DbError::Decode(format!("{column}: {e}")))
    }
}

/// Conversion from a column value into a Rust type.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self, String>;
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

macro_rules! from_value {
    ($t:ty, $($pat:pat => $e:expr),+) => {
        impl FromValue for $t {
            fn from_value(v: &Value) -> Result<Self, String> {
                match v {
                    $($pat => Ok($e),)+
                    other => Err(format!("expected {}, got {:?}", stringify!($t), other)),
                }
            }
        }
    };
}
from_value!(bool, Value::Bool(b) => *b);
from_value!(i64, Value::Int64(n) => *n, Value::Int32(n) => i64::from(*n), Value::Int16(n) => i64::from(*n));
from_value!(i32, Value::Int32(n) => *n, Value::Int16(n) => i32::from(*n));
from_value!(f64, Value::Float64(n) => *n);
from_value!(String, Value::Text(s) => s.clone());
from_value!(Uuid, Value::Uuid(u) => *u);
from_value!(serde_json::Value, Value::Jsonb(j) => j.clone());
from_value!(Vec<u8>, Value::Bytes(b) => b.clone());
from_value!(Vec<String>, Value::TextArray(a) => a.iter().flatten().cloned().collect());

/// A database failure, typed so callers can act on SQLSTATE without parsing text. The text is for
/// logs only; it never reaches a client (see `ApiError`).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database connection failed: {0}")]
    Connect(String),
    #[error("query failed ({code:?}): {message}")]
    Query {
        code: Option<String>,
        message: String,
    },
    #[error("decode failed: {0}")]
    Decode(String),
}

impl DbError {
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Query { code, .. } => code.as_deref(),
            _ => None,
        }
    }
    pub fn is_unique_violation(&self) -> bool {
        self.sqlstate() == Some("23505")
    }
    pub fn is_serialization_failure(&self) -> bool {
        matches!(self.sqlstate(), Some("40001") | Some("40P01"))
    }
}

/// The SQLSTATE inside an error that reached the guest only as text. Spin 4.0.2 hands some
/// database errors to a `postgres@4.0.0` guest as the `Debug` text of the whole error, e.g.
/// `Error::QueryFailed(QueryError::DbError(DbError { as-text: "…", severity: "ERROR", code:
/// "23505", … }))`; without the code, a unique violation would be a 500 instead of a 409.
pub fn sqlstate_in_text(text: &str) -> Option<String> {
    text.match_indices("code: \"").find_map(|(i, m)| {
        let code = text.get(i + m.len()..i + m.len() + 5)?;
        let closed = text[i + m.len() + 5..].starts_with('"');
        (closed
            && code
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
        .then(|| code.to_owned())
    })
}

/// One database connection. A transaction is `BEGIN … COMMIT` on it; use [`transaction`], which
/// always ends the transaction (Spin's pool does not roll back a returned connection).
/// Every implementation sends a `query` through [`nonempty::wrap`] and reads its answer back
/// through [`nonempty::unwrap`], so no query yields zero rows on the wire (Spin 4.0.0–4.0.2 hang
/// on one) and both hosts send the same statements.
#[async_trait(?Send)]
pub trait Db {
    async fn query(&self, sql: &str, params: &[Param]) -> Result<Vec<Row>, DbError>;
    async fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, DbError>;
}

/// Run `f` inside `BEGIN … COMMIT`, rolling back on error. Every path ends the transaction.
pub async fn transaction<'a, T, E, F>(db: &'a dyn Db, f: F) -> Result<T, E>
where
    F: FnOnce(&'a dyn Db) -> LocalBoxFuture<'a, Result<T, E>>,
    E: From<DbError>,
{
    db.execute("BEGIN", &[]).await?;
    match f(db).await {
        Ok(v) => {
            if let Err(e) = db.execute("COMMIT", &[]).await {
                let _ = db.execute("ROLLBACK", &[]).await;
                return Err(e.into());
            }
            Ok(v)
        }
        Err(e) => {
            let _ = db.execute("ROLLBACK", &[]).await;
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HttpClient
// ---------------------------------------------------------------------------------------------

/// Transport-level failure of an outbound request (no response at all).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request denied by host policy: {0}")]
    Denied(String),
    #[error("transport error: {0}")]
    Other(String),
}

/// Sends one outbound HTTP request with a per-request timeout.
#[async_trait(?Send)]
pub trait HttpClient {
    async fn send(
        &self,
        req: http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, HttpError>;
}

// ---------------------------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------------------------

/// Wall-clock time and waiting. Pure code never calls it: `now` is passed in.
#[async_trait(?Send)]
pub trait Clock {
    fn now(&self) -> DateTime<Utc>;
    async fn sleep(&self, d: Duration);
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// Named configuration variables and secrets (Spin component variables; `SPIN_VARIABLE_*` natively).
pub trait Config {
    fn get(&self, name: &str) -> Option<String>;
}

impl Config for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::sqlstate_in_text;

    #[test]
    fn the_sqlstate_is_found_in_spins_debug_text_of_a_database_error() {
        let text = r#"Error::QueryFailed(QueryError::DbError(DbError { as-text: "Error { kind: Db, cause: Some(DbError { severity: \"ERROR\", code: SqlState(E23505), message: \"duplicate key\" }) }", severity: "ERROR", code: "23505", message: "duplicate key value violates unique constraint" }))"#;
        assert_eq!(sqlstate_in_text(text).as_deref(), Some("23505"));
        assert_eq!(
            sqlstate_in_text(r#"DbError { code: "40P01", message: "deadlock detected" }"#)
                .as_deref(),
            Some("40P01")
        );
        assert_eq!(sqlstate_in_text("connection refused"), None);
        assert_eq!(sqlstate_in_text(r#"code: "2350""#), None);
        assert_eq!(sqlstate_in_text(r#"code: "abcde""#), None);
    }
}
