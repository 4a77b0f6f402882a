//! `database`: declared in the contract; the backend (tokio-postgres through an SSH tunnel, dumps
//! streamed over SSH) is not built yet, so each call is checked and answered `unsupported`.

use wasmtime::component::Resource;

use super::blobs::Blob;
use super::not_built_yet;
use crate::bindings::database::{DumpFormat, Host, Rows, Statement, Value};
use crate::grants::Capability;
use crate::state::{Fault, RunState};

impl Host for RunState {
    async fn query(
        &mut self,
        _db: String,
        _sql: String,
        _params: Vec<Value>,
    ) -> Result<Rows, Fault> {
        not_built_yet(self, &Capability::DATABASE, "database.query")
    }

    async fn execute(
        &mut self,
        _db: String,
        _sql: String,
        _params: Vec<Value>,
    ) -> Result<u64, Fault> {
        not_built_yet(self, &Capability::DATABASE, "database.execute")
    }

    async fn transaction(
        &mut self,
        _db: String,
        _statements: Vec<Statement>,
    ) -> Result<Vec<u64>, Fault> {
        not_built_yet(self, &Capability::DATABASE, "database.transaction")
    }

    async fn list_databases(&mut self) -> Result<Vec<String>, Fault> {
        not_built_yet(self, &Capability::DATABASE, "database.list-databases")
    }

    async fn create_database(
        &mut self,
        _name: String,
        _template: Option<String>,
    ) -> Result<(), Fault> {
        not_built_yet(
            self,
            &Capability::DATABASE_ADMIN,
            "database.create-database",
        )
    }

    async fn drop_database(&mut self, _name: String) -> Result<(), Fault> {
        not_built_yet(self, &Capability::DATABASE_ADMIN, "database.drop-database")
    }

    async fn rename_database(&mut self, _name: String, _new_name: String) -> Result<(), Fault> {
        not_built_yet(
            self,
            &Capability::DATABASE_ADMIN,
            "database.rename-database",
        )
    }

    async fn dump(&mut self, _db: String, _format: DumpFormat) -> Result<Resource<Blob>, Fault> {
        not_built_yet(self, &Capability::DATABASE_DUMP, "database.dump")
    }

    async fn restore(
        &mut self,
        _db: String,
        _data: Resource<Blob>,
        _format: DumpFormat,
    ) -> Result<(), Fault> {
        not_built_yet(self, &Capability::DATABASE_DUMP, "database.restore")
    }
}
