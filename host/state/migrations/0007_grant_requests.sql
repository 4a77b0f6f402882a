-- Beyond its grant ceiling an organization's grant is a request: the operator approves it (which
-- creates the grant) or denies it. At most one request of a grant is pending at a time.
CREATE TABLE grant_requests (
    id              INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    plugin          TEXT    NOT NULL,
    capability      TEXT    NOT NULL,
    environment_id  INTEGER REFERENCES environments (id) ON DELETE CASCADE,
    -- The server, for a server-wide capability (then no environment).
    server_id       INTEGER REFERENCES servers (id) ON DELETE CASCADE,
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'denied')),
    created_at      INTEGER NOT NULL,
    decided_at      INTEGER,
    -- What the operator said with a denial.
    reason          TEXT,
    -- The grant an approval created.
    grant_id        INTEGER REFERENCES grants (id) ON DELETE SET NULL,
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    CHECK (environment_id IS NULL OR server_id IS NULL)
);
CREATE UNIQUE INDEX grant_requests_one_pending
    ON grant_requests (organization_id, plugin, capability, IFNULL(environment_id, 0),
                       IFNULL(server_id, 0))
    WHERE status = 'pending';
CREATE INDEX grant_requests_pending ON grant_requests (id) WHERE status = 'pending';

-- What an organization may upload, where the operator set it; NULL is the platform's default.
CREATE TABLE upload_quotas (
    organization_id     INTEGER PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    max_plugins         INTEGER CHECK (max_plugins IS NULL OR max_plugins >= 0),
    uploads_per_hour    INTEGER CHECK (uploads_per_hour IS NULL OR uploads_per_hour >= 0),
    upload_mib_per_hour INTEGER CHECK (upload_mib_per_hour IS NULL OR upload_mib_per_hour >= 0)
);

-- Every upload the control plane compiled (accepted or refused), for the hourly quotas; rows
-- older than the window are removed as new ones are written.
CREATE TABLE plugin_uploads (
    id              INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    at              INTEGER NOT NULL,
    bytes           INTEGER NOT NULL
);
CREATE INDEX plugin_uploads_window ON plugin_uploads (organization_id, at);
