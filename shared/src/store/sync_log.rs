//! The golioth_sync_log audit trail: bulk inserts and filtered reads.
