//! Registered plugins and the grants operators gave them.
//!
//! A grant allows one capability to one plugin within a scope: the whole platform, an
//! organization, a project or a single environment — or one server of an organization, for the
//! capabilities that are the whole server's (the runtime says which). Rights are denied unless a
//! grant covers the environment a run is about (or the server it is on); what the plugin declared
//! is intersected elsewhere (the runtime).
//!
//! An organization's grant beyond its ceiling is a [`GrantRequest`] until the operator decides:
//! approving it creates the grant in the same transaction. Uploads are counted here too, for the
//! operator's per-organization quotas ([`UploadQuota`]).

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::environments::{environment_in, environment_row};
use crate::orgs::{organization_row, project_row, server_in};
use crate::{
    Record, Result, SqlResultExt, StateError, Store, all, insert_returning, now_ms, one, require,
    touch,
};

/// One capability allowed to one plugin. Its scope is the narrowest id set; the wider ones are
/// filled in (an environment grant also names its project and organization, a server grant its
/// organization). All `None`: the whole platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: i64,
    pub plugin: String,
    pub capability: String,
    pub organization_id: Option<i64>,
    pub project_id: Option<i64>,
    pub environment_id: Option<i64>,
    /// The server, for a grant of a server-wide capability (then no project nor environment).
    pub server_id: Option<i64>,
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
    /// One server of the organization (with no project nor environment).
    #[serde(default)]
    pub server_id: Option<i64>,
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

crate::text_enum! {
    /// Where a grant request is: waiting for the operator, or decided.
    pub enum GrantRequestStatus {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
    }
}

/// A grant an organization asked for beyond its ceiling, for the operator to decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantRequest {
    pub id: i64,
    pub organization_id: i64,
    pub plugin: String,
    pub capability: String,
    /// The environment the grant would cover; the whole organization when absent.
    pub environment_id: Option<i64>,
    /// The server, for a server-wide capability.
    pub server_id: Option<i64>,
    pub status: GrantRequestStatus,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    /// The operator's reason, with a denial.
    pub reason: Option<String>,
    /// The grant an approval created.
    pub grant_id: Option<i64>,
}

/// What [`Store::request_grant`] needs: an organization's grant, in the scope it asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGrantRequest {
    pub organization_id: i64,
    pub plugin: String,
    pub capability: String,
    pub environment_id: Option<i64>,
    pub server_id: Option<i64>,
}

/// What the operator set for an organization's uploads; `None` is the platform's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuota {
    /// How many plugins (by name) it may hold.
    pub max_plugins: Option<u32>,
    /// How many uploads it may make in an hour.
    pub uploads_per_hour: Option<u32>,
    /// How many MiB it may upload in an hour.
    pub upload_mib_per_hour: Option<u32>,
}

/// An organization's uploads within the last hour, before the one being asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadWindow {
    pub uploads: u32,
    pub bytes: u64,
    /// When the oldest of them was made (Unix ms): the window frees a place an hour after it.
    pub oldest_at: Option<i64>,
}

/// The window upload quotas count over.
pub const UPLOAD_WINDOW_MS: i64 = 3_600_000;

impl Record for Grant {
    const SELECT: &'static str = "id, plugin, capability, organization_id, project_id, environment_id, server_id FROM grants";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Grant {
            id: row.get(0)?,
            plugin: row.get(1)?,
            capability: row.get(2)?,
            organization_id: row.get(3)?,
            project_id: row.get(4)?,
            environment_id: row.get(5)?,
            server_id: row.get(6)?,
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

impl Record for GrantRequest {
    const SELECT: &'static str = "id, organization_id, plugin, capability, environment_id, \
        server_id, status, created_at, decided_at, reason, grant_id FROM grant_requests";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(GrantRequest {
            id: row.get(0)?,
            organization_id: row.get(1)?,
            plugin: row.get(2)?,
            capability: row.get(3)?,
            environment_id: row.get(4)?,
            server_id: row.get(5)?,
            status: row.get(6)?,
            created_at: row.get(7)?,
            decided_at: row.get(8)?,
            reason: row.get(9)?,
            grant_id: row.get(10)?,
        })
    }
}

impl Store {
    pub fn add_grant(&self, new: NewGrant) -> Result<Grant> {
        require("plugin", &new.plugin)?;
        require("capability", &new.capability)?;
        self.write(|conn| insert_grant(conn, &new))
    }

    /// Records an organization's request for a grant beyond its ceiling, pending the operator's
    /// decision; asking again for one still pending returns that one.
    pub fn request_grant(&self, new: NewGrantRequest) -> Result<GrantRequest> {
        require("plugin", &new.plugin)?;
        require("capability", &new.capability)?;
        let org_id = new.organization_id;
        self.write(|conn| {
            organization_row(conn, org_id)?;
            if let Some(env_id) = new.environment_id {
                environment_in(conn, org_id, env_id)?;
            }
            if let Some(server_id) = new.server_id {
                server_in(conn, org_id, server_id)?;
            }
            let pending = "WHERE organization_id = ?1 AND plugin = ?2 AND capability = ?3
                 AND IFNULL(environment_id, 0) = IFNULL(?4, 0)
                 AND IFNULL(server_id, 0) = IFNULL(?5, 0) AND status = 'pending'";
            let args = params![
                org_id,
                new.plugin,
                new.capability,
                new.environment_id,
                new.server_id
            ];
            if let Some(open) = one::<GrantRequest>(conn, pending, args).optional()? {
                return Ok(open);
            }
            Ok(insert_returning(
                conn,
                "INSERT INTO grant_requests (organization_id, plugin, capability, environment_id,
                                             server_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    org_id,
                    new.plugin,
                    new.capability,
                    new.environment_id,
                    new.server_id,
                    now_ms()
                ],
            )?)
        })
    }

    /// Grant requests, newest first: one organization's or every one (`None`, the operator's
    /// view), in one status or all.
    pub fn grant_requests(
        &self,
        org_id: Option<i64>,
        status: Option<GrantRequestStatus>,
    ) -> Result<Vec<GrantRequest>> {
        self.read(|conn| {
            all(
                conn,
                "WHERE (?1 IS NULL OR organization_id = ?1) AND (?2 IS NULL OR status = ?2)
                 ORDER BY id DESC",
                params![org_id, status],
            )
        })
    }

    pub fn grant_request(&self, id: i64) -> Result<GrantRequest> {
        self.read(|conn| grant_request_row(conn, id))
    }

    /// The operator approves request `id`: the grant it asked for is created (or, if the same
    /// grant was made meanwhile, that one is linked) in the same transaction.
    pub fn approve_grant_request(&self, id: i64) -> Result<(GrantRequest, Grant)> {
        self.write(|conn| {
            let request = pending_request(conn, id)?;
            let new = NewGrant {
                plugin: request.plugin.clone(),
                capability: request.capability.clone(),
                organization_id: Some(request.organization_id),
                project_id: None,
                environment_id: request.environment_id,
                server_id: request.server_id,
            };
            let grant = match insert_grant(conn, &new) {
                Err(StateError::Conflict(_)) => one(
                    conn,
                    "WHERE plugin = ?1 AND capability = ?2 AND organization_id = ?3
                       AND IFNULL(environment_id, 0) = IFNULL(?4, 0)
                       AND IFNULL(server_id, 0) = IFNULL(?5, 0)
                       AND (?4 IS NOT NULL OR project_id IS NULL)",
                    params![
                        new.plugin,
                        new.capability,
                        request.organization_id,
                        new.environment_id,
                        new.server_id
                    ],
                )
                .found(|| format!("the grant of request {id}"))?,
                other => other?,
            };
            conn.execute(
                "UPDATE grant_requests SET status = 'approved', decided_at = ?2, grant_id = ?3
                 WHERE id = ?1",
                params![id, now_ms(), grant.id],
            )?;
            Ok((grant_request_row(conn, id)?, grant))
        })
    }

    /// The operator denies request `id`, with a reason the organization sees.
    pub fn deny_grant_request(&self, id: i64, reason: Option<&str>) -> Result<GrantRequest> {
        self.write(|conn| {
            pending_request(conn, id)?;
            conn.execute(
                "UPDATE grant_requests SET status = 'denied', decided_at = ?2, reason = ?3
                 WHERE id = ?1",
                params![id, now_ms(), reason],
            )?;
            grant_request_row(conn, id)
        })
    }

    /// What the operator set for organization `org_id`'s uploads.
    pub fn upload_quota(&self, org_id: i64) -> Result<UploadQuota> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT max_plugins, uploads_per_hour, upload_mib_per_hour FROM upload_quotas
                     WHERE organization_id = ?1",
                    [org_id],
                    |row| {
                        Ok(UploadQuota {
                            max_plugins: row.get(0)?,
                            uploads_per_hour: row.get(1)?,
                            upload_mib_per_hour: row.get(2)?,
                        })
                    },
                )
                .optional()?
                .unwrap_or_default())
        })
    }

    pub fn set_upload_quota(&self, org_id: i64, quota: &UploadQuota) -> Result<()> {
        self.write(|conn| {
            organization_row(conn, org_id)?;
            conn.execute(
                "INSERT INTO upload_quotas (organization_id, max_plugins, uploads_per_hour,
                                            upload_mib_per_hour)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (organization_id) DO UPDATE SET
                     max_plugins = excluded.max_plugins,
                     uploads_per_hour = excluded.uploads_per_hour,
                     upload_mib_per_hour = excluded.upload_mib_per_hour",
                params![
                    org_id,
                    quota.max_plugins,
                    quota.uploads_per_hour,
                    quota.upload_mib_per_hour
                ],
            )?;
            Ok(())
        })
    }

    /// Counts an upload of `bytes` by organization `org_id` if `allowed` says its uploads of the
    /// last hour leave room for it — in one transaction, so parallel uploads cannot both take the
    /// last place. Returns the window as it was before, and whether the upload was counted.
    pub fn count_upload(
        &self,
        org_id: i64,
        bytes: u64,
        allowed: impl FnOnce(&UploadWindow) -> bool,
    ) -> Result<(UploadWindow, bool)> {
        let now = now_ms();
        self.write(|conn| {
            organization_row(conn, org_id)?;
            conn.execute(
                "DELETE FROM plugin_uploads WHERE organization_id = ?1 AND at <= ?2",
                params![org_id, now - UPLOAD_WINDOW_MS],
            )?;
            let window = conn.query_row(
                "SELECT count(*), IFNULL(sum(bytes), 0), min(at) FROM plugin_uploads
                 WHERE organization_id = ?1",
                [org_id],
                |row| {
                    Ok(UploadWindow {
                        uploads: row.get(0)?,
                        bytes: row.get::<_, i64>(1)?.max(0) as u64,
                        oldest_at: row.get(2)?,
                    })
                },
            )?;
            if !allowed(&window) {
                return Ok((window, false));
            }
            conn.execute(
                "INSERT INTO plugin_uploads (organization_id, at, bytes) VALUES (?1, ?2, ?3)",
                params![org_id, now, i64::try_from(bytes).unwrap_or(i64::MAX)],
            )?;
            Ok((window, true))
        })
    }

    pub fn grant(&self, id: i64) -> Result<Grant> {
        self.read(|conn| one(conn, "WHERE id = ?1", [id]).found(|| format!("grant {id}")))
    }

    /// The grants whose scope covers the environment: platform-wide, its organization's, its
    /// project's, its own, and its server's.
    pub fn grants_for(&self, env_id: i64) -> Result<Vec<Grant>> {
        self.read(|conn| {
            let env = environment_row(conn, env_id)?;
            all(
                conn,
                "WHERE (organization_id IS NULL OR organization_id = ?1)
                   AND (project_id IS NULL OR project_id = ?2)
                   AND (environment_id IS NULL OR environment_id = ?3)
                   AND (server_id IS NULL OR server_id = ?4)
                 ORDER BY plugin, capability, id",
                [env.organization_id, env.project_id, env.id, env.server_id],
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

fn insert_grant(conn: &Connection, new: &NewGrant) -> Result<Grant> {
    let (organization_id, project_id, environment_id) = scope(conn, new)?;
    insert_returning(
        conn,
        "INSERT INTO grants (plugin, capability, organization_id, project_id, environment_id,
                             server_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            new.plugin,
            new.capability,
            organization_id,
            project_id,
            environment_id,
            new.server_id
        ],
    )
    .unique(|| {
        format!(
            "grant of {:?} to {:?} in that scope",
            new.capability, new.plugin
        )
    })
}

fn grant_request_row(conn: &Connection, id: i64) -> Result<GrantRequest> {
    one(conn, "WHERE id = ?1", [id]).found(|| format!("grant request {id}"))
}

/// Request `id`, if it still waits for a decision (`Conflict` once decided).
fn pending_request(conn: &Connection, id: i64) -> Result<GrantRequest> {
    let request = grant_request_row(conn, id)?;
    if request.status != GrantRequestStatus::Pending {
        return Err(StateError::Conflict(format!(
            "grant request {id} was {} already",
            request.status
        )));
    }
    Ok(request)
}

/// The `(organization_id, project_id, environment_id)` to store for `new`: derived from its
/// narrowest id, and checked against the wider ids it gave. A server grant names its server's
/// organization and nothing narrower.
fn scope(conn: &Connection, new: &NewGrant) -> Result<(Option<i64>, Option<i64>, Option<i64>)> {
    if let Some(server_id) = new.server_id {
        if new.project_id.is_some() || new.environment_id.is_some() {
            return Err(StateError::Invalid(
                "grant scope: a server's grant names no project nor environment".into(),
            ));
        }
        let org_id = new.organization_id.ok_or_else(|| {
            StateError::Invalid("grant scope: a server's grant names its organization".into())
        })?;
        server_in(conn, org_id, server_id)?;
        return Ok((Some(org_id), None, None));
    }
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
