-- Webhook deliveries judged against a kept copy of their service are stored only if the service
-- is still that version. An instance keeps the services it read (app/service_cache.rs) so a
-- delivery costs one statement; under Spin the API and the webhook are different components,
-- whose instances share no memory, so a change through the API cannot drop the webhook's copy.
-- Instead the copy carries the row version it was read at (the service row's xmin: every update
-- of the row gives it a new one), and the store checks it in the same statement: a delivery
-- judged under an older version stores nothing and answers 'stale_service', and the host reads
-- the service again and judges the delivery anew. A deactivated service, a rotated secret or a
-- changed config therefore refuse at once, on every host.

DROP FUNCTION gs_webhook_service(uuid);
-- As in 0005, plus the row's version.
CREATE FUNCTION gs_webhook_service(p_service uuid)
RETURNS TABLE (organization_id uuid, is_active boolean, config jsonb, credentials bytea,
    version text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('app.organization_id', coalesce(gs_service_org(p_service)::text, ''), true);
    RETURN QUERY
        SELECT s.organization_id, s.is_active, s.config, s.credentials, s.xmin::text
        FROM device_services s
        WHERE s.id = p_service AND s.organization_id = gs_current_org();
END;
$$;
REVOKE ALL ON FUNCTION gs_webhook_service(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gs_webhook_service(uuid) TO golioth_sync_app;

-- gs_webhook_ingest (0005) for a delivery judged under service version p_version: scoped to
-- p_org as it is, then nothing is stored unless the service still has that version (one
-- primary-key probe under row level security), else the one row (NULL, 'stale_service', false).
CREATE FUNCTION gs_webhook_ingest_as_of(
    p_org uuid, p_service uuid, p_key text, p_received_at text, p_content_type text,
    p_event_type text, p_device text, p_payload jsonb, p_is_data boolean, p_path text,
    p_recorded_at text, p_data jsonb, p_seen boolean, p_offline boolean, p_fresh boolean,
    p_battery double precision, p_signal double precision, p_location jsonb,
    p_force_refresh boolean, p_version text)
RETURNS TABLE (delivery_id uuid, status text, refresh_queued boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.organization_id', coalesce(p_org::text, ''), true);
    IF NOT EXISTS (SELECT 1 FROM device_services s WHERE s.id = p_service
                   AND s.organization_id = p_org AND s.xmin::text = p_version) THEN
        RETURN QUERY SELECT NULL::uuid, 'stale_service'::text, false;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM gs_webhook_ingest(p_org, p_service, p_key, p_received_at,
        p_content_type, p_event_type, p_device, p_payload, p_is_data, p_path, p_recorded_at,
        p_data, p_seen, p_offline, p_fresh, p_battery, p_signal, p_location, p_force_refresh);
END;
$$;
REVOKE ALL ON FUNCTION gs_webhook_ingest_as_of(uuid, uuid, text, text, text, text, text, jsonb,
    boolean, text, text, jsonb, boolean, boolean, boolean, double precision, double precision,
    jsonb, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gs_webhook_ingest_as_of(uuid, uuid, text, text, text, text, text,
    jsonb, boolean, text, text, jsonb, boolean, boolean, boolean, double precision,
    double precision, jsonb, boolean, text) TO golioth_sync_app;

-- gs_webhook_ingest_batch (0008) for deliveries all judged under service version p_version: the
-- same check, and when it fails one (ord, NULL, 'stale_service', false) row per item.
CREATE FUNCTION gs_webhook_ingest_batch_as_of(p_org uuid, p_service uuid, p_items jsonb,
    p_version text)
RETURNS TABLE (ord integer, delivery_id uuid, status text, refresh_queued boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.organization_id', coalesce(p_org::text, ''), true);
    IF NOT EXISTS (SELECT 1 FROM device_services s WHERE s.id = p_service
                   AND s.organization_id = p_org AND s.xmin::text = p_version) THEN
        RETURN QUERY SELECT (x ->> 'ord')::integer, NULL::uuid, 'stale_service'::text, false
            FROM jsonb_array_elements(p_items) AS x ORDER BY 1;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM gs_webhook_ingest_batch(p_org, p_service, p_items);
END;
$$;
REVOKE ALL ON FUNCTION gs_webhook_ingest_batch_as_of(uuid, uuid, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gs_webhook_ingest_batch_as_of(uuid, uuid, jsonb, text)
    TO golioth_sync_app;
