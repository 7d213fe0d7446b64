//! `cargo xtask up`: the newcomer's one command. Finds or starts Postgres, creates and migrates
//! the database, seeds a demo organization, starts the host, prints a development JWT and curl
//! lines, and serves until interrupted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::manifest::{self, Manifest};
use crate::server::{self, HostOptions};
use crate::{migrate, pgenv};

/// The demo organization and user `up` seeds (fixed ids so curl lines stay valid across runs).
pub const DEMO_ORG_ID: &str = "00000000-0000-4000-8000-00000000d3e0";
pub const DEMO_USER_ID: &str = "00000000-0000-4000-8000-0000000000a1";
/// Development-only secrets used by `up` when none are given in the environment.
pub const DEV_JWT_SECRET: &str = "dev-jwt-secret-change-me";
pub const DEV_INTERNAL_TOKEN: &str = "dev-internal-token";
/// 32 zero-padded bytes, base64: a development AES-256 key (never for production).
pub const DEV_ENCRYPTION_KEY: &str = "ZGV2LWVuY3J5cHRpb24ta2V5LTMyLWJ5dGVzLWxvbmch";

/// An HS256 JWT for `sub`, valid for `ttl`, as the platform's auth issues them.
pub fn mint_jwt(secret: &str, sub: &str, ttl: Duration) -> Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": sub, "iat": now, "exp": now + ttl.as_secs() as i64});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("signing a JWT")
}

/// Create `db` on the server of `admin_url` if it does not exist.
pub async fn ensure_database(admin_url: &str, db: &str) -> Result<()> {
    let client = pgenv::connect(admin_url).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {}", pgenv::ident(db)))
            .await?;
    }
    Ok(())
}

/// Seed the demo organization with the demo user as owner (idempotent).
pub async fn seed_demo(admin_db_url: &str) -> Result<()> {
    let client = pgenv::connect(admin_db_url).await?;
    client
        .batch_execute(&format!(
            "INSERT INTO organizations (id, name, slug) VALUES ('{DEMO_ORG_ID}', 'Demo', 'demo')
               ON CONFLICT (id) DO NOTHING;
             INSERT INTO organization_members (organization_id, user_id, role)
               VALUES ('{DEMO_ORG_ID}', '{DEMO_USER_ID}', 'owner') ON CONFLICT DO NOTHING;"
        ))
        .await?;
    Ok(())
}

/// Options of `cargo xtask up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub listen: SocketAddr,
    pub database: String,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            database: "golioth_sync".into(),
        }
    }
}

/// Run the whole system locally until Ctrl-C.
pub async fn up(opts: UpOptions) -> Result<()> {
    let server = pgenv::locate().await?;
    println!("postgres: {}", server.origin);
    ensure_database(&server.admin_url, &opts.database).await?;
    let admin_db = pgenv::with_database(&server.admin_url, &opts.database)?;
    migrate::apply(&admin_db).await?;
    seed_demo(&admin_db).await?;

    let mut env: HashMap<String, String> = std::env::vars().collect();
    let mut set_default = |k: &str, v: String| {
        env.entry(format!("SPIN_VARIABLE_{}", k.to_ascii_uppercase()))
            .or_insert(v);
    };
    set_default("db_host", pgenv::host_port(&server.admin_url)?);
    set_default("db_name", opts.database.clone());
    set_default("db_password", "dev".into());
    set_default("jwt_secret", DEV_JWT_SECRET.into());
    set_default("encryption_key", DEV_ENCRYPTION_KEY.into());
    set_default("internal_token", DEV_INTERNAL_TOKEN.into());
    set_default("tick_origin", format!("http://{}", opts.listen));

    let manifest = Manifest::load(&manifest::default_path())?;
    let app_vars = manifest.resolve_variables(&env)?;
    let host = server::start(
        &manifest,
        &app_vars,
        HostOptions {
            listen: opts.listen,
            ..HostOptions::default()
        },
    )?;
    let base = host.base_url();
    let jwt = mint_jwt(
        &app_vars["jwt_secret"],
        DEMO_USER_ID,
        Duration::from_secs(7 * 24 * 3600),
    )?;
    println!("golioth-sync is up at {base}");
    println!("demo organization {DEMO_ORG_ID}, owner {DEMO_USER_ID}");
    println!("development JWT (7 days):\n  {jwt}\n");
    println!("try:");
    println!("  curl -s {base}/health");
    println!(
        "  curl -s -H 'authorization: Bearer {jwt}' {base}/api/v1/orgs/{DEMO_ORG_ID}/services"
    );
    println!(
        "  curl -s -H 'authorization: Bearer {jwt}' {base}/api/v1/orgs/{DEMO_ORG_ID}/conflicts"
    );
    println!(
        "  curl -s -X POST -H 'authorization: Bearer {}' {base}/internal/tick",
        app_vars["internal_token"]
    );
    println!("\nCtrl-C stops it.");
    tokio::signal::ctrl_c().await.ok();
    host.shutdown();
    Ok(())
}
