//! The integration-test harness (`spawn_app()`, STYLE habit 8): a fresh database per test cloned
//! from a migrated template, the native host on port 0 connected as the application role, typed
//! request helpers and a JWT minter. Databases are dropped when the `TestApp` is dropped.
//!
//! With `GS_TEST_HOST=spin` the same tests run against the real Spin runtime: each app is a
//! `spin up` of `spin.toml`'s HTTP components (built beforehand by `cargo xtask test-spin`) on a
//! free port, with the test's variables as `SPIN_VARIABLE_*`. Tests that need the native host's
//! internals call [`native_only`] first; `GS_TEST_REPORT` names a file where each test records
//! whether it ran on Spin or was native-only, which the xtask counts.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use host::manifest::{self, Manifest};
use host::pgenv::{self, PgServer};
use host::procs::ProcessGuard;
use host::server::{self, HostOptions, RunningHost};
use host::spin_up::{self, SpinApp, SpinOptions};
use serde_json::Value;
use uuid::Uuid;

pub use host::dev::mint_jwt;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";
pub const INTERNAL_TOKEN: &str = "test-internal-token-0123456789";
/// base64 of 32 bytes: the test AES-256 key.
pub const ENCRYPTION_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const APP_ROLE: &str = "golioth_sync_app";
pub const APP_ROLE_PASSWORD: &str = "golioth_sync_app_test";

/// The Postgres server the tests use, found once per process.
pub async fn server() -> Result<PgServer> {
    static SERVER: tokio::sync::OnceCell<PgServer> = tokio::sync::OnceCell::const_new();
    SERVER
        .get_or_try_init(|| async { pgenv::locate().await })
        .await
        .cloned()
}

/// Run an async admin job on its own runtime and thread (usable from `Drop` and from any runtime).
fn blocking<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(f)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("admin thread panicked"))?
}

/// Name of the migrated template database for the current migration files.
async fn template(server: &PgServer) -> Result<String> {
    let name = format!("gsync_tpl_{}", host::migrate::fingerprint()?);
    let admin = pgenv::connect(&server.admin_url).await?;
    // Serialise template creation across test processes.
    admin
        .execute("SELECT pg_advisory_lock(724001)", &[])
        .await?;
    let result = async {
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            let building = format!("{name}_building");
            let b = pgenv::ident(&building);
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {b} WITH (FORCE)"))
                .await?;
            admin.batch_execute(&format!("CREATE DATABASE {b}")).await?;
            host::migrate::apply(&pgenv::with_database(&server.admin_url, &building)?).await?;
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    pgenv::ident(&building),
                    pgenv::ident(&name)
                ))
                .await?;
        }
        admin
            .batch_execute(&format!(
                "ALTER ROLE {APP_ROLE} PASSWORD '{APP_ROLE_PASSWORD}'"
            ))
            .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    admin
        .execute("SELECT pg_advisory_unlock(724001)", &[])
        .await?;
    result?;
    Ok(name)
}

/// A fresh, migrated database (cloned from the template). Dropped with `drop_database`.
pub async fn fresh_database() -> Result<(PgServer, String)> {
    let server = server().await?;
    let tpl = template(&server).await?;
    let name = format!("gsync_test_{}", Uuid::new_v4().simple());
    let admin = pgenv::connect(&server.admin_url).await?;
    admin
        .execute("SELECT pg_advisory_lock(724002)", &[])
        .await?;
    let created = admin
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE {}",
            pgenv::ident(&name),
            pgenv::ident(&tpl)
        ))
        .await;
    admin
        .execute("SELECT pg_advisory_unlock(724002)", &[])
        .await?;
    created.context("creating a test database from the template")?;
    Ok((server, name))
}

/// The first column of every row of `sql` (no parameters), as text: for catalog checks.
pub async fn texts(db: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    db.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Drop a test database, disconnecting whoever is still on it.
pub fn drop_database(admin_url: &str, name: &str) {
    let admin_url = admin_url.to_owned();
    let name = name.to_owned();
    let _ = blocking(async move {
        let admin = pgenv::connect(&admin_url).await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                pgenv::ident(&name)
            ))
            .await?;
        Ok(())
    });
}

fn manifest() -> &'static Manifest {
    static M: OnceLock<Manifest> = OnceLock::new();
    M.get_or_init(|| match Manifest::load(&manifest::default_path()) {
        Ok(m) => m,
        Err(e) => panic!("spin.toml: {e:#}"),
    })
}

/// A running system for one test: its own database, the host on port 0.
pub struct TestApp {
    pub base_url: String,
    pub db_name: String,
    /// Admin (owner) URL of this test's database: bypasses RLS, for setup and assertions.
    pub admin_db_url: String,
    /// The application role's URL of this test's database (what the host uses).
    pub app_db_url: String,
    pub client: reqwest::Client,
    server_admin_url: String,
    /// The application variables the host was started with (before resolution).
    env: HashMap<String, String>,
    host: Option<Host>,
    /// Set by `use_killable_host` on the native host: the host binary to run as a process.
    native_bin: Option<String>,
}

/// Options for `spawn_app_with`.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// Extra or overriding application variables (`name -> value`).
    pub vars: HashMap<String, String>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(opts: AppOptions) -> TestApp {
    match try_spawn(opts).await {
        Ok(app) => app,
        Err(e) => panic!("spawn_app failed: {e:#}"),
    }
}

async fn try_spawn(opts: AppOptions) -> Result<TestApp> {
    shared::base::log::set_enabled(std::env::var_os("TEST_LOG").is_some());
    let (server, db_name) = fresh_database().await?;
    let admin_db_url = pgenv::with_database(&server.admin_url, &db_name)?;
    let app_db_url = pgenv::with_user(&admin_db_url, APP_ROLE, Some(APP_ROLE_PASSWORD))?;
    let mut env: HashMap<String, String> = [
        ("db_host", pgenv::host_port(&server.admin_url)?),
        ("db_name", db_name.clone()),
        ("db_user", APP_ROLE.to_owned()),
        ("db_password", APP_ROLE_PASSWORD.to_owned()),
        ("jwt_secret", JWT_SECRET.to_owned()),
        ("encryption_key", ENCRYPTION_KEY.to_owned()),
        ("internal_token", INTERNAL_TOKEN.to_owned()),
        ("golioth_base_url", "http://127.0.0.1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(opts.vars);
    let host = start_host(&env)?;
    Ok(TestApp {
        base_url: host.base_url(),
        db_name,
        admin_db_url,
        app_db_url,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?,
        server_admin_url: server.admin_url,
        env,
        host: Some(host),
        native_bin: None,
    })
}

/// Whether this test process runs the apps under Spin (`GS_TEST_HOST=spin`).
pub fn on_spin() -> bool {
    std::env::var("GS_TEST_HOST").is_ok_and(|h| h == "spin")
}

/// Append `kind\ttest\tdetail` to the `GS_TEST_REPORT` file, if one is set.
pub fn report(kind: &str, detail: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("GS_TEST_REPORT") else {
        return;
    };
    // `file::test`: the test binary's name (without cargo's hash) and the test's thread name.
    let file = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| {
            stem.rsplit_once('-')
                .map_or(stem.clone(), |(f, _)| f.to_owned())
        })
        .unwrap_or_default();
    let test = format!(
        "{file}::{}",
        std::thread::current().name().unwrap_or("unnamed")
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: tests of one process append concurrently (O_APPEND).
        let _ = f.write_all(format!("{kind}\t{test}\t{detail}\n").as_bytes());
    }
}

/// Call first in a test that needs the native host's internals (an in-process engine call, the
/// host's in-memory state, its statement counter). Under the Spin suite it records the reason and
/// returns `true`: the test then returns without running. On the native host it returns `false`.
#[must_use]
pub fn native_only(reason: &str) -> bool {
    if on_spin() {
        report("native-only", reason);
        eprintln!("native-only: {reason}");
        true
    } else {
        false
    }
}

/// A running host for one test: the native host in this process, the native host as its own
/// process (which a test can SIGKILL), or `spin up`.
pub enum Host {
    Native(RunningHost),
    Process(HostProcess),
    Spin(SpinApp),
}

impl Host {
    pub fn base_url(&self) -> String {
        match self {
            Host::Native(h) => h.base_url(),
            Host::Process(p) => p.base_url.clone(),
            Host::Spin(s) => s.base_url(),
        }
    }

    /// Stop the host now (a host process or the Spin process group is killed with SIGKILL).
    pub fn shutdown(self) {
        match self {
            Host::Native(h) => h.shutdown(),
            Host::Process(mut p) => p.kill(),
            Host::Spin(mut s) => s.stop(),
        }
    }
}

/// The native host running as `gs-host serve` (the tests crate's copy of `golioth-sync`), in its
/// own process group; killed when dropped.
pub struct HostProcess {
    child: ProcessGuard,
    base_url: String,
}

impl HostProcess {
    /// SIGKILL: no shutdown of any kind, like a crash or an OOM kill.
    fn kill(&mut self) {
        self.child.kill();
    }
}

/// What happens to a host process's stdout once it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stdout {
    /// Read and discarded, so the host never blocks on a full pipe.
    Drained,
    /// The pipe's read end is closed: every later write fails with `EPIPE`.
    Closed,
}

fn start_process(bin: &str, env: &HashMap<String, String>, after: Stdout) -> Result<Host> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--threads", "1"])
        .args(["--tick-seconds", "0", "--manifest"])
        .arg(manifest::default_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(format!("SPIN_VARIABLE_{}", k.to_ascii_uppercase()), v);
    }
    let mut child = ProcessGuard::spawn(&mut cmd).with_context(|| format!("starting {bin}"))?;
    let stdout = child.child_mut().stdout.take().context("host stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let base_url = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(url) = l.strip_prefix("listening on ") {
                    break url.trim().to_owned();
                }
            }
            _ => {
                child.kill();
                anyhow::bail!("{bin} exited before listening");
            }
        }
    };
    match after {
        Stdout::Drained => {
            std::thread::spawn(move || for _ in lines.by_ref() {});
        }
        Stdout::Closed => drop(lines),
    }
    Ok(Host::Process(HostProcess { child, base_url }))
}

fn start_host(env: &HashMap<String, String>) -> Result<Host> {
    if on_spin() {
        report("spin", "");
        let components = manifest()
            .http_components()
            .into_iter()
            .map(str::to_owned)
            .collect();
        return Ok(Host::Spin(spin_up::start(&SpinOptions {
            manifest: manifest::default_path(),
            vars: env.clone(),
            components,
            ..SpinOptions::default()
        })?));
    }
    let app_vars = manifest().resolve_variables(env)?;
    Ok(Host::Native(server::start(
        manifest(),
        &app_vars,
        HostOptions {
            listen: "127.0.0.1:0".parse()?,
            threads: 1,
            tick_interval: None,
            pool_size: 8,
        },
    )?))
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            h.shutdown();
        }
        drop_database(&self.server_admin_url, &self.db_name);
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Start another app under Spin for a Spin-only test (a test manifest, the cron trigger), counted
/// as a test that ran on Spin.
pub fn start_spin(opts: &SpinOptions) -> SpinApp {
    report("spin", "");
    match spin_up::start(opts) {
        Ok(app) => app,
        Err(e) => panic!("spin up: {e:#}"),
    }
}

impl TestApp {
    /// The host serving this app (the native host, or `spin up` with its log folder).
    pub fn host(&self) -> &Host {
        match &self.host {
            Some(h) => h,
            None => panic!("the host was shut down"),
        }
    }

    /// The application variables this app was started with (database, secrets, base URLs).
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.env
    }

    /// Start a second host on this test's database with some variables overridden (e.g. a new
    /// encryption key ring). It stops when the returned handle is dropped.
    pub fn another_host(&self, overrides: &[(&str, &str)]) -> Host {
        let mut env = self.env.clone();
        for (k, v) in overrides {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        match start_host(&env) {
            Ok(h) => h,
            Err(e) => panic!("another_host: {e:#}"),
        }
    }

    /// Replace the host with one this test can SIGKILL: the native host as its own process
    /// (`native_bin`: the test's `env!("CARGO_BIN_EXE_gs-host")`), or `spin up` as always.
    pub fn use_killable_host(&mut self, native_bin: &str) {
        self.native_bin = (!on_spin()).then(|| native_bin.to_owned());
        self.kill_host();
        self.restart_host();
    }

    /// Replace the native host with its own process (`native_bin`, as in
    /// [`TestApp::use_killable_host`]) whose stdout pipe is closed as soon as it listens, as when
    /// `golioth-sync up | head` has ended: every log line it writes then meets `EPIPE`.
    pub fn use_host_with_closed_stdout(&mut self, native_bin: &str) {
        self.kill_host();
        let host = start_process(native_bin, &self.env, Stdout::Closed)
            .unwrap_or_else(|e| panic!("starting the host: {e:#}"));
        self.base_url = host.base_url();
        self.host = Some(host);
    }

    /// Kill the host with SIGKILL (after [`TestApp::use_killable_host`]) and wait for it.
    pub fn kill_host(&mut self) {
        if let Some(h) = self.host.take() {
            h.shutdown();
        }
    }

    /// Start the host again on the same database and variables; `base_url` moves to it.
    pub fn restart_host(&mut self) {
        let started = match &self.native_bin {
            Some(bin) => start_process(bin, &self.env, Stdout::Drained),
            None => start_host(&self.env),
        };
        let host = started.unwrap_or_else(|e| panic!("restarting the host: {e:#}"));
        self.base_url = host.base_url();
        self.host = Some(host);
    }

    /// An admin connection to this test's database (bypasses RLS).
    pub async fn admin(&self) -> tokio_postgres::Client {
        match pgenv::connect(&self.admin_db_url).await {
            Ok(c) => c,
            Err(e) => panic!("admin connection: {e:#}"),
        }
    }

    /// A JWT for `user`, valid for an hour, signed with the test secret.
    pub fn jwt(&self, user: Uuid) -> String {
        match mint_jwt(JWT_SECRET, &user.to_string(), Duration::from_secs(3600)) {
            Ok(t) => t,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Create an organization and return its id.
    pub async fn seed_org(&self, name: &str) -> Uuid {
        let id = Uuid::new_v4();
        let slug = format!("{}-{}", name.to_lowercase(), id.simple());
        self.admin()
            .await
            .execute(
                "INSERT INTO organizations (id, name, slug) VALUES ($1, $2, $3)",
                &[&id, &name, &slug],
            )
            .await
            .unwrap_or_else(|e| panic!("seed_org: {e}"));
        id
    }

    /// Add `user` to `org` with `role`, returning the user's id.
    pub async fn seed_member(&self, org: Uuid, role: &str) -> Uuid {
        let user = Uuid::new_v4();
        self.admin()
            .await
            .execute(
                "INSERT INTO organization_members (organization_id, user_id, role) VALUES ($1, $2, $3)",
                &[&org, &user, &role],
            )
            .await
            .unwrap_or_else(|e| panic!("seed_member: {e}"));
        user
    }

    /// Send a request; `token` becomes `Authorization: Bearer`, `body` is sent as JSON.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> TestResponse {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base_url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req).await
    }

    /// Send a prepared reqwest request and read the whole response.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> TestResponse {
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.request("GET", path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.request("POST", path, token, Some(body)).await
    }
}
