//! Organization roles and membership: the roles a member can hold, ordered, the role of a user
//! in an organization and the organizations a user belongs to (read through the store). Authorization itself — who may call which
//! route — is the HTTP layer's (`api::auth`); this is the data it decides on. Uses `domain::store`.

use std::fmt;

use uuid::Uuid;

use crate::base::ctx::Ctx;
use crate::base::error::ApiError;
use crate::domain::store;

/// Roles, weakest first: viewer reads; member also syncs and resolves; admin and owner also
/// manage services and credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The role of `user` in organization `org`, or `None` when they are not a member (or hold a
/// role this version does not know).
pub async fn role(ctx: &Ctx<'_>, org: Uuid, user: Uuid) -> Result<Option<Role>, ApiError> {
    let role = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::members::role(tx, org, user).await })
    })
    .await?;
    Ok(role.and_then(|r| Role::parse(&r)))
}

/// One organization a user belongs to, as `GET /api/v1/me` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub org_id: Uuid,
    pub name: String,
    pub role: Role,
}

/// The organizations `user` belongs to (at most 100), oldest membership first. The cross-tenant
/// lookup returns ids and roles only; each name is read in a transaction scoped to its
/// organization, so row level security still decides what is visible. Memberships with a role
/// this version does not know are left out, as `role` leaves them out.
pub async fn memberships(ctx: &Ctx<'_>, user: Uuid) -> Result<Vec<Membership>, ApiError> {
    let found = store::members::user_orgs(ctx.db, user).await?;
    let mut out = Vec::with_capacity(found.len());
    for (org, role) in found {
        let Some(role) = Role::parse(&role) else {
            continue;
        };
        let name = store::in_org(ctx.db, org, |tx| {
            Box::pin(async move { store::members::org_name(tx, org).await })
        })
        .await?;
        if let Some(name) = name {
            out.push(Membership {
                org_id: org,
                name,
                role,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(
            Role::Viewer < Role::Member && Role::Member < Role::Admin && Role::Admin < Role::Owner
        );
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }
}
