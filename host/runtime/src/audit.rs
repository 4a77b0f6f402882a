//! The audit trail of host-call decisions.
//!
//! Every denial, and every allowed use of a capability that reaches outside the sandbox, is one
//! [`AuditRecord`]: who (plugin and version), what (capability and call), which scope (the run's
//! environment), when, and the decision. Sinks are append-only; the JSON-lines sink is what an
//! operator greps, the memory sink is what tests assert on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: SystemTime,
    /// `name@version`
    pub plugin: String,
    pub run: String,
    /// `organization/project/environment`
    pub scope: String,
    pub capability: String,
    /// The host call, e.g. `files.read`.
    pub call: String,
    pub allowed: bool,
}

impl AuditRecord {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "at": humantime::format_rfc3339_millis(self.at).to_string(),
            "plugin": self.plugin,
            "run": self.run,
            "scope": self.scope,
            "capability": self.capability,
            "call": self.call,
            "decision": if self.allowed { "allowed" } else { "denied" },
        })
    }
}

pub trait AuditSink: Send + Sync {
    /// Appends one record. A sink that cannot record fails the host call that needed the record:
    /// an audit trail must not silently lose entries.
    fn record(&self, record: AuditRecord) -> std::io::Result<()>;
}

/// Keeps records in memory (tests, the CLI harness).
#[derive(Default)]
pub struct MemoryAudit(Mutex<Vec<AuditRecord>>);

impl MemoryAudit {
    pub fn records(&self) -> Vec<AuditRecord> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl AuditSink for MemoryAudit {
    fn record(&self, record: AuditRecord) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
        Ok(())
    }
}

/// Appends one JSON object per line to a file.
pub struct JsonlAudit {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl JsonlAudit {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(JsonlAudit {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AuditSink for JsonlAudit {
    fn record(&self, record: AuditRecord) -> std::io::Result<()> {
        let mut line = record.to_json().to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(line.as_bytes()).map_err(|err| {
            std::io::Error::new(
                err.kind(),
                format!("audit log {}: {err}", self.path.display()),
            )
        })
    }
}
