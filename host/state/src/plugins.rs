//! Registered plugins and the grants operators gave them.
//!
//! A grant allows one capability to one plugin within a scope: the whole platform, an
//! organization, a project or a single environment. Rights are denied unless a grant covers the
//! environment a run is about; what the plugin declared is intersected elsewhere (the runtime).

use rusqlite::{Connection, Row, params};
use serde::{Deserialize, Serialize};

use crate::environments::environment_row;
use crate::orgs::{organization_row, project_row};
use crate::{
    Record, Result, SqlResultExt, StateError, Store, all, insert_returning, now_ms, one, require,
    touch,
};

/// One capability allowed to one plugin. Its scope is the narrowest id set; the wider ones are
/// filled in (an environment grant also names its project and organization). All `None`: the
/// whole platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: i64,
    pub plugin: String,
    pub capability: String,
    pub organization_id: Option<i64>,
    pub project_id: Option<i64>,
    pub environment_id: Option<i64>,
}

/// What [`Store::add_grant`] needs. Give the narrowest scope id; wider ids may be left out and
/// must match if given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewGrant {
    pub plugin: String,
    pub capability: String,
    #[serde(default)]
    pub organization_id: Option<i64>,
    #[serde(default)]
    pub project_id: Option<i64>,
    #[serde(default)]
    pub environment_id: Option<i64>,
}

/// A plugin known to the control plane: a Wasm component file and what identifies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub id: i64,
    pub name: String,
    /// `None`: a platform plugin, usable by every organization.
    pub organization_id: Option<i64>,
    /// The world it implements (its role in a run).
    pub role: String,
    pub version: String,
    /// SHA-256 (hex) of the component file.
    pub sha256: String,
    /// Where the component file is kept on the control plane.
    pub path: String,
    pub enabled: bool,
    pub created_at: i64,
}

/// What [`Store::register_plugin`] needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewPlugin {
    pub name: String,
    #[serde(default)]
    pub organization_id: Option<i64>,
    pub role: String,
    pub version: String,
    pub sha256: String,
    pub path: String,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_enabled() -> bool {
    true
}

impl Record for Grant {
    const SELECT: &'static str =
        "id, plugin, capability, organization_id, project_id, environment_id FROM grants";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Grant {
            id: row.get(0)?,
            plugin: row.get(1)?,
            capability: row.get(2)?,
            organization_id: row.get(3)?,
            project_id: row.get(4)?,
            environment_id: row.get(5)?,
        })
    }
}

impl Record for PluginRecord {
    const SELECT: &'static str = "id, name, organization_id, role, version, sha256, path, \
        enabled, created_at FROM plugins";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(PluginRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            organization_id: row.get(2)?,
            role: row.get(3)?,
            version: row.get(4)?,
            sha256: row.get(5)?,
            path: row.get(6)?,
            enabled: row.get(7)?,
            created_at: row.get(8)?,
        })
    }
}

impl Store {
    pub fn add_grant(&self, new: NewGrant) -> Result<Grant> {
        require("plugin", &new.plugin)?;
        require("capability", &new.capability)?;
        self.write(|conn| {
            let (organization_id, project_id, environment_id) = scope(conn, &new)?;
            insert_returning(
                conn,
                "INSERT INTO grants (plugin, capability, organization_id, project_id,
                                     environment_id)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    new.plugin,
                    new.capability,
                    organization_id,
                    project_id,
                    environment_id
                ],
            )
            .unique(|| {
                format!(
                    "grant of {:?} to {:?} in that scope",
                    new.capability, new.plugin
                )
            })
        })
    }

    pub fn grant(&self, id: i64) -> Result<Grant> {
        self.read(|conn| one(conn, "WHERE id = ?1", [id]).found(|| format!("grant {id}")))
    }

    /// The grants whose scope covers the environment: platform-wide, its organization's, its
    /// project's and its own.
    pub fn grants_for(&self, env_id: i64) -> Result<Vec<Grant>> {
        self.read(|conn| {
            let env = environment_row(conn, env_id)?;
            all(
                conn,
                "WHERE (organization_id IS NULL OR organization_id = ?1)
                   AND (project_id IS NULL OR project_id = ?2)
                   AND (environment_id IS NULL OR environment_id = ?3)
                 ORDER BY plugin, capability, id",
                [env.organization_id, env.project_id, env.id],
            )
        })
    }

    pub fn remove_grant(&self, id: i64) -> Result<()> {
        self.write(|conn| {
            touch(conn, "DELETE FROM grants WHERE id = ?1", [id], || {
                format!("grant {id}")
            })
        })
    }

    pub fn register_plugin(&self, new: NewPlugin) -> Result<PluginRecord> {
        require("plugin name", &new.name)?;
        require("plugin version", &new.version)?;
        self.write(|conn| {
            if let Some(org_id) = new.organization_id {
                organization_row(conn, org_id)?;
            }
            insert_returning(
                conn,
                "INSERT INTO plugins (name, organization_id, role, version, sha256, path, enabled,
                                      created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    new.name,
                    new.organization_id,
                    new.role,
                    new.version,
                    new.sha256,
                    new.path,
                    new.enabled,
                    now_ms()
                ],
            )
            .unique(|| format!("plugin {:?} version {:?}", new.name, new.version))
        })
    }

    /// Every plugin an organization uploaded, oldest first (a later upload of a name replaces it).
    pub fn uploaded_plugins(&self) -> Result<Vec<PluginRecord>> {
        self.read(|conn| all(conn, "WHERE organization_id IS NOT NULL ORDER BY id", []))
    }

    /// The plugins an organization can use: the platform's and its own, by name.
    pub fn plugins(&self, org_id: i64) -> Result<Vec<PluginRecord>> {
        self.read(|conn| {
            all(
                conn,
                "WHERE organization_id IS NULL OR organization_id = ?1 ORDER BY name, id",
                [org_id],
            )
        })
    }
}

/// The `(organization_id, project_id, environment_id)` to store for `new`: derived from its
/// narrowest id, and checked against the wider ids it gave.
fn scope(conn: &Connection, new: &NewGrant) -> Result<(Option<i64>, Option<i64>, Option<i64>)> {
    let derived = if let Some(env_id) = new.environment_id {
        let env = environment_row(conn, env_id)?;
        (
            Some(env.organization_id),
            Some(env.project_id),
            Some(env_id),
        )
    } else if let Some(project_id) = new.project_id {
        let project = project_row(conn, project_id)?;
        (Some(project.organization_id), Some(project_id), None)
    } else if let Some(org_id) = new.organization_id {
        organization_row(conn, org_id)?;
        (Some(org_id), None, None)
    } else {
        (None, None, None)
    };
    let fits = |given: Option<i64>, derived: Option<i64>| given.is_none() || given == derived;
    if fits(new.organization_id, derived.0) && fits(new.project_id, derived.1) {
        Ok(derived)
    } else {
        Err(StateError::Invalid(
            "grant scope: the project or environment is not inside the organization or project \
             given"
                .into(),
        ))
    }
}
