//! `secrets`: one named secret per grant (`secret:<name>`), from the [`Settings`] the run lent.
//! Values are never logged.

use crate::bindings::Fault;
use crate::bindings::secrets::Host;
use crate::bindings::types::Error;
use crate::grants::{Capability, is_name};
use crate::settings::Settings;
use crate::state::RunState;

impl RunState {
    /// The value of secret `name`, behind its own grant: for `secrets.get`, and for the host calls
    /// that take a secret by name (`database.create-role`).
    pub(crate) fn secret(&mut self, name: &str, call: &str) -> Result<String, Fault> {
        self.gate(&Capability::secret(name), call)?;
        self.lent_ref::<Settings>()
            .and_then(|s| s.secrets.get(name))
            .map(|s| s.expose().to_string())
            .ok_or_else(|| {
                Error::not_found(format!("no secret named {name:?} is configured")).into()
            })
    }
}

impl Host for RunState {
    async fn get(&mut self, name: String) -> Result<String, Fault> {
        if !is_name(&name) {
            self.charge()?;
            return Err(Error::invalid(format!("{name:?} is not a secret name")).into());
        }
        self.secret(&name, "secrets.get")
    }
}

#[cfg(test)]
mod tests {
    //! Each secret behind its own grant (`secret:<name>`), read from the settings the run lent,
    //! and every read on record.

    use std::sync::Arc;

    use super::super::testing::{self, Run};
    use super::{Error, Fault, RunState, Settings};
    use crate::bindings::secrets;
    use crate::settings::Secret;

    async fn smtp(state: &mut RunState) -> Result<String, Fault> {
        secrets::Host::get(state, "smtp-password".into()).await
    }

    fn settings() -> Arc<Settings> {
        let mut settings = Settings::default();
        for (name, value) in [("smtp-password", "hunter2"), ("db-password", "swordfish")] {
            settings.secrets.insert(name.into(), Secret::new(value));
        }
        Arc::new(settings)
    }

    #[tokio::test]
    async fn a_secret_without_its_grant_is_denied_and_audited() {
        testing::assert_denied_without_grant("secret:smtp-password", "secrets.get", smtp).await;
    }

    #[tokio::test]
    async fn a_grant_for_another_scope_does_not_count() {
        testing::assert_other_scopes_do_not_count("secret:smtp-password", "secrets.get", smtp)
            .await;
    }

    #[tokio::test]
    async fn the_grant_of_one_secret_does_not_open_another() {
        let run = Run::lifecycle()
            .granted("secret:db-password")
            .lend(settings());
        let err = testing::guest_error(smtp(&mut run.state()).await);
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("`secret:smtp-password`")),
            "{err:?}"
        );
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_granted_secret_is_read_from_the_settings_and_its_use_recorded() {
        let run = Run::lifecycle()
            .granted("secret:smtp-password")
            .lend(settings());
        assert_eq!(smtp(&mut run.state()).await.unwrap(), "hunter2");
        let records = run.audited();
        assert_eq!(records.len(), 1, "{records:?}");
        testing::assert_record(&records[0], "secret:smtp-password", "secrets.get", true);
    }

    #[tokio::test]
    async fn a_granted_secret_that_is_not_configured_is_not_found() {
        // Nothing lent: no settings, so no secret.
        let run = Run::lifecycle().granted("secret:smtp-password");
        let err = testing::guest_error(smtp(&mut run.state()).await);
        assert!(
            matches!(&err, Error::NotFound(m) if m == "no secret named \"smtp-password\" is configured"),
            "{err:?}"
        );
        let run = Run::lifecycle()
            .granted("secret:api-token")
            .lend(settings());
        let err =
            testing::guest_error(secrets::Host::get(&mut run.state(), "api-token".into()).await);
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_name_that_is_no_secret_name_is_invalid_and_charged() {
        let run = Run::lifecycle().lend(settings());
        let mut state = run.state();
        let names = ["", "SMTP", "../smtp-password", "secret:smtp-password"];
        for name in names {
            let err = testing::guest_error(secrets::Host::get(&mut state, name.into()).await);
            assert!(
                matches!(&err, Error::Invalid(m) if m.ends_with("is not a secret name")),
                "{name:?}: {err:?}"
            );
        }
        assert_eq!(state.budget.used(), names.len() as u64);
        assert!(run.audited().is_empty(), "no capability was asked for");

        let run = Run::lifecycle().limits(|l| l.hostcalls = 1);
        let mut state = run.state();
        let _ = secrets::Host::get(&mut state, "SMTP".into()).await;
        let Err(Fault::Trap(trap)) = secrets::Host::get(&mut state, "SMTP".into()).await else {
            panic!("a call past the budget must trap");
        };
        assert_eq!(
            testing::limit_trap(&trap),
            crate::limits::LimitExceeded::Hostcalls(1)
        );
    }
}
