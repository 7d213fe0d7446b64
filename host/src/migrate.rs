//! Migrations: the files in `migrations/` (`NNNN_name.up.sql` / `.down.sql`) applied and reverted
//! by sqlx's migrator, over an admin (owner) connection. The hosts never run DDL as the app role.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

/// The workspace's `migrations/` directory.
pub fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations")
}

async fn migrator() -> Result<Migrator> {
    Migrator::new(migrations_dir())
        .await
        .context("loading migrations/")
}

async fn pool(url: &str) -> Result<sqlx::PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .context("connecting for migrations")
}

/// Apply every pending migration.
pub async fn apply(url: &str) -> Result<()> {
    let pool = pool(url).await?;
    migrator()
        .await?
        .run(&pool)
        .await
        .context("applying migrations")?;
    pool.close().await;
    Ok(())
}

/// Revert every applied migration (down files, newest first).
pub async fn revert_all(url: &str) -> Result<()> {
    let pool = pool(url).await?;
    migrator()
        .await?
        .undo(&pool, 0)
        .await
        .context("reverting migrations")?;
    pool.close().await;
    Ok(())
}

/// A fingerprint of the migration files, so a template database built from other files is
/// never reused.
pub fn fingerprint() -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut entries: Vec<_> = std::fs::read_dir(migrations_dir())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    entries.sort();
    let mut h = Sha256::new();
    for p in entries {
        h.update(
            p.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        );
        h.update(std::fs::read(&p)?);
    }
    Ok(hex::encode(&h.finalize()[..6]))
}
