-- Berth state, first schema. Times are Unix milliseconds; JSON columns hold JSON text.

CREATE TABLE organizations (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- Only the SHA-256 of a token's secret is kept: a stolen state file grants no API access.
CREATE TABLE api_tokens (
    id              INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations (id),
    label           TEXT    NOT NULL,
    secret_sha256   TEXT    NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL
);

CREATE TABLE servers (
    id              INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations (id),
    name            TEXT    NOT NULL,
    host            TEXT    NOT NULL,
    port            INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    user            TEXT    NOT NULL,
    host_key        TEXT,
    ssh_key         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (organization_id, name),
    UNIQUE (id, organization_id)
);

CREATE TABLE projects (
    id              INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations (id),
    name            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (organization_id, name),
    UNIQUE (id, organization_id)
);

-- The composite foreign keys make "project and server belong to the environment's organization"
-- a property of the database, not only of the code that inserts.
CREATE TABLE environments (
    id              INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL,
    project_id      INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    stage           TEXT    NOT NULL CHECK (stage IN ('production', 'staging', 'development')),
    odoo_version    TEXT    NOT NULL,
    branch          TEXT,
    server_id       INTEGER NOT NULL,
    dev_mode        INTEGER NOT NULL,
    auto_deploy     INTEGER NOT NULL,
    domain          TEXT,
    cpus            REAL    NOT NULL,
    memory_mb       INTEGER NOT NULL,
    workers         INTEGER NOT NULL,
    odoo_image      TEXT,
    postgres_image  TEXT,
    http_port       INTEGER NOT NULL,
    webhook_secret  TEXT    NOT NULL,
    deployed        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    UNIQUE (project_id, name),
    FOREIGN KEY (project_id, organization_id) REFERENCES projects (id, organization_id),
    FOREIGN KEY (server_id, organization_id) REFERENCES servers (id, organization_id)
);

CREATE TABLE environment_secrets (
    environment_id INTEGER NOT NULL REFERENCES environments (id),
    name           TEXT    NOT NULL,
    value          TEXT    NOT NULL,
    PRIMARY KEY (environment_id, name)
) WITHOUT ROWID;

CREATE TABLE repositories (
    id              INTEGER PRIMARY KEY,
    level           TEXT    NOT NULL CHECK (level IN ('platform', 'organization', 'project')),
    organization_id INTEGER REFERENCES organizations (id),
    project_id      INTEGER REFERENCES projects (id),
    name            TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    branch          TEXT,
    created_at      INTEGER NOT NULL,
    CHECK ((level = 'platform' AND organization_id IS NULL AND project_id IS NULL)
        OR (level = 'organization' AND organization_id IS NOT NULL AND project_id IS NULL)
        OR (level = 'project' AND organization_id IS NOT NULL AND project_id IS NOT NULL))
);
-- One name per owner (NULL owners compare equal here, unlike in a UNIQUE constraint).
CREATE UNIQUE INDEX repositories_owner_name
    ON repositories (level, IFNULL(organization_id, 0), IFNULL(project_id, 0), name);

CREATE TABLE deployed_revisions (
    environment_id INTEGER NOT NULL REFERENCES environments (id),
    repository_id  INTEGER NOT NULL REFERENCES repositories (id),
    revision       TEXT    NOT NULL,
    PRIMARY KEY (environment_id, repository_id)
) WITHOUT ROWID;

CREATE TABLE plugins (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL,
    organization_id INTEGER REFERENCES organizations (id),
    role            TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    sha256          TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    enabled         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX plugins_owner_name_version
    ON plugins (IFNULL(organization_id, 0), name, version);

-- A grant's scope is its narrowest non-NULL id; the wider ids are filled in too, so that
-- "covers this environment" is one comparison per column.
CREATE TABLE grants (
    id              INTEGER PRIMARY KEY,
    plugin          TEXT    NOT NULL,
    capability      TEXT    NOT NULL,
    organization_id INTEGER REFERENCES organizations (id),
    project_id      INTEGER REFERENCES projects (id),
    environment_id  INTEGER REFERENCES environments (id),
    CHECK (project_id IS NULL OR organization_id IS NOT NULL),
    CHECK (environment_id IS NULL OR project_id IS NOT NULL)
);
CREATE UNIQUE INDEX grants_scope
    ON grants (plugin, capability, IFNULL(organization_id, 0), IFNULL(project_id, 0),
               IFNULL(environment_id, 0));

CREATE TABLE runs (
    id               INTEGER PRIMARY KEY,
    environment_id   INTEGER NOT NULL REFERENCES environments (id),
    operation        TEXT    NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    triggered_by     TEXT    NOT NULL,
    current_step     TEXT,
    error            TEXT,
    facts            TEXT    NOT NULL DEFAULT '{}',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER
);
-- The per-environment lock: at most one run queued or running, checked atomically by SQLite.
CREATE UNIQUE INDEX runs_one_active_per_environment
    ON runs (environment_id) WHERE status IN ('queued', 'running');
CREATE INDEX runs_environment ON runs (environment_id, id);

CREATE TABLE steps (
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    position    INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    status      TEXT    NOT NULL
        CHECK (status IN ('pending', 'running', 'done', 'skipped', 'failed', 'cancelled', 'interrupted')),
    summary     TEXT,
    error       TEXT,
    started_at  INTEGER,
    finished_at INTEGER,
    host_ms     INTEGER,
    PRIMARY KEY (run_id, position)
) WITHOUT ROWID;

CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    run_id  INTEGER NOT NULL REFERENCES runs (id),
    at      INTEGER NOT NULL,
    kind    TEXT    NOT NULL CHECK (kind IN ('log', 'progress', 'step', 'run')),
    level   TEXT,
    step    TEXT,
    message TEXT    NOT NULL,
    data    TEXT    NOT NULL
);
CREATE INDEX events_run ON events (run_id, id);

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    run_id     INTEGER REFERENCES runs (id),
    at         INTEGER NOT NULL,
    plugin     TEXT    NOT NULL,
    capability TEXT    NOT NULL,
    call       TEXT    NOT NULL,
    allowed    INTEGER NOT NULL,
    detail     TEXT    NOT NULL
);
CREATE INDEX audit_run ON audit (run_id, id);
