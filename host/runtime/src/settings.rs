//! Operator settings read from a local TOML file: each plugin's configuration and the secrets.
//!
//! This is the embedded default (no control-plane services). Secrets are wrapped so they never show
//! up in `Debug` output or logs; a plugin reads one only through `secrets.get` with a grant for it.
//!
//! ```toml
//! [secrets]
//! smtp-password = "…"
//!
//! [plugins.hello-hook.config]
//! greeting = "ahoy"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSettings>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// A secret value; `Debug` and `Display` never print it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Settings {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read settings {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid settings {}: {e}", path.display()))
    }

    /// The configuration of one plugin (empty if none is set).
    pub fn plugin_config(&self, plugin: &str) -> BTreeMap<String, String> {
        self.plugins
            .get(plugin)
            .map(|p| p.config.clone())
            .unwrap_or_default()
    }
}
