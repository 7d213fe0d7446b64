//! Driving one claimed run: set up its executor (service config, decrypted key, Golioth client,
//! tag map, cursor), run slices until the run is done or the time budget is spent, then finish
//! it, hand the lease back, or — when an attempt fails — put it back in the queue with
//! exponential backoff and jitter until `max_attempts`, after which it fails with the reason.
//!
//! Lease protocol (DESIGN §5.1): a worker claims a run (`gs_claim_runs`: `FOR UPDATE SKIP
//! LOCKED`, one live lease per service), every slice commits inside a transaction that first
//! checks the lease is still its own (a fence), and between slices the lease is released so any
//! worker may continue. A worker that dies keeps its lease until `lease_expires_at`; then the run
//! is claimable again, counted as a new attempt, and resumes from the last committed cursor.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::EngineError;
use super::convert::state_prefix;
use super::exec::{Exec, PAGE_CONCURRENCY};
use super::progress::{Cursor, Phase, Stats, Target};
use crate::app::services::{credentials, golioth_config, keyring};
use crate::base::ctx::Ctx;
use crate::base::ports::DbError;
use crate::domain::golioth::{GoliothClient, GoliothDeviceId, MAX_PER_PAGE, TagMap};
use crate::domain::service::ServiceConfig;
use crate::domain::store::{
    self, runs::Lease, runs::RunRow, services::ServiceRow, sync_log::LogRow,
};
use crate::domain::sync::Direction;

/// Leases outlive a slice by this much (a slice stops starting work at the budget, but a
/// Golioth call may still wait out its retries).
pub const LEASE_MARGIN: Duration = Duration::from_secs(120);

/// First retry delay of a failed attempt; it doubles per attempt up to [`MAX_RETRY_DELAY`].
pub const BASE_RETRY_DELAY: Duration = Duration::from_secs(30);
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// How long a lease taken at `now` for `budget` lasts.
pub fn lease_until(now: DateTime<Utc>, budget: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(budget + LEASE_MARGIN).unwrap_or(chrono::Duration::MAX)
}

/// The wait before attempt `attempt + 1`: exponential with jitter, drawn uniformly from
/// `[w(attempt - 1), w(attempt)]` where `w(k) = min(BASE · 2^k, MAX)` (`unit` in `[0, 1)`). Each
/// window starts where the previous one ends, so delays never shrink from one attempt to the
/// next (backoff is visibly growing, also at the cap) while concurrent failures still spread out.
pub fn retry_delay(attempt: i32, unit: f64) -> Duration {
    let w = |k: i32| {
        let exp = u32::try_from(k.max(0)).unwrap_or(0).min(20);
        BASE_RETRY_DELAY
            .saturating_mul(1u32 << exp)
            .min(MAX_RETRY_DELAY)
    };
    let (lo, hi) = (w(attempt.max(1) - 1), w(attempt.max(1)));
    lo + (hi - lo).mul_f64(unit.clamp(0.0, 1.0))
}

/// A lease owner name: unique per claim.
pub fn new_owner(kind: &str) -> String {
    format!("{kind}-{}", Uuid::new_v4().simple())
}

/// What driving a run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriveOutcome {
    pub run_id: Uuid,
    pub organization_id: Uuid,
    pub slices: u32,
    /// `completed`, `completed_with_errors`, `failed`, `released` (more to do), `rescheduled`,
    /// `lease_lost`, or `error` (could not even load it).
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Claim `run` if it is claimable now and drive it within `budget`. `None` when another worker
/// holds it (or it is not due).
pub async fn process_run(
    ctx: &Ctx<'_>,
    org: Uuid,
    run: Uuid,
    now: DateTime<Utc>,
    budget: Duration,
) -> Result<Option<DriveOutcome>, DbError> {
    let owner = new_owner("request");
    let until = lease_until(now, budget);
    let claimed = store::runs::claim(ctx.db, now, &owner, until, 1, Some(run)).await?;
    if claimed.is_empty() {
        return Ok(None);
    }
    let deadline = Instant::now() + budget;
    Ok(Some(
        drive(ctx, org, run, &owner, now, until, deadline, budget).await,
    ))
}

struct Loaded {
    run: RunRow,
    service: ServiceRow,
    /// The service's links with a Golioth id, read when a listing run starts afresh: how many
    /// pages its first window asks for (see `Exec::first_window`).
    linked: Option<u64>,
}

/// Drive a run this worker has just claimed.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn drive(
    ctx: &Ctx<'_>,
    org: Uuid,
    run_id: Uuid,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    deadline: Instant,
    budget: Duration,
) -> DriveOutcome {
    let started = Instant::now();
    let mut out = DriveOutcome {
        run_id,
        organization_id: org,
        slices: 0,
        result: "error".into(),
        error: None,
    };
    let loaded = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move {
            let Some(run) = store::runs::get(tx, org, run_id, true).await? else {
                return Ok::<_, DbError>(None);
            };
            let Some(service) = store::services::get(tx, org, run.service_id).await? else {
                return Ok(None);
            };
            let lists = run.cursor.is_none()
                && initial_cursor(&run.params).is_ok_and(|c| c.phase == Phase::Listing);
            let linked = if lists {
                Some(store::sync::linked_count(tx, org, service.id).await?)
            } else {
                None
            };
            Ok(Some(Loaded {
                run,
                service,
                linked,
            }))
        })
    })
    .await;
    let Loaded {
        run,
        service,
        linked,
    } = match loaded {
        Ok(Some(l)) => l,
        Ok(None) => {
            out.error = Some("run or service not found".into());
            return out;
        }
        Err(e) => {
            out.error = Some(db_reason(run_id, e));
            return out;
        }
    };
    if run.status != "running" || run.lease_owner.as_deref() != Some(owner) {
        out.result = "lease_lost".into();
        return out;
    }
    let lease = Lease {
        org,
        run: run_id,
        owner,
    };
    let clock = |s: &Instant| now + chrono::Duration::from_std(s.elapsed()).unwrap_or_default();

    if run.attempt > run.max_attempts {
        let why = format!("gave up after {} attempts", run.max_attempts);
        out.result = end_failed(
            ctx,
            &lease,
            &run,
            &Stats::from_json(&run.stats),
            &why,
            clock(&started),
        )
        .await;
        out.error = Some(why);
        return out;
    }

    let mut exec = match setup(
        ctx,
        &run,
        &service,
        linked,
        owner,
        now,
        lease_until,
        deadline,
        budget,
    )
    .await
    {
        Ok(e) => e,
        Err(EngineError::Config(why)) => {
            // A configuration problem does not go away by waiting.
            out.result = end_failed(
                ctx,
                &lease,
                &run,
                &Stats::from_json(&run.stats),
                &why,
                clock(&started),
            )
            .await;
            out.error = Some(why);
            return out;
        }
        Err(e) => {
            e.log_cause(run.id);
            out.result = retry_or_fail(ctx, &lease, &run, &e.to_string(), clock(&started)).await;
            out.error = Some(e.to_string());
            return out;
        }
    };
    if run.cursor.is_none() {
        let row = LogRow {
            device_id: None,
            operation: "run_started".into(),
            status: "info".into(),
            details: json!({
                "operation": run.operation, "params": run.params, "attempt": run.attempt,
                "requested_by": run.requested_by,
            }),
        };
        let (service_id, rid) = (run.service_id, run.id);
        let logged = store::in_org(ctx.db, org, |tx| {
            Box::pin(async move {
                store::sync_log::insert(tx, org, service_id, Some(rid), &[row]).await
            })
        })
        .await;
        if let Err(e) = logged {
            out.error = Some(db_reason(run_id, e));
        }
        if let Err(e) = exec.commit_progress().await {
            return stop(ctx, &lease, &run, e, &mut out, clock(&started)).await;
        }
    }

    loop {
        if exec.cursor.phase == Phase::Done {
            out.result = end_done(ctx, &lease, &run, &exec.stats, clock(&started)).await;
            return out;
        }
        let t = Instant::now();
        let phase = exec.cursor.phase;
        let result = exec.slice().await;
        out.slices += 1;
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.kind().to_owned(),
        };
        let counts = result.as_ref().copied().unwrap_or_default();
        crate::base::log::info(
            "sync slice",
            json!({
                "run_id": run_id, "service_id": run.service_id, "organization_id": org,
                "operation": run.operation, "phase": phase.as_str(), "pages": counts.pages,
                "devices": counts.devices, "local_writes": counts.local_writes,
                "remote_writes": counts.remote_writes, "conflicts": counts.conflicts,
                "fetch_ms": counts.fetch_ms, "load_ms": counts.load_ms,
                "plan_ms": counts.plan_ms, "remote_ms": counts.remote_ms,
                "commit_ms": counts.commit_ms,
                "duration_ms": t.elapsed().as_millis() as u64, "outcome": outcome,
            }),
        );
        if let Err(e) = result {
            return stop(ctx, &lease, &run, e, &mut out, clock(&started)).await;
        }
        if exec.cursor.phase == Phase::Done {
            continue;
        }
        if Instant::now() >= deadline {
            out.result = match store::in_org(ctx.db, org, |tx| {
                Box::pin(async move { store::runs::release(tx, &lease).await })
            })
            .await
            {
                Ok(()) => "released".into(),
                Err(e) => {
                    out.error = Some(db_reason(run_id, e));
                    "error".into()
                }
            };
            return out;
        }
    }
}

/// A database failure as shown in outcomes (SQLSTATE only); the cause is logged.
fn db_reason(run: Uuid, e: DbError) -> String {
    let e = EngineError::from(e);
    e.log_cause(run);
    e.to_string()
}

/// An attempt stopped on an error: the lease is gone (someone else continues), or the attempt
/// failed and is retried later.
async fn stop(
    ctx: &Ctx<'_>,
    lease: &Lease<'_>,
    run: &RunRow,
    e: EngineError,
    out: &mut DriveOutcome,
    now: DateTime<Utc>,
) -> DriveOutcome {
    e.log_cause(run.id);
    match e {
        EngineError::LeaseLost => out.result = "lease_lost".into(),
        EngineError::Config(why) => {
            out.result =
                end_failed(ctx, lease, run, &Stats::from_json(&run.stats), &why, now).await;
            out.error = Some(why);
        }
        other => {
            let why = other.to_string();
            out.result = retry_or_fail(ctx, lease, run, &why, now).await;
            out.error = Some(why);
        }
    }
    out.clone()
}

#[allow(clippy::too_many_arguments)]
async fn setup<'c>(
    ctx: &'c Ctx<'c>,
    run: &RunRow,
    service: &ServiceRow,
    linked: Option<u64>,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    deadline: Instant,
    budget: Duration,
) -> Result<Exec<'c>, EngineError> {
    let cfg = |e: crate::base::error::ApiError| {
        EngineError::Config(
            e.detail
                .clone()
                .unwrap_or_else(|| "the service cannot be used".into()),
        )
    };
    let config = ServiceConfig::parse(&service.config, &ctx.settings.golioth_base_urls)
        .map_err(|_| EngineError::Config("the stored service config is no longer valid".into()))?;
    let ring = keyring(ctx).map_err(|_| EngineError::Config("credentials unavailable".into()))?;
    let creds = credentials(&ring, service)
        .map_err(|_| EngineError::Config("the service's credentials cannot be read".into()))?;
    let client_config = golioth_config(ctx, service, &creds).map_err(cfg)?;
    let client = GoliothClient::new(ctx.http, ctx.clock, client_config);

    let mut opts = config.sync.clone();
    opts.direction = match run.operation.as_str() {
        "import" => Direction::Import,
        "export" => Direction::Export,
        "bidirectional" => Direction::Bidirectional,
        _ => config.sync.direction,
    };
    let params = &run.params;
    let dry_run = params.get("dry_run").and_then(|v| v.as_bool()) == Some(true);
    let cursor = match &run.cursor {
        Some(c) => serde_json::from_value(c.clone())
            .map_err(|_| EngineError::Config("the run's cursor cannot be read".into()))?,
        None => initial_cursor(params)?,
    };
    let fetch_window = if budget < Duration::from_secs(2) {
        1
    } else {
        PAGE_CONCURRENCY
    };
    let mut exec = Exec {
        ctx,
        client,
        org: run.org_id,
        service: run.service_id,
        run: run.id,
        owner: owner.to_owned(),
        state_prefix: state_prefix(&opts.state_paths),
        opts,
        dry_run,
        create_credentials: config.create_credentials,
        now,
        lease_until,
        tags: TagMap::default(),
        tags_refreshed: false,
        cursor,
        stats: Stats::from_json(&run.stats),
        fetch_window,
        first_window: linked.map_or(1, |n| {
            let pages = n.div_ceil(u64::from(MAX_PER_PAGE));
            u32::try_from(pages)
                .unwrap_or(u32::MAX)
                .clamp(1, fetch_window)
        }),
        pending_seen: Vec::new(),
        deadline,
        prefetched: None,
        analyzed_at: 0,
    };
    exec.stats.dry_run = dry_run;
    exec.store_legacy_seen().await?;
    exec.load_tags().await?;
    Ok(exec)
}

/// The first cursor of a run, from its params: named devices make a targeted run.
fn initial_cursor(params: &serde_json::Value) -> Result<Cursor, EngineError> {
    let mut targets = Vec::new();
    if let Some(id) = params.get("device_id").and_then(|v| v.as_str()) {
        let id = GoliothDeviceId::parse(id)
            .map_err(|_| EngineError::Config("device_id is not a Golioth device id".into()))?;
        targets.push(Target::Remote(id.as_str().to_owned()));
    }
    let mut locals: Vec<&serde_json::Value> = Vec::new();
    if let Some(v) = params.get("local_device_id") {
        locals.push(v);
    }
    if let Some(list) = params.get("device_ids").and_then(|v| v.as_array()) {
        locals.extend(list.iter());
    }
    for v in locals {
        let id = v
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| EngineError::Config("a device id of the run is not a uuid".into()))?;
        let t = Target::Local(id);
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    Ok(if targets.is_empty() {
        Cursor::listing()
    } else {
        Cursor::targets(targets)
    })
}

fn is_full_run(run: &RunRow, stats: &Stats) -> bool {
    run.operation != "device_refresh" && !stats.dry_run
}

/// Finish a run whose work is done.
async fn end_done(
    ctx: &Ctx<'_>,
    lease: &Lease<'_>,
    run: &RunRow,
    stats: &Stats,
    now: DateTime<Utc>,
) -> String {
    let status = if stats.failed > 0 {
        "completed_with_errors"
    } else {
        "completed"
    };
    let note = (stats.listing_complete == Some(false))
        .then_some("the Golioth listing was incomplete: nothing was deleted or created in Golioth");
    end(ctx, lease, run, stats, status, note, now).await
}

/// Fail a run for good.
async fn end_failed(
    ctx: &Ctx<'_>,
    lease: &Lease<'_>,
    run: &RunRow,
    stats: &Stats,
    why: &str,
    now: DateTime<Utc>,
) -> String {
    end(ctx, lease, run, stats, "failed", Some(why), now).await
}

async fn end(
    ctx: &Ctx<'_>,
    lease: &Lease<'_>,
    run: &RunRow,
    stats: &Stats,
    status: &str,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> String {
    let duration_ms = run
        .started_at
        .as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|s| (now - s.with_timezone(&Utc)).num_milliseconds().max(0));
    let row = LogRow {
        device_id: None,
        operation: if status == "failed" {
            "run_failed".into()
        } else {
            "run_finished".into()
        },
        status: if status == "failed" {
            "error"
        } else {
            "success"
        }
        .into(),
        details: json!({
            "status": status, "operation": run.operation, "summary": stats.summary(),
            "duration_ms": duration_ms, "slices": stats.slices, "pages": stats.pages,
            "attempt": run.attempt, "error": error, "dry_run": stats.dry_run,
            "listing_complete": stats.listing_complete,
        }),
    };
    let full = is_full_run(run, stats);
    let (org, service, rid) = (lease.org, run.service_id, run.id);
    let stats_json = stats.to_json();
    let result = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move {
            if !store::runs::finish(tx, lease, status, &stats_json, error, now).await? {
                return Ok::<_, DbError>(false);
            }
            store::sync_log::insert(tx, org, service, Some(rid), &[row]).await?;
            if full {
                store::runs::touch_service(tx, org, service, status, now).await?;
            }
            Ok(true)
        })
    })
    .await;
    match result {
        Ok(true) => status.to_owned(),
        Ok(false) => "lease_lost".into(),
        Err(_) => "error".into(),
    }
}

/// A failed attempt: back in the queue after a growing delay, or failed at `max_attempts`.
async fn retry_or_fail(
    ctx: &Ctx<'_>,
    lease: &Lease<'_>,
    run: &RunRow,
    why: &str,
    now: DateTime<Utc>,
) -> String {
    // The stats as last committed (the cursor too: the next attempt resumes from it).
    let org = lease.org;
    let rid = run.id;
    let current = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move { store::runs::get(tx, org, rid, false).await })
    })
    .await
    .ok()
    .flatten()
    .map(|r| Stats::from_json(&r.stats))
    .unwrap_or_else(|| Stats::from_json(&run.stats));
    if run.attempt >= run.max_attempts {
        let why = format!(
            "attempt {} of {} failed: {why}",
            run.attempt, run.max_attempts
        );
        return end_failed(ctx, lease, run, &current, &why, now).await;
    }
    let delay = retry_delay(run.attempt, rand::random::<f64>());
    let run_after = now + chrono::Duration::from_std(delay).unwrap_or_default();
    let row = LogRow {
        device_id: None,
        operation: "run_retry_scheduled".into(),
        status: "error".into(),
        details: json!({
            "attempt": run.attempt, "max_attempts": run.max_attempts, "error": why,
            "retry_in_ms": delay.as_millis() as u64,
            "run_after": run_after.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }),
    };
    let service = run.service_id;
    let full = is_full_run(run, &current);
    let result = store::in_org(ctx.db, org, |tx| {
        Box::pin(async move {
            if !store::runs::reschedule(tx, lease, run_after, why).await? {
                return Ok::<_, DbError>(false);
            }
            store::sync_log::insert(tx, org, service, Some(rid), &[row]).await?;
            if full {
                store::runs::touch_service(tx, org, service, "retrying", now).await?;
            }
            Ok(true)
        })
    })
    .await;
    match result {
        Ok(true) => "rescheduled".into(),
        Ok(false) => "lease_lost".into(),
        Err(_) => "error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_cap() {
        let mut last = Duration::ZERO;
        for attempt in 1..=8 {
            let lo = retry_delay(attempt, 0.0);
            let hi = retry_delay(attempt, 0.999_999);
            assert!(lo >= last, "attempt {attempt}: {lo:?} < {last:?}");
            assert!(hi >= lo);
            last = hi;
        }
        assert_eq!(retry_delay(1, 0.0), Duration::from_secs(30));
        assert_eq!(retry_delay(2, 0.0), Duration::from_secs(60));
        assert_eq!(retry_delay(50, 1.0), MAX_RETRY_DELAY);
    }

    #[test]
    fn cursors_from_params() {
        let c = initial_cursor(&json!({})).unwrap();
        assert_eq!(c.phase, Phase::Listing);
        let id = Uuid::new_v4();
        let c = initial_cursor(
            &json!({"device_id": "0123456789abcdef01234567", "local_device_id": id}),
        )
        .unwrap();
        assert_eq!(c.phase, Phase::Targets);
        assert_eq!(c.targets.len(), 2);
        assert!(initial_cursor(&json!({"device_id": "nope"})).is_err());
        assert!(initial_cursor(&json!({"device_ids": ["x"]})).is_err());
    }
}
