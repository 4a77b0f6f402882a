//! The facts a lifecycle plugin records on its run (`operation.note`) that the host reads back.
//! Any other fact is only shown with the run.

/// auto-deploy: `fast` or `full`, and why.
pub const PATH: &str = "path";
pub const REASON: &str = "reason";

/// backup: where the archive went and what it is; the engine records the backup from these.
pub const BACKUP_TARGET: &str = "backup-target";
pub const BACKUP_KEY: &str = "backup-key";
/// Bytes, in decimal.
pub const BACKUP_SIZE: &str = "backup-size";
/// Lowercase hex.
pub const BACKUP_SHA256: &str = "backup-sha256";
/// The archive's `manifest.json`, as JSON.
pub const BACKUP_MANIFEST: &str = "backup-manifest";
/// The keys retention deleted, as a JSON list.
pub const BACKUP_PRUNED: &str = "backup-pruned";
