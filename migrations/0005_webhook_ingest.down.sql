-- Reverse of 0005_webhook_ingest.up.sql: the 0003 and 0004 definitions, exactly.
DROP INDEX IF EXISTS devices_live_idx;
CREATE INDEX devices_live_status_idx ON devices (last_seen)
    WHERE status IN ('online', 'warning', 'error') AND deleted_at IS NULL;

DROP FUNCTION IF EXISTS gs_webhook_ingest(uuid, uuid, text, text, text, text, text, jsonb,
    boolean, text, text, jsonb, boolean, boolean, boolean, double precision, double precision,
    jsonb, boolean);
DROP FUNCTION IF EXISTS gs_webhook_service(uuid);

CREATE OR REPLACE FUNCTION gs_service_org(p_service uuid) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT organization_id FROM device_services WHERE id = p_service
$$;
