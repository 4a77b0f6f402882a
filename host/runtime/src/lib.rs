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
//! - [`invoke`]: a fresh `Store` and instance per call, with every per-invocation limit;
//! - [`dispatch`]: running every hook subscribed to a hook point, in a deterministic order;
//! - [`grants`] and [`audit`]: effective rights = declared ∩ granted ∩ the run's scope, checked at the
//!   door of every host call, each decision recorded;
//! - [`primitives`]: the host side of each WIT interface, one module per interface, same shape each.

pub mod audit;
pub mod bindings;
pub mod dispatch;
pub mod engine;
pub mod grants;
pub mod invoke;
pub mod limits;
mod loader;
pub mod plugin;
pub mod primitives;
pub mod registry;
pub mod runlog;
pub mod settings;
pub mod state;

pub use audit::{AuditRecord, AuditSink, JsonlAudit, MemoryAudit};
pub use bindings::operation::{EnvironmentSettings, Repository, RepositoryLevel, Resources};
pub use bindings::types::{
    Environment, Error as WitError, Event, Role, RunInfo, Server, Stage, StepContext, StepOutcome,
    Verdict,
};
pub use dispatch::{DispatchOutcome, HookResult};
pub use engine::{Runtime, RuntimeOptions};
pub use grants::{Capability, Grant, Scope};
pub use invoke::{Invocation, InvokeError, ServerAccess, StorageAnswer, StorageRequest};
pub use limits::Limits;
pub use plugin::{Description, Plugin, PluginError};
pub use primitives::operation::RunContext;
pub use primitives::storage::{StorageTarget, StorageTargets};
pub use primitives::targets::{TargetBackend, Targets};
pub use registry::Registry;
pub use runlog::{LogSink, MemoryLog, RunEvent};
pub use settings::Settings;

/// The version of the `berth:plugin` WIT package this host implements.
pub const WIT_VERSION: &str = "0.1.0";
