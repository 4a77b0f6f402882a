//! Construction shared by the capabilities' unit tests: a plugin's description, an invocation in
//! `acme/shop/staging` with chosen grants and lent contexts, and the [`RunState`] its host calls
//! see. Tests call each interface's `Host` methods on that state directly, so they need no
//! component, server or container. The door assertions live here too, so that every capability
//! is held to the same three rules: no grant is a denial on record, a grant for another scope is
//! no grant, and a granted call this run has nothing for answers `unsupported`.

use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_backends::ssh::{HostKey, SshPool, Target};

use super::operation::RunContext;
use super::ssh::ServerAccess;
use crate::audit::{AuditRecord, MemoryAudit};
use crate::bindings::Fault;
use crate::bindings::operation::{
    EnvironmentSettings, Repository, RepositoryLevel, Resources, RunInputs,
};
use crate::bindings::types::{Environment, Error, Operation, Role, RunInfo, Server, Stage};
use crate::description::{ConfigKey, Description};
use crate::grants::{Capability, EnvRef, Grant, Scope};
use crate::invoke::Invocation;
use crate::limits::{LimitExceeded, Limits};
use crate::runlog::MemoryLog;
use crate::state::RunState;

/// The plugin every test run invokes.
pub(crate) const PLUGIN: &str = "probe";
/// How audit records and messages name it.
pub(crate) const LABEL: &str = "probe@1.0.0";
/// The environment every test run is about.
pub(crate) const SCOPE: &str = "acme/shop/staging";
pub(crate) const RUN_ID: &str = "run-1";

/// The server the run's environment is on.
pub(crate) const SERVER: &str = "web-1";

/// The scope of the run's own environment.
pub(crate) fn staging() -> Scope {
    Scope::environment("acme", "shop", "staging")
}

/// The narrowest scope `capability` is granted in for the run: its server for a server-wide
/// capability, its environment otherwise.
pub(crate) fn run_scope(capability: &str) -> Scope {
    let env = EnvRef {
        organization: "acme".into(),
        project: "shop".into(),
        environment: "staging".into(),
        server: SERVER.into(),
    };
    Scope::of_run(&capability_of(capability), &env)
}

/// One invocation of [`PLUGIN`] being put together: what it declares, what it was granted, what
/// the run lent it, and the sinks its audit records and log lines land in.
pub(crate) struct Run {
    description: Description,
    grants: Vec<Grant>,
    invocation: Invocation,
    pub(crate) audit: Arc<MemoryAudit>,
    pub(crate) log: Arc<MemoryLog>,
}

impl Run {
    /// A plugin of `role` that declares nothing, in a run that grants and lends nothing.
    pub(crate) fn new(role: Role) -> Self {
        let audit = Arc::new(MemoryAudit::default());
        let log = Arc::new(MemoryLog::default());
        let run = RunInfo {
            id: RUN_ID.into(),
            operation: Operation::Redeploy,
            environment: Environment {
                organization: "acme".into(),
                project: "shop".into(),
                name: "staging".into(),
                stage: Stage::Staging,
                odoo_version: "17.0".into(),
                branch: Some("main".into()),
                server: Server {
                    name: SERVER.into(),
                    host: "127.0.0.1".into(),
                    port: 22,
                },
            },
        };
        Run {
            description: Description {
                name: PLUGIN.into(),
                version: "1.0.0".into(),
                role,
                summary: String::new(),
                hooks: match role {
                    Role::Hook => vec!["after:*".into()],
                    _ => vec![],
                },
                priority: 0,
                capabilities: vec![],
                config: vec![],
                conventions: None,
            },
            grants: vec![],
            invocation: Invocation::new(run).audit(audit.clone()).log(log.clone()),
            audit,
            log,
        }
    }

    pub(crate) fn hook() -> Self {
        Run::new(Role::Hook)
    }

    pub(crate) fn lifecycle() -> Self {
        Run::new(Role::Lifecycle)
    }

    /// Declares `capability`, without granting it.
    pub(crate) fn declares(mut self, capability: &str) -> Self {
        self.description
            .capabilities
            .push(capability_of(capability));
        self
    }

    /// Declares `capability` and grants it for the run's environment (its server, for a
    /// server-wide capability).
    pub(crate) fn granted(self, capability: &str) -> Self {
        self.declares(capability)
            .grant_in(capability, run_scope(capability))
    }

    /// Grants `capability` to [`PLUGIN`] within `scope` (declared or not).
    pub(crate) fn grant_in(self, capability: &str, scope: Scope) -> Self {
        self.grant_to(PLUGIN, capability, scope)
    }

    /// Grants `capability` to the plugin named `plugin` within `scope`.
    pub(crate) fn grant_to(mut self, plugin: &str, capability: &str, scope: Scope) -> Self {
        self.grants.push(Grant {
            plugin: plugin.into(),
            capability: capability_of(capability),
            scope,
        });
        self
    }

    /// Lends the invocation `context`, as the caller of a real run would.
    pub(crate) fn lend<T: ?Sized + Send + Sync + 'static>(mut self, context: Arc<T>) -> Self {
        self.invocation = self.invocation.lend(context);
        self
    }

    /// Changes the invocation's limits.
    pub(crate) fn limits(mut self, change: impl FnOnce(&mut Limits)) -> Self {
        let mut limits = self.invocation.limits.clone();
        change(&mut limits);
        self.invocation = self.invocation.limits(limits);
        self
    }

    /// Declares a configuration key, with its default.
    pub(crate) fn config_key(mut self, name: &str, default: Option<&str>) -> Self {
        self.description.config.push(ConfigKey {
            name: name.into(),
            description: String::new(),
            required: false,
            default: default.map(Into::into),
        });
        self
    }

    /// The state one invocation's host calls see; each call builds a fresh one.
    pub(crate) fn state(&self) -> RunState {
        let invocation = self.invocation.clone().grants(self.grants.clone());
        RunState::new(Arc::new(self.description.clone()), &invocation)
    }

    /// What the invocation wrote to its audit sink.
    pub(crate) fn audited(&self) -> Vec<AuditRecord> {
        self.audit.records()
    }
}

fn capability_of(name: &str) -> Capability {
    name.parse()
        .unwrap_or_else(|e| panic!("test capability {name:?}: {e}"))
}

/// The WIT error a call answered; panics on a value or a trap.
pub(crate) fn guest_error<T: Debug>(result: Result<T, Fault>) -> Error {
    match result {
        Err(Fault::Guest(err)) => err,
        Err(Fault::Trap(trap)) => panic!("expected a WIT error, got a trap: {trap:#}"),
        Ok(value) => panic!("expected a WIT error, got {value:?}"),
    }
}

/// The limit a call trapped on; panics on anything else.
pub(crate) fn limit_trap(err: &wasmtime::Error) -> LimitExceeded {
    err.chain()
        .find_map(|e| e.downcast_ref::<LimitExceeded>())
        .unwrap_or_else(|| panic!("expected a limit trap, got {err:#}"))
        .clone()
}

/// Asserts `record` is the door's record of `call` using `capability`, with `allowed`.
pub(crate) fn assert_record(record: &AuditRecord, capability: &str, call: &str, allowed: bool) {
    assert_eq!(record.plugin, LABEL, "{record:?}");
    assert_eq!(record.run, RUN_ID, "{record:?}");
    assert_eq!(record.scope, SCOPE, "{record:?}");
    assert_eq!(record.capability, capability, "{record:?}");
    assert_eq!(record.call, call, "{record:?}");
    assert_eq!(record.allowed, allowed, "{record:?}");
}

/// Asserts that `attempt` is refused at the door of `call` with `denied`, naming `capability`,
/// and that the refusal is on record, whether the plugin declared the capability without being
/// granted it or was granted it without declaring it.
pub(crate) async fn assert_denied_without_grant<T: Debug>(
    capability: &str,
    call: &str,
    mut attempt: impl AsyncFnMut(&mut RunState) -> Result<T, Fault>,
) {
    let declared_only = Run::lifecycle().declares(capability);
    let granted_only = Run::lifecycle().grant_in(capability, run_scope(capability));
    for (case, run) in [
        ("declared, not granted", declared_only),
        ("granted, not declared", granted_only),
    ] {
        let mut state = run.state();
        let err = guest_error(attempt(&mut state).await);
        let Error::Denied(message) = &err else {
            panic!("{call} ({case}): expected denied, got {err:?}");
        };
        assert!(
            message.contains(&format!("`{capability}`")),
            "{call} ({case}): the denial must name the capability: {message}"
        );
        assert!(
            message.contains(LABEL) && message.contains(SCOPE),
            "{call} ({case}): {message}"
        );
        let records = run.audited();
        assert_eq!(records.len(), 1, "{call} ({case}): {records:?}");
        assert_record(&records[0], capability, call, false);
    }
}

/// Asserts that a grant of `capability` for another environment, another project or another
/// plugin does not open the door of `call`, while an organization-wide grant does. A server-wide
/// capability is opened by a grant for the run's server only: never by one for its environment or
/// organization, nor for another server.
pub(crate) async fn assert_other_scopes_do_not_count<T: Debug>(
    capability: &str,
    call: &str,
    mut attempt: impl AsyncFnMut(&mut RunState) -> Result<T, Fault>,
) {
    let server_wide = capability_of(capability).is_server_wide();
    let mut elsewhere = vec![
        ("another server", PLUGIN, Scope::server("acme", "web-2")),
        (
            "another organization's server",
            PLUGIN,
            Scope::server("globex", SERVER),
        ),
        ("another plugin", "other", run_scope(capability)),
    ];
    if server_wide {
        elsewhere.push(("the run's own environment", PLUGIN, staging()));
        elsewhere.push(("the organization", PLUGIN, Scope::organization("acme")));
    }
    elsewhere.extend([
        (
            "another environment",
            PLUGIN,
            Scope::environment("acme", "shop", "production"),
        ),
        (
            "another project",
            PLUGIN,
            Scope::environment("acme", "blog", "staging"),
        ),
        (
            "another organization",
            PLUGIN,
            Scope::environment("globex", "shop", "staging"),
        ),
    ]);
    for (case, plugin, scope) in elsewhere {
        let run = Run::lifecycle()
            .declares(capability)
            .grant_to(plugin, capability, scope);
        let err = guest_error(attempt(&mut run.state()).await);
        assert!(
            matches!(err, Error::Denied(_)),
            "{call} with a grant for {case}: expected denied, got {err:?}"
        );
        let records = run.audited();
        assert_eq!(records.len(), 1, "{call} ({case}): {records:?}");
        assert_record(&records[0], capability, call, false);
    }
    let covering = if server_wide {
        run_scope(capability)
    } else {
        Scope::organization("acme")
    };
    let run = Run::lifecycle()
        .declares(capability)
        .grant_in(capability, covering.clone());
    let result = attempt(&mut run.state()).await;
    assert!(
        !matches!(result, Err(Fault::Guest(Error::Denied(_)))),
        "{call}: a grant for {covering} covers the run: {result:?}"
    );
}

/// Asserts that with `capability` granted but nothing lent, `call` answers `unsupported` with
/// `"{call}: {missing}"`, after recording the allowed use when the capability is sensitive.
pub(crate) async fn assert_unsupported_when_nothing_lent<T: Debug>(
    capability: &str,
    call: &str,
    missing: &str,
    mut attempt: impl AsyncFnMut(&mut RunState) -> Result<T, Fault>,
) {
    let run = Run::lifecycle().granted(capability);
    let err = guest_error(attempt(&mut run.state()).await);
    let Error::Unsupported(message) = &err else {
        panic!("{call}: expected unsupported, got {err:?}");
    };
    assert_eq!(message, &format!("{call}: {missing}"));
    let records = run.audited();
    if capability_of(capability).is_sensitive() {
        assert_eq!(records.len(), 1, "{call}: {records:?}");
        assert_record(&records[0], capability, call, true);
    } else {
        assert!(records.is_empty(), "{call}: {records:?}");
    }
}

/// A run's server that no test reaches: an SSH pool with a fresh key (kept in `dir`) aimed at a
/// closed local port, so a call that got as far as connecting would fail at once, not hang.
pub(crate) fn server_access(
    dir: &Path,
    database: Option<berth_backends::database::DbAccess>,
) -> ServerAccess {
    let key = dir.join("id_ed25519");
    berth_backends::ssh::generate_key(&key, "berth-test").expect("generate a test key");
    let pool = SshPool::new(&key).expect("open the test pool");
    ServerAccess {
        pool: Arc::new(pool),
        target: Target {
            name: SERVER.into(),
            host: "127.0.0.1".into(),
            port: 1,
            user: "berth".into(),
            host_key: HostKey::first_contact_in_memory(),
        },
        database,
    }
}

/// A run's record (what the engine lends `operation`), as far as the tests look: its facts and deployed commits.
#[derive(Default)]
pub(crate) struct Record {
    pub(crate) notes: Mutex<Vec<(String, String)>>,
    pub(crate) deployed: Mutex<Vec<(String, String)>>,
}

impl RunContext for Record {
    fn settings(&self) -> EnvironmentSettings {
        EnvironmentSettings {
            dev_mode: false,
            domain: Some("shop.example.com".into()),
            resources: Resources {
                cpu_millis: 1000,
                memory_mb: 2048,
                workers: 2,
            },
            odoo_image: "odoo:17".into(),
            postgres_image: "postgres:16".into(),
            http_port: 8069,
            directory: "/srv/berth/acme/shop/staging".into(),
        }
    }

    fn repositories(&self) -> Vec<Repository> {
        vec![Repository {
            name: "shop".into(),
            level: RepositoryLevel::Project,
            url: "https://example.com/shop.git".into(),
            branch: "main".into(),
            deployed: None,
            pinned: None,
        }]
    }

    fn inputs(&self) -> RunInputs {
        RunInputs::None
    }

    fn note(&self, key: &str, value: &str) {
        self.notes.lock().unwrap().push((key.into(), value.into()));
    }

    fn facts(&self) -> String {
        let notes = self.notes.lock().unwrap();
        let object: serde_json::Map<String, serde_json::Value> = notes
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::Value::Object(object).to_string()
    }

    fn deployed(&self, name: &str, commit: &str) -> bool {
        let known = self.repositories().iter().any(|r| r.name == name);
        if known {
            self.deployed
                .lock()
                .unwrap()
                .push((name.into(), commit.into()));
        }
        known
    }
}
