//! One call into one plugin: a fresh store and instance, every limit set, the outcome classified.
//!
//! A trapped instance is poisoned, and state left in an instance by one run must not leak into the
//! next, so nothing is reused between invocations but the compiled code. Whatever goes wrong — a
//! trap, the deadline, a limit, a denial the plugin passed on — comes back as a precise
//! [`InvokeError`]; the host and other invocations carry on.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;

use crate::audit::{AuditSink, MemoryAudit};
use crate::bindings::types::Error as WitError;
use crate::bindings::types::RunInfo;
use crate::capabilities::operation::RunContext;
use crate::description::Description;
use crate::engine::Runtime;
use crate::grants::{EnvRef, Grant};
use crate::lend::Lent;
use crate::limits::{LimitExceeded, Limits};
use crate::runlog::{Level, LogSink, MemoryLog, RunEvent};
use crate::state::RunState;

/// What a caller says about the call: which run, under which grants, with which sinks and
/// limits, and what it lends each capability ([`Invocation::lend`]). Built with defaults and
/// chained setters:
///
/// ```text
/// let invocation = Invocation::new(run)
///     .grants(grants)
///     .log(log)
///     .lend(Arc::new(mirrors));
/// ```
#[derive(Clone)]
pub struct Invocation {
    pub run: RunInfo,
    pub grants: Arc<Vec<Grant>>,
    pub audit: Arc<dyn AuditSink>,
    pub log: Arc<dyn LogSink>,
    pub limits: Limits,
    pub(crate) lent: Lent,
}

impl Invocation {
    /// An invocation within `run`: no grant, nothing lent, the default limits, its log and audit
    /// records kept in memory.
    pub fn new(run: RunInfo) -> Self {
        Invocation {
            run,
            grants: Arc::default(),
            audit: Arc::new(MemoryAudit::default()),
            log: Arc::new(MemoryLog::default()),
            limits: Limits::default(),
            lent: Lent::default(),
        }
    }

    pub fn grants(mut self, grants: Vec<Grant>) -> Self {
        self.grants = Arc::new(grants);
        self
    }

    pub fn audit(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.audit = audit;
        self
    }

    pub fn log(mut self, log: Arc<dyn LogSink>) -> Self {
        self.log = log;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Lends a capability its context for this invocation (see [`crate::lend`]).
    pub fn lend<T: ?Sized + Send + Sync + 'static>(mut self, context: Arc<T>) -> Self {
        self.lent.insert(context);
        self
    }

    /// Takes back what was lent as `T`: the capability answers `unsupported` again.
    pub fn withhold<T: ?Sized + 'static>(mut self) -> Self {
        self.lent.remove::<T>();
        self
    }

    /// The context lent as `T`, if any.
    pub fn lent<T: ?Sized + Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.lent.get::<T>()
    }

    pub fn env_ref(&self) -> EnvRef {
        let env = &self.run.environment;
        EnvRef {
            organization: env.organization.clone(),
            project: env.project.clone(),
            environment: env.name.clone(),
            server: env.server.name.clone(),
        }
    }
}

/// How an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("{plugin}: timed out after {after:?}")]
    Timeout { plugin: String, after: Duration },
    #[error("{plugin}: {limit}")]
    Limit {
        plugin: String,
        limit: LimitExceeded,
    },
    #[error("{plugin}: trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("{plugin}: returned {kind}: {message}", kind = error.kind(), message = error.message())]
    Plugin { plugin: String, error: WitError },
    #[error("{plugin}: cannot instantiate: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("{plugin}: is a {role} plugin, not a {wanted} plugin")]
    WrongRole {
        plugin: String,
        role: &'static str,
        wanted: &'static str,
    },
}

impl InvokeError {
    /// The WIT error the plugin returned, if that is how it failed.
    pub fn plugin_error(&self) -> Option<&WitError> {
        match self {
            InvokeError::Plugin { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A store for one invocation of `description`'s plugin.
pub(crate) fn new_store(
    runtime: &Runtime,
    description: &Arc<Description>,
    invocation: &Invocation,
) -> Store<RunState> {
    let mut store = Store::new(
        runtime.engine(),
        RunState::new(description.clone(), invocation),
    );
    store.limiter(|state| &mut state.limiter);
    // Time inside host calls (SSH, Docker, PostgreSQL…) versus the plugin's own: measured at the
    // boundary, so a run can say how much of its time was Berth's overhead.
    store.call_hook(|mut store, hook| {
        let state = store.data_mut();
        match hook {
            wasmtime::CallHook::CallingHost => state.host_entered = Some(std::time::Instant::now()),
            wasmtime::CallHook::ReturningFromHost => {
                if let Some(entered) = state.host_entered.take() {
                    state.host_time += entered.elapsed();
                }
            }
            _ => {}
        }
        Ok(())
    });
    store.set_epoch_deadline(Runtime::ticks(invocation.limits.deadline));
    store.epoch_deadline_trap();
    store
}

/// Runs `call` against a fresh store under the invocation's deadline, then forwards the plugin's
/// stdout/stderr to the run log and classifies any failure.
pub(crate) async fn sandboxed<R, F>(
    runtime: &Runtime,
    description: &Arc<Description>,
    invocation: &Invocation,
    call: F,
) -> Result<R, InvokeError>
where
    F: AsyncFnOnce(&mut Store<RunState>) -> wasmtime::Result<R>,
{
    let mut store = new_store(runtime, description, invocation);
    let deadline = invocation.limits.deadline;
    // The epoch deadline stops guest code; this stops a host call that would outlive the deadline.
    let outcome = match tokio::time::timeout(deadline + EPOCH_GRACE, call(&mut store)).await {
        Ok(result) => result,
        Err(_) => Err(wasmtime::Error::new(wasmtime::Trap::Interrupt)),
    };
    let plugin = store.data().plugin.clone();
    if let Some(context) = invocation.lent::<dyn RunContext>() {
        context.host_time(store.data().host_time);
    }
    let (stdout, stderr) = store.data().output();
    forward_output(&invocation.log, &plugin, &stdout, Level::Info);
    forward_output(&invocation.log, &plugin, &stderr, Level::Warn);
    outcome.map_err(|err| classify(err, store.data(), &stderr, deadline))
}

/// How long past its deadline a host call may run before the invocation is abandoned.
const EPOCH_GRACE: Duration = Duration::from_millis(500);

fn forward_output(log: &Arc<dyn LogSink>, plugin: &str, text: &str, level: Level) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        log.event(RunEvent::Log {
            at: std::time::SystemTime::now(),
            plugin: plugin.to_string(),
            level,
            message: line.to_string(),
        });
    }
}

fn classify(
    err: wasmtime::Error,
    state: &RunState,
    stderr: &str,
    deadline: Duration,
) -> InvokeError {
    let plugin = state.plugin.clone();
    if let Some(limit) = &state.limiter.refused {
        return InvokeError::Limit {
            plugin,
            limit: limit.clone(),
        };
    }
    if let Some(limit) = err.chain().find_map(|e| e.downcast_ref::<LimitExceeded>()) {
        return InvokeError::Limit {
            plugin,
            limit: limit.clone(),
        };
    }
    if matches!(
        err.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    ) {
        return InvokeError::Timeout {
            plugin,
            after: deadline,
        };
    }
    let mut message = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    // A Rust guest prints its panic message to stderr before aborting: that is the reason.
    if let Some(panic) = stderr.lines().rev().find(|l| l.contains("panicked at")) {
        let detail = stderr
            .lines()
            .skip_while(|l| !l.contains("panicked at"))
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        message = format!(
            "{message} ({})",
            if detail.is_empty() {
                panic.to_string()
            } else {
                detail
            }
        );
    }
    InvokeError::Trap { plugin, message }
}

pub(crate) fn check_returned(
    state: &RunState,
    what: &'static str,
    size: usize,
) -> wasmtime::Result<()> {
    let limit = state.limits.returned_bytes;
    if size > limit {
        return Err(wasmtime::Error::new(LimitExceeded::Returned {
            what,
            size,
            limit,
        }));
    }
    Ok(())
}
