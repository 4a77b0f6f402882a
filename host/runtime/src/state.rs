//! The data of one invocation's `Store`, and the door every host call walks through.
//!
//! A [`RunState`] is built fresh for each invocation from the loaded plugin and the
//! [`Invocation`](crate::Invocation) the caller describes; it dies with the store, so nothing
//! (handles, budgets, memory) outlives the call. It knows no capability: each capability finds
//! its own context among what the run [lent](crate::lend) through [`RunState::lent`].
//! [`RunState::gate`] is the one place a host call charges the host-call budget, checks the
//! effective grant and writes the audit record.

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::audit::{AuditRecord, AuditSink};
use crate::bindings::Fault;
use crate::bindings::types::{self, Error};
use crate::description::Description;
use crate::grants::{Capability, EnvRef, Rights};
use crate::lend::Lent;
use crate::limits::{BoundedOutput, HostcallBudget, LimitExceeded, Limiter, Limits};
use crate::runlog::LogSink;

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
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) log: Arc<dyn LogSink>,
    lent: Lent,
    /// Time spent inside host calls, and when the current one began.
    pub(crate) host_time: std::time::Duration,
    pub(crate) host_entered: Option<std::time::Instant>,
}

impl RunState {
    pub(crate) fn new(description: Arc<Description>, invocation: &crate::Invocation) -> Self {
        let limits = invocation.limits.clone();
        let env = invocation.env_ref();
        let rights = Rights::effective(
            &description.capabilities,
            &invocation.grants,
            &description.name,
            &env,
        );
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
            plugin: description.label(),
            description,
            run_id: invocation.run.id.clone(),
            env,
            rights,
            audit: invocation.audit.clone(),
            log: invocation.log.clone(),
            lent: invocation.lent.clone(),
            host_time: std::time::Duration::ZERO,
            host_entered: None,
            limits,
        }
    }

    /// The context of type `T` the run lent, for a capability's door to hand to its backend.
    pub(crate) fn lent<T: ?Sized + Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.lent.get::<T>()
    }

    /// The context of type `T` the run lent, borrowed: for calls that only read it.
    pub(crate) fn lent_ref<T: ?Sized + Send + Sync + 'static>(&self) -> Option<&T> {
        self.lent.find::<T>().map(|context| &**context)
    }

    /// The context of type `T`, or `unsupported` saying the run has `missing`.
    pub(crate) fn lent_or<T: ?Sized + Send + Sync + 'static>(
        &self,
        call: &str,
        missing: &str,
    ) -> Result<Arc<T>, Fault> {
        self.lent::<T>()
            .ok_or_else(|| Error::unsupported(format!("{call}: {missing}")).into())
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
            let server_wide = if cap.is_server_wide() {
                format!(
                    " on server {} (`{cap}` is server-wide: it is granted per server)",
                    self.env.server
                )
            } else {
                String::new()
            };
            return Err(Error::denied(format!(
                "{call} needs capability `{cap}`, which {} does not hold in {}{server_wide}",
                self.plugin, self.env
            ))
            .into());
        }
        Ok(())
    }

    /// [`gate`](Self::gate), then the context of type `T`: the door of a capability whose every
    /// call needs what the run lent it.
    pub(crate) fn gate_lent<T: ?Sized + Send + Sync + 'static>(
        &mut self,
        cap: &Capability,
        call: &str,
        missing: &str,
    ) -> Result<Arc<T>, Fault> {
        self.gate(cap, call)?;
        self.lent_or::<T>(call, missing)
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
