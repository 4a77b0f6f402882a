//! `storage`: the S3, FTP and SFTP clients of `berth_backends::storage`, opened on the run's
//! storage targets. Capability `storage`. A plugin names a target and says how to reach it (the
//! provider logic is the plugin's); the host adds the target's credentials, which never enter Wasm,
//! and its transport security: an FTP target's `tls` (`when-offered`, the default; `required`;
//! `off`) and `tls-ca` (PEM certificates to trust) settings are the operator's, applied here, and an
//! FTP or SFTP connection goes only to the target's own `host`, so no plugin can weaken either.
//! Objects move between a target and host-side blobs, streamed, never through plugin memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_backends::egress::EgressPolicy;
use berth_backends::ssh::HostKey;
use berth_backends::storage::{self as backend, Credentials, StorageError};
use wasmtime::component::Resource;

use super::blobs::Blob;
use crate::bindings::Fault;
use crate::bindings::storage::{Host, HostConnection, Protocol};
use crate::bindings::types::{Error, ObjectInfo};
use crate::grants::Capability;
use crate::settings::Secret;
use crate::state::RunState;

/// An open connection to one storage target, as the plugin's handle holds it.
pub type Connection = backend::SharedConnection;

/// A storage target a run may use: its settings (shown to its backend plugin), credentials (kept
/// by the host) and, for SFTP, the host key pinned on the target's record (or where to pin it).
#[derive(Clone, Debug)]
pub struct StorageTarget {
    pub settings: BTreeMap<String, String>,
    pub user: String,
    pub secret: Secret,
    pub host_key: HostKey,
}

/// The storage targets of a run, and where their connections may go.
#[derive(Clone, Debug, Default)]
pub struct StorageTargets {
    pub targets: BTreeMap<String, StorageTarget>,
    pub egress: EgressPolicy,
}

const CAP: Capability = Capability::STORAGE;

fn storage_fault(err: StorageError) -> Fault {
    Fault::Guest(match err {
        StorageError::NotFound(m) => Error::not_found(m),
        StorageError::Invalid(m) => Error::invalid(m),
        StorageError::Denied(m) => Error::denied(m),
        StorageError::Failed(m) => Error::failed(m),
    })
}

fn info(o: backend::ObjectInfo) -> ObjectInfo {
    ObjectInfo {
        key: o.key,
        size: o.size,
        modified: o.modified,
    }
}

/// An FTP or SFTP server to connect to: only the target's own `host`, so a plugin cannot take the
/// target's credentials (an FTP password crosses the wire) to a server of its choosing.
fn remote(
    name: &str,
    target: &StorageTarget,
    r: crate::bindings::storage::RemoteSettings,
) -> Result<backend::Remote, Fault> {
    let configured = target.settings.get("host").map(|h| h.trim());
    if configured.is_none_or(|h| !h.eq_ignore_ascii_case(&r.host)) {
        return Err(Error::denied(format!(
            "storage.connect: storage target {name:?} is on host {:?}, not {:?}",
            configured.unwrap_or(""),
            r.host
        ))
        .into());
    }
    Ok(backend::Remote {
        host: r.host,
        port: r.port,
        directory: r.directory,
    })
}

/// The operator's TLS settings of an FTP target.
fn ftp_tls(settings: &BTreeMap<String, String>) -> Result<backend::FtpTls, StorageError> {
    let set = |key: &str| settings.get(key).filter(|v| !v.trim().is_empty());
    Ok(backend::FtpTls {
        mode: set("tls").map_or(Ok(backend::TlsMode::default()), |m| m.trim().parse())?,
        trusted_pem: set("tls-ca").cloned(),
    })
}

impl RunState {
    /// The door of every `storage` call: the grant, then the run's target by name.
    fn target(&mut self, call: &str, name: &str) -> Result<StorageTarget, Fault> {
        let targets =
            self.gate_lent::<StorageTargets>(&CAP, call, "this run has no storage targets")?;
        let target = targets.targets.get(name).cloned().ok_or_else(|| {
            Fault::from(Error::not_found(format!(
                "{call}: the run has no storage target named {name:?}"
            )))
        })?;
        Ok(target)
    }

    fn connection(&mut self, call: &str, c: &Resource<Connection>) -> Result<(), Fault> {
        self.gate(&CAP, call)?;
        RunState::get(self, c).map(|_| ())
    }
}

impl Host for RunState {
    async fn settings(&mut self, target: String) -> Result<Vec<(String, String)>, Fault> {
        let target = self.target("storage.settings", &target)?;
        Ok(target.settings.into_iter().collect())
    }

    async fn connect(
        &mut self,
        target: String,
        protocol: Protocol,
    ) -> Result<Resource<Connection>, Fault> {
        let found = self.target("storage.connect", &target)?;
        let protocol = match protocol {
            Protocol::S3(s) => backend::Protocol::S3 {
                endpoint: s.endpoint,
                region: s.region,
                bucket: s.bucket,
                path_style: s.path_style,
            },
            Protocol::Ftp(r) => backend::Protocol::Ftp(
                remote(&target, &found, r)?,
                ftp_tls(&found.settings).map_err(storage_fault)?,
            ),
            Protocol::Sftp(r) => backend::Protocol::Sftp(remote(&target, &found, r)?),
        };
        let credentials = Credentials {
            user: found.user.clone(),
            secret: found.secret.expose().to_string(),
        };
        // `target` found the lent targets: their egress policy is there too.
        let egress = self
            .lent_ref::<StorageTargets>()
            .map(|targets| targets.egress.clone())
            .unwrap_or_default();
        let connection =
            backend::Connection::open(&protocol, &credentials, found.host_key, &egress)
                .await
                .map_err(storage_fault)?;
        self.push(Arc::new(connection))
    }
}

impl HostConnection for RunState {
    async fn put(
        &mut self,
        c: Resource<Connection>,
        key: String,
        data: Resource<Blob>,
    ) -> Result<ObjectInfo, Fault> {
        self.connection("storage.put", &c)?;
        let mut reader = self.blob_reader(&data, "storage.put")?;
        let connection = RunState::get(self, &c)?;
        connection
            .put(&key, &mut reader)
            .await
            .map(info)
            .map_err(storage_fault)
    }

    async fn get(&mut self, c: Resource<Connection>, key: String) -> Result<Resource<Blob>, Fault> {
        self.connection("storage.get", &c)?;
        let connection = RunState::get(self, &c)?.clone();
        // Found now, read when consumed: the object streams to wherever it goes next.
        if connection
            .head(&key)
            .await
            .map_err(storage_fault)?
            .is_none()
        {
            return Err(Error::not_found(format!("storage.get: no object {key:?}")).into());
        }
        self.push_stream(move |mut pipe| async move { connection.get(&key, &mut pipe).await })
    }

    async fn head(
        &mut self,
        c: Resource<Connection>,
        key: String,
    ) -> Result<Option<ObjectInfo>, Fault> {
        self.connection("storage.head", &c)?;
        let connection = RunState::get(self, &c)?;
        Ok(connection
            .head(&key)
            .await
            .map_err(storage_fault)?
            .map(info))
    }

    async fn list_objects(
        &mut self,
        c: Resource<Connection>,
        prefix: String,
    ) -> Result<Vec<ObjectInfo>, Fault> {
        self.connection("storage.list-objects", &c)?;
        let connection = RunState::get(self, &c)?;
        let objects = connection.list(&prefix).await.map_err(storage_fault)?;
        Ok(objects.into_iter().map(info).collect())
    }

    async fn delete(&mut self, c: Resource<Connection>, key: String) -> Result<(), Fault> {
        self.connection("storage.delete", &c)?;
        let connection = RunState::get(self, &c)?;
        connection.delete(&key).await.map_err(storage_fault)
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        RunState::delete(self, connection)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The door of `storage` (its grant, its scope, the run's targets), what the host adds to a
    //! plugin's connection request (the target's host, its TLS settings), and how storage failures
    //! reach the plugin; nothing here opens a connection.

    use std::sync::Arc;

    use super::super::testing::{self, Run};
    use super::{
        Connection, Error, Fault, HostKey, Protocol, Resource, RunState, StorageError,
        StorageTarget, StorageTargets, backend, ftp_tls, remote, storage_fault,
    };
    use crate::bindings::storage::{self, RemoteSettings, S3Settings};
    use crate::settings::Secret;

    #[test]
    fn credentials_go_only_to_the_targets_own_host() {
        let target = StorageTarget {
            settings: [("host".to_string(), "ftp.example.com".to_string())].into(),
            user: "backup".into(),
            secret: Secret::new("hunter2"),
            host_key: HostKey::first_contact_in_memory(),
        };
        let to = |host: &str| RemoteSettings {
            host: host.into(),
            port: 21,
            directory: String::new(),
        };
        assert!(remote("offsite", &target, to("FTP.example.com")).is_ok());
        let Err(Fault::Guest(err)) = remote("offsite", &target, to("collector.example.net")) else {
            panic!("another host was accepted")
        };
        assert_eq!(err.kind(), "denied");
        assert!(err.message().contains("ftp.example.com"), "{err:?}");
        let mut hostless = target.clone();
        hostless.settings.clear();
        assert!(remote("offsite", &hostless, to("ftp.example.com")).is_err());
    }

    async fn settings(state: &mut RunState) -> Result<Vec<(String, String)>, Fault> {
        storage::Host::settings(state, "offsite".into()).await
    }

    fn s3() -> Protocol {
        Protocol::S3(S3Settings {
            endpoint: "https://s3.example.com".into(),
            region: "eu-west-1".into(),
            bucket: "backups".into(),
            path_style: true,
        })
    }

    fn ftp(host: &str) -> Protocol {
        Protocol::Ftp(RemoteSettings {
            host: host.into(),
            port: 21,
            directory: "/backups".into(),
        })
    }

    async fn connect(state: &mut RunState) -> Result<Resource<Connection>, Fault> {
        storage::Host::connect(state, "offsite".into(), s3()).await
    }

    /// A connection call on a handle no connection was ever pushed under: the door must refuse it
    /// before looking the handle up.
    async fn list(state: &mut RunState) -> Result<Vec<super::ObjectInfo>, Fault> {
        storage::HostConnection::list_objects(state, Resource::new_own(7), String::new()).await
    }

    fn targets(settings: &[(&str, &str)]) -> Arc<StorageTargets> {
        let target = StorageTarget {
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            user: "backup".into(),
            secret: Secret::new("hunter2"),
            host_key: HostKey::first_contact_in_memory(),
        };
        Arc::new(StorageTargets {
            targets: [("offsite".to_string(), target)].into(),
            egress: Default::default(),
        })
    }

    #[tokio::test]
    async fn a_call_without_the_grant_is_denied_and_audited() {
        testing::assert_denied_without_grant("storage", "storage.settings", settings).await;
        testing::assert_denied_without_grant("storage", "storage.connect", connect).await;
        testing::assert_denied_without_grant("storage", "storage.list-objects", list).await;
    }

    #[tokio::test]
    async fn a_grant_for_another_scope_does_not_count() {
        testing::assert_other_scopes_do_not_count("storage", "storage.settings", settings).await;
        testing::assert_other_scopes_do_not_count("storage", "storage.connect", connect).await;
    }

    #[tokio::test]
    async fn a_run_without_storage_targets_answers_unsupported() {
        let missing = "this run has no storage targets";
        testing::assert_unsupported_when_nothing_lent(
            "storage",
            "storage.settings",
            missing,
            settings,
        )
        .await;
        testing::assert_unsupported_when_nothing_lent(
            "storage",
            "storage.connect",
            missing,
            connect,
        )
        .await;
    }

    #[tokio::test]
    async fn a_granted_connection_call_on_an_unknown_handle_traps() {
        let run = Run::lifecycle().granted("storage");
        assert!(matches!(list(&mut run.state()).await, Err(Fault::Trap(_))));
    }

    #[tokio::test]
    async fn targets_are_found_by_name_and_show_their_settings_but_not_their_credentials() {
        let run = Run::lifecycle()
            .granted("storage")
            .lend(targets(&[("host", "ftp.example.com"), ("bucket", "b")]));
        let shown = settings(&mut run.state()).await.unwrap();
        assert_eq!(
            shown,
            [
                ("bucket".to_string(), "b".to_string()),
                ("host".to_string(), "ftp.example.com".to_string())
            ]
        );
        assert!(!format!("{shown:?}").contains("hunter2"));
        let err = testing::guest_error(
            storage::Host::settings(&mut run.state(), "elsewhere".into()).await,
        );
        assert!(
            matches!(&err, Error::NotFound(m) if m.contains("\"elsewhere\"")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_connection_is_refused_before_it_is_opened() {
        let run = Run::lifecycle().granted("storage").lend(targets(&[
            ("host", "ftp.example.com"),
            ("tls", "sometimes"),
        ]));
        let err = testing::guest_error(
            storage::Host::connect(
                &mut run.state(),
                "offsite".into(),
                ftp("collector.example.net"),
            )
            .await,
        );
        assert!(matches!(err, Error::Denied(_)), "another host: {err:?}");
        let err = testing::guest_error(
            storage::Host::connect(&mut run.state(), "offsite".into(), ftp("ftp.example.com"))
                .await,
        );
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("sometimes")),
            "an unknown TLS mode: {err:?}"
        );
    }

    #[test]
    fn the_ftp_tls_settings_are_the_operators() {
        let tls = |pairs: &[(&str, &str)]| {
            ftp_tls(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let default = tls(&[]).unwrap();
        assert_eq!(default.mode, backend::TlsMode::WhenOffered);
        assert!(default.trusted_pem.is_none());
        assert_eq!(
            tls(&[("tls", " required ")]).unwrap().mode,
            backend::TlsMode::Required
        );
        assert_eq!(tls(&[("tls", "off")]).unwrap().mode, backend::TlsMode::Off);
        assert_eq!(
            tls(&[("tls", "  ")]).unwrap().mode,
            backend::TlsMode::WhenOffered
        );
        let pem = "-----BEGIN CERTIFICATE-----";
        assert_eq!(
            tls(&[("tls-ca", pem)]).unwrap().trusted_pem.as_deref(),
            Some(pem)
        );
        assert!(tls(&[("tls-ca", " ")]).unwrap().trusted_pem.is_none());
        assert!(matches!(
            tls(&[("tls", "sometimes")]),
            Err(StorageError::Invalid(_))
        ));
    }

    #[test]
    fn storage_errors_map_to_the_error_a_plugin_can_act_on() {
        let map = |err: StorageError| match storage_fault(err) {
            Fault::Guest(err) => (err.kind(), err.message().to_string()),
            Fault::Trap(trap) => panic!("a storage error must not trap: {trap:#}"),
        };
        assert_eq!(
            map(StorageError::NotFound("no key".into())),
            ("not-found", "no key".into())
        );
        assert_eq!(map(StorageError::Invalid("bad key".into())).0, "invalid");
        assert_eq!(map(StorageError::Denied("403".into())).0, "denied");
        assert_eq!(map(StorageError::Failed("reset".into())).0, "failed");
    }
}
