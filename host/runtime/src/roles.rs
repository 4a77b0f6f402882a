//! The typed calls into each plugin role's export: a hook's verdict, a lifecycle's steps and one
//! step, a storage backend's five calls. Each runs [`sandboxed`] and bounds what the plugin returns.

use wasmtime::component::Resource;

use crate::bindings::Fault;
use crate::bindings::types::{
    Error as WitError, Event, ObjectInfo, Operation, StepContext, StepOutcome, Verdict,
};
use crate::capabilities::blobs::Blob;
use crate::engine::Runtime;
use crate::invoke::{Invocation, InvokeError, check_returned, sandboxed};
use crate::plugin::Plugin;
use crate::state::RunState;

impl Plugin {
    fn wrong_role(&self, wanted: &'static str) -> InvokeError {
        InvokeError::WrongRole {
            plugin: self.description.label(),
            role: crate::description::role_name(self.description.role),
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
        operation: Operation,
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
