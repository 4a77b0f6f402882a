//! A loaded plugin: a compiled component that passed validation.
//!
//! Loading is where bad input is turned away with a precise reason, before anything runs for real:
//! the bytes must be a component (not a core module, not junk), export exactly one role interface of
//! `berth:plugin` at a version this host speaks, import nothing the host does not provide, and
//! describe itself sanely (see [`crate::description`]). A plugin that passes carries its
//! `InstancePre`, so each later invocation only instantiates.

use std::sync::Arc;

use crate::bindings::types::Role;
use crate::description::Description;
use crate::state::RunState;

/// The interface each role's world exports, besides `plugin`.
pub const ROLE_EXPORTS: [(Role, &str); 5] = [
    (Role::Hook, "hook-handler"),
    (Role::Lifecycle, "lifecycle-steps"),
    (Role::StorageBackend, "storage-provider"),
    (Role::Neutralizer, "neutralize-rules"),
    (Role::Importer, "archive-importer"),
];

/// Why a file could not become a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    NotAComponent(String),
    #[error("unknown world: {0}")]
    UnknownWorld(String),
    #[error("incompatible contract: {0}")]
    Incompatible(String),
    #[error("cannot compile: {0}")]
    Compile(String),
    #[error("the component is {size} bytes; at most {limit} are accepted")]
    TooLarge { size: usize, limit: usize },
    #[error("cannot compile: it took longer than {0:?}")]
    CompileTimeout(std::time::Duration),
    #[error("cannot link: {0}")]
    Link(String),
    #[error("bad description: {0}")]
    Description(String),
    #[error("describe failed: {0}")]
    Describe(String),
    #[error("a plugin named {0:?} is already loaded")]
    Duplicate(String),
}

/// A validated plugin, ready to be instantiated for each invocation.
pub struct Plugin {
    pub(crate) description: Arc<Description>,
    pub(crate) hook: Option<crate::bindings::hook::HookPre<RunState>>,
    pub(crate) lifecycle: Option<crate::bindings::lifecycle::LifecyclePre<RunState>>,
    pub(crate) storage_backend:
        Option<crate::bindings::storage_backend::StorageBackendPre<RunState>>,
    /// Lowercase hex SHA-256 of the component's bytes.
    pub(crate) hash: String,
    pub(crate) wit_version: String,
    pub(crate) imports: Vec<String>,
    pub(crate) exports: Vec<String>,
    /// Whether the compiled code came from the on-disk cache.
    pub(crate) from_cache: bool,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("description", &self.description)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn description(&self) -> &Description {
        &self.description
    }

    pub fn name(&self) -> &str {
        &self.description.name
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The `berth:plugin` version the component was built against.
    pub fn wit_version(&self) -> &str {
        &self.wit_version
    }

    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    pub fn exports(&self) -> &[String] {
        &self.exports
    }

    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "description": self.description.to_json(),
            "wit_version": self.wit_version,
            "sha256": self.hash,
            "imports": self.imports,
            "exports": self.exports,
        })
    }
}
