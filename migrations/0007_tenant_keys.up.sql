-- One foreign key per parent, carrying the tenant (DESIGN §9). Postgres checks a foreign key
-- with one query per inserted row, so every child row paid a separate organization check on
-- top of its device / service / run checks: a 10,000-device first sync made ~60,000 such
-- checks, and a delivery five. Each child now references its parent by (organization_id, id),
-- which checks both in one probe and is stronger than before: a row can no longer point at a
-- device, service or run of another organization. Deleting an organization still removes
-- everything: it cascades to its devices, services and runs, and from them to their children.

ALTER TABLE device_services ADD CONSTRAINT device_services_org_id_key UNIQUE (organization_id, id);
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_org_id_key UNIQUE (organization_id, id);
-- The same columns as devices_org_idx, now unique so it can be referenced (no extra index).
CREATE UNIQUE INDEX devices_org_id_key ON devices (organization_id, id);
DROP INDEX devices_org_idx;
ALTER TABLE devices ADD CONSTRAINT devices_org_id_key UNIQUE USING INDEX devices_org_id_key;

ALTER TABLE device_service_assignments
    DROP CONSTRAINT device_service_assignments_organization_id_fkey,
    DROP CONSTRAINT device_service_assignments_device_id_fkey,
    DROP CONSTRAINT device_service_assignments_service_id_fkey,
    ADD CONSTRAINT device_service_assignments_device_fkey FOREIGN KEY (organization_id, device_id)
        REFERENCES devices (organization_id, id) ON DELETE CASCADE,
    ADD CONSTRAINT device_service_assignments_service_fkey FOREIGN KEY (organization_id, service_id)
        REFERENCES device_services (organization_id, id) ON DELETE CASCADE;

ALTER TABLE sync_runs
    DROP CONSTRAINT sync_runs_organization_id_fkey,
    DROP CONSTRAINT sync_runs_service_id_fkey,
    ADD CONSTRAINT sync_runs_service_fkey FOREIGN KEY (organization_id, service_id)
        REFERENCES device_services (organization_id, id) ON DELETE CASCADE;

ALTER TABLE sync_run_seen
    DROP CONSTRAINT sync_run_seen_organization_id_fkey,
    DROP CONSTRAINT sync_run_seen_run_id_fkey,
    ADD CONSTRAINT sync_run_seen_run_fkey FOREIGN KEY (organization_id, run_id)
        REFERENCES sync_runs (organization_id, id) ON DELETE CASCADE;

-- device_id is NULL for a conflict about a Golioth device with no local twin: as before, the
-- device key is then not checked (MATCH SIMPLE); the service key always is.
ALTER TABLE device_conflicts
    DROP CONSTRAINT device_conflicts_organization_id_fkey,
    DROP CONSTRAINT device_conflicts_device_id_fkey,
    DROP CONSTRAINT device_conflicts_service_id_fkey,
    ADD CONSTRAINT device_conflicts_device_fkey FOREIGN KEY (organization_id, device_id)
        REFERENCES devices (organization_id, id) ON DELETE CASCADE,
    ADD CONSTRAINT device_conflicts_service_fkey FOREIGN KEY (organization_id, service_id)
        REFERENCES device_services (organization_id, id) ON DELETE CASCADE;

ALTER TABLE webhook_deliveries
    DROP CONSTRAINT webhook_deliveries_organization_id_fkey,
    DROP CONSTRAINT webhook_deliveries_service_id_fkey,
    ADD CONSTRAINT webhook_deliveries_service_fkey FOREIGN KEY (organization_id, service_id)
        REFERENCES device_services (organization_id, id) ON DELETE CASCADE;

ALTER TABLE device_telemetry
    DROP CONSTRAINT device_telemetry_organization_id_fkey,
    DROP CONSTRAINT device_telemetry_device_id_fkey,
    DROP CONSTRAINT device_telemetry_service_id_fkey,
    ADD CONSTRAINT device_telemetry_device_fkey FOREIGN KEY (organization_id, device_id)
        REFERENCES devices (organization_id, id) ON DELETE CASCADE,
    ADD CONSTRAINT device_telemetry_service_fkey FOREIGN KEY (organization_id, service_id)
        REFERENCES device_services (organization_id, id) ON DELETE CASCADE;
