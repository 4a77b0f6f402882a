//! The host side of each WIT interface: one module per interface, the same shape in each.
//!
//! Every function opens with the door — [`RunState::gate`] for capability-bound calls (budget,
//! grant, audit), [`RunState::charge`] for the always-available ones — then does the real work.
//! A call whose backend this run lacks (no server, no mirrors, no storage targets) answers
//! `unsupported` after the grant check: the host never pretends to have done something.

pub mod archive;
pub mod blobs;
pub mod config;
pub mod database;
pub mod docker;
pub mod files;
pub mod git;
pub mod log;
pub mod operation;
pub mod secrets;
pub mod ssh;
pub mod storage;
pub mod targets;
#[cfg(test)]
mod testing;

use berth_backends::blob::OverQuota;

use crate::bindings::Fault;
use crate::bindings::types::Error;
use crate::limits::LimitExceeded;

/// Maps an I/O error on a plugin-named path to the WIT error a plugin can act on; a quota the
/// plugin went over ends the invocation, as every limit does.
pub(crate) fn io_error(call: &str, path: &str, err: std::io::Error) -> Fault {
    use std::io::ErrorKind::*;
    if let Some(quota) = OverQuota::of(&err) {
        return LimitExceeded::Quota(quota.clone()).into();
    }
    let msg = format!("{call} {path:?}: {err}");
    Fault::Guest(match err.kind() {
        NotFound => Error::not_found(msg),
        PermissionDenied | InvalidInput | AlreadyExists | IsADirectory | NotADirectory
        | DirectoryNotEmpty => Error::invalid(msg),
        _ => Error::failed(msg),
    })
}

#[cfg(test)]
mod tests {
    //! How a failed file operation on a plugin-named path reaches the plugin: what it named is
    //! missing, or it asked for something impossible, or the host failed.

    use super::{Error, Fault, io_error};
    use std::io::{self, ErrorKind};

    fn kind_of(kind: ErrorKind) -> Error {
        match io_error("files.read", "a/b", io::Error::new(kind, "boom")) {
            Fault::Guest(err) => err,
            Fault::Trap(trap) => panic!("an I/O error must not trap: {trap:#}"),
        }
    }

    #[test]
    fn io_errors_map_to_the_error_a_plugin_can_act_on() {
        assert!(matches!(kind_of(ErrorKind::NotFound), Error::NotFound(_)));
        for kind in [
            ErrorKind::PermissionDenied,
            ErrorKind::InvalidInput,
            ErrorKind::AlreadyExists,
            ErrorKind::IsADirectory,
            ErrorKind::NotADirectory,
            ErrorKind::DirectoryNotEmpty,
        ] {
            assert!(matches!(kind_of(kind), Error::Invalid(_)), "{kind:?}");
        }
        for kind in [
            ErrorKind::Other,
            ErrorKind::Interrupted,
            ErrorKind::StorageFull,
            ErrorKind::TimedOut,
        ] {
            assert!(matches!(kind_of(kind), Error::Failed(_)), "{kind:?}");
        }
    }

    #[test]
    fn a_quota_gone_over_ends_the_invocation() {
        let quota = berth_backends::blob::OverQuota {
            what: "disk",
            limit: 10,
        };
        let Fault::Trap(trap) = io_error("files.write", "a", quota.clone().into()) else {
            panic!("a quota must trap");
        };
        assert_eq!(
            crate::capabilities::testing::limit_trap(&trap),
            crate::limits::LimitExceeded::Quota(quota)
        );
    }

    #[test]
    fn io_errors_name_the_call_and_the_path() {
        let err = kind_of(ErrorKind::NotFound);
        assert_eq!(err.message(), "files.read \"a/b\": boom");
    }
}
