//! Berth's pipeline engine: an operation on one environment becomes a run of ordered steps.
//!
//! The lifecycle plugin that owns the operation names the steps; the engine runs them one at a
//! time in the sandbox, persists each step's state and timing before and after it runs, fires the
//! hook points around each step (`before:<step>`, `after:<step>`, then `on-failure` or
//! `on-success`) to the subscribed hook plugins, and stops at the first failure with the step's
//! error. One run at a time per environment is a constraint of the state store, so a second request
//! is answered "busy" atomically. A control plane that stops mid-run finds the run on its next
//! start and marks it interrupted at the step it was on: never "running" forever.
//!
//! - [`plugins`]: the platform's default plugins and each organization's uploaded hook plugins;
//! - [`grants`], [`quotas`]: what an organization may give its plugins and upload;
//! - [`context`]: what a run lends its plugins (settings, repositories, facts, sinks into the state);
//! - [`run`]: the step loop;
//! - [`housekeeping`]: what keeps runs' leftovers, mirrors and workspaces from growing for ever.

pub mod backups;
pub mod context;
pub mod grants;
pub mod housekeeping;
pub mod plugins;
mod pushed;
pub mod queue;
pub mod quotas;
pub mod run;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_backends::egress::{EgressPolicy, url_host};
use berth_backends::git::Mirrors;
use berth_backends::ssh::{HostKey, PinRecord, SshPool};
use berth_runtime::Runtime;
use berth_state::{RunLimits, StateError, Store};
use tokio::sync::{Notify, broadcast};

pub use berth_runtime::Operation;
pub use plugins::Plugins;

/// The platform lifecycle plugin that performs `operation`.
pub const fn lifecycle_for(operation: Operation) -> &'static str {
    match operation {
        Operation::FirstDeploy | Operation::Redeploy => "deploy",
        Operation::AutoDeploy => "auto-deploy",
        Operation::Backup => "backup",
        Operation::Restore => "restore",
    }
}

/// What an organization may grant its own plugins unless the operator says otherwise: the run's
/// scratch files and its environment's own secrets. Everything that reaches a server, a
/// database, git or storage is the operator's to allow.
pub const DEFAULT_GRANT_CEILING: [&str; 2] = ["files", "secret:*"];

/// How the engine fails. Requests it refuses are [`EngineError::Invalid`] (the caller's to fix);
/// the rest say which part of the control plane or of a run's world is missing or broken.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Invalid(String),
    /// A power the caller does not hold (an organization asking for an operator's).
    #[error("{0}")]
    Forbidden(String),
    /// An organization is at one of its limits; a later request may pass.
    #[error("{0}")]
    Limited(String),
    #[error("{0}")]
    Setup(String),
    #[error("the lifecycle plugin {plugin:?} for {operation} is not installed")]
    NoLifecycle {
        operation: Operation,
        plugin: &'static str,
    },
    #[error(
        "the lifecycle plugin {plugin} declares no conventions (its secrets, database, images)"
    )]
    NoConventions { plugin: String },
    #[error("cannot use the SSH key {key:?}: {source}")]
    SshKey {
        key: String,
        #[source]
        source: berth_backends::ssh::SshError,
    },
    #[error("grant {id}: {message}")]
    Grant { id: i64, message: String },
    #[error("cannot create the run's workspace {path}: {source}")]
    Workspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("planning {operation}: {source}")]
    Plan {
        operation: Operation,
        #[source]
        source: berth_runtime::InvokeError,
    },
    #[error("the backup run recorded {0}")]
    BackupFacts(&'static str),
}

/// Where the engine keeps its files, and how it reaches servers.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Run workspaces, repository mirrors, SSH keys, uploaded plugins.
    pub data_dir: PathBuf,
    /// Where the control plane may connect for a tenant (repositories, servers, storage
    /// endpoints): public addresses only, or also the ranges the operator opened.
    pub egress: EgressPolicy,
    /// How many runs may run at once ([`queue::DEFAULT_RUN_LIMITS`] unless the operator says
    /// otherwise; the operator may also raise one organization's share).
    pub runs: RunLimits,
}

/// The live side of a run: its event stream and its cancel signal.
pub(crate) struct Live {
    events: broadcast::Sender<berth_state::Event>,
    cancel: Arc<Notify>,
}

pub struct Engine {
    pub store: Arc<Store>,
    pub runtime: Arc<Runtime>,
    pub plugins: Plugins,
    pub(crate) config: EngineConfig,
    mirrors: Arc<Mirrors>,
    pools: Mutex<HashMap<PathBuf, Arc<SshPool>>>,
    pub(crate) live: Mutex<HashMap<i64, Live>>,
    /// Live event streams open per organization.
    streams: Arc<Mutex<HashMap<i64, usize>>>,
}

/// How many live event streams (SSE) one organization may hold open at once.
pub const MAX_STREAMS_PER_ORGANIZATION: usize = 32;

/// One open event stream of an organization; its slot is given back when it is dropped.
#[derive(Debug)]
pub struct StreamSlot {
    org_id: i64,
    streams: Arc<Mutex<HashMap<i64, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = streams.get_mut(&self.org_id) {
            *open = open.saturating_sub(1);
        }
    }
}

impl Engine {
    /// Opens the engine on `store`: marks runs a previous control plane left unfinished as
    /// interrupted, and loads the organizations' uploaded plugins.
    pub async fn new(
        store: Arc<Store>,
        runtime: Arc<Runtime>,
        plugins: Plugins,
        config: EngineConfig,
    ) -> Result<Arc<Self>, EngineError> {
        let setup = |what: &str, e: &dyn std::fmt::Display| {
            EngineError::Setup(format!("{what} in {}: {e}", config.data_dir.display()))
        };
        std::fs::create_dir_all(config.data_dir.join("runs"))
            .map_err(|e| setup("cannot create the run directory", &e))?;
        let mirrors = Mirrors::new(&config.data_dir.join("mirrors"))
            .map_err(|e| setup("cannot open the repository mirrors", &e))?
            .with_egress(config.egress.clone());
        for run in store.interrupt_unfinished()? {
            tracing::warn!(
                run = run.id,
                operation = %run.operation,
                "run was interrupted: {}",
                run.error.as_deref().unwrap_or("")
            );
        }
        plugins.load_uploaded(&store, &runtime).await;
        let engine = Arc::new(Engine {
            store,
            runtime,
            plugins,
            config,
            mirrors: Arc::new(mirrors),
            pools: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            streams: Arc::default(),
        });
        // Runs that waited while no control plane was up start now.
        engine.dispatch();
        Ok(engine)
    }

    /// Live events of a run in progress (`None` once it finished: read them from the store).
    pub fn subscribe(&self, run_id: i64) -> Option<broadcast::Receiver<berth_state::Event>> {
        self.live
            .lock()
            .unwrap()
            .get(&run_id)
            .map(|live| live.events.subscribe())
    }

    /// A slot for one live event stream of organization `org_id`, or `Limited` when it holds
    /// [`MAX_STREAMS_PER_ORGANIZATION`] already: one tenant's open connections cannot exhaust the
    /// control plane's.
    pub fn open_stream(&self, org_id: i64) -> Result<StreamSlot, EngineError> {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let open = streams.entry(org_id).or_default();
        if *open >= MAX_STREAMS_PER_ORGANIZATION {
            return Err(EngineError::Limited(format!(
                "the organization has {MAX_STREAMS_PER_ORGANIZATION} live event streams open \
                 already; close one"
            )));
        }
        *open += 1;
        Ok(StreamSlot {
            org_id,
            streams: self.streams.clone(),
        })
    }

    /// Persists an event of run `run_id` and sends it to its live subscribers.
    pub(crate) fn emit(&self, event: berth_state::NewEvent) {
        let run_id = event.run_id;
        match self.store.append_event(event) {
            Ok(stored) => {
                if let Some(live) = self.live.lock().unwrap().get(&run_id) {
                    let _ = live.events.send(stored);
                }
            }
            Err(e) => tracing::error!(run = run_id, "cannot record an event: {e}"),
        }
    }

    /// Where organization `org_id` keeps its SSH key `name`. Keys belong to one organization and
    /// are named, never given as paths, so no tenant can point Berth at another's key.
    pub fn ssh_key_path(&self, org_id: i64, name: &str) -> Result<PathBuf, EngineError> {
        berth_state::check_name("SSH key", name)?;
        Ok(self
            .config
            .data_dir
            .join("keys")
            .join(format!("org-{org_id}"))
            .join(name))
    }

    /// Creates the organization's SSH key `name`; returns its public key for the servers'
    /// `authorized_keys`.
    pub fn create_ssh_key(&self, org_id: i64, name: &str) -> Result<String, EngineError> {
        let path = self.ssh_key_path(org_id, name)?;
        if path.exists() {
            return Err(StateError::Conflict(format!("SSH key {name:?}")).into());
        }
        berth_backends::ssh::generate_key(&path, &format!("berth-org-{org_id}-{name}")).map_err(
            |source| EngineError::SshKey {
                key: name.to_string(),
                source,
            },
        )
    }

    /// The public key of the organization's SSH key `name`.
    pub fn public_key(&self, org_id: i64, name: &str) -> Result<String, EngineError> {
        let path = self.ssh_key_path(org_id, name)?;
        if !path.exists() {
            return Err(StateError::NotFound(format!("SSH key {name:?}")).into());
        }
        berth_backends::ssh::public_key(&path).map_err(|source| EngineError::SshKey {
            key: name.to_string(),
            source,
        })
    }

    /// The host key a server (or an SFTP storage target's server) must offer: `pinned` on its
    /// record, or — before the first contact — the record to pin the key it offers then. Each
    /// record has its own pin, so no organization's server inherits another's.
    pub(crate) fn host_key(&self, pinned: Option<String>, on: PinOn) -> HostKey {
        HostKey::pinned_or(pinned, || {
            Arc::new(StatePin {
                store: self.store.clone(),
                on,
            })
        })
    }

    /// The SSH pool for a private key (one per key the servers use).
    fn pool(&self, key: &std::path::Path) -> Result<Arc<SshPool>, EngineError> {
        let mut pools = self.pools.lock().unwrap();
        if let Some(pool) = pools.get(key) {
            return Ok(pool.clone());
        }
        let pool = SshPool::new(key).map(|p| p.with_egress(self.config.egress.clone()));
        let pool = Arc::new(pool.map_err(|source| {
            EngineError::SshKey {
                key: key
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                source,
            }
        })?);
        pools.insert(key.to_path_buf(), pool.clone());
        Ok(pool)
    }

    /// Refuses a repository URL an organization must not use: only `https://`, `ssh://` and
    /// `user@host:path` reach other machines; a local path or `file://` would read the control
    /// plane's own disk (other tenants' mirrors), a loopback or private address its own network; and
    /// credentials belong in keys, not in URLs that are shown and logged.
    pub fn check_repository_url(&self, url: &str) -> Result<(), EngineError> {
        repository_url(url, &self.config.egress).map_err(EngineError::Invalid)
    }

    /// Refuses a server host the egress policy does not let the control plane reach.
    pub fn check_server_host(&self, host: &str) -> Result<(), EngineError> {
        self.config
            .egress
            .check_host(host)
            .map_err(|e| EngineError::Invalid(format!("server host: {e}")))
    }

    /// Refuses a host key pin that is not an OpenSSH public key line (`ssh-ed25519 AAAA…`).
    pub fn check_host_key(&self, key: &str) -> Result<(), EngineError> {
        berth_backends::ssh::host_key_fingerprint(key)
            .map(|_| ())
            .map_err(|e| EngineError::Invalid(format!("host key: {e}")))
    }

    /// Refuses a storage target whose `endpoint` or `host` setting the egress policy refuses.
    pub fn check_target_settings(
        &self,
        settings: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let hosts = settings
            .get("endpoint")
            .map(|e| url_host(e))
            .into_iter()
            .chain(settings.get("host").map(String::as_str));
        for host in hosts.filter(|h| !h.is_empty()) {
            self.config
                .egress
                .check_host(host)
                .map_err(|e| EngineError::Invalid(format!("storage target: {e}")))?;
        }
        Ok(())
    }

    /// The capabilities organization `org_id` may grant its own plugins: what the operator set
    /// for it, or [`DEFAULT_GRANT_CEILING`].
    pub fn grant_ceiling(&self, org_id: i64) -> Result<Vec<String>, EngineError> {
        Ok(self.store.grant_ceiling(org_id)?.unwrap_or_else(|| {
            DEFAULT_GRANT_CEILING
                .iter()
                .map(|c| c.to_string())
                .collect()
        }))
    }

    /// Whether organization `org_id` may grant `capability` itself: its ceiling names it, or
    /// names its plain form (`targets` covers `targets:offsite`; `secret:*` every secret).
    /// Beyond it, a grant is a request the operator decides (see [`grants`]).
    pub fn within_ceiling(&self, org_id: i64, capability: &str) -> Result<bool, EngineError> {
        let wanted = capability.parse::<berth_runtime::Capability>().ok();
        Ok(self.grant_ceiling(org_id)?.iter().any(|c| {
            c == capability
                || (c == "secret:*" && capability.starts_with("secret:"))
                || matches!(
                    (c.parse::<berth_runtime::Capability>(), &wanted),
                    (Ok(ceiling), Some(wanted)) if ceiling.covers(wanted)
                )
        }))
    }

    /// Refuses a grant of `capability` in a scope it does not fit. A server-wide capability
    /// (`ssh.exec`, `ssh.shell`, `ssh.files`: they act as the server's SSH user, so they reach
    /// every environment on the server) is granted for one server only — never for an
    /// environment, a project or the organization, where it would be a server's power presented
    /// as an environment's; any other capability is never granted for a server.
    pub fn check_grant_scope(&self, capability: &str, for_server: bool) -> Result<(), EngineError> {
        let parsed = capability
            .parse::<berth_runtime::Capability>()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        match (parsed.is_server_wide(), for_server) {
            (true, false) => Err(EngineError::Invalid(format!(
                "capability `{capability}` is server-wide: it runs as the server's SSH user and \
                 reaches every environment on the server, so it is granted for one server \
                 (`server_id`), never for an environment, a project or the organization"
            ))),
            (false, true) => Err(EngineError::Invalid(format!(
                "capability `{capability}` is an environment's: only server-wide capabilities \
                 (ssh.exec, ssh.shell, ssh.files) are granted for a server"
            ))),
            _ => Ok(()),
        }
    }

    /// How many runs may run at once, on the control plane and per organization by default.
    pub fn run_limits(&self) -> RunLimits {
        self.config.runs
    }

    /// The egress policy every tenant connection goes through.
    pub fn egress(&self) -> &EgressPolicy {
        &self.config.egress
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.config.data_dir
    }
}

/// The record of the state a host key is pinned on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PinOn {
    Server(i64),
    StorageTarget(i64),
}

/// Pins the first contact's host key on a record of the state, unless another contact pinned one
/// first (the store's update is atomic).
struct StatePin {
    store: Arc<berth_state::Store>,
    on: PinOn,
}

impl PinRecord for StatePin {
    fn pin(&self, key: &str) -> Result<String, String> {
        let pinned = match self.on {
            PinOn::Server(id) => self.store.pin_host_key(id, key),
            PinOn::StorageTarget(id) => self.store.pin_storage_target_host_key(id, key),
        }
        .map_err(|e| e.to_string())?;
        if pinned == key {
            let fingerprint = berth_backends::ssh::host_key_fingerprint(key).unwrap_or_default();
            tracing::info!(record = ?self.on, %fingerprint, "host key pinned at the first contact");
        }
        Ok(pinned)
    }
}

/// A random secret: 32 bytes, hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    hex::encode(bytes)
}

/// [`berth_backends::git::check_url`], its refusal as the API's message.
fn repository_url(url: &str, egress: &EgressPolicy) -> Result<(), String> {
    berth_backends::git::check_url(url, egress)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{EgressPolicy, repository_url};

    #[test]
    fn repository_urls_reach_only_other_machines() {
        let public = EgressPolicy::public_only();
        for good in [
            "https://github.com/acme/shop.git",
            "ssh://git@git.example.com:2222/acme/shop.git",
            "git@github.com:acme/shop.git",
        ] {
            assert_eq!(repository_url(good, &public), Ok(()), "{good}");
        }
        for bad in [
            "https://127.1/x.git",
            "https://2130706433/x.git",
            "https://[::ffff:127.0.0.1]/x.git",
            "https://localhost./x.git",
            "https://0/x.git",
            "ssh://git@[fe80::1]/x.git",
            "https://100.64.0.1/x.git",
            "file:///srv/berth-data/mirrors/abc",
            "/etc",
            "http://github.com/acme/shop.git",
            "git://github.com/acme/shop.git",
            "https://user:token@github.com/acme/shop.git",
            "https://127.0.0.1/x.git",
            "https://localhost/x.git",
            "https://169.254.169.254/latest",
            "https://10.0.0.5/x.git",
            "ssh://[::1]/x.git",
            "git@192.168.1.2:x.git",
        ] {
            assert!(repository_url(bad, &public).is_err(), "{bad}");
        }
        assert_eq!(
            repository_url("file:///tmp/repo", &EgressPolicy::open()),
            Ok(())
        );
    }
}
