//! Spin implementations of the ports (wasm32 only) and the one entry point every HTTP component
//! calls. This and `functions/*` are the only places that import `spin_sdk`.
//! Uses `api` (dispatch), `base` (ports, `Ctx`, settings).

use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use spin_sdk::pg4::{self, DbValue, ParameterValue};

use crate::api::{self, Component};
use crate::base::ctx::Ctx;
use crate::base::ports::{
    Clock, Config, Db, DbError, HttpClient, HttpError, Param, Row, Value, nonempty,
};
use crate::base::settings::vars;

/// Spin's Postgres binding (interface 4.0.0). Opens the connection on first use, so requests that
/// never touch the database never open one.
pub struct SpinDb {
    url: Option<String>,
    conn: OnceCell<pg4::Connection>,
}

impl SpinDb {
    pub fn new(url: Option<String>) -> Self {
        SpinDb {
            url,
            conn: OnceCell::new(),
        }
    }

    fn conn(&self) -> Result<&pg4::Connection, DbError> {
        if let Some(c) = self.conn.get() {
            return Ok(c);
        }
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| DbError::Connect("db_url is not configured".into()))?;
        let c = pg4::Connection::open(url).map_err(map_err)?;
        Ok(self.conn.get_or_init(|| c))
    }
}

fn to_param(p: &Param) -> ParameterValue {
    match p {
        Param::Null => ParameterValue::DbNull,
        Param::Bool(b) => ParameterValue::Boolean(*b),
        Param::Int32(n) => ParameterValue::Int32(*n),
        Param::Int64(n) => ParameterValue::Int64(*n),
        Param::Float64(n) => ParameterValue::Floating64(*n),
        Param::Text(s) => ParameterValue::Str(s.clone()),
        Param::Jsonb(j) => ParameterValue::Jsonb(serde_json::to_vec(j).unwrap_or_default()),
        Param::Uuid(u) => ParameterValue::Uuid(u.to_string()),
        Param::TextArray(a) => ParameterValue::ArrayStr(a.iter().cloned().map(Some).collect()),
        Param::Bytes(b) => ParameterValue::Binary(b.clone()),
    }
}

fn from_db(v: &DbValue, column: &str) -> Result<Value, DbError> {
    Ok(match v {
        DbValue::DbNull => Value::Null,
        DbValue::Boolean(b) => Value::Bool(*b),
        DbValue::Int8(n) => Value::Int16(i16::from(*n)),
        DbValue::Int16(n) => Value::Int16(*n),
        DbValue::Int32(n) => Value::Int32(*n),
        DbValue::Int64(n) => Value::Int64(*n),
        DbValue::Floating32(n) => Value::Float64(f64::from(*n)),
        DbValue::Floating64(n) => Value::Float64(*n),
        DbValue::Str(s) => Value::Text(s.clone()),
        DbValue::Binary(b) => Value::Bytes(b.clone()),
        DbValue::Uuid(s) => Value::Uuid(
            s.parse()
                .map_err(|_| DbError::Decode(format!("{column}: bad uuid")))?,
        ),
        DbValue::Jsonb(b) => Value::Jsonb(
            serde_json::from_slice(b).map_err(|e| DbError::Decode(format!("{column}: {e}")))?,
        ),
        DbValue::ArrayStr(a) => Value::TextArray(a.clone()),
        other => {
            return Err(DbError::Decode(format!(
                "{column}: unsupported column value {other:?}"
            )));
        }
    })
}

fn map_err(e: pg4::PgError) -> DbError {
    match e {
        pg4::PgError::ConnectionFailed(m) => DbError::Connect(m),
        pg4::PgError::QueryFailed(pg4::QueryError::DbError(d)) => DbError::Query {
            code: Some(d.code),
            message: d.message,
        },
        // Spin 4.0.2 passes some database errors as text only: read the SQLSTATE out of it.
        pg4::PgError::QueryFailed(pg4::QueryError::Text(m))
        | pg4::PgError::BadParameter(m)
        | pg4::PgError::ValueConversionFailed(m)
        | pg4::PgError::Other(m) => DbError::Query {
            code: crate::base::ports::sqlstate_in_text(&m),
            message: m,
        },
    }
}

#[async_trait(?Send)]
impl Db for SpinDb {
    async fn query(&self, sql: &str, params: &[Param]) -> Result<Vec<Row>, DbError> {
        let params: Vec<ParameterValue> = params.iter().map(to_param).collect();
        let guarded = nonempty::wrap(sql)?;
        let set = self.conn()?.query(&guarded, &params).map_err(map_err)?;
        let columns: Vec<String> = set.columns.iter().map(|c| c.name.clone()).collect();
        let values = set
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .zip(columns.iter())
                    .map(|(v, c)| from_db(v, c))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        nonempty::unwrap(&columns, values)
    }

    async fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, DbError> {
        let params: Vec<ParameterValue> = params.iter().map(to_param).collect();
        self.conn()?.execute(sql, &params).map_err(map_err)
    }
}

/// A future that completes after `d`, driven by `spin_executor`'s poll loop.
struct Sleep {
    deadline: u64,
    token: Option<spin_executor::CancelToken>,
}

impl Sleep {
    fn new(d: Duration) -> Self {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Sleep {
            deadline: wasi::clocks::monotonic_clock::now().saturating_add(ns),
            token: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(t) = self.token.take() {
            t.cancel();
        }
        if wasi::clocks::monotonic_clock::now() >= self.deadline {
            return Poll::Ready(());
        }
        let pollable = wasi::clocks::monotonic_clock::subscribe_instant(self.deadline);
        self.token = Some(spin_executor::push_waker_and_get_token(
            pollable,
            cx.waker().clone(),
        ));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(t) = self.token.take() {
            t.cancel();
        }
    }
}

/// Spin's outbound HTTP (wasi-http 0.2), with the per-request timeout enforced by racing a timer.
pub struct SpinHttp;

#[async_trait(?Send)]
impl HttpClient for SpinHttp {
    async fn send(
        &self,
        req: http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, body.to_vec());
        let send = spin_sdk::http::send::<_, http::Response<Vec<u8>>>(req);
        futures::pin_mut!(send);
        let sleep = Sleep::new(timeout);
        futures::pin_mut!(sleep);
        match futures::future::select(send, sleep).await {
            futures::future::Either::Left((Ok(resp), _)) => {
                let (parts, body) = resp.into_parts();
                Ok(http::Response::from_parts(parts, Bytes::from(body)))
            }
            futures::future::Either::Left((Err(e), _)) => Err(match e {
                spin_sdk::http::SendError::Http(spin_sdk::http::ErrorCode::HttpRequestDenied) => {
                    HttpError::Denied("host not in allowed_outbound_hosts".into())
                }
                spin_sdk::http::SendError::Http(spin_sdk::http::ErrorCode::ConnectionTimeout) => {
                    HttpError::Timeout
                }
                other => HttpError::Other(other.to_string()),
            }),
            futures::future::Either::Right(((), _)) => Err(HttpError::Timeout),
        }
    }
}

/// Wall clock from WASI; sleeps through the executor's poll loop.
pub struct SpinClock;

#[async_trait(?Send)]
impl Clock for SpinClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    async fn sleep(&self, d: Duration) {
        Sleep::new(d).await
    }
}

/// Spin component variables.
pub struct SpinConfig;

impl Config for SpinConfig {
    fn get(&self, name: &str) -> Option<String> {
        spin_sdk::variables::get(name).ok()
    }
}

/// The body of every HTTP component: build the ports, dispatch through `shared::api`, and return
/// the response. Never returns `Err`, so Spin never answers an empty 500.
pub async fn serve(component: Component, req: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
    let (parts, body) = req.into_parts();
    let req = http::Request::from_parts(parts, Bytes::from(body));
    let config = SpinConfig;
    let db = SpinDb::new(config.get(vars::DB_URL));
    let ctx = Ctx::new(&db, &SpinHttp, &SpinClock, &config);
    let resp = api::dispatch(component, req, &ctx).await;
    let (parts, body) = resp.into_parts();
    http::Response::from_parts(parts, body.to_vec())
}
