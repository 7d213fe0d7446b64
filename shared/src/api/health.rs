//! `GET /health`: answers 200 when the database answers, 503 (problem+json) when it does not.

use http::StatusCode;
use serde_json::json;

use super::{ApiResult, Ctx, json_response};
use crate::app::health;
use crate::base::error::ApiError;

pub async fn health(ctx: &Ctx<'_>) -> ApiResult {
    match health::check(ctx).await {
        Ok(()) => Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ok", "database": "ok"}),
        )),
        Err(e) => {
            crate::base::log::warn("health check failed", json!({"error": e.to_string()}));
            Err(ApiError::unavailable("the database is not reachable")
                .with_extension("database", json!("unavailable")))
        }
    }
}
