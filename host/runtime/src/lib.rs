//! The Berth plugin runtime.
//!
//! Berth lends dangerous powers (SSH, Docker, PostgreSQL, storage, git, files) to sandboxed Wasm
//! components. This crate is the sandbox and the lending desk:
//!
//! - [`engine`]: one wasmtime `Engine` (pooling allocator, copy-on-write memory images, epoch
//!   interruption) and the on-disk cache of compiled components;
//! - [`plugin`]: a validated plugin and its self-description; `loader`: compiling, checking the
//!   world and contract version, linking, and calling `describe` on load;
//! - [`registry`]: the set of plugins loaded from a directory;
//! - [`invoke`]: a fresh `Store` and instance per call, with every per-invocation limit; `roles`:
//!   the typed calls into each role's export;
//! - [`dispatch`]: running every hook subscribed to a hook point, in a deterministic order;
//! - [`grants`] and [`audit`]: effective rights = declared ∩ granted ∩ the run's scope, checked at the
//!   door of every host call, each decision recorded;
//! - [`lend`]: what a run lends each capability, one typed context each; [`workspace`]: the run's
//!   directory and its disk quota, which `files` and `blobs` share;
//! - [`capabilities`]: the host side of each WIT interface, one module per interface, same shape
//!   each; [`bindings`]: the contract's types in Rust, and [`bindings::Fault`], how host calls fail.

pub mod audit;
pub mod bindings;
pub mod capabilities;
pub mod description;
pub mod dispatch;
pub mod engine;
pub mod grants;
pub mod invoke;
pub mod lend;
pub mod limits;
mod loader;
pub mod plugin;
pub mod registry;
mod roles;
pub mod runlog;
pub mod settings;
pub mod state;
pub mod workspace;

pub use audit::{AuditRecord, AuditSink, JsonlAudit, MemoryAudit};
pub use berth_contract::Operation;
pub use bindings::operation::{
    BackupInputs, EnvironmentSettings, Push, RecordedBackup, Repository, RepositoryLevel,
    Resources, RestoreInputs, Retention, RunInputs,
};
pub use bindings::types::{
    Environment, Error as WitError, Event, Role, RunInfo, Server, Stage, StepContext, StepOutcome,
    Verdict,
};
pub use capabilities::operation::RunContext;
pub use capabilities::ssh::ServerAccess;
pub use capabilities::storage::{StorageTarget, StorageTargets};
pub use capabilities::targets::{TargetBackend, Targets};
pub use description::{Conventions, DatabaseService, Description};
pub use dispatch::{DispatchOutcome, HookResult};
pub use engine::{Runtime, RuntimeOptions};
pub use grants::{Capability, Grant, Scope};
pub use invoke::{Invocation, InvokeError};
pub use limits::Limits;
pub use plugin::{Plugin, PluginError};
pub use registry::Registry;
pub use roles::{StorageAnswer, StorageRequest};
pub use runlog::{LogSink, MemoryLog, RunEvent};
pub use settings::Settings;
pub use workspace::Workspace;

/// The version of the `berth:plugin` WIT package this host implements.
pub const WIT_VERSION: &str = "0.2.0";
