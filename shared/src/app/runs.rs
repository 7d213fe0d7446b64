//! Sync runs as the operator sees them: start one (or join the active one) and drive it within
//! the request's budget, list, inspect and cancel runs, a service's stats and the sync log.
//! Driving a run is the engine's ([`crate::app::engine`]); this unit decides whether a run may
//! start and reads what runs left behind. Uses `app::{engine, services}`, `domain::store`, `base`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::app::engine;
use crate::app::services::{check_usable, load};
use crate::base::ctx::Ctx;
use crate::base::error::ApiError;
use crate::domain::store::sync_log::{LogEntryRow, LogFilter};
use crate::domain::store::{self, runs::NewRun, runs::RunFilter, runs::RunRow};

/// The operations a run can perform.
pub const OPERATIONS: &[&str] = &["import", "export", "bidirectional"];

/// A run to start, as validated by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRun {
    /// One of [`OPERATIONS`].
    pub operation: String,
    pub device_ids: Option<Vec<Uuid>>,
    /// Plan and report without writing to either side.
    pub dry_run: bool,
    /// Run even if the service is inactive, and do not wait for a queued run's backoff.
    pub force: bool,
}

impl StartRun {
    /// The run's stored `params`.
    fn params(&self) -> Value {
        let mut m = Map::new();
        if let Some(ids) = &self.device_ids {
            m.insert("device_ids".into(), json!(ids));
        }
        if self.dry_run {
            m.insert("dry_run".into(), json!(true));
        }
        if self.force {
            m.insert("force".into(), json!(true));
        }
        Value::Object(m)
    }
}

/// Start a run of the service (or, when one is already active, return that one — made due at
/// once when `force`), then drive it for up to the slice budget. Answers the run as it stands
/// afterwards and whether it existed before.
pub async fn start(
    ctx: &Ctx<'_>,
    org: Uuid,
    user: Uuid,
    service_id: Uuid,
    request: &StartRun,
) -> Result<(RunRow, bool), ApiError> {
    let service = load(ctx, org, service_id).await?;
    if !service.is_active && !request.force {
        return Err(ApiError::conflict(
            "the service is inactive; activate it or pass force: true",
        ));
    }
    // Refuse early what no attempt could do (no key, unusable config).
    check_usable(ctx, &service)?;
    let now = ctx.clock.now();
    let new = NewRun {
        org_id: org,
        service_id,
        operation: request.operation.clone(),
        params: request.params(),
        requested_by: Some(user),
        now,
    };
    let force = request.force;
    let (run, existing) = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move {
            if let Some(run) = store::runs::create(tx, &new).await? {
                return Ok::<_, ApiError>((run, false));
            }
            let run = store::runs::active_full(tx, org, service_id)
                .await?
                .ok_or_else(|| ApiError::conflict("another run just ended; try again"))?;
            if force {
                store::runs::make_due(tx, org, run.id, now).await?;
            }
            Ok((run, true))
        })
    })
    .await?;
    let budget = Duration::from_millis(ctx.settings.slice_budget_ms);
    engine::process_run(ctx, org, run.id, now, budget).await?;
    Ok((get(ctx, org, run.id).await?, existing))
}

/// Runs of the organization, newest first.
pub async fn list(ctx: &Ctx<'_>, org: Uuid, filter: &RunFilter) -> Result<Vec<RunRow>, ApiError> {
    Ok(store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::runs::list(tx, org, filter).await })
    })
    .await?)
}

/// One run of the organization, or a 404 problem.
pub async fn get(ctx: &Ctx<'_>, org: Uuid, id: Uuid) -> Result<RunRow, ApiError> {
    store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::runs::get(tx, org, id, false).await })
    })
    .await?
    .ok_or_else(|| ApiError::not_found("no such run"))
}

/// What a cancel request did.
pub enum Cancelled {
    /// The run is now cancelled (a worker holding it stops at its next fence).
    Now(RunRow),
    /// The run had already ended; nothing changed.
    AlreadyEnded(RunRow),
}

/// Cancel a queued or running run.
pub async fn cancel(ctx: &Ctx<'_>, org: Uuid, id: Uuid) -> Result<Cancelled, ApiError> {
    let now = ctx.clock.now();
    let (run, cancelled) = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::runs::cancel(tx, org, id, now).await })
    })
    .await?
    .ok_or_else(|| ApiError::not_found("no such run"))?;
    Ok(if cancelled {
        Cancelled::Now(run)
    } else {
        Cancelled::AlreadyEnded(run)
    })
}

/// A service's numbers over a window that ends now.
pub struct ServiceStats {
    /// Runs, success rate, durations, device counts, pending conflicts, last sync.
    pub stats: Value,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// The service's stats over the last `days` days (a 404 problem for another organization's
/// service).
pub async fn stats(
    ctx: &Ctx<'_>,
    org: Uuid,
    service: Uuid,
    days: i64,
) -> Result<ServiceStats, ApiError> {
    load(ctx, org, service).await?;
    let until = ctx.clock.now();
    let since = until - chrono::Duration::days(days);
    let stats = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::sync_log::service_stats(tx, org, service, since).await })
    })
    .await?;
    Ok(ServiceStats {
        stats,
        since,
        until,
    })
}

/// The sync log of the organization, newest first.
pub async fn log(
    ctx: &Ctx<'_>,
    org: Uuid,
    filter: &LogFilter,
) -> Result<Vec<LogEntryRow>, ApiError> {
    Ok(store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::sync_log::list(tx, org, filter).await })
    })
    .await?)
}
