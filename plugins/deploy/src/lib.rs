//! The `deploy` lifecycle: first deploy and redeploy of an Odoo environment, in the seed's steps.
//! A redeploy is the same flow: it re-exports the code, recreates Odoo and reinstalls dependencies,
//! and never touches the data (the database is initialised only if it never was).

use berth_odoo::steps::{self, Run};
use berth_sdk::prelude::*;

struct Deploy;

impl Plugin for Deploy {
    fn describe() -> Description {
        Description::lifecycle("deploy", env!("CARGO_PKG_VERSION"))
            .summary("First deploy and redeploy of an Odoo environment")
            .capabilities(&berth_odoo::CAPABILITIES)
            .conventions(berth_odoo::conventions())
    }
}

impl Lifecycle for Deploy {
    fn steps(operation: Operation, _environment: Environment) -> Result<Vec<String>, Error> {
        match operation {
            Operation::FirstDeploy | Operation::Redeploy => Ok(steps::names(steps::DEPLOY)),
            other => Err(Error::unsupported_operation("deploy", other)),
        }
    }

    fn run_step(context: StepContext) -> Result<StepOutcome, Error> {
        let run = Run::load(context.run.environment)?;
        steps::run(steps::DEPLOY, &context.step, &run)
    }
}

berth_sdk::export!(lifecycle: Deploy);
