//! Organization roles and membership: the roles a member can hold, ordered, and the role of a
//! user in an organization (read through the store). Authorization itself — who may call which
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
