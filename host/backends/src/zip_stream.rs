//! A zip archive written as a stream: each entry is deflated as it is produced, its CRC and
//! sizes follow it in a data descriptor, and the central directory comes last. (The archive Berth
//! writes with it is Odoo's backup — the database manager's zip, `dump.sql` first, `filestore/…`,
//! `manifest.json` — but nothing here knows that.) Nothing is ever
//! seeked back to, so the archive can go straight from the server to a storage target without
//! being held in memory or on the control plane's disk. Sizes and offsets use Zip64 fields
//! throughout, so dumps and filestores beyond 4 GiB are written the same way (Python's `zipfile`,
//! which Odoo restores with, reads them).

use std::io::{self, Write};

use flate2::Compression;
use flate2::write::DeflateEncoder;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;
/// Version 4.5: Zip64.
const VERSION: u16 = 45;
/// Bit 3 (sizes in a data descriptor) and bit 11 (UTF-8 names).
const FLAGS: u16 = (1 << 3) | (1 << 11);
const DEFLATE: u16 = 8;

/// Counts what passes through, for offsets.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Central {
    name: String,
    crc: u32,
    compressed: u64,
    size: u64,
    offset: u64,
}

/// A zip archive being written to `W`, entry after entry.
pub struct ZipStream<W: Write> {
    out: Counting<W>,
    entries: Vec<Central>,
}

/// One entry being written; [`Entry::finish`] closes it.
pub struct Entry<'a, W: Write> {
    zip: &'a mut ZipStream<W>,
    name: String,
    offset: u64,
    crc: crc32fast::Hasher,
    size: u64,
    deflate: Option<DeflateEncoder<Vec<u8>>>,
    compressed: u64,
}

fn le16(out: &mut impl Write, v: u16) -> io::Result<()> {
    out.write_all(&v.to_le_bytes())
}
fn le32(out: &mut impl Write, v: u32) -> io::Result<()> {
    out.write_all(&v.to_le_bytes())
}
fn le64(out: &mut impl Write, v: u64) -> io::Result<()> {
    out.write_all(&v.to_le_bytes())
}

/// Deflated bytes are moved to the archive once this many are pending.
const FLUSH_AT: usize = 256 << 10;

impl<W: Write> ZipStream<W> {
    pub fn new(out: W) -> Self {
        ZipStream {
            out: Counting {
                inner: out,
                written: 0,
            },
            entries: Vec::new(),
        }
    }

    /// Starts the entry `name` (a relative path with `/`).
    pub fn entry(&mut self, name: &str) -> io::Result<Entry<'_, W>> {
        if name.is_empty() || name.starts_with('/') || name.split('/').any(|c| c == "..") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("zip entry name {name:?} is not a relative path"),
            ));
        }
        let offset = self.out.written;
        let out = &mut self.out;
        le32(out, LOCAL_HEADER)?;
        le16(out, VERSION)?;
        le16(out, FLAGS)?;
        le16(out, DEFLATE)?;
        le32(out, 0)?; // time and date: none
        le32(out, 0)?; // CRC, in the data descriptor
        le32(out, u32::MAX)?; // sizes: in the Zip64 data descriptor
        le32(out, u32::MAX)?;
        le16(out, name.len() as u16)?;
        le16(out, 20)?; // the Zip64 extra field, sizes unknown yet
        out.write_all(name.as_bytes())?;
        le16(out, 1)?;
        le16(out, 16)?;
        le64(out, 0)?;
        le64(out, 0)?;
        Ok(Entry {
            zip: self,
            name: name.to_string(),
            offset,
            crc: crc32fast::Hasher::new(),
            size: 0,
            deflate: Some(DeflateEncoder::new(Vec::new(), Compression::fast())),
            compressed: 0,
        })
    }

    /// Writes the central directory; returns the output and the archive's size.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let start = self.out.written;
        for e in &self.entries {
            let out = &mut self.out;
            le32(out, CENTRAL_HEADER)?;
            le16(out, (3 << 8) | VERSION)?; // made by: Unix
            le16(out, VERSION)?;
            le16(out, FLAGS)?;
            le16(out, DEFLATE)?;
            le32(out, 0)?;
            le32(out, e.crc)?;
            le32(out, u32::MAX)?;
            le32(out, u32::MAX)?;
            le16(out, e.name.len() as u16)?;
            le16(out, 28)?; // Zip64 extra: sizes and offset
            le16(out, 0)?; // comment
            le16(out, 0)?; // disk
            le16(out, 0)?; // internal attributes
            le32(out, 0o100644 << 16)?; // external: a regular file, rw-r--r--
            le32(out, u32::MAX)?; // offset: in the extra field
            out.write_all(e.name.as_bytes())?;
            le16(out, 1)?;
            le16(out, 24)?;
            le64(out, e.size)?;
            le64(out, e.compressed)?;
            le64(out, e.offset)?;
        }
        let end = self.out.written;
        let count = self.entries.len() as u64;
        let out = &mut self.out;
        le32(out, ZIP64_END)?;
        le64(out, 44)?;
        le16(out, (3 << 8) | VERSION)?;
        le16(out, VERSION)?;
        le32(out, 0)?;
        le32(out, 0)?;
        le64(out, count)?;
        le64(out, count)?;
        le64(out, end - start)?;
        le64(out, start)?;
        le32(out, ZIP64_LOCATOR)?;
        le32(out, 0)?;
        le64(out, end)?;
        le32(out, 1)?;
        le32(out, END)?;
        le16(out, 0)?;
        le16(out, 0)?;
        le16(out, u16::MAX)?;
        le16(out, u16::MAX)?;
        le32(out, u32::MAX)?;
        le32(out, u32::MAX)?;
        le16(out, 0)?;
        out.flush()?;
        let size = out.written;
        Ok((self.out.inner, size))
    }
}

impl<W: Write> Entry<'_, W> {
    /// Moves the deflated bytes produced so far into the archive.
    fn drain(&mut self) -> io::Result<()> {
        let pending = self.deflate.as_mut().expect("open entry").get_mut();
        self.zip.out.write_all(pending)?;
        self.compressed += pending.len() as u64;
        pending.clear();
        Ok(())
    }

    /// Ends the entry: the rest of its deflated bytes, then its data descriptor.
    pub fn finish(mut self) -> io::Result<()> {
        let rest = self.deflate.take().expect("open entry").finish()?;
        self.zip.out.write_all(&rest)?;
        self.compressed += rest.len() as u64;
        let crc = std::mem::take(&mut self.crc).finalize();
        let out = &mut self.zip.out;
        le32(out, DATA_DESCRIPTOR)?;
        le32(out, crc)?;
        le64(out, self.compressed)?;
        le64(out, self.size)?;
        self.zip.entries.push(Central {
            name: std::mem::take(&mut self.name),
            crc,
            compressed: self.compressed,
            size: self.size,
            offset: self.offset,
        });
        Ok(())
    }
}

impl<W: Write> Write for Entry<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let deflate = self.deflate.as_mut().expect("open entry");
        deflate.write_all(buf)?;
        self.crc.update(buf);
        self.size += buf.len() as u64;
        if deflate.get_ref().len() >= FLUSH_AT {
            self.drain()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::ZipStream;

    /// Python's zipfile — what Odoo restores with — reads the archive back intact.
    #[test]
    fn python_reads_the_archive_odoo_restores_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.zip");
        let file = std::fs::File::create(&path).unwrap();
        let mut zip = ZipStream::new(std::io::BufWriter::new(file));
        let dump: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| format!("INSERT INTO t VALUES ({i});\n").into_bytes())
            .take(5 << 20)
            .collect();
        let mut entry = zip.entry("dump.sql").unwrap();
        for chunk in dump.chunks(64 << 10) {
            entry.write_all(chunk).unwrap();
        }
        entry.finish().unwrap();
        let attachment: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut entry = zip.entry("filestore/ab/abcdef0123").unwrap();
        entry.write_all(&attachment).unwrap();
        entry.finish().unwrap();
        let mut entry = zip.entry("manifest.json").unwrap();
        entry.write_all(br#"{"odoo_dump": "1"}"#).unwrap();
        entry.finish().unwrap();
        let (_, size) = zip.finish().unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        assert!(zip_entry_name_is_refused());

        let script = r#"
import hashlib, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
print(",".join(z.namelist()))
for n in z.namelist():
    print(n, hashlib.sha256(z.read(n)).hexdigest())
"#;
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .output()
            .expect("python3 runs (install python3)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let sha = |data: &[u8]| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(data))
        };
        assert!(
            text.starts_with("dump.sql,filestore/ab/abcdef0123,manifest.json\n"),
            "{text}"
        );
        assert!(text.contains(&format!("dump.sql {}", sha(&dump))), "{text}");
        assert!(
            text.contains(&format!("filestore/ab/abcdef0123 {}", sha(&attachment))),
            "{text}"
        );
    }

    fn zip_entry_name_is_refused() -> bool {
        let mut zip = ZipStream::new(Vec::new());
        zip.entry("../evil").is_err() && zip.entry("/abs").is_err()
    }
}
