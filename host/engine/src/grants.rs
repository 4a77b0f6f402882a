//! What an organization gives its own plugins. Under the ceiling the operator set for it (see
//! [`Engine::within_ceiling`]) a grant is made at once; beyond it, it becomes a request that waits
//! for the operator, who approves it (the grant is made then) or denies it. An organization never
//! decides its own requests: the API offers the decision on the operator's routes only.

use berth_state::{Grant, GrantRequest, GrantRequestStatus, NewGrant, NewGrantRequest};

use crate::{Engine, EngineError};

/// How many grant requests one organization may have waiting for the operator: its asking cannot
/// flood the operator's list nor the state file.
pub const MAX_PENDING_GRANT_REQUESTS: usize = 50;

/// What asking for a grant came to.
#[derive(Debug)]
pub enum GrantOutcome {
    /// Within the ceiling: the grant holds from now on.
    Granted(Grant),
    /// Beyond it: the operator decides.
    Requested(GrantRequest),
}

impl Engine {
    /// Organization `ask.organization_id` grants `ask.capability` to its uploaded plugin
    /// `ask.plugin`, for one of its environments, one of its servers (a server-wide capability),
    /// or the whole organization — or, beyond its ceiling, asks the operator to.
    pub fn ask_grant(&self, ask: NewGrantRequest) -> Result<GrantOutcome, EngineError> {
        let org_id = ask.organization_id;
        if !self.plugins.is_uploaded(org_id, &ask.plugin) {
            return Err(berth_state::StateError::NotFound(format!(
                "the organization has no plugin named {:?}",
                ask.plugin
            ))
            .into());
        }
        if ask.environment_id.is_some() && ask.server_id.is_some() {
            return Err(EngineError::Invalid(
                "a grant is for one environment or one server, not both".into(),
            ));
        }
        self.check_grant_scope(&ask.capability, ask.server_id.is_some())?;
        if let Some(env_id) = ask.environment_id {
            self.store.environment(org_id, env_id)?;
        }
        if let Some(server_id) = ask.server_id {
            self.store.server(org_id, server_id)?;
        }
        // A grant for one storage target names one of the organization's own.
        if let Some(target) = ask.capability.strip_prefix("targets:") {
            self.store.storage_target(org_id, target)?;
        }
        if !self.within_ceiling(org_id, &ask.capability)? {
            let pending = self
                .store
                .grant_requests(Some(org_id), Some(GrantRequestStatus::Pending))?;
            let again = pending.iter().any(|r| {
                r.plugin == ask.plugin
                    && r.capability == ask.capability
                    && r.environment_id == ask.environment_id
                    && r.server_id == ask.server_id
            });
            if !again && pending.len() >= MAX_PENDING_GRANT_REQUESTS {
                return Err(EngineError::Limited(format!(
                    "the organization has {MAX_PENDING_GRANT_REQUESTS} grant requests waiting for \
                     the operator already"
                )));
            }
            return Ok(GrantOutcome::Requested(self.store.request_grant(ask)?));
        }
        let grant = self.store.add_grant(NewGrant {
            plugin: ask.plugin,
            capability: ask.capability,
            organization_id: Some(org_id),
            project_id: None,
            environment_id: ask.environment_id,
            server_id: ask.server_id,
        })?;
        Ok(GrantOutcome::Granted(grant))
    }
}
