//! A loaded plugin: a compiled component that passed validation.
//!
//! Loading is where bad input is turned away with a precise reason, before anything runs for real:
//! the bytes must be a component (not a core module, not junk), export exactly one role interface of
//! `berth:plugin` at a version this host speaks, import nothing the host does not provide, and
//! describe itself sanely (name, version, role matching its world, hook points, capabilities it can
//! be granted, config keys). A plugin that passes carries its `InstancePre`, so each later
//! invocation only instantiates.

use std::sync::Arc;

use crate::bindings::types::{self, Role};
use crate::grants::{Capability, is_name};
use crate::state::RunState;

/// What a plugin says about itself, checked and in host types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub role: Role,
    pub summary: String,
    pub hooks: Vec<String>,
    pub priority: i32,
    pub capabilities: Vec<Capability>,
    pub config: Vec<ConfigKey>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: String,
    pub description: String,
    pub required: bool,
    pub default: Option<String>,
}

impl Description {
    /// `name@version`
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Checks what a plugin returned from `describe`; the first problem is the error.
    pub fn validate(raw: types::Description, world_role: Role) -> Result<Self, String> {
        if !is_name(&raw.name) {
            return Err(format!(
                "name {:?} must be 1-64 lowercase letters, digits, '-', '_' or '.'",
                raw.name
            ));
        }
        if !is_semver(&raw.version) {
            return Err(format!(
                "version {:?} is not a semantic version (e.g. 1.2.0)",
                raw.version
            ));
        }
        if raw.role != world_role {
            return Err(format!(
                "describes itself as a {} plugin but exports the {} world",
                role_name(raw.role),
                role_name(world_role)
            ));
        }
        if raw.summary.len() > 200 || raw.summary.contains('\n') {
            return Err("summary must be one line of at most 200 bytes".into());
        }
        match world_role {
            Role::Hook if raw.hooks.is_empty() => {
                return Err("a hook plugin must subscribe to at least one hook point".into());
            }
            Role::Hook => {}
            _ if !raw.hooks.is_empty() => {
                return Err("only hook plugins subscribe to hook points".into());
            }
            _ => {}
        }
        for point in &raw.hooks {
            if !is_hook_point(point) {
                return Err(format!(
                    "hook point {point:?} is not one of before:<step>, after:<step>, before:*, after:*, on-failure, on-success"
                ));
            }
        }
        let capabilities = raw
            .capabilities
            .iter()
            .map(|c| c.parse::<Capability>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = std::collections::BTreeSet::new();
        for key in &raw.config {
            if !is_name(&key.name) || !seen.insert(key.name.as_str()) {
                return Err(format!(
                    "config key {:?} is not a valid, unique name",
                    key.name
                ));
            }
        }
        Ok(Description {
            name: raw.name,
            version: raw.version,
            role: raw.role,
            summary: raw.summary,
            hooks: raw.hooks,
            priority: raw.priority,
            capabilities,
            config: raw
                .config
                .into_iter()
                .map(|k| ConfigKey {
                    name: k.name,
                    description: k.description,
                    required: k.required,
                    default: k.default,
                })
                .collect(),
        })
    }

    /// Whether this plugin subscribes to `point` (exactly, or by `before:*` / `after:*`).
    pub fn subscribes_to(&self, point: &str) -> bool {
        self.hooks.iter().any(|h| {
            h == point
                || h.strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with(':') && point.starts_with(prefix))
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "version": self.version,
            "role": role_name(self.role),
            "summary": self.summary,
            "hooks": self.hooks,
            "priority": self.priority,
            "capabilities": self.capabilities.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "config": self.config.iter().map(|k| serde_json::json!({
                "name": k.name,
                "description": k.description,
                "required": k.required,
                "default": k.default,
            })).collect::<Vec<_>>(),
        })
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Lifecycle => "lifecycle",
        Role::Hook => "hook",
        Role::StorageBackend => "storage-backend",
        Role::Neutralizer => "neutralizer",
        Role::Importer => "importer",
    }
}

/// The interface each role's world exports, besides `plugin`.
pub const ROLE_EXPORTS: [(Role, &str); 5] = [
    (Role::Hook, "hook-handler"),
    (Role::Lifecycle, "lifecycle-steps"),
    (Role::StorageBackend, "storage-provider"),
    (Role::Neutralizer, "neutralize-rules"),
    (Role::Importer, "archive-importer"),
];

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_hook_point(point: &str) -> bool {
    match point.split_once(':') {
        Some(("before" | "after", "*")) => true,
        Some(("before" | "after", step)) => is_name(step),
        _ => matches!(point, "on-failure" | "on-success"),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_points_and_subscriptions() {
        for ok in ["before:health-check", "after:*", "on-failure", "on-success"] {
            assert!(is_hook_point(ok), "{ok}");
        }
        for bad in ["before:", "during:x", "before:Bad Step", "on-whatever", ""] {
            assert!(!is_hook_point(bad), "{bad}");
        }
        let d = Description {
            name: "n".into(),
            version: "1.0.0".into(),
            role: Role::Hook,
            summary: String::new(),
            hooks: vec!["before:*".into(), "on-failure".into()],
            priority: 0,
            capabilities: vec![],
            config: vec![],
        };
        assert!(d.subscribes_to("before:start-odoo"));
        assert!(d.subscribes_to("on-failure"));
        assert!(!d.subscribes_to("after:start-odoo"));
    }

    #[test]
    fn versions() {
        assert!(is_semver("0.1.0") && is_semver("1.2.3-rc.1"));
        assert!(!is_semver("1.2") && !is_semver("v1.2.3") && !is_semver("1..3"));
    }
}
