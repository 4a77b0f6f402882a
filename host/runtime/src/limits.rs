//! Per-invocation limits and their enforcement.
//!
//! Each invocation gets a wall-clock deadline (epoch interruption), a memory cap across all of the
//! instance's linear memories and the blobs the host keeps in memory for it, a cap on live host
//! resources, a budget of host calls, and bounds on what the plugin may log, print or return. A
//! run's workspace — its files and the blobs that spilled to disk — is under one disk quota
//! ([`RUN_DISK_BYTES`] unless the caller sets another). When a limit is hit the invocation traps
//! with a [`LimitExceeded`] (or the limiter records which limit refused a growth), so the caller
//! can say precisely what happened instead of "wasm trap".

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_backends::blob::{Meter, OverQuota};

use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// The bounds of one invocation. `Default` is the profile for hooks; lifecycle steps use
/// [`Limits::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of the whole call (guest code and host calls).
    pub deadline: Duration,
    /// Bytes of memory: the instance's linear memories and the blobs the host keeps in memory
    /// for it, together.
    pub memory: usize,
    /// Live host resources (blobs, connections, WASI streams) at once.
    pub resources: usize,
    /// Host calls the plugin may make in this invocation.
    pub hostcalls: u64,
    /// Bytes the plugin may write to the run log through `log`.
    pub log_bytes: usize,
    /// Bytes the plugin may write to each of stdout and stderr.
    pub output_bytes: usize,
    /// Bytes of strings a plugin returns (abort reasons, descriptions, summaries).
    pub returned_bytes: usize,
    /// Bytes one blob may hold.
    pub blob_bytes: u64,
    /// Bytes one bounded read (`blob.read`, `files.read`) may return into the guest.
    pub read_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(10),
            memory: 64 << 20,
            resources: 1024,
            hostcalls: 100_000,
            log_bytes: 1 << 20,
            output_bytes: 64 << 10,
            returned_bytes: 64 << 10,
            blob_bytes: 64 << 30,
            read_bytes: 4 << 20,
        }
    }
}

impl Limits {
    /// The profile for lifecycle steps: long deadline, more memory and host calls.
    pub fn step() -> Self {
        Limits {
            deadline: Duration::from_secs(60 * 60),
            memory: 256 << 20,
            hostcalls: 10_000_000,
            log_bytes: 16 << 20,
            ..Limits::default()
        }
    }
}

/// The disk a run's workspace may use by default: the files its plugins write and the blobs that
/// spill there (a blob over [`SPILL_AT`](berth_backends::blob::SPILL_AT) bytes), together.
pub const RUN_DISK_BYTES: u64 = 4 << 30;

/// A limit an invocation ran into; carried as the trap's error so it can be told apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("exceeded the budget of {0} host calls")]
    Hostcalls(u64),
    #[error("logged more than the limit of {0} bytes")]
    Log(usize),
    #[error("wrote more than the limit of {limit} bytes to {stream}")]
    Output { stream: &'static str, limit: usize },
    #[error("returned {what} of {size} bytes, over the limit of {limit} bytes")]
    Returned {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("holds more than the limit of {0} host resources at once")]
    Resources(usize),
    #[error("grew its memory to {desired} bytes, over the limit of {limit} bytes")]
    Memory { desired: usize, limit: usize },
    #[error("grew a table to {desired} elements, over the limit of {limit}")]
    Table { desired: usize, limit: usize },
    /// What the host would have held for it: memory for its blobs, disk in its run's workspace.
    #[error("would hold {0}")]
    Quota(OverQuota),
}

/// Caps linear memory (summed over all memories) and tables, remembering what it refused. Linear
/// memory is counted on a [`Meter`] the invocation's blobs count their memory on too, so what the
/// host keeps for a plugin and what the plugin keeps itself share one cap.
pub struct Limiter {
    memory: Arc<Meter>,
    /// Bytes of linear memory this limiter counted on `memory`; given back when it is dropped.
    memory_used: usize,
    table_limit: usize,
    /// The first growth refused, if any.
    pub refused: Option<LimitExceeded>,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Self {
        Limiter {
            memory: Arc::new(Meter::new(
                "memory (its linear memory and the blobs the host keeps in memory for it)",
                limits.memory as u64,
            )),
            memory_used: 0,
            table_limit: 100_000,
            refused: None,
        }
    }

    /// The meter of the invocation's memory, for the blobs the host keeps for it.
    pub fn memory(&self) -> &Arc<Meter> {
        &self.memory
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.memory.give(self.memory_used as u64);
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        if self.memory.take(growth as u64).is_err() {
            self.refused.get_or_insert(LimitExceeded::Memory {
                desired: self.memory.used() as usize + growth,
                limit: self.memory.limit() as usize,
            });
            return Ok(false);
        }
        self.memory_used += growth;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_limit {
            self.refused.get_or_insert(LimitExceeded::Table {
                desired,
                limit: self.table_limit,
            });
            return Ok(false);
        }
        Ok(true)
    }
}

/// Counts host calls against the invocation's budget.
#[derive(Debug)]
pub struct HostcallBudget {
    limit: u64,
    used: u64,
}

impl HostcallBudget {
    pub fn new(limit: u64) -> Self {
        HostcallBudget { limit, used: 0 }
    }

    pub fn charge(&mut self) -> Result<(), LimitExceeded> {
        self.used += 1;
        if self.used > self.limit {
            return Err(LimitExceeded::Hostcalls(self.limit));
        }
        Ok(())
    }

    pub fn used(&self) -> u64 {
        self.used
    }
}

/// A plugin's stdout or stderr: kept in memory up to a bound, then the write traps with
/// [`LimitExceeded::Output`]. Nothing reaches the host's own stdio.
#[derive(Clone)]
pub struct BoundedOutput {
    stream: &'static str,
    limit: usize,
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl BoundedOutput {
    pub fn new(stream: &'static str, limit: usize) -> Self {
        BoundedOutput {
            stream,
            limit,
            buffer: Arc::default(),
        }
    }

    /// What was written so far, as lossy UTF-8.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    fn append(&self, bytes: &[u8]) -> Result<(), LimitExceeded> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() + bytes.len() > self.limit {
            let room = self.limit - buffer.len();
            buffer.extend_from_slice(&bytes[..room]);
            return Err(LimitExceeded::Output {
                stream: self.stream,
                limit: self.limit,
            });
        }
        buffer.extend_from_slice(bytes);
        Ok(())
    }
}

impl fmt::Debug for BoundedOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BoundedOutput({})", self.stream)
    }
}

impl IsTerminal for BoundedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for BoundedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for BoundedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.append(&bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always accept: an over-long write traps with a precise error instead of being refused.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for BoundedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(
            self.append(buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
