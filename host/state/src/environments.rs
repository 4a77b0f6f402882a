//! Environments (one Odoo + PostgreSQL pair on a server, at a stage of a project) and the secrets
//! generated for them.
//!
//! Settings change after creation through the same checks as at creation; what an environment
//! keeps for life (its name, server, Odoo version) is refused with the reason, since changing it
//! would move or migrate its data rather than set something.
//!
//! Secrets such as database passwords are stored in clear in the state file: Berth must hand
//! them to the containers it starts. That is why the file is created with mode 0600, readable by
//! the control plane's user only.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::orgs::{project_in, server_in};
use crate::{
    Record, Result, SqlResultExt, StateError, Store, all, insert_returning, now_ms, one,
    random_hex, require, touch,
};

/// The stages an environment can be at.
pub const STAGES: [&str; 3] = ["production", "staging", "development"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub id: i64,
    pub organization_id: i64,
    pub project_id: i64,
    pub name: String,
    /// One of [`STAGES`].
    pub stage: String,
    pub odoo_version: String,
    /// The branch of the project's repository it runs (`None`: the repository's default).
    pub branch: Option<String>,
    pub server_id: i64,
    pub dev_mode: bool,
    /// Redeploy on a push to `branch` (through the webhook).
    pub auto_deploy: bool,
    pub domain: Option<String>,
    pub cpus: f64,
    pub memory_mb: u32,
    pub workers: u32,
    /// Overrides the default `odoo:<version>` image.
    pub odoo_image: Option<String>,
    /// Overrides the default `postgres:<version>` image.
    pub postgres_image: Option<String>,
    pub http_port: u16,
    /// Verifies webhook calls for this environment; generated at creation.
    pub webhook_secret: String,
    /// Whether a deploy has succeeded once (later operations may assume it exists).
    pub deployed: bool,
    pub created_at: i64,
    /// Replacing its data (a restore) requires typing its name back.
    pub protected: bool,
}

/// What [`Store::create_environment`] needs; JSON input may leave out every defaulted field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEnvironment {
    pub name: String,
    #[serde(default = "default_stage")]
    pub stage: String,
    pub odoo_version: String,
    #[serde(default)]
    pub branch: Option<String>,
    pub server_id: i64,
    #[serde(default)]
    pub dev_mode: bool,
    #[serde(default = "default_auto_deploy")]
    pub auto_deploy: bool,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    #[serde(default = "default_workers")]
    pub workers: u32,
    #[serde(default)]
    pub odoo_image: Option<String>,
    #[serde(default)]
    pub postgres_image: Option<String>,
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// Whether a restore must be confirmed by typing the environment's name; by default, only
    /// production environments are.
    #[serde(default)]
    pub protected: Option<bool>,
}

fn default_stage() -> String {
    "development".to_owned()
}
fn default_auto_deploy() -> bool {
    true
}
fn default_cpus() -> f64 {
    1.0
}
fn default_memory_mb() -> u32 {
    2048
}
fn default_workers() -> u32 {
    2
}
fn default_http_port() -> u16 {
    8069
}

impl NewEnvironment {
    fn settings(&self) -> Settings<'_> {
        Settings {
            branch: self.branch.as_deref(),
            domain: self.domain.as_deref(),
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            http_port: self.http_port,
            odoo_image: self.odoo_image.as_deref(),
            postgres_image: self.postgres_image.as_deref(),
        }
    }

    /// An environment with every optional field at its default (the same defaults as JSON).
    pub fn new(name: &str, odoo_version: &str, server_id: i64) -> NewEnvironment {
        NewEnvironment {
            name: name.to_owned(),
            stage: default_stage(),
            odoo_version: odoo_version.to_owned(),
            branch: None,
            server_id,
            dev_mode: false,
            auto_deploy: default_auto_deploy(),
            domain: None,
            cpus: default_cpus(),
            memory_mb: default_memory_mb(),
            workers: default_workers(),
            odoo_image: None,
            postgres_image: None,
            http_port: default_http_port(),
            protected: None,
        }
    }

    fn validate(&self) -> Result<()> {
        crate::check_name("environment", &self.name)?;
        if !STAGES.contains(&self.stage.as_str()) {
            return Err(StateError::Invalid(format!(
                "stage {:?}: expected one of {}",
                self.stage,
                STAGES.join(", ")
            )));
        }
        require("odoo_version", &self.odoo_version)?;
        self.settings().check()
    }
}

/// The settings that can change after creation, as the checks see them: one set of checks for a
/// new environment and for a changed one.
struct Settings<'a> {
    branch: Option<&'a str>,
    domain: Option<&'a str>,
    cpus: f64,
    memory_mb: u32,
    http_port: u16,
    odoo_image: Option<&'a str>,
    postgres_image: Option<&'a str>,
}

impl Settings<'_> {
    fn check(&self) -> Result<()> {
        if !(self.cpus.is_finite() && self.cpus > 0.0) {
            return Err(StateError::Invalid(format!(
                "cpus {}: must be > 0",
                self.cpus
            )));
        }
        if self.memory_mb == 0 {
            return Err(StateError::Invalid("memory_mb must be > 0".into()));
        }
        if self.http_port == 0 {
            return Err(StateError::Invalid("http_port must not be 0".into()));
        }
        for (field, value) in [
            ("branch", self.branch),
            ("odoo_image", self.odoo_image),
            ("postgres_image", self.postgres_image),
        ] {
            if let Some(value) = value {
                check_word(field, value)?;
            }
        }
        if let Some(domain) = self.domain {
            check_domain(domain)?;
        }
        Ok(())
    }
}

/// A branch or an image reference: one word of at most 255 bytes, no spaces or control
/// characters (it reaches git and Docker as one argument).
fn check_word(field: &str, value: &str) -> Result<()> {
    if value.is_empty()
        || value.len() > 255
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(StateError::Invalid(format!(
            "{field} {value:?}: 1 to 255 characters, no spaces or control characters \
             (leave it out, or null, for the default)"
        )));
    }
    Ok(())
}

/// A DNS name: dot-separated labels of letters, digits and '-' (not at a label's ends), at most
/// 253 characters.
fn check_domain(domain: &str) -> Result<()> {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if domain.len() <= 253 && domain.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "domain {domain:?}: expected a DNS name such as erp.example.com"
        )))
    }
}

/// The settings an environment keeps for its whole life, and why each cannot change
/// (`PATCH /v1/environments/{id}` refuses them by name, naming the reason).
pub const FIXED_SETTINGS: [(&str, &str); 6] = [
    (
        "odoo_version",
        "changing the Odoo version is a migration of the environment's databases, not a setting",
    ),
    (
        "name",
        "the name is in the environment's containers, databases and directories on its server",
    ),
    (
        "server_id",
        "moving an environment moves its data: back it up and restore it into an environment on \
         the other server",
    ),
    ("project_id", "an environment stays in its project"),
    (
        "stage",
        "the stage is set at creation (it decided the environment's protection)",
    ),
    (
        "protected",
        "protection has its own route, PUT /v1/environments/{id}/protected, and lifting it is \
         the operator's",
    ),
];

/// The settings the running containers embody: a change to one takes effect at the next deploy.
/// The others (`auto_deploy`, `branch`) are read when a push arrives or a run starts.
pub const SETTINGS_NEEDING_REDEPLOY: [&str; 8] = [
    "dev_mode",
    "domain",
    "cpus",
    "memory_mb",
    "workers",
    "odoo_image",
    "postgres_image",
    "http_port",
];

/// A change of an environment's settings: each field left out stays as it is. For the optional
/// ones (`branch`, `domain`, the images) `null` goes back to the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentPatch {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub branch: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_deploy: Option<bool>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub domain: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub odoo_image: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub postgres_image: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
}

/// A present field, `null` included (`Some(None)`); an absent one is `None` (serde's default).
fn nullable<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl EnvironmentPatch {
    /// Whether it names no setting at all.
    pub fn is_empty(&self) -> bool {
        *self == EnvironmentPatch::default()
    }

    /// Writes the patch into `env`; the names of the settings whose value changed.
    fn apply(&self, env: &mut Environment) -> Vec<&'static str> {
        let mut changed = Vec::new();
        put(&mut changed, "branch", &mut env.branch, &self.branch);
        put(&mut changed, "dev_mode", &mut env.dev_mode, &self.dev_mode);
        put(
            &mut changed,
            "auto_deploy",
            &mut env.auto_deploy,
            &self.auto_deploy,
        );
        put(&mut changed, "domain", &mut env.domain, &self.domain);
        put(&mut changed, "cpus", &mut env.cpus, &self.cpus);
        put(
            &mut changed,
            "memory_mb",
            &mut env.memory_mb,
            &self.memory_mb,
        );
        put(&mut changed, "workers", &mut env.workers, &self.workers);
        put(
            &mut changed,
            "odoo_image",
            &mut env.odoo_image,
            &self.odoo_image,
        );
        put(
            &mut changed,
            "postgres_image",
            &mut env.postgres_image,
            &self.postgres_image,
        );
        put(
            &mut changed,
            "http_port",
            &mut env.http_port,
            &self.http_port,
        );
        changed
    }
}

/// Sets `slot` to `value` when one is given and differs, noting `name` as changed.
fn put<T: PartialEq + Clone>(
    changed: &mut Vec<&'static str>,
    name: &'static str,
    slot: &mut T,
    value: &Option<T>,
) {
    if let Some(value) = value
        && slot != value
    {
        *slot = value.clone();
        changed.push(name);
    }
}

/// What [`Store::update_environment`] did: the environment as it is now, the settings whose value
/// changed, and whether its running containers still embody an older value of some of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsChange {
    pub environment: Environment,
    pub changed: Vec<&'static str>,
    /// Whether a deploy is needed for the change to take effect (never started on its own).
    pub redeploy_needed: bool,
    /// The changed settings of [`SETTINGS_NEEDING_REDEPLOY`], when the environment is deployed.
    pub because: Vec<&'static str>,
}

impl Environment {
    fn settings(&self) -> Settings<'_> {
        Settings {
            branch: self.branch.as_deref(),
            domain: self.domain.as_deref(),
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            http_port: self.http_port,
            odoo_image: self.odoo_image.as_deref(),
            postgres_image: self.postgres_image.as_deref(),
        }
    }
}

impl Record for Environment {
    const SELECT: &'static str = "id, organization_id, project_id, name, stage, odoo_version, \
        branch, server_id, dev_mode, auto_deploy, domain, cpus, memory_mb, workers, odoo_image, \
        postgres_image, http_port, webhook_secret, deployed, created_at, protected \
        FROM environments";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Environment {
            id: row.get(0)?,
            organization_id: row.get(1)?,
            project_id: row.get(2)?,
            name: row.get(3)?,
            stage: row.get(4)?,
            odoo_version: row.get(5)?,
            branch: row.get(6)?,
            server_id: row.get(7)?,
            dev_mode: row.get(8)?,
            auto_deploy: row.get(9)?,
            domain: row.get(10)?,
            cpus: row.get(11)?,
            memory_mb: row.get(12)?,
            workers: row.get(13)?,
            odoo_image: row.get(14)?,
            postgres_image: row.get(15)?,
            http_port: row.get(16)?,
            webhook_secret: row.get(17)?,
            deployed: row.get(18)?,
            created_at: row.get(19)?,
            protected: row.get(20)?,
        })
    }
}

impl Store {
    /// Creates an environment of `project_id`; the project and `new.server_id` must belong to
    /// `org_id`. Its webhook secret is generated here.
    pub fn create_environment(
        &self,
        org_id: i64,
        project_id: i64,
        new: NewEnvironment,
    ) -> Result<Environment> {
        new.validate()?;
        let webhook_secret = random_hex(32);
        let sealed = self.seal(&webhook_secret);
        let mut env: Environment = self.write(|conn| {
            project_in(conn, org_id, project_id)?;
            server_in(conn, org_id, new.server_id)?;
            insert_returning(
                conn,
                "INSERT INTO environments (organization_id, project_id, name, stage, odoo_version,
                     branch, server_id, dev_mode, auto_deploy, domain, cpus, memory_mb, workers,
                     odoo_image, postgres_image, http_port, webhook_secret, created_at, protected)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19)",
                params![
                    org_id,
                    project_id,
                    new.name,
                    new.stage,
                    new.odoo_version,
                    new.branch,
                    new.server_id,
                    new.dev_mode,
                    new.auto_deploy,
                    new.domain,
                    new.cpus,
                    new.memory_mb,
                    new.workers,
                    new.odoo_image,
                    new.postgres_image,
                    new.http_port,
                    sealed,
                    now_ms(),
                    new.protected.unwrap_or(new.stage == "production"),
                ],
            )
            .unique(|| format!("environment {:?} in project {project_id}", new.name))
        })?;
        env.webhook_secret = webhook_secret;
        Ok(env)
    }

    /// Changes the settings `patch` names of the environment `id`, if `org_id` owns it, after the
    /// same checks as at creation. A run already started keeps the settings it read at its start;
    /// a queued one reads them when it starts. Nothing is deployed here: the answer says whether a
    /// deploy is needed for the change to take effect.
    pub fn update_environment(
        &self,
        org_id: i64,
        id: i64,
        patch: &EnvironmentPatch,
    ) -> Result<SettingsChange> {
        if patch.is_empty() {
            return Err(StateError::Invalid("the change names no setting".into()));
        }
        let (env, changed) = self.write(|conn| {
            let mut env = environment_in(conn, org_id, id)?;
            let changed = patch.apply(&mut env);
            env.settings().check()?;
            if !changed.is_empty() {
                conn.execute(
                    "UPDATE environments SET branch = ?1, dev_mode = ?2, auto_deploy = ?3,
                         domain = ?4, cpus = ?5, memory_mb = ?6, workers = ?7, odoo_image = ?8,
                         postgres_image = ?9, http_port = ?10
                     WHERE id = ?11 AND organization_id = ?12",
                    params![
                        env.branch,
                        env.dev_mode,
                        env.auto_deploy,
                        env.domain,
                        env.cpus,
                        env.memory_mb,
                        env.workers,
                        env.odoo_image,
                        env.postgres_image,
                        env.http_port,
                        id,
                        org_id,
                    ],
                )?;
            }
            Ok((env, changed))
        })?;
        // An environment never deployed takes every setting at its first deploy.
        let because: Vec<&'static str> = if env.deployed {
            changed
                .iter()
                .copied()
                .filter(|name| SETTINGS_NEEDING_REDEPLOY.contains(name))
                .collect()
        } else {
            Vec::new()
        };
        Ok(SettingsChange {
            environment: self.opened(env)?,
            changed,
            redeploy_needed: !because.is_empty(),
            because,
        })
    }

    /// Marks an environment protected (a restore needs its name typed back) or not.
    pub fn set_protected(&self, org_id: i64, id: i64, protected: bool) -> Result<()> {
        self.write(|conn| {
            touch(
                conn,
                "UPDATE environments SET protected = ?1 WHERE id = ?2 AND organization_id = ?3",
                params![protected, id, org_id],
                || format!("environment {id}"),
            )
        })
    }

    /// The environment `id`, if `org_id` owns it.
    pub fn environment(&self, org_id: i64, id: i64) -> Result<Environment> {
        self.opened(self.read(|conn| environment_in(conn, org_id, id))?)
    }

    /// The environment `id`, whoever owns it: for callers that authenticate otherwise (webhooks).
    pub fn environment_by_id(&self, id: i64) -> Result<Environment> {
        self.opened(self.read(|conn| environment_row(conn, id))?)
    }

    /// The environments of a project of `org_id`, by name.
    pub fn environments(&self, org_id: i64, project_id: i64) -> Result<Vec<Environment>> {
        let environments = self.read(|conn| {
            project_in(conn, org_id, project_id)?;
            all(conn, "WHERE project_id = ?1 ORDER BY name", [project_id])
        })?;
        environments.into_iter().map(|e| self.opened(e)).collect()
    }

    /// `env` as the store read it, with its webhook secret opened (it is sealed at rest).
    fn opened(&self, mut env: Environment) -> Result<Environment> {
        env.webhook_secret = self.unseal(&env.webhook_secret)?;
        Ok(env)
    }

    /// Records that a deploy of the environment succeeded.
    pub fn set_deployed(&self, env_id: i64) -> Result<()> {
        self.write(|conn| {
            touch(
                conn,
                "UPDATE environments SET deployed = 1 WHERE id = ?1",
                [env_id],
                || format!("environment {env_id}"),
            )
        })
    }

    /// Records webhook delivery `delivery` for the environment; `false` when it was recorded
    /// before (the sender sent it again), so that a replay starts nothing.
    pub fn record_delivery(&self, env_id: i64, delivery: &str) -> Result<bool> {
        if delivery.is_empty() || delivery.len() > 128 {
            return Err(StateError::Invalid(format!(
                "webhook delivery id of {} bytes",
                delivery.len()
            )));
        }
        self.write(|conn| {
            environment_row(conn, env_id)?;
            let added = conn.execute(
                "INSERT INTO webhook_deliveries (environment_id, delivery, received_at)
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![env_id, delivery, crate::now_ms()],
            )?;
            Ok(added == 1)
        })
    }

    /// Stores (or replaces) a secret of the environment, such as a generated password.
    pub fn set_secret(&self, env_id: i64, name: &str, value: &str) -> Result<()> {
        require("secret name", name)?;
        let sealed = self.seal(value);
        self.write(|conn| {
            environment_row(conn, env_id)?;
            conn.execute(
                "INSERT INTO environment_secrets (environment_id, name, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (environment_id, name) DO UPDATE SET value = excluded.value",
                params![env_id, name, sealed],
            )?;
            Ok(())
        })
    }

    pub fn secret(&self, env_id: i64, name: &str) -> Result<Option<String>> {
        let stored: Option<String> = self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT value FROM environment_secrets WHERE environment_id = ?1 AND name = ?2",
                    params![env_id, name],
                    |row| row.get(0),
                )
                .optional()?)
        })?;
        stored.map(|s| self.unseal(&s)).transpose()
    }

    /// Every secret of the environment as `(name, value)`, by name.
    pub fn secrets(&self, env_id: i64) -> Result<Vec<(String, String)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, value FROM environment_secrets WHERE environment_id = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map([env_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<(String, String)>>>()?)
        })?
        .into_iter()
        .map(|(name, stored)| Ok((name, self.unseal(&stored)?)))
        .collect()
    }
}

/// The environment `id`, whoever owns it.
pub(crate) fn environment_row(conn: &Connection, id: i64) -> Result<Environment> {
    one(conn, "WHERE id = ?1", [id]).found(|| format!("environment {id}"))
}

/// The environment `id`, if `org_id` owns it.
pub(crate) fn environment_in(conn: &Connection, org_id: i64, id: i64) -> Result<Environment> {
    one(conn, "WHERE id = ?1 AND organization_id = ?2", [id, org_id])
        .found(|| format!("environment {id}"))
}
