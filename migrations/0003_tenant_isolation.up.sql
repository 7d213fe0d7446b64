-- Tenant isolation enforced by the database (DESIGN §8): row level security, forced, on every
-- tenant table, keyed by the transaction-local setting app.organization_id that the store sets
-- at the start of every tenant-scoped transaction. Without the setting no tenant row is visible.
-- Cross-tenant discovery (which organization owns a service; which services are due; which runs
-- are claimable) goes only through SECURITY DEFINER functions that return ids, never rows.

CREATE FUNCTION gs_current_org() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('app.organization_id', true), '')::uuid
$$;

-- Timestamps leave the database as text in one fixed format (Spin cannot decode timestamptz).
CREATE FUNCTION gs_ts(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['organization_members', 'devices', 'device_services',
                             'device_service_assignments', 'sync_runs', 'golioth_sync_log',
                             'device_conflicts', 'webhook_deliveries', 'device_telemetry']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I TO golioth_sync_app
                        USING (organization_id = (SELECT gs_current_org()))
                        WITH CHECK (organization_id = (SELECT gs_current_org()))', t);
    END LOOP;
END
$$;

ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organizations TO golioth_sync_app
    USING (id = (SELECT gs_current_org()));

-- The owner (migrations, the harness) keeps full access: FORCE applies RLS to the owner too.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['organizations', 'organization_members', 'devices', 'device_services',
                             'device_service_assignments', 'sync_runs', 'golioth_sync_log',
                             'device_conflicts', 'webhook_deliveries', 'device_telemetry']
    LOOP
        EXECUTE format('CREATE POLICY owner_all ON %I TO CURRENT_USER USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;

-- Which organization owns a service (the webhook knows only the service id).
CREATE FUNCTION gs_service_org(p_service uuid) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT organization_id FROM device_services WHERE id = p_service
$$;

REVOKE ALL ON FUNCTION gs_service_org(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gs_current_org() TO golioth_sync_app;
GRANT EXECUTE ON FUNCTION gs_ts(timestamptz) TO golioth_sync_app;
GRANT EXECUTE ON FUNCTION gs_service_org(uuid) TO golioth_sync_app;
