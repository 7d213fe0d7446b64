-- Reverse of 0010_user_orgs.up.sql.
DROP FUNCTION gs_user_orgs(uuid);
