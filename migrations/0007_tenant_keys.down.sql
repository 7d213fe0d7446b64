-- Reverse of 0007_tenant_keys.up.sql: the single-column foreign keys of 0001 / 0006 again.
ALTER TABLE device_telemetry
    DROP CONSTRAINT device_telemetry_device_fkey,
    DROP CONSTRAINT device_telemetry_service_fkey,
    ADD CONSTRAINT device_telemetry_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES organizations (id) ON DELETE CASCADE,
    ADD CONSTRAINT device_telemetry_device_id_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE,
    ADD CONSTRAINT device_telemetry_service_id_fkey FOREIGN KEY (service_id)
        REFERENCES device_services (id) ON DELETE CASCADE;

ALTER TABLE webhook_deliveries
    DROP CONSTRAINT webhook_deliveries_service_fkey,
    ADD CONSTRAINT webhook_deliveries_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES organizations (id) ON DELETE CASCADE,
    ADD CONSTRAINT webhook_deliveries_service_id_fkey FOREIGN KEY (service_id)
        REFERENCES device_services (id) ON DELETE CASCADE;

ALTER TABLE device_conflicts
    DROP CONSTRAINT device_conflicts_device_fkey,
    DROP CONSTRAINT device_conflicts_service_fkey,
    ADD CONSTRAINT device_conflicts_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES organizations (id) ON DELETE CASCADE,
    ADD CONSTRAINT device_conflicts_device_id_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE,
    ADD CONSTRAINT device_conflicts_service_id_fkey FOREIGN KEY (service_id)
        REFERENCES device_services (id) ON DELETE CASCADE;

ALTER TABLE sync_run_seen
    DROP CONSTRAINT sync_run_seen_run_fkey,
    ADD CONSTRAINT sync_run_seen_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES organizations (id) ON DELETE CASCADE,
    ADD CONSTRAINT sync_run_seen_run_id_fkey FOREIGN KEY (run_id)
        REFERENCES sync_runs (id) ON DELETE CASCADE;

ALTER TABLE sync_runs
    DROP CONSTRAINT sync_runs_service_fkey,
    ADD CONSTRAINT sync_runs_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES organizations (id) ON DELETE CASCADE,
    ADD CONSTRAINT sync_runs_service_id_fkey FOREIGN KEY (service_id)
        REFERENCES device_services (id) ON DELETE CASCADE;

ALTER TABLE device_service_assignments
    DROP CONSTRAINT device_service_assignments_device_fkey,
    DROP CONSTRAINT device_service_assignments_service_fkey,
    ADD CONSTRAINT device_service_assignments_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES organizations (id) ON DELETE CASCADE,
    ADD CONSTRAINT device_service_assignments_device_id_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE,
    ADD CONSTRAINT device_service_assignments_service_id_fkey FOREIGN KEY (service_id)
        REFERENCES device_services (id) ON DELETE CASCADE;

ALTER TABLE devices DROP CONSTRAINT devices_org_id_key;
CREATE INDEX devices_org_idx ON devices (organization_id, id);
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_org_id_key;
ALTER TABLE device_services DROP CONSTRAINT device_services_org_id_key;
