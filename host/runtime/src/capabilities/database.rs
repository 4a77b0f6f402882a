//! `database`: the run environment's PostgreSQL, through the SSH connection. Capabilities
//! `database` (SQL with bound parameters), `database.admin` (create/drop/rename/copy databases and
//! create/drop roles within the environment's name space), `database.dump` (dump and restore as host-side blobs, streamed).
//!
//! The run lends every plugin the same access (the superuser's, which the host keeps for its own
//! statements); whose SQL a call carries is the calling plugin's role: the run's lifecycle acts as
//! the environment's own role, any other plugin as the environment's hooks' role (see
//! [`Principal`]), and only the lifecycle restores a dump.

use berth_backends::database::{self as backend, DbError, EnvDatabase, Principal};
use berth_backends::docker::{EnvDocker, Scope};
use wasmtime::component::Resource;

use super::blobs::Blob;
use crate::bindings::Fault;
use crate::bindings::database::{DumpFormat, Host, Rows, Statement, Value};
use crate::bindings::types::{Error, Role};
use crate::grants::Capability;
use crate::state::RunState;

fn db_fault(err: DbError) -> Fault {
    Fault::Guest(match err {
        DbError::Refused(m) => Error::denied(m),
        DbError::Invalid(m) => Error::invalid(m),
        DbError::NotFound(m) => Error::not_found(m),
        DbError::Failed(m) => Error::failed(m),
    })
}

impl RunState {
    /// The door of every `database` call: the grant, the run's server, its database.
    fn database(&mut self, cap: &Capability, call: &str) -> Result<EnvDatabase, Fault> {
        let access = self.server(cap, call)?;
        self.env_database(access, call)
    }

    fn env_database(
        &self,
        access: super::ssh::ServerAccess,
        call: &str,
    ) -> Result<EnvDatabase, Fault> {
        let Some(db) = access.database.clone() else {
            return Err(
                Error::unsupported(format!("{call}: the environment has no database yet")).into(),
            );
        };
        let env = &self.env;
        let scope = Scope::environment(&env.organization, &env.project, &env.environment);
        let docker = EnvDocker::new(access.pool.clone(), access.target.clone(), scope)
            .map_err(|e| Error::failed(e.to_string()))?;
        let principal = match self.description.role {
            Role::Lifecycle => Principal::Lifecycle,
            _ => Principal::Hooks,
        };
        Ok(EnvDatabase::new(access.pool, access.target, db, docker).acting_as(principal))
    }
}

fn to_backend(values: Vec<Value>) -> Vec<backend::Value> {
    values
        .into_iter()
        .map(|v| match v {
            Value::Null => backend::Value::Null,
            Value::Boolean(b) => backend::Value::Bool(b),
            Value::Integer(n) => backend::Value::Int(n),
            Value::Float(f) => backend::Value::Float(f),
            Value::Text(s) => backend::Value::Text(s),
            Value::Bytes(b) => backend::Value::Bytes(b),
            Value::Json(j) => backend::Value::Json(j),
        })
        .collect()
}

fn from_backend(value: backend::Value) -> Value {
    match value {
        backend::Value::Null => Value::Null,
        backend::Value::Bool(b) => Value::Boolean(b),
        backend::Value::Int(n) => Value::Integer(n),
        backend::Value::Float(f) => Value::Float(f),
        backend::Value::Text(s) => Value::Text(s),
        backend::Value::Bytes(b) => Value::Bytes(b),
        backend::Value::Json(j) => Value::Json(j),
    }
}

fn format(format: DumpFormat) -> backend::DumpFormat {
    match format {
        DumpFormat::Custom => backend::DumpFormat::Custom,
        DumpFormat::Plain => backend::DumpFormat::Plain,
    }
}

impl Host for RunState {
    async fn query(&mut self, db: String, sql: String, params: Vec<Value>) -> Result<Rows, Fault> {
        let database = self.database(&Capability::DATABASE, "database.query")?;
        let (columns, rows) = database
            .query(&db, &sql, &to_backend(params))
            .await
            .map_err(db_fault)?;
        let rows = rows
            .into_iter()
            .map(|r| r.into_iter().map(from_backend).collect())
            .collect();
        Ok(Rows { columns, rows })
    }

    async fn execute(&mut self, db: String, sql: String, params: Vec<Value>) -> Result<u64, Fault> {
        let database = self.database(&Capability::DATABASE, "database.execute")?;
        database
            .execute(&db, &sql, &to_backend(params))
            .await
            .map_err(db_fault)
    }

    async fn transaction(
        &mut self,
        db: String,
        statements: Vec<Statement>,
    ) -> Result<Vec<u64>, Fault> {
        let database = self.database(&Capability::DATABASE, "database.transaction")?;
        let statements: Vec<(String, Vec<backend::Value>)> = statements
            .into_iter()
            .map(|s| (s.sql, to_backend(s.params)))
            .collect();
        database
            .transaction(&db, &statements)
            .await
            .map_err(db_fault)
    }

    async fn list_databases(&mut self) -> Result<Vec<String>, Fault> {
        let database = self.database(&Capability::DATABASE, "database.list-databases")?;
        database.list().await.map_err(db_fault)
    }

    async fn create_database(
        &mut self,
        name: String,
        template: Option<String>,
    ) -> Result<(), Fault> {
        let database = self.database(&Capability::DATABASE_ADMIN, "database.create-database")?;
        database
            .create(&name, template.as_deref())
            .await
            .map_err(db_fault)
    }

    async fn drop_database(&mut self, name: String) -> Result<(), Fault> {
        let database = self.database(&Capability::DATABASE_ADMIN, "database.drop-database")?;
        database.drop(&name).await.map_err(db_fault)
    }

    async fn rename_database(&mut self, name: String, new_name: String) -> Result<(), Fault> {
        let database = self.database(&Capability::DATABASE_ADMIN, "database.rename-database")?;
        database.rename(&name, &new_name).await.map_err(db_fault)
    }

    async fn create_role(&mut self, name: String, password_secret: String) -> Result<(), Fault> {
        let database = self.database(&Capability::DATABASE_ADMIN, "database.create-role")?;
        let password = self.secret(&password_secret, "database.create-role")?;
        database
            .create_role(&name, &password)
            .await
            .map_err(db_fault)
    }

    async fn drop_role(&mut self, name: String) -> Result<(), Fault> {
        let database = self.database(&Capability::DATABASE_ADMIN, "database.drop-role")?;
        database.drop_role(&name).await.map_err(db_fault)
    }

    async fn dump(&mut self, db: String, dump_format: DumpFormat) -> Result<Resource<Blob>, Fault> {
        let access = self.stream_server(&Capability::DATABASE_DUMP, "database.dump")?;
        let database = self.env_database(access, "database.dump")?;
        database.check_name(&db).map_err(db_fault)?;
        let format = format(dump_format);
        // A stream: pg_dump runs when the blob is read, straight into its consumer.
        self.push_stream(move |mut pipe| async move { database.dump(&db, format, &mut pipe).await })
    }

    async fn restore(
        &mut self,
        db: String,
        data: Resource<Blob>,
        dump_format: DumpFormat,
    ) -> Result<(), Fault> {
        let database = self.database(&Capability::DATABASE_DUMP, "database.restore")?;
        let mut reader = self.blob_reader(&data, "database.restore")?;
        database
            .restore(&db, format(dump_format), &mut reader)
            .await
            .map_err(db_fault)
    }
}

#[cfg(test)]
mod tests {
    //! The doors of `database` (three capabilities, their scope, the server and the database the
    //! run lent), how database failures reach the plugin, and the environment's name space,
    //! checked before anything is sent to a server.

    use std::sync::Arc;

    use berth_backends::database::DbAccess;

    use super::super::testing::{self, Run};
    use super::{Capability, DbError, DumpFormat, Error, Fault, Principal, RunState, db_fault};
    use crate::bindings::database;

    async fn query(state: &mut RunState) -> Result<database::Rows, Fault> {
        database::Host::query(state, "staging".into(), "select 1".into(), vec![]).await
    }

    async fn create_database(state: &mut RunState) -> Result<(), Fault> {
        database::Host::create_database(state, "staging_copy".into(), None).await
    }

    async fn dump(
        state: &mut RunState,
    ) -> Result<wasmtime::component::Resource<super::Blob>, Fault> {
        database::Host::dump(state, "staging".into(), DumpFormat::Custom).await
    }

    fn access() -> DbAccess {
        DbAccess {
            host: String::new(),
            port: 5432,
            user: "odoo".into(),
            password: "secret".into(),
            container: "db".into(),
        }
    }

    #[tokio::test]
    async fn each_call_without_its_grant_is_denied_and_audited() {
        testing::assert_denied_without_grant("database", "database.query", query).await;
        testing::assert_denied_without_grant(
            "database.admin",
            "database.create-database",
            create_database,
        )
        .await;
        testing::assert_denied_without_grant("database.dump", "database.dump", dump).await;
    }

    #[tokio::test]
    async fn the_database_grant_opens_neither_administration_nor_dumps() {
        let run = Run::lifecycle().granted("database");
        let err = testing::guest_error(create_database(&mut run.state()).await);
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("`database.admin`")),
            "{err:?}"
        );
        let err = testing::guest_error(dump(&mut run.state()).await);
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("`database.dump`")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_grant_for_another_scope_does_not_count() {
        testing::assert_other_scopes_do_not_count("database", "database.query", query).await;
        testing::assert_other_scopes_do_not_count("database.dump", "database.dump", dump).await;
    }

    #[tokio::test]
    async fn a_run_without_a_server_answers_unsupported() {
        let missing = "this run has no server";
        testing::assert_unsupported_when_nothing_lent("database", "database.query", missing, query)
            .await;
        testing::assert_unsupported_when_nothing_lent(
            "database.admin",
            "database.create-database",
            missing,
            create_database,
        )
        .await;
        testing::assert_unsupported_when_nothing_lent(
            "database.dump",
            "database.dump",
            missing,
            dump,
        )
        .await;
    }

    #[tokio::test]
    async fn a_server_without_a_database_answers_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::lifecycle()
            .granted("database")
            .lend(Arc::new(testing::server_access(dir.path(), None)));
        let err = testing::guest_error(query(&mut run.state()).await);
        assert!(
            matches!(&err, Error::Unsupported(m) if m == "database.query: the environment has no database yet"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_dump_stays_within_the_environments_name_space() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::lifecycle()
            .granted("database.dump")
            .lend(Arc::new(testing::server_access(dir.path(), Some(access()))));
        let dump_of = async |db: &str| {
            database::Host::dump(&mut run.state(), db.into(), DumpFormat::Plain).await
        };
        let err = testing::guest_error(dump_of("postgres").await);
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("name space")),
            "another environment's database: {err:?}"
        );
        let err = testing::guest_error(dump_of("Staging; drop").await);
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
        // Within the name space the dump is a stream, started only when it is read.
        dump_of("staging_copy")
            .await
            .expect("a dump of the environment's own database");
    }

    #[tokio::test]
    async fn only_the_lifecycle_acts_as_the_environments_role() {
        let dir = tempfile::tempdir().unwrap();
        let lent = Arc::new(testing::server_access(dir.path(), Some(access())));
        for (run, principal) in [
            (Run::lifecycle(), Principal::Lifecycle),
            (Run::hook(), Principal::Hooks),
        ] {
            let run = run.granted("database").lend(lent.clone());
            let database = run
                .state()
                .database(&Capability::DATABASE, "database.query")
                .unwrap_or_else(|_| panic!("the {principal:?} run reaches its database"));
            assert_eq!(database.principal(), principal);
        }
    }

    #[test]
    fn database_errors_map_to_the_error_a_plugin_can_act_on() {
        let map = |err: DbError| match db_fault(err) {
            Fault::Guest(err) => (err.kind(), err.message().to_string()),
            Fault::Trap(trap) => panic!("a database error must not trap: {trap:#}"),
        };
        assert_eq!(
            map(DbError::Refused("outside".into())),
            ("denied", "outside".into())
        );
        assert_eq!(map(DbError::Invalid("syntax".into())).0, "invalid");
        assert_eq!(map(DbError::NotFound("no db".into())).0, "not-found");
        assert_eq!(map(DbError::Failed("psql".into())).0, "failed");
    }
}
