//! Loading a plugin: compile (or read from the cache), check the world and contract version, link,
//! call `describe` in the sandbox and validate the answer. Every refusal names its reason.

use std::sync::Arc;

use wasmtime::component::InstancePre;

use crate::bindings::types::{self, Role};
use crate::description::Description;
use crate::engine::Runtime;
use crate::plugin::{Plugin, PluginError, ROLE_EXPORTS};
use crate::state::RunState;

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

impl Runtime {
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
        let (component, hash, from_cache) = self.compile(bytes).await?;
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
        let link = |e: wasmtime::Error| PluginError::Link(format!("{e:#}"));
        let hook = match role {
            Role::Hook => Some(crate::bindings::hook::HookPre::new(pre.clone()).map_err(link)?),
            _ => None,
        };
        let storage_backend = match role {
            Role::StorageBackend => Some(
                crate::bindings::storage_backend::StorageBackendPre::new(pre.clone())
                    .map_err(link)?,
            ),
            _ => None,
        };
        let lifecycle = match role {
            Role::Lifecycle => {
                Some(crate::bindings::lifecycle::LifecyclePre::new(pre.clone()).map_err(link)?)
            }
            _ => None,
        };

        let description = self.describe(&pre, role, &hash).await?;
        if !from_cache {
            self.keep(&hash, &component);
        }
        Ok(Plugin {
            description: Arc::new(description),
            hook,
            lifecycle,
            storage_backend,
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
            conventions: None,
        });
        let invocation =
            crate::invoke::Invocation::new(placeholder_run()).limits(crate::limits::Limits {
                deadline: std::time::Duration::from_secs(5),
                ..Default::default()
            });
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
                .sum::<usize>()
            + raw.conventions.as_ref().map_or(0, |c| {
                c.generated_secrets.iter().map(String::len).sum::<usize>()
                    + c.database.container.len()
                    + c.database.user.len()
                    + c.database.password_secret.len()
                    + c.default_app_image.len()
                    + c.default_database_image.len()
            });
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
        // No operation is under way; `describe` must not depend on this.
        operation: types::Operation::FirstDeploy,
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
