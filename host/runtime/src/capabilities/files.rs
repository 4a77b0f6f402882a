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
