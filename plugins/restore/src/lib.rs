//! The `restore` lifecycle: an environment's data replaced by a backup, in the seed's steps, with
//! the previous data kept beside until the restored one is healthy. The steps are
//! `berth_odoo::restore`'s.

use berth_odoo::restore;
use berth_odoo::steps::{self, Run};
use berth_sdk::prelude::*;

struct Restore;

impl Plugin for Restore {
    fn describe() -> Description {
        Description::lifecycle("restore", env!("CARGO_PKG_VERSION"))
            .summary("Restore an Odoo environment from a backup, atomically")
            .capabilities(&berth_odoo::CAPABILITIES)
            .capabilities(&["database.dump", "targets"])
            .conventions(berth_odoo::conventions())
    }
}

impl Lifecycle for Restore {
    fn steps(operation: Operation, _environment: Environment) -> Result<Vec<String>, Error> {
        match operation {
            Operation::Restore => Ok(steps::names(restore::STEPS)),
            other => Err(Error::unsupported_operation("restore", other)),
        }
    }

    fn run_step(context: StepContext) -> Result<StepOutcome, Error> {
        let run = Run::load(context.run.environment)?;
        steps::run(restore::STEPS, &context.step, &run)
    }
}

berth_sdk::export!(lifecycle: Restore);
