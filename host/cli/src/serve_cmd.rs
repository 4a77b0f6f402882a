//! `berth serve`: the control plane on embedded defaults — SQLite state in the data directory, the
//! default plugins from a directory, the HTTP API on loopback — and the local admin commands that
//! work on the same state file (`berth org create`, `berth platform repo add`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use berth_backends::egress::{EgressPolicy, Network};
use berth_engine::queue::DEFAULT_RUN_LIMITS;
use berth_engine::{Engine, EngineConfig, Plugins};
use berth_runtime::{Runtime, RuntimeOptions};
use berth_state::{NewRepository, RepositoryLevel, RunLimits, Store};
use clap::Args;

#[derive(Args)]
pub struct DataArgs {
    /// The control plane's directory: state.db, caches, mirrors, run workspaces.
    #[arg(long, default_value = "berth-data", env = "BERTH_DATA")]
    pub data: PathBuf,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address to listen on; loopback by default (put a TLS proxy in front to expose it).
    #[arg(long, default_value = "127.0.0.1:8640", env = "BERTH_LISTEN")]
    listen: String,
    /// Directory of the platform's default plugins (`*.wasm`).
    #[arg(long, default_value = "target/plugins", env = "BERTH_PLUGINS")]
    plugins: PathBuf,
    /// Let tenants reach this machine and every internal address (repositories on its disk or
    /// network, servers and storage on loopback or private addresses). For development on one
    /// machine only, never for a control plane that serves tenants.
    #[arg(long, alias = "allow-local-repositories")]
    allow_local_network: bool,
    /// An internal range tenants may reach besides public addresses, e.g. a lab network
    /// `10.20.0.0/16` (repeatable). Loopback, private, link-local and CGNAT addresses are
    /// refused otherwise.
    #[arg(long = "egress-allow", value_name = "CIDR")]
    egress_allow: Vec<Network>,
    /// How many runs the control plane runs at once; more wait in the queue.
    #[arg(long, default_value_t = DEFAULT_RUN_LIMITS.total, value_parser = clap::value_parser!(u32).range(1..))]
    max_runs: u32,
    /// How many runs one organization runs at once, unless the operator set its own limit
    /// (`berth operator run-limit ORG N`, `PUT /v1/operator/organizations/{id}/run-limit`).
    #[arg(long, default_value_t = DEFAULT_RUN_LIMITS.per_organization, value_parser = clap::value_parser!(u32).range(1..))]
    max_runs_per_organization: u32,
    /// How the control plane logs to standard error: `human` lines, or `json` (one object per
    /// line, with the run, step, organization, project and environment of each). `RUST_LOG`
    /// filters (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Human, env = "BERTH_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Sends the control plane's `tracing` events to standard error. Spans carry the run's ids, so
/// each line says which run and step it belongs to; secrets are never recorded as fields.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn open_store(data: &Path) -> anyhow::Result<Store> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    Store::open(data.join("state.db")).context("opening the state")
}

/// Builds the engine on `data` with the plugins of `plugins`.
pub async fn engine(
    data: &Path,
    plugins: &Path,
    egress: EgressPolicy,
    runs: RunLimits,
) -> anyhow::Result<Arc<Engine>> {
    let store = Arc::new(open_store(data)?);
    let runtime = Arc::new(Runtime::new(RuntimeOptions {
        cache_dir: Some(data.join("cache")),
        ..RuntimeOptions::default()
    })?);
    let (plugins, failures) = Plugins::load(&runtime, plugins, data.join("plugins"))
        .await
        .with_context(|| format!("reading the plugin directory {}", plugins.display()))?;
    for failure in &failures {
        tracing::warn!(path = %failure.path.display(), "plugin not loaded: {}", failure.error);
    }
    let config = EngineConfig {
        data_dir: data.to_path_buf(),
        egress,
        runs,
    };
    Ok(Engine::new(store, runtime, plugins, config).await?)
}

pub async fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    match serve_inner(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve_inner(args: ServeArgs) -> anyhow::Result<()> {
    let data = &args.data.data;
    let egress = if args.allow_local_network {
        EgressPolicy::open()
    } else {
        EgressPolicy::allowing(args.egress_allow.clone())
    };
    let runs = RunLimits {
        total: args.max_runs,
        per_organization: args.max_runs_per_organization,
    };
    let engine = engine(data, &args.plugins, egress, runs).await?;
    first_start(&engine.store, data)?;
    let names: Vec<String> = engine
        .plugins
        .platform()
        .iter()
        .map(|p| p.description().label())
        .collect();
    tracing::info!("plugins: {}", names.join(", "));
    // Scheduled backups: every policy that is due starts its backup run.
    let _scheduler = berth_engine::backups::scheduler(&engine, std::time::Duration::from_secs(60));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(
        "berth serving http://{} (state {}, OpenAPI at /v1/openapi.json)",
        listener.local_addr()?,
        data.join("state.db").display()
    );
    axum::serve(listener, berth_api::app(engine))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// On the very first start, an organization `default` and a token for it, written to
/// `<data>/token` (mode 0600), and the operator's token in `<data>/operator-token` (0600) — the
/// only time either is shown.
fn first_start(store: &Store, data: &Path) -> anyhow::Result<()> {
    if store.organization_by_name("default")?.is_some() {
        return Ok(());
    }
    let org = store.create_organization("default")?;
    let (_, token) = store.create_token(org.id, "first start")?;
    let path = data.join("token");
    write_private(&path, &token)?;
    tracing::info!(
        "created organization `default`; its API token is in {}",
        path.display()
    );
    // The operator's own token: organizations, grant ceilings, lifting protection.
    let operator = store.create_operator_token("first start")?;
    let path = data.join("operator-token");
    write_private(&path, &operator)?;
    tracing::info!("the operator's token is in {}", path.display());
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{text}")?;
    Ok(())
}

/// `berth org create NAME`: a new organization and its first token, printed once.
pub fn create_org(data: &DataArgs, name: &str) -> anyhow::Result<()> {
    let store = open_store(&data.data)?;
    let org = store.create_organization(name)?;
    let (_, token) = store.create_token(org.id, "created by berth org create")?;
    println!("{token}");
    eprintln!(
        "organization {name} (id {}) created; the token above is shown only once",
        org.id
    );
    Ok(())
}

/// `berth platform repo add NAME URL`: an addon repository every environment deploys.
pub fn add_platform_repo(
    data: &DataArgs,
    name: &str,
    url: &str,
    branch: Option<String>,
) -> anyhow::Result<()> {
    let store = open_store(&data.data)?;
    let repository = store.add_repository(NewRepository {
        level: RepositoryLevel::Platform,
        organization_id: None,
        project_id: None,
        name: name.into(),
        url: url.into(),
        branch,
    })?;
    println!("{}", serde_json::to_string(&repository)?);
    Ok(())
}

/// `berth platform rotate-key`: every secret resealed with a new key, which replaces
/// `<data>/state.key`. The control plane must be stopped: a running one seals with the key it
/// loaded.
pub fn rotate_key(data: &DataArgs) -> anyhow::Result<()> {
    let store = open_store(&data.data)?;
    store.rotate_key()?;
    eprintln!(
        "every secret is sealed with a new key in {}",
        data.data.join("state.key").display()
    );
    Ok(())
}
