//! The run queue: runs wait here, in the state store, until the dispatcher may start them.
//!
//! Keeping the queue in the database (not in a control plane's memory) means a restart loses no
//! waiting run, and several control planes on one PostgreSQL can later claim runs with row locks
//! (`FOR UPDATE SKIP LOCKED`) the way [`Store::claim_next_run`] claims them in one SQLite write
//! transaction here.
//!
//! Fair share: a queued run may start when its environment has no running run (and no older
//! queued one), its organization is under its limit of concurrent runs, and the control plane is
//! under its own. Among the runs that may start, the one of the organization running the fewest
//! goes first, then the oldest: one organization's burst of deploys waits behind its own limit
//! while every other organization's runs keep starting.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::runs::{RunStatus, run_row};
use crate::{Result, Run, StateError, Store, all, environments::environment_row, now_ms};
use crate::{insert_returning, is_unique_violation};

/// A run to queue.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub env_id: i64,
    pub operation: &'a str,
    /// What asked for it, e.g. `api`, `github`.
    pub trigger: &'a str,
    /// A follow-up that may wait behind the environment's running run, and that a later request
    /// of the same operation updates instead of queueing another (a push during a deploy).
    pub coalesce: bool,
}

/// What queueing a run came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Queued {
    /// A new run, waiting for the dispatcher.
    New(Run),
    /// The environment's waiting run of the same operation, which now carries these inputs.
    Coalesced(Run),
}

impl Queued {
    pub fn run(&self) -> &Run {
        match self {
            Queued::New(run) | Queued::Coalesced(run) => run,
        }
    }
}

/// How many runs may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// On the whole control plane.
    pub total: u32,
    /// Per organization, unless the operator set another limit for it.
    pub per_organization: u32,
}

impl Store {
    /// Queues a run on the environment, with the inputs `inputs` makes for its id (a JSON value,
    /// as the engine writes them). Unless `new.coalesce`, the environment must be idle: a run
    /// queued or running there makes it [`StateError::Busy`]. A coalescing run waits behind a
    /// running one; if a run of its operation already waits, that run takes the new inputs.
    pub fn queue_run(&self, new: NewRun<'_>, inputs: impl FnOnce(i64) -> Value) -> Result<Queued> {
        self.write(|conn| {
            environment_row(conn, new.env_id)?;
            let active = active_runs(conn, new.env_id)?;
            if new.coalesce {
                let waiting = active
                    .iter()
                    .find(|r| r.status == RunStatus::Queued && r.operation == new.operation);
                if let Some(waiting) = waiting {
                    conn.execute(
                        "UPDATE runs SET inputs = ?2, triggered_by = ?3 WHERE id = ?1",
                        params![waiting.id, inputs(waiting.id).to_string(), new.trigger],
                    )?;
                    return Ok(Queued::Coalesced(run_row(conn, waiting.id)?));
                }
            } else if let Some(busy) = active.first() {
                return Err(StateError::Busy { run_id: busy.id });
            }
            let inserted: rusqlite::Result<Run> = insert_returning(
                conn,
                "INSERT INTO runs (environment_id, operation, status, triggered_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    new.env_id,
                    new.operation,
                    RunStatus::Queued,
                    new.trigger,
                    now_ms()
                ],
            );
            let run = match inserted {
                Err(err) if is_unique_violation(&err) => {
                    return Err(StateError::Busy {
                        run_id: active.first().map_or(0, |r| r.id),
                    });
                }
                inserted => inserted?,
            };
            conn.execute(
                "UPDATE runs SET inputs = ?2 WHERE id = ?1",
                params![run.id, inputs(run.id).to_string()],
            )?;
            Ok(Queued::New(run))
        })
    }

    /// Claims the queued run that should start next under `limits` (see the module's fair
    /// share), marking it running; `None` when none may start now.
    pub fn claim_next_run(&self, limits: RunLimits) -> Result<Option<Run>> {
        self.write(|conn| {
            let running: i64 = conn.query_row(
                "SELECT COUNT(*) FROM runs WHERE status = 'running'",
                [],
                |row| row.get(0),
            )?;
            if running >= i64::from(limits.total) {
                return Ok(None);
            }
            // The oldest waiting run of each idle environment, with its organization's load
            // and limit.
            let mut candidates = conn.prepare_cached(
                "SELECT r.id,
                        (SELECT COUNT(*) FROM runs x JOIN environments xe
                           ON xe.id = x.environment_id
                          WHERE x.status = 'running'
                            AND xe.organization_id = e.organization_id) AS org_running,
                        COALESCE(l.concurrent_runs, ?1) AS org_limit
                   FROM runs r
                   JOIN environments e ON e.id = r.environment_id
                   LEFT JOIN organization_limits l ON l.organization_id = e.organization_id
                  WHERE r.status = 'queued'
                    AND NOT EXISTS (SELECT 1 FROM runs y
                                     WHERE y.environment_id = r.environment_id
                                       AND (y.status = 'running'
                                            OR (y.status = 'queued' AND y.id < r.id)))
                  ORDER BY org_running, r.id",
            )?;
            let next: Option<i64> = candidates
                .query_map([limits.per_organization], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })?
                .filter_map(|row| row.ok())
                .find(|(_, org_running, org_limit)| org_running < org_limit)
                .map(|(id, _, _)| id);
            let Some(id) = next else { return Ok(None) };
            conn.execute(
                "UPDATE runs SET status = 'running', started_at = ?2
                 WHERE id = ?1 AND status = 'queued'",
                params![id, now_ms()],
            )?;
            Ok(Some(run_row(conn, id)?))
        })
    }

    /// The inputs run `id` was queued with.
    pub fn run_inputs(&self, id: i64) -> Result<Value> {
        self.read(|conn| {
            let text: String = conn
                .query_row("SELECT inputs FROM runs WHERE id = ?1", [id], |row| {
                    row.get(0)
                })
                .optional()?
                .ok_or_else(|| StateError::NotFound(format!("run {id}")))?;
            serde_json::from_str(&text)
                .map_err(|e| StateError::Invalid(format!("the inputs of run {id}: {e}")))
        })
    }

    /// Cancels run `id` if it is still waiting; `false` when it is not queued (any more).
    pub fn cancel_queued(&self, id: i64) -> Result<bool> {
        self.write(|conn| {
            let changed = conn.execute(
                "UPDATE runs SET status = 'cancelled', cancel_requested = 1, finished_at = ?2,
                                 error = 'cancelled before it started'
                 WHERE id = ?1 AND status = 'queued'",
                params![id, now_ms()],
            )?;
            Ok(changed > 0)
        })
    }

    /// The runs waiting, oldest first.
    pub fn queued_runs(&self) -> Result<Vec<Run>> {
        self.read(|conn| all(conn, "WHERE status = 'queued' ORDER BY id", []))
    }

    /// How many runs organization `org_id` may run at once, if the operator set it.
    pub fn concurrent_runs(&self, org_id: i64) -> Result<Option<u32>> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT concurrent_runs FROM organization_limits WHERE organization_id = ?1",
                    [org_id],
                    |row| row.get::<_, Option<u32>>(0),
                )
                .optional()?
                .flatten())
        })
    }

    /// Sets (or, with `None`, gives back to the platform's default) how many runs organization
    /// `org_id` may run at once.
    pub fn set_concurrent_runs(&self, org_id: i64, limit: Option<u32>) -> Result<()> {
        if limit == Some(0) {
            return Err(StateError::Invalid(
                "a limit of concurrent runs is at least 1".into(),
            ));
        }
        self.write(|conn| {
            crate::orgs::organization_row(conn, org_id)?;
            conn.execute(
                "INSERT INTO organization_limits (organization_id, concurrent_runs) VALUES (?1, ?2)
                 ON CONFLICT (organization_id) DO UPDATE SET concurrent_runs = excluded.concurrent_runs",
                params![org_id, limit],
            )?;
            Ok(())
        })
    }
}

/// The environment's runs queued or running, running first.
fn active_runs(conn: &Connection, env_id: i64) -> Result<Vec<Run>> {
    all(
        conn,
        "WHERE environment_id = ?1 AND status IN ('queued', 'running')
         ORDER BY status = 'queued', id",
        [env_id],
    )
}
