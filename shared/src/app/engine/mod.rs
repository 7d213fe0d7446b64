//! The sync engine: executes the pure core's plans against Postgres and Golioth as durable,
//! resumable runs (DESIGN §5.1) and hosts the scheduler's tick (§7).
//!
//! - [`run`]: claiming and driving a run within a time budget, the lease protocol, backoff.
//! - `exec`: one run's slices — listing pages, the local-only pass, targeted devices — each
//!   planned by [`crate::domain::sync`] and committed in one transaction with its cursor and stats.
//! - [`progress`]: what a run persists between slices (cursor, stats).
//! - [`tick`]: the one callable scheduler step, `tick(ctx, now, budget) -> TickOutcome`.
//!
//! **Architecture Invariant:** the engine decides nothing about sync semantics; it moves data
//! between the store, the Golioth client and the core, and owns only timing (budgets, leases,
//! retries) and bookkeeping.
//!
//! Uses `app::services` (credentials, Golioth client config), `domain` (sync core, Golioth
//! client, store) and `base`.

mod convert;
mod exec;
pub mod progress;
pub mod run;
pub mod tick;

pub use exec::PAGE_CONCURRENCY;
pub use run::{DriveOutcome, process_run, retry_delay};
pub use tick::{TickOutcome, tick};

use crate::base::ports::DbError;
use crate::domain::golioth::GoliothError;

/// Why a slice or an attempt stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Shown (run error, sync log, API) as the SQLSTATE only; the driver's text, which may
    /// quote SQL or data, goes to the log (see [`EngineError::log_cause`]).
    #[error("database error{}", .0.sqlstate().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    Db(#[from] DbError),
    /// A Golioth failure that stops the attempt (a listing page, the tag list, the key).
    #[error("{}", convert::reason(.0))]
    Golioth(GoliothError),
    /// Configuration that waiting will not fix (no key, an invalid stored config or cursor).
    #[error("{0}")]
    Config(String),
    /// Another worker holds the run now, or it was cancelled: stop without writing.
    #[error("the run's lease was lost")]
    LeaseLost,
}

impl EngineError {
    /// Log the full cause of a database failure (never shown to clients).
    pub fn log_cause(&self, run: uuid::Uuid) {
        if let EngineError::Db(e) = self {
            crate::base::log::error(
                "sync run database error",
                serde_json::json!({"run_id": run, "cause": e.to_string()}),
            );
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Db(_) => "db_error",
            EngineError::Golioth(_) => "golioth_error",
            EngineError::Config(_) => "config_error",
            EngineError::LeaseLost => "lease_lost",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_show_only_their_sqlstate() {
        let e = EngineError::from(DbError::Query {
            code: Some("23505".into()),
            message: "duplicate key value violates unique constraint \"x\": Key (id)=(secret)"
                .into(),
        });
        assert_eq!(e.to_string(), "database error (SQLSTATE 23505)");
        let e = EngineError::from(DbError::Connect("postgres://u:pw@host".into()));
        assert_eq!(e.to_string(), "database error");
    }
}
