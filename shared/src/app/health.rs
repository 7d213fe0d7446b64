//! Whether the service can do its work: the database answers. Uses `domain::store`.

use crate::base::ctx::Ctx;
use crate::base::ports::DbError;
use crate::domain::store;

/// Check that the database answers a trivial query.
pub async fn check(ctx: &Ctx<'_>) -> Result<(), DbError> {
    store::ping(ctx.db).await
}
