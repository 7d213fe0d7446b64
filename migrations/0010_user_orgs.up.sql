-- The organizations a user belongs to, for GET /api/v1/me (issue 29): the console names them and
-- lets a member of several switch. organization_members is under forced row level security keyed
-- by one organization, so a user's memberships across organizations can only be found by a
-- SECURITY DEFINER function. Like the other cross-tenant lookups it returns ids (and the
-- caller's own role in each); the organizations' names are then read one by one under RLS.
CREATE FUNCTION gs_user_orgs(p_user uuid)
RETURNS TABLE (organization_id uuid, role text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT m.organization_id, m.role
    FROM organization_members m
    WHERE m.user_id = p_user
    ORDER BY m.created_at, m.organization_id
    LIMIT 100
$$;

REVOKE ALL ON FUNCTION gs_user_orgs(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gs_user_orgs(uuid) TO golioth_sync_app;
