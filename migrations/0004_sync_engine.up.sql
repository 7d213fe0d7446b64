-- The sync engine's cross-tenant entry points (DESIGN §5.1, §7). The scheduler's tick runs as the
-- application role, which row level security confines to one organization per transaction; it
-- discovers work across tenants only through these SECURITY DEFINER functions, which return ids
-- and counts, never tenant rows. Everything else the engine does runs per organization.

-- Queue one scheduled run for every due service (sync_enabled, is_active, next_sync_at <= p_now)
-- and advance next_sync_at past p_now in whole intervals, in the same statement. Rows are locked
-- with SKIP LOCKED and re-checked, so concurrent ticks queue a service once per interval. A
-- service that still has a queued or running full run gets no second one (partial unique index);
-- its interval is skipped. Returns (service_id, run_id), run_id NULL when nothing was queued.
CREATE FUNCTION gs_queue_due_services(p_now timestamptz, p_limit integer)
RETURNS TABLE (service_id uuid, run_id uuid)
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH due AS (
        SELECT s.id, s.next_sync_at, s.sync_interval_seconds
        FROM device_services s
        WHERE s.sync_enabled AND s.is_active AND s.next_sync_at <= p_now
        ORDER BY s.next_sync_at
        LIMIT greatest(p_limit, 0)
        FOR UPDATE SKIP LOCKED
    ), advanced AS (
        UPDATE device_services s
        SET next_sync_at = due.next_sync_at + make_interval(secs =>
                due.sync_interval_seconds
                * (floor(extract(epoch FROM (p_now - due.next_sync_at)) / due.sync_interval_seconds) + 1))
        FROM due
        WHERE s.id = due.id
        RETURNING s.id, s.organization_id, s.config
    ), queued AS (
        INSERT INTO sync_runs (organization_id, service_id, operation, params, run_after)
        SELECT a.organization_id, a.id,
               CASE WHEN a.config->>'sync_direction' IN ('import', 'export', 'bidirectional')
                    THEN a.config->>'sync_direction' ELSE 'bidirectional' END,
               '{"scheduled": true}'::jsonb, p_now
        FROM advanced a
        ON CONFLICT DO NOTHING
        RETURNING sync_runs.service_id, sync_runs.id
    )
    SELECT a.id, q.id FROM advanced a LEFT JOIN queued q ON q.service_id = a.id
$$;

-- Claim up to p_limit claimable runs for p_owner until p_lease_until: queued runs whose run_after
-- has come, and running runs whose lease expired (a dead worker) or was released between slices.
-- Rows are taken with FOR UPDATE SKIP LOCKED, and at most one run per service holds a live lease:
-- claims on one service are serialized by a transaction-scoped advisory lock. A claim from
-- `queued`, or a takeover from a worker whose lease expired, counts as a new attempt. p_run
-- restricts the claim to one run (a sync request continuing its own run).
-- Returns (run_id, organization_id) of each claimed run.
CREATE FUNCTION gs_claim_runs(p_now timestamptz, p_owner text, p_lease_until timestamptz,
                              p_limit integer, p_run uuid)
RETURNS TABLE (run_id uuid, organization_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    r record;
    claimed integer := 0;
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;
    FOR r IN
        SELECT s.id, s.service_id, s.organization_id
        FROM sync_runs s
        WHERE (p_run IS NULL OR s.id = p_run)
          AND ((s.status = 'queued' AND s.run_after <= p_now)
               OR (s.status = 'running'
                   AND (s.lease_expires_at IS NULL OR s.lease_expires_at <= p_now)))
        ORDER BY s.run_after, s.created_at, s.id
        FOR UPDATE OF s SKIP LOCKED
    LOOP
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(724200, hashtext(r.service_id::text));
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM sync_runs o
            WHERE o.service_id = r.service_id AND o.id <> r.id AND o.status = 'running'
              AND o.lease_expires_at > p_now);
        UPDATE sync_runs s
        SET attempt = s.attempt + CASE WHEN s.status = 'queued' OR s.lease_owner IS NOT NULL
                                       THEN 1 ELSE 0 END,
            status = 'running',
            lease_owner = p_owner,
            lease_expires_at = p_lease_until,
            started_at = coalesce(s.started_at, p_now)
        WHERE s.id = r.id;
        run_id := r.id;
        organization_id := r.organization_id;
        RETURN NEXT;
        claimed := claimed + 1;
        EXIT WHEN claimed >= p_limit;
    END LOOP;
END;
$$;

-- Mark devices offline whose last sign of life is older than the online threshold of the active
-- services they are assigned to (the smallest one), or 10 minutes for unassigned devices.
-- `warning` and `error` are refinements of online and go offline too. Returns how many changed.
CREATE FUNCTION gs_mark_devices_offline(p_now timestamptz)
RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH stale AS (
        UPDATE devices d SET status = 'offline'
        WHERE d.status IN ('online', 'warning', 'error')
          AND d.deleted_at IS NULL
          AND greatest(d.last_seen, d.last_seen_online) IS NOT NULL
          AND greatest(d.last_seen, d.last_seen_online) < p_now - make_interval(secs => coalesce(
                (SELECT min((s.config->>'online_threshold_seconds')::integer)
                 FROM device_service_assignments a
                 JOIN device_services s ON s.id = a.service_id
                 WHERE a.device_id = d.id AND s.is_active
                   AND jsonb_typeof(s.config->'online_threshold_seconds') = 'number'),
                600))
        RETURNING 1
    )
    SELECT count(*) FROM stale
$$;

-- Delete webhook deliveries received before p_before, at most p_limit per call (the tick calls
-- it every minute, so a backlog drains without one long lock). Returns how many were deleted.
CREATE FUNCTION gs_prune_webhook_deliveries(p_before timestamptz, p_limit integer)
RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH gone AS (
        DELETE FROM webhook_deliveries
        WHERE id IN (SELECT id FROM webhook_deliveries WHERE received_at < p_before
                     ORDER BY received_at LIMIT greatest(p_limit, 0))
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;

-- Finds the devices the offline sweep may change without scanning the registry.
CREATE INDEX devices_live_status_idx ON devices (last_seen)
    WHERE status IN ('online', 'warning', 'error') AND deleted_at IS NULL;

REVOKE ALL ON FUNCTION gs_queue_due_services(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION gs_claim_runs(timestamptz, text, timestamptz, integer, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION gs_mark_devices_offline(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION gs_prune_webhook_deliveries(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gs_queue_due_services(timestamptz, integer) TO golioth_sync_app;
GRANT EXECUTE ON FUNCTION gs_claim_runs(timestamptz, text, timestamptz, integer, uuid) TO golioth_sync_app;
GRANT EXECUTE ON FUNCTION gs_mark_devices_offline(timestamptz) TO golioth_sync_app;
GRANT EXECUTE ON FUNCTION gs_prune_webhook_deliveries(timestamptz, integer) TO golioth_sync_app;
