//! `berth-sdk`: write Berth plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2`. It implements [`Plugin`] (what it
//! is) and one role trait ([`Hook`], [`Lifecycle`]), then exports itself with
//! [`export!`]. Everything it may do outside its sandbox goes through the host interfaces
//! re-exported here ([`files`], [`blobs`], [`secrets`], [`config`], [`ssh`], [`docker`],
//! [`database`], [`storage`], [`git`], [`operation`]), each checked against the plugin's grants by the host.
//!
//! A complete hook plugin in twenty lines is `examples/hello-hook/src/lib.rs`.

#[doc(hidden)]
pub use wit_bindgen;

/// The export macro: `berth_sdk::export!(hook: MyPlugin)` or `berth_sdk::export!(lifecycle: MyPlugin)`.
pub use berth_sdk_macros::export;

/// The generated bindings of the contract's host interfaces (`berth:plugin@0.1.0`).
pub mod bindings {
    wit_bindgen::generate!({
        world: "berth:plugin/host",
        path: "../wit",
        generate_all,
    });
}

pub use bindings::berth::plugin::types::{
    ArchiveInfo, ConfigKey, Description, Environment, Error, Event, NeutralizeRule, ObjectInfo,
    Role, RunInfo, Server, Stage, StepContext, StepOutcome, Verdict,
};
pub use bindings::berth::plugin::{
    blobs, config, database, docker, files, git, operation, secrets, ssh, storage,
};

/// What every plugin says about itself.
pub trait Plugin {
    fn describe() -> Description;
}

/// A hook plugin: answers events at step boundaries.
pub trait Hook: Plugin {
    fn handle(event: Event) -> Result<Verdict, Error>;
}

/// A lifecycle plugin: an operation as ordered, named, idempotent steps.
pub trait Lifecycle: Plugin {
    fn steps(operation: String, environment: Environment) -> Result<Vec<String>, Error>;
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
        }
    }

    /// A hook plugin named `name` (lowercase, digits, dashes) at `version` (semver).
    pub fn hook(name: &str, version: &str) -> Self {
        Self::new(Role::Hook, name, version)
    }

    pub fn lifecycle(name: &str, version: &str) -> Self {
        Self::new(Role::Lifecycle, name, version)
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

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::Unsupported(message.into())
    }

    /// The message, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::Denied(m)
            | Error::NotFound(m)
            | Error::Invalid(m)
            | Error::Unsupported(m)
            | Error::Timeout(m)
            | Error::Failed(m) => m,
        }
    }

    /// Whether the host refused the call for want of a grant.
    pub fn is_denied(&self) -> bool {
        matches!(self, Error::Denied(_))
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
        Description, Environment, Error, Event, Hook, Lifecycle, Plugin, StepContext, StepOutcome,
        Verdict, error, info, warn,
    };
}
