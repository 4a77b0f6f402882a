//! `git`: the control plane's repository mirrors. Capability `git`. Exporting a tree also needs the
//! run's server; it lands under the environment's `code/` directory there.

use std::sync::Arc;

use berth_primitives::docker::Scope;
use berth_primitives::git::{GitError, Mirrors};

use crate::bindings::git::Host;
use crate::bindings::types::Error;
use crate::grants::Capability;
use crate::state::{Fault, RunState};

fn git_fault(err: GitError) -> Fault {
    Fault::Guest(match err {
        GitError::NotFound(m) => Error::not_found(m),
        GitError::Invalid(m) => Error::invalid(m),
        GitError::Failed(m) => Error::failed(m),
    })
}

impl RunState {
    /// The door of every `git` call: the grant, then the mirrors.
    fn mirrors(&mut self, call: &str) -> Result<Arc<Mirrors>, Fault> {
        self.gate(&Capability::GIT, call)?;
        self.mirrors.clone().ok_or_else(|| {
            Error::unsupported(format!("{call}: this control plane keeps no mirrors")).into()
        })
    }
}

/// Runs a blocking libgit2 call off the async executor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, GitError> + Send + 'static,
) -> Result<T, Fault> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Fault::Guest(Error::failed(format!("git worker: {e}"))))?
        .map_err(git_fault)
}

impl Host for RunState {
    async fn fetch(&mut self, url: String) -> Result<(), Fault> {
        let mirrors = self.mirrors("git.fetch")?;
        blocking(move || mirrors.fetch(&url)).await
    }

    async fn resolve(&mut self, url: String, reference: String) -> Result<String, Fault> {
        let mirrors = self.mirrors("git.resolve")?;
        blocking(move || mirrors.resolve(&url, &reference)).await
    }

    async fn changed_paths(
        &mut self,
        url: String,
        base: String,
        head: String,
    ) -> Result<Vec<String>, Fault> {
        let mirrors = self.mirrors("git.changed-paths")?;
        blocking(move || mirrors.changed_paths(&url, &base, &head)).await
    }

    async fn export_tree(
        &mut self,
        url: String,
        commit: String,
        destination: String,
    ) -> Result<u64, Fault> {
        let mirrors = self.mirrors("git.export-tree")?;
        let clean = !destination.is_empty()
            && !destination.starts_with('/')
            && destination
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !clean {
            return Err(Error::invalid(format!(
                "{destination:?} must be a relative path without . or .."
            ))
            .into());
        }
        let access = self.server(&Capability::GIT, "git.export-tree")?;
        let env = &self.env;
        let root = Scope::environment(&env.organization, &env.project, &env.environment).root;
        let path = format!("{root}/code/{destination}");
        mirrors
            .export(&access.pool, &access.target, &url, &commit, &path)
            .await
            .map_err(git_fault)
    }
}
