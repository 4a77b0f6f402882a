//! The deploy flow's steps, one function each, and the tables that name them in the seed's order:
//! [`DEPLOY`] (first deploy, redeploy, a full auto-deploy) and [`FAST`] (a fast auto-deploy). A
//! lifecycle finds a step by its name in its table ([`run`]) and lists the table's names as its
//! steps ([`names`]), so each name is written once, beside the function that performs it.
//!
//! Every step checks before it acts (a container that exists is reused, a database that is
//! initialised is left alone), so a run interrupted half-way can run it again. The data is never
//! touched by a deploy: PostgreSQL's volume and Odoo's data volume survive every container they
//! are mounted in.

use std::time::{Duration, Instant};

use berth_sdk::blobs::Blob;
use berth_sdk::operation::{self, EnvironmentSettings, Repository, RepositoryLevel};
use berth_sdk::{
    Environment, Error, RunInputs, StepOutcome, archive, database, docker, git, info, secrets, ssh,
};

use crate::conf::{OdooConf, addons_path};
use crate::deps;
use crate::tuning;
use crate::{CODE_MOUNT, DATA_DIR, DB_CONTAINER, EXTRA_ADDONS, NETWORK, ODOO_CONTAINER};

/// Consecutive server errors on the database's login page, with Odoo's health endpoint answering,
/// that end a health check at once: Odoo is up and refuses the database.
const REFUSALS: u32 = 3;

/// How often a step that waits (for PostgreSQL, for Odoo's health) asks again.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// How long the health check of a deploy (and of a full auto-deploy, and of a restore) waits for
/// Odoo.
pub const HEALTH_LIMIT: Duration = Duration::from_secs(300);
/// The seed's bound on a fast auto-deploy's health check.
pub const FAST_HEALTH_LIMIT: Duration = Duration::from_secs(90);

/// The steps of a deploy (first deploy, redeploy, full auto-deploy), in the seed's order.
pub const DEPLOY: &[Step] = &[
    Step::new("connect-server", connect_server),
    Step::new("setup-database", setup_database),
    Step::new("configure-dns", configure_dns),
    Step::new("clone-repositories", export_repositories),
    Step::new("start-odoo", start_odoo),
    Step::new("install-dependencies", install_dependencies),
    Step::new("initialize-database", initialize_database),
    Step::new("configure-ssl", configure_ssl),
    Step::new("health-check", health_check),
];

/// The steps of a fast auto-deploy, in the seed's order.
pub const FAST: &[Step] = &[
    Step::new("pull-latest-code", export_repositories),
    Step::new("restart-odoo", restart_odoo),
    Step::new("health-check", fast_health_check),
];

/// One step of a lifecycle: the name its runs show, and the function that performs it.
#[derive(Clone, Copy)]
pub struct Step {
    pub name: &'static str,
    pub run: fn(&Run) -> Outcome,
}

impl Step {
    pub const fn new(name: &'static str, run: fn(&Run) -> Outcome) -> Self {
        Step { name, run }
    }
}

/// The names of `table`'s steps, in order: what a lifecycle's `steps` answers.
pub fn names(table: &[Step]) -> Vec<String> {
    table.iter().map(|s| s.name.to_string()).collect()
}

/// The step of `table` named `name`.
pub fn find<'t>(table: &'t [Step], name: &str) -> Result<&'t Step, Error> {
    table
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::invalid(format!("no step named {name:?}")))
}

/// Runs the step of `table` named `name`.
pub fn run(table: &[Step], name: &str, run: &Run) -> Outcome {
    (find(table, name)?.run)(run)
}

/// What every step needs to know about the run: its environment, settings and repositories.
pub struct Run {
    pub environment: Environment,
    pub settings: EnvironmentSettings,
    /// The project's repository first, then the organization's, then the platform's: the order of
    /// the addons path (earlier folders win).
    pub repositories: Vec<Repository>,
}

impl Run {
    pub fn load(environment: Environment) -> Result<Self, Error> {
        let settings = operation::settings()?;
        let mut repositories = operation::repositories()?;
        repositories.sort_by_key(|r| match r.level {
            RepositoryLevel::Project => 0,
            RepositoryLevel::Organization => 1,
            RepositoryLevel::Platform => 2,
        });
        Ok(Run {
            environment,
            settings,
            repositories,
        })
    }

    /// The environment's database (and Odoo's role): named after the environment.
    pub(crate) fn database(&self) -> &str {
        &self.environment.name
    }

    fn code_dir(&self) -> String {
        format!("{}/code", self.settings.directory)
    }

    pub(crate) fn path(&self, file: &str) -> String {
        format!("{}/{file}", self.settings.directory)
    }
}

/// The error of a run whose inputs are not the kind its operation needs (`wanted`: `backup`,
/// `restore`).
pub(crate) fn wrong_inputs(wanted: &str, inputs: &RunInputs) -> Error {
    Error::invalid(format!(
        "a {wanted} run needs {wanted} inputs, but this run's inputs are {}",
        inputs.kind()
    ))
}

/// The facts recorded on the run so far.
pub fn facts() -> Result<serde_json::Value, Error> {
    serde_json::from_str(&operation::facts()?)
        .map_err(|e| Error::failed(format!("the run's facts are not JSON: {e}")))
}

pub type Outcome = Result<StepOutcome, Error>;

pub(crate) fn done(summary: impl Into<String>) -> Outcome {
    Ok(StepOutcome::Done(Some(summary.into())))
}

/// Runs `argv` on the server; a non-zero exit is a failure carrying the command's stderr.
pub(crate) fn exec(argv: &[&str]) -> Result<ssh::ExecResult, Error> {
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    let options = ssh::ExecOptions {
        cwd: None,
        env: Vec::new(),
        timeout_ms: None,
    };
    let result = ssh::exec(&argv, &options)?;
    if result.status != 0 {
        return Err(Error::failed(format!(
            "`{}` exited with {}: {}",
            argv.join(" "),
            result.status,
            result.stderr.trim()
        )));
    }
    Ok(result)
}

/// Runs `argv` in one of the environment's containers; a non-zero exit is a failure.
pub(crate) fn container_exec(
    container: &str,
    argv: &[&str],
    user: Option<&str>,
) -> Result<String, Error> {
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    let result = docker::exec(container, &argv, user)?;
    if result.status != 0 {
        let detail = if result.stderr.trim().is_empty() {
            result.stdout
        } else {
            result.stderr
        };
        return Err(Error::failed(format!(
            "`{}` in {container} exited with {}: {}",
            argv.join(" "),
            result.status,
            tail(&detail, 2000)
        )));
    }
    Ok(result.stdout)
}

fn tail(text: &str, max: usize) -> &str {
    let text = text.trim();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Writes `text` to `path` on the server.
fn upload(path: &str, text: &str, mode: u32) -> Result<(), Error> {
    let blob = Blob::new();
    blob.append(text.as_bytes())?;
    ssh::upload(&blob, path, mode)
}

/// Odoo's user in the environment's Odoo container ([`crate::ODOO_USER`] in its `/etc/passwd`):
/// whom the files only Odoo may read belong to. The container may be stopped.
pub(crate) fn odoo_owner() -> Result<Owner, Error> {
    let tar = docker::archive(ODOO_CONTAINER, "/etc/passwd")?;
    let passwd = archive::tar_file(&tar, "passwd")?;
    let bytes = passwd.read(0, passwd.size().min(1 << 20) as u32)?;
    passwd_owner(&String::from_utf8_lossy(&bytes), crate::ODOO_USER).ok_or_else(|| {
        Error::failed(format!(
            "the Odoo image has no user {:?} in /etc/passwd: its files cannot be made readable \
             by Odoo alone",
            crate::ODOO_USER
        ))
    })
}

/// A user of the server by its ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    uid: u32,
    gid: u32,
}

/// `user`'s ids in the text of an `/etc/passwd`.
fn passwd_owner(passwd: &str, user: &str) -> Option<Owner> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        Some(Owner {
            uid: fields.next()?.parse().ok()?,
            gid: fields.next()?.parse().ok()?,
        })
    })
}

/// Gives the existing `path` on the server to `owner` with `mode` (octal, e.g. "0640").
pub(crate) fn give(path: &str, owner: Owner, mode: &str) -> Result<(), Error> {
    exec(&["chown", &format!("{}:{}", owner.uid, owner.gid), path])?;
    exec(&["chmod", mode, path])?;
    Ok(())
}

/// Creates `path` on the server, a folder or an empty file, `owner`'s with `mode` from the start
/// (an existing file is emptied); what is written into it later keeps both.
pub(crate) fn create_owned(
    path: &str,
    owner: Owner,
    mode: &str,
    folder: bool,
) -> Result<(), Error> {
    let (uid, gid) = (owner.uid.to_string(), owner.gid.to_string());
    let mut argv = vec!["install", "-m", mode, "-o", &uid, "-g", &gid];
    argv.extend(if folder {
        ["-d", path]
    } else {
        ["/dev/null", path]
    });
    exec(&argv)?;
    Ok(())
}

/// Reads a small file from the server; `None` when it does not exist.
fn download(path: &str) -> Result<Option<String>, Error> {
    let blob = match ssh::download(path) {
        Ok(blob) => blob,
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = blob.size().min(1 << 20) as u32;
    let bytes = blob.read(0, size)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// A long-running service of the environment on its private network, restarted unless stopped.
fn service(
    name: &str,
    image: &str,
    command: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<docker::Mount>,
) -> docker::ContainerSpec {
    docker::ContainerSpec {
        name: name.into(),
        image: image.into(),
        command,
        env,
        mounts,
        networks: vec![NETWORK.into()],
        ports: Vec::new(),
        restart_policy: Some("unless-stopped".into()),
        labels: Vec::new(),
    }
}

pub(crate) fn inspect(name: &str) -> Result<Option<docker::ContainerInfo>, Error> {
    match docker::inspect(name) {
        Ok(info) => Ok(Some(info)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

// ---- connect-server -------------------------------------------------------------------------

/// Reaches the server over SSH and its Docker engine through it; makes the environment's directory.
pub fn connect_server(run: &Run) -> Outcome {
    let system = exec(&["uname", "-sr"])?;
    let containers = docker::list_containers()?;
    exec(&["mkdir", "-p", &run.code_dir()])?;
    // Not listable by other users of the server: odoo.conf holds the database password.
    exec(&["chmod", "0711", &run.settings.directory])?;
    done(format!(
        "{} on {}; Docker reachable, {} container(s) of this environment",
        system.stdout.trim(),
        run.environment.server.name,
        containers.len()
    ))
}

// ---- setup-database -------------------------------------------------------------------------

/// The environment's PostgreSQL container, sized from its resources, and Odoo's role.
pub fn setup_database(run: &Run) -> Outcome {
    let resources = &run.settings.resources;
    let tuning = tuning::Postgres::for_resources(resources.memory_mb, resources.workers);
    let command = tuning.command();
    let image = &run.settings.postgres_image;
    // The settings the container was created with; a change recreates it (on the same volume).
    let wanted = format!("{image}\n{}\n", command.join(" "));
    let settings_file = run.path("postgres.settings");
    let current = download(&settings_file)?;
    let existing = inspect(DB_CONTAINER)?;
    let mut action = "kept";
    if existing.is_none() || current.as_deref() != Some(wanted.as_str()) {
        docker::ensure_image(image)?;
        if existing.is_some() {
            docker::stop(DB_CONTAINER, Some(60))?;
            docker::remove(DB_CONTAINER)?;
            action = "recreated with new settings";
        } else {
            action = "created";
        }
        let password = secrets::get(crate::POSTGRES_PASSWORD)?;
        let env = vec![
            ("POSTGRES_USER".into(), crate::DB_SUPERUSER.into()),
            ("POSTGRES_PASSWORD".into(), password),
        ];
        let data = docker::Mount {
            source: "pgdata".into(),
            target: "/var/lib/postgresql/data".into(),
            read_only: false,
        };
        let spec = service(DB_CONTAINER, image, command, env, vec![data]);
        docker::create(&spec)?;
        upload(&settings_file, &wanted, 0o600)?;
    }
    if !inspect(DB_CONTAINER)?.is_some_and(|c| c.running) {
        docker::start(DB_CONTAINER)?;
    }
    wait_for_postgres(Duration::from_secs(120))?;
    database::create_role(run.database(), crate::ODOO_DB_PASSWORD)?;
    done(format!(
        "PostgreSQL {action} ({image}): shared_buffers={}MB effective_cache_size={}MB work_mem={}MB max_connections={}; role {}",
        tuning.shared_buffers_mb,
        tuning.effective_cache_size_mb,
        tuning.work_mem_mb,
        tuning.max_connections,
        run.database()
    ))
}

fn wait_for_postgres(limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    loop {
        match database::list_databases() {
            Ok(_) => return Ok(()),
            Err(e) if e.is_denied() => return Err(e),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::Timeout(format!(
                    "PostgreSQL did not accept connections within {limit:?}: {}",
                    e.message()
                )));
            }
            Err(_) => std::thread::sleep(PROBE_INTERVAL),
        }
    }
}

// ---- configure-dns / configure-ssl ----------------------------------------------------------

/// Present in the flow so the order is the seed's; no provider is configured for them yet.
pub fn configure_dns(_run: &Run) -> Outcome {
    Ok(StepOutcome::Skipped(
        "no DNS provider configured".to_string(),
    ))
}

pub fn configure_ssl(_run: &Run) -> Outcome {
    Ok(StepOutcome::Skipped(
        "no TLS provider configured".to_string(),
    ))
}

// ---- clone-repositories / pull-latest-code --------------------------------------------------

/// Exports every repository's commit to the server: the commit the trigger pinned, or the head of
/// its branch. Each export replaces the folder in one swap, so a failure leaves the old code.
pub fn export_repositories(run: &Run) -> Outcome {
    let mut exported = Vec::new();
    for repository in &run.repositories {
        let commit = target_commit(repository)?;
        let files = git::export_tree(&repository.url, &commit, &repository.name)?;
        operation::deployed(&repository.name, &commit)?;
        info!("{} @ {} ({files} files)", repository.name, short(&commit));
        exported.push(format!("{}@{}", repository.name, short(&commit)));
    }
    if exported.is_empty() {
        return Err(Error::invalid(
            "the environment has no repository to deploy",
        ));
    }
    done(exported.join(", "))
}

/// The commit a run deploys from `repository`, fetching its mirror first: the one its plan chose
/// (see [`plan_commit`]), else the one its trigger pinned, else the head of its branch.
pub fn target_commit(repository: &Repository) -> Result<String, Error> {
    git::fetch(&repository.url)?;
    if let Some(planned) = facts()?[planned_key(&repository.name)].as_str() {
        return Ok(planned.to_string());
    }
    match &repository.pinned {
        Some(commit) => git::resolve(&repository.url, commit),
        None => git::resolve(&repository.url, &repository.branch),
    }
}

/// Records the commit a run's plan was decided on, so its steps deploy exactly that commit even if
/// the branch moves meanwhile.
pub fn plan_commit(repository: &Repository, commit: &str) -> Result<(), Error> {
    operation::note(&planned_key(&repository.name), commit)
}

fn planned_key(repository: &str) -> String {
    format!("commit-{repository}")
}

// ---- start-odoo -----------------------------------------------------------------------------

/// Generates `odoo.conf` and (re)creates the Odoo container on the environment's network.
pub fn start_odoo(run: &Run) -> Outcome {
    let found = exec(&[
        "find",
        &run.code_dir(),
        "-mindepth",
        "2",
        "-maxdepth",
        "5",
        "-name",
        "__manifest__.py",
        "-printf",
        "%h\\n",
    ])?;
    let module_dirs: Vec<String> = found.stdout.lines().map(str::to_string).collect();
    let names: Vec<String> = run.repositories.iter().map(|r| r.name.clone()).collect();
    let addons = addons_path(&module_dirs, &names, &run.code_dir());
    let password = secrets::get(crate::ODOO_DB_PASSWORD)?;
    let resources = &run.settings.resources;
    let conf = OdooConf {
        database: run.database(),
        db_user: run.database(),
        db_password: &password,
        addons_path: &addons,
        http_port: run.settings.http_port,
        memory_mb: resources.memory_mb,
        workers: resources.workers,
    }
    .render()
    .map_err(Error::invalid)?;
    // It holds the database password: readable by Odoo's user alone (given to it below, once the
    // container tells its uid).
    let conf_path = run.path("odoo.conf");
    upload(&conf_path, &conf, 0o600)?;

    let image = &run.settings.odoo_image;
    docker::ensure_image(image)?;
    if inspect(ODOO_CONTAINER)?.is_some() {
        docker::stop(ODOO_CONTAINER, Some(30))?;
        docker::remove(ODOO_CONTAINER)?;
    }
    let mounts = vec![
        docker::Mount {
            source: run.path("odoo.conf"),
            target: "/etc/odoo/odoo.conf".into(),
            read_only: true,
        },
        docker::Mount {
            source: run.code_dir(),
            target: CODE_MOUNT.into(),
            read_only: true,
        },
        docker::Mount {
            source: "odoo-data".into(),
            target: DATA_DIR.into(),
            read_only: false,
        },
        docker::Mount {
            source: "extra-addons".into(),
            target: EXTRA_ADDONS.into(),
            read_only: true,
        },
    ];
    let spec = service(ODOO_CONTAINER, image, Vec::new(), Vec::new(), mounts);
    docker::create(&spec)?;
    give(&conf_path, odoo_owner()?, "0640")?;
    docker::start(ODOO_CONTAINER)?;
    done(format!(
        "Odoo started ({image}): {} worker(s), addons path of {} folder(s)",
        resources.workers,
        addons.len()
    ))
}

// ---- install-dependencies -------------------------------------------------------------------

/// Installs every repository's `apt.txt` (system packages) then `requirements.txt` (Python
/// packages) in the Odoo container, and restarts Odoo only if Python packages were installed.
pub fn install_dependencies(run: &Run) -> Outcome {
    let found = exec(&[
        "find",
        &run.code_dir(),
        "-mindepth",
        "2",
        "-maxdepth",
        "2",
        "(",
        "-name",
        "apt.txt",
        "-o",
        "-name",
        "requirements.txt",
        ")",
        "-type",
        "f",
    ])?;
    let mut files: Vec<&str> = found.stdout.lines().collect();
    files.sort();
    let mut packages: Vec<String> = Vec::new();
    let mut requirements: Vec<String> = Vec::new();
    for file in &files {
        let text = download(file)?.unwrap_or_default();
        let inside = format!("{CODE_MOUNT}/{}", &file[run.code_dir().len() + 1..]);
        if file.ends_with("/apt.txt") {
            let listed =
                deps::apt_packages(&text).map_err(|e| Error::invalid(format!("{inside}: {e}")))?;
            for package in listed {
                if !packages.contains(&package) {
                    packages.push(package);
                }
            }
        } else if deps::has_requirements(&text) {
            requirements.push(inside);
        }
    }
    if packages.is_empty() && requirements.is_empty() {
        return Ok(StepOutcome::Skipped(
            "no apt.txt or requirements.txt lists anything in any repository".into(),
        ));
    }
    let mut summary = Vec::new();
    if !packages.is_empty() {
        container_exec(ODOO_CONTAINER, &["apt-get", "update", "-q"], Some("root"))?;
        let mut argv = vec![
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "--",
        ];
        argv.extend(packages.iter().map(String::as_str));
        container_exec(ODOO_CONTAINER, &argv, Some("root"))?;
        summary.push(format!("system packages: {}", packages.join(" ")));
    }
    let mut installed = Vec::new();
    for file in &requirements {
        let out = container_exec(
            ODOO_CONTAINER,
            &["pip3", "install", "--no-cache-dir", "-r", file],
            Some("root"),
        )?;
        if let Some(what) = deps::pip_installed(&out) {
            installed.push(what.to_string());
        }
    }
    if installed.is_empty() {
        if !requirements.is_empty() {
            summary.push("Python packages already installed".into());
        }
    } else {
        docker::restart(ODOO_CONTAINER)?;
        summary.push(format!(
            "Python packages: {}; Odoo restarted",
            installed.join(" ")
        ));
    }
    done(summary.join("; "))
}

// ---- initialize-database --------------------------------------------------------------------

/// `odoo -i base --stop-after-init`, only when the database was never initialised.
pub fn initialize_database(run: &Run) -> Outcome {
    let db = run.database();
    if initialized(db)? {
        return Ok(StepOutcome::Skipped(format!(
            "database {db} is already initialised"
        )));
    }
    container_exec(
        ODOO_CONTAINER,
        &[
            "odoo",
            "-c",
            "/etc/odoo/odoo.conf",
            "-d",
            db,
            "-i",
            "base",
            "--stop-after-init",
            "--no-http",
        ],
        None,
    )?;
    if !initialized(db)? {
        return Err(Error::failed(format!(
            "odoo -i base finished but database {db} has no core tables"
        )));
    }
    done(format!("database {db} initialised with base"))
}

/// Whether `db` exists with `base` installed — not merely the core tables, which an interrupted
/// `-i base` leaves behind half-filled.
pub fn initialized(db: &str) -> Result<bool, Error> {
    if !database::list_databases()?.iter().any(|d| d == db) {
        return Ok(false);
    }
    let tables = database::query(
        db,
        "SELECT to_regclass('public.ir_module_module') IS NOT NULL",
        &[],
    )?;
    if !matches!(
        tables.rows.first().and_then(|r| r.first()),
        Some(database::Value::Boolean(true))
    ) {
        return Ok(false);
    }
    let base = database::query(
        db,
        "SELECT state FROM ir_module_module WHERE name = $1",
        &[database::Value::Text("base".into())],
    )?;
    Ok(matches!(
        base.rows.first().and_then(|r| r.first()),
        Some(database::Value::Text(state)) if state == "installed"
    ))
}

// ---- restart-odoo ---------------------------------------------------------------------------

pub fn restart_odoo(_run: &Run) -> Outcome {
    if inspect(ODOO_CONTAINER)?.is_none() {
        return Err(Error::not_found(
            "the environment has no Odoo container: deploy it first",
        ));
    }
    docker::restart(ODOO_CONTAINER)?;
    done("Odoo restarted")
}

// ---- health-check ---------------------------------------------------------------------------

/// A deploy's health check: Odoo healthy within [`HEALTH_LIMIT`].
pub fn health_check(run: &Run) -> Outcome {
    wait_until_healthy(run, HEALTH_LIMIT)
}

/// A fast auto-deploy's health check: Odoo healthy within [`FAST_HEALTH_LIMIT`].
pub fn fast_health_check(run: &Run) -> Outcome {
    wait_until_healthy(run, FAST_HEALTH_LIMIT)
}

/// Waits (bounded) until Odoo answers its health endpoint — with the database check where the
/// series has it — and serves the environment's database.
pub fn wait_until_healthy(run: &Run, limit: Duration) -> Outcome {
    let version = crate::series(&run.environment.odoo_version).unwrap_or((17, 0));
    let deadline = Instant::now() + limit;
    let mut attempts = 0;
    let mut refusals = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        attempts += 1;
        match probe(run, version) {
            Ok(answer) => {
                return done(format!("{answer} after {attempts} attempt(s)"));
            }
            Err(e) if e.is_denied() => return Err(e),
            // Odoo is up and answers that it cannot serve the database: waiting will not help.
            Err(Error::Invalid(m)) => {
                refusals += 1;
                if refusals == REFUSALS {
                    return Err(Error::failed(format!(
                        "Odoo is up but does not serve the database: {m}"
                    )));
                }
                last = m;
            }
            Err(e) => {
                refusals = 0;
                last = e.message().to_string();
            }
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
    Err(Error::Timeout(format!(
        "Odoo did not become healthy within {limit:?} ({attempts} attempts): {last}"
    )))
}

/// One probe from the server to Odoo's address on the environment's network.
fn probe(run: &Run, (major, _): (u32, u32)) -> Result<String, Error> {
    let info = inspect(ODOO_CONTAINER)?
        .ok_or_else(|| Error::not_found("the environment has no Odoo container"))?;
    if !info.running {
        return Err(Error::failed(format!("Odoo's container is {}", info.state)));
    }
    let address = info
        .addresses
        .iter()
        .find(|(_, a)| !a.is_empty())
        .map(|(_, a)| a.clone())
        .ok_or_else(|| Error::failed("Odoo's container has no address yet"))?;
    let base = format!("http://{address}:{}", run.settings.http_port);
    let health = match major {
        17.. => "/web/health?db_server_status=1",
        15..=16 => "/web/health",
        _ => "/web/login",
    };
    let status = http_status(&format!("{base}{health}"))?;
    if status != "200" {
        return Err(Error::failed(format!("{health} answered {status}")));
    }
    // The health endpoint does not prove the database is served: ask for the login page of it.
    let db = run.database();
    let login = format!("/web/login?db={db}");
    let status = http_status(&format!("{base}{login}"))?;
    if status.starts_with('5') {
        return Err(Error::invalid(format!("{login} answered {status}")));
    }
    if status != "200" {
        return Err(Error::failed(format!("{login} answered {status}")));
    }
    Ok(format!("{health} and {login} answered 200"))
}

fn http_status(url: &str) -> Result<String, Error> {
    let argv: Vec<String> = [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        url,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let options = ssh::ExecOptions {
        cwd: None,
        env: Vec::new(),
        timeout_ms: Some(10_000),
    };
    let result = ssh::exec(&argv, &options)?;
    let code = result.stdout.trim().to_string();
    if result.status != 0 || code == "000" {
        return Err(Error::failed(format!(
            "no answer from {url} (curl exit {})",
            result.status
        )));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_are_the_seeds_steps_in_order() {
        assert_eq!(
            names(DEPLOY),
            [
                "connect-server",
                "setup-database",
                "configure-dns",
                "clone-repositories",
                "start-odoo",
                "install-dependencies",
                "initialize-database",
                "configure-ssl",
                "health-check",
            ]
        );
        assert_eq!(
            names(FAST),
            ["pull-latest-code", "restart-odoo", "health-check"]
        );
    }

    #[test]
    fn odoos_user_is_read_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      odoo-x:x:5:5::/:/bin/false\n\
                      odoo:x:101:102::/var/lib/odoo:/usr/sbin/nologin\n";
        let odoo = Owner { uid: 101, gid: 102 };
        assert_eq!(passwd_owner(passwd, "odoo"), Some(odoo));
        assert_eq!(passwd_owner(passwd, "nobody"), None);
        assert_eq!(passwd_owner("odoo:x:abc:1::/:/bin/sh\n", "odoo"), None);
    }

    #[test]
    fn a_step_is_found_by_its_name_only() {
        assert_eq!(find(FAST, "restart-odoo").unwrap().name, "restart-odoo");
        match find(FAST, "connect-server") {
            Err(Error::Invalid(m)) => assert_eq!(m, "no step named \"connect-server\""),
            other => panic!("expected invalid, got {:?}", other.map(|s| s.name)),
        }
        for table in [DEPLOY, FAST, crate::backup::STEPS, crate::restore::STEPS] {
            let mut seen = std::collections::BTreeSet::new();
            assert!(
                table.iter().all(|s| seen.insert(s.name)),
                "{:?}",
                names(table)
            );
        }
    }
}
