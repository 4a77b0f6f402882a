//! A customer-style hook for the deploy tests: it stops deploys of frozen environments (named
//! `frozen-…`) before Odoo starts, reports every healthy deploy, and tries (in vain) to write on
//! the run's record.

use berth_contract::facts;
use berth_sdk::prelude::*;

struct Gate;

impl Plugin for Gate {
    fn describe() -> Description {
        Description::hook("gate", env!("CARGO_PKG_VERSION"))
            .summary("Freezes environments named frozen-*; reports healthy deploys")
            .on("before:start-odoo")
            .on("after:health-check")
    }
}

impl Hook for Gate {
    fn handle(event: Event) -> Result<Verdict, Error> {
        let env = &event.run.environment.name;
        match event.point.as_str() {
            "before:start-odoo" if env.starts_with("frozen-") => {
                Ok(Verdict::abort(format!("{env} is frozen")))
            }
            "after:health-check" => {
                info!("gate: {env} is healthy after {}", event.run.operation);
                // A hook observes the run; it may not steer it.
                if let Err(e) = berth_sdk::operation::note(facts::PATH, "fast") {
                    info!("gate: note refused: {}", e.message());
                }
                Ok(Verdict::Continue)
            }
            _ => Ok(Verdict::Continue),
        }
    }
}

berth_sdk::export!(hook: Gate);
