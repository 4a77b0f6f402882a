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

#[cfg(test)]
mod tests {
    //! The run's own data: readable without a grant by any plugin of the run, unavailable to a
    //! plugin run outside an operation, and written only by the run's lifecycle plugin, within
    //! bounds.

    use std::sync::Arc;

    use super::super::testing::{self, Record, Run};
    use super::{Error, Fault, RunContext, RunInputs, RunState};
    use crate::bindings::operation;

    fn with_record(run: Run) -> (Run, Arc<Record>) {
        let record = Arc::new(Record::default());
        (run.lend::<dyn RunContext>(record.clone()), record)
    }

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    async fn note(state: &mut RunState) -> Result<(), Fault> {
        operation::Host::note(state, "migrated".into(), "yes".into()).await
    }

    #[tokio::test]
    async fn outside_an_operation_every_call_answers_unsupported() {
        let run = Run::lifecycle();
        let mut state = run.state();
        let expect = |call: &str, err: Error| {
            let want = format!("{call}: this invocation belongs to no operation");
            assert!(
                matches!(&err, Error::Unsupported(m) if *m == want),
                "{call}: {err:?}"
            );
        };
        expect(
            "operation.settings",
            testing::guest_error(operation::Host::settings(&mut state).await),
        );
        expect(
            "operation.repositories",
            testing::guest_error(operation::Host::repositories(&mut state).await),
        );
        expect(
            "operation.inputs",
            testing::guest_error(operation::Host::inputs(&mut state).await),
        );
        expect(
            "operation.facts",
            testing::guest_error(operation::Host::facts(&mut state).await),
        );
        expect(
            "operation.note",
            testing::guest_error(note(&mut state).await),
        );
        expect(
            "operation.deployed",
            testing::guest_error(
                operation::Host::deployed(&mut state, "shop".into(), COMMIT.into()).await,
            ),
        );
        assert!(run.audited().is_empty());
    }

    #[tokio::test]
    async fn any_plugin_of_the_run_reads_its_data_without_a_grant() {
        let (run, _) = with_record(Run::hook());
        let mut state = run.state();
        let settings = operation::Host::settings(&mut state).await.unwrap();
        assert_eq!(settings.directory, "/srv/berth/acme/shop/staging");
        let repositories = operation::Host::repositories(&mut state).await.unwrap();
        assert_eq!(repositories.len(), 1);
        assert_eq!(repositories[0].name, "shop");
        assert!(matches!(
            operation::Host::inputs(&mut state).await.unwrap(),
            RunInputs::None
        ));
        assert_eq!(operation::Host::facts(&mut state).await.unwrap(), "{}");
        assert!(run.audited().is_empty());
    }

    #[tokio::test]
    async fn a_hook_may_not_record_on_the_run() {
        let (run, record) = with_record(Run::hook());
        let err = testing::guest_error(note(&mut run.state()).await);
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("only the run's lifecycle plugin") && m.contains(testing::LABEL)),
            "{err:?}"
        );
        let err = testing::guest_error(
            operation::Host::deployed(&mut run.state(), "shop".into(), COMMIT.into()).await,
        );
        assert!(matches!(err, Error::Denied(_)), "{err:?}");
        assert!(record.notes.lock().unwrap().is_empty());
        assert!(record.deployed.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_lifecycle_plugin_records_facts_and_deployed_commits() {
        let (run, record) = with_record(Run::lifecycle());
        let mut state = run.state();
        note(&mut state).await.unwrap();
        assert_eq!(
            operation::Host::facts(&mut state).await.unwrap(),
            r#"{"migrated":"yes"}"#
        );
        operation::Host::deployed(&mut state, "shop".into(), COMMIT.into())
            .await
            .unwrap();
        assert_eq!(
            *record.deployed.lock().unwrap(),
            [("shop".to_string(), COMMIT.to_string())]
        );
        let err = testing::guest_error(
            operation::Host::deployed(&mut state, "blog".into(), COMMIT.into()).await,
        );
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    }

    #[tokio::test]
    async fn what_is_recorded_stays_within_bounds() {
        let (run, record) = with_record(Run::lifecycle());
        let mut state = run.state();
        let long_key = "k".repeat(65);
        for key in ["", "Upper", "with space", "a_b", long_key.as_str()] {
            let err = testing::guest_error(
                operation::Host::note(&mut state, key.into(), "v".into()).await,
            );
            assert!(matches!(err, Error::Invalid(_)), "{key:?}: {err:?}");
        }
        operation::Host::note(&mut state, "k".repeat(64), "v".repeat(4096))
            .await
            .unwrap();
        let err = testing::guest_error(
            operation::Host::note(&mut state, "big".into(), "v".repeat(4097)).await,
        );
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
        assert_eq!(record.notes.lock().unwrap().len(), 1);
        for commit in ["main", &COMMIT[..39], &"g".repeat(40)] {
            let err = testing::guest_error(
                operation::Host::deployed(&mut state, "shop".into(), commit.into()).await,
            );
            assert!(matches!(err, Error::Invalid(_)), "{commit:?}: {err:?}");
        }
        assert!(record.deployed.lock().unwrap().is_empty());
    }
}
