-- Reverse of 0004_sync_engine.up.sql.
DROP INDEX IF EXISTS devices_live_status_idx;
DROP FUNCTION IF EXISTS gs_prune_webhook_deliveries(timestamptz, integer);
DROP FUNCTION IF EXISTS gs_mark_devices_offline(timestamptz);
DROP FUNCTION IF EXISTS gs_claim_runs(timestamptz, text, timestamptz, integer, uuid);
DROP FUNCTION IF EXISTS gs_queue_due_services(timestamptz, integer);
