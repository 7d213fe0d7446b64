//! Finding a Postgres server for `cargo xtask up` and the tests: `DATABASE_URL`, else the local
//! server at 127.0.0.1:5432, else a throwaway cluster under `target/` started with
//! `initdb`/`pg_ctl`. Also the admin operations the harness needs (create/drop databases).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_postgres::NoTls;

/// The default local server DESIGN §10 expects on a developer machine.
pub const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Port of the throwaway cluster started under `target/`.
pub const CLUSTER_PORT: u16 = 55432;

/// Where the admin (migration-owner) connection goes, and how it was found.
#[derive(Debug, Clone)]
pub struct PgServer {
    pub admin_url: String,
    pub origin: &'static str,
}

/// `target/` of this workspace (or `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Can we connect to `url` within a couple of seconds?
pub async fn reachable(url: &str) -> bool {
    let Ok(mut cfg) = url.parse::<tokio_postgres::Config>() else {
        return false;
    };
    cfg.connect_timeout(Duration::from_secs(2));
    match tokio::time::timeout(Duration::from_secs(3), cfg.connect(NoTls)).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await.is_ok()
        }
        _ => false,
    }
}

/// `DATABASE_URL`, else the local server, else a throwaway cluster under `target/`.
pub async fn locate() -> Result<PgServer> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.is_empty()
    {
        if !reachable(&url).await {
            bail!("DATABASE_URL is set but the server does not answer");
        }
        return Ok(PgServer {
            admin_url: url,
            origin: "DATABASE_URL",
        });
    }
    if reachable(LOCAL_URL).await {
        return Ok(PgServer {
            admin_url: LOCAL_URL.to_owned(),
            origin: "local server at 127.0.0.1:5432",
        });
    }
    let url = start_cluster(&target_dir().join("pg-cluster"), CLUSTER_PORT)?;
    for _ in 0..50 {
        if reachable(&url).await {
            return Ok(PgServer {
                admin_url: url,
                origin: "throwaway cluster under target/pg-cluster",
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the throwaway cluster started but does not accept connections")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Run a Postgres tool, as the `postgres` OS user when we are root (initdb refuses root).
fn pg_tool(tool: &str, args: &[&str], as_user: Option<&str>) -> Result<()> {
    let status = match as_user {
        Some(user) => Command::new("runuser")
            .args(["-u", user, "--", tool])
            .args(args)
            .status(),
        None => Command::new(tool).args(args).status(),
    }
    .with_context(|| format!("running {tool} (is PostgreSQL installed?)"))?;
    if !status.success() {
        bail!("{tool} {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Start (initialising if needed) a trust-auth cluster in `dir` on 127.0.0.1:`port`.
/// Idempotent: a cluster already running there is reused.
pub fn start_cluster(dir: &Path, port: u16) -> Result<String> {
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    std::fs::create_dir_all(dir)?;
    let data = dir.join("data");
    let run_as = is_root().then_some("postgres");
    if let Some(user) = run_as {
        let _ = Command::new("chown").args(["-R", user]).arg(dir).status();
    }
    let data_s = data.to_string_lossy().to_string();
    if !data.join("PG_VERSION").exists() {
        pg_tool(
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            run_as,
        )?;
    }
    let running = Command::new(if run_as.is_some() {
        "runuser"
    } else {
        "pg_ctl"
    })
    .args(if run_as.is_some() {
        vec!["-u", "postgres", "--", "pg_ctl", "-D", &data_s, "status"]
    } else {
        vec!["-D", &data_s, "status"]
    })
    .output()
    .map(|o| o.status.success())
    .unwrap_or(false);
    if !running {
        let log = dir.join("server.log").to_string_lossy().to_string();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=300",
            dir.to_string_lossy()
        );
        pg_tool(
            "pg_ctl",
            &["-D", &data_s, "-o", &opts, "-l", &log, "-w", "start"],
            run_as,
        )?;
    }
    Ok(url)
}

/// Stop the throwaway cluster in `dir`, if one runs.
pub fn stop_cluster(dir: &Path) -> Result<()> {
    let data = dir.join("data");
    if !data.join("postmaster.pid").exists() {
        return Ok(());
    }
    let data_s = data.to_string_lossy().to_string();
    pg_tool(
        "pg_ctl",
        &["-D", &data_s, "-m", "fast", "-w", "stop"],
        is_root().then_some("postgres"),
    )
}

/// Replace the database name in a connection URL.
pub fn with_database(url: &str, db: &str) -> Result<String> {
    let mut u = url::Url::parse(url).context("parsing a postgres URL")?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

/// Replace user and password in a connection URL.
pub fn with_user(url: &str, user: &str, password: Option<&str>) -> Result<String> {
    let mut u = url::Url::parse(url).context("parsing a postgres URL")?;
    u.set_username(user).ok();
    u.set_password(password).ok();
    Ok(u.to_string())
}

/// `host:port` of a connection URL (Spin's `db_host` variable).
pub fn host_port(url: &str) -> Result<String> {
    let u = url::Url::parse(url).context("parsing a postgres URL")?;
    Ok(format!(
        "{}:{}",
        u.host_str().unwrap_or("127.0.0.1"),
        u.port().unwrap_or(5432)
    ))
}

/// One admin connection (simple protocol only).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to Postgres")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Quote an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
