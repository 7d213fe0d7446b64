//! The store: every SQL statement of the service lives under this module, and only here.
//! Statements follow the Spin Postgres rules of DESIGN §2: exact parameter types or text casts,
//! no `timestamptz` in result sets (text or epoch ms instead), `jsonb` only, bulk writes through
//! one `jsonb` parameter.
//! Uses `base::ports` (the `Db` port) and the row and plan types of
//! `domain::{sync, webhook}`; nothing above.

use crate::base::ports::{Db, DbError};

/// Check that the database answers.
pub async fn ping(db: &dyn Db) -> Result<(), DbError> {
    let rows = db.query("SELECT 1::int4 AS one", &[]).await?;
    match rows.first().map(|r| r.get::<i32>("one")) {
        Some(Ok(1)) => Ok(()),
        _ => Err(DbError::Decode("unexpected ping result".into())),
    }
}

pub mod assignments;
pub mod conflicts;
pub mod members;
pub mod runs;
pub mod services;
pub mod sync;
pub mod sync_log;
pub mod webhooks;

use futures::future::LocalBoxFuture;
use uuid::Uuid;

use crate::base::ports::{Param, transaction};

/// Run `f` in a transaction scoped to organization `org`: the first statement sets the
/// transaction-local `app.organization_id` that every row level security policy keys on.
pub async fn in_org<'a, T, E, F>(db: &'a dyn Db, org: Uuid, f: F) -> Result<T, E>
where
    F: FnOnce(&'a dyn Db) -> LocalBoxFuture<'a, Result<T, E>> + 'a,
    E: From<DbError> + 'a,
    T: 'a,
{
    transaction(db, move |tx| {
        Box::pin(async move {
            tx.execute(
                "SELECT set_config('app.organization_id', $1, true)",
                &[Param::Text(org.to_string())],
            )
            .await?;
            f(tx).await
        })
    })
    .await
}
