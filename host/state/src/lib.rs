//! Berth's state store: organizations, servers, projects, environments, repositories, plugins and
//! grants, and the runs, steps, events and audit entries of every operation.
//!
//! It is SQLite embedded in the control plane, so a Berth install needs no database to be set up
//! first: one file (mode 0600: it holds generated passwords) is the whole state. The file runs in
//! WAL mode so readers never wait for the writer. There is one writer: a [`Store`] is a single
//! connection behind a mutex, every write is one `IMMEDIATE` transaction (it takes SQLite's write
//! lock up front, so it cannot fail half-way on a lock upgrade), and invariants that must hold
//! under concurrency (one active run per environment, unique names, organization ownership) are
//! constraints in the schema, not only checks in this code.
//!
//! The schema lives in `migrations/NNNN_name.sql`, embedded in the binary and applied in order
//! inside one transaction; `PRAGMA user_version` records how many have been applied. Times are
//! Unix milliseconds. Public types are plain serde structs: the HTTP API returns them as JSON.

mod backups;
mod environments;
mod events;
mod orgs;
mod plugins;
mod queue;
mod repositories;
mod runs;
mod seal;

pub use backups::{Backup, BackupPolicy, NewBackup, NewStorageTarget, StorageTarget};
pub use environments::{
    Environment, EnvironmentPatch, FIXED_SETTINGS, NewEnvironment, SETTINGS_NEEDING_REDEPLOY,
    STAGES, SettingsChange,
};
pub use events::{AuditEntry, Event, EventKind, NewEvent, Pruned, Retention};
pub use orgs::{NewServer, Organization, Project, Server, TokenInfo};
pub use plugins::{
    Grant, GrantRequest, GrantRequestStatus, NewGrant, NewGrantRequest, NewPlugin, PluginRecord,
    UPLOAD_WINDOW_MS, UploadQuota, UploadWindow,
};
pub use queue::{NewRun, Queued, RunLimits};
pub use repositories::{NewRepository, Repository, RepositoryLevel};
pub use runs::{Run, RunStatus, Step, StepStatus};

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, Params, Row, TransactionBehavior, ffi};

/// The schema, in the order it is applied. Entry `i` brings the file to `user_version = i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_backups.sql"),
    include_str!("../migrations/0003_webhook_deliveries.sql"),
    include_str!("../migrations/0004_operator.sql"),
    include_str!("../migrations/0005_token_lifetimes.sql"),
    include_str!("../migrations/0006_run_queue.sql"),
    include_str!("../migrations/0007_grant_requests.sql"),
    include_str!("../migrations/0008_host_keys.sql"),
];

/// The columns that hold secrets, sealed at rest (table, column).
const SEALED_COLUMNS: [(&str, &str); 3] = [
    ("environment_secrets", "value"),
    ("storage_targets", "secret"),
    ("environments", "webhook_secret"),
];

/// The schema version of a state file this Berth wrote: one per migration.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a statement waits for another process holding the write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The thing asked for does not exist (or belongs to another organization).
    #[error("not found: {0}")]
    NotFound(String),
    /// It would duplicate something unique, such as a name.
    #[error("already exists: {0}")]
    Conflict(String),
    /// The input breaks a rule (a name's shape, a level/owner combination, a status change).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The environment already has a run queued or running.
    #[error("busy: run {run_id} in progress")]
    Busy { run_id: i64 },
    /// The state file could not be created.
    #[error("cannot create state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite failed in a way that is not one of the above.
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// The state store. Cheap to share behind an `Arc`; every method locks the one connection.
pub struct Store {
    conn: Mutex<Connection>,
    /// Seals secrets before they are written (see `seal`).
    sealer: std::sync::RwLock<seal::Sealer>,
    /// Where the sealing key lives (none for an in-memory store).
    key_path: Option<PathBuf>,
}

impl Store {
    /// Opens the state file at `path`, creating it (mode 0600) if missing, and brings its schema
    /// up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref();
        // Create the file ourselves so it is never readable by others, not even for a moment;
        // SQLite gives its -wal and -shm files the same mode.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| StateError::Io {
                path: path.to_owned(),
                source,
            })?;
        let conn = Connection::open(path)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        })?;
        // The key that seals the secrets lives beside the database, never in it.
        let key_path = path.with_extension("key");
        let sealer = seal::Sealer::load(&key_path)?;
        Store::prepare(conn, sealer, Some(key_path))
    }

    /// A private in-memory store, for tests.
    pub fn memory() -> Result<Store> {
        Store::prepare(
            Connection::open_in_memory()?,
            seal::Sealer::ephemeral(),
            None,
        )
    }

    fn prepare(
        mut conn: Connection,
        sealer: seal::Sealer,
        key_path: Option<PathBuf>,
    ) -> Result<Store> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrate(&mut conn)?;
        let rotating = sealer.rotating();
        let store = Store {
            conn: Mutex::new(conn),
            sealer: std::sync::RwLock::new(sealer),
            key_path,
        };
        // Secrets from before sealing, or every secret when a rotation was cut short.
        store.reseal(rotating)?;
        if rotating {
            store.finish_rotation()?;
        }
        Ok(store)
    }

    /// Replaces the key that seals the secrets: every secret is resealed with a new key in one
    /// transaction, then the new key file replaces the old (see `seal`). Run it with the control
    /// plane stopped; an interrupted rotation completes when the store next opens.
    pub fn rotate_key(&self) -> Result<()> {
        let path = self.key_path.as_ref().ok_or_else(|| {
            StateError::Invalid("an in-memory store has no key file to rotate".into())
        })?;
        self.sealer_mut().begin_rotation(path)?;
        self.reseal(true)?;
        self.finish_rotation()
    }

    fn finish_rotation(&self) -> Result<()> {
        match &self.key_path {
            Some(path) => self.sealer_mut().finish_rotation(path),
            None => Ok(()),
        }
    }

    fn sealer_mut(&self) -> std::sync::RwLockWriteGuard<'_, seal::Sealer> {
        self.sealer.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seals, in one transaction, the secrets written before sealing existed — or, with `all`,
    /// every secret again with the sealing key.
    fn reseal(&self, all: bool) -> Result<()> {
        self.write(|conn| {
            for (table, column) in SEALED_COLUMNS {
                let values: Vec<String> = {
                    let mut stmt = conn.prepare(&format!("SELECT {column} FROM {table}"))?;
                    let rows = stmt.query_map([], |row| row.get(0))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                // By value: sealed values are unique (a fresh nonce each), and rows holding the
                // same value from before sealing all take one sealed value.
                let update = format!("UPDATE {table} SET {column} = ?1 WHERE {column} = ?2");
                for value in values {
                    if all || !seal::Sealer::is_sealed(&value) {
                        let sealed = self.seal(&self.unseal(&value)?);
                        conn.execute(&update, rusqlite::params![sealed, value])?;
                    }
                }
            }
            Ok(())
        })
    }

    /// A secret as it is written to the database.
    pub(crate) fn seal(&self, plain: &str) -> String {
        self.sealer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .seal(plain)
    }

    /// A secret as it was written, opened.
    pub(crate) fn unseal(&self, stored: &str) -> Result<String> {
        self.sealer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .open(stored)
    }

    /// How many migrations the open file has applied.
    pub fn schema_version(&self) -> Result<u32> {
        self.read(|conn| Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled back its transaction: the connection is sound.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` against the connection, for reads.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.lock())
    }

    /// Runs `f` in one `IMMEDIATE` transaction, committed if `f` succeeds.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let applied: u32 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let known = MIGRATIONS.len();
    if applied as usize > known {
        return Err(StateError::Invalid(format!(
            "the state file has schema version {applied}, newer than this Berth knows ({known})"
        )));
    }
    for (version, sql) in (1u32..).zip(MIGRATIONS).skip(applied as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
    }
    tx.commit()?;
    Ok(())
}

/// A type read from one row of a `SELECT`.
trait Record: Sized {
    /// The select list and `FROM` clause, e.g. `"id, name FROM organizations"`.
    const SELECT: &'static str;
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self>;
}

/// `SELECT <T's columns> <tail>`, expecting exactly one row; `tail` is constant SQL (`WHERE …`).
fn one<T: Record>(conn: &Connection, tail: &str, params: impl Params) -> rusqlite::Result<T> {
    conn.prepare_cached(&format!("SELECT {} {tail}", T::SELECT))?
        .query_row(params, T::from_row)
}

/// `SELECT <T's columns> <tail>`, every row.
fn all<T: Record>(conn: &Connection, tail: &str, params: impl Params) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {} {tail}", T::SELECT))?;
    Ok(stmt
        .query_map(params, T::from_row)?
        .collect::<rusqlite::Result<_>>()?)
}

/// Executes `sql`, an `INSERT` of one row into `T`'s table, and reads that row back by its rowid
/// (`id`). The error is SQLite's, for the caller to refine (`.unique(…)`, `.owner(…)`).
fn insert_returning<T: Record>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> rusqlite::Result<T> {
    conn.execute(sql, params)?;
    one(conn, "WHERE id = ?1", [conn.last_insert_rowid()])
}

/// Executes `sql`, an `UPDATE` or `DELETE` of a row that must exist: `NotFound(what)` unless it
/// changed a row.
fn touch(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    what: impl FnOnce() -> String,
) -> Result<()> {
    if conn.execute(sql, params)? == 0 {
        Err(StateError::NotFound(what()))
    } else {
        Ok(())
    }
}

/// Turns SQLite's generic failures into the precise [`StateError`] the caller means.
trait SqlResultExt<T> {
    /// No row → `NotFound(what)`.
    fn found(self, what: impl FnOnce() -> String) -> Result<T>;
    /// A UNIQUE or PRIMARY KEY violation → `Conflict(what)`.
    fn unique(self, what: impl FnOnce() -> String) -> Result<T>;
    /// A FOREIGN KEY violation (the row it refers to is missing) → `NotFound(what)`.
    fn owner(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SqlResultExt<T> for rusqlite::Result<T> {
    fn found(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| match err {
            rusqlite::Error::QueryReturnedNoRows => StateError::NotFound(what()),
            err => err.into(),
        })
    }

    fn unique(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| {
            if is_unique_violation(&err) {
                StateError::Conflict(what())
            } else {
                err.into()
            }
        })
    }

    fn owner(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| match extended_code(&err) {
            Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => StateError::NotFound(what()),
            _ => err.into(),
        })
    }
}

fn extended_code(err: &rusqlite::Error) -> Option<i32> {
    err.sqlite_error().map(|e| e.extended_code)
}

/// Whether `err` is a UNIQUE or PRIMARY KEY constraint violation.
fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        extended_code(err),
        Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
}

/// The shape of every name that ends up in a path, a container or a database on a server
/// (organizations, projects, environments, repositories): 1 to [`NAME_MAX`] lowercase letters, digits
/// and '-', starting with a letter. No dots, slashes or spaces, so names compose unambiguously.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let shaped = name.len() <= NAME_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if shaped {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "{kind} name {name:?}: use 1 to {NAME_MAX} lowercase letters, digits and '-', \
             starting with a letter"
        )))
    }
}

/// Longest name of an organization, project, environment or repository.
pub const NAME_MAX: usize = 40;

/// Rejects an empty (or all-blank) name.
fn require(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        Err(StateError::Invalid(format!("{field} must not be empty")))
    } else {
        Ok(())
    }
}

/// Now, in Unix milliseconds (the state's time unit).
pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// `bytes` random bytes from the operating system, as lowercase hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0; bytes];
    // Without the OS generator no secret can be made safely; there is nothing to fall back to.
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    hex::encode(buf)
}

/// Reads a JSON text column.
fn json_column(row: &Row<'_>, index: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, err.into())
    })
}

/// A closed set of words stored as TEXT and serialised as the same lowercase string.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// The word stored and serialised for this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::StateError;
            fn from_str(text: &str) -> $crate::Result<Self> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err($crate::StateError::Invalid(format!(
                        concat!("unknown ", stringify!($name), " {:?}"),
                        other
                    ))),
                }
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|err: $crate::StateError| rusqlite::types::FromSqlError::Other(err.into()))
            }
        }
    };
}
pub(crate) use text_enum;
