//! `config`: the plugin's own configuration, as the operator set it. Needs no grant: a plugin's
//! configuration is addressed to it. It comes from the [`Settings`] the run lent. Unset keys fall back to the default the plugin declared.

use crate::bindings::config::Host;
use crate::settings::Settings;
use crate::state::RunState;

impl Host for RunState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.budget.charge()?;
        let settings = self.lent::<Settings>().unwrap_or_default();
        let set = settings
            .plugins
            .get(&self.description.name)
            .and_then(|p| p.config.get(&key));
        let default = || {
            let declared = self.description.config.iter().find(|k| k.name == key);
            declared.and_then(|k| k.default.clone())
        };
        Ok(set.cloned().or_else(default))
    }
}
