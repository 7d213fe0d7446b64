-- Reverse of 0011_webhook_service_version.up.sql: the 0005 gs_webhook_service, no versioned ingest.
DROP FUNCTION IF EXISTS gs_webhook_ingest_batch_as_of(uuid, uuid, jsonb, text);
DROP FUNCTION IF EXISTS gs_webhook_ingest_as_of(uuid, uuid, text, text, text, text, text, jsonb,
    boolean, text, text, jsonb, boolean, boolean, boolean, double precision, double precision,
    jsonb, boolean, text);
DROP FUNCTION gs_webhook_service(uuid);
CREATE FUNCTION gs_webhook_service(p_service uuid)
RETURNS TABLE (organization_id uuid, is_active boolean, config jsonb, credentials bytea)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('app.organization_id', coalesce(gs_service_org(p_service)::text, ''), true);
    RETURN QUERY
        SELECT s.organization_id, s.is_active, s.config, s.credentials
        FROM device_services s
        WHERE s.id = p_service AND s.organization_id = gs_current_org();
END;
$$;
REVOKE ALL ON FUNCTION gs_webhook_service(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gs_webhook_service(uuid) TO golioth_sync_app;
