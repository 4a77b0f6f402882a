-- Tokens end: at an expiry their creator chose, or when revoked. Neither is ever undone.
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE api_tokens ADD COLUMN revoked_at INTEGER;
