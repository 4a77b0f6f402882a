//! Runs (one execution of an operation on an environment) and their ordered steps.
//!
//! An environment has at most one run running: a partial unique index enforces it, so two
//! control planes racing to start a deploy cannot both win (the queue, [`crate::queue`], decides
//! which run starts when). Every status change is
//! written before the engine acts on it, so a control plane that restarts finds what it was doing
//! ([`Store::interrupt_unfinished`]) instead of silently forgetting a half-finished restore.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::environments::environment_in;
use crate::queue::NewRun;
use crate::{
    Record, Result, SqlResultExt, StateError, Store, all, json_column, now_ms, one, touch,
};

crate::text_enum! {
    /// Where a run is in its life. `Queued` and `Running` are active; the others are final.
    pub enum RunStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        /// The control plane stopped while the run was active.
        Interrupted = "interrupted",
    }
}

impl RunStatus {
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

crate::text_enum! {
    /// Where a step is. `Pending` and `Running` are open; the others are final.
    pub enum StepStatus {
        Pending = "pending",
        Running = "running",
        Done = "done",
        /// Its check found nothing to do.
        Skipped = "skipped",
        Failed = "failed",
        Cancelled = "cancelled",
        Interrupted = "interrupted",
    }
}

impl StepStatus {
    pub fn is_open(self) -> bool {
        matches!(self, StepStatus::Pending | StepStatus::Running)
    }
}

/// The SQL condition for an active run (see [`RunStatus::is_active`]).
const ACTIVE: &str = "status IN ('queued', 'running')";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: i64,
    pub environment_id: i64,
    /// The operation run, e.g. `first-deploy`, `redeploy`, `restore`.
    pub operation: String,
    pub status: RunStatus,
    /// What started it, e.g. `api`, `cli`, `webhook`.
    pub trigger: String,
    pub current_step: Option<String>,
    pub error: Option<String>,
    /// What steps learnt and later steps need (a JSON object).
    pub facts: Value,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub run_id: i64,
    /// 0 for the first step of the run.
    pub position: u32,
    pub name: String,
    pub status: StepStatus,
    pub summary: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Time the step spent inside host primitives (SSH, Docker, PostgreSQL, git).
    pub host_ms: Option<i64>,
}

impl Record for Run {
    const SELECT: &'static str = "id, environment_id, operation, status, triggered_by, \
        current_step, error, facts, created_at, started_at, finished_at FROM runs";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Run {
            id: row.get(0)?,
            environment_id: row.get(1)?,
            operation: row.get(2)?,
            status: row.get(3)?,
            trigger: row.get(4)?,
            current_step: row.get(5)?,
            error: row.get(6)?,
            facts: json_column(row, 7)?,
            created_at: row.get(8)?,
            started_at: row.get(9)?,
            finished_at: row.get(10)?,
        })
    }
}

impl Record for Step {
    const SELECT: &'static str = "run_id, position, name, status, summary, error, started_at, \
        finished_at, host_ms FROM steps";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Step {
            run_id: row.get(0)?,
            position: row.get(1)?,
            name: row.get(2)?,
            status: row.get(3)?,
            summary: row.get(4)?,
            error: row.get(5)?,
            started_at: row.get(6)?,
            finished_at: row.get(7)?,
            host_ms: row.get(8)?,
        })
    }
}

impl Store {
    /// Queues a run of `operation` with no inputs on an idle environment (see
    /// [`Store::queue_run`]), or fails with [`StateError::Busy`] naming the run already queued or
    /// running there. `facts` must be a JSON object.
    pub fn create_run(
        &self,
        env_id: i64,
        operation: &str,
        trigger: &str,
        facts: Value,
    ) -> Result<Run> {
        let facts = object(facts)?;
        let run = self
            .queue_run(
                NewRun {
                    env_id,
                    operation,
                    trigger,
                    coalesce: false,
                },
                |_| Value::Object(Map::new()),
            )?
            .run()
            .clone();
        if facts.is_empty() {
            return Ok(run);
        }
        self.merge_facts(run.id, Value::Object(facts))?;
        self.run_by_id(run.id)
    }

    /// Marks a queued run running.
    pub fn start_run(&self, id: i64) -> Result<()> {
        self.write(|conn| {
            let changed = conn.execute(
                "UPDATE runs SET status = ?2, started_at = ?3 WHERE id = ?1 AND status = ?4",
                params![id, RunStatus::Running, now_ms(), RunStatus::Queued],
            )?;
            refuse_unless(changed, conn, id, "start")
        })
    }

    /// Ends an active run with a final `status` (not `queued` nor `running`).
    pub fn finish_run(&self, id: i64, status: RunStatus, error: Option<&str>) -> Result<()> {
        if status.is_active() {
            return Err(StateError::Invalid(format!(
                "a run cannot finish as {status}"
            )));
        }
        self.write(|conn| {
            let changed = conn.execute(
                &format!(
                    "UPDATE runs SET status = ?2, error = ?3, finished_at = ?4
                     WHERE id = ?1 AND {ACTIVE}"
                ),
                params![id, status, error, now_ms()],
            )?;
            refuse_unless(changed, conn, id, "finish")
        })
    }

    pub fn set_current_step(&self, id: i64, step: Option<&str>) -> Result<()> {
        self.write(|conn| {
            touch(
                conn,
                "UPDATE runs SET current_step = ?2 WHERE id = ?1",
                params![id, step],
                || format!("run {id}"),
            )
        })
    }

    /// Sets each key of the JSON object `patch` in the run's facts (a shallow merge).
    pub fn merge_facts(&self, id: i64, patch: Value) -> Result<()> {
        let patch = object(patch)?;
        self.write(|conn| {
            let mut facts = object(run_row(conn, id)?.facts)?;
            facts.extend(patch);
            conn.execute(
                "UPDATE runs SET facts = ?2 WHERE id = ?1",
                params![id, Value::Object(facts).to_string()],
            )?;
            Ok(())
        })
    }

    /// The run `id`, if its environment belongs to `org_id`.
    pub fn run(&self, org_id: i64, id: i64) -> Result<Run> {
        self.read(|conn| {
            one(
                conn,
                "WHERE id = ?1
                   AND environment_id IN (SELECT id FROM environments WHERE organization_id = ?2)",
                [id, org_id],
            )
            .found(|| format!("run {id}"))
        })
    }

    /// The run `id`, whoever owns it.
    pub fn run_by_id(&self, id: i64) -> Result<Run> {
        self.read(|conn| run_row(conn, id))
    }

    /// The environment's latest `limit` runs, newest first.
    pub fn runs(&self, org_id: i64, env_id: i64, limit: u32) -> Result<Vec<Run>> {
        self.read(|conn| {
            environment_in(conn, org_id, env_id)?;
            all(
                conn,
                "WHERE environment_id = ?1 ORDER BY id DESC LIMIT ?2",
                params![env_id, limit],
            )
        })
    }

    /// For a control plane starting up: every run left running becomes `interrupted`, with an
    /// error naming the step it was in, and that step becomes `interrupted` too. Returns those
    /// runs as they now are. Queued runs stay queued: the dispatcher starts them.
    pub fn interrupt_unfinished(&self) -> Result<Vec<Run>> {
        self.write(|conn| {
            let unfinished: Vec<Run> = all(conn, "WHERE status = 'running' ORDER BY id", [])?;
            let now = now_ms();
            for run in &unfinished {
                let running_step: Option<String> = conn
                    .query_row(
                        "SELECT name FROM steps WHERE run_id = ?1 AND status = ?2
                         ORDER BY position LIMIT 1",
                        params![run.id, StepStatus::Running],
                        |row| row.get(0),
                    )
                    .optional()?;
                let error = match running_step.or_else(|| run.current_step.clone()) {
                    Some(step) => format!("interrupted: the control plane stopped during step {step}"),
                    None => "interrupted: the control plane stopped before it started".to_owned(),
                };
                conn.execute(
                    "UPDATE steps SET status = ?2, finished_at = ?3 WHERE run_id = ?1 AND status = ?4",
                    params![run.id, StepStatus::Interrupted, now, StepStatus::Running],
                )?;
                // The steps it never reached will not run.
                conn.execute(
                    "UPDATE steps SET status = ?2 WHERE run_id = ?1 AND status = ?3",
                    params![run.id, StepStatus::Cancelled, StepStatus::Pending],
                )?;
                conn.execute(
                    "UPDATE runs SET status = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
                    params![run.id, RunStatus::Interrupted, error, now],
                )?;
            }
            unfinished.iter().map(|run| run_row(conn, run.id)).collect()
        })
    }

    /// Asks the engine to stop the run at its next step boundary.
    pub fn request_cancel(&self, run_id: i64) -> Result<()> {
        self.write(|conn| {
            touch(
                conn,
                "UPDATE runs SET cancel_requested = 1 WHERE id = ?1",
                [run_id],
                || format!("run {run_id}"),
            )
        })
    }

    pub fn cancel_requested(&self, run_id: i64) -> Result<bool> {
        self.read(|conn| {
            conn.query_row(
                "SELECT cancel_requested FROM runs WHERE id = ?1",
                [run_id],
                |row| row.get(0),
            )
            .found(|| format!("run {run_id}"))
        })
    }

    /// Records the run's plan: one `pending` step per name, at positions 0, 1, …
    pub fn plan_steps(&self, run_id: i64, names: &[String]) -> Result<()> {
        self.write(|conn| {
            run_row(conn, run_id)?;
            let mut insert = conn.prepare_cached(
                "INSERT INTO steps (run_id, position, name, status) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (position, name) in (0u32..).zip(names) {
                insert
                    .execute(params![run_id, position, name, StepStatus::Pending])
                    .unique(|| format!("step {position} of run {run_id}"))?;
            }
            Ok(())
        })
    }

    pub fn step_started(&self, run_id: i64, position: u32) -> Result<()> {
        self.write(|conn| {
            touch(
                conn,
                "UPDATE steps SET status = ?3, started_at = ?4, finished_at = NULL,
                                  summary = NULL, error = NULL, host_ms = NULL
                 WHERE run_id = ?1 AND position = ?2",
                params![run_id, position, StepStatus::Running, now_ms()],
                || format!("step {position} of run {run_id}"),
            )
        })
    }

    /// Ends a step with a final `status` (not `pending` nor `running`).
    pub fn step_finished(
        &self,
        run_id: i64,
        position: u32,
        status: StepStatus,
        summary: Option<&str>,
        error: Option<&str>,
        host_ms: Option<i64>,
    ) -> Result<()> {
        if status.is_open() {
            return Err(StateError::Invalid(format!(
                "a step cannot finish as {status}"
            )));
        }
        self.write(|conn| {
            touch(
                conn,
                "UPDATE steps SET status = ?3, summary = ?4, error = ?5, host_ms = ?6,
                                  finished_at = ?7
                 WHERE run_id = ?1 AND position = ?2",
                params![run_id, position, status, summary, error, host_ms, now_ms()],
                || format!("step {position} of run {run_id}"),
            )
        })
    }

    /// The run's steps in order.
    pub fn steps(&self, run_id: i64) -> Result<Vec<Step>> {
        self.read(|conn| all(conn, "WHERE run_id = ?1 ORDER BY position", [run_id]))
    }

    /// Marks every still-`pending` step of the run `cancelled`; returns how many.
    pub fn cancel_pending_steps(&self, run_id: i64) -> Result<usize> {
        self.write(|conn| {
            Ok(conn.execute(
                "UPDATE steps SET status = ?2 WHERE run_id = ?1 AND status = ?3",
                params![run_id, StepStatus::Cancelled, StepStatus::Pending],
            )?)
        })
    }
}

/// The run `id`, whoever owns it.
pub(crate) fn run_row(conn: &Connection, id: i64) -> Result<Run> {
    one(conn, "WHERE id = ?1", [id]).found(|| format!("run {id}"))
}

/// `Ok` if a guarded status change happened; otherwise why not (no such run, or its status).
fn refuse_unless(changed: usize, conn: &Connection, id: i64, action: &str) -> Result<()> {
    if changed > 0 {
        return Ok(());
    }
    let run = run_row(conn, id)?;
    Err(StateError::Invalid(format!(
        "cannot {action} run {id}: it is {}",
        run.status
    )))
}

/// The members of `value`, if it is a JSON object.
fn object(value: Value) -> Result<Map<String, Value>> {
    match value {
        Value::Object(members) => Ok(members),
        other => Err(StateError::Invalid(format!(
            "facts must be a JSON object, not {other}"
        ))),
    }
}
