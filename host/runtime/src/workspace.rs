//! A run's workspace: its directory on the control plane and the disk quota of what is kept there.
//!
//! Two capabilities keep things in it — `files` writes the plugin's files, `blobs` spills blobs
//! that outgrow memory — so it is its own module, lent once per run, which both find among what
//! the run lent. One quota covers both: a plugin cannot go around it by writing blobs instead of
//! files.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use berth_backends::blob::Disk;
use cap_std::fs::Dir;

/// What the run lends `files` and `blobs`: its workspace directory, opened (as a capability,
/// once) by the first `files` call that needs it, and its disk quota.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    dir: OnceLock<Dir>,
    disk: Arc<Disk>,
}

impl Workspace {
    /// The workspace in `root`, under the default quota ([`crate::limits::RUN_DISK_BYTES`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Workspace::with_quota(root, crate::limits::RUN_DISK_BYTES)
    }

    /// The workspace in `root`, its files and spilled blobs under `quota` bytes.
    pub fn with_quota(root: impl Into<PathBuf>, quota: u64) -> Self {
        let root = root.into();
        Workspace {
            disk: Arc::new(Disk::new(root.clone(), quota)),
            root,
            dir: OnceLock::new(),
        }
    }

    /// Where blobs spill, and the quota they and the files count against.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// The directory, opened as a capability on first use.
    pub(crate) fn dir(&self) -> io::Result<&Dir> {
        if let Some(dir) = self.dir.get() {
            return Ok(dir);
        }
        let dir = Dir::open_ambient_dir(&self.root, cap_std::ambient_authority())?;
        Ok(self.dir.get_or_init(|| dir))
    }

    /// The directory, once [`dir`](Self::dir) opened it.
    pub(crate) fn opened(&self) -> &Dir {
        self.dir.get().expect("opened at the door")
    }
}
