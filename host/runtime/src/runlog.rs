//! The run log: what plugins say while they work.
//!
//! Plugins write through the `log` interface (and their stdout/stderr, captured by the sandbox); the
//! host forwards each line, tagged with the plugin, to a [`LogSink`]. The sink is where a run's events
//! go: the CLI prints them, the pipeline engine persists and streams them, tests collect them.

use std::sync::Mutex;
use std::time::SystemTime;

pub use crate::bindings::log::Level;

#[derive(Clone, Debug, PartialEq)]
pub enum RunEvent {
    Log {
        at: SystemTime,
        plugin: String,
        level: Level,
        message: String,
    },
    Progress {
        at: SystemTime,
        plugin: String,
        done: u64,
        total: u64,
        unit: String,
    },
}

impl RunEvent {
    /// One human-readable line.
    pub fn render(&self) -> String {
        match self {
            RunEvent::Log {
                plugin,
                level,
                message,
                ..
            } => format!("[{plugin}] {}: {message}", level_name(*level)),
            RunEvent::Progress {
                plugin,
                done,
                total,
                unit,
                ..
            } => format!("[{plugin}] progress: {done}/{total} {unit}"),
        }
    }
}

pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

pub trait LogSink: Send + Sync {
    fn event(&self, event: RunEvent);
}

/// Collects events in memory.
#[derive(Default)]
pub struct MemoryLog(Mutex<Vec<RunEvent>>);

impl MemoryLog {
    pub fn events(&self) -> Vec<RunEvent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The messages of all log lines, in order.
    pub fn messages(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                RunEvent::Log { message, .. } => Some(message),
                RunEvent::Progress { .. } => None,
            })
            .collect()
    }
}

impl LogSink for MemoryLog {
    fn event(&self, event: RunEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

/// Writes each event as a line to standard error.
pub struct StderrLog;

impl LogSink for StderrLog {
    fn event(&self, event: RunEvent) {
        eprintln!("{}", event.render());
    }
}
