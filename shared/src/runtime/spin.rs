//! Spin implementations of the ports (wasm32 only) and the one entry point every HTTP component
//! calls. This and `functions/*` are the only places that import `spin_sdk`.
//! Uses `api` (dispatch), `base` (ports, `Ctx`, settings).
//!
//! The HTTP components are WASI P3 components (spin-sdk 6.0.0): Spin reuses an instance for many
//! requests, several at a time, so what an instance keeps in memory — its resolved variables,
//! its idle Postgres connections, the service cache, the delivery queue of group commit — serves
//! the requests after it. Request data never lives here: each request builds its own `Ctx`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::pg::{self, DbValue, ParameterValue};

use crate::api::{self, Component};
use crate::base::ctx::Ctx;
use crate::base::error::ApiError;
use crate::base::ports::{Clock, Db, DbError, HttpClient, HttpError, Param, Row, Value, nonempty};
use crate::base::settings::vars;

/// Idle connections an instance keeps for the requests it is serving. Each is one of the host
/// pool's connections (64 per database), so keep few: one serves an instance whose requests take
/// turns (group commit has one leader at a time) and spares the pool's recycling (seven
/// statements) after every request. More starved the pool under load: instances kept
/// connections other instances waited for. The last request out of an instance lets go of it.
const IDLE_CONNECTIONS: usize = 1;

/// How long a request waits for a new database connection.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// Connections a finished request left open and outside any transaction, newest last.
    static IDLE: RefCell<Vec<(String, Rc<pg::Connection>)>> = const { RefCell::new(Vec::new()) };
    /// Requests this instance is serving now.
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
}

/// Counts a request as in flight in this instance while it lives.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        IN_FLIGHT.set(IN_FLIGHT.get() + 1);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let left = IN_FLIGHT.get().saturating_sub(1);
        IN_FLIGHT.set(left);
        if left == 0 {
            // The last request out: the kept connections go back to Spin's pool.
            IDLE.with_borrow_mut(Vec::clear);
        }
    }
}

/// Spin's Postgres binding (`spin:postgres/postgres@4.2.0`, its async functions). Takes an idle
/// connection the instance kept, or opens one, on first use — so requests that never touch the
/// database never open one — and hands it back to the instance when the request ends outside a
/// transaction with the connection healthy. A connection dropped inside a transaction (or after
/// a connection error) is closed, never reused.
pub struct SpinDb {
    url: Option<String>,
    conn: RefCell<Option<Rc<pg::Connection>>>,
    opening: futures::lock::Mutex<()>,
    in_tx: Cell<bool>,
    broken: Cell<bool>,
}

impl SpinDb {
    pub fn new(url: Option<String>) -> Self {
        SpinDb {
            url,
            conn: RefCell::new(None),
            opening: futures::lock::Mutex::new(()),
            in_tx: Cell::new(false),
            broken: Cell::new(false),
        }
    }

    async fn conn(&self) -> Result<Rc<pg::Connection>, DbError> {
        if let Some(c) = self.conn.borrow().as_ref() {
            return Ok(c.clone());
        }
        let _opening = self.opening.lock().await;
        if let Some(c) = self.conn.borrow().as_ref() {
            return Ok(c.clone());
        }
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| DbError::Connect("db_url is not configured".into()))?;
        let kept = IDLE.with_borrow_mut(|idle| {
            let at = idle.iter().rposition(|(u, _)| u == url)?;
            Some(idle.remove(at).1)
        });
        let c = match kept {
            Some(c) => c,
            None => Rc::new(open(url).await.map_err(|e| self.fail(e))?),
        };
        *self.conn.borrow_mut() = Some(c.clone());
        Ok(c)
    }

    /// Note an error: a connection error means the connection must not be reused.
    fn fail(&self, e: DbError) -> DbError {
        if matches!(e, DbError::Connect(_)) || is_closed(&e) {
            self.broken.set(true);
        }
        e
    }

    fn track(&self, sql: &str) {
        let head = sql
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches(';')
            .to_ascii_uppercase();
        match head.as_str() {
            "BEGIN" | "START" => self.in_tx.set(true),
            "COMMIT" | "ROLLBACK" | "END" => self.in_tx.set(false),
            _ => {}
        }
    }
}

/// Open a connection, or give up after [`OPEN_TIMEOUT`]: Spin's pool holds at most 64
/// connections per database and makes a request wait, without limit, for one to come free. Past
/// capacity a request is better answered 503 (`DbError::Connect`, with `Retry-After`) at once than
/// held until its client gives up.
async fn open(url: &str) -> Result<pg::Connection, DbError> {
    let opening = pg::Connection::open(url);
    futures::pin_mut!(opening);
    let sleep = spin_sdk::time::sleep(OPEN_TIMEOUT);
    futures::pin_mut!(sleep);
    match futures::future::select(opening, sleep).await {
        futures::future::Either::Left((opened, _)) => opened.map_err(map_pg),
        futures::future::Either::Right(((), _)) => Err(DbError::Connect(format!(
            "no database connection came free within {} ms",
            OPEN_TIMEOUT.as_millis()
        ))),
    }
}

fn is_closed(e: &DbError) -> bool {
    match e {
        DbError::Query {
            code: None,
            message,
        } => {
            let m = message.to_ascii_lowercase();
            m.contains("connection closed")
                || m.contains("connection reset")
                || m.contains("broken pipe")
        }
        _ => false,
    }
}

impl Drop for SpinDb {
    fn drop(&mut self) {
        let Some(conn) = self.conn.get_mut().take() else {
            return;
        };
        // Kept only for a request already running beside this one: an instance with nothing
        // to do holds no connection (Spin keeps an idle instance for a second, and other
        // instances may be waiting for the pool meanwhile).
        if self.in_tx.get() || self.broken.get() || IN_FLIGHT.get() <= 1 {
            return;
        }
        let (Some(url), Ok(conn)) = (self.url.take(), Rc::try_unwrap(conn)) else {
            return;
        };
        IDLE.with_borrow_mut(|idle| {
            if idle.len() >= IDLE_CONNECTIONS && !idle.is_empty() {
                idle.remove(0);
            }
            if idle.len() < IDLE_CONNECTIONS {
                idle.push((url, Rc::new(conn)));
            }
        });
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

fn from_db(v: DbValue, column: &str) -> Result<Value, DbError> {
    Ok(match v {
        DbValue::DbNull => Value::Null,
        DbValue::Boolean(b) => Value::Bool(b),
        DbValue::Int8(n) => Value::Int16(i16::from(n)),
        DbValue::Int16(n) => Value::Int16(n),
        DbValue::Int32(n) => Value::Int32(n),
        DbValue::Int64(n) => Value::Int64(n),
        DbValue::Floating32(n) => Value::Float64(f64::from(n)),
        DbValue::Floating64(n) => Value::Float64(n),
        DbValue::Str(s) => Value::Text(s),
        DbValue::Binary(b) => Value::Bytes(b),
        DbValue::Uuid(s) => Value::Uuid(
            s.parse()
                .map_err(|_| DbError::Decode(format!("{column}: bad uuid")))?,
        ),
        DbValue::Jsonb(b) => Value::Jsonb(
            serde_json::from_slice(&b).map_err(|e| DbError::Decode(format!("{column}: {e}")))?,
        ),
        DbValue::ArrayStr(a) => Value::TextArray(a),
        other => {
            return Err(DbError::Decode(format!(
                "{column}: unsupported column value {other:?}"
            )));
        }
    })
}

fn map_pg(e: pg::Error) -> DbError {
    match e {
        pg::Error::PgError(e) => map_err(e),
        pg::Error::Decode(m) => DbError::Decode(m),
    }
}

fn map_err(e: pg::PgError) -> DbError {
    match e {
        pg::PgError::ConnectionFailed(m) => DbError::Connect(m),
        pg::PgError::QueryFailed(pg::QueryError::DbError(d)) => DbError::Query {
            code: Some(d.code),
            message: d.message,
        },
        // Spin 4.0.2 passes some database errors as text only: read the SQLSTATE out of it.
        pg::PgError::QueryFailed(pg::QueryError::Text(m))
        | pg::PgError::BadParameter(m)
        | pg::PgError::ValueConversionFailed(m)
        | pg::PgError::Other(m) => DbError::Query {
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
        let conn = self.conn().await?;
        let result = async {
            let set = conn.query(guarded, params).await.map_err(map_pg)?;
            let columns: Vec<String> = set.columns().iter().map(|c| c.name.clone()).collect();
            let (_, mut rows, done) = set.into_inner();
            let mut values = Vec::new();
            while let Some(row) = rows.next().await {
                values.push(
                    row.into_iter()
                        .zip(columns.iter())
                        .map(|(v, c)| from_db(v, c))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            done.await.map_err(map_err)?;
            nonempty::unwrap(&columns, values)
        }
        .await;
        result.map_err(|e| self.fail(e))
    }

    async fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, DbError> {
        let params: Vec<ParameterValue> = params.iter().map(to_param).collect();
        let conn = self.conn().await?;
        self.track(sql);
        conn.execute(sql, params)
            .await
            .map_err(|e| self.fail(map_pg(e)))
    }
}

/// Spin's outbound HTTP (`wasi:http` 0.3 rc), with the per-request timeout enforced by racing a
/// timer.
pub struct SpinHttp;

#[async_trait(?Send)]
impl HttpClient for SpinHttp {
    async fn send(
        &self,
        req: http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let resp = spin_sdk::http::send(req).await.map_err(map_http)?;
            let (parts, body) = resp.into_parts();
            let body = body.bytes().await.map_err(map_http)?;
            Ok(http::Response::from_parts(parts, body))
        };
        futures::pin_mut!(exchange);
        let sleep = spin_sdk::time::sleep(timeout);
        futures::pin_mut!(sleep);
        match futures::future::select(exchange, sleep).await {
            futures::future::Either::Left((outcome, _)) => outcome,
            futures::future::Either::Right(((), _)) => Err(HttpError::Timeout),
        }
    }
}

fn map_http(e: spin_sdk::wasip3::http::types::ErrorCode) -> HttpError {
    use spin_sdk::wasip3::http::types::ErrorCode;
    match e {
        ErrorCode::HttpRequestDenied => {
            HttpError::Denied("host not in allowed_outbound_hosts".into())
        }
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => HttpError::Timeout,
        ErrorCode::ConnectionRefused | ErrorCode::DnsError(_) | ErrorCode::DnsTimeout => {
            HttpError::Connect(format!("{e:?}"))
        }
        other => HttpError::Other(format!("{other:?}")),
    }
}

/// Wall clock from WASI; sleeps on the host's monotonic clock.
pub struct SpinClock;

#[async_trait(?Send)]
impl Clock for SpinClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    async fn sleep(&self, d: Duration) {
        spin_sdk::time::sleep(d).await
    }
}

thread_local! {
    /// The component variables this instance resolved, read once per instance.
    static VARIABLES: RefCell<Option<Rc<HashMap<String, String>>>> = const { RefCell::new(None) };
}

/// Spin component variables, resolved once per instance (`spin_sdk::variables::get` is an async
/// host call; the values do not change while an instance lives). A variable the component does
/// not declare is absent.
async fn variables() -> Rc<HashMap<String, String>> {
    if let Some(v) = VARIABLES.with_borrow(Clone::clone) {
        return v;
    }
    let mut map = HashMap::new();
    for name in vars::ALL {
        if let Ok(value) = spin_sdk::variables::get(name).await {
            map.insert((*name).to_owned(), value);
        }
    }
    let map = Rc::new(map);
    VARIABLES.with_borrow_mut(|v| *v = Some(map.clone()));
    map
}

/// The body of every HTTP component: read the request, build the ports, dispatch through
/// `shared::api`, and return the response. Never returns `Err`, so Spin never answers an empty
/// 500 (a body that cannot be read, a client gone mid-upload, is a logged 400).
pub async fn serve(
    component: Component,
    req: spin_sdk::http::Request,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.bytes().await {
        Ok(b) => b,
        Err(e) => {
            crate::base::log::warn(
                "request_body_unreadable",
                serde_json::json!({"cause": format!("{e:?}")}),
            );
            let resp = ApiError::bad_request("the request body could not be read")
                .into_response(&uuid::Uuid::new_v4().to_string());
            let (parts, body) = resp.into_parts();
            return http::Response::from_parts(parts, Full::new(body));
        }
    };
    let req = http::Request::from_parts(parts, body);
    let _in_flight = InFlight::enter();
    let config = variables().await;
    let db = SpinDb::new(config.get(vars::DB_URL).cloned());
    let ctx = Ctx::new(&db, &SpinHttp, &SpinClock, &*config);
    let resp = api::dispatch(component, req, &ctx).await;
    let (parts, body) = resp.into_parts();
    http::Response::from_parts(parts, Full::new(body))
}
