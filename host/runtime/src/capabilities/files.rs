//! `files`: the run's workspace directory, through cap-std.
//!
//! The workspace is opened once per invocation as a capability (`cap_std::fs::Dir`); every path the
//! plugin names is resolved beneath it, so `..`, absolute paths and symlinks cannot lead outside.
//! Capability `files`.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cap_std::fs::Dir;
use wasmtime::component::Resource;

use super::blobs::{Blob, blocking};
use super::io_error;
use crate::bindings::Fault;
use crate::bindings::files::{Entry, Host};
use crate::bindings::types::Error;
use crate::grants::Capability;
use crate::state::RunState;

/// What the run lends `files`: its workspace directory on the control plane, opened (as a
/// capability, once) by the first call that needs it.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    dir: OnceLock<Dir>,
}

impl Workspace {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Workspace {
            root: root.into(),
            dir: OnceLock::new(),
        }
    }

    fn dir(&self) -> io::Result<&Dir> {
        if let Some(dir) = self.dir.get() {
            return Ok(dir);
        }
        let dir = Dir::open_ambient_dir(&self.root, cap_std::ambient_authority())?;
        Ok(self.dir.get_or_init(|| dir))
    }

    /// The directory, once a door opened it.
    fn opened(&self) -> &Dir {
        self.dir.get().expect("opened at the door")
    }
}

impl RunState {
    /// The door of every `files` call: the grant, then the workspace itself.
    fn workspace(&mut self, call: &str) -> Result<Arc<Workspace>, Fault> {
        let workspace = self.gate_lent::<Workspace>(
            &Capability::FILES,
            call,
            "this invocation has no workspace",
        )?;
        workspace
            .dir()
            .map_err(|e| Error::failed(format!("cannot open the run workspace: {e}")))?;
        Ok(workspace)
    }
}

/// Writes create missing parent directories, as plugin authors expect of a scratch directory.
fn ensure_parent(dir: &Dir, path: &str) -> io::Result<()> {
    match std::path::Path::new(path).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => dir.create_dir_all(parent),
        _ => Ok(()),
    }
}

impl Host for RunState {
    async fn read(&mut self, path: String) -> Result<Vec<u8>, Fault> {
        let limit = self.limits.read_bytes as u64;
        let workspace = self.workspace("files.read")?;
        let dir = workspace.opened();
        let size = dir
            .metadata(&path)
            .map_err(|e| io_error("files.read", &path, e))?
            .len();
        if size > limit {
            return Err(Error::invalid(format!(
                "files.read {path:?}: {size} bytes is over the limit of {limit} bytes; open it as a blob"
            ))
            .into());
        }
        dir.read(&path)
            .map_err(|e| io_error("files.read", &path, e))
    }

    async fn write(&mut self, path: String, data: Vec<u8>) -> Result<(), Fault> {
        let workspace = self.workspace("files.write")?;
        let dir = workspace.opened();
        ensure_parent(dir, &path).map_err(|e| io_error("files.write", &path, e))?;
        dir.write(&path, data)
            .map_err(|e| io_error("files.write", &path, e))
    }

    async fn list_dir(&mut self, path: String) -> Result<Vec<Entry>, Fault> {
        let workspace = self.workspace("files.list-dir")?;
        let dir = workspace.opened();
        let mut entries = Vec::new();
        for entry in dir
            .read_dir(&path)
            .map_err(|e| io_error("files.list-dir", &path, e))?
        {
            let entry = entry.map_err(|e| io_error("files.list-dir", &path, e))?;
            let meta = entry
                .metadata()
                .map_err(|e| io_error("files.list-dir", &path, e))?;
            entries.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: meta.is_dir(),
                size: meta.len(),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    async fn create_dir(&mut self, path: String) -> Result<(), Fault> {
        let workspace = self.workspace("files.create-dir")?;
        let dir = workspace.opened();
        dir.create_dir_all(&path)
            .map_err(|e| io_error("files.create-dir", &path, e))
    }

    async fn remove(&mut self, path: String) -> Result<(), Fault> {
        let workspace = self.workspace("files.remove")?;
        let dir = workspace.opened();
        let meta = dir
            .symlink_metadata(&path)
            .map_err(|e| io_error("files.remove", &path, e))?;
        let removed = if meta.is_dir() {
            dir.remove_dir_all(&path)
        } else {
            dir.remove_file(&path)
        };
        removed.map_err(|e| io_error("files.remove", &path, e))
    }

    async fn exists(&mut self, path: String) -> Result<bool, Fault> {
        let workspace = self.workspace("files.exists")?;
        let dir = workspace.opened();
        dir.try_exists(&path)
            .map_err(|e| io_error("files.exists", &path, e))
    }

    async fn save(&mut self, path: String, data: Resource<Blob>) -> Result<u64, Fault> {
        let workspace = self.workspace("files.save")?;
        let dir = workspace.opened();
        ensure_parent(dir, &path).map_err(|e| io_error("files.save", &path, e))?;
        let file = dir
            .create(&path)
            .map_err(|e| io_error("files.save", &path, e))?
            .into_std();
        let mut reader = self
            .get_mut(&data)?
            .reader()
            .map_err(|e| io_error("files.save", &path, e))?;
        let copy = async {
            let mut out = tokio::fs::File::from_std(file);
            let n = tokio::io::copy(&mut reader, &mut out).await?;
            out.sync_all().await?;
            Ok(n)
        };
        copy.await.map_err(|e| io_error("files.save", &path, e))
    }

    async fn open(&mut self, path: String) -> Result<Resource<Blob>, Fault> {
        let limit = self.limits.blob_bytes;
        let file = self
            .workspace("files.open")?
            .opened()
            .open(&path)
            .map_err(|e| io_error("files.open", &path, e))?
            .into_std();
        let blob = blocking(move || {
            let mut blob = Blob::new(limit);
            blob.fill_from(file)?;
            Ok(blob)
        })
        .await
        .map_err(|e| io_error("files.open", &path, e))?;
        self.push(blob)
    }
}

#[cfg(test)]
mod tests {
    //! The door of `files` (its grant, its scope, the workspace the run lent) and the workspace as
    //! a sandbox: what is written reads back, and no path leads outside it.

    use std::path::Path;
    use std::sync::Arc;

    use super::super::testing::{self, Run};
    use super::{Error, Fault, RunState, Workspace};
    use crate::bindings::files;

    async fn read(state: &mut RunState) -> Result<Vec<u8>, Fault> {
        files::Host::read(state, "notes.txt".into()).await
    }

    async fn write(state: &mut RunState) -> Result<(), Fault> {
        files::Host::write(state, "notes.txt".into(), b"hello".to_vec()).await
    }

    async fn list(state: &mut RunState) -> Result<Vec<files::Entry>, Fault> {
        files::Host::list_dir(state, ".".into()).await
    }

    /// A run granted `files`, its workspace the `workspace` directory under `dir`.
    fn run_in(dir: &Path) -> Run {
        let workspace = dir.join("workspace");
        std::fs::create_dir_all(&workspace).unwrap();
        Run::lifecycle()
            .granted("files")
            .lend(Arc::new(Workspace::new(workspace)))
    }

    /// Asserts `result` refused a path: `not-found` or `invalid`, never a value.
    fn refused<T: std::fmt::Debug>(path: &str, result: Result<T, Fault>) {
        let err = testing::guest_error(result);
        assert!(
            matches!(err, Error::NotFound(_) | Error::Invalid(_)),
            "{path:?}: {err:?}"
        );
    }

    #[tokio::test]
    async fn a_call_without_the_grant_is_denied_and_audited() {
        testing::assert_denied_without_grant("files", "files.read", read).await;
        testing::assert_denied_without_grant("files", "files.write", write).await;
        testing::assert_denied_without_grant("files", "files.list-dir", list).await;
    }

    #[tokio::test]
    async fn a_grant_for_another_scope_does_not_count() {
        testing::assert_other_scopes_do_not_count("files", "files.read", read).await;
        testing::assert_other_scopes_do_not_count("files", "files.write", write).await;
    }

    #[tokio::test]
    async fn an_invocation_without_a_workspace_answers_unsupported_and_is_not_audited() {
        let missing = "this invocation has no workspace";
        testing::assert_unsupported_when_nothing_lent("files", "files.read", missing, read).await;
        testing::assert_unsupported_when_nothing_lent("files", "files.write", missing, write).await;
        testing::assert_unsupported_when_nothing_lent("files", "files.list-dir", missing, list)
            .await;
    }

    #[tokio::test]
    async fn what_is_written_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path());
        let mut state = run.state();
        files::Host::write(&mut state, "conf/odoo.conf".into(), b"[options]\n".to_vec())
            .await
            .unwrap();
        files::Host::write(&mut state, "a.txt".into(), b"a".to_vec())
            .await
            .unwrap();
        assert_eq!(
            files::Host::read(&mut state, "conf/odoo.conf".into())
                .await
                .unwrap(),
            b"[options]\n"
        );
        assert_eq!(
            std::fs::read(dir.path().join("workspace/conf/odoo.conf")).unwrap(),
            b"[options]\n",
            "the file lands in the workspace"
        );
        let entries = files::Host::list_dir(&mut state, ".".into()).await.unwrap();
        let listed: Vec<(&str, bool, u64)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.is_dir, e.size))
            .collect();
        assert_eq!(listed[0], ("a.txt", false, 1));
        assert_eq!(listed[1].0, "conf");
        assert!(listed[1].1);
        assert!(
            files::Host::exists(&mut state, "a.txt".into())
                .await
                .unwrap()
        );
        files::Host::remove(&mut state, "conf".into())
            .await
            .unwrap();
        assert!(
            !files::Host::exists(&mut state, "conf/odoo.conf".into())
                .await
                .unwrap()
        );
        let err =
            testing::guest_error(files::Host::read(&mut state, "conf/odoo.conf".into()).await);
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
        assert!(
            run.audited().is_empty(),
            "the workspace is private to the run: its use is not audited"
        );
    }

    #[tokio::test]
    async fn no_path_leads_outside_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path());
        std::fs::write(dir.path().join("outside.txt"), b"not yours").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("outside.txt"),
            dir.path().join("workspace/link"),
        )
        .unwrap();
        let mut state = run.state();
        for path in [
            "../outside.txt",
            "/etc/passwd",
            "link",
            "a/../../outside.txt",
        ] {
            refused(path, files::Host::read(&mut state, path.into()).await);
        }
        let absolute = dir.path().join("escape").display().to_string();
        for path in ["../x", absolute.as_str(), "link"] {
            refused(
                path,
                files::Host::write(&mut state, path.into(), b"owned".to_vec()).await,
            );
        }
        refused("..", files::Host::list_dir(&mut state, "..".into()).await);
        refused(
            "../outside.txt",
            files::Host::remove(&mut state, "../outside.txt".into()).await,
        );
        assert!(!dir.path().join("x").exists());
        assert!(!Path::new(&absolute).exists());
        assert_eq!(
            std::fs::read(dir.path().join("outside.txt")).unwrap(),
            b"not yours"
        );
    }

    #[tokio::test]
    async fn a_read_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path()).limits(|l| l.read_bytes = 4);
        let mut state = run.state();
        files::Host::write(&mut state, "big".into(), b"12345".to_vec())
            .await
            .unwrap();
        let err = testing::guest_error(files::Host::read(&mut state, "big".into()).await);
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("open it as a blob")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_workspace_that_cannot_be_opened_fails_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::lifecycle()
            .granted("files")
            .lend(Arc::new(Workspace::new(dir.path().join("missing"))));
        let err = testing::guest_error(read(&mut run.state()).await);
        assert!(
            matches!(&err, Error::Failed(m) if m.starts_with("cannot open the run workspace")),
            "{err:?}"
        );
    }
}
