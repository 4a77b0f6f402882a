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

#[cfg(test)]
mod tests {
    //! Log lines and progress reach the run log under the plugin's name, need no grant, and stop
    //! at the invocation's log budget with a trap that says so.

    use super::super::testing::{self, LABEL, Run};
    use super::{Level, LimitExceeded, RunEvent};
    use crate::bindings::log;

    #[tokio::test]
    async fn lines_and_progress_reach_the_run_log_under_the_plugins_name() {
        let run = Run::hook();
        let mut state = run.state();
        log::Host::emit(&mut state, Level::Warn, "disk almost full".into())
            .await
            .unwrap();
        log::Host::progress(&mut state, 3, 10, "files".into())
            .await
            .unwrap();
        let events = run.log.events();
        assert_eq!(events.len(), 2, "{events:?}");
        let RunEvent::Log {
            plugin,
            level,
            message,
            ..
        } = &events[0]
        else {
            panic!("{events:?}")
        };
        assert_eq!(
            (plugin.as_str(), *level, message.as_str()),
            (LABEL, Level::Warn, "disk almost full")
        );
        let RunEvent::Progress {
            plugin,
            done,
            total,
            unit,
            ..
        } = &events[1]
        else {
            panic!("{events:?}")
        };
        assert_eq!(
            (plugin.as_str(), *done, *total, unit.as_str()),
            (LABEL, 3, 10, "files")
        );
        assert!(run.audited().is_empty(), "logging needs no grant");
    }

    #[tokio::test]
    async fn logging_past_the_budget_traps() {
        let run = Run::hook().limits(|l| l.log_bytes = 10);
        let mut state = run.state();
        log::Host::emit(&mut state, Level::Info, "0123456789".into())
            .await
            .unwrap();
        let trap = log::Host::emit(&mut state, Level::Info, "x".into())
            .await
            .unwrap_err();
        assert_eq!(testing::limit_trap(&trap), LimitExceeded::Log(10));
        assert_eq!(run.log.messages(), ["0123456789"]);
    }

    #[tokio::test]
    async fn each_line_is_charged_to_the_budget() {
        let run = Run::hook().limits(|l| l.hostcalls = 1);
        let mut state = run.state();
        log::Host::emit(&mut state, Level::Info, "one".into())
            .await
            .unwrap();
        let trap = log::Host::progress(&mut state, 1, 2, "steps".into())
            .await
            .unwrap_err();
        assert_eq!(testing::limit_trap(&trap), LimitExceeded::Hostcalls(1));
    }
}
