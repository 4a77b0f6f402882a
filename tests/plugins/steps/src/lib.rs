//! The smallest lifecycle plugin: the operation `noop` with two steps that do nothing.

use berth_sdk::prelude::*;

struct Steps;

impl Plugin for Steps {
    fn describe() -> Description {
        Description::lifecycle("steps", env!("CARGO_PKG_VERSION"))
            .summary("Two steps that do nothing")
    }
}

impl Lifecycle for Steps {
    fn steps(operation: String, _environment: Environment) -> Result<Vec<String>, Error> {
        match operation.as_str() {
            "noop" => Ok(vec!["look-around".into(), "report".into()]),
            other => Err(Error::invalid(format!(
                "steps does not know the operation {other:?}"
            ))),
        }
    }

    fn run_step(context: StepContext) -> Result<StepOutcome, Error> {
        info!("step {} of {}", context.step, context.run.operation);
        Ok(StepOutcome::Skipped("nothing to do".into()))
    }
}

berth_sdk::export!(lifecycle: Steps);
