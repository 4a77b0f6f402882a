//! `operation`: the run's own data — the environment's settings, its repositories, the run's inputs —
//! and the facts a plugin records on its run. Reading needs no grant: it concerns only the run the
//! plugin was called for. Writing (facts, deployed commits) is the run's lifecycle plugin's alone: a
//! hook must not steer the operation it observes (e.g. fake a deployed commit to force a fast path).
//! The data comes from the caller's [`RunContext`]; without one (a plugin run by hand) every call
//! answers `unsupported`.

use std::sync::Arc;
use std::time::Duration;

use crate::bindings::Fault;
use crate::bindings::operation::{EnvironmentSettings, Host, Repository, RunInputs};
use crate::bindings::types::{Error, Role};
use crate::state::RunState;

/// Longest key and value of a recorded fact.
const NOTE_KEY_MAX: usize = 64;
const NOTE_VALUE_MAX: usize = 4096;

/// What the pipeline engine knows about the run an invocation belongs to.
pub trait RunContext: Send + Sync {
    fn settings(&self) -> EnvironmentSettings;
    fn repositories(&self) -> Vec<Repository>;
    /// What the trigger or the API asked of the run.
    fn inputs(&self) -> RunInputs;
    fn note(&self, key: &str, value: &str);
    /// The facts recorded so far, as a JSON object of strings.
    fn facts(&self) -> String;
    /// Whether `name` is one of the run's repositories; then records `commit` for it.
    fn deployed(&self, name: &str, commit: &str) -> bool;
    /// Time the invocation spent inside host calls (SSH, Docker, PostgreSQL…), reported when it ends.
    fn host_time(&self, _spent: Duration) {}
}

impl RunState {
    /// The context, for a call that changes the run's record: lifecycle plugins only.
    fn context_to_write(&mut self, call: &str) -> Result<Arc<dyn RunContext>, Fault> {
        let context = self.context(call)?;
        if self.description.role != Role::Lifecycle {
            return Err(Error::denied(format!(
                "{call}: only the run's lifecycle plugin records on the run, not {}",
                self.plugin
            ))
            .into());
        }
        Ok(context)
    }

    fn context(&mut self, call: &str) -> Result<Arc<dyn RunContext>, Fault> {
        self.charge()?;
        self.lent_or::<dyn RunContext>(call, "this invocation belongs to no operation")
    }
}

impl Host for RunState {
    async fn settings(&mut self) -> Result<EnvironmentSettings, Fault> {
        Ok(self.context("operation.settings")?.settings())
    }

    async fn repositories(&mut self) -> Result<Vec<Repository>, Fault> {
        Ok(self.context("operation.repositories")?.repositories())
    }

    async fn inputs(&mut self) -> Result<RunInputs, Fault> {
        Ok(self.context("operation.inputs")?.inputs())
    }

    async fn note(&mut self, key: String, value: String) -> Result<(), Fault> {
        let context = self.context_to_write("operation.note")?;
        let key_ok = !key.is_empty()
            && key.len() <= NOTE_KEY_MAX
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !key_ok {
            return Err(Error::invalid(format!(
                "fact key {key:?} must be 1-{NOTE_KEY_MAX} lowercase letters, digits or '-'"
            ))
            .into());
        }
        if value.len() > NOTE_VALUE_MAX {
            return Err(Error::invalid(format!(
                "fact {key:?} is {} bytes; at most {NOTE_VALUE_MAX}",
                value.len()
            ))
            .into());
        }
        context.note(&key, &value);
        Ok(())
    }

    async fn facts(&mut self) -> Result<String, Fault> {
        Ok(self.context("operation.facts")?.facts())
    }

    async fn deployed(&mut self, name: String, commit: String) -> Result<(), Fault> {
        let context = self.context_to_write("operation.deployed")?;
        if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!("{commit:?} is not a full commit id")).into());
        }
        if !context.deployed(&name, &commit) {
            return Err(
                Error::not_found(format!("the run has no repository named {name:?}")).into(),
            );
        }
        Ok(())
    }
}
