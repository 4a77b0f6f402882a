//! PostgreSQL of one environment: SQL through an SSH tunnel, dumps and restores streamed through the
//! database's container.
//!
//! - SQL goes over a `direct-tcpip` channel from the server to the database's address (on the
//!   environment's Docker network), with tokio-postgres. Values are always bound parameters, typed
//!   by what the server expects; plugins never build SQL from strings of data.
//! - Databases are named inside the environment's name space (`<environment>` or
//!   `<environment>_<suffix>`); names outside it are refused, so one environment's plugin cannot
//!   create, drop or query another's database. Names are also quoted as identifiers.
//! - `pg_dump` / `pg_restore` / `psql` run inside the database's container (its client is as new as
//!   its server), their bytes streamed over SSH chunk by chunk: a dump of any size never sits in
//!   memory.

use std::sync::Arc;

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

#[derive(Clone)]
pub struct EnvDatabase {
    pool: Arc<SshPool>,
    target: Target,
    access: DbAccess,
    docker: EnvDocker,
}

impl EnvDatabase {
    pub fn new(pool: Arc<SshPool>, target: Target, access: DbAccess, docker: EnvDocker) -> Self {
        EnvDatabase {
            pool,
            target,
            access,
            docker,
        }
    }

    /// Refuses a database name outside the environment's name space.
    pub fn check_name(&self, name: &str) -> Result<(), DbError> {
        let env = &self.docker.scope().environment;
        let valid = name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        let ours = name == env
            || name
                .strip_prefix(env.as_str())
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

    async fn client(&self, db: &str) -> Result<tokio_postgres::Client, DbError> {
        let host = self.address().await?;
        let stream = self
            .pool
            .open_tcp(&self.target, &host, self.access.port)
            .await
            .map_err(|e| DbError::Failed(e.to_string()))?;
        let mut config = tokio_postgres::Config::new();
        config
            .user(&self.access.user)
            .password(&self.access.password)
            .dbname(db)
            .application_name("berth");
        let (client, connection) = config
            .connect_raw(stream, tokio_postgres::NoTls)
            .await
            .map_err(|e| sql_error(&format!("connecting to database {db}"), e))?;
        tokio::spawn(connection);
        Ok(client)
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

    /// The environment's databases.
    pub async fn list(&self) -> Result<Vec<String>, DbError> {
        let client = self.client("postgres").await?;
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

    /// Creates `name`, as a copy of `template` when given (`CREATE DATABASE … TEMPLATE`).
    pub async fn create(&self, name: &str, template: Option<&str>) -> Result<(), DbError> {
        self.check_name(name)?;
        let mut sql = format!("CREATE DATABASE {}", ident(name));
        if let Some(template) = template {
            self.check_name(template)?;
            sql.push_str(&format!(" TEMPLATE {}", ident(template)));
        }
        self.admin(&sql).await
    }

    pub async fn drop(&self, name: &str) -> Result<(), DbError> {
        self.check_name(name)?;
        self.admin(&format!("DROP DATABASE {} WITH (FORCE)", ident(name)))
            .await
    }

    pub async fn rename(&self, name: &str, new_name: &str) -> Result<(), DbError> {
        self.check_name(name)?;
        self.check_name(new_name)?;
        self.admin(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            ident(name),
            ident(new_name)
        ))
        .await
    }

    /// DDL on the maintenance database (identifiers checked and quoted by the caller).
    /// Creates a login role named within the environment's name space, allowed to create databases
    /// (Odoo creates its own on `-i base`); an existing role gets the password again.
    pub async fn create_role(&self, name: &str, password: &str) -> Result<(), DbError> {
        self.check_name(name)?;
        let attributes = format!("LOGIN CREATEDB PASSWORD {}", literal(password));
        match self
            .admin(&format!("CREATE ROLE {} {attributes}", ident(name)))
            .await
        {
            Err(DbError::Failed(m)) if m.contains("(42710)") => {
                self.admin(&format!("ALTER ROLE {} {attributes}", ident(name)))
                    .await
            }
            other => other,
        }
    }

    pub async fn drop_role(&self, name: &str) -> Result<(), DbError> {
        self.check_name(name)?;
        self.admin(&format!("DROP ROLE {}", ident(name))).await
    }

    /// Retried briefly while a template database still has a closing connection (55006), as after
    /// a query that just finished. Errors name the statement by its first two words only: a
    /// statement may carry a password.
    async fn admin(&self, sql: &str) -> Result<(), DbError> {
        let what = sql.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let client = self.client("postgres").await?;
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
        let argv: Vec<String> = [
            "pg_dump",
            "--no-owner",
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

    /// Restores `data` into the existing database `db`, as the database's owner: what the dump
    /// creates belongs to the role that owns the database (Odoo's role), as Odoo's own restore
    /// would have it, whatever role Berth connects as.
    pub async fn restore(
        &self,
        db: &str,
        format: DumpFormat,
        data: crate::Source<'_>,
    ) -> Result<(), DbError> {
        self.check_name(db)?;
        let user = self.access.user.clone();
        let (_, owner) = self
            .query(
                db,
                "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
                &[Value::Text(db.to_string())],
            )
            .await?;
        let owner = match owner.first().and_then(|row| row.first()) {
            Some(Value::Text(owner)) => owner.clone(),
            _ => return Err(DbError::NotFound(format!("database {db:?}"))),
        };
        let mut argv: Vec<String> = Vec::new();
        if owner != user {
            // Only `[a-z0-9_-]` names are owners Berth creates; anything else is not passed on.
            if !owner
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(DbError::Invalid(format!(
                    "database {db:?} is owned by {owner:?}, not a role Berth restores as"
                )));
            }
            argv.extend(["env".into(), format!("PGOPTIONS=-c role={owner}")]);
        }
        argv.extend(match format {
            DumpFormat::Custom => vec![
                "pg_restore".into(),
                "--no-owner".into(),
                "--exit-on-error".into(),
                "-U".into(),
                user,
                "-d".into(),
                db.into(),
            ],
            DumpFormat::Plain => vec![
                "psql".into(),
                "-v".into(),
                "ON_ERROR_STOP=1".into(),
                "-q".into(),
                "-U".into(),
                user,
                "-d".into(),
                db.into(),
            ],
        });
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
                "restore into {db} exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
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
