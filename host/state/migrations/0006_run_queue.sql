-- The run queue lives in the state store, so that what waits survives a restart and several
-- control planes can later claim runs from one database.
--
-- A run is created `queued` with its inputs; the dispatcher claims the next one it may start
-- (one running run per environment, the organization under its limit, the control plane under
-- its own) and marks it `running`. An environment has at most one running run, and at most one
-- queued run per operation: a push that arrives while an auto-deploy waits updates the waiting
-- run instead of adding another.
ALTER TABLE runs ADD COLUMN inputs TEXT NOT NULL DEFAULT '{}';

DROP INDEX runs_one_active_per_environment;
CREATE UNIQUE INDEX runs_one_running_per_environment
    ON runs (environment_id) WHERE status = 'running';
CREATE UNIQUE INDEX runs_one_queued_per_operation
    ON runs (environment_id, operation) WHERE status = 'queued';
CREATE INDEX runs_queued ON runs (id) WHERE status = 'queued';

-- What the operator allows an organization beyond the platform's defaults; NULL is the default.
CREATE TABLE organization_limits (
    organization_id INTEGER PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    concurrent_runs INTEGER CHECK (concurrent_runs IS NULL OR concurrent_runs > 0)
);
