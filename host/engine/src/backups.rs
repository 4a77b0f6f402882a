//! Backups and restores as runs: what the engine adds around the `backup` and `restore` lifecycle
//! plugins.
//!
//! - A run reaches the organization's storage targets through [`targets_for`]: each target's
//!   storage-backend plugin, invoked with that target's settings and credentials only, never the
//!   environment's server. The lifecycle names a target; it never holds a credential.
//! - A backup becomes a row only when its run succeeded ([`record`]), from what the plugin measured
//!   while the archive streamed; the keys its retention step pruned are marked.
//! - A restore replaces all current data: [`Engine::start_restore`] demands an explicit
//!   confirmation, and the environment's name typed back when it is protected. It restores a
//!   recorded backup, or any object of a target (an Odoo or Odoo.sh archive, a custom-format dump).
//! - [`scheduler`] starts the scheduled backups of every policy that is due.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::settings::Secret;
use berth_runtime::{
    Capability, Grant, Invocation, Limits, Role, StorageTarget, StorageTargets, TargetBackend,
    Targets,
};
use berth_state::{Backup, NewBackup, Run, StateError};

use crate::{Engine, EngineError};

/// How a restore was confirmed, as the API received it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Confirmation {
    /// "Restoring a backup replaces all current data": must be true.
    #[serde(default)]
    pub replace_all_data: bool,
    /// For a protected environment: its name, typed back.
    #[serde(default)]
    pub environment_name: Option<String>,
}

/// What a restore restores from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    /// A backup Berth made and recorded: held to its recorded size and SHA-256.
    Backup(i64),
    /// An object on one of the organization's targets that Berth did not write: an archive from
    /// Odoo's database manager or Odoo.sh, or a `pg_dump --format=c` of the database alone.
    Object { target: String, key: String },
}

/// The object key of a new backup: `<project>/<environment>/<UTC time>-run<id>.zip`. The time sorts
/// and is what retention reads back.
pub fn backup_key(project: &str, environment: &str, run_id: i64, unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{project}/{environment}/{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z-run{run_id}.zip",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The organization's storage targets, each behind its platform storage-backend plugin.
pub(crate) fn targets_for(
    engine: &Arc<Engine>,
    org_id: i64,
    base: &Invocation,
) -> Result<Targets, String> {
    let mut backends = BTreeMap::new();
    for target in engine
        .store
        .storage_targets(org_id)
        .map_err(|e| e.to_string())?
    {
        let Some(plugin) = engine
            .plugins
            .platform()
            .get(&target.backend)
            .filter(|p| p.description().role == Role::StorageBackend)
            .cloned()
        else {
            // A target whose backend is not installed is simply not reachable in this run.
            continue;
        };
        let secret = engine
            .store
            .storage_target_secret(target.id)
            .map_err(|e| e.to_string())?;
        let scope = base.env_ref();
        let grants = plugin
            .description()
            .capabilities
            .iter()
            .filter(|c| **c == Capability::STORAGE)
            .map(|c| Grant {
                plugin: plugin.name().to_string(),
                capability: c.clone(),
                scope: berth_runtime::Scope::environment(
                    &scope.organization,
                    &scope.project,
                    &scope.environment,
                ),
            })
            .collect();
        let storage = StorageTargets {
            targets: BTreeMap::from([(
                target.name.clone(),
                StorageTarget {
                    settings: target.settings.clone(),
                    user: target.user.clone(),
                    secret: Secret::new(secret),
                },
            )]),
            known_hosts: engine.known_hosts.clone(),
        };
        let invocation = Invocation {
            grants: Arc::new(grants),
            settings: Arc::default(),
            workspace: None,
            server: None,
            mirrors: None,
            context: None,
            storage: Some(Arc::new(storage)),
            targets: None,
            limits: Limits::step(),
            ..base.clone()
        };
        backends.insert(target.name, TargetBackend { plugin, invocation });
    }
    Ok(Targets {
        runtime: engine.runtime.clone(),
        backends,
    })
}

/// After a successful `backup` run: the backup's row, and the pruned ones marked.
pub(crate) fn record(engine: &Engine, run: &Run, facts: &serde_json::Value) -> Result<(), String> {
    let fact = |key: &str| facts.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let env = engine
        .store
        .environment_by_id(run.environment_id)
        .map_err(|e| e.to_string())?;
    let target = engine
        .store
        .storage_target(env.organization_id, fact("backup-target"))
        .map_err(|e| e.to_string())?;
    let size: u64 = fact("backup-size")
        .parse()
        .map_err(|_| "the backup run recorded no size".to_string())?;
    if fact("backup-key").is_empty() || fact("backup-sha256").len() != 64 {
        return Err("the backup run recorded no key or checksum".into());
    }
    engine
        .store
        .record_backup(NewBackup {
            environment_id: env.id,
            target_id: target.id,
            run_id: run.id,
            key: fact("backup-key").to_string(),
            kind: if run.trigger == "schedule" {
                "scheduled".into()
            } else {
                "manual".into()
            },
            size,
            sha256: fact("backup-sha256").to_string(),
            manifest: serde_json::from_str(fact("backup-manifest")).unwrap_or_default(),
        })
        .map_err(|e| e.to_string())?;
    let pruned: Vec<String> = serde_json::from_str(fact("backup-pruned")).unwrap_or_default();
    engine
        .store
        .mark_pruned(target.id, &pruned)
        .map_err(|e| e.to_string())
}

impl Engine {
    /// Starts a backup of environment `env_id` to the organization's storage target `target`,
    /// pruned by the environment's retention policy when it has one.
    pub fn start_backup(
        self: &Arc<Self>,
        org_id: i64,
        env_id: i64,
        target: &str,
        trigger: &str,
    ) -> Result<Run, EngineError> {
        let env = self.store.environment(org_id, env_id)?;
        self.store.storage_target(org_id, target)?;
        let project = self.store.project(org_id, env.project_id)?;
        let policy = self.store.backup_policy(env_id)?;
        let retention = policy.filter(|p| p.target == target).map(|p| {
            serde_json::json!({
                "daily": p.keep_daily,
                "weekly": p.keep_weekly,
                "monthly": p.keep_monthly,
            })
        });
        let prefix = format!("{}/{}/", project.name, env.name);
        self.start_with(org_id, env_id, "backup", trigger, |run_id| {
            serde_json::json!({
                "target": target,
                "key": backup_key(&project.name, &env.name, run_id, berth_state::now_ms()),
                "prefix": prefix,
                "retention": retention,
            })
        })
    }

    /// Starts a restore from `source` into environment `env_id`, replacing all its data: refused
    /// unless `confirmation` says so, and names the environment when it is protected.
    pub fn start_restore(
        self: &Arc<Self>,
        org_id: i64,
        env_id: i64,
        source: &RestoreSource,
        confirmation: &Confirmation,
    ) -> Result<Run, EngineError> {
        let env = self.store.environment(org_id, env_id)?;
        if !confirmation.replace_all_data {
            return Err(EngineError::Invalid(
                "restoring a backup replaces all current data of the environment: confirm with \
                 replace_all_data = true"
                    .into(),
            ));
        }
        if env.protected && confirmation.environment_name.as_deref() != Some(env.name.as_str()) {
            return Err(EngineError::Invalid(format!(
                "environment {:?} is protected: type its name (environment_name) to restore over it",
                env.name
            )));
        }
        let backup_id = match source {
            RestoreSource::Backup(id) => *id,
            RestoreSource::Object { target, key } => {
                self.store.storage_target(org_id, target)?;
                berth_primitives::storage::check_key(key)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?;
                let inputs = serde_json::json!({ "target": target, "key": key });
                return self.start_with(org_id, env_id, "restore", "api", |_| inputs);
            }
        };
        let backup: Backup = self.store.backup(env_id, backup_id)?;
        if backup.pruned_at.is_some() {
            return Err(StateError::NotFound(format!(
                "backup {backup_id} (pruned by the retention policy)"
            ))
            .into());
        }
        let target = self
            .store
            .storage_targets(org_id)?
            .into_iter()
            .find(|t| t.id == backup.target_id)
            .ok_or_else(|| {
                StateError::NotFound(format!("the storage target of backup {backup_id}"))
            })?;
        self.start_with(org_id, env_id, "restore", "api", |_| {
            serde_json::json!({
                "target": target.name,
                "key": backup.key,
                "recorded": true,
                "size": backup.size,
                "sha256": backup.sha256,
                "manifest": backup.manifest,
            })
        })
    }
}

/// Starts the scheduled backups that are due, every `tick`, for as long as the engine lives. A
/// backup refused because the environment is busy is tried again on a later tick.
pub fn scheduler(engine: &Arc<Engine>, tick: Duration) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            let Some(engine) = weak.upgrade() else { return };
            if let Err(e) = start_due(&engine) {
                eprintln!("backup scheduler: {e}");
            }
        }
    })
}

fn start_due(engine: &Arc<Engine>) -> Result<(), EngineError> {
    let now = berth_state::now_ms();
    for (org_id, policy) in engine.store.backup_policies()? {
        let last = engine
            .store
            .backups(policy.environment_id)?
            .into_iter()
            .map(|b| b.created_at)
            .max();
        let due = last.is_none_or(|t| now - t >= i64::from(policy.every_hours) * 3_600_000);
        if !due {
            continue;
        }
        match engine.start_backup(org_id, policy.environment_id, &policy.target, "schedule") {
            Ok(run) => eprintln!(
                "backup scheduler: run {} backs up environment {}",
                run.id, policy.environment_id
            ),
            Err(EngineError::State(StateError::Busy { .. })) => {}
            Err(e) => eprintln!(
                "backup scheduler: environment {}: {e}",
                policy.environment_id
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::backup_key;

    #[test]
    fn backup_keys_carry_the_utc_time_and_sort_by_it() {
        // 2026-11-27 09:05:03 UTC
        let key = backup_key("shop", "prod", 42, 1_795_770_303_000);
        assert_eq!(key, "shop/prod/20261127T090503Z-run42.zip");
        assert_eq!(
            backup_key("p", "e", 1, 951_782_400_000),
            "p/e/20000229T000000Z-run1.zip"
        );
        assert!(backup_key("p", "e", 9, 1_000) < backup_key("p", "e", 10, 2_000));
    }
}
