//! One call into one plugin: a fresh store and instance, every limit set, the outcome classified.
//!
//! A trapped instance is poisoned, and state left in an instance by one run must not leak into the
//! next, so nothing is reused between invocations but the compiled code. Whatever goes wrong — a
//! trap, the deadline, a limit, a denial the plugin passed on — comes back as a precise
//! [`InvokeError`]; the host and other invocations carry on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::Resource;

use crate::audit::AuditSink;
use crate::bindings::types::{
    Error as WitError, Event, ObjectInfo, RunInfo, StepContext, StepOutcome, Verdict,
};
use crate::engine::Runtime;
use crate::grants::{EnvRef, Grant, Rights};
use crate::limits::{LimitExceeded, Limits};
use crate::plugin::{Description, Plugin};
use crate::primitives::blobs::Blob;
use crate::primitives::operation::RunContext;
use crate::primitives::storage::StorageTargets;
use crate::runlog::{Level, LogSink, RunEvent};
use crate::settings::Settings;
use crate::state::Fault;
use crate::state::{RunState, StateParts};

/// What a caller says about the call: which run, under which grants, with which sinks and limits.
#[derive(Clone)]
pub struct Invocation {
    pub run: RunInfo,
    pub grants: Arc<Vec<Grant>>,
    pub settings: Arc<Settings>,
    /// The run's workspace directory; `files` calls fail without one.
    pub workspace: Option<PathBuf>,
    pub audit: Arc<dyn AuditSink>,
    pub log: Arc<dyn LogSink>,
    pub limits: Limits,
    /// How to reach the run environment's server; `ssh` calls fail without one.
    pub server: Option<ServerAccess>,
    /// The control plane's repository mirrors; `git` calls fail without them.
    pub mirrors: Option<Arc<berth_primitives::git::Mirrors>>,
    /// The operation the run performs (settings, repositories, inputs, facts); `operation` calls
    /// fail without one.
    pub context: Option<Arc<dyn RunContext>>,
    /// The storage targets the run may use; `storage` calls fail without them.
    pub storage: Option<Arc<StorageTargets>>,
    /// The storage targets the run reaches through their backend plugins (`targets` calls).
    pub targets: Option<Arc<crate::primitives::targets::Targets>>,
}

/// The control plane's SSH pool, the address of the run environment's server, and how to reach
/// the environment's PostgreSQL on it (once it has one).
#[derive(Clone)]
pub struct ServerAccess {
    pub pool: Arc<berth_primitives::ssh::SshPool>,
    pub target: berth_primitives::ssh::Target,
    pub database: Option<berth_primitives::database::DbAccess>,
}

impl Invocation {
    pub fn env_ref(&self) -> EnvRef {
        let env = &self.run.environment;
        EnvRef {
            organization: env.organization.clone(),
            project: env.project.clone(),
            environment: env.name.clone(),
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
    let env = invocation.env_ref();
    let rights = Rights::effective(
        &description.capabilities,
        &invocation.grants,
        &description.name,
        &env,
    );
    let parts = StateParts {
        description: description.clone(),
        run_id: invocation.run.id.clone(),
        env,
        rights,
        settings: invocation.settings.clone(),
        workspace_root: invocation.workspace.clone(),
        audit: invocation.audit.clone(),
        log: invocation.log.clone(),
        server: invocation.server.clone(),
        mirrors: invocation.mirrors.clone(),
        context: invocation.context.clone(),
        storage: invocation.storage.clone(),
        targets: invocation.targets.clone(),
    };
    let mut store = Store::new(
        runtime.engine(),
        RunState::new(parts, invocation.limits.clone()),
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
    if let Some(context) = &invocation.context {
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

fn check_returned(state: &RunState, what: &'static str, size: usize) -> wasmtime::Result<()> {
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

impl Plugin {
    fn wrong_role(&self, wanted: &'static str) -> InvokeError {
        InvokeError::WrongRole {
            plugin: self.description.label(),
            role: crate::plugin::role_name(self.description.role),
            wanted,
        }
    }

    fn plugin_failed(&self, error: WitError) -> InvokeError {
        InvokeError::Plugin {
            plugin: self.description.label(),
            error,
        }
    }

    /// Delivers `event` to this hook plugin and returns its verdict.
    pub async fn handle(
        &self,
        runtime: &Runtime,
        invocation: &Invocation,
        event: &Event,
    ) -> Result<Verdict, InvokeError> {
        let hook = self.hook.as_ref().ok_or_else(|| self.wrong_role("hook"))?;
        let answer = sandboxed(runtime, &self.description, invocation, async |store| {
            let instance = hook.instantiate_async(&mut *store).await?;
            let answer = instance
                .berth_plugin_hook_handler()
                .call_handle(&mut *store, event)
                .await?;
            if let Ok(Verdict::Abort(reason)) = &answer {
                check_returned(store.data(), "an abort reason", reason.len())?;
            }
            check_error(store.data(), &answer)?;
            Ok(answer)
        })
        .await?;
        answer.map_err(|error| self.plugin_failed(error))
    }

    /// Asks this lifecycle plugin for the ordered steps of `operation` on the invocation's
    /// environment.
    pub async fn steps(
        &self,
        runtime: &Runtime,
        invocation: &Invocation,
        operation: &str,
    ) -> Result<Vec<String>, InvokeError> {
        let lifecycle = self
            .lifecycle
            .as_ref()
            .ok_or_else(|| self.wrong_role("lifecycle"))?;
        let environment = &invocation.run.environment;
        let answer = sandboxed(runtime, &self.description, invocation, async |store| {
            let instance = lifecycle.instantiate_async(&mut *store).await?;
            let answer = instance
                .berth_plugin_lifecycle_steps()
                .call_steps(&mut *store, operation, environment)
                .await?;
            if let Ok(steps) = &answer {
                let size = steps.iter().map(String::len).sum();
                check_returned(store.data(), "a step list", size)?;
            }
            check_error(store.data(), &answer)?;
            Ok(answer)
        })
        .await?;
        let steps = answer.map_err(|error| self.plugin_failed(error))?;
        if let Some(bad) = steps.iter().find(|s| !crate::grants::is_name(s)) {
            return Err(self.plugin_failed(WitError::invalid(format!(
                "step name {bad:?} must be lowercase letters, digits, '-', '_' or '.'"
            ))));
        }
        Ok(steps)
    }

    /// Runs one step of a run with this lifecycle plugin.
    pub async fn run_step(
        &self,
        runtime: &Runtime,
        invocation: &Invocation,
        context: &StepContext,
    ) -> Result<StepOutcome, InvokeError> {
        let lifecycle = self
            .lifecycle
            .as_ref()
            .ok_or_else(|| self.wrong_role("lifecycle"))?;
        let answer = sandboxed(runtime, &self.description, invocation, async |store| {
            let instance = lifecycle.instantiate_async(&mut *store).await?;
            let answer = instance
                .berth_plugin_lifecycle_steps()
                .call_run_step(&mut *store, context)
                .await?;
            if let Ok(StepOutcome::Done(Some(text)) | StepOutcome::Skipped(text)) = &answer {
                check_returned(store.data(), "a step summary", text.len())?;
            }
            check_error(store.data(), &answer)?;
            Ok(answer)
        })
        .await?;
        answer.map_err(|error| self.plugin_failed(error))
    }
}

/// Bounds the message of an error a plugin returned.
fn check_error<T>(state: &RunState, answer: &Result<T, WitError>) -> wasmtime::Result<()> {
    match answer {
        Err(error) => check_returned(state, "an error message", error.message().len()),
        Ok(_) => Ok(()),
    }
}

/// What a storage-backend plugin is asked to do with one target.
#[derive(Debug)]
pub enum StorageRequest {
    Check,
    Put { key: String, data: Blob },
    Get { key: String },
    List { prefix: String },
    Delete { key: String },
}

/// A storage-backend plugin's answer.
#[derive(Debug)]
pub enum StorageAnswer {
    Checked,
    Stored(ObjectInfo),
    Fetched(Blob),
    Listed(Vec<ObjectInfo>),
    Deleted,
}

impl Plugin {
    /// Asks this storage-backend plugin to act on storage target `target`. Blobs cross by handle:
    /// the data never passes through the plugin's memory.
    pub async fn storage(
        &self,
        runtime: &Runtime,
        invocation: &Invocation,
        target: &str,
        request: StorageRequest,
    ) -> Result<StorageAnswer, InvokeError> {
        let backend = self
            .storage_backend
            .as_ref()
            .ok_or_else(|| self.wrong_role("storage-backend"))?;
        let answer = sandboxed(runtime, &self.description, invocation, async |store| {
            let instance = backend.instantiate_async(&mut *store).await?;
            let provider = instance.berth_plugin_storage_provider();
            let answer = match request {
                StorageRequest::Check => provider
                    .call_check(&mut *store, target)
                    .await?
                    .map(|()| StorageAnswer::Checked),
                StorageRequest::Put { key, data } => {
                    let handle = store.data_mut().push(data).map_err(Fault::into_trap)?;
                    let borrowed = Resource::<Blob>::new_borrow(handle.rep());
                    let stored = provider
                        .call_put(&mut *store, target, &key, borrowed)
                        .await?;
                    store.data_mut().delete(handle)?;
                    stored.map(StorageAnswer::Stored)
                }
                StorageRequest::Get { key } => {
                    match provider.call_get(&mut *store, target, &key).await? {
                        Ok(handle) => Ok(StorageAnswer::Fetched(store.data_mut().delete(handle)?)),
                        Err(e) => Err(e),
                    }
                }
                StorageRequest::List { prefix } => provider
                    .call_list_objects(&mut *store, target, &prefix)
                    .await?
                    .map(StorageAnswer::Listed),
                StorageRequest::Delete { key } => provider
                    .call_delete(&mut *store, target, &key)
                    .await?
                    .map(|()| StorageAnswer::Deleted),
            };
            check_error(store.data(), &answer)?;
            Ok(answer)
        })
        .await?;
        answer.map_err(|error| self.plugin_failed(error))
    }
}
