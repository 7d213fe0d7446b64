-- Reverse of 0006_run_seen.up.sql.
DROP TABLE IF EXISTS sync_run_seen;
