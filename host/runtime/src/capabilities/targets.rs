//! `targets`: the organization's storage targets, for lifecycles (backup, restore). Capability
//! `targets`. Each call is brokered: the host invokes the target's storage-backend plugin — a
//! separate sandbox with its own grant, holding the provider logic — and hands it the blob by
//! handle. The lifecycle never sees a credential, an endpoint or the provider's code; the backend
//! never sees the environment's server. Blobs move between the two stores host-side, so a stream
//! flows from its source into the backend's upload without being stored.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::Resource;

use super::blobs::{Blob, blob_error};
use crate::bindings::Fault;
use crate::bindings::targets::Host;
use crate::bindings::types::{Error, ObjectInfo};
use crate::engine::Runtime;
use crate::grants::Capability;
use crate::invoke::{Invocation, InvokeError};
use crate::plugin::Plugin;
use crate::roles::{StorageAnswer, StorageRequest};
use crate::state::RunState;

/// One target: its backend plugin and how to invoke it (its grants, the target's settings and
/// credentials lent to `invocation`).
#[derive(Clone)]
pub struct TargetBackend {
    pub plugin: Arc<Plugin>,
    pub invocation: Invocation,
}

/// The storage targets a run may reach, by name.
#[derive(Clone)]
pub struct Targets {
    pub runtime: Arc<Runtime>,
    pub backends: BTreeMap<String, TargetBackend>,
}

fn invoke_fault(err: InvokeError) -> Fault {
    // The backend's own error keeps its kind (not-found stays not-found); anything else (a trap,
    // a timeout) is a failure of the target, named with the plugin.
    match err {
        InvokeError::Plugin { plugin, error } => Fault::Guest(match error {
            Error::Denied(m) => Error::Denied(format!("{plugin}: {m}")),
            Error::NotFound(m) => Error::NotFound(format!("{plugin}: {m}")),
            Error::Invalid(m) => Error::Invalid(format!("{plugin}: {m}")),
            Error::Unsupported(m) => Error::Unsupported(format!("{plugin}: {m}")),
            Error::Timeout(m) => Error::Timeout(format!("{plugin}: {m}")),
            Error::Failed(m) => Error::Failed(format!("{plugin}: {m}")),
        }),
        InvokeError::Timeout { .. } => Error::Timeout(err.to_string()).into(),
        other => Error::failed(other.to_string()).into(),
    }
}

impl RunState {
    async fn broker(
        &mut self,
        call: &str,
        target: &str,
        request: StorageRequest,
    ) -> Result<StorageAnswer, Fault> {
        let targets = self.gate_lent::<Targets>(
            &Capability::TARGETS,
            call,
            "this run has no storage targets",
        )?;
        let backend = targets.backends.get(target).ok_or_else(|| {
            Fault::from(Error::not_found(format!(
                "{call}: the organization has no storage target named {target:?}"
            )))
        })?;
        backend
            .plugin
            .storage(&targets.runtime, &backend.invocation, target, request)
            .await
            .map_err(invoke_fault)
    }
}

fn unexpected(call: &str) -> Fault {
    Error::failed(format!("{call}: the backend answered another request")).into()
}

impl Host for RunState {
    async fn check(&mut self, target: String) -> Result<(), Fault> {
        match self
            .broker("targets.check", &target, StorageRequest::Check)
            .await?
        {
            StorageAnswer::Checked => Ok(()),
            _ => Err(unexpected("targets.check")),
        }
    }

    async fn put(
        &mut self,
        target: String,
        key: String,
        data: Resource<Blob>,
    ) -> Result<ObjectInfo, Fault> {
        let data = self
            .get_mut(&data)?
            .hand_over()
            .map_err(|e| blob_error("targets.put", e))?;
        match self
            .broker("targets.put", &target, StorageRequest::Put { key, data })
            .await?
        {
            StorageAnswer::Stored(info) => Ok(info),
            _ => Err(unexpected("targets.put")),
        }
    }

    async fn get(&mut self, target: String, key: String) -> Result<Resource<Blob>, Fault> {
        match self
            .broker("targets.get", &target, StorageRequest::Get { key })
            .await?
        {
            StorageAnswer::Fetched(blob) => self.push(blob),
            _ => Err(unexpected("targets.get")),
        }
    }

    async fn list_objects(
        &mut self,
        target: String,
        prefix: String,
    ) -> Result<Vec<ObjectInfo>, Fault> {
        match self
            .broker(
                "targets.list-objects",
                &target,
                StorageRequest::List { prefix },
            )
            .await?
        {
            StorageAnswer::Listed(objects) => Ok(objects),
            _ => Err(unexpected("targets.list-objects")),
        }
    }

    async fn delete(&mut self, target: String, key: String) -> Result<(), Fault> {
        match self
            .broker("targets.delete", &target, StorageRequest::Delete { key })
            .await?
        {
            StorageAnswer::Deleted => Ok(()),
            _ => Err(unexpected("targets.delete")),
        }
    }
}
