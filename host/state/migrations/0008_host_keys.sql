-- An SFTP storage target pins its server's host key on its own record (its organization's), as a
-- server does: never in a file every tenant shares.
ALTER TABLE storage_targets ADD COLUMN host_key TEXT;

-- A server-wide capability (a command as the server's SSH user reaches every environment on it) is
-- granted for one server of the organization: a grant's scope may be a server, with that server's
-- organization and never a project or an environment. SQLite adds no table constraint in place
-- (and rebuilding the table would touch the grant requests that refer to it), so triggers hold the
-- rule.
ALTER TABLE grants ADD COLUMN server_id INTEGER REFERENCES servers (id);
CREATE TRIGGER grants_server_scope_insert BEFORE INSERT ON grants
WHEN NEW.server_id IS NOT NULL
    AND (NEW.project_id IS NOT NULL OR NEW.environment_id IS NOT NULL
         OR NOT EXISTS (SELECT 1 FROM servers
                        WHERE id = NEW.server_id AND organization_id IS NEW.organization_id))
BEGIN
    SELECT RAISE(ABORT, 'a server''s grant names its server''s organization, no project nor environment');
END;
CREATE TRIGGER grants_server_scope_update BEFORE UPDATE ON grants
WHEN NEW.server_id IS NOT NULL
    AND (NEW.project_id IS NOT NULL OR NEW.environment_id IS NOT NULL
         OR NOT EXISTS (SELECT 1 FROM servers
                        WHERE id = NEW.server_id AND organization_id IS NEW.organization_id))
BEGIN
    SELECT RAISE(ABORT, 'a server''s grant names its server''s organization, no project nor environment');
END;
DROP INDEX grants_scope;
CREATE UNIQUE INDEX grants_scope
    ON grants (plugin, capability, IFNULL(organization_id, 0), IFNULL(project_id, 0),
               IFNULL(environment_id, 0), IFNULL(server_id, 0));
