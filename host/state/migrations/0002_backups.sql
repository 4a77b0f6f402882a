-- Storage targets: where an organization's backups live. `backend` names the storage-backend
-- plugin (s3, ftp, sftp) that holds the provider logic; `settings` is what that plugin reads
-- (provider, bucket, host, prefix…). `secret` (an S3 secret key, an FTP password, an SFTP private
-- key) is given only to the host's protocol client, never to a plugin, and never returned by the API.
CREATE TABLE storage_targets (
    id              INTEGER PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations (id),
    name            TEXT    NOT NULL,
    backend         TEXT    NOT NULL,
    settings        TEXT    NOT NULL,
    user            TEXT    NOT NULL,
    secret          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (organization_id, name)
);

-- A protected environment's data is replaced only when the environment's name is typed back.
ALTER TABLE environments ADD COLUMN protected INTEGER NOT NULL DEFAULT 0;
UPDATE environments SET protected = 1 WHERE stage = 'production';

-- Scheduled backups of an environment, pruned grandfather-father-son.
CREATE TABLE backup_policies (
    environment_id INTEGER PRIMARY KEY REFERENCES environments (id),
    target_id      INTEGER NOT NULL REFERENCES storage_targets (id),
    every_hours    INTEGER NOT NULL CHECK (every_hours >= 1),
    keep_daily     INTEGER NOT NULL CHECK (keep_daily >= 1),
    keep_weekly    INTEGER NOT NULL CHECK (keep_weekly >= 0),
    keep_monthly   INTEGER NOT NULL CHECK (keep_monthly >= 0)
);

-- A backup exists once its run succeeded: the archive was uploaded whole and its size and SHA-256
-- are the ones measured while it streamed. `manifest` holds the versions and modules it records.
CREATE TABLE backups (
    id             INTEGER PRIMARY KEY,
    environment_id INTEGER NOT NULL REFERENCES environments (id),
    target_id      INTEGER NOT NULL REFERENCES storage_targets (id),
    run_id         INTEGER NOT NULL REFERENCES runs (id),
    key            TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('manual', 'scheduled')),
    size           INTEGER NOT NULL,
    sha256         TEXT    NOT NULL,
    manifest       TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    pruned_at      INTEGER,
    UNIQUE (target_id, key)
);
CREATE INDEX backups_by_environment ON backups (environment_id, created_at);
