//! Host-side byte objects, the carrier of bulk data between backends.
//!
//! A blob is either **stored** — in memory while small, spilled to an unnamed file past
//! [`SPILL_AT`] — or a **stream**: a producer (a `pg_dump`, a download, a zip being assembled) that
//! has not run yet. A stream runs when its consumer reads it (an upload, a restore, another
//! archive), through a bounded pipe: the producer is held back by the consumer, so a dump of any
//! size crosses the control plane without being stored on its disk or in its memory. The consumer
//! computes the stream's size and SHA-256 as the bytes pass; a stream whose producer failed ends
//! in an error, never in a clean end of data, so a partial dump can never pass for a whole one.
//! Asking for random access (`read`) before a stream was consumed stores it first.
//!
//! What a stored blob holds is counted, because a plugin asks for it and the host pays for it. A
//! blob lives in a [`Room`]: its memory is counted on the room's memory [`Meter`] (the runtime
//! shares it with the plugin's own linear memory, under one cap), and it spills into the room's
//! [`Disk`] — the run's folder, under the quota the run's files count against too — never into the
//! system's temporary directory. Growing past either fails with [`OverQuota`] before anything is
//! allocated or written; the bytes are given back when the last holder of them lets go (a blob
//! handed over shares its bytes, it does not copy them).

use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;

/// Blobs up to this size stay in memory.
pub const SPILL_AT: usize = 1 << 20;
/// The pipe between a stream's producer and its consumer.
const PIPE: usize = 256 << 10;

/// A holder asked for more than its quota allows. Carried inside an [`io::Error`] of kind
/// `QuotaExceeded` (see [`OverQuota::of`]), so callers can tell it from a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("more than {limit} bytes of {what}")]
pub struct OverQuota {
    /// What is counted, e.g. "memory (…)".
    pub what: &'static str,
    pub limit: u64,
}

impl OverQuota {
    /// The quota `err` ran into, if that is what it is.
    pub fn of(err: &io::Error) -> Option<&OverQuota> {
        err.get_ref()?.downcast_ref()
    }
}

impl From<OverQuota> for io::Error {
    fn from(quota: OverQuota) -> Self {
        io::Error::new(io::ErrorKind::QuotaExceeded, quota)
    }
}

/// Bytes in use against a limit, shared by everything that counts against it.
#[derive(Debug)]
pub struct Meter {
    what: &'static str,
    limit: u64,
    used: AtomicU64,
}

impl Meter {
    pub fn new(what: &'static str, limit: u64) -> Self {
        Meter {
            what,
            limit,
            used: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The refusal this meter answers with.
    pub fn exceeded(&self) -> OverQuota {
        OverQuota {
            what: self.what,
            limit: self.limit,
        }
    }

    /// Takes `n` bytes, or refuses and leaves the meter as it was. Taking nothing always
    /// succeeds, even over the limit: what only frees or keeps room is never refused.
    pub fn take(&self, n: u64) -> Result<(), OverQuota> {
        if n == 0 {
            return Ok(());
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .map(drop)
            .map_err(|_| self.exceeded())
    }

    /// Counts `n` bytes that are in use already, whether or not they fit (what was found on
    /// disk after an operation that was charged less).
    pub fn count(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives back `n` bytes taken before.
    pub fn give(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

/// A run's folder on the control plane and the quota of what is kept in it: blobs spill there
/// (unnamed files, gone when their last holder closes them, even after a crash) and the run's
/// workspace files count against the same quota.
#[derive(Debug)]
pub struct Disk {
    dir: PathBuf,
    meter: Arc<Meter>,
}

impl Disk {
    pub fn new(dir: impl Into<PathBuf>, limit: u64) -> Self {
        Disk {
            dir: dir.into(),
            meter: Arc::new(Meter::new(
                "disk in the run's workspace (its files and spilled blobs)",
                limit,
            )),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }
}

/// Where a holder's blobs live: their memory counted on `memory`, their spills in `disk` (none:
/// a blob cannot outgrow [`SPILL_AT`]), each blob at most `blob_bytes`.
#[derive(Clone, Debug)]
pub struct Room {
    memory: Arc<Meter>,
    disk: Option<Arc<Disk>>,
    blob_bytes: u64,
}

impl Room {
    pub fn new(memory: Arc<Meter>, disk: Option<Arc<Disk>>, blob_bytes: u64) -> Self {
        Room {
            memory,
            disk,
            blob_bytes,
        }
    }

    /// No quota, spilling into the system's temporary directory: for blobs a backend or a test
    /// holds on its own account, outside any plugin's invocation.
    pub fn unbounded(blob_bytes: u64) -> Self {
        Room {
            memory: Arc::new(Meter::new("memory", u64::MAX)),
            disk: Some(Arc::new(Disk::new(std::env::temp_dir(), u64::MAX))),
            blob_bytes,
        }
    }

    /// A new, empty blob in this room.
    pub fn blob(&self) -> Blob {
        Blob {
            body: Body::Memory(Arc::new(Held {
                value: Vec::new(),
                charge: Charge::on(&self.memory),
            })),
            room: self.clone(),
        }
    }

    /// A stream in this room: `produce` runs when (and only when) a consumer reads the blob.
    pub fn stream(&self, produce: Producer) -> Blob {
        Blob {
            body: Body::Stream {
                produce,
                summary: Arc::new(Mutex::new(None)),
            },
            room: self.clone(),
        }
    }

    /// A file to spill `len` bytes into, charged to the disk before anything is written.
    fn spill(&self, len: u64) -> io::Result<Held<File>> {
        let disk = self.disk.as_ref().ok_or_else(|| {
            io::Error::other(format!(
                "a blob over {SPILL_AT} bytes is kept in the run's workspace, and this invocation \
                 has none"
            ))
        })?;
        let mut charge = Charge::on(&disk.meter);
        charge.grow(len)?;
        let file = tempfile::tempfile_in(&disk.dir)?;
        Ok(Held {
            value: file,
            charge,
        })
    }
}

/// Bytes taken from a meter; given back when dropped.
#[derive(Debug)]
struct Charge {
    meter: Arc<Meter>,
    bytes: u64,
}

impl Charge {
    fn on(meter: &Arc<Meter>) -> Self {
        Charge {
            meter: meter.clone(),
            bytes: 0,
        }
    }

    fn grow(&mut self, n: u64) -> Result<(), OverQuota> {
        self.meter.take(n)?;
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.meter.give(self.bytes);
    }
}

/// What a stored blob keeps (a buffer, a spill file) with what it costs. Shared between the
/// holders of the same bytes; the cost is given back when the last one drops it.
#[derive(Debug)]
struct Held<T> {
    value: T,
    charge: Charge,
}

impl Held<Vec<u8>> {
    /// Makes room for `more` bytes, charging the buffer's growth before it is allocated (its
    /// capacity is what it costs). It grows by doubling, up to [`SPILL_AT`].
    fn reserve(&mut self, more: usize) -> io::Result<()> {
        let (len, capacity) = (self.value.len(), self.value.capacity());
        let needed = len + more;
        if needed <= capacity {
            return Ok(());
        }
        let target = needed.max((capacity * 2).min(SPILL_AT));
        self.charge.grow((target - capacity) as u64)?;
        self.value.reserve_exact(target - len);
        Ok(())
    }
}

/// Writes a stream's bytes into the pipe it is given; an error fails the stream.
pub type Producer =
    Box<dyn FnOnce(DuplexStream) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send>> + Send>;

/// What a consumed stream turned out to be.
#[derive(Clone, Debug)]
pub struct Summary {
    pub len: u64,
    pub sha256: String,
}

type SummarySlot = Arc<Mutex<Option<Summary>>>;

/// A host-side byte object.
pub struct Blob {
    body: Body,
    room: Room,
}

enum Body {
    Memory(Arc<Held<Vec<u8>>>),
    File {
        spill: Arc<Held<File>>,
        len: u64,
    },
    Stream {
        produce: Producer,
        summary: SummarySlot,
    },
    /// A stream handed to its consumer; the summary is filled when it ended cleanly.
    Consumed(SummarySlot),
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.body {
            Body::Memory(_) => "memory",
            Body::File { .. } => "file",
            Body::Stream { .. } => "stream",
            Body::Consumed(_) => "consumed stream",
        };
        write!(f, "Blob({kind})")
    }
}

fn consumed() -> io::Error {
    io::Error::other("the blob was a stream and has already been read by another call")
}

/// Copies the first `len` bytes of `from` to a new spill file of `room`.
fn copy_spill(room: &Room, from: &File, len: u64) -> io::Result<Held<File>> {
    let mut to = room.spill(len)?;
    let mut chunk = vec![0u8; 64 << 10];
    let mut offset = 0;
    while offset < len {
        let n = chunk.len().min((len - offset) as usize);
        from.read_exact_at(&mut chunk[..n], offset)?;
        to.value.write_all(&chunk[..n])?;
        offset += n as u64;
    }
    Ok(to)
}

impl Blob {
    /// A blob outside any quota (see [`Room::unbounded`]) of at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Room::unbounded(limit).blob()
    }

    /// A stream outside any quota (see [`Room::unbounded`]): `produce` runs when (and only
    /// when) a consumer reads the blob.
    pub fn stream(limit: u64, produce: Producer) -> Self {
        Room::unbounded(limit).stream(produce)
    }

    /// The stored length; a stream's once it has been consumed.
    pub fn size(&self) -> io::Result<u64> {
        match &self.body {
            Body::Memory(held) => Ok(held.value.len() as u64),
            Body::File { len, .. } => Ok(*len),
            Body::Stream { .. } => Err(io::Error::other("the stream has not been read yet")),
            Body::Consumed(summary) => summary_of(summary).map(|s| s.len),
        }
    }

    /// Whether the blob is a stream that has not run yet.
    pub fn is_pending_stream(&self) -> bool {
        matches!(self.body, Body::Stream { .. })
    }

    /// Appends bytes, spilling to disk when the blob outgrows memory. Bytes shared with another
    /// holder are copied first: what was handed over does not change.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let len = match &self.body {
            Body::Memory(held) => held.value.len() as u64,
            Body::File { len, .. } => *len,
            _ => return Err(io::Error::other("a stream cannot be appended to")),
        };
        let new_len = len + data.len() as u64;
        if new_len > self.room.blob_bytes {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "blob would hold {new_len} bytes, over the limit of {}",
                    self.room.blob_bytes
                ),
            ));
        }
        match &mut self.body {
            Body::Memory(held) if new_len > SPILL_AT as u64 => {
                let mut spill = self.room.spill(new_len)?;
                spill.value.write_all(&held.value)?;
                spill.value.write_all(data)?;
                self.body = Body::File {
                    spill: Arc::new(spill),
                    len: new_len,
                };
            }
            Body::Memory(held) => {
                if Arc::get_mut(held).is_none() {
                    let mut copy = Held {
                        value: Vec::new(),
                        charge: Charge::on(&self.room.memory),
                    };
                    copy.reserve(held.value.len())?;
                    copy.value.extend_from_slice(&held.value);
                    *held = Arc::new(copy);
                }
                let held = Arc::get_mut(held).expect("a buffer of its own");
                held.reserve(data.len())?;
                held.value.extend_from_slice(data);
            }
            Body::File { spill, len } => {
                if Arc::get_mut(spill).is_none() {
                    *spill = Arc::new(copy_spill(&self.room, &spill.value, *len)?);
                }
                let held = Arc::get_mut(spill).expect("a file of its own");
                // The file may be longer than this blob (a copy appended to before): the charge
                // covers the longest it has been.
                let grown = new_len.saturating_sub(held.charge.bytes);
                held.charge.grow(grown)?;
                held.value.write_all_at(data, *len)?;
                *len = new_len;
            }
            _ => unreachable!("checked above"),
        }
        Ok(())
    }

    /// Fills the blob from a reader, in bounded chunks.
    pub fn fill_from(&mut self, mut reader: impl Read) -> io::Result<u64> {
        let mut chunk = vec![0u8; 64 << 10];
        let mut total = 0;
        loop {
            let n = reader.read(&mut chunk)?;
            if n == 0 {
                return Ok(total);
            }
            self.append(&chunk[..n])?;
            total += n as u64;
        }
    }

    /// A sink that appends to this blob (for host calls that fill a blob they return).
    pub fn writer(&mut self) -> BlobWriter<'_> {
        BlobWriter(self)
    }

    /// Runs a pending stream into storage, so it can be read at random. A no-op otherwise.
    pub async fn store(&mut self) -> io::Result<()> {
        if !self.is_pending_stream() {
            return Ok(());
        }
        let mut reader = self.reader()?;
        let mut stored = self.room.blob();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = reader.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            stored.append(&chunk[..n])?;
        }
        self.body = stored.body;
        Ok(())
    }

    /// Reads at most `len` bytes from `offset` of a stored blob.
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let total = self.size()?;
        let end = offset.saturating_add(len as u64).min(total);
        if offset >= end {
            return Ok(Vec::new());
        }
        let n = (end - offset) as usize;
        match &self.body {
            Body::Memory(held) => Ok(held.value[offset as usize..offset as usize + n].to_vec()),
            Body::File { spill, .. } => {
                let mut out = vec![0u8; n];
                spill.value.read_exact_at(&mut out, offset)?;
                Ok(out)
            }
            _ => Err(consumed()),
        }
    }

    /// A reader over the whole content. A stored blob can be read any number of times (the
    /// reader shares its bytes); a stream starts its producer and can be read once.
    pub fn reader(&mut self) -> io::Result<BlobReader> {
        Ok(match &mut self.body {
            Body::Memory(held) => BlobReader::stored(Inner::Memory {
                held: held.clone(),
                pos: 0,
            }),
            Body::File { spill, len } => BlobReader::stored(Inner::File {
                spill: spill.clone(),
                pos: 0,
                len: *len,
            }),
            Body::Consumed(_) => return Err(consumed()),
            Body::Stream { summary, .. } => {
                let summary = summary.clone();
                let Body::Stream { produce, .. } =
                    std::mem::replace(&mut self.body, Body::Consumed(summary.clone()))
                else {
                    unreachable!("matched above")
                };
                let (ours, theirs) = tokio::io::duplex(PIPE);
                let producer = tokio::spawn(produce(theirs));
                BlobReader {
                    inner: Inner::Pipe(ours),
                    tally: Some(Tally {
                        hasher: Sha256::new(),
                        len: 0,
                        summary,
                        producer,
                    }),
                }
            }
        })
    }

    /// A blob with the same content for another holder (another archive, another plugin's
    /// invocation): a stored blob shares its bytes (and their cost, counted once), a pending
    /// stream moves and this blob keeps only the summary the consumer will leave.
    pub fn hand_over(&mut self) -> io::Result<Blob> {
        let body = match &mut self.body {
            Body::Memory(held) => Body::Memory(held.clone()),
            Body::File { spill, len } => Body::File {
                spill: spill.clone(),
                len: *len,
            },
            Body::Consumed(_) => return Err(consumed()),
            Body::Stream { summary, .. } => {
                let summary = summary.clone();
                std::mem::replace(&mut self.body, Body::Consumed(summary))
            }
        };
        Ok(Blob {
            body,
            room: self.room.clone(),
        })
    }

    /// This blob, counted in `room` from now on: what another invocation made (a storage
    /// backend's answer) becomes the receiver's to pay for. A pending stream just moves; stored
    /// bytes are copied into the new room (charged there first) and the old copy is given back.
    pub fn into_room(self, room: &Room) -> io::Result<Blob> {
        let body = match self.body {
            Body::Memory(held) => {
                let mut moved = room.blob();
                moved.append(&held.value)?;
                moved.body
            }
            Body::File { spill, len } => Body::File {
                spill: Arc::new(copy_spill(room, &spill.value, len)?),
                len,
            },
            pending => pending,
        };
        Ok(Blob {
            body,
            room: room.clone(),
        })
    }

    /// The SHA-256 of a stored blob, or of a stream its consumer read to the end.
    pub async fn sha256(&mut self) -> io::Result<String> {
        if let Body::Consumed(summary) = &self.body {
            return summary_of(summary).map(|s| s.sha256);
        }
        self.store().await?;
        let mut reader = self.reader()?;
        let mut hasher = Sha256::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = reader.read(&mut chunk).await?;
            if n == 0 {
                return Ok(hex::encode(hasher.finalize()));
            }
            hasher.update(&chunk[..n]);
        }
    }
}

fn summary_of(slot: &SummarySlot) -> io::Result<Summary> {
    slot.lock()
        .expect("summary lock")
        .clone()
        .ok_or_else(|| io::Error::other("the stream was not read to its end"))
}

/// Appends what is written to a blob (synchronously: memory or a local file).
pub struct BlobWriter<'a>(&'a mut Blob);

impl AsyncWrite for BlobWriter<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.0.append(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reads a blob from the start. Stored content is read positionally (the blob is undisturbed);
/// a stream is read from its producer's pipe, tallied, and ends only once the producer succeeded.
pub struct BlobReader {
    inner: Inner,
    tally: Option<Tally>,
}

enum Inner {
    Memory {
        held: Arc<Held<Vec<u8>>>,
        pos: usize,
    },
    File {
        spill: Arc<Held<File>>,
        pos: u64,
        len: u64,
    },
    Pipe(DuplexStream),
}

struct Tally {
    hasher: Sha256,
    len: u64,
    summary: SummarySlot,
    producer: JoinHandle<io::Result<()>>,
}

impl BlobReader {
    fn stored(inner: Inner) -> Self {
        BlobReader { inner, tally: None }
    }
}

impl AsyncRead for BlobReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match &mut this.inner {
            Inner::Memory { held, pos } => {
                let rest = &held.value[*pos..];
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                *pos += n;
                return Poll::Ready(Ok(()));
            }
            Inner::File { spill, pos, len } => {
                let want = buf.remaining().min((*len - *pos) as usize);
                if want > 0 {
                    let n = spill
                        .value
                        .read_at(&mut buf.initialize_unfilled()[..want], *pos)?;
                    *pos += n as u64;
                    buf.advance(n);
                }
                return Poll::Ready(Ok(()));
            }
            Inner::Pipe(pipe) => ready!(Pin::new(pipe).poll_read(cx, buf))?,
        }
        let tally = this.tally.as_mut().expect("a pipe is always tallied");
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() {
            tally.hasher.update(fresh);
            tally.len += fresh.len() as u64;
            return Poll::Ready(Ok(()));
        }
        // The pipe ended: the stream is whole only if its producer says so.
        let outcome = ready!(Pin::new(&mut tally.producer).poll(cx));
        match outcome {
            Ok(Ok(())) => {
                let sha256 = hex::encode(std::mem::take(&mut tally.hasher).finalize());
                *tally.summary.lock().expect("summary lock") = Some(Summary {
                    len: tally.len,
                    sha256,
                });
                Poll::Ready(Ok(()))
            }
            Ok(Err(e)) => Poll::Ready(Err(e)),
            Err(e) => Poll::Ready(Err(io::Error::other(format!(
                "the stream's producer failed: {e}"
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn a_blob_spills_to_disk_and_reads_back_the_same_bytes() {
        let mut blob = Blob::new(u64::MAX);
        let chunk: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        for _ in 0..5 {
            blob.append(&chunk).unwrap();
        }
        assert!(matches!(blob.body, Body::File { .. }));
        assert_eq!(blob.size().unwrap(), 1_500_000);
        assert_eq!(
            blob.read_at(299_990, 20).unwrap(),
            [&chunk[299_990..], &chunk[..10]].concat()
        );
    }

    #[test]
    fn a_blob_refuses_to_grow_past_its_limit() {
        let mut blob = Blob::new(10);
        blob.append(b"0123456789").unwrap();
        let err = blob.append(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(blob.size().unwrap(), 10);
    }

    fn room(memory: u64, disk: Option<(&Path, u64)>) -> Room {
        Room::new(
            Arc::new(Meter::new("memory", memory)),
            disk.map(|(dir, limit)| Arc::new(Disk::new(dir, limit))),
            u64::MAX,
        )
    }

    fn quota(err: &io::Error) -> &OverQuota {
        OverQuota::of(err).unwrap_or_else(|| panic!("expected a quota, got {err}"))
    }

    /// A storage backend's answer was kept in the backend's room: a hook fetching a thousand
    /// objects held them outside its own memory cap. Moved into the receiver's room, they count
    /// there, and the backend's room gets its bytes back.
    #[test]
    fn a_blob_moved_into_another_room_is_counted_there() {
        let (backend, hook) = (room(8 << 20, None), room(2 << 20, None));
        let megabyte = vec![7u8; SPILL_AT];
        let mut moved = Vec::new();
        let err = loop {
            let mut answer = backend.blob();
            answer.append(&megabyte).unwrap();
            match answer.into_room(&hook) {
                Ok(blob) => moved.push(blob),
                Err(err) => break err,
            }
            assert!(moved.len() <= 2, "the hook's room holds two megabytes");
        };
        assert_eq!(err.kind(), io::ErrorKind::QuotaExceeded);
        assert_eq!(moved.len(), 2);
        assert_eq!(hook.memory.used(), 2 << 20);
        assert_eq!(
            backend.memory.used(),
            0,
            "the backend's copies were given back"
        );
        assert_eq!(moved[0].read_at(0, 4).unwrap(), [7, 7, 7, 7]);
    }

    /// A thousand blobs of 1 MiB once held a gigabyte of host memory for a plugin capped at 64 MiB.
    #[test]
    fn blobs_in_memory_count_against_their_room_until_the_last_holder_drops_them() {
        let room = room(4 << 20, None);
        let megabyte = vec![7u8; SPILL_AT];
        let mut held = Vec::new();
        let err = loop {
            let mut blob = room.blob();
            match blob.append(&megabyte) {
                Ok(()) => held.push(blob),
                Err(err) => break err,
            }
            assert!(held.len() <= 4, "the room holds four megabytes");
        };
        assert_eq!(held.len(), 4);
        assert_eq!(err.kind(), io::ErrorKind::QuotaExceeded);
        assert_eq!(quota(&err).limit, 4 << 20);
        assert_eq!(room.memory.used(), 4 << 20);
        let shared = held[0].hand_over().unwrap();
        assert_eq!(
            room.memory.used(),
            4 << 20,
            "a handed-over blob shares its bytes"
        );
        held.remove(0);
        assert_eq!(room.memory.used(), 4 << 20, "the other holder keeps them");
        drop(shared);
        assert_eq!(
            room.memory.used(),
            3 << 20,
            "given back with the last holder"
        );
        held.clear();
        assert_eq!(room.memory.used(), 0);
    }

    /// One blob once spilled a gigabyte into the system's temporary directory, outside any quota.
    #[test]
    fn a_blob_spills_into_its_rooms_disk_within_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let room = room(8 << 20, Some((dir.path(), 3 << 20)));
        let mut blob = room.blob();
        blob.append(&vec![1u8; 2 << 20]).unwrap();
        let Body::File { spill, .. } = &blob.body else {
            panic!("a blob over SPILL_AT is on disk");
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&spill.value);
        let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert!(
            path.starts_with(dir.path()),
            "the spill lives in the run's folder, not {}",
            path.display()
        );
        let disk = room.disk.clone().unwrap();
        assert_eq!(disk.meter().used(), 2 << 20);
        assert_eq!(room.memory.used(), 0, "the memory it left is given back");
        let err = blob.append(&vec![2u8; 2 << 20]).unwrap_err();
        assert_eq!(quota(&err).limit, 3 << 20);
        assert_eq!(
            blob.size().unwrap(),
            2 << 20,
            "a refused append leaves the blob as it was"
        );
        drop(blob);
        assert_eq!(disk.meter().used(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing is left behind"
        );
    }

    #[test]
    fn a_meter_refuses_growth_past_its_limit_but_never_a_release() {
        let meter = Meter::new("disk", 10);
        meter.take(10).unwrap();
        assert_eq!(meter.take(1), Err(meter.exceeded()));
        meter.count(5);
        assert_eq!(meter.used(), 15, "what was found in use is counted");
        meter.take(0).unwrap();
        meter.give(20);
        assert_eq!(meter.used(), 0);
    }

    #[test]
    fn without_a_disk_a_blob_stays_under_the_spill_size() {
        let mut blob = room(u64::MAX, None).blob();
        blob.append(&vec![0u8; SPILL_AT]).unwrap();
        let err = blob.append(b"x").unwrap_err();
        assert!(err.to_string().contains("has none"), "{err}");
    }

    #[test]
    fn appending_to_a_handed_over_blob_leaves_the_other_holders_bytes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let room = room(u64::MAX, Some((dir.path(), u64::MAX)));
        for size in [10, 2 << 20] {
            let mut blob = room.blob();
            blob.append(&vec![1u8; size]).unwrap();
            let mut other = blob.hand_over().unwrap();
            blob.append(b"mine").unwrap();
            other.append(b"theirs").unwrap();
            assert_eq!(blob.size().unwrap(), size as u64 + 4);
            assert_eq!(other.size().unwrap(), size as u64 + 6);
            assert_eq!(blob.read_at(size as u64, 10).unwrap(), b"mine");
            assert_eq!(other.read_at(size as u64, 10).unwrap(), b"theirs");
        }
    }

    fn counting_stream(chunks: usize, fail: bool) -> Blob {
        Blob::stream(
            u64::MAX,
            Box::new(move |mut pipe| {
                Box::pin(async move {
                    for i in 0..chunks {
                        pipe.write_all(&[i as u8; 1000]).await?;
                    }
                    if fail {
                        return Err(io::Error::other("pg_dump exited with 1"));
                    }
                    Ok(())
                })
            }),
        )
    }

    #[tokio::test]
    async fn a_stream_is_tallied_as_it_is_read_and_read_only_once() {
        let mut blob = counting_stream(2000, false);
        let mut reader = blob.reader().unwrap();
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 2_000_000);
        assert_eq!(blob.size().unwrap(), 2_000_000);
        assert_eq!(
            blob.sha256().await.unwrap(),
            hex::encode(Sha256::digest(&all))
        );
        assert!(blob.reader().is_err(), "a stream is read once");
    }

    #[tokio::test]
    async fn a_failed_producer_fails_its_reader_and_leaves_no_summary() {
        let mut blob = counting_stream(500, true);
        let mut reader = blob.reader().unwrap();
        let mut all = Vec::new();
        let err = reader.read_to_end(&mut all).await.unwrap_err();
        assert!(err.to_string().contains("pg_dump exited with 1"), "{err}");
        assert!(blob.size().is_err());
    }

    #[tokio::test]
    async fn a_stream_asked_for_random_access_is_stored_first() {
        let mut blob = counting_stream(3, false);
        blob.store().await.unwrap();
        assert_eq!(blob.size().unwrap(), 3000);
        assert_eq!(blob.read_at(999, 2).unwrap(), vec![0, 1]);
        let mut handed = blob.hand_over().unwrap();
        assert_eq!(handed.sha256().await.unwrap(), blob.sha256().await.unwrap());
    }
}
