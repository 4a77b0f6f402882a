//! `log`: lines and progress into the run log, within the invocation's log budget.

use std::time::SystemTime;

use crate::bindings::log::{Host, Level};
use crate::limits::LimitExceeded;
use crate::runlog::RunEvent;
use crate::state::RunState;

impl RunState {
    /// Counts `bytes` against the log budget; past it the invocation traps.
    fn spend_log(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.log_used += bytes;
        if self.log_used > self.limits.log_bytes {
            return Err(wasmtime::Error::new(LimitExceeded::Log(
                self.limits.log_bytes,
            )));
        }
        Ok(())
    }
}

impl Host for RunState {
    async fn emit(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.budget.charge()?;
        self.spend_log(message.len())?;
        self.log.event(RunEvent::Log {
            at: SystemTime::now(),
            plugin: self.plugin.clone(),
            level,
            message,
        });
        Ok(())
    }

    async fn progress(&mut self, done: u64, total: u64, unit: String) -> wasmtime::Result<()> {
        self.budget.charge()?;
        self.spend_log(unit.len() + 16)?;
        self.log.event(RunEvent::Progress {
            at: SystemTime::now(),
            plugin: self.plugin.clone(),
            done,
            total,
            unit,
        });
        Ok(())
    }
}
