-- The operator (the platform team running the control plane) is a principal of its own: its
-- tokens are not any organization's, and reach only the operator's routes.
CREATE TABLE operator_tokens (
    id INTEGER PRIMARY KEY,
    label TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- The capabilities an organization may grant its own plugins (JSON list; `secret:*` stands for
-- every secret); an organization without a row has the platform's default ceiling.
CREATE TABLE grant_ceilings (
    organization_id INTEGER PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    capabilities TEXT NOT NULL
);
