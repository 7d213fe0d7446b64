//! Runs an app under the real Spin CLI (`spin up`) for the Spin test suite and `bench --host
//! spin`: finds `spin` on PATH, picks a free port, passes the application variables as
//! `SPIN_VARIABLE_*`, waits until `/health` answers and kills the whole process group (the cron
//! plugin is a child process) when dropped ([`crate::procs::ProcessGuard`]). Nothing in
//! production uses this module.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::procs::ProcessGuard;

/// Where `spin` is, or why it cannot be used (the Spin suite prints this when it skips).
pub fn spin_binary() -> std::result::Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("spin"))
        .find(|p| p.is_file())
        .ok_or_else(|| "no `spin` on PATH".to_owned())?;
    let out = Command::new(&found)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", found.display()))?;
    if !out.status.success() {
        return Err(format!("{} --version failed", found.display()));
    }
    Ok(found)
}

/// `spin --version`'s first line, e.g. `spin 4.0.2 (bfc7543b 2026-06-23)`.
pub fn spin_version() -> Option<String> {
    let bin = spin_binary().ok()?;
    let out = Command::new(bin).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

/// How to start one app.
#[derive(Debug, Clone, Default)]
pub struct SpinOptions {
    /// The manifest (`spin.toml`).
    pub manifest: PathBuf,
    /// Application variables, passed as `SPIN_VARIABLE_<NAME>`.
    pub vars: HashMap<String, String>,
    /// Run only these components (`spin up -c`); empty runs all, including the cron trigger.
    pub components: Vec<String>,
    /// The path that answers (with any status) once the app is up (default `/health`).
    pub ready_path: Option<String>,
    /// Where the component logs and Spin's own output go (a fresh temporary folder if `None`).
    pub log_dir: Option<PathBuf>,
    /// Extra environment for the `spin` process (e.g. `SPIN_WASMTIME_INSTANCE_COUNT`).
    pub env: HashMap<String, String>,
    /// The app has no HTTP trigger (e.g. only the cron trigger, `components: ["scheduler"]`):
    /// no `--listen` (Spin refuses it then) and no readiness poll; `start` returns once the
    /// process is still alive after a second. `addr` is then `127.0.0.1:0`.
    pub no_http: bool,
}

/// A running `spin up`; stopped (process group killed) on drop.
pub struct SpinApp {
    child: ProcessGuard,
    pub addr: SocketAddr,
    pub log_dir: PathBuf,
    _temp: Option<TempDir>,
}

impl SpinApp {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id of `spin up` (the leader of its process group).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Spin's and the components' output so far, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let dirs = [self.log_dir.clone(), self.log_dir.join("components")];
        for dir in dirs.iter().filter_map(|d| std::fs::read_dir(d).ok()) {
            let mut files: Vec<_> = dir
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for f in files {
                if let Ok(text) = std::fs::read_to_string(&f) {
                    let tail: String = text
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    out.push_str(&format!("--- {}\n{tail}\n", f.display()));
                }
            }
        }
        out
    }

    /// Every line Spin and the components wrote so far (all files of the log folder).
    pub fn log_lines(&self) -> Vec<String> {
        let dirs = [self.log_dir.clone(), self.log_dir.join("components")];
        dirs.iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|dir| dir.flatten().map(|e| e.path()))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    /// Stop the app now (SIGKILL to its process group and anything it started) and wait for it.
    /// Dropping the app does the same.
    pub fn stop(&mut self) {
        self.child.kill();
    }
}

/// A temporary folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<Self> {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("GS_KEEP_SPIN_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Start `spin up` and wait (up to 60 s) until it answers `ready_path` (with `no_http`: until it
/// has stayed up for a second). Retries on another port if the chosen one was taken meanwhile.
pub fn start(opts: &SpinOptions) -> Result<SpinApp> {
    let bin = spin_binary().map_err(anyhow::Error::msg)?;
    let mut last = None;
    for _ in 0..3 {
        match start_once(&bin, opts) {
            Ok(app) => return Ok(app),
            Err(e) if format!("{e:#}").contains("in use") => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("spin up: no free port")))
}

fn start_once(bin: &Path, opts: &SpinOptions) -> Result<SpinApp> {
    let (temp, log_dir) = match &opts.log_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (None, d.clone())
        }
        None => {
            let t = TempDir::new("gs-spin")?;
            let d = t.0.clone();
            (Some(t), d)
        }
    };
    let port = if opts.no_http { 0 } else { free_port()? };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = Command::new(bin);
    cmd.arg("up").arg("--from").arg(&opts.manifest);
    if !opts.no_http {
        cmd.arg("--listen").arg(addr.to_string());
    }
    cmd.arg("--log-dir")
        .arg(log_dir.join("components"))
        .arg("--state-dir")
        .arg(log_dir.join("state"));
    for c in &opts.components {
        cmd.arg("-c").arg(c);
    }
    for (k, v) in &opts.vars {
        cmd.env(format!("SPIN_VARIABLE_{}", k.to_ascii_uppercase()), v);
    }
    cmd.envs(&opts.env);
    let out = std::fs::File::create(log_dir.join("spin.out"))?;
    let err = std::fs::File::create(log_dir.join("spin.err"))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child =
        ProcessGuard::spawn(&mut cmd).with_context(|| format!("starting {}", bin.display()))?;
    let mut app = SpinApp {
        child,
        addr,
        log_dir,
        _temp: temp,
    };
    if opts.no_http {
        let alive_until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < alive_until {
            if let Some(status) = app.child.child_mut().try_wait()? {
                let logs = app.logs();
                bail!("spin up exited with {status} right after starting:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        return Ok(app);
    }
    let ready = opts.ready_path.as_deref().unwrap_or("/health");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = app.child.child_mut().try_wait()? {
            let logs = app.logs();
            bail!("spin up exited with {status} before it was ready:\n{logs}");
        }
        // Any answer means the app is up (a test may start it against a database that is down).
        if http_get_status(addr, ready).is_some() {
            return Ok(app);
        }
        if Instant::now() > deadline {
            let logs = app.logs();
            app.stop();
            bail!("spin up did not answer {ready} within 60 s:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status code of a plain `GET path` (HTTP/1.0), or `None` when nothing answers.
fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 16];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
