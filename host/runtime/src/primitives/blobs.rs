//! `blobs`: host-side byte objects, the carrier of bulk data.
//!
//! A blob stays in memory while small and spills to an unlinked temporary file past [`SPILL_AT`],
//! so a dump or an archive of any size costs the host a bounded amount of memory and never has to
//! enter the plugin's linear memory. Plugins hold handles; they read only bounded slices.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};
use wasmtime::component::Resource;

use crate::bindings::blobs::{Host, HostBlob};
use crate::bindings::types::Error;
use crate::state::{Fault, RunState};

/// Blobs up to this size stay in memory.
pub const SPILL_AT: usize = 1 << 20;

/// A host-side byte object.
#[derive(Debug)]
pub struct Blob {
    spool: Spool,
    len: u64,
    limit: u64,
}

#[derive(Debug)]
enum Spool {
    Memory(Vec<u8>),
    File(File),
}

impl Blob {
    pub fn new(limit: u64) -> Self {
        Blob {
            spool: Spool::Memory(Vec::new()),
            len: 0,
            limit,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes, spilling to disk when the blob outgrows memory.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let new_len = self.len + data.len() as u64;
        if new_len > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "blob would hold {new_len} bytes, over the limit of {}",
                    self.limit
                ),
            ));
        }
        if let Spool::Memory(buf) = &mut self.spool
            && buf.len() + data.len() > SPILL_AT
        {
            let mut file = tempfile::tempfile()?;
            file.write_all(buf)?;
            self.spool = Spool::File(file);
        }
        match &mut self.spool {
            Spool::Memory(buf) => buf.extend_from_slice(data),
            Spool::File(file) => {
                file.seek(SeekFrom::End(0))?;
                file.write_all(data)?;
            }
        }
        self.len = new_len;
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

    /// Reads at most `len` bytes from `offset`.
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64).min(self.len);
        if offset >= end {
            return Ok(Vec::new());
        }
        let n = (end - offset) as usize;
        match &self.spool {
            Spool::Memory(buf) => Ok(buf[offset as usize..offset as usize + n].to_vec()),
            Spool::File(file) => {
                let mut out = vec![0u8; n];
                file.read_exact_at(&mut out, offset)?;
                Ok(out)
            }
        }
    }

    /// An independent reader over the whole content (for streaming it elsewhere, off the guest's
    /// thread).
    pub fn reader(&self) -> io::Result<BlobReader> {
        Ok(match &self.spool {
            Spool::Memory(buf) => BlobReader::Memory(io::Cursor::new(buf.clone())),
            Spool::File(file) => BlobReader::File {
                file: file.try_clone()?,
                pos: 0,
                len: self.len,
            },
        })
    }
}

/// Reads a blob from the start; positional, so it does not disturb the blob itself.
pub enum BlobReader {
    Memory(io::Cursor<Vec<u8>>),
    File { file: File, pos: u64, len: u64 },
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            BlobReader::Memory(cursor) => cursor.read(out),
            BlobReader::File { file, pos, len } => {
                let want = out.len().min((*len - *pos) as usize);
                if want == 0 {
                    return Ok(0);
                }
                let n = file.read_at(&mut out[..want], *pos)?;
                *pos += n as u64;
                Ok(n)
            }
        }
    }
}

/// Runs blocking blob I/O off the async executor.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io::Error::other(format!("blob worker failed: {e}")))?
}

fn blob_error(call: &str, err: io::Error) -> Fault {
    if err.kind() == io::ErrorKind::FileTooLarge {
        Error::invalid(format!("{call}: {err}")).into()
    } else {
        Error::failed(format!("{call}: {err}")).into()
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
        Ok(self.get(&blob).map_err(Fault::into_trap)?.len())
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
        self.get(&blob)?
            .read_at(offset, len as usize)
            .map_err(|e| blob_error("blob.read", e))
    }

    async fn sha256(&mut self, blob: Resource<Blob>) -> Result<String, Fault> {
        self.charge()?;
        let mut reader = self
            .get(&blob)?
            .reader()
            .map_err(|e| blob_error("blob.sha256", e))?;
        blocking(move || {
            let mut hasher = Sha256::new();
            io::copy(&mut reader, &mut hasher)?;
            Ok(hex::encode(hasher.finalize()))
        })
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
    use super::*;

    #[test]
    fn a_blob_spills_to_disk_and_reads_back_the_same_bytes() {
        let mut blob = Blob::new(u64::MAX);
        let chunk: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        for _ in 0..5 {
            blob.append(&chunk).unwrap();
        }
        assert!(matches!(blob.spool, Spool::File(_)));
        assert_eq!(blob.len(), 1_500_000);
        assert_eq!(
            blob.read_at(299_990, 20).unwrap(),
            [&chunk[299_990..], &chunk[..10]].concat()
        );
        let mut all = Vec::new();
        blob.reader().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 1_500_000);
        assert_eq!(&all[600_000..600_100], &chunk[..100]);
    }

    #[test]
    fn a_blob_refuses_to_grow_past_its_limit() {
        let mut blob = Blob::new(10);
        blob.append(b"0123456789").unwrap();
        let err = blob.append(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(blob.len(), 10);
    }
}
