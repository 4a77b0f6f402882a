//! PostgreSQL of one environment: SQL through an SSH tunnel, dumps and restores streamed through the
//! database's container.
//!
//! - SQL goes over a `direct-tcpip` channel from the server to the database's address (on the
//!   environment's Docker network), with tokio-postgres. Values are always bound parameters, typed
//!   by what the server expects; plugins never build SQL from strings of data.
//! - Databases and roles are named inside the environment's name space (`<environment>` or
//!   `<environment>_<suffix>`); names outside it are refused, so one environment's plugin cannot
//!   create, drop or query another's database. Names are also quoted as identifiers.
//! - **No plugin's SQL runs as the superuser.** The superuser is the host's own connection, for the
//!   statements the host writes itself from checked names: databases and roles of the name space,
//!   the list of databases, the ownership around a restore. A plugin's statements run as its
//!   [`Principal`]: the lifecycle as the environment's own role (Odoo's, which owns its databases),
//!   every other plugin as a role that may read and write the environment's tables and nothing
//!   more. A restore runs the dump as a role that owns its target for the restore's length and
//!   nothing else. These login roles are the host's (`<environment>_lifecycle`, `_hooks`,
//!   `_restorer`: no plugin creates or drops them); their passwords are derived from the
//!   superuser's, never stored nor shown to a plugin, and a role is made again whenever logging in
//!   as it fails.
//! - `pg_dump` / `pg_restore` run inside the database's container (its client is as new as its
//!   server), their bytes streamed over SSH chunk by chunk: a dump of any size never sits in
//!   memory. A plain dump is not given to `psql`, whose own commands (`\connect`, `\!`) would run
//!   too: [`script`] sends its SQL over the wire.

mod script;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

use crate::docker::{DockerError, EnvDocker};
use crate::ssh::{SshPool, Target};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

impl From<DockerError> for DbError {
    fn from(err: DockerError) -> Self {
        match err {
            DockerError::NotFound(m) => DbError::NotFound(m),
            DockerError::Invalid(m) => DbError::Invalid(m),
            DockerError::Refused(m) => DbError::Refused(m),
            DockerError::Failed(m) => DbError::Failed(m),
        }
    }
}

fn sql_error(what: &str, err: tokio_postgres::Error) -> DbError {
    match err.as_db_error() {
        Some(db) => DbError::Failed(format!("{what}: {} ({})", db.message(), db.code().code())),
        None => DbError::Failed(format!("{what}: {err}")),
    }
}

/// A bound parameter or a column value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Json(String),
}

/// How to reach the environment's PostgreSQL.
#[derive(Clone, Debug)]
pub struct DbAccess {
    /// Its address as seen from the server (on the environment's network); empty to look up its
    /// container's address when connecting.
    pub host: String,
    pub port: u16,
    /// The superuser: the host's own connection (administration, dumps), never a plugin's SQL.
    /// The passwords of the host's login roles are derived from its password.
    pub user: String,
    pub password: String,
    /// Its container in the environment (for dump and restore).
    pub container: String,
}

/// Formats of dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpFormat {
    /// `pg_dump --format=c`
    Custom,
    /// plain SQL
    Plain,
}

/// Whose statements a connection carries (never the superuser's); the caller says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The run's lifecycle plugin: the environment's own role (named like the environment; Odoo's,
    /// owner of its databases), through the login role `<environment>_lifecycle`, a member of it
    /// that takes it on at login. Setting the role back leaves a role with no more rights.
    Lifecycle,
    /// Any other plugin: the login role `<environment>_hooks`, a member of no role, which may read
    /// and write the tables and sequences of the environment's databases (granted as it connects
    /// to one that lacks them) — no role to become, no database or role to create.
    Hooks,
}

/// The host's login roles in an environment's name space, by suffix.
const LIFECYCLE: &str = "lifecycle";
const HOOKS: &str = "hooks";
const RESTORER: &str = "restorer";
const HOST_ROLES: [&str; 3] = [LIFECYCLE, HOOKS, RESTORER];

/// A role is confined when neither it nor any role it belongs to is a superuser, may create roles
/// (and so grant itself into `pg_execute_server_program`), or reaches the server's files and
/// programs. `$1`: the role; no row when it does not exist.
const CONFINED: &str = "SELECT NOT EXISTS (SELECT 1 FROM pg_roles r \
     WHERE pg_has_role(e.oid, r.oid, 'MEMBER') AND (r.rolsuper OR r.rolcreaterole \
     OR r.rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files'))) \
     FROM pg_roles e WHERE e.rolname = $1";

/// On the hooks' own connection: whether a table, view or sequence of `public` (or the schema
/// itself) is out of its reach.
const HOOKS_LACK: &str = "SELECT EXISTS (SELECT 1 FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' \
     AND ((c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT has_table_privilege(c.oid, 'SELECT')) \
     OR (c.relkind = 'S' AND NOT has_sequence_privilege(c.oid, 'USAGE')))) \
     OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public' \
     AND NOT has_schema_privilege(oid, 'USAGE'))";

#[derive(Clone)]
pub struct EnvDatabase {
    pool: Arc<SshPool>,
    target: Target,
    access: DbAccess,
    docker: EnvDocker,
    principal: Principal,
}

impl EnvDatabase {
    /// The environment's database, whose SQL runs as [`Principal::Hooks`] unless
    /// [`acting_as`](Self::acting_as) says otherwise.
    pub fn new(pool: Arc<SshPool>, target: Target, access: DbAccess, docker: EnvDocker) -> Self {
        EnvDatabase {
            pool,
            target,
            access,
            docker,
            principal: Principal::Hooks,
        }
    }

    /// The same database, its SQL run as `principal`.
    pub fn acting_as(mut self, principal: Principal) -> Self {
        self.principal = principal;
        self
    }

    pub fn principal(&self) -> Principal {
        self.principal
    }

    fn environment(&self) -> &str {
        &self.docker.scope().environment
    }

    /// One of the host's login roles of the environment (`<environment>_<suffix>`).
    fn host_role(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.environment())
    }

    /// Refuses a database name outside the environment's name space.
    pub fn check_name(&self, name: &str) -> Result<(), DbError> {
        let env = self.environment();
        let valid = name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        let ours = name == env
            || name
                .strip_prefix(env)
                .is_some_and(|rest| rest.starts_with('_'));
        if !valid {
            return Err(DbError::Invalid(format!(
                "{name:?} is not a valid database name"
            )));
        }
        if !ours {
            return Err(DbError::Refused(format!(
                "database {name:?} is outside the environment's name space ({env} or {env}_<suffix>)"
            )));
        }
        Ok(())
    }

    /// Refuses a role name outside the name space, or one of the host's own roles.
    fn check_role_name(&self, name: &str) -> Result<(), DbError> {
        self.check_name(name)?;
        if HOST_ROLES
            .iter()
            .any(|suffix| name == self.host_role(suffix))
        {
            return Err(DbError::Refused(format!(
                "role {name:?} is one the host keeps for itself"
            )));
        }
        Ok(())
    }

    /// The password of one of the host's login roles: derived from the superuser's, so it needs
    /// storing nowhere and no plugin can tell it.
    fn role_password(&self, role: &str) -> Result<String, DbError> {
        if self.access.password.is_empty() {
            return Err(DbError::Failed(
                "the environment's PostgreSQL has no superuser password to derive the host's \
                 roles' passwords from"
                    .into(),
            ));
        }
        let mut hash = Sha256::new();
        for part in ["berth role password", &self.access.password, role] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        Ok(hex::encode(hash.finalize()))
    }

    /// The database's address as the server sees it: the one configured, or — when none is (its
    /// container may have been created moments ago, in the same run) — its container's address
    /// on the environment's network.
    async fn address(&self) -> Result<String, DbError> {
        if !self.access.host.is_empty() {
            return Ok(self.access.host.clone());
        }
        let info = self.docker.inspect(&self.access.container).await?;
        info.addresses
            .into_iter()
            .map(|(_, address)| address)
            .find(|a| !a.is_empty())
            .ok_or_else(|| {
                DbError::Failed(format!(
                    "the database container {} has no network address (is it running?)",
                    self.access.container
                ))
            })
    }

    /// A connection to `db` as `user`, taking on `role` at login when given. The outer error is
    /// the tunnel's; the inner one, the server's answer.
    async fn login(
        &self,
        db: &str,
        user: &str,
        password: &str,
        role: Option<&str>,
    ) -> Result<Result<Client, tokio_postgres::Error>, DbError> {
        let host = self.address().await?;
        let stream = self
            .pool
            .open_tcp(&self.target, &host, self.access.port)
            .await
            .map_err(|e| DbError::Failed(e.to_string()))?;
        let mut config = tokio_postgres::Config::new();
        config
            .user(user)
            .password(password)
            .dbname(db)
            .application_name("berth");
        if let Some(role) = role {
            // Names are `[a-z0-9_-]`: nothing to escape in the options.
            config.options(format!("-c role={role}"));
        }
        Ok(
            match config.connect_raw(stream, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    Ok(client)
                }
                Err(e) => Err(e),
            },
        )
    }

    /// The host's own connection, as the superuser.
    async fn admin_client(&self, db: &str) -> Result<Client, DbError> {
        let (user, password) = (&self.access.user, &self.access.password);
        self.login(db, user, password, None)
            .await?
            .map_err(|e| sql_error(&format!("connecting to database {db}"), e))
    }

    /// A connection to `db` for the principal's statements.
    async fn client(&self, db: &str) -> Result<Client, DbError> {
        let env = self.environment();
        let (login, role, member_of) = match self.principal {
            Principal::Lifecycle => (self.host_role(LIFECYCLE), Some(env), Some(env)),
            Principal::Hooks => (self.host_role(HOOKS), None, None),
        };
        let password = self.role_password(&login)?;
        let client = match self.login(db, &login, &password, role).await? {
            Ok(client) => client,
            // Not made yet, or changed since (its password, its membership): made again, once.
            Err(_) => {
                self.ensure_role(&login, member_of).await?;
                self.login(db, &login, &password, role)
                    .await?
                    .map_err(|e| sql_error(&format!("connecting to database {db} as {login}"), e))?
            }
        };
        if self.principal == Principal::Hooks {
            self.grant_hooks(db, &client, &login).await?;
        }
        Ok(client)
    }

    /// Makes (or resets) one of the host's login roles: no attribute beyond logging in, its
    /// derived password, no settings of its own; a member of `member_of` when given, which must
    /// be confined.
    async fn ensure_role(&self, role: &str, member_of: Option<&str>) -> Result<(), DbError> {
        let admin = self.admin_client("postgres").await?;
        if let Some(owner) = member_of {
            self.require_confined(&admin, owner).await?;
        }
        let attributes = format!(
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
             CONNECTION LIMIT -1 PASSWORD {}",
            literal(&self.role_password(role)?)
        );
        self.upsert_role(&admin, role, &attributes).await?;
        let mut sql = format!("ALTER ROLE {} RESET ALL", ident(role));
        if let Some(owner) = member_of {
            sql.push_str(&format!("; GRANT {} TO {}", ident(owner), ident(role)));
        }
        admin
            .batch_execute(&sql)
            .await
            .map_err(|e| sql_error(&format!("preparing role {role}"), e))
    }

    /// `CREATE ROLE name attributes`, or `ALTER ROLE` when it exists — never of a role that is not
    /// confined (a superuser named like the environment stays untouched). Errors name the
    /// statement by its first two words only: the attributes carry a password.
    async fn upsert_role(
        &self,
        admin: &Client,
        name: &str,
        attributes: &str,
    ) -> Result<(), DbError> {
        let created = admin
            .batch_execute(&format!("CREATE ROLE {} {attributes}", ident(name)))
            .await;
        match created {
            Err(e) if e.code().is_some_and(|c| c.code() == "42710") => {
                self.require_confined(admin, name).await?;
                admin
                    .batch_execute(&format!("ALTER ROLE {} {attributes}", ident(name)))
                    .await
                    .map_err(|e| sql_error("ALTER ROLE", e))
            }
            other => other.map_err(|e| sql_error("CREATE ROLE", e)),
        }
    }

    /// Whether `role` exists and is confined (see [`CONFINED`]).
    async fn confined(&self, admin: &Client, role: &str) -> Result<Option<bool>, DbError> {
        let row = admin
            .query_opt(CONFINED, &[&role])
            .await
            .map_err(|e| sql_error(&format!("reading role {role}"), e))?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn require_confined(&self, admin: &Client, role: &str) -> Result<(), DbError> {
        match self.confined(admin, role).await? {
            Some(true) => Ok(()),
            Some(false) => Err(DbError::Refused(format!(
                "role {role} is a superuser, or can become one or reach the server's files: no \
                 plugin's SQL runs as it and Berth does not change it"
            ))),
            None => Err(DbError::NotFound(format!(
                "role {role} does not exist yet (the environment's role is made by its lifecycle, \
                 e.g. with create-role)"
            ))),
        }
    }

    /// Gives the hooks' role what it lacks in `db` (tables made or restored since): found on its
    /// own connection, granted by the superuser, with the same for what the environment's role
    /// creates later.
    async fn grant_hooks(&self, db: &str, client: &Client, hooks: &str) -> Result<(), DbError> {
        let lacks: bool = client
            .query_one(HOOKS_LACK, &[])
            .await
            .map_err(|e| sql_error(&format!("reading the privileges of {hooks}"), e))?
            .get(0);
        if !lacks {
            return Ok(());
        }
        let admin = self.admin_client(db).await?;
        let hooks = ident(hooks);
        let (tables, sequences) = ("SELECT, INSERT, UPDATE, DELETE", "USAGE, SELECT, UPDATE");
        let mut sql = format!(
            "GRANT USAGE ON SCHEMA public TO {hooks}; \
             GRANT {tables} ON ALL TABLES IN SCHEMA public TO {hooks}; \
             GRANT {sequences} ON ALL SEQUENCES IN SCHEMA public TO {hooks}"
        );
        let env = self.environment();
        if self.confined(&admin, env).await? == Some(true) {
            let defaults = format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public",
                ident(env)
            );
            sql.push_str(&format!(
                "; {defaults} GRANT {tables} ON TABLES TO {hooks}; \
                 {defaults} GRANT {sequences} ON SEQUENCES TO {hooks}"
            ));
        }
        admin
            .batch_execute(&sql)
            .await
            .map_err(|e| sql_error(&format!("granting the hooks' role its tables in {db}"), e))
    }

    /// Runs a query with bound parameters; returns the column names and rows.
    pub async fn query(
        &self,
        db: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<(Vec<String>, Vec<Vec<Value>>), DbError> {
        self.check_name(db)?;
        let client = self.client(db).await?;
        let statement = client
            .prepare(sql)
            .await
            .map_err(|e| sql_error("preparing the query", e))?;
        let bound = bind(statement.params(), params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b.as_ref() as _).collect();
        let rows = client
            .query(&statement, &refs)
            .await
            .map_err(|e| sql_error("running the query", e))?;
        let columns = statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let rows = rows.iter().map(row_values).collect::<Result<_, _>>()?;
        Ok((columns, rows))
    }

    /// Runs a statement with bound parameters; returns the number of rows affected.
    pub async fn execute(&self, db: &str, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        Ok(self
            .transaction(db, &[(sql.to_string(), params.to_vec())])
            .await?[0])
    }

    /// Runs the statements in one transaction: all or nothing.
    pub async fn transaction(
        &self,
        db: &str,
        statements: &[(String, Vec<Value>)],
    ) -> Result<Vec<u64>, DbError> {
        self.check_name(db)?;
        let mut client = self.client(db).await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| sql_error("BEGIN", e))?;
        let mut counts = Vec::new();
        for (i, (sql, params)) in statements.iter().enumerate() {
            let what = format!("statement {}", i + 1);
            let statement = tx.prepare(sql).await.map_err(|e| sql_error(&what, e))?;
            let bound = bind(statement.params(), params)?;
            let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b.as_ref() as _).collect();
            counts.push(
                tx.execute(&statement, &refs)
                    .await
                    .map_err(|e| sql_error(&what, e))?,
            );
        }
        tx.commit().await.map_err(|e| sql_error("COMMIT", e))?;
        Ok(counts)
    }

    /// The environment's databases (the host's own catalog query).
    pub async fn list(&self) -> Result<Vec<String>, DbError> {
        let client = self.admin_client("postgres").await?;
        let rows = client
            .query(
                "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname",
                &[],
            )
            .await
            .map_err(|e| sql_error("listing databases", e))?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|name| self.check_name(name).is_ok())
            .collect())
    }

    /// Creates `name`, as a copy of `template` when given (`CREATE DATABASE … TEMPLATE`), owned by
    /// the environment's role (which must exist, and be confined).
    pub async fn create(&self, name: &str, template: Option<&str>) -> Result<(), DbError> {
        self.check_name(name)?;
        let mut sql = format!("CREATE DATABASE {}", ident(name));
        if let Some(template) = template {
            self.check_name(template)?;
            sql.push_str(&format!(" TEMPLATE {}", ident(template)));
        }
        let admin = self.admin_client("postgres").await?;
        let env = self.environment();
        self.require_confined(&admin, env).await?;
        sql.push_str(&format!(" OWNER {}", ident(env)));
        self.admin(&admin, &sql).await
    }

    pub async fn drop(&self, name: &str) -> Result<(), DbError> {
        self.check_name(name)?;
        let admin = self.admin_client("postgres").await?;
        self.admin(
            &admin,
            &format!("DROP DATABASE {} WITH (FORCE)", ident(name)),
        )
        .await
    }

    pub async fn rename(&self, name: &str, new_name: &str) -> Result<(), DbError> {
        self.check_name(name)?;
        self.check_name(new_name)?;
        let admin = self.admin_client("postgres").await?;
        let sql = format!(
            "ALTER DATABASE {} RENAME TO {}",
            ident(name),
            ident(new_name)
        );
        self.admin(&admin, &sql).await
    }

    /// Creates a login role named within the environment's name space, allowed to create databases
    /// (Odoo creates its own on `-i base`); an existing role gets the password again.
    pub async fn create_role(&self, name: &str, password: &str) -> Result<(), DbError> {
        self.check_role_name(name)?;
        let admin = self.admin_client("postgres").await?;
        let attributes = format!("LOGIN CREATEDB PASSWORD {}", literal(password));
        self.upsert_role(&admin, name, &attributes).await
    }

    pub async fn drop_role(&self, name: &str) -> Result<(), DbError> {
        self.check_role_name(name)?;
        let admin = self.admin_client("postgres").await?;
        // Only a confined role is dropped (a missing one: DROP ROLE says so).
        if self.confined(&admin, name).await?.is_some() {
            self.require_confined(&admin, name).await?;
        }
        self.admin(&admin, &format!("DROP ROLE {}", ident(name)))
            .await
    }

    /// DDL the host wrote from checked, quoted names, on its own connection. Retried briefly while
    /// a template database still has a closing connection (55006), as after a query that just
    /// finished.
    async fn admin(&self, client: &Client, sql: &str) -> Result<(), DbError> {
        let what = sql.split(' ').take(2).collect::<Vec<_>>().join(" ");
        for attempt in 0.. {
            match client.batch_execute(sql).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 20 && e.code().is_some_and(|c| c.code() == "55006") => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(sql_error(&what, e)),
            }
        }
        unreachable!("the loop returns")
    }

    /// Streams a dump of `db` into `sink`, chunk by chunk. Returns the bytes written.
    pub async fn dump(
        &self,
        db: &str,
        format: DumpFormat,
        sink: crate::Sink<'_>,
    ) -> Result<u64, DbError> {
        self.check_name(db)?;
        let format_arg = match format {
            DumpFormat::Custom => "--format=c",
            DumpFormat::Plain => "--format=p",
        };
        // Owners and privileges are the environment's, not the data's (the host grants its own
        // roles what they need): a dump restores anywhere.
        let argv: Vec<String> = [
            "pg_dump",
            "--no-owner",
            "--no-privileges",
            format_arg,
            "-U",
            &self.access.user,
            "-d",
            db,
        ]
        .map(String::from)
        .to_vec();
        let mut counted = Counted {
            inner: sink,
            count: 0,
        };
        let output = self
            .docker
            .exec_io(
                &self.access.container,
                &argv,
                Some("postgres"),
                None,
                Some(&mut counted),
                &mut |_, _| {},
            )
            .await
            .map_err(|e| DbError::Failed(format!("dump of {db}: {e}")))?;
        let total = counted.count;
        if output.status != 0 {
            return Err(DbError::Failed(format!(
                "pg_dump of {db} exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(total)
    }

    /// Restores `data` into the existing database `db`: the lifecycle's only, for a dump is SQL
    /// from outside. It runs as `<environment>_restorer`, which owns `db` for the restore's length
    /// and nothing else — so a dump reaches neither the environment's other databases nor its
    /// role, nor a program; a plain dump is sent as SQL ([`script`]), a custom one given to
    /// `pg_restore`. Whatever the outcome, what the dump created then belongs to the database's
    /// owner (which must be confined), and the database's settings are as before it.
    pub async fn restore(
        &self,
        db: &str,
        format: DumpFormat,
        data: crate::Source<'_>,
    ) -> Result<(), DbError> {
        self.check_name(db)?;
        if self.principal != Principal::Lifecycle {
            return Err(DbError::Refused(format!(
                "a restore into {db} runs a dump's SQL: only the run's lifecycle plugin restores"
            )));
        }
        let restorer = self.host_role(RESTORER);
        let admin = self.admin_client("postgres").await?;
        let owner = self.owner(&admin, db, &restorer).await?;
        self.ensure_role(&restorer, None).await?;
        self.admin(
            &admin,
            &format!("ALTER DATABASE {} OWNER TO {}", ident(db), ident(&restorer)),
        )
        .await?;
        let ran = match format {
            DumpFormat::Custom => self.pg_restore(db, &restorer, data).await,
            DumpFormat::Plain => {
                let password = self.role_password(&restorer)?;
                match self.login(db, &restorer, &password, None).await? {
                    Ok(client) => script::run(&client, data).await,
                    Err(e) => Err(sql_error(&format!("connecting as {restorer}"), e)),
                }
            }
        };
        let handed = self.hand_back(&admin, db, &restorer, &owner).await;
        match (ran, handed) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) => Err(DbError::Failed(format!("restore into {db}: {e}"))),
            (Ok(()), Err(back)) => Err(DbError::Failed(format!(
                "restore into {db}: restored, but handing it back to {owner} failed: {back}"
            ))),
            (Err(e), Err(back)) => Err(DbError::Failed(format!(
                "restore into {db}: {e}; and handing it back to {owner} failed: {back}"
            ))),
        }
    }

    /// The owner `db` goes back to after a restore: its owner now (the environment's role if a
    /// restore was cut short), which must be confined — it will own what the dump created.
    async fn owner(&self, admin: &Client, db: &str, restorer: &str) -> Result<String, DbError> {
        let row = admin
            .query_opt(
                "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
                &[&db],
            )
            .await
            .map_err(|e| sql_error(&format!("reading the owner of {db}"), e))?;
        let Some(row) = row else {
            return Err(DbError::NotFound(format!("database {db:?}")));
        };
        let mut owner: String = row.get(0);
        if owner == restorer {
            owner = self.environment().to_string();
        }
        if self.confined(admin, &owner).await? != Some(true) {
            return Err(DbError::Refused(format!(
                "database {db} belongs to {owner}, which is not a confined role: what a restore \
                 creates would be its"
            )));
        }
        Ok(owner)
    }

    /// `pg_restore` in the database's container, logged in as `role` over the container's socket.
    async fn pg_restore(
        &self,
        db: &str,
        role: &str,
        data: crate::Source<'_>,
    ) -> Result<(), DbError> {
        let argv: Vec<String> = [
            "pg_restore",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "-U",
            role,
            "-d",
            db,
        ]
        .map(String::from)
        .to_vec();
        let output = self
            .docker
            .exec_io(
                &self.access.container,
                &argv,
                Some("postgres"),
                Some(data),
                None,
                &mut |_, _| {},
            )
            .await?;
        if output.status != 0 {
            return Err(DbError::Failed(format!(
                "pg_restore exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    /// After a restore: `db` usable again with none of the settings a dump may have given it,
    /// and what the restorer owned there (the database included) its owner's.
    async fn hand_back(
        &self,
        admin: &Client,
        db: &str,
        restorer: &str,
        owner: &str,
    ) -> Result<(), DbError> {
        let (db_, restorer, owner) = (ident(db), ident(restorer), ident(owner));
        self.admin(
            admin,
            &format!(
                "ALTER DATABASE {db_} WITH ALLOW_CONNECTIONS true CONNECTION LIMIT -1 \
                 IS_TEMPLATE false; ALTER DATABASE {db_} RESET ALL"
            ),
        )
        .await?;
        let inside = self.admin_client(db).await?;
        self.admin(
            &inside,
            &format!(
                "REASSIGN OWNED BY {restorer} TO {owner}; DROP OWNED BY {restorer}; \
                 ALTER DATABASE {db_} OWNER TO {owner}"
            ),
        )
        .await
    }
}

/// Counts what passes through to the sink it wraps.
struct Counted<'a> {
    inner: crate::Sink<'a>,
    count: u64,
}

impl tokio::io::AsyncWrite for Counted<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = polled {
            self.count += n as u64;
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// Quotes an identifier (names are already restricted to `[a-z0-9_-]`).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for DDL, where parameters cannot be bound (standard conforming strings:
/// only the quote needs doubling; NUL cannot occur in a Rust string sent to PostgreSQL).
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Converts values to what each parameter's type expects.
fn bind(types: &[Type], values: &[Value]) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, DbError> {
    if types.len() != values.len() {
        return Err(DbError::Invalid(format!(
            "the statement takes {} parameters, {} were given",
            types.len(),
            values.len()
        )));
    }
    let mismatch = |i: usize, v: &Value, t: &Type| {
        DbError::Invalid(format!("parameter ${}: {v:?} does not fit type {t}", i + 1))
    };
    types
        .iter()
        .zip(values)
        .enumerate()
        .map(
            |(i, (ty, value))| -> Result<Box<dyn ToSql + Sync + Send>, DbError> {
                Ok(match (value, ty) {
                    (Value::Null, _) => Box::new(Option::<String>::None),
                    (Value::Bool(b), &Type::BOOL) => Box::new(*b),
                    (Value::Int(n), &Type::INT2) => {
                        Box::new(i16::try_from(*n).map_err(|_| mismatch(i, value, ty))?)
                    }
                    (Value::Int(n), &Type::INT4) => {
                        Box::new(i32::try_from(*n).map_err(|_| mismatch(i, value, ty))?)
                    }
                    (Value::Int(n), &Type::INT8) => Box::new(*n),
                    (Value::Float(f), &Type::FLOAT8) => Box::new(*f),
                    (Value::Float(f), &Type::FLOAT4) => Box::new(*f as f32),
                    (
                        Value::Text(s),
                        &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME,
                    ) => Box::new(s.clone()),
                    (Value::Bytes(b), &Type::BYTEA) => Box::new(b.clone()),
                    (Value::Json(j) | Value::Text(j), &Type::JSON | &Type::JSONB) => {
                        let parsed: serde_json::Value = serde_json::from_str(j)
                            .map_err(|e| DbError::Invalid(format!("parameter ${}: {e}", i + 1)))?;
                        Box::new(parsed)
                    }
                    _ => return Err(mismatch(i, value, ty)),
                })
            },
        )
        .collect()
}

fn row_values(row: &tokio_postgres::Row) -> Result<Vec<Value>, DbError> {
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            let get_err = |e: tokio_postgres::Error| DbError::Failed(format!("column {i}: {e}"));
            Ok(match *ty {
                Type::BOOL => row
                    .try_get::<_, Option<bool>>(i)
                    .map_err(get_err)?
                    .map(Value::Bool),
                Type::INT2 => row
                    .try_get::<_, Option<i16>>(i)
                    .map_err(get_err)?
                    .map(|v| Value::Int(v.into())),
                Type::INT4 => row
                    .try_get::<_, Option<i32>>(i)
                    .map_err(get_err)?
                    .map(|v| Value::Int(v.into())),
                Type::INT8 => row
                    .try_get::<_, Option<i64>>(i)
                    .map_err(get_err)?
                    .map(Value::Int),
                Type::FLOAT4 => row
                    .try_get::<_, Option<f32>>(i)
                    .map_err(get_err)?
                    .map(|v| Value::Float(v.into())),
                Type::FLOAT8 => row
                    .try_get::<_, Option<f64>>(i)
                    .map_err(get_err)?
                    .map(Value::Float),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
                    .try_get::<_, Option<String>>(i)
                    .map_err(get_err)?
                    .map(Value::Text),
                Type::BYTEA => row
                    .try_get::<_, Option<Vec<u8>>>(i)
                    .map_err(get_err)?
                    .map(Value::Bytes),
                Type::JSON | Type::JSONB => row
                    .try_get::<_, Option<serde_json::Value>>(i)
                    .map_err(get_err)?
                    .map(|v| Value::Json(v.to_string())),
                ref other => {
                    return Err(DbError::Invalid(format!(
                        "column {:?} has type {other}; cast it in SQL (e.g. ::text)",
                        row.columns()[i].name()
                    )));
                }
            }
            .unwrap_or(Value::Null))
        })
        .collect()
}
