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
//! - [`scheduler`] starts the scheduled backups of every policy that is due, and runs the
//!   [housekeeping](crate::housekeeping) at the same pace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_contract::{backup_key, facts};
use berth_runtime::settings::Secret;
use berth_runtime::{
    BackupInputs, Capability, Grant, Invocation, Limits, Operation, RecordedBackup, RestoreInputs,
    Retention, Role, RunInputs, StorageTarget, StorageTargets, TargetBackend, Targets, Workspace,
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

/// The organization's storage targets, each behind its platform storage-backend plugin.
pub(crate) fn targets_for(
    engine: &Arc<Engine>,
    org_id: i64,
    base: &Invocation,
) -> Result<Targets, EngineError> {
    let mut backends = BTreeMap::new();
    for target in engine.store.storage_targets(org_id)? {
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
        let secret = engine.store.storage_target_secret(target.id)?;
        let scope = base.env_ref();
        let grants: Vec<Grant> = plugin
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
                    host_key: engine.host_key(
                        target.host_key.clone(),
                        crate::PinOn::StorageTarget(target.id),
                    ),
                },
            )]),
            egress: engine.egress().clone(),
        };
        // The backend runs within the same run (its log, its audit) but is lent only the target,
        // and the run's workspace for the blobs it keeps (without `files`, it cannot read it).
        let mut invocation = Invocation::new(base.run.clone())
            .audit(base.audit.clone())
            .log(base.log.clone())
            .grants(grants)
            .limits(Limits::step())
            .lend(Arc::new(storage));
        if let Some(workspace) = base.lent::<Workspace>() {
            invocation = invocation.lend(workspace);
        }
        backends.insert(target.name, TargetBackend { plugin, invocation });
    }
    Ok(Targets {
        runtime: engine.runtime.clone(),
        backends,
    })
}

/// After a successful `backup` run: the backup's row, and the pruned ones marked.
pub(crate) fn record(
    engine: &Engine,
    run: &Run,
    recorded: &serde_json::Value,
) -> Result<(), EngineError> {
    let fact = |key: &str| recorded.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let env = engine.store.environment_by_id(run.environment_id)?;
    let target = engine
        .store
        .storage_target(env.organization_id, fact(facts::BACKUP_TARGET))?;
    let size: u64 = fact(facts::BACKUP_SIZE)
        .parse()
        .map_err(|_| EngineError::BackupFacts("no size"))?;
    if fact(facts::BACKUP_KEY).is_empty() || fact(facts::BACKUP_SHA256).len() != 64 {
        return Err(EngineError::BackupFacts("no key or checksum"));
    }
    engine.store.record_backup(NewBackup {
        environment_id: env.id,
        target_id: target.id,
        run_id: run.id,
        key: fact(facts::BACKUP_KEY).to_string(),
        kind: if run.trigger == "schedule" {
            "scheduled".into()
        } else {
            "manual".into()
        },
        size,
        sha256: fact(facts::BACKUP_SHA256).to_string(),
        manifest: serde_json::from_str(fact(facts::BACKUP_MANIFEST)).unwrap_or_default(),
    })?;
    let pruned: Vec<String> = serde_json::from_str(fact(facts::BACKUP_PRUNED)).unwrap_or_default();
    Ok(engine.store.mark_pruned(target.id, &pruned)?)
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
        let retention = policy.filter(|p| p.target == target).map(|p| Retention {
            daily: p.keep_daily,
            weekly: p.keep_weekly,
            monthly: p.keep_monthly,
        });
        let queued = self.queue(org_id, env_id, Operation::Backup, trigger, |run_id| {
            RunInputs::Backup(BackupInputs {
                target: target.to_string(),
                key: backup_key::format(&project.name, &env.name, run_id, berth_state::now_ms()),
                prefix: backup_key::prefix(&project.name, &env.name),
                retention,
            })
        })?;
        Ok(queued.run().clone())
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
                berth_backends::storage::check_key(key)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?;
                let inputs = RunInputs::Restore(RestoreInputs {
                    target: target.clone(),
                    key: key.clone(),
                    recorded: None,
                });
                return self.start(org_id, env_id, Operation::Restore, "api", inputs);
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
        let inputs = RunInputs::Restore(RestoreInputs {
            target: target.name,
            recorded: Some(RecordedBackup {
                size: backup.size,
                sha256: backup.sha256,
                version: backup.manifest["version"].as_str().map(str::to_string),
            }),
            key: backup.key,
        });
        self.start(org_id, env_id, Operation::Restore, "api", inputs)
    }
}

/// Starts the scheduled backups that are due, then tidies up (see [`crate::housekeeping`]), every
/// `tick`, for as long as the engine lives. A backup refused because the environment is busy is
/// tried again on a later tick.
pub fn scheduler(engine: &Arc<Engine>, tick: Duration) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            let Some(engine) = weak.upgrade() else { return };
            if let Err(e) = start_due(&engine) {
                tracing::error!("backup scheduler: {e}");
            }
            crate::housekeeping::tidy(engine).await;
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
            Ok(run) => tracing::info!(
                run = run.id,
                environment = policy.environment_id,
                "backup scheduler: a scheduled backup started"
            ),
            Err(EngineError::State(StateError::Busy { .. })) => {}
            Err(e) => tracing::error!(environment = policy.environment_id, "backup scheduler: {e}"),
        }
    }
    Ok(())
}
