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

use crate::bindings::types::Error;
use crate::state::Fault;

/// Maps an I/O error on a plugin-named path to the WIT error a plugin can act on.
pub(crate) fn io_error(call: &str, path: &str, err: std::io::Error) -> Fault {
    use std::io::ErrorKind::*;
    let msg = format!("{call} {path:?}: {err}");
    Fault::Guest(match err.kind() {
        NotFound => Error::not_found(msg),
        PermissionDenied | InvalidInput | AlreadyExists | IsADirectory | NotADirectory
        | DirectoryNotEmpty => Error::invalid(msg),
        _ => Error::failed(msg),
    })
}
