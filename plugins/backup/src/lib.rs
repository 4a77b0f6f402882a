//! The `backup` lifecycle: an environment's database, filestore and manifest as Odoo's
//! database-manager zip, streamed to a storage target, then the target pruned by the environment's
//! retention policy. The steps are `berth_odoo::backup`'s.

use berth_odoo::backup;
use berth_odoo::steps::{self, Run};
use berth_sdk::prelude::*;

struct Backup;

/// Exactly what the backup uses: the database (to read versions and modules, and dump it), Docker
/// (the filestore's tar, the database container's `pg_dump --version`), the storage targets.
const CAPABILITIES: [&str; 4] = ["database", "database.dump", "docker", "targets"];

impl Plugin for Backup {
    fn describe() -> Description {
        Description::lifecycle("backup", env!("CARGO_PKG_VERSION"))
            .summary("Back up an Odoo environment to a storage target, pruned GFS")
            .capabilities(&CAPABILITIES)
            .conventions(berth_odoo::conventions())
    }
}

impl Lifecycle for Backup {
    fn steps(operation: Operation, _environment: Environment) -> Result<Vec<String>, Error> {
        match operation {
            Operation::Backup => Ok(steps::names(backup::STEPS)),
            other => Err(Error::unsupported_operation("backup", other)),
        }
    }

    fn run_step(context: StepContext) -> Result<StepOutcome, Error> {
        let run = Run::load(context.run.environment)?;
        steps::run(backup::STEPS, &context.step, &run)
    }
}

berth_sdk::export!(lifecycle: Backup);
