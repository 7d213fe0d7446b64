-- Reverse of 0006_run_seen.up.sql.
ALTER INDEX devices_hardware_ids_idx RESET (fastupdate);
DROP FUNCTION IF EXISTS gs_devices_with_hardware_ids(text[]);
DROP FUNCTION IF EXISTS gs_analyze_sync_tables();
DROP TABLE IF EXISTS sync_run_seen;
