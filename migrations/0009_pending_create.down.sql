-- Reverse of 0009_pending_create.up.sql.
ALTER TABLE device_service_assignments DROP COLUMN pending_create;
