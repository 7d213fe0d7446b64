-- Reverse of 0003_tenant_isolation.up.sql.
DROP FUNCTION IF EXISTS gs_service_org(uuid);
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['organizations', 'organization_members', 'devices', 'device_services',
                             'device_service_assignments', 'sync_runs', 'golioth_sync_log',
                             'device_conflicts', 'webhook_deliveries', 'device_telemetry']
    LOOP
        EXECUTE format('DROP POLICY IF EXISTS owner_all ON %I', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;
DROP FUNCTION IF EXISTS gs_ts(timestamptz);
DROP FUNCTION IF EXISTS gs_current_org();
