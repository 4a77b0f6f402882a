//! A loaded plugin: a compiled component that passed validation.
//!
//! Loading is where bad input is turned away with a precise reason, before anything runs for real:
//! the bytes must be a component (not a core module, not junk), export exactly one role interface of
//! `berth:plugin` at a version this host speaks, import nothing the host does not provide, and
//! describe itself sanely (name, version, role matching its world, hook points, capabilities it can
//! be granted, config keys). A plugin that passes carries its `InstancePre`, so each later
//! invocation only instantiates.

use std::sync::Arc;

use wasmtime::component::InstancePre;

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

/// Splits `berth:plugin/hook-handler@0.1.0` into ("hook-handler", "0.1.0").
fn contract_item(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix("berth:plugin/")?.split_once('@')
}

/// Whether a component built against `version` of the contract links with this host: same major,
/// and for 0.x the same minor (semver compatibility).
fn compatible(version: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parse(version), parse(crate::WIT_VERSION)) {
        (Some((0, minor)), Some((0, host_minor))) => minor == host_minor,
        (Some((major, _)), Some((host_major, _))) => major == host_major,
        _ => false,
    }
}

impl crate::engine::Runtime {
    /// Loads and validates the plugin in `path`.
    pub async fn load_file(&self, path: &std::path::Path) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.load(&bytes).await
    }

    /// Loads and validates a plugin from the bytes of a component.
    pub async fn load(&self, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let (component, hash, from_cache) = self.compile(bytes)?;
        let engine = self.engine();
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();

        // The world: exactly one role interface, plus `plugin`, at a version this host speaks.
        let roles: Vec<(Role, &str)> = exports
            .iter()
            .filter_map(|e| contract_item(e))
            .filter_map(|(item, version)| {
                ROLE_EXPORTS
                    .iter()
                    .find(|(_, i)| *i == item)
                    .map(|(role, _)| (*role, version))
            })
            .collect();
        let (role, wit_version) = match roles.as_slice() {
            [] => {
                return Err(PluginError::UnknownWorld(format!(
                    "the component exports none of the berth:plugin role interfaces ({}); it exports [{}]",
                    ROLE_EXPORTS
                        .iter()
                        .map(|(_, i)| *i)
                        .collect::<Vec<_>>()
                        .join(", "),
                    exports.join(", ")
                )));
            }
            [(role, version)] => (*role, version.to_string()),
            _ => {
                return Err(PluginError::UnknownWorld(
                    "the component exports more than one role interface; a plugin plays one role"
                        .into(),
                ));
            }
        };
        if !compatible(&wit_version) {
            return Err(PluginError::Incompatible(format!(
                "built against berth:plugin@{wit_version}; this host speaks berth:plugin@{}",
                crate::WIT_VERSION
            )));
        }
        if !exports
            .iter()
            .any(|e| contract_item(e).is_some_and(|(i, _)| i == "plugin"))
        {
            return Err(PluginError::UnknownWorld(
                "the component does not export berth:plugin/plugin (describe)".into(),
            ));
        }
        for import in &imports {
            let known = import.starts_with("wasi:")
                || contract_item(import).is_some_and(|(_, version)| compatible(version));
            if !known {
                return Err(PluginError::Incompatible(format!(
                    "imports {import}, which this host does not provide"
                )));
            }
        }

        let pre = self
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link(format!("{e:#}")))?;
        let hook = match role {
            Role::Hook => Some(
                crate::bindings::hook::HookPre::new(pre.clone())
                    .map_err(|e| PluginError::Link(format!("{e:#}")))?,
            ),
            _ => None,
        };

        let description = self.describe(&pre, role, &hash).await?;
        Ok(Plugin {
            description: Arc::new(description),

            hook,
            hash,
            wit_version,
            imports,
            exports,
            from_cache,
        })
    }

    /// Calls `describe` in the sandbox and validates the answer.
    async fn describe(
        &self,
        pre: &InstancePre<RunState>,
        role: Role,
        hash: &str,
    ) -> Result<Description, PluginError> {
        let base = crate::bindings::PluginBasePre::new(pre.clone())
            .map_err(|e| PluginError::Link(format!("{e:#}")))?;
        let provisional = Arc::new(Description {
            name: format!("unloaded-{}", &hash[..12]),
            version: "0.0.0".into(),
            role,
            summary: String::new(),
            hooks: vec![],
            priority: 0,
            capabilities: vec![],
            config: vec![],
        });
        let invocation = crate::invoke::Invocation {
            run: placeholder_run(),
            grants: Arc::default(),
            settings: Arc::default(),
            workspace: None,
            audit: Arc::new(crate::audit::MemoryAudit::default()),
            log: Arc::new(crate::runlog::MemoryLog::default()),
            limits: crate::limits::Limits {
                deadline: std::time::Duration::from_secs(5),
                ..Default::default()
            },
        };
        let raw = crate::invoke::sandboxed(self, &provisional, &invocation, async |store| {
            let instance = base.instantiate_async(&mut *store).await?;
            instance
                .berth_plugin_plugin()
                .call_describe(&mut *store)
                .await
        })
        .await
        .map_err(|e| PluginError::Describe(e.to_string()))?;
        let size = raw.name.len()
            + raw.version.len()
            + raw.summary.len()
            + raw
                .hooks
                .iter()
                .chain(&raw.capabilities)
                .map(String::len)
                .sum::<usize>()
            + raw
                .config
                .iter()
                .map(|k| {
                    k.name.len() + k.description.len() + k.default.as_ref().map_or(0, String::len)
                })
                .sum::<usize>();
        if size > invocation.limits.returned_bytes {
            return Err(PluginError::Description(format!(
                "{size} bytes, over the limit of {} bytes",
                invocation.limits.returned_bytes
            )));
        }
        Description::validate(raw, role).map_err(PluginError::Description)
    }
}

/// The run a `describe` call is made within: it is about no environment, and holds no grant.
fn placeholder_run() -> types::RunInfo {
    types::RunInfo {
        id: "describe".into(),
        operation: "load-plugin".into(),
        environment: types::Environment {
            organization: "-".into(),
            project: "-".into(),
            name: "-".into(),
            stage: types::Stage::Development,
            odoo_version: String::new(),
            branch: None,
            server: types::Server {
                name: "-".into(),
                host: String::new(),
                port: 0,
            },
        },
    }
}
