-- Reverse of 0008_webhook_batch.up.sql.
DROP FUNCTION gs_webhook_ingest_batch(uuid, uuid, jsonb);
