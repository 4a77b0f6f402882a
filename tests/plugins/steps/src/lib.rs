//! The smallest lifecycle plugin: two steps that do nothing, whatever the operation (operations are
//! the contract's fixed list, so it has none of its own), and no conventions.

use berth_sdk::prelude::*;

struct Steps;

impl Plugin for Steps {
    fn describe() -> Description {
        Description::lifecycle("steps", env!("CARGO_PKG_VERSION"))
            .summary("Two steps that do nothing")
    }
}

impl Lifecycle for Steps {
    fn steps(_operation: Operation, _environment: Environment) -> Result<Vec<String>, Error> {
        Ok(vec!["look-around".into(), "report".into()])
    }

    fn run_step(context: StepContext) -> Result<StepOutcome, Error> {
        info!("step {} of {}", context.step, context.run.operation);
        Ok(StepOutcome::Skipped("nothing to do".into()))
    }
}

berth_sdk::export!(lifecycle: Steps);
