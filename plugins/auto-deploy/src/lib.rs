//! The `auto-deploy` lifecycle: a push to the tracked branch, deployed Fast or Full exactly as the
//! seed says. Fast only when dev mode is on and no dependency file (`requirements.txt`, `apt.txt`,
//! `setup.py`, `pyproject.toml`, `setup.cfg`, `Pipfile`, `Pipfile.lock`, `poetry.lock`) changed in
//! any repository since the deployed commit; Fast = pull the code, restart Odoo, health check
//! within 90 seconds; Full = the deploy flow. The decision and its reason are facts of the run.

use std::time::Duration;

use berth_odoo::deps::dependency_change;
use berth_odoo::steps::{self, Run, plan_commit, target_commit};
use berth_sdk::prelude::*;
use berth_sdk::{git, operation};

/// The seed's bound on a fast deploy's health check; a full deploy waits as long as a deploy.
const FAST_HEALTH_LIMIT: Duration = Duration::from_secs(90);
const FULL_HEALTH_LIMIT: Duration = Duration::from_secs(300);

struct AutoDeploy;

impl Plugin for AutoDeploy {
    fn describe() -> Description {
        berth_odoo::CAPABILITIES.iter().fold(
            Description::lifecycle("auto-deploy", env!("CARGO_PKG_VERSION"))
                .summary("Deploys a push: fast (code and restart) or full (the deploy flow)"),
            |d, c| d.capability(c),
        )
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

impl Lifecycle for AutoDeploy {
    fn steps(operation: String, environment: Environment) -> Result<Vec<String>, Error> {
        if operation != "auto-deploy" {
            return Err(Error::unsupported(format!(
                "auto-deploy does not perform {operation:?}"
            )));
        }
        let run = Run::load(environment)?;
        let (fast, reason) = decide(&run)?;
        let path = if fast { "fast" } else { "full" };
        operation::note("path", path)?;
        operation::note("reason", &reason)?;
        info!("{path} deploy: {reason}");
        let steps: &[&str] = if fast {
            &berth_odoo::FAST_STEPS
        } else {
            &berth_odoo::DEPLOY_STEPS
        };
        Ok(steps.iter().map(|s| s.to_string()).collect())
    }

    fn run_step(context: StepContext) -> Result<StepOutcome, Error> {
        let run = Run::load(context.run.environment)?;
        let facts: serde_json::Value = serde_json::from_str(&operation::facts()?)
            .map_err(|e| Error::failed(format!("the run's facts are not JSON: {e}")))?;
        let fast = facts["path"] == "fast";
        let limit = if fast {
            FAST_HEALTH_LIMIT
        } else {
            FULL_HEALTH_LIMIT
        };
        steps::run_step(&context.step, &run, limit)
    }
}

berth_sdk::export!(lifecycle: AutoDeploy);
