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
        let settings = self.lent::<Settings>().unwrap_or_default();
        settings
            .secrets
            .get(name)
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
