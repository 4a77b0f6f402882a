//! `git`: the control plane's repository mirrors. Capability `git`. Exporting a tree also needs the
//! run's server; it lands under the environment's `code/` directory there.

use std::sync::Arc;

use berth_backends::docker::Scope;
use berth_backends::git::{GitError, Mirrors};

use crate::bindings::Fault;
use crate::bindings::git::Host;
use crate::bindings::types::Error;
use crate::capabilities::operation::RunContext;
use crate::grants::Capability;
use crate::state::RunState;

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
        self.gate_lent::<Mirrors>(
            &Capability::GIT,
            call,
            "this control plane keeps no mirrors",
        )
    }
    /// The door of a `git` call about repository `url`: within an operation, only the run's own
    /// repositories — the URLs the API checked when they were added — so a plugin cannot name a
    /// path on the control plane (another tenant's mirror) or an address the API would refuse.
    fn mirrors_for(&mut self, call: &str, url: &str) -> Result<Arc<Mirrors>, Fault> {
        let mirrors = self.mirrors(call)?;
        if let Some(run) = self.lent::<dyn RunContext>()
            && !run.repositories().iter().any(|r| r.url == url)
        {
            return Err(Error::denied(format!(
                "{call}: {url:?} is not one of this run's repositories"
            ))
            .into());
        }
        Ok(mirrors)
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
        let mirrors = self.mirrors_for("git.fetch", &url)?;
        blocking(move || mirrors.fetch(&url)).await
    }

    async fn resolve(&mut self, url: String, reference: String) -> Result<String, Fault> {
        let mirrors = self.mirrors_for("git.resolve", &url)?;
        blocking(move || mirrors.resolve(&url, &reference)).await
    }

    async fn changed_paths(
        &mut self,
        url: String,
        base: String,
        head: String,
    ) -> Result<Vec<String>, Fault> {
        let mirrors = self.mirrors_for("git.changed-paths", &url)?;
        blocking(move || mirrors.changed_paths(&url, &base, &head)).await
    }

    async fn export_tree(
        &mut self,
        url: String,
        commit: String,
        destination: String,
    ) -> Result<u64, Fault> {
        let mirrors = self.mirrors_for("git.export-tree", &url)?;
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

#[cfg(test)]
mod tests {
    //! The door of `git` (its grant, its scope, the mirrors the control plane lent, the server an
    //! export needs) and how git failures reach the plugin; nothing here fetches.

    use std::sync::Arc;

    use super::super::testing::{self, Run};
    use super::{Error, Fault, GitError, Mirrors, RunState, git_fault};
    use crate::bindings::git;

    async fn fetch(state: &mut RunState) -> Result<(), Fault> {
        git::Host::fetch(state, "https://example.com/shop.git".into()).await
    }

    async fn resolve(state: &mut RunState) -> Result<String, Fault> {
        git::Host::resolve(state, "https://example.com/shop.git".into(), "main".into()).await
    }

    async fn export_to(state: &mut RunState, destination: &str) -> Result<u64, Fault> {
        let commit = "0".repeat(40);
        git::Host::export_tree(
            state,
            "https://example.com/shop.git".into(),
            commit,
            destination.into(),
        )
        .await
    }

    async fn export(state: &mut RunState) -> Result<u64, Fault> {
        export_to(state, "addons").await
    }

    fn mirrors(dir: &std::path::Path) -> Arc<Mirrors> {
        Arc::new(Mirrors::new(&dir.join("mirrors")).unwrap())
    }

    /// A hook granted `git` fetched another organization's repository by its `file://` path on
    /// the control plane: within a run, only the run's own repositories are reachable.
    #[tokio::test]
    async fn only_the_runs_own_repositories_are_reachable() {
        let mirrors = tempfile::tempdir().unwrap();
        let run = Run::hook()
            .declares("git")
            .granted("git")
            .lend(Arc::new(Mirrors::new(mirrors.path()).unwrap()))
            .lend::<dyn crate::capabilities::operation::RunContext>(Arc::new(
                testing::Record::default(),
            ));
        let mut state = run.state();
        for url in [
            "file:///srv/berth-data/mirrors/other-tenant",
            "/etc",
            "https://127.0.0.1/x.git",
        ] {
            let refused = git::Host::fetch(&mut state, url.into()).await;
            match testing::guest_error(refused) {
                Error::Denied(m) => {
                    assert!(m.contains("not one of this run's repositories"), "{m}")
                }
                other => panic!("{url}: {other:?}"),
            }
            let refused = git::Host::resolve(&mut state, url.into(), "main".into()).await;
            assert!(
                matches!(testing::guest_error(refused), Error::Denied(_)),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn a_call_without_the_grant_is_denied_and_audited() {
        testing::assert_denied_without_grant("git", "git.fetch", fetch).await;
        testing::assert_denied_without_grant("git", "git.resolve", resolve).await;
        testing::assert_denied_without_grant("git", "git.export-tree", export).await;
    }

    #[tokio::test]
    async fn a_grant_for_another_scope_does_not_count() {
        testing::assert_other_scopes_do_not_count("git", "git.fetch", fetch).await;
        testing::assert_other_scopes_do_not_count("git", "git.export-tree", export).await;
    }

    #[tokio::test]
    async fn a_control_plane_without_mirrors_answers_unsupported() {
        let missing = "this control plane keeps no mirrors";
        testing::assert_unsupported_when_nothing_lent("git", "git.fetch", missing, fetch).await;
        testing::assert_unsupported_when_nothing_lent("git", "git.resolve", missing, resolve).await;
        testing::assert_unsupported_when_nothing_lent("git", "git.export-tree", missing, export)
            .await;
    }

    #[tokio::test]
    async fn an_export_needs_a_clean_relative_destination_and_the_runs_server() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::lifecycle().granted("git").lend(mirrors(dir.path()));
        for destination in ["", "/srv", "../other", "a/../../b", "a//b", "./a"] {
            let err = testing::guest_error(export_to(&mut run.state(), destination).await);
            assert!(matches!(err, Error::Invalid(_)), "{destination:?}: {err:?}");
        }
        let err = testing::guest_error(export(&mut run.state()).await);
        assert!(
            matches!(&err, Error::Unsupported(m) if m == "git.export-tree: this run has no server"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_unknown_repository_is_not_found_in_the_mirrors() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::lifecycle().granted("git").lend(mirrors(dir.path()));
        let err = testing::guest_error(resolve(&mut run.state()).await);
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
        let err = testing::guest_error(
            git::Host::fetch(&mut run.state(), "--upload-pack=evil".into()).await,
        );
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    }

    #[test]
    fn git_errors_map_to_the_error_a_plugin_can_act_on() {
        let map = |err: GitError| match git_fault(err) {
            Fault::Guest(err) => (err.kind(), err.message().to_string()),
            Fault::Trap(trap) => panic!("a git error must not trap: {trap:#}"),
        };
        assert_eq!(
            map(GitError::NotFound("no ref main".into())),
            ("not-found", "no ref main".into())
        );
        assert_eq!(map(GitError::Invalid("bad url".into())).0, "invalid");
        assert_eq!(map(GitError::Failed("network".into())).0, "failed");
    }
}
