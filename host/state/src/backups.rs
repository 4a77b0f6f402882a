//! Storage targets, backups and backup policies.
//!
//! A backup row is written only when its run succeeded, from the facts the backup plugin recorded
//! while the archive streamed (key, size, SHA-256, manifest): a failed or partial upload never
//! becomes a backup. Pruned backups keep their row (with `pruned_at`) as history.

use std::collections::BTreeMap;

use rusqlite::{Row, params};
use serde::{Deserialize, Serialize};

use crate::{Record, Result, SqlResultExt, StateError, Store, all, insert_returning, now_ms, one};

/// The storage-backend plugins a target may name.
pub const BACKENDS: [&str; 3] = ["s3", "ftp", "sftp"];

/// A storage target as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageTarget {
    pub id: i64,
    pub organization_id: i64,
    pub name: String,
    pub backend: String,
    pub settings: BTreeMap<String, String>,
    pub user: String,
    /// The host key an SFTP target's server must offer (an OpenSSH public key line), pinned on
    /// this target at its first contact.
    pub host_key: Option<String>,
    pub created_at: i64,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct NewStorageTarget {
    pub name: String,
    pub backend: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for NewStorageTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewStorageTarget")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("settings", &self.settings)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Record for StorageTarget {
    const SELECT: &'static str = "id, organization_id, name, backend, settings, user, \
        created_at, host_key FROM storage_targets";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        let settings: String = row.get(4)?;
        Ok(StorageTarget {
            id: row.get(0)?,
            organization_id: row.get(1)?,
            name: row.get(2)?,
            backend: row.get(3)?,
            settings: serde_json::from_str(&settings).unwrap_or_default(),
            user: row.get(5)?,
            host_key: row.get(7)?,
            created_at: row.get(6)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub id: i64,
    pub environment_id: i64,
    pub target_id: i64,
    pub run_id: i64,
    pub key: String,
    /// `manual` or `scheduled`.
    pub kind: String,
    pub size: u64,
    pub sha256: String,
    /// Odoo and PostgreSQL versions, modules: what the archive's manifest says, and more.
    pub manifest: serde_json::Value,
    pub created_at: i64,
    pub pruned_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewBackup {
    pub environment_id: i64,
    pub target_id: i64,
    pub run_id: i64,
    pub key: String,
    pub kind: String,
    pub size: u64,
    pub sha256: String,
    pub manifest: serde_json::Value,
}

impl Record for Backup {
    const SELECT: &'static str = "id, environment_id, target_id, run_id, key, kind, size, sha256, \
        manifest, created_at, pruned_at FROM backups";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        let manifest: String = row.get(8)?;
        Ok(Backup {
            id: row.get(0)?,
            environment_id: row.get(1)?,
            target_id: row.get(2)?,
            run_id: row.get(3)?,
            key: row.get(4)?,
            kind: row.get(5)?,
            size: row.get::<_, i64>(6)? as u64,
            sha256: row.get(7)?,
            manifest: serde_json::from_str(&manifest).unwrap_or_default(),
            created_at: row.get(9)?,
            pruned_at: row.get(10)?,
        })
    }
}

/// Back up every `every_hours` to `target`, keep `keep_daily` daily, `keep_weekly` weekly and
/// `keep_monthly` monthly backups (Odoo.sh keeps 7, 4 and 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupPolicy {
    pub environment_id: i64,
    pub target: String,
    #[serde(default = "default_every_hours")]
    pub every_hours: u32,
    #[serde(default = "default_daily")]
    pub keep_daily: u32,
    #[serde(default = "default_weekly")]
    pub keep_weekly: u32,
    #[serde(default = "default_monthly")]
    pub keep_monthly: u32,
}

fn default_every_hours() -> u32 {
    24
}
fn default_daily() -> u32 {
    7
}
fn default_weekly() -> u32 {
    4
}
fn default_monthly() -> u32 {
    3
}

impl Store {
    pub fn create_storage_target(
        &self,
        org_id: i64,
        new: NewStorageTarget,
    ) -> Result<StorageTarget> {
        crate::check_name("storage target", &new.name)?;
        if !BACKENDS.contains(&new.backend.as_str()) {
            return Err(StateError::Invalid(format!(
                "backend {:?}: use one of {}",
                new.backend,
                BACKENDS.join(", ")
            )));
        }
        crate::require("user", &new.user)?;
        crate::require("secret", &new.secret)?;
        let settings = serde_json::to_string(&new.settings).expect("a map of strings");
        let secret = self.seal(&new.secret);
        self.write(|conn| {
            insert_returning(
                conn,
                "INSERT INTO storage_targets (organization_id, name, backend, settings, user,
                     secret, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    org_id,
                    new.name,
                    new.backend,
                    settings,
                    new.user,
                    secret,
                    now_ms()
                ],
            )
            .unique(|| format!("storage target {:?}", new.name))
        })
    }

    pub fn storage_targets(&self, org_id: i64) -> Result<Vec<StorageTarget>> {
        self.read(|conn| all(conn, "WHERE organization_id = ?1 ORDER BY name", [org_id]))
    }

    pub fn storage_target(&self, org_id: i64, name: &str) -> Result<StorageTarget> {
        self.read(|conn| {
            one(
                conn,
                "WHERE organization_id = ?1 AND name = ?2",
                params![org_id, name],
            )
            .found(|| format!("storage target {name:?}"))
        })
    }

    /// Pins `key` (an OpenSSH public key line, offered at the first contact) as the host key of
    /// target `target_id`'s SFTP server unless one is pinned; answers the key pinned now.
    pub fn pin_storage_target_host_key(&self, target_id: i64, key: &str) -> Result<String> {
        crate::require("host key", key)?;
        self.write(|conn| {
            crate::orgs::pin_once(conn, "storage_targets", target_id, key, || {
                format!("storage target {target_id}")
            })
        })
    }

    /// The target's secret, for the host's protocol client only.
    pub fn storage_target_secret(&self, target_id: i64) -> Result<String> {
        let stored: String = self.read(|conn| {
            conn.query_row(
                "SELECT secret FROM storage_targets WHERE id = ?1",
                params![target_id],
                |row| row.get(0),
            )
            .found(|| format!("storage target {target_id}"))
        })?;
        self.unseal(&stored)
    }

    pub fn record_backup(&self, new: NewBackup) -> Result<Backup> {
        self.write(|conn| {
            insert_returning(
                conn,
                "INSERT INTO backups (environment_id, target_id, run_id, key, kind, size, sha256,
                     manifest, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    new.environment_id,
                    new.target_id,
                    new.run_id,
                    new.key,
                    new.kind,
                    new.size as i64,
                    new.sha256,
                    new.manifest.to_string(),
                    now_ms()
                ],
            )
            .unique(|| format!("backup {:?}", new.key))
        })
    }

    /// An environment's backups, newest first (pruned ones too, marked).
    pub fn backups(&self, env_id: i64) -> Result<Vec<Backup>> {
        self.read(|conn| {
            all(
                conn,
                "WHERE environment_id = ?1 ORDER BY created_at DESC, id DESC",
                [env_id],
            )
        })
    }

    pub fn backup(&self, env_id: i64, id: i64) -> Result<Backup> {
        self.read(|conn| {
            one(
                conn,
                "WHERE environment_id = ?1 AND id = ?2",
                params![env_id, id],
            )
            .found(|| format!("backup {id}"))
        })
    }

    /// Marks the backups stored under `keys` on `target_id` as pruned.
    pub fn mark_pruned(&self, target_id: i64, keys: &[String]) -> Result<()> {
        self.write(|conn| {
            for key in keys {
                conn.execute(
                    "UPDATE backups SET pruned_at = ?1
                     WHERE target_id = ?2 AND key = ?3 AND pruned_at IS NULL",
                    params![now_ms(), target_id, key],
                )?;
            }
            Ok(())
        })
    }

    pub fn set_backup_policy(&self, org_id: i64, policy: &BackupPolicy) -> Result<()> {
        let target = self.storage_target(org_id, &policy.target)?;
        self.environment(org_id, policy.environment_id)?;
        if policy.every_hours == 0 || policy.keep_daily == 0 {
            return Err(StateError::Invalid(
                "every_hours and keep_daily must be at least 1".into(),
            ));
        }
        self.write(|conn| {
            conn.execute(
                "INSERT INTO backup_policies (environment_id, target_id, every_hours, keep_daily,
                     keep_weekly, keep_monthly)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (environment_id) DO UPDATE SET target_id = ?2, every_hours = ?3,
                     keep_daily = ?4, keep_weekly = ?5, keep_monthly = ?6",
                params![
                    policy.environment_id,
                    target.id,
                    policy.every_hours,
                    policy.keep_daily,
                    policy.keep_weekly,
                    policy.keep_monthly
                ],
            )?;
            Ok(())
        })
    }

    /// Every environment's backup policy, with its organization.
    pub fn backup_policies(&self) -> Result<Vec<(i64, BackupPolicy)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT e.organization_id, p.environment_id, t.name, p.every_hours, p.keep_daily,
                     p.keep_weekly, p.keep_monthly
                 FROM backup_policies p
                 JOIN environments e ON e.id = p.environment_id
                 JOIN storage_targets t ON t.id = p.target_id
                 ORDER BY p.environment_id",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get(0)?,
                    BackupPolicy {
                        environment_id: row.get(1)?,
                        target: row.get(2)?,
                        every_hours: row.get(3)?,
                        keep_daily: row.get(4)?,
                        keep_weekly: row.get(5)?,
                        keep_monthly: row.get(6)?,
                    },
                ))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn backup_policy(&self, env_id: i64) -> Result<Option<BackupPolicy>> {
        Ok(self
            .backup_policies()?
            .into_iter()
            .map(|(_, p)| p)
            .find(|p| p.environment_id == env_id))
    }
}
