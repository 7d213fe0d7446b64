-- Reverse of 0001_schema.up.sql.
DROP TABLE IF EXISTS device_telemetry;
DROP TABLE IF EXISTS webhook_deliveries;
DROP TABLE IF EXISTS device_conflicts;
DROP FUNCTION IF EXISTS golioth_sync_log_drop_partitions(timestamptz);
DROP FUNCTION IF EXISTS golioth_sync_log_ensure_partitions(timestamptz, integer);
DROP TABLE IF EXISTS golioth_sync_log;
DROP TABLE IF EXISTS sync_runs;
DROP TABLE IF EXISTS device_service_assignments;
DROP TABLE IF EXISTS device_services;
DROP TRIGGER IF EXISTS devices_bump_version ON devices;
DROP TABLE IF EXISTS devices;
DROP FUNCTION IF EXISTS devices_bump_version();
DROP TABLE IF EXISTS organization_members;
DROP TABLE IF EXISTS organizations;
