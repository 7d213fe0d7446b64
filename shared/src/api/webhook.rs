//! POST /webhooks/golioth/:service_id: authenticated, idempotent, order-safe Pipeline ingestion.
//! The use case is [`crate::app::ingest`] (rules in `domain::webhook`, statements in
//! `store::webhooks`); this module maps its outcome to HTTP:
//! - 200 `{"status": "processed" | "unmatched", "delivery_id", "refresh_queued"}`;
//! - 200 `{"status": "duplicate"}` for a key already stored (nothing changes);
//! - 401 (one body for unknown service, inactive service, bad credentials, wrong project),
//!   413, 415, 400 as `application/problem+json`.

use http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use super::routing::Params;
use super::{ApiResult, Ctx, Request, json_response};
use crate::app::ingest::{self, Delivery, Outcome};
use crate::base::error::ApiError;
use crate::domain::store::webhooks::Ingested;
use crate::domain::webhook::{MAX_BODY_BYTES, Rejection};

/// The one answer for every authentication failure, so nothing tells which services exist.
fn unauthorized() -> ApiError {
    ApiError::unauthorized("invalid webhook credentials")
}

fn rejection_error(r: &Rejection) -> ApiError {
    match r {
        Rejection::TooLarge(_) => ApiError::payload_too_large(MAX_BODY_BYTES),
        Rejection::UnsupportedMediaType(_) => {
            ApiError::unsupported_media_type("send application/json or application/cbor")
        }
        Rejection::Malformed(e) => ApiError::bad_request(e.to_string()),
        Rejection::Inactive
        | Rejection::Auth(_)
        | Rejection::MissingSubject
        | Rejection::WrongProject(_) => unauthorized(),
    }
}

pub async fn receive(req: &Request, params: &Params, ctx: &Ctx<'_>) -> ApiResult {
    let received = ctx.clock.now();
    let too_large = req.body().len() > MAX_BODY_BYTES;
    let Some(service) = params
        .get("service_id")
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        return Err(if too_large {
            rejection_error(&Rejection::TooLarge(req.body().len()))
        } else {
            unauthorized()
        });
    };
    let delivery = Delivery {
        service_id: service,
        headers: req.headers(),
        body: req.body(),
        received,
    };
    let outcome = ingest::receive(ctx, &delivery).await?;
    match outcome {
        Outcome::UnknownService if too_large => {
            Err(rejection_error(&Rejection::TooLarge(req.body().len())))
        }
        Outcome::UnknownService => Err(unauthorized()),
        Outcome::Rejected(r) => Err(rejection_error(&r)),
        Outcome::Ingested(Ingested::Duplicate) => Ok(json_response(
            StatusCode::OK,
            &json!({"status": "duplicate"}),
        )),
        // `receive` reads a stale service again; this only names the case.
        Outcome::Ingested(Ingested::StaleService) => Err(ApiError::unavailable(
            "the service changed while the delivery was being stored; send it again",
        )),
        Outcome::Ingested(Ingested::Stored {
            delivery_id,
            status,
            refresh_queued,
        }) => Ok(json_response(
            StatusCode::OK,
            &json!({"status": status, "delivery_id": delivery_id,
                    "refresh_queued": refresh_queued}),
        )),
    }
}
