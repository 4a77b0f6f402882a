//! The event log of a run (what a live view streams and a late viewer replays) and the audit
//! trail of every capability call a plugin made, allowed or not.
//!
//! Both are append-only. Event ids grow monotonically, so a client that reconnects asks for the
//! events after the last id it saw (SSE's `Last-Event-ID`).

use rusqlite::{Row, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Record, Result, SqlResultExt, Store, all, insert_returning, json_column, now_ms};

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
