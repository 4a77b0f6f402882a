//! The real backends Berth lends to plugins. Nothing here knows about WebAssembly: the runtime
//! crate checks grants and translates to the WIT contract; these modules talk to real servers.

pub mod blob;
pub mod database;
pub mod docker;
pub mod egress;
pub mod git;
pub mod ssh;
pub mod storage;
pub mod zip_stream;

/// What a transfer reads from: a blob, a download in flight, a stream still being produced.
/// Every bulk transfer is async end to end, so a slow reader holds its writer back (bounded
/// buffers, no spooling) and no executor thread ever blocks on I/O.
pub type Source<'a> = &'a mut (dyn tokio::io::AsyncRead + Unpin + Send);
/// What a transfer writes into.
pub type Sink<'a> = &'a mut (dyn tokio::io::AsyncWrite + Unpin + Send);
