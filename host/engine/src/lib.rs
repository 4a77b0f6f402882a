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

pub mod context;
pub mod plugins;
pub mod run;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_primitives::git::Mirrors;
use berth_primitives::ssh::SshPool;
use berth_runtime::Runtime;
use berth_state::{Run, StateError, Store};
use tokio::sync::{Notify, broadcast};

pub use plugins::Plugins;

/// Which lifecycle plugin performs each operation by default.
pub const OPERATIONS: [(&str, &str); 3] = [
    ("first-deploy", "deploy"),
    ("redeploy", "deploy"),
    ("auto-deploy", "auto-deploy"),
];

/// Images used when an environment names none: the official ones, by version.
pub fn default_odoo_image(version: &str) -> String {
    format!("odoo:{version}")
}
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:16";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Setup(String),
}

/// Where the engine keeps its files, and how it reaches servers.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Run workspaces, repository mirrors, known hosts, uploaded plugins.
    pub data_dir: PathBuf,
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
    pools: Mutex<HashMap<String, Arc<SshPool>>>,
    live: Mutex<HashMap<i64, Live>>,
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
            eprintln!(
                "run {} ({}) was interrupted: {}",
                run.id,
                run.operation,
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
        }))
    }

    /// The lifecycle plugin that performs `operation`.
    pub fn lifecycle_for(operation: &str) -> Option<&'static str> {
        OPERATIONS
            .iter()
            .find(|(op, _)| *op == operation)
            .map(|(_, plugin)| *plugin)
    }

    /// Starts `operation` on environment `env_id` of organization `org_id`: the run is created (or
    /// refused with `busy` when one is in progress) and executed in the background.
    pub fn start(
        self: &Arc<Self>,
        org_id: i64,
        env_id: i64,
        operation: &str,
        trigger: &str,
        inputs: serde_json::Value,
    ) -> Result<Run, EngineError> {
        if Self::lifecycle_for(operation).is_none() {
            return Err(EngineError::Invalid(format!(
                "unknown operation {operation:?}"
            )));
        }
        self.store.environment(org_id, env_id)?;
        let facts = serde_json::json!({});
        let run = self.store.create_run(env_id, operation, trigger, facts)?;
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
        tokio::spawn(async move {
            run::execute(&engine, run_id, inputs, cancel).await;
            engine.live.lock().unwrap().remove(&run_id);
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
            Err(e) => eprintln!("run {run_id}: cannot record an event: {e}"),
        }
    }

    /// The SSH pool for a private key (one per key the servers use).
    fn pool(&self, key: &str) -> Result<Arc<SshPool>, String> {
        let mut pools = self.pools.lock().unwrap();
        if let Some(pool) = pools.get(key) {
            return Ok(pool.clone());
        }
        let pool = Arc::new(
            SshPool::new(std::path::Path::new(key), &self.known_hosts)
                .map_err(|e| format!("cannot use SSH key {key}: {e}"))?,
        );
        pools.insert(key.to_string(), pool.clone());
        Ok(pool)
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
