//! Golioth Pipeline ingestion: one delivery, from bytes to a stored, applied row (or a recorded
//! refusal). The rules of a delivery live in [`crate::domain::webhook`] (pure verify / parse /
//! plan) and its two statements in `store::webhooks`; this unit reads the service (or takes it
//! from [`crate::app::service_cache`]), authenticates and plans the delivery in memory, stores it through the
//! group commit of [`batch`], and files refusals. The HTTP layer maps the [`Outcome`] to a status.
//!
//! Uses `domain` (webhook, store, crypto, service), `app::{services, service_cache}` and `base`.

pub mod batch;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::app::service_cache;
use crate::app::services::keyring;
use crate::base::ctx::Ctx;
use crate::base::error::ApiError;
use crate::domain::crypto::{Credentials, Keyring};
use crate::domain::service::ServiceConfig;
use crate::domain::store::webhooks::{self, Ingested, Rejected, WebhookService};
use crate::domain::webhook::{self as wh, Rejection, Target};

/// A delivery as received: the service it is addressed to, its headers and body, and when.
pub struct Delivery<'a> {
    pub service_id: Uuid,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    pub received: DateTime<Utc>,
}

/// What became of a delivery.
#[derive(Debug)]
pub enum Outcome {
    /// No such service (or it was deleted while the delivery was stored).
    UnknownService,
    /// Refused (inactive service, bad credentials, wrong project, malformed body); the refusal
    /// was recorded against the service.
    Rejected(Rejection),
    /// Stored and applied, or recognised as a duplicate.
    Ingested(Ingested),
}

/// Receive one delivery. At most two statements, each its own transaction (see
/// `store::webhooks`): read the service (or take it from `service_cache`), then (authenticated
/// in memory) store and apply the delivery, or file its rejection. A cached service that would
/// reject is read again.
pub async fn receive(ctx: &Ctx<'_>, d: &Delivery<'_>) -> Result<Outcome, ApiError> {
    let service = d.service_id;
    let ring = keyring(ctx)?;
    let mut judged = None;
    if let Some(svc) = service_cache::get(service, d.received) {
        match judge(d, &svc, &ring) {
            Ok(Ok(plan)) => judged = Some((svc, Ok(plan))),
            _ => service_cache::forget(service),
        }
    }
    // Reading the service checks out this request's database connection.
    let read = judged.is_none();
    if read && let Some(svc) = webhooks::service(ctx.db, service).await? {
        let svc = Arc::new(svc);
        service_cache::put(service, d.received, svc.clone());
        let verdict = judge(d, &svc, &ring)?;
        judged = Some((svc, verdict));
    }
    match judged {
        None => Ok(Outcome::UnknownService),
        Some((svc, Ok(plan))) => match batch::ingest(ctx.db, svc.org_id, service, plan, read).await
        {
            Ok(done) => Ok(Outcome::Ingested(done)),
            // The service was deleted after it was read (a foreign key violation): answered
            // as if it had never existed.
            Err(e) if e.sqlstate() == Some("23503") => {
                service_cache::forget(service);
                Ok(Outcome::UnknownService)
            }
            Err(e) => Err(e.into()),
        },
        Some((svc, Err(rejection))) => {
            let content_type = rejection
                .authenticated()
                .then(|| {
                    d.headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.chars().take(100).collect())
                })
                .flatten();
            let record = Rejected {
                received_at: d.received,
                reason: rejection.to_string(),
                content_type,
            };
            webhooks::insert_rejected(ctx.db, svc.org_id, service, &record).await?;
            crate::base::log::warn(
                "webhook delivery rejected",
                json!({"service_id": service, "reason": record.reason}),
            );
            Ok(Outcome::Rejected(rejection))
        }
    }
}

/// Authenticate and parse a delivery for the service as read: the plan to store, or why it is
/// refused.
fn judge(
    d: &Delivery<'_>,
    svc: &WebhookService,
    ring: &Keyring,
) -> Result<Result<wh::Plan, Rejection>, ApiError> {
    if !svc.is_active {
        return Ok(Err(Rejection::Inactive));
    }
    // Deserialized from the borrowed value: no copy of the whole config.
    let config = ServiceConfig::deserialize(&svc.config).map_err(ApiError::internal)?;
    let creds = match &svc.credentials {
        None => Credentials::default(),
        Some(bytes) => {
            Credentials::open(ring, svc.org_id, d.service_id, bytes).map_err(ApiError::internal)?
        }
    };
    let secrets: Vec<&str> = [&creds.webhook_secret, &creds.webhook_secret_previous]
        .into_iter()
        .filter_map(|s| s.as_deref())
        .collect();
    let target = Target {
        service_id: d.service_id,
        config: &config,
        secrets: &secrets,
    };
    Ok(wh::plan(&target, d.headers, d.body, d.received))
}
