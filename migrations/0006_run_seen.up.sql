-- The Golioth ids a run's listing has seen, one row each, written in bulk with every listing
-- slice. Before this table they lived in the run's cursor, which every slice rewrites: at
-- 100,000 devices that was ~2.6 MB of JSON per slice and grew with the fleet (DESIGN §9: flat
-- memory, resumable slices). The rows deduplicate pages that shifted under a concurrent change
-- and give the local-only pass its "not seen" set; they are deleted when the run ends.
CREATE TABLE sync_run_seen (
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    run_id          uuid NOT NULL REFERENCES sync_runs(id) ON DELETE CASCADE,
    external_id     text NOT NULL,
    PRIMARY KEY (run_id, external_id)
);
CREATE INDEX sync_run_seen_org_idx ON sync_run_seen (organization_id, run_id);

ALTER TABLE sync_run_seen ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_run_seen FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sync_run_seen TO golioth_sync_app
    USING (organization_id = (SELECT gs_current_org()))
    WITH CHECK (organization_id = (SELECT gs_current_org()));
CREATE POLICY owner_all ON sync_run_seen TO CURRENT_USER USING (true) WITH CHECK (true);

GRANT SELECT, INSERT, DELETE ON sync_run_seen TO golioth_sync_app;
