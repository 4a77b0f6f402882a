//! `secrets`: one named secret per grant (`secret:<name>`). Values are never logged.

use crate::bindings::secrets::Host;
use crate::bindings::types::Error;
use crate::grants::{Capability, is_name};
use crate::state::{Fault, RunState};

impl Host for RunState {
    async fn get(&mut self, name: String) -> Result<String, Fault> {
        if !is_name(&name) {
            self.charge()?;
            return Err(Error::invalid(format!("{name:?} is not a secret name")).into());
        }
        self.gate(&Capability::secret(&name), "secrets.get")?;
        self.settings
            .secrets
            .get(&name)
            .map(|s| s.expose().to_string())
            .ok_or_else(|| {
                Error::not_found(format!("no secret named {name:?} is configured")).into()
            })
    }
}
