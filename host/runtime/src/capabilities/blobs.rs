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
//!
//! What the host keeps for a plugin counts against it: an invocation's blobs live in its
//! [`Room`] — their memory on the same meter as the plugin's linear memory, under its memory cap;
//! their spills in the run's workspace, under the run's disk quota. Beyond either the invocation
//! traps with [`LimitExceeded::Quota`].

use std::io;

use wasmtime::component::Resource;

pub use berth_backends::blob::{
    Blob, BlobReader, BlobWriter, OverQuota, Producer, Room, SPILL_AT, Summary,
};

use crate::bindings::Fault;
use crate::bindings::blobs::{Host, HostBlob};
use crate::bindings::types::Error;
use crate::limits::LimitExceeded;
use crate::state::RunState;
use crate::workspace::Workspace;

/// Runs blocking blob I/O off the async executor.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io::Error::other(format!("blob worker failed: {e}")))?
}

pub(crate) fn blob_error(call: &str, err: io::Error) -> Fault {
    if let Some(quota) = OverQuota::of(&err) {
        return LimitExceeded::Quota(quota.clone()).into();
    }
    if err.kind() == io::ErrorKind::FileTooLarge {
        Error::invalid(format!("{call}: {err}")).into()
    } else {
        Error::failed(format!("{call}: {err}")).into()
    }
}

impl RunState {
    /// Where this invocation's blobs live: their memory counted with the plugin's own, their
    /// spills in the run's workspace under its quota (an invocation lent no workspace keeps
    /// blobs in memory only).
    pub(crate) fn room(&self) -> Room {
        Room::new(
            self.limiter.memory().clone(),
            self.lent_ref::<Workspace>().map(|w| w.disk().clone()),
            self.limits.blob_bytes,
        )
    }

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

impl RunState {
    /// Pushes a stream for the plugin: `produce` writes it into its pipe when the blob is
    /// consumed (an upload, a restore, an archive), never before; its error fails the stream.
    pub(crate) fn push_stream<F, Fut, T, E>(&mut self, produce: F) -> Result<Resource<Blob>, Fault>
    where
        F: FnOnce(tokio::io::DuplexStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let blob = self.room().stream(Box::new(move |pipe| {
            Box::pin(async move { produce(pipe).await.map(drop).map_err(io::Error::other) })
        }));
        self.push(blob)
    }
}

impl Host for RunState {}

impl HostBlob for RunState {
    async fn new(&mut self) -> wasmtime::Result<Resource<Blob>> {
        self.budget.charge()?;
        let blob = self.room().blob();
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

#[cfg(test)]
mod tests {
    //! The `blobs` door: always available, every call charged to the budget, reads bounded, a
    //! blob bounded by the invocation's limit, and failures mapped to what a plugin can act on.

    use std::io;

    use super::super::testing::{self, Run};
    use super::{Blob, Error, Fault, blob_error};
    use crate::bindings::blobs::HostBlob;
    use crate::limits::LimitExceeded;

    #[tokio::test]
    async fn a_blob_is_written_and_read_back_without_any_grant() {
        let run = Run::hook();
        let mut state = run.state();
        let blob = HostBlob::new(&mut state).await.unwrap();
        let rep = blob.rep();
        let same = || wasmtime::component::Resource::<Blob>::new_borrow(rep);
        HostBlob::append(&mut state, same(), b"hello, ".to_vec())
            .await
            .unwrap();
        HostBlob::append(&mut state, same(), b"world".to_vec())
            .await
            .unwrap();
        assert_eq!(HostBlob::size(&mut state, same()).await.unwrap(), 12);
        assert_eq!(
            HostBlob::read(&mut state, same(), 7, 100).await.unwrap(),
            b"world"
        );
        assert_eq!(
            HostBlob::read(&mut state, same(), 50, 10).await.unwrap(),
            b""
        );
        assert_eq!(
            HostBlob::sha256(&mut state, same()).await.unwrap(),
            "09ca7e4eaa6e8ae9c7d261167129184883644d07dfba7cbfbc4c8a2e08360d5b"
        );
        HostBlob::drop(&mut state, blob).await.unwrap();
        assert!(
            HostBlob::size(&mut state, same()).await.is_err(),
            "a dropped blob is gone"
        );
        assert!(run.audited().is_empty(), "blobs need no grant");
    }

    #[tokio::test]
    async fn reads_and_blobs_stay_within_the_invocations_limits() {
        let run = Run::hook().limits(|l| {
            l.read_bytes = 4;
            l.blob_bytes = 8;
        });
        let mut state = run.state();
        let blob = HostBlob::new(&mut state).await.unwrap();
        let same = || wasmtime::component::Resource::<Blob>::new_borrow(blob.rep());
        HostBlob::append(&mut state, same(), b"12345678".to_vec())
            .await
            .unwrap();
        let err = testing::guest_error(HostBlob::append(&mut state, same(), b"9".to_vec()).await);
        assert!(
            matches!(&err, Error::Invalid(m) if m.starts_with("blob.append:")),
            "{err:?}"
        );
        let err = testing::guest_error(HostBlob::read(&mut state, same(), 0, 5).await);
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("over the limit of 4 bytes")),
            "{err:?}"
        );
        assert_eq!(
            HostBlob::read(&mut state, same(), 0, 4).await.unwrap(),
            b"1234"
        );
    }

    #[tokio::test]
    async fn live_blobs_are_capped_by_the_resource_limit() {
        let run = Run::hook().limits(|l| l.resources = 2);
        let mut state = run.state();
        HostBlob::new(&mut state).await.unwrap();
        HostBlob::new(&mut state).await.unwrap();
        let trap = HostBlob::new(&mut state).await.unwrap_err();
        assert_eq!(testing::limit_trap(&trap), LimitExceeded::Resources(2));
    }

    /// A hook capped at 64 MiB of memory once held ~1 GiB of host memory as 1,000 blobs of 1 MiB.
    #[tokio::test]
    async fn blobs_in_host_memory_count_against_the_plugins_memory_cap() {
        let run = Run::hook().limits(|l| l.memory = 4 << 20);
        let mut state = run.state();
        let mut held = Vec::new();
        let trap = loop {
            let blob = HostBlob::new(&mut state).await.unwrap();
            let same = wasmtime::component::Resource::<Blob>::new_borrow(blob.rep());
            match HostBlob::append(&mut state, same, vec![1; super::SPILL_AT]).await {
                Ok(()) => held.push(blob),
                Err(Fault::Trap(trap)) => break trap,
                Err(Fault::Guest(err)) => panic!("a quota must trap, not answer {err:?}"),
            }
            assert!(held.len() <= 4, "4 MiB hold four blobs of 1 MiB");
        };
        assert_eq!(held.len(), 4);
        let LimitExceeded::Quota(quota) = testing::limit_trap(&trap) else {
            panic!("expected the memory quota, got {trap:#}");
        };
        assert_eq!(quota.limit, 4 << 20);
        assert!(quota.what.starts_with("memory"), "{quota:?}");
        assert_eq!(state.limiter.memory().used(), 4 << 20);
        HostBlob::drop(&mut state, held.pop().unwrap())
            .await
            .unwrap();
        assert_eq!(
            state.limiter.memory().used(),
            3 << 20,
            "a dropped blob gives its memory back"
        );
    }

    #[tokio::test]
    async fn each_call_is_charged_to_the_budget() {
        let run = Run::hook().limits(|l| l.hostcalls = 2);
        let mut state = run.state();
        let blob = HostBlob::new(&mut state).await.unwrap();
        HostBlob::append(&mut state, blob, b"x".to_vec())
            .await
            .unwrap();
        let any = wasmtime::component::Resource::<Blob>::new_borrow(0);
        let Err(Fault::Trap(trap)) = HostBlob::read(&mut state, any, 0, 1).await else {
            panic!("a call past the budget must trap");
        };
        assert_eq!(testing::limit_trap(&trap), LimitExceeded::Hostcalls(2));
    }

    #[tokio::test]
    async fn a_stream_read_once_cannot_be_read_again() {
        let run = Run::hook();
        let mut state = run.state();
        let stream = Blob::stream(
            1 << 20,
            Box::new(|mut pipe| {
                Box::pin(
                    async move { tokio::io::AsyncWriteExt::write_all(&mut pipe, b"dump").await },
                )
            }),
        );
        let blob = state.push(stream).unwrap();
        let same = || wasmtime::component::Resource::<Blob>::new_borrow(blob.rep());
        let mut reader = state.blob_reader(&same(), "storage.put").unwrap();
        let mut all = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut all)
            .await
            .unwrap();
        assert_eq!(all, b"dump");
        assert_eq!(HostBlob::size(&mut state, same()).await.unwrap(), 4);
        let Err(Fault::Guest(err)) = state.blob_reader(&same(), "storage.put") else {
            panic!("a consumed stream was read again");
        };
        assert!(
            matches!(&err, Error::Failed(m) if m.starts_with("storage.put: reading the blob:")),
            "{err:?}"
        );
    }

    #[test]
    fn blob_errors_map_to_the_error_a_plugin_can_act_on() {
        let kind = |kind: io::ErrorKind| match blob_error("blob.append", io::Error::new(kind, "x"))
        {
            Fault::Guest(err) => err,
            Fault::Trap(trap) => panic!("a blob error must not trap: {trap:#}"),
        };
        let too_large = kind(io::ErrorKind::FileTooLarge);
        assert!(matches!(too_large, Error::Invalid(_)), "{too_large:?}");
        assert_eq!(too_large.message(), "blob.append: x");
        for other in [
            io::ErrorKind::Other,
            io::ErrorKind::NotFound,
            io::ErrorKind::StorageFull,
        ] {
            assert!(matches!(kind(other), Error::Failed(_)), "{other:?}");
        }
    }
}
