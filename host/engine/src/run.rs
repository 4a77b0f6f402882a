//! The step loop of one run.
//!
//! Before anything runs, the run's world is assembled from the state (environment, server,
//! repositories, secrets, grants); the lifecycle plugin then names the steps, which are persisted
//! as `pending`. Each step is: `before:<step>` hooks (an abort stops the run before the step), the
//! step in the sandbox (state and timing persisted before and after, with the time spent inside
//! host primitives), `after:<step>` hooks. The first failure ends the run with that step's error;
//! a cancel abandons the step in progress. Success records the deployed commits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_backends::database::DbAccess;
use berth_backends::docker::Scope;
use berth_backends::ssh::Target;
use berth_runtime::grants::{EnvRef, Scope as GrantScope};
use berth_runtime::settings::Secret;
use berth_runtime::{
    Capability, Conventions, Environment, EnvironmentSettings, Event, Grant, Invocation, Limits,
    Operation, Plugin, Repository, RepositoryLevel, Resources, RunContext, RunInfo, RunInputs,
    Server, ServerAccess, Settings, Stage, StepContext, StepOutcome, Workspace,
};
use berth_state::{EventKind, NewEvent, RunStatus, StepStatus};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::context::{RunAudit, RunCtx, RunLog};
use crate::{Engine, EngineError, lifecycle_for, random_secret};

/// Everything a run's invocations share.
struct Prepared {
    lifecycle: Arc<Plugin>,
    invocation: Invocation,
    context: Arc<RunCtx>,
    log: Arc<RunLog>,
    org_id: i64,
}

/// Runs `run_id` to its end; every outcome is persisted.
pub(crate) async fn execute(
    engine: &Arc<Engine>,
    run_id: i64,
    operation: Operation,
    inputs: RunInputs,
    cancel: Arc<Notify>,
) {
    announce(engine, run_id, "run started");
    // A pushed commit the tracked branch does not reach is refused before anything is prepared.
    if let Err(error) = crate::pushed::check(engine, run_id, &inputs).await {
        return finish(engine, run_id, RunStatus::Failed, Some(&error.to_string()));
    }
    let prepared = match prepare(engine, run_id, operation, inputs) {
        Ok(prepared) => prepared,
        Err(error) => return finish(engine, run_id, RunStatus::Failed, Some(&error.to_string())),
    };
    let (status, error) = steps(engine, &prepared, operation, cancel).await;
    let hooks = engine.plugins.hooks_for(prepared.org_id);
    let invocation = prepared.invocation.clone().limits(Limits::default());
    let (point, failure) = match status {
        RunStatus::Succeeded => ("on-success", None),
        _ => ("on-failure", error.clone()),
    };
    let event = hook_event(&invocation, point, None, failure, &prepared.context);
    prepared.log.set_step(None);
    let outcome = hooks.dispatch(&engine.runtime, &invocation, &event).await;
    if let Some(reason) = outcome.stop_reason() {
        note_line(engine, run_id, None, "warn", &format!("{point}: {reason}"));
    }
    // The workspace is the run's scratch space: it ends with the run, so the control plane's
    // disk does not grow with every run a plugin wrote files in.
    let workspace = workspace_dir(engine, run_id);
    if let Err(e) = std::fs::remove_dir_all(&workspace)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(run = run_id, "cannot remove the run's workspace: {e}");
    }
    finish(engine, run_id, status, error.as_deref());
}

/// Where run `run_id` keeps its workspace (the `files` capability's directory).
fn workspace_dir(engine: &Engine, run_id: i64) -> std::path::PathBuf {
    engine.data_dir().join("runs").join(run_id.to_string())
}

/// The lifecycle's steps, in order, with their hooks. Returns how the run ended.
async fn steps(
    engine: &Arc<Engine>,
    prepared: &Prepared,
    operation: Operation,
    cancel: Arc<Notify>,
) -> (RunStatus, Option<String>) {
    let run_id = prepared.context.run_id;
    let lifecycle = &prepared.lifecycle;
    let invocation = &prepared.invocation;
    let names = match lifecycle
        .steps(&engine.runtime, invocation, operation.into())
        .await
    {
        Ok(names) => names,
        Err(source) => {
            let error = EngineError::Plan { operation, source };
            return (RunStatus::Failed, Some(error.to_string()));
        }
    };
    if let Err(e) = engine.store.plan_steps(run_id, &names) {
        return (
            RunStatus::Failed,
            Some(format!("cannot record the plan: {e}")),
        );
    }
    announce(engine, run_id, &format!("plan: {}", names.join(", ")));
    let hooks = engine.plugins.hooks_for(prepared.org_id);
    let hook_invocation = invocation.clone().limits(Limits::default());

    // Stops the run: the steps not run are marked cancelled.
    let stop = |status: RunStatus, error: String| {
        logged(
            run_id,
            engine.store.cancel_pending_steps(run_id).map(|_| ()),
        );
        (status, Some(error))
    };
    let hook_point = async |point: String, step: &str| {
        let event = hook_event(
            &hook_invocation,
            &point,
            Some(step),
            None,
            &prepared.context,
        );
        let outcome = hooks
            .dispatch(&engine.runtime, &hook_invocation, &event)
            .await;
        outcome.stop_reason()
    };

    for (position, name) in names.iter().enumerate() {
        let position = position as u32;
        if engine.store.cancel_requested(run_id).unwrap_or(false) {
            return stop(RunStatus::Cancelled, format!("cancelled before {name}"));
        }
        logged(run_id, engine.store.set_current_step(run_id, Some(name)));
        prepared.log.set_step(Some(name));

        if let Some(reason) = hook_point(format!("before:{name}"), name).await {
            let error = format!("stopped before {name}: {reason}");
            let ending = Ending::error(StepStatus::Cancelled, &error, None, error.clone());
            end_step(engine, run_id, position, name, ending);
            return stop(RunStatus::Failed, error);
        }

        logged(run_id, engine.store.step_started(run_id, position));
        step_event(engine, run_id, name, "running", "");
        let context = StepContext {
            run: invocation.run.clone(),
            step: name.clone(),
            attempt: 1,
        };
        prepared.context.take_host_time();
        let started = Instant::now();
        let step = lifecycle
            .run_step(&engine.runtime, invocation, &context)
            .instrument(tracing::info_span!("step", step = %name));
        let outcome = tokio::select! {
            outcome = step => Some(outcome),
            () = cancel.notified() => None,
        };
        let wall = started.elapsed();
        let host = prepared.context.take_host_time();
        let host_ms = Some(host.as_millis() as i64);
        let timing = format!(
            "[{:.2}s, host primitives {:.2}s]",
            wall.as_secs_f64(),
            host.as_secs_f64()
        );
        match outcome {
            None => {
                let error = format!("cancelled during {name}");
                let ending = Ending::error(StepStatus::Cancelled, &error, host_ms, timing);
                end_step(engine, run_id, position, name, ending);
                return stop(RunStatus::Cancelled, error);
            }
            Some(Ok(StepOutcome::Done(summary))) => {
                let detail = format!("{} {timing}", summary.as_deref().unwrap_or(""));
                let ending = Ending::summary(StepStatus::Done, summary.as_deref(), host_ms, detail);
                end_step(engine, run_id, position, name, ending);
            }
            Some(Ok(StepOutcome::Skipped(reason))) => {
                let ending =
                    Ending::summary(StepStatus::Skipped, Some(&reason), host_ms, reason.clone());
                end_step(engine, run_id, position, name, ending);
            }
            Some(Err(e)) => {
                let error = e.to_string();
                let detail = format!("{error} {timing}");
                let ending = Ending::error(StepStatus::Failed, &error, host_ms, detail);
                end_step(engine, run_id, position, name, ending);
                return stop(RunStatus::Failed, format!("step {name} failed: {error}"));
            }
        }

        if let Some(reason) = hook_point(format!("after:{name}"), name).await {
            return stop(RunStatus::Failed, format!("stopped after {name}: {reason}"));
        }
    }
    logged(run_id, engine.store.set_current_step(run_id, None));
    let env_id = prepared.context.env_id;
    let revisions = prepared.context.deployed_revisions();
    // Only a run that deploys code says which commits the environment runs: a backup or a
    // restore deploys none, and recording its empty list would make the next push Full.
    let recorded = if operation.deploys() {
        engine
            .store
            .set_deployed_revisions(env_id, &revisions)
            .and_then(|()| engine.store.set_deployed(env_id))
    } else {
        Ok(())
    };
    if let Err(e) = recorded {
        return (
            RunStatus::Failed,
            Some(format!("cannot record the deployed commits: {e}")),
        );
    }
    if operation == Operation::Backup {
        let facts = prepared.context.facts_value();
        let recorded = engine
            .store
            .run_by_id(run_id)
            .map_err(EngineError::from)
            .and_then(|run| crate::backups::record(engine, &run, &facts));
        if let Err(e) = recorded {
            return (
                RunStatus::Failed,
                Some(format!("cannot record the backup: {e}")),
            );
        }
    }
    (RunStatus::Succeeded, None)
}

/// Assembles the run's world from the state: its lifecycle plugin, and the invocation that lends
/// each capability its context — the server, the mirrors, the run's record, the workspace, the
/// secrets, the storage targets.
fn prepare(
    engine: &Arc<Engine>,
    run_id: i64,
    operation: Operation,
    inputs: RunInputs,
) -> Result<Prepared, EngineError> {
    let store = &engine.store;
    let plugin = lifecycle_for(operation);
    let lifecycle = engine
        .plugins
        .lifecycle(plugin)
        .ok_or(EngineError::NoLifecycle { operation, plugin })?;
    let conventions =
        lifecycle
            .description()
            .conventions
            .clone()
            .ok_or_else(|| EngineError::NoConventions {
                plugin: lifecycle.description().label(),
            })?;
    let run = store.run_by_id(run_id)?;
    let env = store.environment_by_id(run.environment_id)?;
    let org = store.organization(env.organization_id)?;
    let project = store.project(env.organization_id, env.project_id)?;
    let server = store.server(env.organization_id, env.server_id)?;
    let span = tracing::Span::current();
    span.record("organization", org.name.as_str());
    span.record("project", project.name.as_str());
    span.record("environment", env.name.as_str());

    let settings = secrets(engine, env.id, &conventions)?;
    let database_password = settings
        .secrets
        .get(&conventions.database.password_secret)
        .map(|s| s.expose().to_string())
        .unwrap_or_default();
    let repositories = repositories(engine, &env, &inputs)?;
    let scope = Scope::environment(&org.name, &project.name, &env.name);
    let environment_settings = EnvironmentSettings {
        dev_mode: env.dev_mode,
        domain: env.domain.clone(),
        resources: Resources {
            cpu_millis: (env.cpus * 1000.0) as u32,
            memory_mb: env.memory_mb,
            workers: env.workers,
        },
        odoo_image: env
            .odoo_image
            .clone()
            .unwrap_or_else(|| conventions.app_image(&env.odoo_version)),
        postgres_image: env
            .postgres_image
            .clone()
            .unwrap_or_else(|| conventions.default_database_image.clone()),
        http_port: env.http_port,
        directory: scope.root.clone(),
    };
    let context = Arc::new(RunCtx {
        engine: Arc::downgrade(engine),
        run_id,
        env_id: env.id,
        settings: environment_settings,
        repositories,
        inputs,
        facts: Mutex::new(serde_json::Map::new()),
        deployed: Mutex::new(Default::default()),
        host_time: Mutex::new(Duration::ZERO),
    });
    let log = Arc::new(RunLog {
        engine: Arc::downgrade(engine),
        run_id,
        step: Mutex::new(None),
    });
    let stage = match env.stage.as_str() {
        "production" => Stage::Production,
        "staging" => Stage::Staging,
        _ => Stage::Development,
    };
    let environment = Environment {
        organization: org.name.clone(),
        project: project.name.clone(),
        name: env.name.clone(),
        stage,
        odoo_version: env.odoo_version.clone(),
        branch: env.branch.clone(),
        server: Server {
            name: server.name.clone(),
            host: server.host.clone(),
            port: server.port,
        },
    };
    let env_ref = EnvRef {
        organization: org.name.clone(),
        project: project.name.clone(),
        environment: env.name.clone(),
        server: server.name.clone(),
    };
    let grants = grants(engine, env.id, &env_ref)?;
    let key = engine.ssh_key_path(env.organization_id, &server.ssh_key)?;
    let pool = engine.pool(&key)?;
    let workspace = workspace_dir(engine, run_id);
    std::fs::create_dir_all(&workspace).map_err(|source| EngineError::Workspace {
        path: workspace.clone(),
        source,
    })?;
    let database = &conventions.database;
    let invocation = Invocation::new(RunInfo {
        id: run_id.to_string(),
        operation: operation.into(),
        environment,
    })
    .grants(grants)
    .audit(Arc::new(RunAudit {
        engine: Arc::downgrade(engine),
        run_id,
    }))
    .log(log.clone())
    .limits(Limits::step())
    .lend(Arc::new(settings))
    .lend(Arc::new(Workspace::new(workspace)))
    .lend(Arc::new(ServerAccess {
        pool,
        target: Target {
            name: server.name.clone(),
            host: server.host.clone(),
            port: server.port,
            user: server.user.clone(),
            host_key: engine.host_key(server.host_key.clone(), crate::PinOn::Server(server.id)),
        },
        database: Some(DbAccess {
            host: String::new(),
            port: database.port,
            user: database.user.clone(),
            password: database_password,
            container: database.container.clone(),
        }),
    }))
    .lend(engine.mirrors.clone())
    .lend::<dyn RunContext>(context.clone());
    let targets = crate::backups::targets_for(engine, env.organization_id, &invocation)?;
    let invocation = invocation.lend(Arc::new(targets));
    Ok(Prepared {
        lifecycle,
        invocation,
        context,
        log,
        org_id: env.organization_id,
    })
}

/// The environment's secrets, after generating those the lifecycle's conventions name and the
/// environment lacks.
fn secrets(
    engine: &Engine,
    env_id: i64,
    conventions: &Conventions,
) -> Result<Settings, EngineError> {
    let store = &engine.store;
    for name in &conventions.generated_secrets {
        if store.secret(env_id, name)?.is_none() {
            store.set_secret(env_id, name, &random_secret())?;
        }
    }
    let mut settings = Settings::default();
    for (name, value) in store.secrets(env_id)? {
        settings.secrets.insert(name, Secret::new(value));
    }
    Ok(settings)
}

/// The environment's repositories at the three levels, each with the commit it last deployed
/// and, for the one a push was made to, the commit pushed.
fn repositories(
    engine: &Engine,
    env: &berth_state::Environment,
    inputs: &RunInputs,
) -> Result<Vec<(i64, Repository)>, EngineError> {
    let store = &engine.store;
    let branch = env.branch.clone().unwrap_or_else(|| "main".into());
    let deployed = store.deployed_revisions(env.id)?;
    let push = match inputs {
        RunInputs::Push(push) => Some(push),
        _ => None,
    };
    let repositories = store
        .repositories_for(env.id)?
        .into_iter()
        .map(|r| {
            let level = match r.level {
                berth_state::RepositoryLevel::Platform => RepositoryLevel::Platform,
                berth_state::RepositoryLevel::Organization => RepositoryLevel::Organization,
                berth_state::RepositoryLevel::Project => RepositoryLevel::Project,
            };
            let is_project = level == RepositoryLevel::Project;
            let repository = Repository {
                name: r.name.clone(),
                level,
                url: r.url.clone(),
                branch: r.branch.clone().unwrap_or_else(|| {
                    if is_project {
                        branch.clone()
                    } else {
                        "main".into()
                    }
                }),
                deployed: deployed
                    .iter()
                    .find(|(id, _)| *id == r.id)
                    .map(|(_, c)| c.clone()),
                pinned: push
                    .filter(|p| p.repository.as_deref() == Some(r.name.as_str()))
                    .map(|p| p.commit.clone()),
            };
            (r.id, repository)
        })
        .collect();
    Ok(repositories)
}

/// What each plugin may do in this run: the platform's lifecycle plugins hold what they declare
/// (the platform team vouches for them), each server-wide capability for the run's server; hook
/// plugins what their organization granted for this environment (or wider), or for its server.
fn grants(engine: &Engine, env_id: i64, env: &EnvRef) -> Result<Vec<Grant>, EngineError> {
    let mut grants = Vec::new();
    for plugin in engine.plugins.platform().iter() {
        if plugin.description().role == berth_runtime::Role::Lifecycle {
            for capability in &plugin.description().capabilities {
                grants.push(Grant {
                    plugin: plugin.name().to_string(),
                    capability: capability.clone(),
                    scope: GrantScope::of_run(capability, env),
                });
            }
        }
    }
    let env_scope = GrantScope::environment(&env.organization, &env.project, &env.environment);
    for grant in engine.store.grants_for(env_id)? {
        let capability: Capability =
            grant
                .capability
                .parse()
                .map_err(
                    |e: berth_runtime::grants::UnknownCapability| EngineError::Grant {
                        id: grant.id,
                        message: e.to_string(),
                    },
                )?;
        // The store gave the grants covering this environment: a server's grant is its server's.
        let scope = match grant.server_id {
            Some(_) => GrantScope::server(&env.organization, &env.server),
            None => env_scope.clone(),
        };
        grants.push(Grant {
            plugin: grant.plugin,
            capability,
            scope,
        });
    }
    Ok(grants)
}

fn hook_event(
    invocation: &Invocation,
    point: &str,
    step: Option<&str>,
    failure: Option<String>,
    context: &RunCtx,
) -> Event {
    let payload = serde_json::json!({
        "inputs": crate::context::inputs_json(&context.inputs),
        "facts": context.facts_value(),
    });
    Event {
        point: point.to_string(),
        run: invocation.run.clone(),
        step: step.map(str::to_string),
        failure,
        payload: payload.to_string(),
    }
}

/// How a step ended, as persisted and announced.
struct Ending<'a> {
    status: StepStatus,
    summary: Option<&'a str>,
    error: Option<&'a str>,
    host_ms: Option<i64>,
    /// The line of the step's event.
    detail: String,
}

impl<'a> Ending<'a> {
    fn summary(
        status: StepStatus,
        summary: Option<&'a str>,
        host_ms: Option<i64>,
        detail: String,
    ) -> Self {
        Ending {
            status,
            summary,
            error: None,
            host_ms,
            detail,
        }
    }

    fn error(status: StepStatus, error: &'a str, host_ms: Option<i64>, detail: String) -> Self {
        Ending {
            status,
            summary: None,
            error: Some(error),
            host_ms,
            detail,
        }
    }
}

fn end_step(engine: &Engine, run_id: i64, position: u32, name: &str, ending: Ending) {
    let stored = engine.store.step_finished(
        run_id,
        position,
        ending.status,
        ending.summary,
        ending.error,
        ending.host_ms,
    );
    logged(run_id, stored);
    step_event(
        engine,
        run_id,
        name,
        ending.status.as_str(),
        ending.detail.trim(),
    );
}

/// A state write that failed mid-run is reported; the run goes on (its outcome is written at the
/// end, and a control plane that cannot write at all fails that final write loudly).
fn logged(run_id: i64, result: Result<(), berth_state::StateError>) {
    if let Err(e) = result {
        tracing::error!(run = run_id, "cannot record its state: {e}");
    }
}

fn step_event(engine: &Engine, run_id: i64, step: &str, state: &str, detail: &str) {
    let message = if detail.is_empty() {
        format!("{step}: {state}")
    } else {
        format!("{step}: {state}: {detail}")
    };
    engine.emit(NewEvent {
        run_id,
        kind: EventKind::Step,
        level: None,
        step: Some(step.to_string()),
        message,
        data: serde_json::json!({ "state": state }),
    });
}

fn announce(engine: &Engine, run_id: i64, message: &str) {
    engine.emit(NewEvent {
        run_id,
        kind: EventKind::Run,
        level: None,
        step: None,
        message: message.to_string(),
        data: serde_json::json!({}),
    });
}

fn note_line(engine: &Engine, run_id: i64, step: Option<&str>, level: &str, message: &str) {
    engine.emit(NewEvent {
        run_id,
        kind: EventKind::Log,
        level: Some(level.to_string()),
        step: step.map(str::to_string),
        message: message.to_string(),
        data: serde_json::json!({}),
    });
}

pub(crate) fn finish(engine: &Engine, run_id: i64, status: RunStatus, error: Option<&str>) {
    if let Err(e) = engine.store.finish_run(run_id, status, error) {
        tracing::error!(run = run_id, "cannot record its end: {e}");
    }
    finish_event(engine, run_id, status, error);
}

/// Tells the run's subscribers how it ended.
pub(crate) fn finish_event(engine: &Engine, run_id: i64, status: RunStatus, error: Option<&str>) {
    let status_name = serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    engine.emit(NewEvent {
        run_id,
        kind: EventKind::Run,
        level: None,
        step: None,
        message: match error {
            Some(error) => format!("run {status_name}: {error}"),
            None => format!("run {status_name}"),
        },
        data: serde_json::json!({ "status": status_name, "finished": true }),
    });
}
