//! The store: every SQL statement of the service lives under this module, and only here.
//! Statements follow the Spin Postgres rules of DESIGN §2: exact parameter types or text casts,
//! no `timestamptz` in result sets (text or epoch ms instead), `jsonb` only, bulk writes through
//! one `jsonb` parameter.

use crate::ports::{Db, DbError};

/// Check that the database answers.
pub async fn ping(db: &dyn Db) -> Result<(), DbError> {
    let rows = db.query("SELECT 1::int4 AS one", &[]).await?;
    match rows.first().map(|r| r.get::<i32>("one")) {
        Some(Ok(1)) => Ok(()),
        _ => Err(DbError::Decode("unexpected ping result".into())),
    }
}
