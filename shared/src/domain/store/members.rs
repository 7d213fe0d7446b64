//! Organization membership: the caller's role in an organization.

use uuid::Uuid;

use crate::base::ports::{Db, DbError, Param};

/// The role of `user` in the organization the transaction is scoped to, if a member.
pub async fn role(db: &dyn Db, org: Uuid, user: Uuid) -> Result<Option<String>, DbError> {
    let rows = db
        .query(
            "SELECT role FROM organization_members WHERE organization_id = $1 AND user_id = $2",
            &[Param::Uuid(org), Param::Uuid(user)],
        )
        .await?;
    rows.first().map(|r| r.get::<String>("role")).transpose()
}
