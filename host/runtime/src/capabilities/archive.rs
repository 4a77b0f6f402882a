//! `archive`: zips assembled from blobs as a stream (Odoo's backup archive is the reason: a dump,
//! a filestore and a manifest become one database-manager zip on its way to a storage target).
//! Always available: it works only on the plugin's own blobs.
//!
//! The zip is itself a stream blob. When it is consumed, one blocking worker runs the members in
//! order — each member's own stream (a `pg_dump`, a tar of the filestore from Docker) is read
//! through a bridge, deflated by [`ZipStream`] and written into the zip's pipe — so the whole
//! chain moves at the pace of its slowest end with bounded buffers, and nothing is stored.
//!
//! Tars are read by [`tar_files`], header by header, because a tar's extension headers (a GNU long
//! name, a pax header) are held in memory whole before the member they describe: their sizes are
//! bounded ([`TAR_NAME_MAX`], [`TAR_PAX_MAX`]) and a larger one refuses the archive before a byte
//! of it is read.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use berth_backends::zip_stream::ZipStream;
use tokio_util::io::SyncIoBridge;
use wasmtime::component::Resource;

use super::blobs::{Blob, Room, blob_error};
use crate::bindings::Fault;
use crate::bindings::archive::{Content, Host, Member};
use crate::bindings::types::Error;
use crate::state::RunState;

/// Members of one zip at most (a filestore counts as one tree member).
const MEMBERS_MAX: usize = 64;

/// The longest member name read from a tar (a GNU long name or link name, a pax `path`).
pub const TAR_NAME_MAX: u64 = 4 << 10;
/// The largest pax extended header read from a tar.
pub const TAR_PAX_MAX: u64 = 64 << 10;

/// A tar's block: headers and the padding of contents.
const BLOCK: u64 = 512;

fn malformed(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads an extension header's content of `size` bytes, refusing it unread beyond `max`.
fn extension(input: &mut impl Read, size: u64, max: u64, what: &str) -> io::Result<Vec<u8>> {
    if size > max {
        return Err(malformed(format!(
            "the archive has {what} of {size} bytes, over the limit of {max} bytes"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    input.take(size).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != size {
        return Err(malformed(format!("the archive ends inside {what}")));
    }
    skip(input, size.next_multiple_of(BLOCK) - size)?;
    Ok(bytes)
}

/// Reads and discards exactly `n` bytes.
fn skip(input: &mut impl Read, n: u64) -> io::Result<()> {
    if io::copy(&mut input.take(n), &mut io::sink())? != n {
        return Err(malformed("the archive ends inside a member".into()));
    }
    Ok(())
}

/// The value of `key` in a pax extended header.
fn pax_value<'a>(pax: &'a Option<Vec<u8>>, key: &str) -> Option<&'a [u8]> {
    tar::PaxExtensions::new(pax.as_deref()?)
        .filter_map(Result::ok)
        .find(|record| record.key_bytes() == key.as_bytes())
        .map(|record| record.value_bytes())
}

/// Walks the regular files of the tar `input`, in order, handing `visit` each one's path and a
/// reader over its content (what `visit` leaves unread is skipped). Long names and pax headers
/// apply to the member that follows them, as GNU tar and pax write them; one over its bound ends
/// the walk with an error. Returns `input`, past the archive's end marker.
fn tar_files<R: Read>(
    mut input: R,
    mut visit: impl FnMut(&Path, &mut dyn Read) -> io::Result<()>,
) -> io::Result<R> {
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    loop {
        let mut block = [0u8; BLOCK as usize];
        let read = io::copy(&mut (&mut input).take(BLOCK), &mut &mut block[..])?;
        if read == 0 {
            return Ok(input);
        }
        if read < BLOCK {
            return Err(malformed("the archive ends inside a header".into()));
        }
        if block.iter().all(|b| *b == 0) {
            return Ok(input);
        }
        let header = tar::Header::from_byte_slice(&block);
        let sum: u64 = block
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        if u64::from(header.cksum()?) != sum {
            return Err(malformed("a header's checksum does not match".into()));
        }
        let kind = header.entry_type();
        let mut size = header.entry_size()?;
        if kind.is_gnu_longname() {
            let mut name = extension(&mut input, size, TAR_NAME_MAX, "a long name")?;
            if name.last() == Some(&0) {
                name.pop();
            }
            long_name = Some(name);
            continue;
        }
        if kind.is_gnu_longlink() {
            extension(&mut input, size, TAR_NAME_MAX, "a long link name")?;
            continue;
        }
        if kind.is_pax_local_extensions() {
            pax = Some(extension(&mut input, size, TAR_PAX_MAX, "a pax header")?);
            continue;
        }
        if kind.is_pax_global_extensions() {
            extension(&mut input, size, TAR_PAX_MAX, "a pax header")?;
            continue;
        }
        // A member: the extension headers before it were about it alone.
        let (long_name, pax) = (long_name.take(), pax.take());
        if let Some(value) = pax_value(&pax, "size") {
            size = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| malformed("a pax header's size is not a number".into()))?;
        }
        if kind.is_gnu_sparse() {
            return Err(malformed("the archive holds a sparse member".into()));
        }
        let name = match (&long_name, pax_value(&pax, "path")) {
            (Some(name), _) => Cow::Borrowed(name.as_slice()),
            (None, Some(path)) => Cow::Borrowed(path),
            (None, None) => header.path_bytes(),
        };
        if name.len() as u64 > TAR_NAME_MAX {
            return Err(malformed(format!(
                "the archive has a member name of {} bytes, over the limit of {TAR_NAME_MAX} bytes",
                name.len()
            )));
        }
        let mut content = (&mut input).take(size);
        if kind.is_file() {
            visit(Path::new(OsStr::from_bytes(&name)), &mut content)?;
        }
        let rest = content.limit();
        skip(&mut input, rest + (size.next_multiple_of(BLOCK) - size))?;
    }
}

/// One member, its blob already taken over from the plugin's table.
struct Part {
    name: String,
    data: Blob,
    content: Content,
}

/// Writes every part into `zip`, in order.
fn write_parts<W: Write>(
    zip: &mut ZipStream<W>,
    parts: Vec<Part>,
    handle: &tokio::runtime::Handle,
) -> io::Result<()> {
    for mut part in parts {
        let mut reader = SyncIoBridge::new_with_handle(part.data.reader()?, handle.clone());
        match part.content {
            Content::File => {
                let mut entry = zip.entry(&part.name)?;
                io::copy(&mut reader, &mut entry)?;
                entry.finish()?;
            }
            Content::Tree(strip) => {
                let mut reader = tar_files(reader, |path, file| {
                    let kept: Vec<String> = path
                        .components()
                        .skip(strip as usize)
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    if kept.is_empty() {
                        return Ok(());
                    }
                    let name = if part.name.is_empty() {
                        kept.join("/")
                    } else {
                        format!("{}/{}", part.name.trim_end_matches('/'), kept.join("/"))
                    };
                    let mut entry = zip.entry(&name)?;
                    io::copy(file, &mut entry)?;
                    entry.finish()
                })?;
                // Read the tar to its end, so its producer's success is what ends the member.
                io::copy(&mut reader, &mut io::sink())?;
            }
        }
    }
    Ok(())
}

/// The synchronous end of a stream's pipe, as a worker writes it.
type PipeWriter = SyncIoBridge<tokio::io::DuplexStream>;

/// A stream blob of `room` produced by `work` on a blocking worker (the zip and tar code is
/// synchronous): `work` writes into the pipe it is given and returns it; it is then flushed and
/// closed. The worker enters the runtime, so the streams it reads can start their own producers.
fn worker_stream(
    room: &Room,
    what: &'static str,
    work: impl FnOnce(&tokio::runtime::Handle, PipeWriter) -> io::Result<PipeWriter> + Send + 'static,
) -> Blob {
    room.stream(Box::new(move |pipe| {
        Box::pin(async move {
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let _runtime = handle.enter();
                let out = SyncIoBridge::new_with_handle(pipe, handle.clone());
                let mut out = work(&handle, out)?;
                out.flush()?;
                out.shutdown()
            })
            .await
            .map_err(|e| io::Error::other(format!("the {what} worker failed: {e}")))?
        })
    }))
}

impl Host for RunState {
    async fn zip(&mut self, members: Vec<Member>) -> Result<Resource<Blob>, Fault> {
        self.charge()?;
        if members.len() > MEMBERS_MAX {
            return Err(Error::invalid(format!(
                "archive.zip: {} members, at most {MEMBERS_MAX}",
                members.len()
            ))
            .into());
        }
        let mut parts = Vec::with_capacity(members.len());
        for member in members {
            if let Content::File = member.content
                && (member.name.is_empty() || member.name.starts_with('/'))
            {
                return Err(Error::invalid(format!(
                    "archive.zip: member name {:?} is not a relative path",
                    member.name
                ))
                .into());
            }
            let data = self
                .get_mut(&member.data)?
                .hand_over()
                .map_err(|e| blob_error("archive.zip", e))?;
            parts.push(Part {
                name: member.name,
                data,
                content: member.content,
            });
        }
        let blob = worker_stream(&self.room(), "zip", move |handle, out| {
            let mut zip = ZipStream::new(out);
            write_parts(&mut zip, parts, handle)?;
            Ok(zip.finish()?.0)
        });
        self.push(blob)
    }

    async fn tar_file(
        &mut self,
        tar: Resource<Blob>,
        path: String,
    ) -> Result<Resource<Blob>, Fault> {
        self.charge()?;
        let mut tar = self
            .get_mut(&tar)?
            .hand_over()
            .map_err(|e| blob_error("archive.tar-file", e))?;
        let blob = worker_stream(&self.room(), "tar", move |handle, mut out| {
            let reader = SyncIoBridge::new_with_handle(tar.reader()?, handle.clone());
            let mut found = false;
            let mut reader = tar_files(reader, |file, content| {
                if !found && file.as_os_str() == path.as_str() {
                    io::copy(content, &mut out)?;
                    found = true;
                }
                Ok(())
            })?;
            // Read to the end, so the tar's own producer reports how it ended.
            io::copy(&mut reader, &mut io::sink())?;
            if !found {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the archive holds no file {path:?}"),
                ));
            }
            Ok(out)
        });
        self.push(blob)
    }
}

#[cfg(test)]
mod tests {
    //! `archive` on the plugin's own blobs: no grant, bounded members, relative member names, and
    //! the streams it returns hold what they should.

    use super::super::testing::{self, Run};
    use super::{
        Blob, Content, Error, Fault, MEMBERS_MAX, Member, Resource, RunState, TAR_NAME_MAX,
        TAR_PAX_MAX,
    };
    use crate::bindings::archive;
    use crate::bindings::blobs::HostBlob;
    use crate::limits::LimitExceeded;

    /// A stored blob holding `data`, in `state`'s table.
    fn stored(state: &mut RunState, data: &[u8]) -> Resource<Blob> {
        let mut blob = Blob::new(1 << 20);
        blob.append(data).unwrap();
        state.push(blob).unwrap()
    }

    fn borrow(blob: &Resource<Blob>) -> Resource<Blob> {
        Resource::new_borrow(blob.rep())
    }

    /// A tar of `files` (path, content).
    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// The whole content of a blob, through the plugin's own calls.
    async fn contents(state: &mut RunState, blob: &Resource<Blob>) -> Result<Vec<u8>, Fault> {
        let size = HostBlob::size(state, borrow(blob))
            .await
            .map_err(Fault::Trap)?;
        HostBlob::read(state, borrow(blob), 0, size as u32).await
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_zip_of_files_and_trees_needs_no_grant() {
        let run = Run::hook();
        let mut state = run.state();
        let dump = stored(&mut state, b"-- PostgreSQL database dump");
        let tree = stored(
            &mut state,
            &tar_of(&[
                ("filestore-src/a.txt", b"a"),
                ("filestore-src/b/c.txt", b"c"),
            ]),
        );
        let members = vec![
            Member {
                name: "dump.sql".into(),
                data: borrow(&dump),
                content: Content::File,
            },
            Member {
                name: "filestore".into(),
                data: borrow(&tree),
                content: Content::Tree(1),
            },
        ];
        let zip = archive::Host::zip(&mut state, members).await.unwrap();
        let bytes = contents(&mut state, &zip).await.unwrap();
        assert!(
            bytes.starts_with(b"PK\x03\x04"),
            "a zip's first local header"
        );
        assert!(contains(&bytes, b"PK\x05\x06"), "a zip's end record");
        for name in ["dump.sql", "filestore/a.txt", "filestore/b/c.txt"] {
            assert!(contains(&bytes, name.as_bytes()), "{name} is a member");
        }
        assert!(
            !contains(&bytes, b"filestore-src"),
            "the first component is stripped"
        );
        assert_eq!(
            contents(&mut state, &dump).await.unwrap(),
            b"-- PostgreSQL database dump",
            "a stored member stays readable"
        );
        assert!(run.audited().is_empty());
    }

    #[tokio::test]
    async fn a_zip_takes_a_bounded_number_of_relatively_named_members() {
        let run = Run::hook();
        let mut state = run.state();
        let data = stored(&mut state, b"x");
        let member = |name: &str| Member {
            name: name.into(),
            data: borrow(&data),
            content: Content::File,
        };
        let too_many = (0..=MEMBERS_MAX)
            .map(|i| member(&format!("m{i}")))
            .collect();
        let err = testing::guest_error(archive::Host::zip(&mut state, too_many).await);
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains(&format!("at most {MEMBERS_MAX}"))),
            "{err:?}"
        );
        for name in ["", "/etc/passwd"] {
            let err =
                testing::guest_error(archive::Host::zip(&mut state, vec![member(name)]).await);
            assert!(
                matches!(&err, Error::Invalid(m) if m.contains("not a relative path")),
                "{name:?}: {err:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_file_is_taken_out_of_a_tar() {
        let run = Run::hook();
        let mut state = run.state();
        let tar = stored(
            &mut state,
            &tar_of(&[
                ("backup/manifest.json", b"{\"v\":1}"),
                ("backup/dump", b"d"),
            ]),
        );
        let file = archive::Host::tar_file(&mut state, borrow(&tar), "backup/manifest.json".into())
            .await
            .unwrap();
        assert_eq!(contents(&mut state, &file).await.unwrap(), b"{\"v\":1}");

        let missing = archive::Host::tar_file(&mut state, borrow(&tar), "backup/nothing".into())
            .await
            .unwrap();
        let blob = HostBlob::read(&mut state, borrow(&missing), 0, 16).await;
        let err = testing::guest_error(blob);
        assert!(
            matches!(&err, Error::Failed(m) if m.contains("holds no file \"backup/nothing\"")),
            "{err:?}"
        );
    }

    /// A tar header of `kind` for `name`, saying `size` bytes follow.
    fn header(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_path(name).unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        header.as_bytes().to_vec()
    }

    /// `header` and its content, padded to whole blocks.
    fn member(kind: tar::EntryType, name: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = header(kind, name, data.len() as u64);
        bytes.extend_from_slice(data);
        bytes.resize(bytes.len().next_multiple_of(512), 0);
        bytes
    }

    /// Asks `tar_file` for `path` of the tar `bytes`; what reading the result answers.
    async fn take_out(bytes: &[u8], path: &str) -> Result<Vec<u8>, Fault> {
        let run = Run::hook();
        let mut state = run.state();
        let tar = stored(&mut state, bytes);
        let file = archive::Host::tar_file(&mut state, borrow(&tar), path.into())
            .await
            .unwrap();
        HostBlob::read(&mut state, borrow(&file), 0, 4096).await
    }

    /// A tar entry with a 512 MiB GNU long name was once read whole into host memory (~860 MiB).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_huge_gnu_long_name_is_refused_unread() {
        // Only the header: the refusal comes before a byte of the name is read.
        let bytes = header(tar::EntryType::GNULongName, "././@LongLink", 512 << 20);
        let err = testing::guest_error(take_out(&bytes, "x").await);
        assert!(
            matches!(&err, Error::Failed(m) if m.contains(&format!(
                "a long name of {} bytes, over the limit of {TAR_NAME_MAX} bytes",
                512u64 << 20
            ))),
            "{err:?}"
        );
        let long_link = header(tar::EntryType::GNULongLink, "././@LongLink", 1 << 30);
        let err = testing::guest_error(take_out(&long_link, "x").await);
        assert!(
            matches!(&err, Error::Failed(m) if m.contains("a long link name of")),
            "{err:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_huge_pax_header_is_refused_unread() {
        for kind in [tar::EntryType::XHeader, tar::EntryType::XGlobalHeader] {
            let bytes = header(kind, "pax", TAR_PAX_MAX + 1);
            let err = testing::guest_error(take_out(&bytes, "x").await);
            assert!(
                matches!(&err, Error::Failed(m) if m.contains(&format!(
                    "a pax header of {} bytes, over the limit of {TAR_PAX_MAX} bytes",
                    TAR_PAX_MAX + 1
                ))),
                "{kind:?}: {err:?}"
            );
        }
        let name = "d/".repeat(TAR_NAME_MAX as usize);
        let record = format!("path={name}\n");
        let record = format!(
            "{} {record}",
            record.len() + 1 + (record.len() + 1).ilog10() as usize + 1
        );
        let bytes = [
            member(tar::EntryType::XHeader, "pax", record.as_bytes()),
            member(tar::EntryType::Regular, "short", b"x"),
        ]
        .concat();
        let err = testing::guest_error(take_out(&bytes, "x").await);
        assert!(
            matches!(&err, Error::Failed(m) if m.contains("a member name of")),
            "{err:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn long_names_and_pax_records_within_bounds_are_honoured() {
        let long = format!("backup/{}/dump.sql", "deep/".repeat(60));
        let gnu = tar_of(&[(long.as_str(), b"gnu"), ("backup/other", b"o")]);
        assert_eq!(take_out(&gnu, &long).await.unwrap(), b"gnu");

        // A pax header names the member and gives its size (the header's own says 0).
        let records = "18 path=pax/named\n10 size=5\n";
        let mut bytes = member(tar::EntryType::XHeader, "pax", records.as_bytes());
        bytes.extend(header(tar::EntryType::Regular, "short", 0));
        bytes.extend_from_slice(b"hello");
        bytes.resize(bytes.len().next_multiple_of(512), 0);
        bytes.extend(member(tar::EntryType::Regular, "after", b"a"));
        assert_eq!(take_out(&bytes, "pax/named").await.unwrap(), b"hello");
        assert_eq!(take_out(&bytes, "after").await.unwrap(), b"a");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_or_cut_tar_fails_its_stream() {
        let mut bytes = member(tar::EntryType::Regular, "a", b"content");
        bytes[0] ^= 1;
        let err = testing::guest_error(take_out(&bytes, "a").await);
        assert!(
            matches!(&err, Error::Failed(m) if m.contains("checksum")),
            "{err:?}"
        );
        let cut = &member(tar::EntryType::Regular, "a", &[1; 2000])[..1024];
        let err = testing::guest_error(take_out(cut, "b").await);
        assert!(
            matches!(&err, Error::Failed(m) if m.contains("ends inside")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn each_call_is_charged_to_the_budget() {
        let run = Run::hook().limits(|l| l.hostcalls = 0);
        let mut state = run.state();
        let tar = stored(&mut state, &tar_of(&[]));
        let Err(Fault::Trap(trap)) = archive::Host::tar_file(&mut state, tar, "x".into()).await
        else {
            panic!("a call past the budget must trap");
        };
        assert_eq!(testing::limit_trap(&trap), LimitExceeded::Hostcalls(0));
        let Err(Fault::Trap(trap)) = archive::Host::zip(&mut state, vec![]).await else {
            panic!("a call past the budget must trap");
        };
        assert_eq!(testing::limit_trap(&trap), LimitExceeded::Hostcalls(0));
    }
}
