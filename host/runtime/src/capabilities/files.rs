//! `files`: the run's workspace directory, through cap-std.
//!
//! The workspace is opened once per invocation as a capability (`cap_std::fs::Dir`); every path the
//! plugin names is resolved beneath it, so `..`, absolute paths and symlinks cannot lead outside.
//! What the run keeps there counts against its disk quota (shared with the blobs that spill
//! there): a write is charged before it happens and refused beyond the quota, a `save` is charged
//! as it streams and its partial file removed when it goes over, a removal gives back what it
//! freed. Capability `files`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_backends::blob::Meter;
use cap_std::fs::Dir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::component::Resource;

use super::blobs::{Blob, BlobReader, blocking};
use super::io_error;
use crate::bindings::Fault;
use crate::bindings::files::{Entry, Host};
use crate::bindings::types::Error;
use crate::grants::Capability;
use crate::state::RunState;
use crate::workspace::Workspace;

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

/// The unit the disk quota counts in, as a file system does: a file costs its bytes in whole
/// blocks, and an empty file or a directory still one block.
const BLOCK: u64 = 4096;

fn cost(len: u64) -> u64 {
    len.div_ceil(BLOCK).max(1) * BLOCK
}

/// What `path` costs now: a file its blocks, a directory a block and everything in it, nothing
/// when it is missing.
fn usage(dir: &Dir, path: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![path.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = match dir.symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !meta.is_dir() {
            total += cost(meta.len());
            continue;
        }
        total += BLOCK;
        for entry in dir.read_dir(&path)? {
            pending.push(path.join(entry?.file_name()));
        }
    }
    Ok(total)
}

/// Settles a path's charge: `charged` was taken for it, it turned out to cost `actual`.
fn settle(quota: &Meter, charged: u64, actual: u64) {
    if actual < charged {
        quota.give(charged - actual);
    } else {
        quota.count(actual - charged);
    }
}

/// Runs `work`, which replaces what is at `path` with something costing `expected`: the growth is
/// taken from the quota first (beyond it, nothing is done), then the charge is settled on what
/// `path` costs once `work` is done, whether it succeeded or not.
fn replace<T>(
    dir: &Dir,
    quota: &Meter,
    path: &Path,
    expected: u64,
    work: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    let before = usage(dir, path)?;
    let reserved = expected.saturating_sub(before);
    quota.take(reserved)?;
    let result = work();
    let after = usage(dir, path).unwrap_or(before + reserved);
    settle(quota, before + reserved, after);
    result
}

/// Creates `path` and its missing parents, as plugin authors expect of a scratch directory, each
/// new directory taken from the quota before it is made.
fn make_dirs(dir: &Dir, quota: &Meter, path: &Path) -> io::Result<()> {
    let mut at = PathBuf::new();
    for part in path.components() {
        at.push(part);
        match dir.metadata(&at) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is a file", at.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        quota.take(BLOCK)?;
        match dir.create_dir(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => quota.give(BLOCK),
            Err(e) => {
                quota.give(BLOCK);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The parents of the file at `path`, made as [`make_dirs`] does.
fn make_parents(dir: &Dir, quota: &Meter, path: &str) -> io::Result<()> {
    match Path::new(path).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => make_dirs(dir, quota, parent),
        _ => Ok(()),
    }
}

/// Copies `reader` into `out`, taking each block from `quota` before it is written; `charged`
/// bytes are held for the file already and the total held is kept there, whatever the outcome.
async fn copy_charged(
    reader: &mut BlobReader,
    out: &mut tokio::fs::File,
    quota: &Meter,
    charged: &mut u64,
) -> io::Result<u64> {
    let mut chunk = vec![0u8; 64 << 10];
    let mut written = 0u64;
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        let needed = cost(written + n as u64);
        if needed > *charged {
            quota.take(needed - *charged)?;
            *charged = needed;
        }
        out.write_all(&chunk[..n]).await?;
        written += n as u64;
    }
    out.sync_all().await?;
    Ok(written)
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
        let (dir, quota) = (workspace.opened(), workspace.disk().meter());
        make_parents(dir, quota, &path).map_err(|e| io_error("files.write", &path, e))?;
        replace(
            dir,
            quota,
            Path::new(&path),
            cost(data.len() as u64),
            || dir.write(&path, &data),
        )
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
        make_dirs(
            workspace.opened(),
            workspace.disk().meter(),
            Path::new(&path),
        )
        .map_err(|e| io_error("files.create-dir", &path, e))
    }

    async fn remove(&mut self, path: String) -> Result<(), Fault> {
        let workspace = self.workspace("files.remove")?;
        let (dir, quota) = (workspace.opened(), workspace.disk().meter());
        let meta = dir
            .symlink_metadata(&path)
            .map_err(|e| io_error("files.remove", &path, e))?;
        replace(dir, quota, Path::new(&path), 0, || {
            if meta.is_dir() {
                dir.remove_dir_all(&path)
            } else {
                dir.remove_file(&path)
            }
        })
        .map_err(|e| io_error("files.remove", &path, e))
    }

    async fn exists(&mut self, path: String) -> Result<bool, Fault> {
        let workspace = self.workspace("files.exists")?;
        let dir = workspace.opened();
        dir.try_exists(&path)
            .map_err(|e| io_error("files.exists", &path, e))
    }

    async fn save(&mut self, path: String, data: Resource<Blob>) -> Result<u64, Fault> {
        let workspace = self.workspace("files.save")?;
        let (dir, quota) = (workspace.opened(), workspace.disk().meter());
        let fail = |e| io_error("files.save", &path, e);
        make_parents(dir, quota, &path).map_err(fail)?;
        // The file it replaces is charged already; the new one is charged as it grows.
        let mut charged = usage(dir, Path::new(&path)).map_err(fail)?;
        let mut out = tokio::fs::File::from_std(dir.create(&path).map_err(fail)?.into_std());
        let mut reader = self.get_mut(&data)?.reader().map_err(fail)?;
        match copy_charged(&mut reader, &mut out, quota, &mut charged).await {
            Ok(written) => {
                settle(quota, charged, cost(written));
                Ok(written)
            }
            Err(e) => {
                // A partial file is no file: it goes, and so does its charge.
                drop(out);
                let _ = dir.remove_file(&path);
                let left = usage(dir, Path::new(&path)).unwrap_or(charged);
                settle(quota, charged, left);
                Err(fail(e))
            }
        }
    }

    async fn open(&mut self, path: String) -> Result<Resource<Blob>, Fault> {
        let room = self.room();
        let file = self
            .workspace("files.open")?
            .opened()
            .open(&path)
            .map_err(|e| io_error("files.open", &path, e))?
            .into_std();
        let blob = blocking(move || {
            let mut blob = room.blob();
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

    use wasmtime::component::Resource;

    use super::super::testing::{self, Run};
    use super::{BLOCK, Error, Fault, RunState, Workspace};
    use crate::bindings::blobs::HostBlob;
    use crate::bindings::files;
    use crate::limits::LimitExceeded;

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
        run_with_quota(dir, crate::limits::RUN_DISK_BYTES).0
    }

    /// [`run_in`], the workspace under `quota` bytes; and the workspace, to read its meter.
    fn run_with_quota(dir: &Path, quota: u64) -> (Run, Arc<Workspace>) {
        let root = dir.join("workspace");
        std::fs::create_dir_all(&root).unwrap();
        let workspace = Arc::new(Workspace::with_quota(root, quota));
        let run = Run::lifecycle().granted("files").lend(workspace.clone());
        (run, workspace)
    }

    /// Asserts `result` trapped on the run's disk quota of `limit` bytes.
    fn over_disk_quota<T: std::fmt::Debug>(limit: u64, result: Result<T, Fault>) {
        let trap = match result {
            Err(Fault::Trap(trap)) => trap,
            other => panic!("expected the disk quota, got {other:?}"),
        };
        match testing::limit_trap(&trap) {
            LimitExceeded::Quota(quota) => {
                assert_eq!(quota.limit, limit);
                assert!(quota.what.starts_with("disk"), "{quota:?}");
            }
            other => panic!("expected the disk quota, got {other}"),
        }
    }

    /// A blob of `len` bytes in `state`'s table, filled through the plugin's own calls.
    async fn blob_of(state: &mut RunState, len: usize) -> Result<Resource<super::Blob>, Fault> {
        let blob = HostBlob::new(state).await.map_err(Fault::Trap)?;
        for _ in 0..len / (256 << 10) {
            HostBlob::append(state, Resource::new_borrow(blob.rep()), vec![7; 256 << 10]).await?;
        }
        Ok(blob)
    }

    /// A plugin granted `files` once wrote 1 GiB into its workspace: no quota held it.
    #[tokio::test]
    async fn a_workspace_holds_no_more_than_its_quota() {
        let dir = tempfile::tempdir().unwrap();
        let (run, workspace) = run_with_quota(dir.path(), 64 << 10);
        let meter = workspace.disk().meter().clone();
        let mut state = run.state();
        let write = async |state: &mut RunState, path: &str, len: usize| {
            files::Host::write(state, path.into(), vec![1; len]).await
        };
        write(&mut state, "a", 40 << 10).await.unwrap();
        assert_eq!(meter.used(), 40 << 10);
        over_disk_quota(64 << 10, write(&mut state, "b", 40 << 10).await);
        assert!(
            !dir.path().join("workspace/b").exists(),
            "nothing was written"
        );
        write(&mut state, "a", 10 << 10).await.unwrap();
        assert_eq!(
            meter.used(),
            12 << 10,
            "an overwrite gives back what it freed"
        );
        write(&mut state, "b", 40 << 10).await.unwrap();
        files::Host::create_dir(&mut state, "x/y/z".into())
            .await
            .unwrap();
        assert_eq!(meter.used(), (52 << 10) + 3 * BLOCK);
        files::Host::remove(&mut state, "x".into()).await.unwrap();
        files::Host::remove(&mut state, "a".into()).await.unwrap();
        assert_eq!(meter.used(), 40 << 10, "a removal gives back what it freed");
        over_disk_quota(
            64 << 10,
            files::Host::write(&mut state, "deep/c".into(), vec![1; 24 << 10]).await,
        );
    }

    #[tokio::test]
    async fn a_save_over_the_quota_fails_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let (run, workspace) = run_with_quota(dir.path(), 512 << 10);
        let meter = workspace.disk().meter().clone();
        let mut state = run.state();
        let small = blob_of(&mut state, 256 << 10).await.unwrap();
        let saved = files::Host::save(&mut state, "small".into(), small)
            .await
            .unwrap();
        assert_eq!(saved, 256 << 10);
        let big = blob_of(&mut state, 512 << 10).await.unwrap();
        over_disk_quota(
            512 << 10,
            files::Host::save(&mut state, "big".into(), big).await,
        );
        assert!(
            !dir.path().join("workspace/big").exists(),
            "the partial file is gone"
        );
        assert_eq!(meter.used(), 256 << 10, "and so is its charge");
    }

    /// One blob once spilled 1 GiB into the system's temporary directory, under no quota but its
    /// own 64 GiB.
    #[tokio::test]
    async fn spilled_blobs_count_against_the_workspace_quota_with_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let (run, workspace) = run_with_quota(dir.path(), 3 << 20);
        let meter = workspace.disk().meter().clone();
        let mut state = run.state();
        files::Host::write(&mut state, "file".into(), vec![1; 2 << 20])
            .await
            .unwrap();
        let blob = HostBlob::new(&mut state).await.unwrap();
        let same = || Resource::<super::Blob>::new_borrow(blob.rep());
        for _ in 0..4 {
            HostBlob::append(&mut state, same(), vec![2; 256 << 10])
                .await
                .unwrap();
        }
        assert_eq!(meter.used(), 2 << 20, "a blob in memory costs no disk");
        over_disk_quota(
            3 << 20,
            HostBlob::append(&mut state, same(), vec![3; 256 << 10]).await,
        );
        files::Host::remove(&mut state, "file".into())
            .await
            .unwrap();
        HostBlob::append(&mut state, same(), vec![3; 256 << 10])
            .await
            .unwrap();
        assert_eq!(
            meter.used(),
            (1 << 20) + (256 << 10),
            "the spill is counted"
        );
        HostBlob::drop(&mut state, blob).await.unwrap();
        assert_eq!(meter.used(), 0, "and given back when the blob goes");
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
