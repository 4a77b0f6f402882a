//! The `deploy` lifecycle: first deploy and redeploy of an Odoo environment, in the seed's steps.
//! A redeploy is the same flow: it re-exports the code, recreates Odoo and reinstalls dependencies,
//! and never touches the data (the database is initialised only if it never was).

use std::time::Duration;

use berth_odoo::steps::{self, Run};
use berth_sdk::prelude::*;

/// How long the health check of a deploy waits for Odoo.
const HEALTH_LIMIT: Duration = Duration::from_secs(300);

struct Deploy;

impl Plugin for Deploy {
    fn describe() -> Description {
        berth_odoo::CAPABILITIES.iter().fold(
            Description::lifecycle("deploy", env!("CARGO_PKG_VERSION"))
                .summary("First deploy and redeploy of an Odoo environment"),
            |d, c| d.capability(c),
        )
    }
}

impl Lifecycle for Deploy {
    fn steps(operation: String, _environment: Environment) -> Result<Vec<String>, Error> {
        match operation.as_str() {
            "first-deploy" | "redeploy" => Ok(berth_odoo::DEPLOY_STEPS.map(String::from).to_vec()),
            other => Err(Error::unsupported(format!(
                "deploy does not perform {other:?}"
            ))),
        }
    }

    fn run_step(context: StepContext) -> Result<StepOutcome, Error> {
        let run = Run::load(context.run.environment)?;
        steps::run_step(&context.step, &run, HEALTH_LIMIT)
    }
}

berth_sdk::export!(lifecycle: Deploy);
