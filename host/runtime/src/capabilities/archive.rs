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
