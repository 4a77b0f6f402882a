//! Starting runs: every run is queued in the state store with its inputs, and the dispatcher
//! starts what the fair share allows (see `berth_state`'s queue) — now, or when a running run
//! ends. A push that arrives while its environment is busy becomes one follow-up run: later
//! pushes update it rather than queue more.

use std::sync::Arc;

use berth_runtime::{BackupInputs, Push, RecordedBackup, RestoreInputs, Retention, RunInputs};
use berth_state::{NewRun, Queued, Run, RunLimits, RunStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use tracing::Instrument;

use crate::{Engine, EngineError, Live, Operation, run};

/// How many runs run at once unless the operator says otherwise: a control plane's worth, and an
/// organization's share of it.
pub const DEFAULT_RUN_LIMITS: RunLimits = RunLimits {
    total: 16,
    per_organization: 4,
};

impl Engine {
    /// Starts `operation` on environment `env_id` of organization `org_id`: the run is queued (or
    /// refused with `busy` when one is queued or running there) and starts as soon as the fair
    /// share allows. An auto-deploy waits behind a running run instead, and updates the one
    /// already waiting.
    pub fn start(
        self: &Arc<Self>,
        org_id: i64,
        env_id: i64,
        operation: Operation,
        trigger: &str,
        inputs: RunInputs,
    ) -> Result<Run, EngineError> {
        let queued = self.queue(org_id, env_id, operation, trigger, |_| inputs)?;
        Ok(queued.run().clone())
    }

    /// [`Engine::start`], telling a new run from a coalesced one, with inputs that may name the
    /// run (a backup's key does).
    pub fn queue(
        self: &Arc<Self>,
        org_id: i64,
        env_id: i64,
        operation: Operation,
        trigger: &str,
        inputs: impl FnOnce(i64) -> RunInputs,
    ) -> Result<Queued, EngineError> {
        self.store.environment(org_id, env_id)?;
        let new = NewRun {
            env_id,
            operation: operation.as_str(),
            trigger,
            coalesce: operation == Operation::AutoDeploy,
        };
        let queued = self
            .store
            .queue_run(new, |run_id| Stored::from(&inputs(run_id)).json())?;
        if let Queued::New(run) = &queued {
            self.go_live(run.id);
        }
        self.dispatch();
        // As it is now: running, if it could start at once.
        let now = self.store.run_by_id(queued.run().id)?;
        Ok(match queued {
            Queued::New(_) => Queued::New(now),
            Queued::Coalesced(_) => Queued::Coalesced(now),
        })
    }

    /// Starts every queued run the fair share allows now.
    pub fn dispatch(self: &Arc<Self>) {
        loop {
            match self.store.claim_next_run(self.config.runs) {
                Ok(Some(run)) => self.launch(run),
                Ok(None) => return,
                Err(e) => {
                    tracing::error!("cannot claim a queued run: {e}");
                    return;
                }
            }
        }
    }

    /// The live side of run `run_id` (its event stream and cancel signal), made once.
    fn go_live(&self, run_id: i64) -> Arc<Notify> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let entry = live.entry(run_id).or_insert_with(|| Live {
            events: broadcast::channel(1024).0,
            cancel: Arc::new(Notify::new()),
        });
        entry.cancel.clone()
    }

    /// Runs the claimed `run` in the background; when it ends, the next queued runs start.
    fn launch(self: &Arc<Self>, run: Run) {
        let run_id = run.id;
        let cancel = self.go_live(run_id);
        let stored = self
            .store
            .run_inputs(run_id)
            .map_err(|e| e.to_string())
            .and_then(|value| Stored::parse(value).map_err(|e| format!("its inputs: {e}")));
        let operation = run
            .operation
            .parse::<Operation>()
            .map_err(|e| e.to_string());
        let engine = self.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!(
                "run",
                run = run_id,
                operation = %run.operation,
                organization = tracing::field::Empty,
                project = tracing::field::Empty,
                environment = tracing::field::Empty,
            );
            let (operation, inputs) = match (operation, stored) {
                (Ok(operation), Ok(stored)) => (operation, stored.into()),
                (Err(e), _) | (_, Err(e)) => {
                    let error = format!("cannot start: {e}");
                    run::finish(&engine, run_id, RunStatus::Failed, Some(&error));
                    return engine.ended(run_id);
                }
            };
            // The run in its own task, so that even a panic (a bug) ends the run as failed
            // instead of leaving the environment busy forever.
            let worker = engine.clone();
            let outcome = tokio::spawn(
                async move { run::execute(&worker, run_id, operation, inputs, cancel).await }
                    .instrument(span.clone()),
            )
            .await;
            if let Err(e) = outcome {
                let error = format!("the control plane failed during the run: {e}");
                span.in_scope(|| tracing::error!("{error}"));
                run::finish(&engine, run_id, RunStatus::Failed, Some(&error));
            }
            engine.ended(run_id);
        });
    }

    /// Run `run_id` is over: its live side goes, and its slot goes to the next queued run.
    fn ended(self: &Arc<Self>, run_id: i64) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id);
        self.dispatch();
    }

    /// Asks a run to stop: a queued run is cancelled at once; for a running one, the step in
    /// progress is abandoned and no later step runs.
    pub fn cancel(self: &Arc<Self>, run_id: i64) -> Result<bool, EngineError> {
        if self.store.cancel_queued(run_id)? {
            run::finish_event(
                self,
                run_id,
                RunStatus::Cancelled,
                Some("cancelled before it started"),
            );
            self.ended(run_id);
            return Ok(true);
        }
        self.store.request_cancel(run_id)?;
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match live.get(&run_id) {
            Some(live) => {
                live.cancel.notify_one();
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// A run's inputs as the queue keeps them: the WIT types, in JSON.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum Stored {
    None,
    Push {
        repository: Option<String>,
        branch: String,
        commit: String,
        source: String,
    },
    Backup {
        target: String,
        key: String,
        prefix: String,
        /// daily, weekly, monthly
        retention: Option<[u32; 3]>,
    },
    Restore {
        target: String,
        key: String,
        /// size, SHA-256, application version
        recorded: Option<(u64, String, Option<String>)>,
    },
}

impl Stored {
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("inputs serialize")
    }

    fn parse(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value)
    }
}

impl From<&RunInputs> for Stored {
    fn from(inputs: &RunInputs) -> Self {
        match inputs.clone() {
            RunInputs::None => Stored::None,
            RunInputs::Push(p) => Stored::Push {
                repository: p.repository,
                branch: p.branch,
                commit: p.commit,
                source: p.source,
            },
            RunInputs::Backup(b) => Stored::Backup {
                target: b.target,
                key: b.key,
                prefix: b.prefix,
                retention: b.retention.map(|r| [r.daily, r.weekly, r.monthly]),
            },
            RunInputs::Restore(r) => Stored::Restore {
                target: r.target,
                key: r.key,
                recorded: r.recorded.map(|b| (b.size, b.sha256, b.version)),
            },
        }
    }
}

impl From<Stored> for RunInputs {
    fn from(stored: Stored) -> Self {
        match stored {
            Stored::None => RunInputs::None,
            Stored::Push {
                repository,
                branch,
                commit,
                source,
            } => RunInputs::Push(Push {
                repository,
                branch,
                commit,
                source,
            }),
            Stored::Backup {
                target,
                key,
                prefix,
                retention,
            } => RunInputs::Backup(BackupInputs {
                target,
                key,
                prefix,
                retention: retention.map(|[daily, weekly, monthly]| Retention {
                    daily,
                    weekly,
                    monthly,
                }),
            }),
            Stored::Restore {
                target,
                key,
                recorded,
            } => RunInputs::Restore(RestoreInputs {
                target,
                key,
                recorded: recorded.map(|(size, sha256, version)| RecordedBackup {
                    size,
                    sha256,
                    version,
                }),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_survive_the_queue() {
        let all = [
            RunInputs::None,
            RunInputs::Push(Push {
                repository: Some("shop".into()),
                branch: "main".into(),
                commit: "a".repeat(40),
                source: "github".into(),
            }),
            RunInputs::Backup(BackupInputs {
                target: "s3".into(),
                key: "shop/prod/1.zip".into(),
                prefix: "shop/prod/".into(),
                retention: Some(Retention {
                    daily: 7,
                    weekly: 4,
                    monthly: 3,
                }),
            }),
            RunInputs::Restore(RestoreInputs {
                target: "s3".into(),
                key: "k".into(),
                recorded: Some(RecordedBackup {
                    size: 5,
                    sha256: "00".into(),
                    version: None,
                }),
            }),
        ];
        for inputs in all {
            let json = Stored::from(&inputs).json();
            let back: RunInputs = Stored::parse(json.clone()).unwrap().into();
            assert_eq!(Stored::from(&back).json(), json);
        }
        assert!(Stored::parse(serde_json::json!({"kind": "push"})).is_err());
    }
}
