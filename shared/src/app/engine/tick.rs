//! The scheduler's one callable step (STYLE habit 10): `tick(ctx, now, budget)`. It keeps the
//! sync log's partitions ahead (and drops those past retention), marks stale devices offline,
//! prunes old webhook deliveries, queues a run for every due service, then claims claimable runs
//! one at a time and drives them until the budget is spent. Cross-tenant discovery goes only
//! through SECURITY DEFINER functions that return ids; each run is then processed inside its own
//! organization's scope. Any number of ticks may run at once, on any number of replicas.

use std::time::{Duration, Instant};

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::run::{DriveOutcome, drive, lease_until, new_owner};
use crate::base::ctx::Ctx;
use crate::base::ports::{DbError, transaction};
use crate::base::settings::vars;
use crate::domain::store;

/// Sync log partitions are created this many months ahead (the current month included).
pub const LOG_PARTITIONS_AHEAD: i32 = 3;
/// Default retention of the sync log, in months (variable `sync_log_retention_months`).
pub const DEFAULT_LOG_RETENTION_MONTHS: u32 = 12;
/// Default retention of webhook deliveries, in days (variable `webhook_retention_days`; never
/// less than 7, DESIGN §3).
pub const DEFAULT_DELIVERY_RETENTION_DAYS: u32 = 7;
/// Services queued per tick at most (the rest are due on the next tick).
pub const MAX_QUEUED_PER_TICK: i32 = 500;
/// Webhook deliveries deleted per tick at most.
pub const MAX_PRUNED_PER_TICK: i32 = 10_000;

/// What a tick did, answered as JSON by `POST /internal/tick`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TickOutcome {
    pub now: DateTime<Utc>,
    /// Whether this tick did the housekeeping (one tick at a time does).
    pub housekeeping: bool,
    pub partitions_created: i64,
    pub partitions_dropped: i64,
    pub devices_marked_offline: i64,
    pub deliveries_pruned: i64,
    /// Services found due, and the runs queued for them (a service with an active run gets none).
    pub services_due: usize,
    pub runs_queued: Vec<Uuid>,
    /// Every run this tick drove.
    pub runs: Vec<DriveOutcome>,
    pub errors: Vec<String>,
    pub duration_ms: u64,
}

/// A step's failure as answered (SQLSTATE only); the driver's text goes to the log.
fn failure(step: &str, e: &DbError) -> String {
    crate::base::log::error(
        "tick step failed",
        serde_json::json!({"step": step, "cause": e.to_string()}),
    );
    match e.sqlstate() {
        Some(code) => format!("{step}: database error (SQLSTATE {code})"),
        None => format!("{step}: database unavailable"),
    }
}

fn setting(ctx: &Ctx<'_>, name: &str, default: u32) -> u32 {
    ctx.config
        .get(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// One scheduler step at `now` within `budget` (at least one slice of one run is processed when
/// any run is claimable, however small the budget).
pub async fn tick(ctx: &Ctx<'_>, now: DateTime<Utc>, budget: Duration) -> TickOutcome {
    let started = Instant::now();
    let deadline = started + budget;
    let mut out = TickOutcome {
        now,
        ..TickOutcome::default()
    };

    let log_months = setting(
        ctx,
        vars::SYNC_LOG_RETENTION_MONTHS,
        DEFAULT_LOG_RETENTION_MONTHS,
    )
    .max(1);
    let delivery_days = setting(
        ctx,
        vars::WEBHOOK_RETENTION_DAYS,
        DEFAULT_DELIVERY_RETENTION_DAYS,
    )
    .max(DEFAULT_DELIVERY_RETENTION_DAYS);
    let log_before = now
        .checked_sub_months(Months::new(log_months))
        .unwrap_or(now);
    let delivery_before = now - chrono::Duration::days(i64::from(delivery_days));
    let housekeeping = transaction(ctx.db, |tx| {
        Box::pin(async move {
            if !store::runs::try_housekeeping_lock(tx).await? {
                return Ok::<_, DbError>(None);
            }
            let created = store::runs::ensure_log_partitions(tx, now, LOG_PARTITIONS_AHEAD).await?;
            let dropped = store::runs::drop_log_partitions(tx, log_before).await?;
            let offline = store::runs::mark_devices_offline(tx, now).await?;
            let pruned =
                store::runs::prune_deliveries(tx, delivery_before, MAX_PRUNED_PER_TICK).await?;
            Ok(Some((created, dropped, offline, pruned)))
        })
    })
    .await;
    match housekeeping {
        Ok(Some((created, dropped, offline, pruned))) => {
            out.housekeeping = true;
            out.partitions_created = created;
            out.partitions_dropped = dropped;
            out.devices_marked_offline = offline;
            out.deliveries_pruned = pruned;
        }
        Ok(None) => {}
        Err(e) => out.errors.push(failure("housekeeping", &e)),
    }

    match store::runs::queue_due(ctx.db, now, MAX_QUEUED_PER_TICK).await {
        Ok(due) => {
            out.services_due = due.len();
            out.runs_queued = due.into_iter().filter_map(|(_, run)| run).collect();
        }
        Err(e) => out.errors.push(failure("queueing due services", &e)),
    }

    let mut first = true;
    while first || Instant::now() < deadline {
        first = false;
        let owner = new_owner("tick");
        let until = lease_until(now, budget);
        let claimed = match store::runs::claim(ctx.db, now, &owner, until, 1, None).await {
            Ok(c) => c,
            Err(e) => {
                out.errors.push(failure("claiming runs", &e));
                break;
            }
        };
        let Some(&(run, org)) = claimed.first() else {
            break;
        };
        let outcome = drive(ctx, org, run, &owner, now, until, deadline, budget).await;
        out.runs.push(outcome);
    }
    out.duration_ms = started.elapsed().as_millis() as u64;
    crate::base::log::info(
        "tick",
        serde_json::json!({
            "now": now, "housekeeping": out.housekeeping, "services_due": out.services_due,
            "runs_queued": out.runs_queued.len(), "runs_driven": out.runs.len(),
            "devices_marked_offline": out.devices_marked_offline,
            "deliveries_pruned": out.deliveries_pruned, "errors": out.errors.len(),
            "duration_ms": out.duration_ms,
        }),
    );
    out
}
