//! The plugins a control plane runs: the platform's default plugins (loaded from a directory,
//! trusted with what they declare) and the hook plugins each organization uploads (untrusted: they
//! get only what an operator of that organization granted, and only its own runs see them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use berth_runtime::registry::LoadFailure;
use berth_runtime::{Plugin, Registry, Role, Runtime};
use berth_state::{NewPlugin, PluginRecord, Store};

use crate::EngineError;

pub struct Plugins {
    platform: Registry,
    uploaded: RwLock<HashMap<i64, Vec<Arc<Plugin>>>>,
    upload_dir: PathBuf,
}

impl Plugins {
    /// The platform's plugins from `dir` (every `*.wasm`); uploads are kept under `upload_dir`.
    pub async fn load(
        runtime: &Runtime,
        dir: &Path,
        upload_dir: PathBuf,
    ) -> std::io::Result<(Self, Vec<LoadFailure>)> {
        let (platform, failures) = Registry::load_dir(runtime, dir).await?;
        let plugins = Plugins {
            platform,
            uploaded: RwLock::new(HashMap::new()),
            upload_dir,
        };
        Ok((plugins, failures))
    }

    pub fn platform(&self) -> &Registry {
        &self.platform
    }

    /// A platform lifecycle plugin by name.
    pub fn lifecycle(&self, name: &str) -> Option<Arc<Plugin>> {
        self.platform
            .get(name)
            .filter(|p| p.description().role == Role::Lifecycle)
            .cloned()
    }

    /// The hooks a run of organization `org_id` fires: the platform's and the organization's.
    pub fn hooks_for(&self, org_id: i64) -> Registry {
        let mut registry = Registry::default();
        let platform = self.platform.iter().cloned();
        let uploaded = self.uploaded.read().unwrap();
        let own = uploaded.get(&org_id).into_iter().flatten().cloned();
        for plugin in platform.chain(own) {
            if plugin.description().role == Role::Hook {
                // Names are unique across both sets (checked on upload).
                let _ = registry.insert_shared(plugin);
            }
        }
        registry
    }

    /// Whether `name` is an uploaded plugin of `org_id` (grants are given only to those).
    pub fn is_uploaded(&self, org_id: i64, name: &str) -> bool {
        self.uploaded
            .read()
            .unwrap()
            .get(&org_id)
            .is_some_and(|list| list.iter().any(|p| p.name() == name))
    }

    /// Validates and installs a hook plugin uploaded by organization `org_id`, replacing its
    /// previous version of the same name; a new name is refused (`Limited`) when the organization
    /// keeps `max_plugins` already. The organization's upload quotas are the caller's
    /// ([`Engine::upload_plugin`](crate::Engine::upload_plugin)).
    pub async fn upload(
        &self,
        store: &Store,
        runtime: &Runtime,
        org_id: i64,
        bytes: &[u8],
        max_plugins: u32,
    ) -> Result<PluginRecord, EngineError> {
        let plugin = runtime
            .load(bytes)
            .await
            .map_err(|e| EngineError::Invalid(format!("the plugin was refused: {e}")))?;
        let description = plugin.description().clone();
        if description.role != Role::Hook {
            return Err(EngineError::Invalid(format!(
                "{} is a {} plugin; organizations upload hook plugins",
                description.label(),
                berth_runtime::description::role_name(description.role)
            )));
        }
        if self.platform.get(&description.name).is_some() {
            return Err(EngineError::Invalid(format!(
                "{} is the name of a platform plugin",
                description.name
            )));
        }
        // Counted and installed under the lock, so that parallel uploads cannot both take the
        // last place.
        let mut uploaded = self.uploaded.write().unwrap_or_else(|p| p.into_inner());
        let kept = uploaded.get(&org_id).map_or(&[][..], Vec::as_slice);
        let replaces = kept.iter().any(|p| p.name() == description.name);
        if !replaces && kept.len() >= max_plugins as usize {
            return Err(EngineError::Limited(format!(
                "plugin quota: the organization keeps {} plugin(s), its maximum ({max_plugins}); \
                 upload a new version of one of them, or ask the operator to raise it",
                kept.len()
            )));
        }
        // One file per content, so a record always names the exact bytes it was checked as.
        let dir = self.upload_dir.join(format!("org-{org_id}"));
        let path = dir.join(format!("{}-{}.wasm", description.name, plugin.hash()));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, bytes))
            .map_err(|e| EngineError::Setup(format!("cannot keep the plugin: {e}")))?;
        let record = store.register_plugin(NewPlugin {
            name: description.name.clone(),
            organization_id: Some(org_id),
            role: "hook".into(),
            version: description.version.clone(),
            sha256: plugin.hash().to_string(),
            path: path.display().to_string(),
            enabled: true,
        })?;
        let list = uploaded.entry(org_id).or_default();
        list.retain(|p| p.name() != description.name);
        list.push(Arc::new(plugin));
        Ok(record)
    }

    /// Loads every plugin organizations uploaded before; one that no longer loads is reported and
    /// left out.
    pub(crate) async fn load_uploaded(&self, store: &Store, runtime: &Runtime) {
        let records = match store.uploaded_plugins() {
            Ok(records) => records,
            Err(e) => {
                tracing::error!("cannot list uploaded plugins: {e}");
                return;
            }
        };
        for record in records {
            let Some(org_id) = record.organization_id else {
                continue;
            };
            if self.platform.get(&record.name).is_some() {
                tracing::warn!(
                    plugin = %record.name,
                    organization = org_id,
                    "uploaded plugin not loaded: a platform plugin has its name"
                );
                continue;
            }
            match runtime.load_file(Path::new(&record.path)).await {
                Ok(plugin) if plugin.hash() != record.sha256 => tracing::warn!(
                    path = %record.path,
                    "uploaded plugin not loaded: its file changed since it was uploaded"
                ),
                Ok(plugin) => {
                    let mut uploaded = self.uploaded.write().unwrap();
                    let list = uploaded.entry(org_id).or_default();
                    list.retain(|p| p.name() != plugin.name());
                    list.push(Arc::new(plugin));
                }
                Err(e) => tracing::warn!(path = %record.path, "uploaded plugin does not load: {e}"),
            }
        }
    }
}
