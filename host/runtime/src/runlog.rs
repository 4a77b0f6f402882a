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

/// Turns a command's output chunks into run-log lines, up to a byte bound per command; past it one
/// line says the rest was left out of the log (the caller still gets the tails).
pub struct OutputLines {
    log: std::sync::Arc<dyn LogSink>,
    source: String,
    limit: usize,
    logged: usize,
    pending: [Vec<u8>; 2],
}

impl OutputLines {
    /// Bytes of one command's output that reach the run log.
    pub const LIMIT: usize = 1 << 20;

    pub fn new(log: std::sync::Arc<dyn LogSink>, source: String) -> Self {
        OutputLines {
            log,
            source,
            limit: Self::LIMIT,
            logged: 0,
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// Takes a chunk of stdout (`stderr == false`) or stderr.
    pub fn push(&mut self, stderr: bool, data: &[u8]) {
        let index = stderr as usize;
        self.pending[index].extend_from_slice(data);
        while let Some(end) = self.pending[index].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending[index].drain(..=end).collect();
            self.emit(stderr, &line[..line.len() - 1]);
        }
        if self.pending[stderr as usize].len() > 16 << 10 {
            let long = std::mem::take(&mut self.pending[stderr as usize]);
            self.emit(stderr, &long);
        }
    }

    /// Emits what is left of unterminated lines.
    pub fn finish(&mut self) {
        for stderr in [false, true] {
            let rest = std::mem::take(&mut self.pending[stderr as usize]);
            if !rest.is_empty() {
                self.emit(stderr, &rest);
            }
        }
    }

    fn emit(&mut self, stderr: bool, line: &[u8]) {
        if self.logged > self.limit {
            return;
        }
        self.logged += line.len();
        let message = if self.logged > self.limit {
            format!("(output past {} bytes is left out of the log)", self.limit)
        } else {
            String::from_utf8_lossy(line).into_owned()
        };
        self.log.event(RunEvent::Log {
            at: SystemTime::now(),
            plugin: self.source.clone(),
            level: if stderr { Level::Warn } else { Level::Info },
            message,
        });
    }
}
