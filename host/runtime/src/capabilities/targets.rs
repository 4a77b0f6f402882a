//! `targets`: the organization's storage targets, for lifecycles (backup, restore). Capability
//! `targets` (every target of the organization) or `targets:<target>` (that one only): the door
//! checks the target each call names. Each call is brokered: the host invokes the target's storage-backend plugin — a
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
use crate::bindings::types::{Error, ObjectInfo, Role};
use crate::engine::Runtime;
use crate::grants::{Capability, is_name};
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

/// Asks the target's backend plugin, in its own sandbox, to carry out `request`.
async fn send(
    runtime: &Runtime,
    backend: &TargetBackend,
    target: &str,
    request: StorageRequest,
) -> Result<StorageAnswer, Fault> {
    backend
        .plugin
        .storage(runtime, &backend.invocation, target, request)
        .await
        .map_err(invoke_fault)
}

impl RunState {
    /// The door of every `targets` call: the grant for the target named, the run's targets, the
    /// one named.
    fn target_backend(
        &mut self,
        call: &str,
        target: &str,
        key: Option<&str>,
    ) -> Result<(Arc<Runtime>, TargetBackend), Fault> {
        if !is_name(target) {
            self.charge()?;
            return Err(Error::invalid(format!("{call}: {target:?} is not a target name")).into());
        }
        let targets = self.gate_lent::<Targets>(
            &Capability::storage_target(target),
            call,
            "this run has no storage targets",
        )?;
        if let Some(key) = key {
            self.confine(call, key)?;
        }
        let backend = targets.backends.get(target).cloned().ok_or_else(|| {
            Fault::from(Error::not_found(format!(
                "{call}: the organization has no storage target named {target:?}"
            )))
        })?;
        Ok((targets.runtime.clone(), backend))
    }

    async fn broker(
        &mut self,
        call: &str,
        target: &str,
        request: StorageRequest,
    ) -> Result<StorageAnswer, Fault> {
        let key = match &request {
            StorageRequest::Put { key, .. }
            | StorageRequest::Get { key }
            | StorageRequest::Delete { key } => Some(key.as_str()),
            StorageRequest::List { prefix } => Some(prefix.as_str()),
            StorageRequest::Check => None,
        };
        let (runtime, backend) = self.target_backend(call, target, key)?;
        send(&runtime, &backend, target, request).await
    }

    /// A hook reaches only its environment's folder of a target (`<project>/<environment>/`):
    /// granted `targets` in a deploy, it must not list, read or overwrite another environment's
    /// backups. The lifecycle that owns the run (a restore from any object) is not confined.
    fn confine(&self, call: &str, key: &str) -> Result<(), Fault> {
        if self.description.role == Role::Lifecycle {
            return Ok(());
        }
        let folder = berth_contract::backup_key::prefix(&self.env.project, &self.env.environment);
        let inside = key.starts_with(&folder) && !key.split('/').any(|c| c == "..");
        if inside {
            return Ok(());
        }
        Err(Error::denied(format!(
            "{call}: {} reaches only this environment's objects ({folder}…), not {key:?}",
            self.plugin
        ))
        .into())
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
        // The door before the blob is taken: a refused call leaves the plugin's stream unread.
        let (runtime, backend) = self.target_backend("targets.put", &target, Some(&key))?;
        let data = self
            .get_mut(&data)?
            .hand_over()
            .map_err(|e| blob_error("targets.put", e))?;
        match send(
            &runtime,
            &backend,
            &target,
            StorageRequest::Put { key, data },
        )
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
            // Made in the backend's invocation: counted in this plugin's room from now on.
            StorageAnswer::Fetched(blob) => {
                let blob = (blob.into_room(&self.room()))
                    .map_err(|e| super::blobs::blob_error("targets.get", e))?;
                self.push(blob)
            }
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

#[cfg(test)]
mod tests {
    //! The door of `targets` (its grant, its scope, the targets the run lent) and how a storage
    //! backend's failure reaches the lifecycle that asked; no backend plugin is invoked.

    use std::sync::Arc;
    use std::time::Duration;

    use super::super::testing::{self, Run};
    use super::{
        Blob, Error, Fault, InvokeError, Resource, RunState, Runtime, Targets, invoke_fault,
    };
    use crate::bindings::targets;
    use crate::engine::RuntimeOptions;
    use crate::limits::LimitExceeded;

    async fn check(state: &mut RunState) -> Result<(), Fault> {
        targets::Host::check(state, "offsite".into()).await
    }

    async fn put(state: &mut RunState) -> Result<super::ObjectInfo, Fault> {
        let mut blob = Blob::new(1024);
        blob.append(b"dump").unwrap();
        let blob = state.push(blob)?;
        targets::Host::put(state, "offsite".into(), "k".into(), blob).await
    }

    async fn get(state: &mut RunState) -> Result<Resource<Blob>, Fault> {
        targets::Host::get(state, "offsite".into(), "k".into()).await
    }

    /// A hook granted `targets` in a deploy listed, downloaded and overwrote another
    /// environment's backups: a hook reaches only its own environment's folder.
    #[tokio::test]
    async fn a_hook_reaches_only_its_environments_objects() {
        let targets = Targets {
            runtime: Arc::new(Runtime::new(RuntimeOptions::default()).unwrap()),
            backends: Default::default(),
        };
        let run = Run::hook()
            .declares("targets")
            .granted("targets")
            .lend(Arc::new(targets));
        let mut state = run.state();
        for key in [
            "shop/production/20261101T000000Z-run1.zip",
            "",
            "shop/staging/../production/x",
        ] {
            let listed =
                targets::Host::list_objects(&mut state, "offsite".into(), key.into()).await;
            match testing::guest_error(listed) {
                Error::Denied(m) => assert!(m.contains("only this environment's objects"), "{m}"),
                other => panic!("{key:?}: {other:?}"),
            }
            let fetched = targets::Host::get(&mut state, "offsite".into(), key.into()).await;
            assert!(
                matches!(testing::guest_error(fetched), Error::Denied(_)),
                "{key:?}"
            );
        }
        // Its own folder passes the door (and then there is no such target here).
        let own =
            targets::Host::get(&mut state, "offsite".into(), "shop/staging/x.zip".into()).await;
        assert!(matches!(testing::guest_error(own), Error::NotFound(_)));
    }

    /// The `targets` grant reached every target of the organization: granted for one target, a
    /// hook reaches that one and no other, and the denial is on record under the target's name.
    #[tokio::test]
    async fn a_grant_for_one_target_reaches_no_other() {
        let targets = Targets {
            runtime: Arc::new(Runtime::new(RuntimeOptions::default()).unwrap()),
            backends: Default::default(),
        };
        let run = Run::hook()
            .declares("targets")
            .grant_in("targets:offsite", testing::staging())
            .lend(Arc::new(targets));
        let mut state = run.state();
        let other = targets::Host::check(&mut state, "archive".into()).await;
        match testing::guest_error(other) {
            Error::Denied(m) => assert!(m.contains("`targets:archive`"), "{m}"),
            other => panic!("{other:?}"),
        }
        let records = run.audited();
        testing::assert_record(&records[0], "targets:archive", "targets.check", false);
        // The granted one passes the door (and then there is no such target here).
        let own = targets::Host::check(&mut state, "offsite".into()).await;
        assert!(matches!(testing::guest_error(own), Error::NotFound(_)));
        let bad = targets::Host::check(&mut state, "../offsite".into()).await;
        assert!(matches!(testing::guest_error(bad), Error::Invalid(_)));
    }

    #[tokio::test]
    async fn a_refused_put_leaves_the_plugins_stream_unread() {
        let run = Run::lifecycle().declares("targets");
        let mut state = run.state();
        let stream = Blob::stream(
            1 << 20,
            Box::new(|_pipe| Box::pin(async { Ok::<(), std::io::Error>(()) })),
        );
        let handle = state.push(stream).unwrap();
        let borrowed = Resource::<Blob>::new_borrow(handle.rep());
        let refused = targets::Host::put(&mut state, "offsite".into(), "k".into(), borrowed).await;
        assert!(matches!(testing::guest_error(refused), Error::Denied(_)));
        assert!(
            state.get(&handle).unwrap().is_pending_stream(),
            "the stream is still the plugin's to use"
        );
    }

    /// Each call is checked against the target it names (`offsite` here), and recorded so.
    const OFFSITE: &str = "targets:offsite";

    #[tokio::test]
    async fn a_call_without_the_grant_is_denied_and_audited() {
        testing::assert_denied_without_grant(OFFSITE, "targets.check", check).await;
        testing::assert_denied_without_grant(OFFSITE, "targets.put", put).await;
        testing::assert_denied_without_grant(OFFSITE, "targets.get", get).await;
    }

    #[tokio::test]
    async fn a_grant_for_another_scope_does_not_count() {
        testing::assert_other_scopes_do_not_count(OFFSITE, "targets.check", check).await;
        testing::assert_other_scopes_do_not_count(OFFSITE, "targets.put", put).await;
    }

    #[tokio::test]
    async fn a_run_without_storage_targets_answers_unsupported() {
        let missing = "this run has no storage targets";
        testing::assert_unsupported_when_nothing_lent(OFFSITE, "targets.check", missing, check)
            .await;
        testing::assert_unsupported_when_nothing_lent(OFFSITE, "targets.get", missing, get).await;
    }

    #[tokio::test]
    async fn an_unknown_target_is_not_found() {
        let runtime = Runtime::new(RuntimeOptions {
            max_instances: 1,
            max_memory: 1 << 20,
            ..RuntimeOptions::default()
        })
        .unwrap();
        let run = Run::lifecycle().granted("targets").lend(Arc::new(Targets {
            runtime: Arc::new(runtime),
            backends: Default::default(),
        }));
        let err = testing::guest_error(check(&mut run.state()).await);
        assert!(
            matches!(&err, Error::NotFound(m) if m.contains("\"offsite\"")),
            "{err:?}"
        );
    }

    #[test]
    fn a_backends_own_error_keeps_its_kind_and_names_the_backend() {
        let errors = [
            Error::Denied("403".into()),
            Error::NotFound("no key".into()),
            Error::Invalid("bad key".into()),
            Error::Unsupported("no listing".into()),
            Error::Timeout("slow".into()),
            Error::Failed("reset".into()),
        ];
        for error in errors {
            let (kind, message) = (error.kind(), error.message().to_string());
            let Fault::Guest(mapped) = invoke_fault(InvokeError::Plugin {
                plugin: "storage-s3@1.0.0".into(),
                error,
            }) else {
                panic!("a backend's error must not trap");
            };
            assert_eq!(mapped.kind(), kind);
            assert_eq!(mapped.message(), format!("storage-s3@1.0.0: {message}"));
        }
    }

    #[test]
    fn a_backend_that_failed_otherwise_is_a_failure_of_the_target() {
        let plugin = || "storage-s3@1.0.0".to_string();
        let kind = |err: InvokeError| match invoke_fault(err) {
            Fault::Guest(err) => {
                assert!(err.message().contains("storage-s3@1.0.0"), "{err:?}");
                err.kind()
            }
            Fault::Trap(trap) => panic!("a backend's failure must not trap the caller: {trap:#}"),
        };
        assert_eq!(
            kind(InvokeError::Timeout {
                plugin: plugin(),
                after: Duration::from_secs(10),
            }),
            "timeout"
        );
        for err in [
            InvokeError::Trap {
                plugin: plugin(),
                message: "unreachable".into(),
            },
            InvokeError::Limit {
                plugin: plugin(),
                limit: LimitExceeded::Hostcalls(10),
            },
            InvokeError::Instantiate {
                plugin: plugin(),
                message: "missing import".into(),
            },
            InvokeError::WrongRole {
                plugin: plugin(),
                role: "hook",
                wanted: "storage-backend",
            },
        ] {
            assert_eq!(kind(err), "failed");
        }
    }
}
