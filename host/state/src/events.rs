//! The event log of a run (what a live view streams and a late viewer replays) and the audit
//! trail of every capability call a plugin made, allowed or not.
//!
//! Both are append-only. Event ids grow monotonically, so a client that reconnects asks for the
//! events after the last id it saw (SSE's `Last-Event-ID`).
//!
//! Both grow with every run, so they are kept under a [`Retention`]: what a finished run left
//! (its events, audit trail, steps and row) goes once it is no longer among its environment's
//! last runs or is older than the retention's age. A run a backup names keeps its row.

use std::time::Duration;

use rusqlite::{Connection, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Record, Result, RunStatus, SqlResultExt, Store, all, insert_returning, json_column, now_ms,
};

crate::text_enum! {
    /// What an event reports.
    pub enum EventKind {
        /// A log line.
        Log = "log",
        /// Progress within a step (bytes copied, rows restored…).
        Progress = "progress",
        /// A step changed status.
        Step = "step",
        /// The run changed status.
        Run = "run",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub run_id: i64,
    pub at: i64,
    pub kind: EventKind,
    /// For log lines: `info`, `warn`, `error`…
    pub level: Option<String>,
    /// The step it happened in.
    pub step: Option<String>,
    pub message: String,
    pub data: Value,
}

/// What [`Store::append_event`] needs; the store stamps the id and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub run_id: i64,
    pub kind: EventKind,
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub step: Option<String>,
    pub message: String,
    #[serde(default)]
    pub data: Value,
}

/// One capability call by a plugin, and whether its grants allowed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The run it happened in (`None`: outside a run, e.g. `berth plugin run`).
    pub run_id: Option<i64>,
    pub at: i64,
    pub plugin: String,
    pub capability: String,
    /// The call made, e.g. `docker.run`.
    pub call: String,
    pub allowed: bool,
    /// Its arguments in brief, or why it was refused.
    pub detail: String,
}

impl Record for Event {
    const SELECT: &'static str = "id, run_id, at, kind, level, step, message, data FROM events";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Event {
            id: row.get(0)?,
            run_id: row.get(1)?,
            at: row.get(2)?,
            kind: row.get(3)?,
            level: row.get(4)?,
            step: row.get(5)?,
            message: row.get(6)?,
            data: json_column(row, 7)?,
        })
    }
}

impl Record for AuditEntry {
    const SELECT: &'static str = "run_id, at, plugin, capability, call, allowed, detail FROM audit";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(AuditEntry {
            run_id: row.get(0)?,
            at: row.get(1)?,
            plugin: row.get(2)?,
            capability: row.get(3)?,
            call: row.get(4)?,
            allowed: row.get(5)?,
            detail: row.get(6)?,
        })
    }
}

impl Store {
    /// Appends an event to its run's log and returns it with its id and time.
    pub fn append_event(&self, new: NewEvent) -> Result<Event> {
        self.write(|conn| {
            insert_returning(
                conn,
                "INSERT INTO events (run_id, at, kind, level, step, message, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    new.run_id,
                    now_ms(),
                    new.kind,
                    new.level,
                    new.step,
                    new.message,
                    new.data.to_string()
                ],
            )
            .owner(|| format!("run {}", new.run_id))
        })
    }

    /// Up to `limit` events of the run with an id above `after_id` (0: from the start), in order.
    pub fn events(&self, run_id: i64, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        self.read(|conn| {
            all(
                conn,
                "WHERE run_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                params![run_id, after_id, limit],
            )
        })
    }

    pub fn append_audit(&self, entry: AuditEntry) -> Result<()> {
        self.write(|conn| {
            conn.execute(
                "INSERT INTO audit (run_id, at, plugin, capability, call, allowed, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    entry.run_id,
                    entry.at,
                    entry.plugin,
                    entry.capability,
                    entry.call,
                    entry.allowed,
                    entry.detail
                ],
            )
            .owner(|| format!("run {}", entry.run_id.unwrap_or_default()))?;
            Ok(())
        })
    }

    /// The run's audit trail, in the order the calls were made.
    pub fn audit(&self, run_id: i64) -> Result<Vec<AuditEntry>> {
        self.read(|conn| all(conn, "WHERE run_id = ?1 ORDER BY id", [run_id]))
    }
}

/// How long finished runs are kept, with their events, audit trail and steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Each environment's most recent runs that are kept whatever their age.
    pub runs_per_environment: u32,
    /// Runs that finished longer ago than this go, even among the most recent (and audit records
    /// made outside any run).
    pub max_age: Duration,
}

impl Default for Retention {
    /// The last 200 runs of each environment, none older than 180 days.
    fn default() -> Self {
        Retention {
            runs_per_environment: 200,
            max_age: Duration::from_secs(180 * 24 * 3600),
        }
    }
}

/// What one [`Store::prune_runs`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Finished runs whose events, audit records and steps went (and their rows, unless a
    /// backup names them).
    pub runs: usize,
    pub events: usize,
    pub audit: usize,
}

impl Store {
    /// Removes what finished runs beyond `retention` left behind, as of `now` (milliseconds), at
    /// most `batch` runs in one transaction so that the store is never held for long; call it
    /// again while it prunes a whole batch. Active runs are never touched.
    pub fn prune_runs(&self, retention: &Retention, now: i64, batch: u32) -> Result<Pruned> {
        let cutoff = now.saturating_sub(retention.max_age.as_millis() as i64);
        self.write(|conn| {
            let runs = expired_runs(conn, retention.runs_per_environment, cutoff, batch)?;
            let mut pruned = Pruned {
                runs: runs.len(),
                ..Pruned::default()
            };
            for run in runs {
                pruned.events += conn
                    .prepare_cached("DELETE FROM events WHERE run_id = ?1")?
                    .execute([run])?;
                pruned.audit += conn
                    .prepare_cached("DELETE FROM audit WHERE run_id = ?1")?
                    .execute([run])?;
                conn.prepare_cached("DELETE FROM steps WHERE run_id = ?1")?
                    .execute([run])?;
                conn.prepare_cached(
                    "DELETE FROM runs WHERE id = ?1
                       AND NOT EXISTS (SELECT 1 FROM backups WHERE run_id = ?1)",
                )?
                .execute([run])?;
            }
            pruned.audit += conn
                .prepare_cached("DELETE FROM audit WHERE run_id IS NULL AND at < ?1")?
                .execute([cutoff])?;
            Ok(pruned)
        })
    }
}

/// Up to `batch` finished runs, oldest first, that are beyond their environment's last `keep`
/// (runs that started and runs that never did are counted apart, so cancelling queued runs
/// cannot push the record of real ones out)
/// or finished before `cutoff`, and still have something to prune (a run a backup names keeps
/// its row once the rest is gone).
fn expired_runs(conn: &Connection, keep: u32, cutoff: i64, batch: u32) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM (
             SELECT id, status, finished_at,
                    ROW_NUMBER() OVER (PARTITION BY environment_id, started_at IS NULL
                                       ORDER BY id DESC) AS recent
               FROM runs) AS r
          WHERE status NOT IN (?4, ?5)
            AND (recent > ?1 OR finished_at < ?2)
            AND (NOT EXISTS (SELECT 1 FROM backups WHERE run_id = r.id)
                 OR EXISTS (SELECT 1 FROM steps WHERE run_id = r.id)
                 OR EXISTS (SELECT 1 FROM events WHERE run_id = r.id)
                 OR EXISTS (SELECT 1 FROM audit WHERE run_id = r.id))
          ORDER BY id
          LIMIT ?3",
    )?;
    let ids = stmt
        .query_map(
            params![keep, cutoff, batch, RunStatus::Queued, RunStatus::Running],
            |row| row.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    //! Retention: old runs go with everything they left, recent and active ones stay, a run a
    //! backup names keeps its row, and pruning goes in bounded batches.

    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::json;

    use super::{AuditEntry, EventKind, NewEvent, Pruned, Retention};
    use crate::{NewBackup, NewEnvironment, NewStorageTarget, RunStatus, Store, now_ms};

    /// An environment with `runs` finished runs, each with two events, an audit record and a
    /// step; returns the store, the environment and the runs' ids, oldest first.
    fn history(runs: usize) -> (Store, i64, i64, Vec<i64>) {
        let store = Store::memory().unwrap();
        let org = store.create_organization("acme").unwrap();
        let project = store.create_project(org.id, "shop").unwrap();
        let server = serde_json::from_value(
            json!({"name": "web1", "host": "10.0.0.5", "ssh_key": "keys/web1"}),
        )
        .unwrap();
        let server = store.create_server(org.id, server).unwrap();
        let env = store
            .create_environment(
                org.id,
                project.id,
                NewEnvironment::new("prod", "18.0", server.id),
            )
            .unwrap();
        let ids = (0..runs)
            .map(|_| {
                let run = store
                    .create_run(env.id, "redeploy", "api", json!({}))
                    .unwrap();
                store.start_run(run.id).unwrap();
                store.plan_steps(run.id, &["build".to_string()]).unwrap();
                for message in ["started", "done"] {
                    store
                        .append_event(NewEvent {
                            run_id: run.id,
                            kind: EventKind::Log,
                            level: Some("info".into()),
                            step: None,
                            message: message.into(),
                            data: json!({}),
                        })
                        .unwrap();
                }
                store
                    .append_audit(AuditEntry {
                        run_id: Some(run.id),
                        at: now_ms(),
                        plugin: "probe@1.0.0".into(),
                        capability: "files".into(),
                        call: "files.write".into(),
                        allowed: true,
                        detail: String::new(),
                    })
                    .unwrap();
                store
                    .finish_run(run.id, RunStatus::Succeeded, None)
                    .unwrap();
                run.id
            })
            .collect();
        (store, org.id, env.id, ids)
    }

    fn kept(store: &Store, run: i64) -> (bool, usize, usize, usize) {
        (
            store.run_by_id(run).is_ok(),
            store.events(run, 0, 100).unwrap().len(),
            store.audit(run).unwrap().len(),
            store.steps(run).unwrap().len(),
        )
    }

    /// Events and audit rows once grew with every run, without end.
    #[test]
    fn runs_beyond_the_last_few_of_their_environment_go_with_what_they_left() {
        let (store, _, _, runs) = history(5);
        let retention = Retention {
            runs_per_environment: 2,
            max_age: Duration::from_secs(3600),
        };
        let pruned = store.prune_runs(&retention, now_ms(), 100).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                runs: 3,
                events: 6,
                audit: 3
            }
        );
        for run in &runs[..3] {
            assert_eq!(kept(&store, *run), (false, 0, 0, 0), "run {run}");
        }
        for run in &runs[3..] {
            assert_eq!(kept(&store, *run), (true, 2, 1, 1), "run {run}");
        }
        assert_eq!(
            store.prune_runs(&retention, now_ms(), 100).unwrap(),
            Pruned::default()
        );
    }

    /// Runs cancelled before they started cost nothing to make: 200 of them pushed a real
    /// run's events and audit records out of the last few. They are counted apart.
    #[test]
    fn runs_that_never_started_cannot_push_real_ones_out() {
        let (store, _, env, runs) = history(2);
        for _ in 0..5 {
            let run = store.create_run(env, "redeploy", "api", json!({})).unwrap();
            assert!(store.cancel_queued(run.id).unwrap());
        }
        let retention = Retention {
            runs_per_environment: 2,
            max_age: Duration::from_secs(3600),
        };
        let pruned = store.prune_runs(&retention, now_ms(), 100).unwrap();
        assert_eq!(pruned.runs, 3, "the cancelled runs beyond the last two");
        for run in &runs {
            assert_eq!(kept(&store, *run), (true, 2, 1, 1), "run {run}");
        }
    }

    #[test]
    fn old_runs_go_even_among_the_last_few_but_active_runs_never() {
        let (store, _, env, runs) = history(3);
        let active = store.create_run(env, "redeploy", "api", json!({})).unwrap();
        let retention = Retention {
            runs_per_environment: 10,
            max_age: Duration::from_secs(60),
        };
        let later = now_ms() + 3_600_000;
        let pruned = store.prune_runs(&retention, later, 100).unwrap();
        assert_eq!(pruned.runs, 3);
        assert!(runs.iter().all(|run| store.run_by_id(*run).is_err()));
        assert_eq!(
            store.run_by_id(active.id).unwrap().status,
            RunStatus::Queued,
            "an active run stays"
        );
    }

    #[test]
    fn a_run_a_backup_names_keeps_its_row_and_pruning_goes_in_batches() {
        let (store, org, env, runs) = history(6);
        let target = store
            .create_storage_target(
                org,
                NewStorageTarget {
                    name: "s3".into(),
                    backend: "s3".into(),
                    settings: BTreeMap::new(),
                    user: "berth".into(),
                    secret: "s3cret".into(),
                },
            )
            .unwrap();
        store
            .record_backup(NewBackup {
                environment_id: env,
                target_id: target.id,
                run_id: runs[0],
                key: "shop/prod/a.zip".into(),
                kind: "manual".into(),
                size: 1,
                sha256: "0".repeat(64),
                manifest: json!({}),
            })
            .unwrap();
        let retention = Retention {
            runs_per_environment: 1,
            max_age: Duration::from_secs(3600),
        };
        let first = store.prune_runs(&retention, now_ms(), 2).unwrap();
        assert_eq!(first.runs, 2, "one batch at a time");
        let mut total = first.runs;
        loop {
            let pruned = store.prune_runs(&retention, now_ms(), 2).unwrap();
            total += pruned.runs;
            if pruned.runs < 2 {
                break;
            }
        }
        assert_eq!(total, 5);
        assert_eq!(
            kept(&store, runs[0]),
            (true, 0, 0, 0),
            "the backup's run keeps its row"
        );
        assert_eq!(kept(&store, runs[5]), (true, 2, 1, 1));
        assert_eq!(store.backups(env).unwrap().len(), 1);
    }
}
