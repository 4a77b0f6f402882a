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
//! - [`context`]: what a run lends its plugins (settings, repositories, facts, sinks into the state);
//! - [`run`]: the step loop.

pub mod backups;
pub mod context;
pub mod plugins;
pub mod run;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_backends::egress::{EgressPolicy, authority_host};
use berth_backends::git::Mirrors;
use berth_backends::ssh::SshPool;
use berth_runtime::{RunInputs, Runtime};
use berth_state::{Run, RunStatus, StateError, Store};
use tokio::sync::{Notify, broadcast};
use tracing::Instrument;

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
    /// Run workspaces, repository mirrors, known hosts, uploaded plugins.
    pub data_dir: PathBuf,
    /// Where the control plane may connect for a tenant (repositories, servers, storage
    /// endpoints): public addresses only, or also the ranges the operator opened.
    pub egress: EgressPolicy,
}

/// The live side of a run: its event stream and its cancel signal.
struct Live {
    events: broadcast::Sender<berth_state::Event>,
    cancel: Arc<Notify>,
}

pub struct Engine {
    pub store: Arc<Store>,
    pub runtime: Arc<Runtime>,
    pub plugins: Plugins,
    config: EngineConfig,
    mirrors: Arc<Mirrors>,
    known_hosts: PathBuf,
    pools: Mutex<HashMap<PathBuf, Arc<SshPool>>>,
    live: Mutex<HashMap<i64, Live>>,
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
            .map_err(|e| setup("cannot open the repository mirrors", &e))?;
        for run in store.interrupt_unfinished()? {
            tracing::warn!(
                run = run.id,
                operation = %run.operation,
                "run was interrupted: {}",
                run.error.as_deref().unwrap_or("")
            );
        }
        plugins.load_uploaded(&store, &runtime).await;
        Ok(Arc::new(Engine {
            store,
            runtime,
            plugins,
            known_hosts: config.data_dir.join("known_hosts"),
            config,
            mirrors: Arc::new(mirrors),
            pools: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            streams: Arc::default(),
        }))
    }

    /// Starts `operation` on environment `env_id` of organization `org_id`: the run is created (or
    /// refused with `busy` when one is in progress) and executed in the background.
    pub fn start(
        self: &Arc<Self>,
        org_id: i64,
        env_id: i64,
        operation: Operation,
        trigger: &str,
        inputs: RunInputs,
    ) -> Result<Run, EngineError> {
        self.start_with(org_id, env_id, operation, trigger, |_| inputs)
    }

    /// [`Engine::start`], with inputs that may name the run (a backup's key does).
    pub(crate) fn start_with(
        self: &Arc<Self>,
        org_id: i64,
        env_id: i64,
        operation: Operation,
        trigger: &str,
        inputs: impl FnOnce(i64) -> RunInputs,
    ) -> Result<Run, EngineError> {
        self.store.environment(org_id, env_id)?;
        let facts = serde_json::json!({});
        let run = self
            .store
            .create_run(env_id, operation.as_str(), trigger, facts)?;
        let (events, _) = broadcast::channel(1024);
        let cancel = Arc::new(Notify::new());
        self.live.lock().unwrap().insert(
            run.id,
            Live {
                events,
                cancel: cancel.clone(),
            },
        );
        let engine = self.clone();
        let run_id = run.id;
        let inputs = inputs(run_id);
        tokio::spawn(async move {
            // The run in its own task, so that even a panic (a bug) ends the run as failed instead
            // of leaving the environment busy forever.
            let worker = engine.clone();
            let span = tracing::info_span!(
                "run",
                run = run_id,
                %operation,
                organization = tracing::field::Empty,
                project = tracing::field::Empty,
                environment = tracing::field::Empty,
            );
            let outcome = tokio::spawn(
                async move { run::execute(&worker, run_id, operation, inputs, cancel).await }
                    .instrument(span.clone()),
            )
            .await;
            if let Err(e) = outcome {
                let error = format!("the control plane failed during the run: {e}");
                span.in_scope(|| tracing::error!("{error}"));
                run::finish(&engine, run_id, RunStatus::Failed, Some(&error));
            }
            engine
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&run_id);
        });
        Ok(run)
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

    /// Asks a run to stop: the step in progress is abandoned and no later step runs.
    pub fn cancel(&self, run_id: i64) -> Result<bool, EngineError> {
        self.store.request_cancel(run_id)?;
        let live = self.live.lock().unwrap();
        match live.get(&run_id) {
            Some(live) => {
                live.cancel.notify_one();
                Ok(true)
            }
            None => Ok(false),
        }
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

    /// The SSH pool for a private key (one per key the servers use).
    fn pool(&self, key: &std::path::Path) -> Result<Arc<SshPool>, EngineError> {
        let mut pools = self.pools.lock().unwrap();
        if let Some(pool) = pools.get(key) {
            return Ok(pool.clone());
        }
        let pool =
            SshPool::new(key, &self.known_hosts).map(|p| p.with_egress(self.config.egress.clone()));
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

    /// Refuses a storage target whose `endpoint` or `host` setting the egress policy refuses.
    pub fn check_target_settings(
        &self,
        settings: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let hosts = settings
            .get("endpoint")
            .map(|e| endpoint_host(e))
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

    /// Refuses a grant above the organization's ceiling: beyond it, only the operator decides.
    pub fn check_grant(&self, org_id: i64, capability: &str) -> Result<(), EngineError> {
        let ceiling = self.grant_ceiling(org_id)?;
        let covered = ceiling
            .iter()
            .any(|c| c == capability || (c == "secret:*" && capability.starts_with("secret:")));
        if covered {
            return Ok(());
        }
        Err(EngineError::Forbidden(format!(
            "capability `{capability}` is above the organization's grant ceiling ({}); the \
             operator can raise it",
            if ceiling.is_empty() {
                "nothing".to_string()
            } else {
                ceiling.join(", ")
            }
        )))
    }

    /// The egress policy every tenant connection goes through.
    pub fn egress(&self) -> &EgressPolicy {
        &self.config.egress
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.config.data_dir
    }
}

/// A random secret: 32 bytes, hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    hex::encode(bytes)
}

/// The host a repository URL names; refuses what no organization may use: a path or `file://` on
/// the control plane (other tenants' mirrors) unless the policy is open, a scheme other than
/// `https://`, `ssh://` or `user@host:path`, credentials in the URL (they are shown and logged),
/// and any host the egress policy refuses.
fn repository_url(url: &str, egress: &EgressPolicy) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("repository URL {url:?}: {why}"));
    let local = url.starts_with("file:") || url.starts_with('/') || url.starts_with('.');
    if local {
        return if egress.is_open() {
            Ok(())
        } else {
            refuse("a path on the control plane is not a repository an organization may use")
        };
    }
    let (authority, scp) = if let Some(rest) = url.strip_prefix("https://") {
        (rest.split('/').next().unwrap_or(""), false)
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        (rest.split('/').next().unwrap_or(""), false)
    } else if !url.contains("://") && url.contains('@') && url.contains(':') {
        (url.split(':').next().unwrap_or(""), true)
    } else {
        return refuse("use https://, ssh:// or user@host:path");
    };
    let userinfo = authority.rsplit_once('@').map(|(user, _)| user);
    if !scp && userinfo.is_some_and(|u| u.contains(':')) {
        return refuse("credentials do not belong in a URL (use an SSH deploy key)");
    }
    let host = authority_host(authority);
    if host.is_empty() {
        return refuse("it names no host");
    }
    egress
        .check_host(host)
        .map_err(|e| format!("repository URL {url:?}: {e}"))
}

/// The host of a storage target's `endpoint` URL (`https://host:port/…`).
fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    authority_host(rest.split('/').next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::{EgressPolicy, endpoint_host, repository_url};

    #[test]
    fn endpoint_hosts_are_read_from_urls() {
        assert_eq!(endpoint_host("http://127.0.0.1:9000/bucket"), "127.0.0.1");
        assert_eq!(endpoint_host("https://[::1]:443"), "::1");
        assert_eq!(
            endpoint_host("https://u:p@s3.example.com"),
            "s3.example.com"
        );
    }

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
