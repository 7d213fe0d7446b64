-- The Golioth ids a run's listing has seen, one row each, written in bulk with every listing
-- slice. Before this table they lived in the run's cursor, which every slice rewrites: at
-- 100,000 devices that was ~2.6 MB of JSON per slice and grew with the fleet (DESIGN §9: flat
-- memory, resumable slices). The rows deduplicate pages that shifted under a concurrent change
-- and give the local-only pass its "not seen" set; they are deleted when the run ends.
CREATE TABLE sync_run_seen (
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    run_id          uuid NOT NULL REFERENCES sync_runs(id) ON DELETE CASCADE,
    external_id     text NOT NULL,
    -- Also the tenant index (it starts with organization_id); the one index keeps bulk inserts
    -- cheap and is the only path for the lookups by (run, id).
    PRIMARY KEY (organization_id, run_id, external_id)
);

ALTER TABLE sync_run_seen ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_run_seen FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sync_run_seen TO golioth_sync_app
    USING (organization_id = (SELECT gs_current_org()))
    WITH CHECK (organization_id = (SELECT gs_current_org()));
CREATE POLICY owner_all ON sync_run_seen TO CURRENT_USER USING (true) WITH CHECK (true);

GRANT SELECT, INSERT, DELETE ON sync_run_seen TO golioth_sync_app;

-- Planner statistics for the tables a first sync fills. A 100,000-device first sync grows
-- devices, assignments and the seen ids from nothing within minutes; until autovacuum (where it
-- runs at all) analyzes them, the planner believes they are empty and picks scans whose cost
-- grows with every page. The engine calls this as a run's inserts pass 5,000 · 2^k rows, so a
-- run analyzes O(log n) times. Owner's rights: the application role cannot ANALYZE tables it
-- does not own; this is the only thing it can make the owner do here.
CREATE FUNCTION gs_analyze_sync_tables() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    ANALYZE devices;
    ANALYZE device_service_assignments;
    ANALYZE sync_run_seen;
END
$$;
REVOKE ALL ON FUNCTION gs_analyze_sync_tables() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gs_analyze_sync_tables() TO golioth_sync_app;

-- The hardware-id index answers every first-sync page (a few hundred ids at a time). With GIN's
-- fast update, new entries wait in a pending list that every search scans in full until VACUUM
-- or autoanalyze merges it (up to gin_pending_list_limit, 4 MB): a first sync inserting devices
-- page after page made each lookup slower than the last. Entries go straight into the index.
ALTER INDEX devices_hardware_ids_idx SET (fastupdate = off);

-- First-sync matching by hardware id, for the current organization only (app.organization_id):
-- the ids of its live devices holding any of p_hw. Under row level security the planner may not
-- use an index for an operator that is not LEAKPROOF, and the array operators (&&, @>) are not,
-- so the same lookup in the page load scanned every device of the organization and compared
-- each against the page's few hundred ids (1.6 s per page at 100,000 devices). Returns ids only;
-- the caller reads the rows under its own policies.
CREATE FUNCTION gs_devices_with_hardware_ids(p_hw text[]) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT id FROM devices
    WHERE organization_id = gs_current_org() AND deleted_at IS NULL AND hardware_ids && p_hw
$$;
REVOKE ALL ON FUNCTION gs_devices_with_hardware_ids(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gs_devices_with_hardware_ids(text[]) TO golioth_sync_app;
