//! The plugins a host knows, by name.
//!
//! The default plugins are loaded from a directory; each file is validated on its own, so one broken
//! file is reported precisely and does not keep the others from loading. A directory's plugins
//! are the platform's: their compiled code is pinned in the runtime's cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::Runtime;
use crate::plugin::{Plugin, PluginError};

#[derive(Debug, Default)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<Plugin>>,
}

/// A file of a plugin directory that did not load, and why.
#[derive(Debug)]
pub struct LoadFailure {
    pub path: PathBuf,
    pub error: PluginError,
}

impl Registry {
    /// Loads every `*.wasm` file of `dir`, in name order. Returns the registry and the failures.
    pub async fn load_dir(
        runtime: &Runtime,
        dir: &Path,
    ) -> std::io::Result<(Self, Vec<LoadFailure>)> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        paths.sort();
        let mut registry = Registry::default();
        let mut failures = Vec::new();
        for path in paths {
            let loaded = runtime
                .load_file(&path)
                .await
                .inspect(|p| runtime.pin(p.hash()));
            if let Err(error) = loaded.and_then(|p| registry.insert(p)) {
                failures.push(LoadFailure { path, error });
            }
        }
        Ok((registry, failures))
    }

    /// Adds a plugin; names are unique.
    pub fn insert(&mut self, plugin: Plugin) -> Result<(), PluginError> {
        self.insert_shared(Arc::new(plugin))
    }

    /// Adds a plugin another registry holds too (a run's hooks are the platform's and its
    /// organization's); names are unique.
    pub fn insert_shared(&mut self, plugin: Arc<Plugin>) -> Result<(), PluginError> {
        let name = plugin.name().to_string();
        if self.plugins.contains_key(&name) {
            return Err(PluginError::Duplicate(name));
        }
        self.plugins.insert(name, plugin);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Hook plugins subscribed to `point`, in dispatch order: priority, then name.
    pub fn subscribers(&self, point: &str) -> Vec<Arc<Plugin>> {
        let mut hooks: Vec<Arc<Plugin>> = self
            .plugins
            .values()
            .filter(|p| p.hook.is_some() && p.description.subscribes_to(point))
            .cloned()
            .collect();
        hooks.sort_by(|a, b| {
            (a.description.priority, &a.description.name)
                .cmp(&(b.description.priority, &b.description.name))
        });
        hooks
    }
}
