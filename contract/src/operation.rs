//! The operations a run performs. The WIT's `operation` enum, the API's and the state's names are
//! all this one list; adding an operation starts here.

use std::fmt;
use std::str::FromStr;

/// What a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    FirstDeploy,
    Redeploy,
    AutoDeploy,
    Backup,
    Restore,
}

impl Operation {
    /// Every operation, in the order the product guide introduces them.
    pub const ALL: [Operation; 5] = [
        Operation::FirstDeploy,
        Operation::Redeploy,
        Operation::AutoDeploy,
        Operation::Backup,
        Operation::Restore,
    ];

    /// The name as the WIT, the API and the state spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::FirstDeploy => "first-deploy",
            Operation::Redeploy => "redeploy",
            Operation::AutoDeploy => "auto-deploy",
            Operation::Backup => "backup",
            Operation::Restore => "restore",
        }
    }

    /// Whether a successful run of it leaves the environment deployed.
    pub const fn deploys(self) -> bool {
        matches!(
            self,
            Operation::FirstDeploy | Operation::Redeploy | Operation::AutoDeploy
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOperation(pub String);

impl fmt::Display for UnknownOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Operation::ALL.iter().map(|o| o.as_str()).collect();
        write!(
            f,
            "unknown operation {:?} (one of {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownOperation {}

impl FromStr for Operation {
    type Err = UnknownOperation;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|o| o.as_str() == name)
            .ok_or_else(|| UnknownOperation(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::Operation;

    #[test]
    fn names_round_trip() {
        for op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
        }
        let err = "deploy".parse::<Operation>().unwrap_err().to_string();
        assert!(err.contains("unknown operation \"deploy\""), "{err}");
        assert!(Operation::AutoDeploy.deploys() && !Operation::Backup.deploys());
    }
}
