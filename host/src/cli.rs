//! The native host's command line, shared by the `golioth-sync` binary and the test suite's
//! killable host process: `serve` runs the routes of `spin.toml` with variables from
//! `SPIN_VARIABLE_*`; `migrate` applies migrations; `rotate-keys` re-encrypts stored credentials
//! under the current key; `up` is what `cargo xtask up` runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::manifest::{self, Manifest};
use crate::server::{self, HostOptions};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Run one command line (without the program name).
pub fn run(args: Vec<String>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("serve") => {
            let listen: SocketAddr = arg(&args, "--listen")
                .unwrap_or_else(|| "127.0.0.1:3000".into())
                .parse()
                .context("--listen")?;
            let threads = arg(&args, "--threads")
                .map_or(Ok(2), |t| t.parse())
                .context("--threads")?;
            let tick = arg(&args, "--tick-seconds")
                .map_or(Ok(60), |t| t.parse::<u64>())
                .context("--tick-seconds")?;
            let manifest = Manifest::load(
                &arg(&args, "--manifest").map_or_else(manifest::default_path, Into::into),
            )?;
            let env: HashMap<String, String> = std::env::vars().collect();
            let vars = manifest.resolve_variables(&env)?;
            let host = server::start(
                &manifest,
                &vars,
                HostOptions {
                    listen,
                    threads,
                    tick_interval: (tick > 0).then(|| Duration::from_secs(tick)),
                    ..HostOptions::default()
                },
            )?;
            println!("listening on {}", host.base_url());
            // Serve until interrupted, then say what this process did (benchmarks read it).
            rt.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                Ok::<_, anyhow::Error>(())
            })?;
            host.shutdown();
            println!(
                "{}",
                serde_json::json!({"event": "shutdown", "db_statements": shared::runtime::native::statements_sent()})
            );
            Ok(())
        }
        Some("migrate") => {
            let url = arg(&args, "--database-url")
                .or_else(|| std::env::var("DATABASE_URL").ok())
                .context("--database-url or DATABASE_URL")?;
            rt.block_on(crate::migrate::apply(&url))?;
            println!("migrations applied");
            Ok(())
        }
        Some("rotate-keys") => {
            let url = arg(&args, "--database-url")
                .or_else(|| std::env::var("DATABASE_URL").ok())
                .context("--database-url (the owner role) or DATABASE_URL")?;
            let ring = std::env::var("SPIN_VARIABLE_ENCRYPTION_KEY").context(
                "SPIN_VARIABLE_ENCRYPTION_KEY: the new ring, current key first (id:base64,…)",
            )?;
            let report = rt.block_on(crate::keys::rotate(
                &url,
                &shared::base::settings::Secret::new(ring),
            ))?;
            println!(
                "examined {}, re-encrypted {}, already current {}, skipped (changed meanwhile) {}",
                report.examined, report.reencrypted, report.already_current, report.skipped
            );
            Ok(())
        }
        Some("up") => rt.block_on(crate::dev::up(crate::dev::UpOptions::default())),
        _ => bail!(
            "usage: golioth-sync serve [--listen ADDR] [--threads N] [--tick-seconds S] | migrate [--database-url URL] | rotate-keys [--database-url URL] | up"
        ),
    }
}
