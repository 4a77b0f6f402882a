//! The `auto-deploy` lifecycle: a push to the tracked branch, deployed Fast or Full exactly as the
//! seed says. Fast only when dev mode is on and no dependency file (`requirements.txt`, `apt.txt`,
//! `setup.py`, `pyproject.toml`, `setup.cfg`, `Pipfile`, `Pipfile.lock`, `poetry.lock`) changed in
//! any repository since the deployed commit; Fast = pull the code, restart Odoo, health check
//! within 90 seconds (`berth_odoo::steps::FAST`); Full = the deploy flow
//! (`berth_odoo::steps::DEPLOY`). The decision and its reason are facts of the run.

use berth_contract::facts;
use berth_odoo::deps::dependency_change;
use berth_odoo::steps::{self, Run, Step, plan_commit, target_commit};
use berth_sdk::prelude::*;
use berth_sdk::{git, operation};

struct AutoDeploy;

impl Plugin for AutoDeploy {
    fn describe() -> Description {
        Description::lifecycle("auto-deploy", env!("CARGO_PKG_VERSION"))
            .summary("Deploys a push: fast (code and restart) or full (the deploy flow)")
            .capabilities(&berth_odoo::CAPABILITIES)
            .conventions(berth_odoo::conventions())
    }
}

/// Fast or Full, and why.
fn decide(run: &Run) -> Result<(bool, String), Error> {
    if !run.settings.dev_mode {
        return Ok((false, "dev mode is off".into()));
    }
    let mut changed_files = 0;
    for repository in &run.repositories {
        let Some(deployed) = &repository.deployed else {
            return Ok((
                false,
                format!("{} was never deployed to this environment", repository.name),
            ));
        };
        let head = target_commit(repository)?;
        plan_commit(repository, &head)?;
        let changed = match git::changed_paths(&repository.url, deployed, &head) {
            Ok(changed) => changed,
            // E.g. the deployed commit was force-pushed away: nothing to compare with.
            Err(e) => {
                return Ok((
                    false,
                    format!(
                        "{}: cannot compare with the deployed commit ({})",
                        repository.name,
                        e.message()
                    ),
                ));
            }
        };
        if let Some(file) = dependency_change(&changed) {
            return Ok((false, format!("{}: {file} changed", repository.name)));
        }
        changed_files += changed.len();
    }
    Ok((
        true,
        format!(
            "dev mode is on and only code changed ({changed_files} file(s), no dependency file)"
        ),
    ))
}

/// The fact `path` of a fast auto-deploy; any other value is a full one.
const FAST: &str = "fast";

/// The steps of a fast or a full auto-deploy.
fn table(fast: bool) -> &'static [Step] {
    if fast { steps::FAST } else { steps::DEPLOY }
}

impl Lifecycle for AutoDeploy {
    fn steps(operation: Operation, environment: Environment) -> Result<Vec<String>, Error> {
        if operation != Operation::AutoDeploy {
            return Err(Error::unsupported_operation("auto-deploy", operation));
        }
        let run = Run::load(environment)?;
        let (fast, reason) = decide(&run)?;
        let path = if fast { FAST } else { "full" };
        operation::note(facts::PATH, path)?;
        operation::note(facts::REASON, &reason)?;
        info!("{path} deploy: {reason}");
        Ok(steps::names(table(fast)))
    }

    fn run_step(context: StepContext) -> Result<StepOutcome, Error> {
        let run = Run::load(context.run.environment)?;
        let fast = steps::facts()?[facts::PATH] == FAST;
        steps::run(table(fast), &context.step, &run)
    }
}

berth_sdk::export!(lifecycle: AutoDeploy);
