//! Host-side byte objects, the carrier of bulk data between backends.
//!
//! A blob is either **stored** — in memory while small, spilled to an unlinked temporary file past
//! [`SPILL_AT`] — or a **stream**: a producer (a `pg_dump`, a download, a zip being assembled) that
//! has not run yet. A stream runs when its consumer reads it (an upload, a restore, another
//! archive), through a bounded pipe: the producer is held back by the consumer, so a dump of any
//! size crosses the control plane without being stored on its disk or in its memory. The consumer
//! computes the stream's size and SHA-256 as the bytes pass; a stream whose producer failed ends
//! in an error, never in a clean end of data, so a partial dump can never pass for a whole one.
//! Asking for random access (`read`) before a stream was consumed stores it first.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;

/// Blobs up to this size stay in memory.
pub const SPILL_AT: usize = 1 << 20;
/// The pipe between a stream's producer and its consumer.
const PIPE: usize = 256 << 10;

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
    limit: u64,
}

enum Body {
    Memory(Vec<u8>),
    File {
        file: File,
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

impl Blob {
    pub fn new(limit: u64) -> Self {
        Blob {
            body: Body::Memory(Vec::new()),
            limit,
        }
    }

    /// A stream: `produce` runs when (and only when) a consumer reads the blob.
    pub fn stream(limit: u64, produce: Producer) -> Self {
        Blob {
            body: Body::Stream {
                produce,
                summary: Arc::new(Mutex::new(None)),
            },
            limit,
        }
    }

    /// The stored length; a stream's once it has been consumed.
    pub fn size(&self) -> io::Result<u64> {
        match &self.body {
            Body::Memory(buf) => Ok(buf.len() as u64),
            Body::File { len, .. } => Ok(*len),
            Body::Stream { .. } => Err(io::Error::other("the stream has not been read yet")),
            Body::Consumed(summary) => summary_of(summary).map(|s| s.len),
        }
    }

    /// Whether the blob is a stream that has not run yet.
    pub fn is_pending_stream(&self) -> bool {
        matches!(self.body, Body::Stream { .. })
    }

    /// Appends bytes, spilling to disk when the blob outgrows memory.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let len = match &self.body {
            Body::Memory(buf) => buf.len() as u64,
            Body::File { len, .. } => *len,
            _ => return Err(io::Error::other("a stream cannot be appended to")),
        };
        let new_len = len + data.len() as u64;
        if new_len > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "blob would hold {new_len} bytes, over the limit of {}",
                    self.limit
                ),
            ));
        }
        if let Body::Memory(buf) = &mut self.body
            && buf.len() + data.len() > SPILL_AT
        {
            let mut file = tempfile::tempfile()?;
            file.write_all(buf)?;
            self.body = Body::File {
                file,
                len: buf.len() as u64,
            };
        }
        match &mut self.body {
            Body::Memory(buf) => buf.extend_from_slice(data),
            Body::File { file, len } => {
                file.seek(SeekFrom::End(0))?;
                file.write_all(data)?;
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
        let mut stored = Blob::new(self.limit);
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
            Body::Memory(buf) => Ok(buf[offset as usize..offset as usize + n].to_vec()),
            Body::File { file, .. } => {
                let mut out = vec![0u8; n];
                file.read_exact_at(&mut out, offset)?;
                Ok(out)
            }
            _ => Err(consumed()),
        }
    }

    /// A reader over the whole content. A stored blob can be read any number of times; a stream
    /// starts its producer and can be read once.
    pub fn reader(&mut self) -> io::Result<BlobReader> {
        Ok(match &mut self.body {
            Body::Memory(buf) => BlobReader::stored(Inner::Memory(io::Cursor::new(buf.clone()))),
            Body::File { file, len } => BlobReader::stored(Inner::File {
                file: file.try_clone()?,
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
    /// invocation): a stored blob is shared, a pending stream moves and this blob keeps only the
    /// summary the consumer will leave.
    pub fn hand_over(&mut self) -> io::Result<Blob> {
        let limit = self.limit;
        let body = match &mut self.body {
            Body::Memory(buf) => Body::Memory(buf.clone()),
            Body::File { file, len } => Body::File {
                file: file.try_clone()?,
                len: *len,
            },
            Body::Consumed(_) => return Err(consumed()),
            Body::Stream { summary, .. } => {
                let summary = summary.clone();
                std::mem::replace(&mut self.body, Body::Consumed(summary))
            }
        };
        Ok(Blob { body, limit })
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
    Memory(io::Cursor<Vec<u8>>),
    File { file: File, pos: u64, len: u64 },
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
            Inner::Memory(cursor) => {
                let n = Read::read(cursor, buf.initialize_unfilled())?;
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            Inner::File { file, pos, len } => {
                let want = buf.remaining().min((*len - *pos) as usize);
                if want > 0 {
                    let n = file.read_at(&mut buf.initialize_unfilled()[..want], *pos)?;
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
