//! GET /api/v1/me: who the bearer token names (the user id, and the `name` / `email` claims when
//! the platform's token carries them) and the organizations that user belongs to, with each one's
//! name and the user's role. Any valid token may ask; the answer is only about its own user, so
//! the console can show names instead of ids and let a member of several organizations switch.

use http::StatusCode;
use serde_json::json;

use super::auth;
use super::{ApiResult, Ctx, Request, json_response};
use crate::api::routing::Params;
use crate::app::access;

pub async fn get(req: &Request, _params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let me = auth::authenticate(req, ctx)?;
    let orgs = access::memberships(ctx, me.user_id).await?;
    let mut user = json!({ "id": me.user_id });
    if let Some(name) = me.name {
        user["name"] = json!(name);
    }
    if let Some(email) = me.email {
        user["email"] = json!(email);
    }
    let organizations: Vec<_> = orgs
        .iter()
        .map(|m| json!({"id": m.org_id, "name": m.name, "role": m.role.as_str()}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "user": user, "organizations": organizations }),
    ))
}
