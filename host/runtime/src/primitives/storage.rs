//! `storage`: declared in the contract; the protocol clients (S3, FTP, SFTP) are not built yet, so
//! `connect` is checked and answered `unsupported` and no [`Connection`] can exist.

use wasmtime::component::Resource;

use super::blobs::Blob;
use super::not_built_yet;
use crate::bindings::storage::{Host, HostConnection, Protocol};
use crate::bindings::types::ObjectInfo;
use crate::grants::Capability;
use crate::state::{Fault, RunState};

/// An open connection to a storage target. Uninhabited until the protocol clients exist.
#[derive(Debug)]
pub enum Connection {}

const CAP: Capability = Capability::STORAGE;

impl Host for RunState {
    async fn connect(
        &mut self,
        _target: String,
        _protocol: Protocol,
    ) -> Result<Resource<Connection>, Fault> {
        not_built_yet(self, &CAP, "storage.connect")
    }
}

impl HostConnection for RunState {
    async fn put(
        &mut self,
        _c: Resource<Connection>,
        _key: String,
        _data: Resource<Blob>,
    ) -> Result<ObjectInfo, Fault> {
        not_built_yet(self, &CAP, "storage.put")
    }

    async fn get(
        &mut self,
        _c: Resource<Connection>,
        _key: String,
    ) -> Result<Resource<Blob>, Fault> {
        not_built_yet(self, &CAP, "storage.get")
    }

    async fn head(
        &mut self,
        _c: Resource<Connection>,
        _key: String,
    ) -> Result<Option<ObjectInfo>, Fault> {
        not_built_yet(self, &CAP, "storage.head")
    }

    async fn list_objects(
        &mut self,
        _c: Resource<Connection>,
        _prefix: String,
    ) -> Result<Vec<ObjectInfo>, Fault> {
        not_built_yet(self, &CAP, "storage.list-objects")
    }

    async fn delete(&mut self, _c: Resource<Connection>, _key: String) -> Result<(), Fault> {
        not_built_yet(self, &CAP, "storage.delete")
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.delete(connection)?;
        Ok(())
    }
}
