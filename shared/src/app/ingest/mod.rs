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
/// in memory) store and apply the delivery as of the service version it was judged under, or
/// file its rejection. A kept service that would reject, or that changed since it was read, is
/// read again.
pub async fn receive(ctx: &Ctx<'_>, d: &Delivery<'_>) -> Result<Outcome, ApiError> {
    let service = d.service_id;
    let ring = keyring(ctx)?;
    let mut cached = service_cache::get(service, d.received);
    let mut turn = None;
    if cached.is_none() {
        // Concurrent misses read the service once (see `service_cache`).
        turn = Some(service_cache::read_turn().await);
        cached = service_cache::get(service, d.received);
    }
    // A kept copy that would refuse, or that the store finds stale, is read again: at most
    // twice more, then the service is changing faster than deliveries can be judged.
    for _ in 0..3 {
        let mut judged = None;
        if let Some(svc) = cached.take() {
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
        drop(turn.take());
        let outcome = match judged {
            None => return Ok(Outcome::UnknownService),
            Some((svc, Ok(plan))) => {
                let version: Arc<str> = Arc::from(svc.version.as_str());
                batch::ingest(ctx.db, svc.org_id, service, version, plan, read).await
            }
            Some((svc, Err(rejection))) => return reject(ctx, d, &svc, rejection).await,
        };
        match outcome {
            Ok(Ingested::StaleService) => service_cache::forget(service),
            Ok(done) => return Ok(Outcome::Ingested(done)),
            // The service was deleted after it was read (a foreign key violation): answered
            // as if it had never existed.
            Err(e) if e.sqlstate() == Some("23503") => {
                service_cache::forget(service);
                return Ok(Outcome::UnknownService);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::unavailable(
        "the service changed while the delivery was being stored; send it again",
    ))
}

/// File a refused delivery against its service and log why.
async fn reject(
    ctx: &Ctx<'_>,
    d: &Delivery<'_>,
    svc: &WebhookService,
    rejection: Rejection,
) -> Result<Outcome, ApiError> {
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
    webhooks::insert_rejected(ctx.db, svc.org_id, d.service_id, &record).await?;
    crate::base::log::warn(
        "webhook delivery rejected",
        json!({"service_id": d.service_id, "reason": record.reason}),
    );
    Ok(Outcome::Rejected(rejection))
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
