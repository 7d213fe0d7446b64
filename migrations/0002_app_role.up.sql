-- The application role every host connects as (DESIGN §8): it owns nothing, cannot bypass row
-- level security, and is granted exactly the statements the store issues. Migrations and the
-- partition functions run with the migration owner's rights. Roles are cluster-wide, so the role
-- is created only when absent; production sets its password out of band (ALTER ROLE … PASSWORD).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'golioth_sync_app') THEN
        CREATE ROLE golioth_sync_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO golioth_sync_app;
GRANT SELECT ON organizations, organization_members TO golioth_sync_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    devices, device_services, device_service_assignments, sync_runs, device_conflicts,
    webhook_deliveries, device_telemetry
    TO golioth_sync_app;
GRANT SELECT, INSERT ON golioth_sync_log TO golioth_sync_app;

-- Partition maintenance is called by the tick, as the application role: run with the owner's
-- rights and a fixed search_path.
ALTER FUNCTION golioth_sync_log_ensure_partitions(timestamptz, integer) SECURITY DEFINER;
ALTER FUNCTION golioth_sync_log_ensure_partitions(timestamptz, integer) SET search_path = public, pg_temp;
ALTER FUNCTION golioth_sync_log_drop_partitions(timestamptz) SECURITY DEFINER;
ALTER FUNCTION golioth_sync_log_drop_partitions(timestamptz) SET search_path = public, pg_temp;
REVOKE ALL ON FUNCTION golioth_sync_log_ensure_partitions(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION golioth_sync_log_drop_partitions(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION golioth_sync_log_ensure_partitions(timestamptz, integer) TO golioth_sync_app;
GRANT EXECUTE ON FUNCTION golioth_sync_log_drop_partitions(timestamptz) TO golioth_sync_app;
