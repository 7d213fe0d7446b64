//! The native host's command line (clap derive), shared by the `golioth-sync` binary and the test
//! suite's killable host process: `serve` runs the routes of `spin.toml` with variables from
//! `SPIN_VARIABLE_*`; `migrate` applies migrations; `rotate-keys` re-encrypts stored credentials
//! under the current key; `up` is what `cargo xtask up` runs. `--help` and `--version` work on the
//! binary and on each command; a usage error prints the usage and exits with 2, like cargo.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::manifest::{self, Manifest};
use crate::server::{self, HostOptions};

/// Keeps a Postgres device registry and a Golioth project in step: the native host of the Spin
/// app (same routes, same handlers), its migrations, key rotation and a local development system.
#[derive(Debug, Parser)]
#[command(name = "golioth-sync", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The binary's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve spin.toml's routes natively (application variables from SPIN_VARIABLE_*); runs the
    /// scheduler's tick in-process. Prints `listening on <url>` once it accepts connections and a
    /// JSON `shutdown` line on SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Apply the database migrations (as the owner role).
    Migrate(DatabaseArgs),
    /// Re-encrypt stored Golioth credentials under the current key: the new key ring comes from
    /// SPIN_VARIABLE_ENCRYPTION_KEY (current key first, `id:base64,…`); connect as the owner role.
    RotateKeys(DatabaseArgs),
    /// The whole system locally (what `cargo xtask up` runs): Postgres found or started,
    /// migrations, a demo organization and service on the Golioth simulator, the host, a
    /// development JWT and a console link.
    Up(UpArgs),
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the line `listening on …` names it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Worker threads, each a current-thread runtime like a Spin instance.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Seconds between in-process scheduler ticks; 0 turns the timer off.
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub tick_seconds: u64,
    /// The Spin manifest whose routes and variables to serve (default: the repository's spin.toml).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// The database to work on.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Postgres URL of the owner role.
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// Options of `up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address the host listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
}

/// Parse a command line (without the program name) and run it. `--help`, `--version` and usage
/// errors end the process here, with clap's message and exit code (0, or 2 for a usage error).
pub fn run(args: Vec<String>) -> Result<()> {
    run_args(args)
}

/// [`run`] for any arguments (the binary passes `args_os`, so a non-UTF-8 argument is a usage
/// error, not a panic).
pub fn run_args<T: Into<OsString>>(args: impl IntoIterator<Item = T>) -> Result<()> {
    let argv =
        std::iter::once(OsString::from("golioth-sync")).chain(args.into_iter().map(Into::into));
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| e.exit());
    execute(cli)
}

/// Run a parsed command line.
pub fn execute(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(a) => serve(&rt, a),
        Command::Migrate(a) => {
            rt.block_on(crate::migrate::apply(&a.database_url))?;
            println!("migrations applied");
            Ok(())
        }
        Command::RotateKeys(a) => {
            let ring = std::env::var("SPIN_VARIABLE_ENCRYPTION_KEY").context(
                "SPIN_VARIABLE_ENCRYPTION_KEY: the new ring, current key first (id:base64,…)",
            )?;
            let report = rt.block_on(crate::keys::rotate(
                &a.database_url,
                &shared::base::settings::Secret::new(ring),
            ))?;
            println!(
                "examined {}, re-encrypted {}, already current {}, skipped (changed meanwhile) {}",
                report.examined, report.reencrypted, report.already_current, report.skipped
            );
            Ok(())
        }
        Command::Up(a) => rt.block_on(crate::dev::up(crate::dev::UpOptions {
            listen: a.listen,
            ..crate::dev::UpOptions::default()
        })),
    }
}

fn serve(rt: &tokio::runtime::Runtime, a: ServeArgs) -> Result<()> {
    let manifest = Manifest::load(&a.manifest.unwrap_or_else(manifest::default_path))?;
    let env: HashMap<String, String> = std::env::vars().collect();
    let vars = manifest.resolve_variables(&env)?;
    let host = server::start(
        &manifest,
        &vars,
        HostOptions {
            listen: a.listen,
            threads: usize::from(a.threads),
            tick_interval: (a.tick_seconds > 0).then(|| Duration::from_secs(a.tick_seconds)),
            ..HostOptions::default()
        },
    )?;
    println!("listening on {}", host.base_url());
    // Serve until interrupted, then say what this process did (benchmarks read it).
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("golioth-sync").chain(args.iter().copied()))
    }

    #[test]
    fn the_flags_xtask_and_the_tests_use_parse() {
        let cli = parse(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--tick-seconds",
            "0",
            "--manifest",
            "spin.toml",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(a.listen.port(), 0);
        assert_eq!((a.threads, a.tick_seconds), (1, 0));
        assert_eq!(
            a.manifest.as_deref(),
            Some(std::path::Path::new("spin.toml"))
        );
        let Command::Serve(d) = parse(&["serve"]).unwrap().command else {
            panic!()
        };
        assert_eq!((d.listen.port(), d.threads, d.tick_seconds), (3000, 2, 60));
        let Command::Migrate(m) = parse(&["migrate", "--database-url", "postgres://x/y"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(m.database_url, "postgres://x/y");
        let Command::Up(u) = parse(&["up", "--listen", "127.0.0.1:3001"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(u.listen.port(), 3001);
        assert!(matches!(
            parse(&["rotate-keys", "--database-url", "postgres://x/y"])
                .unwrap()
                .command,
            Command::RotateKeys(_)
        ));
    }

    #[test]
    fn help_version_and_usage_errors_are_clap_errors_with_their_exit_codes() {
        use clap::error::ErrorKind;
        for (args, kind, code) in [
            (&["--help"][..], ErrorKind::DisplayHelp, 0),
            (&["up", "--help"][..], ErrorKind::DisplayHelp, 0),
            (&["serve", "--version"][..], ErrorKind::DisplayVersion, 0),
            (&["--bogus"][..], ErrorKind::UnknownArgument, 2),
            (
                &["serve", "--threads", "0"][..],
                ErrorKind::ValueValidation,
                2,
            ),
            (
                &["serve", "--listen", "nowhere"][..],
                ErrorKind::ValueValidation,
                2,
            ),
            (&["frobnicate"][..], ErrorKind::InvalidSubcommand, 2),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!((e.kind(), e.exit_code()), (kind, code), "{args:?}");
        }
    }
}
