//! What a run lends its plugins: the environment's settings and repositories, the run's inputs and
//! facts ([`RunCtx`], the `operation` interface), and sinks that put their log lines and audit
//! records into the state store and onto the run's live stream.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use berth_runtime::runlog::{RunEvent, level_name};
use berth_runtime::{
    AuditRecord, AuditSink, EnvironmentSettings, LogSink, Repository, RunContext, RunInputs,
};
use berth_state::{AuditEntry, EventKind, NewEvent};

use crate::Engine;

/// Milliseconds since the Unix epoch.
pub(crate) fn millis(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The `operation` interface's data for one run.
pub struct RunCtx {
    pub(crate) engine: Weak<Engine>,
    pub(crate) run_id: i64,
    pub(crate) env_id: i64,
    pub(crate) settings: EnvironmentSettings,
    /// With the state's repository id of each.
    pub(crate) repositories: Vec<(i64, Repository)>,
    pub(crate) inputs: RunInputs,
    pub(crate) facts: Mutex<serde_json::Map<String, serde_json::Value>>,
    pub(crate) deployed: Mutex<HashMap<i64, String>>,
    pub(crate) host_time: Mutex<Duration>,
}

impl RunCtx {
    /// Host time accumulated since the last call, and reset.
    pub(crate) fn take_host_time(&self) -> Duration {
        std::mem::take(&mut *self.host_time.lock().unwrap())
    }

    pub(crate) fn facts_value(&self) -> serde_json::Value {
        serde_json::Value::Object(self.facts.lock().unwrap().clone())
    }

    pub(crate) fn deployed_revisions(&self) -> Vec<(i64, String)> {
        let mut list: Vec<_> = self
            .deployed
            .lock()
            .unwrap()
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        list.sort();
        list
    }
}

impl RunContext for RunCtx {
    fn settings(&self) -> EnvironmentSettings {
        self.settings.clone()
    }

    fn repositories(&self) -> Vec<Repository> {
        self.repositories.iter().map(|(_, r)| r.clone()).collect()
    }

    fn inputs(&self) -> RunInputs {
        self.inputs.clone()
    }

    fn note(&self, key: &str, value: &str) {
        self.facts
            .lock()
            .unwrap()
            .insert(key.to_string(), value.into());
        if let Some(engine) = self.engine.upgrade() {
            let fact = serde_json::json!({ key: value });
            if let Err(e) = engine.store.merge_facts(self.run_id, fact) {
                tracing::error!(run = self.run_id, "cannot record fact {key}: {e}");
            }
        }
    }

    fn facts(&self) -> String {
        self.facts_value().to_string()
    }

    fn deployed(&self, name: &str, commit: &str) -> bool {
        let Some((id, _)) = self.repositories.iter().find(|(_, r)| r.name == name) else {
            return false;
        };
        self.deployed
            .lock()
            .unwrap()
            .insert(*id, commit.to_string());
        true
    }

    fn host_time(&self, spent: Duration) {
        *self.host_time.lock().unwrap() += spent;
    }
}

/// Log lines and progress of a run's plugins, into the store and the live stream. `step` is the
/// step they belong to (`None` for hooks between steps).
pub struct RunLog {
    pub(crate) engine: Weak<Engine>,
    pub(crate) run_id: i64,
    pub(crate) step: Mutex<Option<String>>,
}

impl RunLog {
    pub(crate) fn set_step(&self, step: Option<&str>) {
        *self.step.lock().unwrap() = step.map(str::to_string);
    }
}

impl LogSink for RunLog {
    fn event(&self, event: RunEvent) {
        let Some(engine) = self.engine.upgrade() else {
            return;
        };
        let step = self.step.lock().unwrap().clone();
        let new = match event {
            RunEvent::Log {
                plugin,
                level,
                message,
                ..
            } => NewEvent {
                run_id: self.run_id,
                kind: EventKind::Log,
                level: Some(level_name(level).into()),
                step,
                message,
                data: serde_json::json!({ "plugin": plugin }),
            },
            RunEvent::Progress {
                plugin,
                done,
                total,
                unit,
                ..
            } => NewEvent {
                run_id: self.run_id,
                kind: EventKind::Progress,
                level: None,
                step,
                message: format!("{done}/{total} {unit}"),
                data: serde_json::json!({ "plugin": plugin, "done": done, "total": total, "unit": unit }),
            },
        };
        engine.emit(new);
    }
}

/// The run's inputs as hooks see them in an event's payload: a JSON object.
pub(crate) fn inputs_json(inputs: &RunInputs) -> serde_json::Value {
    use serde_json::json;
    match inputs {
        RunInputs::None => json!({}),
        RunInputs::Push(p) => json!({
            "commit": p.commit, "branch": p.branch, "source": p.source, "repository": p.repository,
        }),
        RunInputs::Backup(b) => json!({
            "target": b.target,
            "key": b.key,
            "prefix": b.prefix,
            "retention": b.retention.as_ref().map(|r| json!({
                "daily": r.daily, "weekly": r.weekly, "monthly": r.monthly,
            })),
        }),
        RunInputs::Restore(r) => {
            let mut value = json!({ "target": r.target, "key": r.key });
            if let Some(recorded) = &r.recorded {
                value["recorded"] = true.into();
                value["size"] = recorded.size.into();
                value["sha256"] = recorded.sha256.clone().into();
                value["version"] = recorded.version.clone().into();
            }
            value
        }
    }
}

/// Audit records of a run's host calls, into the store. A record that cannot be written fails the
/// host call that needed it.
pub struct RunAudit {
    pub(crate) engine: Weak<Engine>,
    pub(crate) run_id: i64,
}

impl AuditSink for RunAudit {
    fn record(&self, record: AuditRecord) -> std::io::Result<()> {
        let engine = self
            .engine
            .upgrade()
            .ok_or_else(|| std::io::Error::other("the engine stopped"))?;
        engine
            .store
            .append_audit(AuditEntry {
                run_id: Some(self.run_id),
                at: millis(record.at),
                plugin: record.plugin,
                capability: record.capability,
                call: record.call,
                allowed: record.allowed,
                detail: record.scope,
            })
            .map(|_| ())
            .map_err(std::io::Error::other)
    }
}
