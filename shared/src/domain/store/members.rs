//! Organization membership: the caller's role in an organization, the organizations a user
//! belongs to (across tenants, through a SECURITY DEFINER function) and an organization's name.

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

/// The organizations `user` belongs to and their role in each (the SECURITY DEFINER
/// `gs_user_orgs`: a user's memberships span tenants; it returns ids and roles only). Not in a
/// tenant transaction.
pub async fn user_orgs(db: &dyn Db, user: Uuid) -> Result<Vec<(Uuid, String)>, DbError> {
    let rows = db
        .query(
            "SELECT organization_id, role FROM gs_user_orgs($1)",
            &[Param::Uuid(user)],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.get::<Uuid>("organization_id")?, r.get::<String>("role")?)))
        .collect()
}

/// The name of the organization the transaction is scoped to (read under its RLS).
pub async fn org_name(db: &dyn Db, org: Uuid) -> Result<Option<String>, DbError> {
    let rows = db
        .query(
            "SELECT name FROM organizations WHERE id = $1",
            &[Param::Uuid(org)],
        )
        .await?;
    rows.first().map(|r| r.get::<String>("name")).transpose()
}
