//! `berth plugin inspect|run`.
//!
//! Exit status of `run`: 0 the hook continued, 1 it aborted, 3 the invocation failed (trap,
//! timeout, limit, an error the plugin returned such as a denial), 4 the file is not a valid plugin,
//! 2 usage errors. Every failure is one line on stderr that says what happened.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::audit::AuditSink;
use berth_runtime::runlog::{LogSink, RunEvent};
use berth_runtime::{
    Capability, Environment, Event, Grant, Invocation, Limits, MemoryAudit, Operation, Plugin,
    RunInfo, Runtime, RuntimeOptions, Scope, Server, Settings, Stage, Verdict, Workspace,
};
use clap::{Args, Subcommand};

use crate::printable::printable;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Show what a plugin is: role, contract version, description, capabilities, imports.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Run a hook plugin once in the real sandbox, with a local harness as the run.
    Run(RunArgs),
}

#[derive(Args)]
pub struct CacheArgs {
    /// Where compiled plugins are cached [default: $XDG_CACHE_HOME/berth/components].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile every time; do not read or write the cache.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Args)]
pub struct RunArgs {
    file: PathBuf,
    /// The hook point, e.g. before:health-check.
    #[arg(long)]
    hook: String,
    /// The event as JSON: {"operation", "step", "failure", "payload", "run_id",
    /// "environment": {"organization", "project", "name", "stage", "odoo_version", "branch"}}.
    #[arg(long)]
    event: Option<String>,
    /// Grant a capability for this run (repeatable), e.g. --grant files --grant secret:token.
    #[arg(long = "grant", value_name = "CAP")]
    grants: Vec<String>,
    /// Wall-clock deadline, e.g. 500ms, 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Memory cap, e.g. 64MiB, 512K.
    #[arg(long, value_parser = parse_size)]
    memory: Option<usize>,
    /// Plugin configuration and secrets (TOML with [secrets] and [plugins.<name>.config]).
    #[arg(long)]
    settings: Option<PathBuf>,
    /// The run's workspace directory [default: a fresh temporary directory].
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

const EXIT_ABORT: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_FAILED: u8 = 3;
const EXIT_BAD_PLUGIN: u8 = 4;

pub async fn run(cmd: PluginCommand) -> ExitCode {
    match cmd {
        PluginCommand::Inspect { file, json, cache } => inspect(file, json, cache).await,
        PluginCommand::Run(args) => run_hook(args).await,
    }
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {}", printable(&message.to_string()));
    ExitCode::from(code)
}

fn runtime(cache: &CacheArgs) -> anyhow::Result<Runtime> {
    let cache_dir = if cache.no_cache {
        None
    } else {
        cache.cache_dir.clone().or_else(default_cache_dir)
    };
    Runtime::new(RuntimeOptions {
        cache_dir,
        ..Default::default()
    })
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("berth").join("components"))
}

async fn load(cache: &CacheArgs, file: &Path) -> Result<(Runtime, Plugin), ExitCode> {
    let runtime = runtime(cache).map_err(|e| fail(EXIT_FAILED, format!("{e:#}")))?;
    let plugin = runtime
        .load_file(file)
        .await
        .map_err(|e| fail(EXIT_BAD_PLUGIN, format!("{}: {e}", file.display())))?;
    Ok((runtime, plugin))
}

async fn inspect(file: PathBuf, as_json: bool, cache: CacheArgs) -> ExitCode {
    let (_runtime, plugin) = match load(&cache, &file).await {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if as_json {
        println!("{:#}", plugin.to_json());
        return ExitCode::SUCCESS;
    }
    let d = plugin.description();
    let role = berth_runtime::description::role_name(d.role);
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "(none)".to_string()
        } else {
            items.join(", ")
        }
    };
    println!("{} {}", d.name, d.version);
    println!("  role:          {role}");
    println!("  contract:      berth:plugin@{}", plugin.wit_version());
    println!("  summary:       {}", d.summary);
    if !d.hooks.is_empty() {
        println!(
            "  hooks:         {} (priority {})",
            d.hooks.join(", "),
            d.priority
        );
    }
    println!(
        "  capabilities:  {}",
        list(d.capabilities.iter().map(|c| c.to_string()).collect())
    );
    for key in &d.config {
        let default = key
            .default
            .as_deref()
            .map(|v| format!(" [default: {v}]"))
            .unwrap_or_default();
        println!(
            "  config:        {}: {}{default}",
            key.name, key.description
        );
    }
    println!("  imports:       {}", list(plugin.imports().to_vec()));
    println!("  sha256:        {}", plugin.hash());
    ExitCode::SUCCESS
}

async fn run_hook(args: RunArgs) -> ExitCode {
    let grants: Vec<Capability> = match args.grants.iter().map(|g| g.parse()).collect() {
        Ok(caps) => caps,
        Err(err) => return fail(EXIT_USAGE, err),
    };
    let event_json: Value = match args.event.as_deref().map(serde_json::from_str).transpose() {
        Ok(v) => v.unwrap_or_else(|| json!({})),
        Err(err) => return fail(EXIT_USAGE, format!("--event is not JSON: {err}")),
    };
    let event = match harness_event(&args.hook, &event_json) {
        Ok(e) => e,
        Err(err) => return fail(EXIT_USAGE, err),
    };
    let settings = match &args.settings {
        Some(path) => match Settings::load(path) {
            Ok(s) => s,
            Err(err) => return fail(EXIT_USAGE, format!("{err:#}")),
        },
        None => Settings::default(),
    };

    let (runtime, plugin) = match load(&args.cache, &args.file).await {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let d = plugin.description();
    if !d.subscribes_to(&args.hook) {
        return fail(
            EXIT_USAGE,
            format!(
                "{} does not subscribe to {} (it subscribes to: {})",
                d.label(),
                args.hook,
                d.hooks.join(", ")
            ),
        );
    }

    let scratch = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(err) => return fail(EXIT_FAILED, format!("cannot create a workspace: {err}")),
    };
    let audit = Arc::new(MemoryAudit::default());
    let mut limits = Limits::default();
    if let Some(timeout) = args.timeout {
        limits.deadline = timeout;
    }
    if let Some(memory) = args.memory {
        if memory > runtime.options().max_memory {
            return fail(
                EXIT_USAGE,
                format!(
                    "--memory may be at most {} bytes",
                    runtime.options().max_memory
                ),
            );
        }
        limits.memory = memory;
    }
    let workspace = args
        .workspace
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let invocation = Invocation::new(event.run.clone());
    // Each grant for the event's run: its server for a server-wide capability.
    let env = invocation.env_ref();
    let grants: Vec<Grant> = grants
        .into_iter()
        .map(|capability| Grant {
            plugin: d.name.clone(),
            scope: Scope::of_run(&capability, &env),
            capability,
        })
        .collect();
    let invocation = invocation
        .grants(grants)
        .audit(audit.clone() as Arc<dyn AuditSink>)
        .log(Arc::new(StderrLog))
        .limits(limits)
        .lend(Arc::new(settings))
        .lend(Arc::new(Workspace::new(workspace)));

    let outcome = plugin.handle(&runtime, &invocation, &event).await;
    for record in audit.records() {
        let decision = if record.allowed { "allowed" } else { "denied" };
        eprintln!(
            "audit: {decision} {} (capability {}) for {} in {}",
            record.call, record.capability, record.plugin, record.scope
        );
    }
    if args.json {
        let (verdict, reason, error) = match &outcome {
            Ok(Verdict::Continue) => ("continue", None, None),
            Ok(Verdict::Abort(r)) => ("abort", Some(r.clone()), None),
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        let audit: Vec<Value> = audit.records().iter().map(|r| r.to_json()).collect();
        println!(
            "{:#}",
            json!({"plugin": d.label(), "hook": args.hook, "verdict": verdict, "reason": reason, "error": error, "audit": audit})
        );
    }
    match outcome {
        Ok(Verdict::Continue) => {
            if !args.json {
                println!("verdict: continue");
            }
            ExitCode::SUCCESS
        }
        Ok(Verdict::Abort(reason)) => {
            if !args.json {
                println!("verdict: abort: {}", printable(&reason));
            }
            ExitCode::from(EXIT_ABORT)
        }
        Err(err) => fail(EXIT_FAILED, err),
    }
}

/// Builds the event the harness delivers, from the hook point and the optional JSON.
fn harness_event(point: &str, v: &Value) -> Result<Event, String> {
    let text = |v: &Value, key: &str, default: &str| -> Result<String, String> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("--event: {key} must be a string, not {other}")),
        }
    };
    let opt = |v: &Value, key: &str| -> Result<Option<String>, String> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("--event: {key} must be a string, not {other}")),
        }
    };
    let env = v.get("environment").cloned().unwrap_or_else(|| json!({}));
    let stage = match text(&env, "stage", "development")?.as_str() {
        "production" => Stage::Production,
        "staging" => Stage::Staging,
        "development" => Stage::Development,
        other => return Err(format!("--event: unknown stage {other:?}")),
    };
    let payload = v.get("payload").cloned().unwrap_or_else(|| json!({}));
    if !payload.is_object() {
        return Err("--event: payload must be a JSON object".into());
    }
    let step = match opt(v, "step")? {
        Some(step) => Some(step),
        None => point
            .split_once(':')
            .map(|(_, s)| s.to_string())
            .filter(|s| s != "*"),
    };
    Ok(Event {
        point: point.to_string(),
        run: RunInfo {
            id: text(v, "run_id", "local-run")?,
            operation: text(v, "operation", "redeploy")?
                .parse::<Operation>()
                .map_err(|e| format!("--event: {e}"))?
                .into(),
            environment: Environment {
                organization: text(&env, "organization", "local")?,
                project: text(&env, "project", "demo")?,
                name: text(&env, "name", "dev")?,
                stage,
                odoo_version: text(&env, "odoo_version", "17.0")?,
                branch: opt(&env, "branch")?,
                server: Server {
                    name: "local".into(),
                    host: "127.0.0.1".into(),
                    port: 22,
                },
            },
        },
        step,
        failure: opt(v, "failure")?,
        payload: payload.to_string(),
    })
}

/// `64MiB`, `64M`, `512K`, `1G`, or a number of bytes.
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{s:?}: unknown unit (use K, M or G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `plugin run` shows the plugin's log lines and progress on standard error, as they come.
struct StderrLog;

impl LogSink for StderrLog {
    fn event(&self, event: RunEvent) {
        eprintln!("{}", printable(&event.render()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err() && parse_size("3T").is_err());
    }

    #[test]
    fn harness_event_defaults_and_overrides() {
        let e = harness_event("before:health-check", &json!({})).unwrap();
        assert_eq!(e.step.as_deref(), Some("health-check"));
        assert_eq!(e.run.environment.name, "dev");
        let e = harness_event(
            "on-failure",
            &json!({"failure": "boom", "environment": {"name": "prod", "stage": "production"}}),
        )
        .unwrap();
        assert_eq!(e.failure.as_deref(), Some("boom"));
        assert!(matches!(e.run.environment.stage, Stage::Production));
        assert!(harness_event("on-failure", &json!({"payload": 3})).is_err());
    }
}
