//! `cargo xtask up`: the newcomer's one command. Finds or starts Postgres, creates and migrates
//! the database, seeds a demo organization, starts the host, prints a development JWT, a web
//! console link signed in with it, and curl lines, and serves until interrupted.

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
/// base64 of 32 bytes: a development AES-256 key (never for production).
pub const DEV_ENCRYPTION_KEY: &str = "ZGV2LWVuY3J5cHRpb24ta2V5LTMyLWJ5dGVzLWxvbmc=";

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
    /// Where the Golioth simulator listens (used unless real Golioth credentials are given).
    pub simulator: SocketAddr,
    /// Devices seeded into the simulator's demo project.
    pub demo_devices: usize,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            database: "golioth_sync".into(),
            simulator: SocketAddr::from(([127, 0, 0, 1], 4100)),
            demo_devices: 50,
        }
    }
}

/// The demo service's name and secrets (development only).
pub const DEMO_SERVICE: &str = "demo-golioth";
pub const DEMO_PROJECT: &str = "demo-project";
pub const DEMO_API_KEY: &str = "demo-golioth-api-key";
pub const DEMO_WEBHOOK_SECRET: &str = "demo-webhook-secret-0123456789";

/// Where the demo service points: the simulator, or a real project from the environment
/// (`GOLIOTH_PROJECT_ID` + `GOLIOTH_API_KEY`, optional `GOLIOTH_BASE_URL`).
struct GoliothTarget {
    base_url: String,
    project_id: String,
    api_key: String,
    simulator: Option<crate::simulator::SimulatorHandle>,
}

async fn golioth_target(opts: &UpOptions) -> Result<GoliothTarget> {
    if let (Ok(project_id), Ok(api_key)) = (
        std::env::var("GOLIOTH_PROJECT_ID"),
        std::env::var("GOLIOTH_API_KEY"),
    ) {
        return Ok(GoliothTarget {
            base_url: std::env::var("GOLIOTH_BASE_URL")
                .unwrap_or_else(|_| "https://api.golioth.io".into()),
            project_id,
            api_key,
            simulator: None,
        });
    }
    let sim = crate::simulator::Simulator::start(crate::simulator::SimOptions {
        bind: opts.simulator,
        ..Default::default()
    })
    .await
    .context("starting the Golioth simulator")?;
    sim.create_demo_project(DEMO_PROJECT, DEMO_API_KEY, opts.demo_devices)
        .map_err(|e| anyhow::anyhow!("seeding the demo project: {e:?}"))?;
    // `GS_SIM_LOST_ANSWERS=0.3`: that share of Golioth writes is applied and its answer lost
    // (half 503, half a dropped connection); also settable later with PUT /_sim/faults/rates.
    if let Some(share) = std::env::var("GS_SIM_LOST_ANSWERS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
    {
        sim.set_fault_rates(crate::simulator::FaultRates {
            seed: 1,
            lost_unavailable: share / 2.0,
            lost_dropped: share / 2.0,
            ..Default::default()
        });
        println!("simulator: {share} of Golioth writes lose their answer");
    }
    Ok(GoliothTarget {
        base_url: sim.base_url(),
        project_id: DEMO_PROJECT.into(),
        api_key: DEMO_API_KEY.into(),
        simulator: Some(sim),
    })
}

/// Create the demo service through the API (so its secrets are encrypted the normal way);
/// an existing one is kept. Returns its id.
async fn ensure_demo_service(base: &str, jwt: &str, target: &GoliothTarget) -> Result<String> {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/orgs/{DEMO_ORG_ID}/services");
    let list: serde_json::Value = client
        .get(&url)
        .bearer_auth(jwt)
        .send()
        .await?
        .json()
        .await?;
    if let Some(existing) = list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["name"] == DEMO_SERVICE))
    {
        let id = existing["id"].as_str().unwrap_or_default().to_owned();
        // Point it at this run's target (the simulator's port may differ between runs).
        client
            .patch(format!("{url}/{id}"))
            .bearer_auth(jwt)
            .json(
                &json!({"config": {"project_id": target.project_id, "base_url": target.base_url},
                          "api_key": target.api_key}),
            )
            .send()
            .await?;
        return Ok(id);
    }
    let resp = client
        .post(&url)
        .bearer_auth(jwt)
        .json(&json!({
            "name": DEMO_SERVICE,
            "config": {"project_id": target.project_id, "base_url": target.base_url,
                       "state_paths": {"battery": "battery", "signal": "signal", "location": "location"}},
            "api_key": target.api_key,
            "webhook_secret": DEMO_WEBHOOK_SECRET,
        }))
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("creating the demo service failed: {status} {body}");
    }
    Ok(body["id"].as_str().unwrap_or_default().to_owned())
}

/// Run the whole system locally until Ctrl-C.
/// The console link that signs in at once: the token and organization ride in the fragment,
/// which the console moves into `sessionStorage` and removes from the address bar.
pub fn console_link(base: &str, jwt: &str, org: &str) -> String {
    format!("{base}/console/#token={jwt}&org={org}")
}

pub async fn up(opts: UpOptions) -> Result<()> {
    let server = pgenv::locate().await?;
    println!("postgres: {}", server.origin);
    ensure_database(&server.admin_url, &opts.database).await?;
    let admin_db = pgenv::with_database(&server.admin_url, &opts.database)?;
    migrate::apply(&admin_db).await?;
    seed_demo(&admin_db).await?;

    let target = golioth_target(&opts).await?;
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
    set_default(
        "golioth_base_url",
        if target.base_url == "https://api.golioth.io" {
            target.base_url.clone()
        } else {
            format!("https://api.golioth.io,{}", target.base_url)
        },
    );

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
    let service = ensure_demo_service(&base, &jwt, &target).await?;
    let org_base = format!("{base}/api/v1/orgs/{DEMO_ORG_ID}");
    println!("golioth-sync is up at {base}");
    match &target.simulator {
        Some(sim) => println!(
            "Golioth simulator at {} with project {DEMO_PROJECT} ({} devices)",
            sim.base_url(),
            opts.demo_devices
        ),
        None => println!("Golioth: {} project {}", target.base_url, target.project_id),
    }
    println!("demo organization {DEMO_ORG_ID}, owner {DEMO_USER_ID}, service {service}");
    println!("development JWT (7 days):\n  {jwt}\n");
    println!(
        "web console (the token stays in the URL fragment, which the browser never sends):\n  {}\n",
        console_link(&base, &jwt, DEMO_ORG_ID)
    );
    println!("try:");
    println!("  curl -s {base}/health");
    println!("  curl -s -H 'authorization: Bearer {jwt}' {org_base}/services");
    println!(
        "  curl -s -X POST -H 'authorization: Bearer {jwt}' -H 'content-type: application/json' \\\n       -d '{{\"operation\":\"bidirectional\"}}' {org_base}/services/{service}/sync"
    );
    println!("  curl -s -H 'authorization: Bearer {jwt}' {org_base}/sync-runs");
    println!("  curl -s -H 'authorization: Bearer {jwt}' {org_base}/conflicts");
    println!(
        "  curl -s -X POST -H 'x-webhook-token: {DEMO_WEBHOOK_SECRET}' -H 'ce-subject: {}' \\\n       -H 'ce-source: <golioth device id>' -H 'ce-type: io.golioth.data.v1/.s/sensor' \\\n       -H 'content-type: application/json' -d '{{\"battery\":87}}' {base}/webhooks/golioth/{service}",
        target.project_id
    );
    println!(
        "  curl -s -X POST -H 'authorization: Bearer {}' {base}/internal/tick",
        app_vars["internal_token"]
    );
    println!("\nCtrl-C stops it.");
    tokio::signal::ctrl_c().await.ok();
    host.shutdown();
    drop(target);
    Ok(())
}
