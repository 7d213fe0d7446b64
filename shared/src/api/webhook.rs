//! POST /webhooks/golioth/:service_id: authenticated, idempotent, order-safe Pipeline ingestion.
//! The rules live in `crate::webhook` (pure) and `store::webhooks` (two statements); this maps
//! the outcome to HTTP:
//! - 200 `{"status": "processed" | "unmatched", "delivery_id", "refresh_queued"}`;
//! - 200 `{"status": "duplicate"}` for a key already stored (nothing changes);
//! - 401 (one body for unknown service, inactive service, bad credentials, wrong project),
//!   413, 415, 400 as `application/problem+json`.

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::services::keyring;
use super::{ApiResult, Ctx, Request, json_response};
use super::{ingest_batch, service_cache};
use crate::crypto::{Credentials, Keyring};
use crate::error::ApiError;
use crate::routing::Params;
use crate::service::ServiceConfig;
use crate::store::webhooks::{self, Ingested, Rejected, WebhookService};
use crate::webhook::{self as wh, MAX_BODY_BYTES, Rejection, Target};

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

enum Outcome {
    UnknownService,
    Rejected(Rejection),
    Ingested(Ingested),
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
    let ring = keyring(ctx)?;
    // At most two statements, each its own transaction (see `store::webhooks`): read the
    // service (or take it from `service_cache`), then (authenticated in memory) store and apply
    // the delivery, or file its rejection. A cached service that would reject is read again.
    let mut judged = None;
    if let Some(svc) = service_cache::get(service, received) {
        match judge(req, service, &svc, &ring, received) {
            Ok(Ok(plan)) => judged = Some((svc, Ok(plan))),
            _ => service_cache::forget(service),
        }
    }
    // Reading the service checks out this request's database connection.
    let read = judged.is_none();
    if read && let Some(svc) = webhooks::service(ctx.db, service).await? {
        let svc = Arc::new(svc);
        service_cache::put(service, received, svc.clone());
        let verdict = judge(req, service, &svc, &ring, received)?;
        judged = Some((svc, verdict));
    }
    let outcome = match judged {
        None => Outcome::UnknownService,
        Some((svc, Ok(plan))) => {
            match ingest_batch::ingest(ctx.db, svc.org_id, service, plan, read).await {
                Ok(done) => Outcome::Ingested(done),
                // The service was deleted after it was read (a foreign key violation):
                // answered as if it had never existed.
                Err(e) if e.sqlstate() == Some("23503") => {
                    service_cache::forget(service);
                    Outcome::UnknownService
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some((svc, Err(rejection))) => {
            let content_type = rejection
                .authenticated()
                .then(|| {
                    req.headers()
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.chars().take(100).collect())
                })
                .flatten();
            let record = Rejected {
                received_at: received,
                reason: rejection.to_string(),
                content_type,
            };
            webhooks::insert_rejected(ctx.db, svc.org_id, service, &record).await?;
            crate::log::warn(
                "webhook delivery rejected",
                json!({"service_id": service, "reason": record.reason}),
            );
            Outcome::Rejected(rejection)
        }
    };
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

/// Authenticate and parse a delivery for the service as read: the plan to store, or why it is
/// refused.
fn judge(
    req: &Request,
    service: Uuid,
    svc: &WebhookService,
    ring: &Keyring,
    received: DateTime<Utc>,
) -> Result<Result<wh::Plan, Rejection>, ApiError> {
    if !svc.is_active {
        return Ok(Err(Rejection::Inactive));
    }
    // Deserialized from the borrowed value: no copy of the whole config.
    let config = ServiceConfig::deserialize(&svc.config).map_err(ApiError::internal)?;
    let creds = match &svc.credentials {
        None => Credentials::default(),
        Some(bytes) => {
            Credentials::open(ring, svc.org_id, service, bytes).map_err(ApiError::internal)?
        }
    };
    let secrets: Vec<&str> = [&creds.webhook_secret, &creds.webhook_secret_previous]
        .into_iter()
        .filter_map(|s| s.as_deref())
        .collect();
    let target = Target {
        service_id: service,
        config: &config,
        secrets: &secrets,
    };
    Ok(wh::plan(&target, req.headers(), req.body(), received))
}
