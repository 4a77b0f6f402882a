//! The commands that talk to a running control plane over its HTTP API: create servers, projects,
//! environments and repositories, start a deploy and watch it with a progress line per step.

use std::process::ExitCode;

use crate::printable::printable;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Args)]
pub struct Api {
    /// The control plane's URL: the only place the token is ever sent. (Its own id, so that no
    /// command's positional `URL` — a repository's — can ever be read as it.)
    #[arg(
        id = "control-plane-url",
        long = "url",
        value_name = "CONTROL_PLANE_URL",
        global = true,
        default_value = "http://127.0.0.1:8640",
        env = "BERTH_URL"
    )]
    url: String,
    /// An API token: the organization's (default: the file `$BERTH_DATA/token`), or for `berth
    /// operator …` the operator's (default: `$BERTH_DATA/operator-token`, written at the control
    /// plane's first start). `$BERTH_DATA` is `berth-data` unless set.
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON answers instead of summaries.
    #[arg(long, global = true)]
    json: bool,
    /// Whose token file is read when no token is given: the operator's or the organization's.
    #[arg(skip)]
    operator: bool,
}

/// An answer of the API that is not a success: its status and its one-line reason (printable).
#[derive(Debug)]
pub struct ApiRefusal {
    pub status: reqwest::StatusCode,
    pub message: String,
}

impl std::fmt::Display for ApiRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for ApiRefusal {}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create an SSH key of the organization and print its public key (for `authorized_keys`).
    Create { name: String },
    /// Print the public key of one of the organization's SSH keys.
    Show { name: String },
}

#[derive(Subcommand)]
pub enum ServerCommand {
    /// Register a server Berth reaches over SSH.
    Add {
        name: String,
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
        #[arg(long, default_value = "root")]
        user: String,
        /// The organization's SSH key that logs in to it (`berth key create NAME`).
        #[arg(long)]
        ssh_key: String,
        /// The host key it must offer (an OpenSSH public key line, e.g. from
        /// `/etc/ssh/ssh_host_ed25519_key.pub`); without it, the first connection's key is pinned.
        #[arg(long)]
        host_key: Option<String>,
    },
    List,
    /// Replace a server's pinned host key, after rebuilding it on purpose.
    HostKey {
        id: i64,
        /// The new key (an OpenSSH public key line); without it, the next connection's key is
        /// pinned.
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ProjectCommand {
    Create { name: String },
    List,
}

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Create an environment of a project on a server.
    Create {
        name: String,
        #[arg(long)]
        project: i64,
        #[arg(long)]
        server: i64,
        #[arg(long, default_value = "17.0")]
        odoo_version: String,
        #[arg(long, default_value = "main")]
        branch: String,
        #[arg(long, default_value = "development")]
        stage: String,
        #[arg(long)]
        dev_mode: bool,
        #[arg(long)]
        workers: Option<u32>,
        #[arg(long)]
        memory_mb: Option<u32>,
        #[arg(long)]
        odoo_image: Option<String>,
        #[arg(long)]
        postgres_image: Option<String>,
    },
    Show {
        id: i64,
    },
    /// Change an environment's settings; says whether a redeploy is needed (none is started).
    Set {
        id: i64,
        #[command(flatten)]
        settings: EnvSettings,
    },
    /// Mark an environment protected (a restore needs its name typed back), or not (--off).
    Protect {
        id: i64,
        #[arg(long)]
        off: bool,
    },
}

/// The settings `berth env set` changes; each one left out stays as it is.
#[derive(Args)]
pub struct EnvSettings {
    /// The branch of the project's repository it runs.
    #[arg(long)]
    branch: Option<String>,
    /// The domain it answers at.
    #[arg(long)]
    domain: Option<String>,
    #[arg(long, value_name = "on|off")]
    dev_mode: Option<Switch>,
    /// Redeploy on a push to its branch.
    #[arg(long, value_name = "on|off")]
    auto_deploy: Option<Switch>,
    #[arg(long)]
    cpus: Option<f64>,
    #[arg(long)]
    memory_mb: Option<u32>,
    #[arg(long)]
    workers: Option<u32>,
    #[arg(long)]
    odoo_image: Option<String>,
    #[arg(long)]
    postgres_image: Option<String>,
    #[arg(long)]
    http_port: Option<u16>,
    /// Go back to the default of a setting (repeatable).
    #[arg(long, value_enum, value_name = "SETTING")]
    clear: Vec<Clearable>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

/// The settings whose default is "none given": the repository's branch, no domain, the
/// lifecycle's images.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Clearable {
    Branch,
    Domain,
    OdooImage,
    PostgresImage,
}

impl EnvSettings {
    /// The change as the API takes it.
    fn patch(self) -> anyhow::Result<berth_state::EnvironmentPatch> {
        let text = |value: Option<String>, which: Clearable| -> anyhow::Result<_> {
            let cleared = self.clear.contains(&which);
            match (value, cleared) {
                (Some(_), true) => bail!("a setting cannot be both given and cleared"),
                (Some(value), false) => Ok(Some(Some(value))),
                (None, true) => Ok(Some(None)),
                (None, false) => Ok(None),
            }
        };
        let on = |switch: Option<Switch>| switch.map(|s| matches!(s, Switch::On));
        let patch = berth_state::EnvironmentPatch {
            branch: text(self.branch.clone(), Clearable::Branch)?,
            domain: text(self.domain.clone(), Clearable::Domain)?,
            odoo_image: text(self.odoo_image.clone(), Clearable::OdooImage)?,
            postgres_image: text(self.postgres_image.clone(), Clearable::PostgresImage)?,
            dev_mode: on(self.dev_mode),
            auto_deploy: on(self.auto_deploy),
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            workers: self.workers,
            http_port: self.http_port,
        };
        if patch.is_empty() {
            bail!("name at least one setting to change (see `berth env set --help`)");
        }
        Ok(patch)
    }
}

/// What `berth env set` changed, and whether a redeploy is needed for it to take effect.
fn settings_change(v: &Value) -> String {
    let env = &v["environment"];
    let names = |key: &str| {
        v[key]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let name = printable(env["name"].as_str().unwrap_or("?"));
    let changed = names("changed");
    let mut out = if changed.is_empty() {
        format!("environment {name}: nothing changed (already so)")
    } else {
        format!("environment {name}: changed {changed}")
    };
    if v["redeploy_needed"] == true {
        out.push_str(&format!(
            "\nredeploy needed for {} to take effect: berth deploy {}",
            names("because"),
            env["id"]
        ));
    } else if !changed.is_empty() {
        out.push_str("\nno redeploy needed");
    }
    out
}

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Add an organization repository, or a project's (with --project).
    Add {
        name: String,
        url: String,
        #[arg(long)]
        project: Option<i64>,
        #[arg(long)]
        branch: Option<String>,
    },
    List,
}

#[derive(Subcommand)]
pub enum RunCommand {
    /// A run with its steps.
    Show {
        id: i64,
    },
    /// Follow a run's events until it ends.
    Watch {
        id: i64,
    },
    Cancel {
        id: i64,
    },
}

impl Api {
    /// The same API, read with the operator's token file when no token is given.
    pub(crate) fn for_operator(self) -> Self {
        Api {
            operator: true,
            ..self
        }
    }

    fn token(&self) -> anyhow::Result<String> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let file = if self.operator {
            "operator-token"
        } else {
            "token"
        };
        let data = std::env::var("BERTH_DATA").unwrap_or_else(|_| "berth-data".into());
        let path = format!("{data}/{file}");
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .with_context(|| format!("no --token or BERTH_TOKEN, and cannot read {path}"))
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let client = reqwest::Client::new();
        let mut request = client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(self.token()?);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {} (is `berth serve` running?)", self.url))?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"].as_str().unwrap_or("no detail");
            return Err(ApiRefusal {
                status,
                message: printable(message).into_owned(),
            }
            .into());
        }
        Ok(value)
    }

    pub(crate) fn print(&self, value: &Value, summary: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", summary(value));
        }
    }
}

fn named(kind: &str) -> impl Fn(&Value) -> String + '_ {
    move |v| {
        format!(
            "{kind} {} (id {})",
            v["name"].as_str().unwrap_or("?"),
            v["id"]
        )
    }
}

/// One line per item of a list.
pub(crate) fn lines(v: &Value, line: impl Fn(&Value) -> String) -> String {
    v.as_array()
        .map(|items| items.iter().map(line).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// Whether an environment is protected, from its record.
pub(crate) fn protection(v: &Value) -> String {
    format!(
        "environment {} is {}protected",
        printable(v["name"].as_str().unwrap_or("?")),
        if v["protected"] == true { "" } else { "not " }
    )
}

fn listed(v: &Value) -> String {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| format!("{}\t{}", i["id"], i["name"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Runs one API command; errors are one line.
pub async fn run(
    api: Api,
    command: impl AsyncFnOnce(&Api) -> anyhow::Result<ExitCode>,
) -> ExitCode {
    match command(&api).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

pub async fn key(api: &Api, command: KeyCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let v = match command {
        KeyCommand::Create { name } => {
            api.call(Method::POST, "/v1/ssh-keys", Some(json!({ "name": name })))
                .await?
        }
        KeyCommand::Show { name } => {
            api.call(Method::GET, &format!("/v1/ssh-keys/{name}"), None)
                .await?
        }
    };
    api.print(&v, |v| v["public_key"].as_str().unwrap_or("").to_string());
    Ok(ExitCode::SUCCESS)
}

pub async fn server(api: &Api, command: ServerCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match command {
        ServerCommand::Add {
            name,
            host,
            port,
            user,
            ssh_key,
            host_key,
        } => {
            let body = json!({ "name": name, "host": host, "port": port, "user": user,
                               "ssh_key": ssh_key, "host_key": host_key });
            let v = api.call(Method::POST, "/v1/servers", Some(body)).await?;
            api.print(&v, named("server"));
        }
        ServerCommand::HostKey { id, key } => {
            let path = format!("/v1/servers/{id}/host-key");
            let v = api
                .call(Method::PUT, &path, Some(json!({ "host_key": key })))
                .await?;
            api.print(&v, named("server"));
        }
        ServerCommand::List => {
            let v = api.call(Method::GET, "/v1/servers", None).await?;
            api.print(&v, listed);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn project(api: &Api, command: ProjectCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match command {
        ProjectCommand::Create { name } => {
            let v = api
                .call(Method::POST, "/v1/projects", Some(json!({ "name": name })))
                .await?;
            api.print(&v, named("project"));
        }
        ProjectCommand::List => {
            let v = api.call(Method::GET, "/v1/projects", None).await?;
            api.print(&v, listed);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn env(api: &Api, command: EnvCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match command {
        EnvCommand::Create {
            name,
            project,
            server,
            odoo_version,
            branch,
            stage,
            dev_mode,
            workers,
            memory_mb,
            odoo_image,
            postgres_image,
        } => {
            let mut body = json!({
                "name": name, "server_id": server, "odoo_version": odoo_version,
                "branch": branch, "stage": stage, "dev_mode": dev_mode,
            });
            for (key, value) in [
                ("workers", workers.map(Value::from)),
                ("memory_mb", memory_mb.map(Value::from)),
                ("odoo_image", odoo_image.map(Value::from)),
                ("postgres_image", postgres_image.map(Value::from)),
            ] {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            let path = format!("/v1/projects/{project}/environments");
            let v = api.call(Method::POST, &path, Some(body)).await?;
            api.print(&v, named("environment"));
        }
        EnvCommand::Show { id } => {
            let v = api
                .call(Method::GET, &format!("/v1/environments/{id}"), None)
                .await?;
            api.print(&v, |v| serde_json::to_string_pretty(v).unwrap_or_default());
        }
        EnvCommand::Set { id, settings } => {
            let patch = serde_json::to_value(settings.patch()?)?;
            let path = format!("/v1/environments/{id}");
            let v = api.call(Method::PATCH, &path, Some(patch)).await?;
            api.print(&v, settings_change);
        }
        EnvCommand::Protect { id, off } => {
            let path = format!("/v1/environments/{id}/protected");
            let v = api
                .call(Method::PUT, &path, Some(json!({ "protected": !off })))
                .await?;
            api.print(&v, protection);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn repo(api: &Api, command: RepoCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match command {
        RepoCommand::Add {
            name,
            url,
            project,
            branch,
        } => {
            let level = if project.is_some() {
                "project"
            } else {
                "organization"
            };
            let body = json!({ "level": level, "project_id": project, "name": name, "url": url, "branch": branch });
            let v = api
                .call(Method::POST, "/v1/repositories", Some(body))
                .await?;
            api.print(&v, named("repository"));
        }
        RepoCommand::List => {
            let v = api.call(Method::GET, "/v1/repositories", None).await?;
            api.print(&v, listed);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth deploy ENV`: starts a (re)deploy and, unless `--no-watch`, follows it.
pub async fn deploy(api: &Api, env: i64, watch: bool) -> anyhow::Result<ExitCode> {
    let run = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/environments/{env}/deploy"),
            None,
        )
        .await?;
    started(api, &run, env, watch).await
}

/// Says which run started and, with `watch`, follows it to its end.
pub async fn started(api: &Api, run: &Value, env: i64, watch: bool) -> anyhow::Result<ExitCode> {
    let id = run["id"].as_i64().context("the API returned no run id")?;
    api.print(run, |r| {
        format!(
            "run {id}: {} of environment {env}",
            r["operation"].as_str().unwrap_or("?")
        )
    });
    if watch {
        watch_run(api, id).await
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

pub async fn runs(api: &Api, command: RunCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match command {
        RunCommand::Show { id } => {
            let v = api
                .call(Method::GET, &format!("/v1/runs/{id}"), None)
                .await?;
            api.print(&v, render_run);
            Ok(ExitCode::SUCCESS)
        }
        RunCommand::Watch { id } => watch_run(api, id).await,
        RunCommand::Cancel { id } => {
            let v = api
                .call(Method::POST, &format!("/v1/runs/{id}/cancel"), None)
                .await?;
            api.print(&v, |_| format!("cancel of run {id} requested"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn render_run(v: &Value) -> String {
    let mut out = format!(
        "run {} {} {}{}\n",
        v["id"],
        v["operation"].as_str().unwrap_or(""),
        v["status"].as_str().unwrap_or(""),
        v["error"]
            .as_str()
            .map(|e| format!(": {}", printable(e)))
            .unwrap_or_default()
    );
    for step in v["steps"].as_array().into_iter().flatten() {
        let took = match (step["started_at"].as_i64(), step["finished_at"].as_i64()) {
            (Some(a), Some(b)) => format!(" {:.1}s", (b - a) as f64 / 1000.0),
            _ => String::new(),
        };
        let detail = printable(
            step["error"]
                .as_str()
                .or(step["summary"].as_str())
                .unwrap_or(""),
        );
        out.push_str(&format!(
            "  {:<22} {:<10}{took}  {detail}\n",
            step["name"].as_str().unwrap_or(""),
            step["status"].as_str().unwrap_or("")
        ));
    }
    out.trim_end().to_string()
}

/// Follows a run's SSE stream, printing one line per step change; exits 0 if it succeeded.
async fn watch_run(api: &Api, id: i64) -> anyhow::Result<ExitCode> {
    use futures_util::StreamExt;
    let response = reqwest::Client::new()
        .get(format!("{}/v1/runs/{id}/events", api.url))
        .bearer_auth(api.token()?)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", api.url))?;
    if !response.status().is_success() {
        bail!("{}: cannot follow run {id}", response.status());
    }
    let mut stream = response.bytes_stream();
    // Bytes until a whole line is in: a character may straddle two chunks.
    let mut buffer: Vec<u8> = Vec::new();
    let mut total = 0;
    let mut position = 0;
    while let Some(chunk) = stream.next().await {
        buffer.extend_from_slice(&chunk?);
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let bytes: Vec<u8> = buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&bytes);
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let event: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
            let message = printable(event["message"].as_str().unwrap_or(""));
            match event["kind"].as_str() {
                Some("run") => {
                    if let Some(plan) = message.strip_prefix("plan: ") {
                        total = plan.split(", ").count();
                    }
                    println!("{message}");
                }
                Some("step") => {
                    if event["data"]["state"] == "running" {
                        position += 1;
                    }
                    println!("[{position}/{total}] {message}");
                }
                _ => {}
            }
        }
    }
    let run = api
        .call(reqwest::Method::GET, &format!("/v1/runs/{id}"), None)
        .await?;
    Ok(if run["status"] == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
