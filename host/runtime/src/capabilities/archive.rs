//! `archive`: zips assembled from blobs as a stream (Odoo's backup archive is the reason: a dump,
//! a filestore and a manifest become one database-manager zip on its way to a storage target).
//! Always available: it works only on the plugin's own blobs.
//!
//! The zip is itself a stream blob. When it is consumed, one blocking worker runs the members in
//! order — each member's own stream (a `pg_dump`, a tar of the filestore from Docker) is read
//! through a bridge, deflated by [`ZipStream`] and written into the zip's pipe — so the whole
//! chain moves at the pace of its slowest end with bounded buffers, and nothing is stored.

use std::io::{self, Write};

use berth_backends::zip_stream::ZipStream;
use tokio_util::io::SyncIoBridge;
use wasmtime::component::Resource;

use super::blobs::{Blob, blob_error};
use crate::bindings::Fault;
use crate::bindings::archive::{Content, Host, Member};
use crate::bindings::types::Error;
use crate::state::RunState;

/// Members of one zip at most (a filestore counts as one tree member).
const MEMBERS_MAX: usize = 64;

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
        let reader = SyncIoBridge::new_with_handle(part.data.reader()?, handle.clone());
        match part.content {
            Content::File => {
                let mut reader = reader;
                let mut entry = zip.entry(&part.name)?;
                io::copy(&mut reader, &mut entry)?;
                entry.finish()?;
            }
            Content::Tree(strip) => {
                let mut tar = tar::Archive::new(reader);
                for file in tar.entries()? {
                    let mut file = file?;
                    if !file.header().entry_type().is_file() {
                        continue;
                    }
                    let path = file.path()?.into_owned();
                    let kept: Vec<String> = path
                        .components()
                        .skip(strip as usize)
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    if kept.is_empty() {
                        continue;
                    }
                    let name = if part.name.is_empty() {
                        kept.join("/")
                    } else {
                        format!("{}/{}", part.name.trim_end_matches('/'), kept.join("/"))
                    };
                    let mut entry = zip.entry(&name)?;
                    io::copy(&mut file, &mut entry)?;
                    entry.finish()?;
                }
                // Read the tar to its end, so its producer's success is what ends the member.
                io::copy(&mut tar.into_inner(), &mut io::sink())?;
            }
        }
    }
    Ok(())
}

/// The synchronous end of a stream's pipe, as a worker writes it.
type PipeWriter = SyncIoBridge<tokio::io::DuplexStream>;

/// A stream blob produced by `work` on a blocking worker (the zip and tar code is synchronous):
/// `work` writes into the pipe it is given and returns it; it is then flushed and closed. The
/// worker enters the runtime, so the streams it reads can start their own producers.
fn worker_stream(
    limit: u64,
    what: &'static str,
    work: impl FnOnce(&tokio::runtime::Handle, PipeWriter) -> io::Result<PipeWriter> + Send + 'static,
) -> Blob {
    Blob::stream(
        limit,
        Box::new(move |pipe| {
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
        }),
    )
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
        let blob = worker_stream(self.limits.blob_bytes, "zip", move |handle, out| {
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
        let blob = worker_stream(self.limits.blob_bytes, "tar", move |handle, mut out| {
            let reader = SyncIoBridge::new_with_handle(tar.reader()?, handle.clone());
            let mut archive = tar::Archive::new(reader);
            let mut found = false;
            for file in archive.entries()? {
                let mut file = file?;
                if !found
                    && file.header().entry_type().is_file()
                    && file.path()?.as_os_str() == path.as_str()
                {
                    io::copy(&mut file, &mut out)?;
                    found = true;
                }
            }
            // Read to the end, so the tar's own producer reports how it ended.
            io::copy(&mut archive.into_inner(), &mut io::sink())?;
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
    use super::{Blob, Content, Error, Fault, MEMBERS_MAX, Member, Resource, RunState};
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
