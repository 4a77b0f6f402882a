//! `git`: declared in the contract; the backend (control-plane mirrors with libgit2, tree export over
//! SSH) is not built yet, so each call is checked and answered `unsupported`.

use super::not_built_yet;
use crate::bindings::git::Host;
use crate::grants::Capability;
use crate::state::{Fault, RunState};

const CAP: Capability = Capability::GIT;

impl Host for RunState {
    async fn fetch(&mut self, _url: String) -> Result<(), Fault> {
        not_built_yet(self, &CAP, "git.fetch")
    }

    async fn resolve(&mut self, _url: String, _reference: String) -> Result<String, Fault> {
        not_built_yet(self, &CAP, "git.resolve")
    }

    async fn changed_paths(
        &mut self,
        _url: String,
        _base: String,
        _head: String,
    ) -> Result<Vec<String>, Fault> {
        not_built_yet(self, &CAP, "git.changed-paths")
    }

    async fn export_tree(
        &mut self,
        _url: String,
        _commit: String,
        _destination: String,
    ) -> Result<u64, Fault> {
        not_built_yet(self, &CAP, "git.export-tree")
    }
}
