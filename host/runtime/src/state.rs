//! The data of one invocation's `Store`, and the door every host call walks through.
//!
//! A [`RunState`] is built fresh for each invocation from the loaded plugin and the
//! [`Invocation`](crate::Invocation) the caller describes; it dies with the store, so nothing (handles,
//! budgets, memory) outlives the call. [`RunState::gate`] is the one place a host call charges the
//! host-call budget, checks the effective grant and writes the audit record.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::audit::{AuditRecord, AuditSink};
use crate::bindings::types::{self, Error};
use crate::grants::{Capability, EnvRef, Rights};
use crate::invoke::ServerAccess;
use crate::limits::{BoundedOutput, HostcallBudget, LimitExceeded, Limiter, Limits};
use crate::plugin::Description;
use crate::primitives::operation::RunContext;
use crate::primitives::storage::StorageTargets;
use crate::runlog::LogSink;
use crate::settings::Settings;

/// Why a host call did not return a value: a WIT error for the guest, or a trap that ends the
/// invocation (a limit, or a host fault the guest must not paper over).
#[derive(Debug)]
pub enum Fault {
    Guest(Error),
    Trap(wasmtime::Error),
}

impl From<Error> for Fault {
    fn from(err: Error) -> Self {
        Fault::Guest(err)
    }
}

impl From<LimitExceeded> for Fault {
    fn from(err: LimitExceeded) -> Self {
        Fault::Trap(wasmtime::Error::new(err))
    }
}

impl Fault {
    /// For host calls whose WIT signature has no error case: any fault ends the invocation.
    pub(crate) fn into_trap(self) -> wasmtime::Error {
        match self {
            Fault::Trap(trap) => trap,
            Fault::Guest(err) => wasmtime::Error::msg(err.to_string()),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Guest(err) => write!(f, "{err}"),
            Fault::Trap(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for Fault {}

impl Error {
    pub fn denied(msg: impl Into<String>) -> Self {
        Error::Denied(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Error::Unsupported(msg.into())
    }
    pub fn failed(msg: impl Into<String>) -> Self {
        Error::Failed(msg.into())
    }

    /// `denied`, `not-found`, … as in the WIT.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Denied(_) => "denied",
            Error::NotFound(_) => "not-found",
            Error::Invalid(_) => "invalid",
            Error::Unsupported(_) => "unsupported",
            Error::Timeout(_) => "timeout",
            Error::Failed(_) => "failed",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Denied(m)
            | Error::NotFound(m)
            | Error::Invalid(m)
            | Error::Unsupported(m)
            | Error::Timeout(m)
            | Error::Failed(m) => m,
        }
    }
}

/// Everything one invocation may touch, and the counters that bound it.
pub struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) budget: HostcallBudget,
    pub(crate) limits: Limits,
    pub(crate) log_used: usize,
    pub(crate) stdout: BoundedOutput,
    pub(crate) stderr: BoundedOutput,
    /// `name@version` of the plugin, as it appears in logs and audit records.
    pub(crate) plugin: String,
    pub(crate) description: Arc<Description>,
    pub(crate) run_id: String,
    pub(crate) env: EnvRef,
    pub(crate) rights: Rights,
    pub(crate) settings: Arc<Settings>,
    pub(crate) workspace_root: Option<PathBuf>,
    pub(crate) workspace: Option<cap_std::fs::Dir>,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) log: Arc<dyn LogSink>,
    pub(crate) server: Option<ServerAccess>,
    pub(crate) mirrors: Option<Arc<berth_primitives::git::Mirrors>>,
    pub(crate) context: Option<Arc<dyn RunContext>>,
    pub(crate) storage: Option<Arc<StorageTargets>>,
    pub(crate) targets: Option<Arc<crate::primitives::targets::Targets>>,
    /// Time spent inside host calls, and when the current one began.
    pub(crate) host_time: std::time::Duration,
    pub(crate) host_entered: Option<std::time::Instant>,
}

/// What [`RunState::new`] needs besides the limits.
pub(crate) struct StateParts {
    pub description: Arc<Description>,
    pub run_id: String,
    pub env: EnvRef,
    pub rights: Rights,
    pub settings: Arc<Settings>,
    pub workspace_root: Option<PathBuf>,
    pub audit: Arc<dyn AuditSink>,
    pub log: Arc<dyn LogSink>,
    pub server: Option<ServerAccess>,
    pub mirrors: Option<Arc<berth_primitives::git::Mirrors>>,
    pub context: Option<Arc<dyn RunContext>>,
    pub storage: Option<Arc<StorageTargets>>,
    pub targets: Option<Arc<crate::primitives::targets::Targets>>,
}

impl RunState {
    pub(crate) fn new(parts: StateParts, limits: Limits) -> Self {
        let stdout = BoundedOutput::new("stdout", limits.output_bytes);
        let stderr = BoundedOutput::new("stderr", limits.output_bytes);
        // WASI with nothing ambient: no args, no environment variables, no preopened directories,
        // no network; stdout/stderr are bounded buffers that end up in the run log.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.resources);
        RunState {
            wasi,
            table,
            limiter: Limiter::new(&limits),
            budget: HostcallBudget::new(limits.hostcalls),
            log_used: 0,
            stdout,
            stderr,
            plugin: parts.description.label(),
            description: parts.description,
            run_id: parts.run_id,
            env: parts.env,
            rights: parts.rights,
            settings: parts.settings,
            workspace_root: parts.workspace_root,
            workspace: None,
            audit: parts.audit,
            log: parts.log,
            server: parts.server,
            mirrors: parts.mirrors,
            context: parts.context,
            storage: parts.storage,
            targets: parts.targets,
            host_time: std::time::Duration::ZERO,
            host_entered: None,
            limits,
        }
    }

    /// Charges one host call against the budget. For calls that need no capability.
    pub(crate) fn charge(&mut self) -> Result<(), Fault> {
        Ok(self.budget.charge()?)
    }

    /// The door of every capability-bound host call: charge the budget, check the effective grant,
    /// record the decision. A denial is the WIT `denied` error, never a trap.
    pub(crate) fn gate(&mut self, cap: &Capability, call: &str) -> Result<(), Fault> {
        self.charge()?;
        let allowed = self.rights.allows(cap);
        if !allowed || cap.is_sensitive() {
            let record = AuditRecord {
                at: std::time::SystemTime::now(),
                plugin: self.plugin.clone(),
                run: self.run_id.clone(),
                scope: self.env.to_string(),
                capability: cap.to_string(),
                call: call.to_string(),
                allowed,
            };
            self.audit.record(record).map_err(|e| {
                Fault::Trap(wasmtime::Error::msg(format!("cannot audit {call}: {e}")))
            })?;
        }
        if !allowed {
            return Err(Error::denied(format!(
                "{call} needs capability `{cap}`, which {} does not hold in {}",
                self.plugin, self.env
            ))
            .into());
        }
        Ok(())
    }

    /// Adds a host resource to the table, within the invocation's resource cap.
    pub(crate) fn push<T: Send + 'static>(&mut self, value: T) -> Result<Resource<T>, Fault> {
        self.table.push(value).map_err(|e| match e {
            wasmtime::component::ResourceTableError::Full => {
                LimitExceeded::Resources(self.limits.resources).into()
            }
            other => Fault::Trap(other.into()),
        })
    }

    pub(crate) fn get<T: 'static>(&self, handle: &Resource<T>) -> Result<&T, Fault> {
        self.table.get(handle).map_err(|e| Fault::Trap(e.into()))
    }

    pub(crate) fn get_mut<T: 'static>(&mut self, handle: &Resource<T>) -> Result<&mut T, Fault> {
        self.table
            .get_mut(handle)
            .map_err(|e| Fault::Trap(e.into()))
    }

    pub(crate) fn delete<T: 'static>(&mut self, handle: Resource<T>) -> wasmtime::Result<T> {
        Ok(self.table.delete(handle)?)
    }

    /// What the plugin wrote to stdout and stderr.
    pub(crate) fn output(&self) -> (String, String) {
        (self.stdout.contents(), self.stderr.contents())
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for RunState {
    fn convert_error(&mut self, err: Fault) -> wasmtime::Result<Error> {
        match err {
            Fault::Guest(err) => Ok(err),
            Fault::Trap(trap) => Err(trap),
        }
    }
}
