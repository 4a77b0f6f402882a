//! The `restore` lifecycle: an environment's data replaced by a backup, in the seed's steps, with
//! the previous data kept beside until the restored one is healthy. The steps are
//! `berth_odoo::restore`'s.

use std::time::Duration;

use berth_odoo::steps::Run;
use berth_sdk::prelude::*;

/// How long the health check after a restore waits for Odoo.
const HEALTH_LIMIT: Duration = Duration::from_secs(300);

struct Restore;

impl Plugin for Restore {
    fn describe() -> Description {
        berth_odoo::CAPABILITIES
            .iter()
            .chain(&["database.dump", "targets"])
            .fold(
                Description::lifecycle("restore", env!("CARGO_PKG_VERSION"))
                    .summary("Restore an Odoo environment from a backup, atomically"),
                |d, c| d.capability(c),
            )
    }
}

impl Lifecycle for Restore {
    fn steps(operation: String, _environment: Environment) -> Result<Vec<String>, Error> {
        match operation.as_str() {
            "restore" => Ok(berth_odoo::restore::STEPS.map(String::from).to_vec()),
            other => Err(Error::unsupported(format!(
                "restore does not perform {other:?}"
            ))),
        }
    }

    fn run_step(context: StepContext) -> Result<StepOutcome, Error> {
        let run = Run::load(context.run.environment)?;
        berth_odoo::restore::run_step(&context.step, &run, HEALTH_LIMIT)
    }
}

berth_sdk::export!(lifecycle: Restore);
