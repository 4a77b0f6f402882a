//! `berth-sdk`: write Berth plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2`. It implements [`Plugin`] (what it
//! is) and one role trait ([`Hook`], [`Lifecycle`]), then exports itself with
//! [`export!`]. Everything it may do outside its sandbox goes through the host interfaces
//! re-exported here ([`files`], [`blobs`], [`secrets`], [`config`], [`ssh`], [`docker`],
//! [`database`], [`storage`], [`targets`], [`archive`], [`git`], [`operation`]), each checked against the plugin's grants by the host.
//!
//! A lifecycle plugin is asked for the steps of an [`Operation`] (the WIT's enum, which converts to
//! and from [`berth_contract::Operation`]), reads the run's typed [`RunInputs`] through
//! [`operation::inputs`], and declares with [`Description::conventions`] what the host prepares
//! for its runs.
//!
//! A complete hook plugin in twenty lines is `examples/hello-hook/src/lib.rs`.

#[doc(hidden)]
pub use wit_bindgen;

/// The export macro: `berth_sdk::export!(hook: MyPlugin)` or `berth_sdk::export!(lifecycle: MyPlugin)`.
pub use berth_sdk_macros::export;

/// The generated bindings of the contract's host interfaces (`berth:plugin@0.2.0`).
pub mod bindings {
    wit_bindgen::generate!({
        world: "berth:plugin/host",
        path: "../wit",
        generate_all,
    });
}

pub use bindings::berth::plugin::operation::{
    BackupInputs, Push, RecordedBackup, RestoreInputs, Retention, RunInputs,
};
pub use bindings::berth::plugin::types::{
    ArchiveInfo, ConfigKey, Conventions, DatabaseService, Description, Environment, Error, Event,
    NeutralizeRule, ObjectInfo, Operation, Role, RunInfo, Server, Stage, StepContext, StepOutcome,
    Verdict,
};
pub use bindings::berth::plugin::{
    archive, blobs, config, database, docker, files, git, operation, secrets, ssh, storage, targets,
};

/// What every plugin says about itself.
pub trait Plugin {
    fn describe() -> Description;
}

/// A hook plugin: answers events at step boundaries.
pub trait Hook: Plugin {
    fn handle(event: Event) -> Result<Verdict, Error>;
}

/// A storage-backend plugin: the provider logic of one family of storage targets (endpoints,
/// regions, addressing, layout) over the host's protocol clients. A backend says how to open a
/// target ([`StorageBackend::open`]); the five calls are the same for every backend. Objects travel
/// as host-side blobs, never through the plugin's memory.
pub trait StorageBackend: Plugin {
    /// Reads the target's settings, applies the provider's logic, and connects.
    fn open(target: &str) -> Result<StorageTarget, Error>;

    /// Verifies the target is reachable and writable; the error names what failed.
    fn check(target: String) -> Result<(), Error> {
        Self::open(&target)?.check()
    }
    fn put(target: String, key: String, data: &blobs::Blob) -> Result<ObjectInfo, Error> {
        Self::open(&target)?.put(&key, data)
    }
    fn get(target: String, key: String) -> Result<blobs::Blob, Error> {
        Self::open(&target)?.get(&key)
    }
    fn list_objects(target: String, prefix: String) -> Result<Vec<ObjectInfo>, Error> {
        Self::open(&target)?.list(&prefix)
    }
    fn delete(target: String, key: String) -> Result<(), Error> {
        Self::open(&target)?.delete(&key)
    }
}

/// A target's settings, as the operator configured them.
pub struct TargetSettings {
    target: String,
    values: std::collections::BTreeMap<String, String>,
}

impl TargetSettings {
    pub fn read(target: &str) -> Result<Self, Error> {
        Ok(TargetSettings {
            target: target.to_string(),
            values: storage::settings(target)?.into_iter().collect(),
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, key: &str) -> Result<&str, Error> {
        self.get(key).ok_or_else(|| {
            Error::invalid(format!(
                "storage target {:?} has no setting {key:?}",
                self.target
            ))
        })
    }

    /// `host`, `port` (default `default_port`) and `directory`: a target on an FTP or SFTP server.
    pub fn remote(&self, default_port: u16) -> Result<storage::RemoteSettings, Error> {
        Ok(storage::RemoteSettings {
            host: self.required("host")?.to_string(),
            port: self.port(default_port)?,
            directory: self.get("directory").unwrap_or("").to_string(),
        })
    }

    /// Connects to the target with `protocol`, under its `prefix`.
    pub fn connect(&self, protocol: &storage::Protocol) -> Result<StorageTarget, Error> {
        let connection = storage::connect(&self.target, protocol)?;
        Ok(StorageTarget::new(
            &self.target,
            connection,
            self.get("prefix").unwrap_or(""),
        ))
    }

    pub fn port(&self, default: u16) -> Result<u16, Error> {
        match self.get("port") {
            None => Ok(default),
            Some(port) => port.parse().map_err(|_| {
                Error::invalid(format!(
                    "storage target {:?}: port {port:?} is not a port",
                    self.target
                ))
            }),
        }
    }
}

/// An open storage target: a connection and the prefix every key of this target lives under.
pub struct StorageTarget {
    name: String,
    connection: storage::Connection,
    prefix: String,
}

impl StorageTarget {
    pub fn new(name: &str, connection: storage::Connection, prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        StorageTarget {
            name: name.to_string(),
            connection,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn relative(&self, mut info: ObjectInfo) -> ObjectInfo {
        if let Some(rest) = info.key.strip_prefix(&self.prefix) {
            info.key = rest.to_string();
        }
        info
    }

    /// Writes, reads back the size of, and deletes a small probe object.
    pub fn check(&self) -> Result<(), Error> {
        let probe = self.key(".berth-write-check");
        let blob = blobs::Blob::new();
        blob.append(b"berth")?;
        let step = |what: &str, e: Error| {
            Error::failed(format!(
                "storage target {:?}: {what} failed: {}",
                self.name,
                e.message()
            ))
        };
        self.connection
            .put(&probe, &blob)
            .map_err(|e| step("writing a probe object", e))?;
        match self.connection.head(&probe) {
            Ok(Some(info)) if info.size == 5 => {}
            Ok(other) => {
                return Err(Error::failed(format!(
                    "storage target {:?}: the probe object reads back as {other:?}",
                    self.name
                )));
            }
            Err(e) => return Err(step("reading the probe object", e)),
        }
        self.connection
            .delete(&probe)
            .map_err(|e| step("deleting the probe object", e))
    }

    pub fn put(&self, key: &str, data: &blobs::Blob) -> Result<ObjectInfo, Error> {
        Ok(self.relative(self.connection.put(&self.key(key), data)?))
    }

    pub fn get(&self, key: &str) -> Result<blobs::Blob, Error> {
        self.connection.get(&self.key(key))
    }

    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        let objects = self.connection.list_objects(&self.key(prefix))?;
        Ok(objects.into_iter().map(|o| self.relative(o)).collect())
    }

    pub fn delete(&self, key: &str) -> Result<(), Error> {
        self.connection.delete(&self.key(key))
    }
}

/// A lifecycle plugin: an operation as ordered, named, idempotent steps.
pub trait Lifecycle: Plugin {
    fn steps(operation: Operation, environment: Environment) -> Result<Vec<String>, Error>;
    fn run_step(context: StepContext) -> Result<StepOutcome, Error>;
}

impl Description {
    fn new(role: Role, name: &str, version: &str) -> Self {
        Description {
            name: name.to_string(),
            version: version.to_string(),
            role,
            summary: String::new(),
            hooks: Vec::new(),
            priority: 0,
            capabilities: Vec::new(),
            config: Vec::new(),
            conventions: None,
        }
    }

    /// A hook plugin named `name` (lowercase, digits, dashes) at `version` (semver).
    pub fn hook(name: &str, version: &str) -> Self {
        Self::new(Role::Hook, name, version)
    }

    pub fn lifecycle(name: &str, version: &str) -> Self {
        Self::new(Role::Lifecycle, name, version)
    }

    pub fn storage_backend(name: &str, version: &str) -> Self {
        Self::new(Role::StorageBackend, name, version)
    }

    /// One line for listings.
    pub fn summary(mut self, summary: &str) -> Self {
        self.summary = summary.to_string();
        self
    }

    /// Subscribe to a hook point: `before:<step>`, `after:<step>`, `before:*`, `after:*`,
    /// `on-failure`, `on-success`.
    pub fn on(mut self, point: &str) -> Self {
        self.hooks.push(point.to_string());
        self
    }

    /// Lower runs first among hooks at one point; ties are broken by name.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Ask for a capability (`files`, `secret:<name>`, `ssh.exec`, `docker`, …). The host grants at
    /// most what is asked for, and only what an operator granted.
    pub fn capability(mut self, capability: &str) -> Self {
        self.capabilities.push(capability.to_string());
        self
    }

    /// Ask for each of `capabilities`, as [`Description::capability`] does.
    pub fn capabilities(self, capabilities: &[&str]) -> Self {
        capabilities.iter().fold(self, |d, c| d.capability(c))
    }

    /// What the host prepares for this lifecycle plugin's runs: the secrets it generates, how it
    /// reaches the database, the default images. Only lifecycle plugins declare conventions.
    pub fn conventions(mut self, conventions: Conventions) -> Self {
        self.conventions = Some(conventions);
        self
    }

    /// Declare a configuration key, with an optional default.
    pub fn config_key(mut self, name: &str, description: &str, default: Option<&str>) -> Self {
        self.config.push(ConfigKey {
            name: name.to_string(),
            description: description.to_string(),
            required: default.is_none(),
            default: default.map(str::to_string),
        });
        self
    }
}

berth_contract::wit_glue!(error: Error, operation: Operation);

impl Error {
    /// What a lifecycle plugin named `plugin` answers when asked for the steps of an operation it
    /// does not perform.
    pub fn unsupported_operation(plugin: &str, operation: Operation) -> Self {
        Error::unsupported(format!(
            "{plugin} does not perform {:?}",
            operation.as_str()
        ))
    }

    /// Whether the host refused the call for want of a grant.
    pub fn is_denied(&self) -> bool {
        matches!(self, Error::Denied(_))
    }
}

impl RunInputs {
    /// The kind of inputs, as the WIT names its case: `none`, `push`, `backup`, `restore`.
    pub fn kind(&self) -> &'static str {
        match self {
            RunInputs::None => "none",
            RunInputs::Push(_) => "push",
            RunInputs::Backup(_) => "backup",
            RunInputs::Restore(_) => "restore",
        }
    }
}

impl Verdict {
    pub fn abort(reason: impl Into<String>) -> Self {
        Verdict::Abort(reason.into())
    }
}

/// Logging into the run log.
pub mod log {
    pub use crate::bindings::berth::plugin::log::{Level, emit, progress};

    pub fn info(message: &str) {
        emit(Level::Info, message);
    }

    pub fn warn(message: &str) {
        emit(Level::Warn, message);
    }

    pub fn error(message: &str) {
        emit(Level::Error, message);
    }

    pub fn debug(message: &str) {
        emit(Level::Debug, message);
    }
}

/// `info!("deployed {}", commit)` — a formatted line at level info.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Info, &format!($($arg)*)) };
}

/// `warn!(...)` — a formatted line at level warn.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Warn, &format!($($arg)*)) };
}

/// `error!(...)` — a formatted line at level error.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Error, &format!($($arg)*)) };
}

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        Description, Environment, Error, Event, Hook, Lifecycle, ObjectInfo, Operation, Plugin,
        StepContext, StepOutcome, StorageBackend, Verdict, error, info, warn,
    };
}
