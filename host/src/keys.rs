//! Key rotation: re-encrypt every stored service credential under the current key of the
//! `encryption_key` ring (first entry), while older keys in the ring still decrypt. Runs on the
//! privileged (owner) connection, across organizations, in pages; each row is a compare-and-set.

use anyhow::{Context, Result};
use shared::base::settings::Secret;
use shared::domain::crypto::{Credentials, Keyring};
use shared::domain::store;
use shared::runtime::native::PgPool;

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    pub examined: u64,
    pub reencrypted: u64,
    pub already_current: u64,
    /// Rows changed concurrently (left for the next run).
    pub skipped: u64,
}

/// Re-encrypt every credential not yet under the ring's current key.
pub async fn rotate(owner_db_url: &str, ring: &Secret) -> Result<RotationReport> {
    let ring = Keyring::parse(ring).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pool = PgPool::new(owner_db_url, 2).map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = pool.lazy();
    let mut report = RotationReport::default();
    let mut after = None;
    loop {
        let page = store::services::credentials_page(&db, after, 200)
            .await
            .context("reading credentials")?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (id, org, sealed) in page {
            report.examined += 1;
            let key_id =
                Keyring::key_id_of(&sealed).map_err(|e| anyhow::anyhow!("service {id}: {e}"))?;
            if key_id == ring.current_id() {
                report.already_current += 1;
                continue;
            }
            let creds = Credentials::open(&ring, org, id, &sealed)
                .map_err(|e| anyhow::anyhow!("service {id}: {e}"))?;
            let resealed = creds
                .seal(&ring, org, id)
                .map_err(|e| anyhow::anyhow!("service {id}: {e}"))?;
            if store::services::replace_credentials(&db, id, &sealed, &resealed).await? {
                report.reencrypted += 1;
            } else {
                report.skipped += 1;
            }
        }
    }
    Ok(report)
}
