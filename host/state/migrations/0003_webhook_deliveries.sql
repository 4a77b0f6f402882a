-- Webhook deliveries an environment has accepted, by the id their sender gives them (GitHub's
-- X-GitHub-Delivery, GitLab's X-Gitlab-Event-UUID): a delivery sent again starts nothing.
CREATE TABLE webhook_deliveries (
    environment_id INTEGER NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    delivery TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (environment_id, delivery)
);
