-- Webhook deliveries in batches (DESIGN §9: >= 2,000 deliveries/s on 2 cores). Measured on the
-- benchmark machine, a synchronously committed delivery cost the server ~0.75 ms of CPU, of which
-- ~0.3 ms went to the commit alone (the WAL flush and the wake-ups around it) and a quarter of
-- the rest to setting up gs_webhook_ingest's statement (executor start-up of its five parts). So
-- the host groups deliveries that arrive while earlier ones are being stored, and this function
-- stores a group in one statement and one commit, set-based: each part of gs_webhook_ingest
-- (0005) runs once for all of them.
--
-- Same rules per delivery as gs_webhook_ingest, which stays for single deliveries: the delivery
-- is stored under its unique key and only if that insert happened its telemetry row is written,
-- its device's reported state moves forward (the same order-safe comparisons, per column) and a
-- device_refresh is queued. The caller guarantees what makes the set-based form equal to storing
-- the items one by one: one organization and service per call, and no two items with the same
-- device or the same delivery key (so no device row is updated twice and every stored row maps
-- back to one item). Device rows are locked first, in id order, so concurrent batches cannot
-- deadlock each other. One row per item comes back (ord as given; delivery_id NULL for a
-- duplicate). An error stores nothing of the batch; the host then stores each delivery on its
-- own. Items: {ord, key, received_at, content_type, event_type, device, payload, is_data, path,
-- recorded_at, data, seen, offline, fresh, battery, signal, location, force_refresh}, named as
-- gs_webhook_ingest's parameters; a location, which may be JSON null itself, comes wrapped in a
-- one-element array and is absent when there is none. SECURITY INVOKER.
CREATE FUNCTION gs_webhook_ingest_batch(p_org uuid, p_service uuid, p_items jsonb)
RETURNS TABLE (ord integer, delivery_id uuid, status text, refresh_queued boolean)
LANGUAGE plpgsql VOLATILE
-- A batch is a handful of key lookups, but the planner takes jsonb_to_recordset for 100 rows and
-- hash-joined them against a scan of every assignment of the service (3 ms at 10,000 devices,
-- more than the rest of the batch). Index probes only, as in the sync engine's page loads. The
-- SET clause also restores app.organization_id on exit: nothing runs after this statement.
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('app.organization_id', coalesce(p_org::text, ''), true);
    RETURN QUERY
    WITH v AS (
        SELECT x.*, x.recorded_at::timestamptz AS at, x.location -> 0 AS loc
        FROM jsonb_to_recordset(p_items) AS x(ord integer, key text, received_at text,
            content_type text, event_type text, device text, payload jsonb, is_data boolean,
            path text, recorded_at text, data jsonb, seen boolean, offline boolean,
            fresh boolean, battery double precision, signal double precision, location jsonb,
            force_refresh boolean)
    ), dev AS MATERIALIZED (
        SELECT v.ord, dd.id AS device_id
        FROM v
        JOIN device_service_assignments a
          ON a.organization_id = p_org AND a.service_id = p_service
         AND a.external_device_id = v.device
        JOIN devices dd ON dd.id = a.device_id AND dd.organization_id = a.organization_id
        WHERE dd.deleted_at IS NULL
        ORDER BY dd.id
        FOR UPDATE OF dd
    ), ins AS (
        INSERT INTO webhook_deliveries (organization_id, service_id, delivery_key, received_at,
            content_type, event_type, device_external_id, status, payload)
        SELECT p_org, p_service, v.key, v.received_at::timestamptz, v.content_type,
            v.event_type, v.device,
            CASE WHEN EXISTS (SELECT 1 FROM dev WHERE dev.ord = v.ord)
                 THEN 'processed' ELSE 'unmatched' END,
            v.payload
        FROM v ORDER BY v.ord
        ON CONFLICT (service_id, delivery_key) DO NOTHING
        RETURNING id, status, delivery_key
    ), done AS (
        SELECT v.*, ins.id AS delivery_id, ins.status AS stored_status, dev.device_id
        FROM v JOIN ins ON ins.delivery_key = v.key
        LEFT JOIN dev ON dev.ord = v.ord
    ), todo AS (
        SELECT * FROM done WHERE device_id IS NOT NULL
    ), tel AS (
        INSERT INTO device_telemetry (organization_id, device_id, service_id, delivery_id, path,
            recorded_at, received_at, data)
        SELECT p_org, t.device_id, p_service, t.delivery_id, t.path, t.at,
            t.received_at::timestamptz, t.data
        FROM todo t WHERE t.is_data
        RETURNING 1
    ), upd AS (
        UPDATE devices d SET
            last_seen = CASE WHEN x.seen AND (d.last_seen IS NULL OR d.last_seen < x.at)
                             THEN x.at ELSE d.last_seen END,
            last_seen_online = CASE WHEN x.seen AND (d.last_seen_online IS NULL
                                        OR d.last_seen_online < x.at)
                                    THEN x.at ELSE d.last_seen_online END,
            status = CASE
                WHEN x.offline AND (d.last_seen IS NULL OR d.last_seen <= x.at) THEN 'offline'
                WHEN x.seen AND x.fresh AND (d.last_seen IS NULL OR d.last_seen < x.at)
                     AND d.status NOT IN ('warning', 'error') THEN 'online'
                ELSE d.status END,
            battery_level = CASE WHEN (x.battery IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,battery_level}', '') COLLATE "C" < x.recorded_at COLLATE "C")
                THEN x.battery ELSE d.battery_level END,
            signal_strength = CASE WHEN (x.signal IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,signal_strength}', '') COLLATE "C" < x.recorded_at COLLATE "C")
                THEN x.signal ELSE d.signal_strength END,
            location = CASE WHEN (x.loc IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,location}', '') COLLATE "C" < x.recorded_at COLLATE "C")
                THEN x.loc ELSE d.location END,
            metadata = CASE WHEN ((x.battery IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,battery_level}', '') COLLATE "C" < x.recorded_at COLLATE "C")
            OR (x.signal IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,signal_strength}', '') COLLATE "C" < x.recorded_at COLLATE "C")
            OR (x.loc IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,location}', '') COLLATE "C" < x.recorded_at COLLATE "C"))
                AND jsonb_typeof(d.metadata) = 'object'
                THEN jsonb_set(d.metadata, '{golioth_reported_at}',
                    CASE WHEN jsonb_typeof(d.metadata -> 'golioth_reported_at') = 'object'
                         THEN d.metadata -> 'golioth_reported_at' ELSE '{}'::jsonb END
                    || jsonb_strip_nulls(jsonb_build_object(
                    'battery_level', CASE WHEN (x.battery IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,battery_level}', '') COLLATE "C" < x.recorded_at COLLATE "C") THEN x.recorded_at END,
                    'signal_strength', CASE WHEN (x.signal IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,signal_strength}', '') COLLATE "C" < x.recorded_at COLLATE "C") THEN x.recorded_at END,
                    'location', CASE WHEN (x.loc IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,location}', '') COLLATE "C" < x.recorded_at COLLATE "C") THEN x.recorded_at END)))
                ELSE d.metadata END
        FROM todo x
        WHERE d.id = x.device_id AND d.organization_id = p_org AND (
            (x.seen AND (d.last_seen IS NULL OR d.last_seen < x.at
                OR d.last_seen_online IS NULL OR d.last_seen_online < x.at))
            OR (x.offline AND (d.last_seen IS NULL OR d.last_seen <= x.at)
                AND d.status <> 'offline')
            OR (x.battery IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,battery_level}', '') COLLATE "C" < x.recorded_at COLLATE "C")
            OR (x.signal IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,signal_strength}', '') COLLATE "C" < x.recorded_at COLLATE "C")
            OR (x.loc IS NOT NULL
                 AND coalesce(d.metadata #>> '{golioth_reported_at,location}', '') COLLATE "C" < x.recorded_at COLLATE "C"))
        RETURNING d.id
    ), run AS (
        INSERT INTO sync_runs (organization_id, service_id, operation, params)
        SELECT p_org, p_service, 'device_refresh', jsonb_build_object('device_id', d.device)
        FROM done d WHERE d.force_refresh OR d.device_id IS NULL
        ON CONFLICT DO NOTHING
        RETURNING params ->> 'device_id' AS device
    )
    SELECT v.ord, d.delivery_id, d.stored_status,
        d.delivery_id IS NOT NULL AND EXISTS (SELECT 1 FROM run WHERE run.device = v.device)
    FROM v LEFT JOIN done d ON d.ord = v.ord
    ORDER BY v.ord;
END;
$$;

REVOKE ALL ON FUNCTION gs_webhook_ingest_batch(uuid, uuid, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gs_webhook_ingest_batch(uuid, uuid, jsonb) TO golioth_sync_app;
