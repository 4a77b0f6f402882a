//! `blobs`: host-side byte objects, the carrier of bulk data.
//!
//! A blob is either **stored** — in memory while small, spilled to an unlinked temporary file past
//! [`SPILL_AT`] — or a **stream**: a producer (a `pg_dump`, a download, a zip being assembled) that
//! has not run yet. A stream runs when its consumer reads it (an upload, a restore, another
//! archive), through a bounded pipe: the producer is held back by the consumer, so a dump of any
//! size crosses the control plane without being stored on its disk or in its memory. The consumer
//! computes the stream's size and SHA-256 as the bytes pass; a stream whose producer failed ends
//! in an error, never in a clean end of data, so a partial dump can never pass for a whole one.
//! Asking for random access (`read`) before a stream was consumed stores it first.
//!
//! Plugins hold handles and read only bounded slices; bulk data never enters their memory. The
//! blob itself is a backend ([`berth_backends::blob`]); this module is its WIT door.

use std::io;

use wasmtime::component::Resource;

pub use berth_backends::blob::{Blob, BlobReader, BlobWriter, Producer, SPILL_AT, Summary};

use crate::bindings::Fault;
use crate::bindings::blobs::{Host, HostBlob};
use crate::bindings::types::Error;
use crate::state::RunState;

/// Runs blocking blob I/O off the async executor.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io::Error::other(format!("blob worker failed: {e}")))?
}

pub(crate) fn blob_error(call: &str, err: io::Error) -> Fault {
    if err.kind() == io::ErrorKind::FileTooLarge {
        Error::invalid(format!("{call}: {err}")).into()
    } else {
        Error::failed(format!("{call}: {err}")).into()
    }
}

impl RunState {
    /// A reader over a blob of this invocation (starting it, if it is a stream).
    pub(crate) fn blob_reader(
        &mut self,
        blob: &Resource<Blob>,
        call: &str,
    ) -> Result<BlobReader, Fault> {
        self.get_mut(blob)?
            .reader()
            .map_err(|e| Error::failed(format!("{call}: reading the blob: {e}")).into())
    }
}

impl Host for RunState {}

impl HostBlob for RunState {
    async fn new(&mut self) -> wasmtime::Result<Resource<Blob>> {
        self.budget.charge()?;
        let blob = Blob::new(self.limits.blob_bytes);
        self.push(blob).map_err(Fault::into_trap)
    }

    async fn size(&mut self, blob: Resource<Blob>) -> wasmtime::Result<u64> {
        self.budget.charge()?;
        let blob = self.get_mut(&blob).map_err(Fault::into_trap)?;
        blob.store()
            .await
            .map_err(|e| blob_error("blob.size", e).into_trap())?;
        blob.size()
            .map_err(|e| blob_error("blob.size", e).into_trap())
    }

    async fn append(&mut self, blob: Resource<Blob>, data: Vec<u8>) -> Result<(), Fault> {
        self.charge()?;
        self.get_mut(&blob)?
            .append(&data)
            .map_err(|e| blob_error("blob.append", e))
    }

    async fn read(
        &mut self,
        blob: Resource<Blob>,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, Fault> {
        self.charge()?;
        if len > self.limits.read_bytes {
            return Err(Error::invalid(format!(
                "blob.read of {len} bytes is over the limit of {} bytes per read",
                self.limits.read_bytes
            ))
            .into());
        }
        let blob = self.get_mut(&blob)?;
        blob.store().await.map_err(|e| blob_error("blob.read", e))?;
        blob.read_at(offset, len as usize)
            .map_err(|e| blob_error("blob.read", e))
    }

    async fn sha256(&mut self, blob: Resource<Blob>) -> Result<String, Fault> {
        self.charge()?;
        self.get_mut(&blob)?
            .sha256()
            .await
            .map_err(|e| blob_error("blob.sha256", e))
    }

    async fn drop(&mut self, blob: Resource<Blob>) -> wasmtime::Result<()> {
        self.delete(blob)?;
        Ok(())
    }
}
