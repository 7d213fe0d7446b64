//! Native implementations of the ports (feature `native`): tokio-postgres through a deadpool pool,
//! reqwest for outbound HTTP, the system clock. They refuse what Spin refuses (e.g. a
//! `timestamptz` column in a result set), so native tests catch statements Spin would reject.
//! Uses `base` (the ports it implements) only.

use std::cell::Cell;
use std::error::Error as StdError;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;
use tokio_postgres::types::{IsNull, ToSql, Type, WrongType};

use crate::base::ports::{Clock, Db, DbError, HttpClient, HttpError, Param, Row, Value, nonempty};

/// Statements sent to Postgres by this process (benchmarks report it).
static STATEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many statements this process has sent through the native `Db` port.
pub fn statements_sent() -> u64 {
    STATEMENTS.load(std::sync::atomic::Ordering::Relaxed)
}

fn count_statement() {
    STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// A parameter bound by reference: encoding a bulk write's `jsonb` (hundreds of rows) must not
/// copy it first. Each variant is checked against the statement's parameter type as its own
/// Rust type would be.
#[derive(Debug)]
struct Bind<'a>(&'a Param);

impl ToSql for Bind<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            // NULL binds to a parameter of any type (tokio-postgres would check `Option<T>`
            // against `T`).
            Param::Null => Ok(IsNull::Yes),
            Param::Bool(b) => b.to_sql(ty, out),
            Param::Int32(n) => n.to_sql(ty, out),
            Param::Int64(n) => n.to_sql(ty, out),
            Param::Float64(n) => n.to_sql(ty, out),
            Param::Text(s) => s.to_sql(ty, out),
            Param::Jsonb(j) => j.to_sql(ty, out),
            Param::Uuid(u) => u.to_sql(ty, out),
            Param::TextArray(a) => a.to_sql(ty, out),
            Param::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        fn check<T: ToSql>(ty: &Type) -> Result<(), Box<dyn StdError + Sync + Send>> {
            if T::accepts(ty) {
                Ok(())
            } else {
                Err(Box::new(WrongType::new::<T>(ty.clone())))
            }
        }
        match self.0 {
            Param::Null => Ok(()),
            Param::Bool(_) => check::<bool>(ty),
            Param::Int32(_) => check::<i32>(ty),
            Param::Int64(_) => check::<i64>(ty),
            Param::Float64(_) => check::<f64>(ty),
            Param::Text(_) => check::<String>(ty),
            Param::Jsonb(_) => check::<serde_json::Value>(ty),
            Param::Uuid(_) => check::<uuid::Uuid>(ty),
            Param::TextArray(_) => check::<Vec<String>>(ty),
            Param::Bytes(_) => check::<Vec<u8>>(ty),
        }?;
        self.to_sql(ty, out)
    }
}

fn binds(params: &[Param]) -> Vec<Bind<'_>> {
    params.iter().map(Bind).collect()
}

fn map_err(e: tokio_postgres::Error) -> DbError {
    if let Some(db) = e.as_db_error() {
        DbError::Query {
            code: Some(db.code().code().to_owned()),
            message: db.message().to_owned(),
        }
    } else if e.is_closed() {
        DbError::Connect(e.to_string())
    } else {
        DbError::Query {
            code: None,
            message: e.to_string(),
        }
    }
}

fn decode(row: &tokio_postgres::Row, i: usize) -> Result<Value, DbError> {
    let col = &row.columns()[i];
    let name = col.name();
    let err = |e: tokio_postgres::Error| DbError::Decode(format!("{name}: {e}"));
    let v = match *col.type_() {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(err)?
            .map(Value::Bool),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(err)?
            .map(Value::Int16),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(err)?
            .map(Value::Int32),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(err)?
            .map(Value::Int64),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map_err(err)?
            .map(|f| Value::Float64(f64::from(f))),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(err)?
            .map(Value::Float64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => row
            .try_get::<_, Option<String>>(i)
            .map_err(err)?
            .map(Value::Text),
        Type::JSONB => row
            .try_get::<_, Option<serde_json::Value>>(i)
            .map_err(err)?
            .map(Value::Jsonb),
        Type::UUID => row
            .try_get::<_, Option<uuid::Uuid>>(i)
            .map_err(err)?
            .map(Value::Uuid),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => row
            .try_get::<_, Option<Vec<Option<String>>>>(i)
            .map_err(err)?
            .map(Value::TextArray),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(err)?
            .map(Value::Bytes),
        Type::TIMESTAMPTZ => {
            return Err(DbError::Decode(format!(
                "{name}: timestamptz in a result set fails under Spin; select it as text or epoch ms"
            )));
        }
        ref other => {
            return Err(DbError::Decode(format!(
                "{name}: column type {other} is not supported by Spin's Postgres binding"
            )));
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

/// A pool of native connections to one database.
#[derive(Clone)]
pub struct PgPool(Pool);

impl PgPool {
    pub fn new(url: &str, max_size: usize) -> Result<Self, DbError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| DbError::Connect(e.to_string()))?;
        let mgr = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(max_size)
            .build()
            .map_err(|e| DbError::Connect(e.to_string()))?;
        Ok(PgPool(pool))
    }

    /// A per-request connection handle that checks a connection out on first use.
    pub fn lazy(&self) -> PgDb {
        PgDb {
            pool: self.0.clone(),
            conn: OnceCell::new(),
            in_tx: Cell::new(false),
        }
    }
}

/// One connection for one request (the native twin of a Spin `pg::Connection`). If it is
/// dropped inside a transaction (a panic, say) the connection is discarded, never reused.
pub struct PgDb {
    pool: Pool,
    conn: OnceCell<Object>,
    in_tx: Cell<bool>,
}

impl PgDb {
    async fn conn(&self) -> Result<&Object, DbError> {
        self.conn
            .get_or_try_init(|| async {
                self.pool
                    .get()
                    .await
                    .map_err(|e| DbError::Connect(e.to_string()))
            })
            .await
    }

    fn track(&self, sql: &str) {
        let s = sql.trim_start();
        let head = s
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match head.trim_end_matches(';') {
            "BEGIN" | "START" => self.in_tx.set(true),
            "COMMIT" | "ROLLBACK" | "END" => self.in_tx.set(false),
            _ => {}
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if self.in_tx.get()
            && let Some(obj) = self.conn.take()
        {
            drop(Object::take(obj));
        }
    }
}

#[async_trait(?Send)]
impl Db for PgDb {
    async fn query(&self, sql: &str, params: &[Param]) -> Result<Vec<Row>, DbError> {
        let conn = self.conn().await?;
        count_statement();
        let bound = binds(params);
        let refs: Vec<&(dyn ToSql + Sync)> =
            bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let guarded = nonempty::wrap(sql)?;
        let stmt = conn.prepare_cached(&guarded).await.map_err(map_err)?;
        let rows = conn.query(&stmt, &refs).await.map_err(map_err)?;
        let columns: Vec<String> = stmt.columns().iter().map(|c| c.name().to_owned()).collect();
        let values = rows
            .iter()
            .map(|r| (0..r.len()).map(|i| decode(r, i)).collect())
            .collect::<Result<Vec<Vec<Value>>, _>>()?;
        nonempty::unwrap(&columns, values)
    }

    async fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, DbError> {
        let conn = self.conn().await?;
        count_statement();
        self.track(sql);
        if params.is_empty() && !sql.contains('$') {
            // Transaction control and DDL: no need to prepare.
            conn.batch_execute(sql).await.map_err(map_err)?;
            return Ok(0);
        }
        let bound = binds(params);
        let refs: Vec<&(dyn ToSql + Sync)> =
            bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let stmt = conn.prepare_cached(sql).await.map_err(map_err)?;
        conn.execute(&stmt, &refs).await.map_err(map_err)
    }
}

/// Outbound HTTP through one shared reqwest client (connection reuse across requests).
#[derive(Clone)]
pub struct ReqwestHttp(reqwest::Client);

impl Default for ReqwestHttp {
    fn default() -> Self {
        ReqwestHttp(
            reqwest::Client::builder()
                .pool_max_idle_per_host(32)
                .build()
                .unwrap_or_default(),
        )
    }
}

#[async_trait(?Send)]
impl HttpClient for ReqwestHttp {
    async fn send(
        &self,
        req: http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = req.into_parts();
        let mut builder = self
            .0
            .request(parts.method, parts.uri.to_string())
            .timeout(timeout)
            .body(body);
        for (k, v) in &parts.headers {
            builder = builder.header(k, v);
        }
        let map = |e: reqwest::Error| {
            if e.is_timeout() {
                HttpError::Timeout
            } else if e.is_connect() {
                HttpError::Connect(e.without_url().to_string())
            } else {
                HttpError::Other(e.without_url().to_string())
            }
        };
        let resp = builder.send().await.map_err(map)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(map)?;
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// The system clock; sleeps on tokio's timer.
#[derive(Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait(?Send)]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}
