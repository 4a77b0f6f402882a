//! `config`: the plugin's own configuration, as the operator set it. Needs no grant: a plugin's
//! configuration is addressed to it. It comes from the [`Settings`] the run lent. Unset keys fall back to the default the plugin declared.

use crate::bindings::config::Host;
use crate::settings::Settings;
use crate::state::RunState;

impl Host for RunState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.budget.charge()?;
        let set = self
            .lent_ref::<Settings>()
            .and_then(|s| s.plugins.get(&self.description.name))
            .and_then(|p| p.config.get(&key));
        let default = || {
            let declared = self.description.config.iter().find(|k| k.name == key);
            declared.and_then(|k| k.default.clone())
        };
        Ok(set.cloned().or_else(default))
    }
}

#[cfg(test)]
mod tests {
    //! A plugin's own configuration: no grant, the operator's value first, then the default the
    //! plugin declared; other plugins' configuration is not its own.

    use std::sync::Arc;

    use super::super::testing::{self, PLUGIN, Run};
    use super::Settings;
    use crate::bindings::config;
    use crate::settings::PluginSettings;

    fn settings() -> Arc<Settings> {
        let mut settings = Settings::default();
        let mut ours = PluginSettings::default();
        ours.config.insert("greeting".into(), "ahoy".into());
        let mut theirs = PluginSettings::default();
        theirs.config.insert("token".into(), "not yours".into());
        settings.plugins.insert(PLUGIN.into(), ours);
        settings.plugins.insert("other".into(), theirs);
        Arc::new(settings)
    }

    fn run() -> Run {
        Run::hook()
            .config_key("greeting", Some("hello"))
            .config_key("workers", Some("2"))
            .config_key("token", None)
    }

    #[tokio::test]
    async fn the_operators_value_then_the_declared_default() {
        let run = run().lend(settings());
        let mut state = run.state();
        let mut get = async |key: &str| config::Host::get(&mut state, key.into()).await.unwrap();
        assert_eq!(get("greeting").await.as_deref(), Some("ahoy"));
        assert_eq!(get("workers").await.as_deref(), Some("2"));
        assert_eq!(
            get("token").await,
            None,
            "another plugin's value is not ours"
        );
        assert_eq!(get("undeclared").await, None);
        assert!(run.audited().is_empty(), "configuration needs no grant");
    }

    #[tokio::test]
    async fn without_settings_the_defaults_answer() {
        let run = run();
        let mut state = run.state();
        assert_eq!(
            config::Host::get(&mut state, "greeting".into())
                .await
                .unwrap()
                .as_deref(),
            Some("hello")
        );
        assert_eq!(
            config::Host::get(&mut state, "token".into()).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn each_read_is_charged_to_the_budget() {
        let run = run().limits(|l| l.hostcalls = 2);
        let mut state = run.state();
        for _ in 0..2 {
            config::Host::get(&mut state, "greeting".into())
                .await
                .unwrap();
        }
        let trap = config::Host::get(&mut state, "greeting".into())
            .await
            .unwrap_err();
        assert_eq!(
            testing::limit_trap(&trap),
            crate::limits::LimitExceeded::Hostcalls(2)
        );
    }
}
