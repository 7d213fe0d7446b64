-- Reverse of 0002_app_role.up.sql. The role itself stays: it is cluster-wide and other databases
-- of the cluster may use it; only this database's grants are removed.
REVOKE EXECUTE ON FUNCTION golioth_sync_log_drop_partitions(timestamptz) FROM golioth_sync_app;
REVOKE EXECUTE ON FUNCTION golioth_sync_log_ensure_partitions(timestamptz, integer) FROM golioth_sync_app;
GRANT EXECUTE ON FUNCTION golioth_sync_log_ensure_partitions(timestamptz, integer) TO PUBLIC;
GRANT EXECUTE ON FUNCTION golioth_sync_log_drop_partitions(timestamptz) TO PUBLIC;
ALTER FUNCTION golioth_sync_log_drop_partitions(timestamptz) RESET search_path;
ALTER FUNCTION golioth_sync_log_drop_partitions(timestamptz) SECURITY INVOKER;
ALTER FUNCTION golioth_sync_log_ensure_partitions(timestamptz, integer) RESET search_path;
ALTER FUNCTION golioth_sync_log_ensure_partitions(timestamptz, integer) SECURITY INVOKER;
REVOKE ALL ON golioth_sync_log FROM golioth_sync_app;
REVOKE ALL ON devices, device_services, device_service_assignments, sync_runs, device_conflicts,
    webhook_deliveries, device_telemetry FROM golioth_sync_app;
REVOKE ALL ON organizations, organization_members FROM golioth_sync_app;
REVOKE USAGE ON SCHEMA public FROM golioth_sync_app;
