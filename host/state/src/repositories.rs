//! Git repositories at three levels — platform addons, an organization's addons, a project's
//! primary repository — and the revision of each that an environment last deployed.
//!
//! A deploy checks out, in order, the platform's repositories, then the organization's, then the
//! project's: [`Store::repositories_for`] returns them in that order.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::environments::environment_row;
use crate::orgs::{organization_row, project_row};
use crate::{
    Record, Result, SqlResultExt, StateError, Store, all, insert_returning, now_ms, require,
};

crate::text_enum! {
    /// Who a repository belongs to.
    pub enum RepositoryLevel {
        Platform = "platform",
        Organization = "organization",
        Project = "project",
    }
}

/// The branch platform and organization repositories follow unless told otherwise.
const DEFAULT_BRANCH: &str = "main";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repository {
    pub id: i64,
    pub level: RepositoryLevel,
    /// Set for organization and project repositories.
    pub organization_id: Option<i64>,
    /// Set for project repositories.
    pub project_id: Option<i64>,
    pub name: String,
    pub url: String,
    /// For a project repository, `None` means "the environment's branch".
    pub branch: Option<String>,
    pub created_at: i64,
}

/// What [`Store::add_repository`] needs. A project repository may leave `organization_id` out:
/// it is taken from the project (and must match if given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRepository {
    pub level: RepositoryLevel,
    #[serde(default)]
    pub organization_id: Option<i64>,
    #[serde(default)]
    pub project_id: Option<i64>,
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub branch: Option<String>,
}

impl Record for Repository {
    const SELECT: &'static str =
        "id, level, organization_id, project_id, name, url, branch, created_at FROM repositories";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Repository {
            id: row.get(0)?,
            level: row.get(1)?,
            organization_id: row.get(2)?,
            project_id: row.get(3)?,
            name: row.get(4)?,
            url: row.get(5)?,
            branch: row.get(6)?,
            created_at: row.get(7)?,
        })
    }
}

/// Platform first, then organization, then project; by name within a level.
const LEVEL_ORDER: &str =
    "ORDER BY CASE level WHEN 'platform' THEN 0 WHEN 'organization' THEN 1 ELSE 2 END, name";

impl Store {
    /// Adds a repository after checking that its owners fit its level: none for `platform`, an
    /// organization for `organization`, a project (of that organization) for `project`.
    pub fn add_repository(&self, new: NewRepository) -> Result<Repository> {
        crate::check_name("repository", &new.name)?;
        require("repository url", &new.url)?;
        self.write(|conn| {
            let (organization_id, project_id, branch) = owners(conn, &new)?;
            insert_returning(
                conn,
                "INSERT INTO repositories (level, organization_id, project_id, name, url, branch,
                                           created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    new.level,
                    organization_id,
                    project_id,
                    new.name,
                    new.url,
                    branch,
                    now_ms()
                ],
            )
            .unique(|| format!("{} repository {:?}", new.level, new.name))
        })
    }

    /// What a deploy of the environment checks out: the platform's repositories, then its
    /// organization's, then its project's.
    pub fn repositories_for(&self, env_id: i64) -> Result<Vec<Repository>> {
        self.read(|conn| {
            let env = environment_row(conn, env_id)?;
            let tail = format!(
                "WHERE level = 'platform'
                    OR (level = 'organization' AND organization_id = ?1)
                    OR (level = 'project' AND project_id = ?2)
                 {LEVEL_ORDER}"
            );
            all(conn, &tail, [env.organization_id, env.project_id])
        })
    }

    /// Every repository an organization can see: the platform's, its own and its projects'.
    pub fn repositories(&self, org_id: i64) -> Result<Vec<Repository>> {
        self.read(|conn| {
            let tail = format!("WHERE level = 'platform' OR organization_id = ?1 {LEVEL_ORDER}");
            all(conn, &tail, [org_id])
        })
    }

    /// The platform's repositories (every environment deploys them).
    pub fn platform_repositories(&self) -> Result<Vec<Repository>> {
        self.read(|conn| all(conn, &format!("WHERE level = 'platform' {LEVEL_ORDER}"), []))
    }

    /// Whether any repository, of any level or owner, is named `name`: a platform repository's
    /// folder sits beside every organization's own.
    pub fn repository_name_taken(&self, name: &str) -> Result<bool> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM repositories WHERE name = ?1 LIMIT 1",
                    [name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
    }

    /// The URL of every repository, whatever its level or owner: the ones the control plane
    /// keeps mirrors of.
    pub fn repository_urls(&self) -> Result<Vec<String>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT DISTINCT url FROM repositories")?;
            let urls = stmt
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(urls)
        })
    }

    /// Replaces the environment's deployed revisions with `revisions` (`(repository id, commit)`).
    pub fn set_deployed_revisions(&self, env_id: i64, revisions: &[(i64, String)]) -> Result<()> {
        self.write(|conn| {
            environment_row(conn, env_id)?;
            conn.execute(
                "DELETE FROM deployed_revisions WHERE environment_id = ?1",
                [env_id],
            )?;
            let mut insert = conn.prepare_cached(
                "INSERT INTO deployed_revisions (environment_id, repository_id, revision)
                 VALUES (?1, ?2, ?3)",
            )?;
            for (repository_id, commit) in revisions {
                insert
                    .execute(params![env_id, repository_id, commit])
                    .unique(|| format!("a second revision for repository {repository_id}"))?;
            }
            Ok(())
        })
    }

    /// The environment's deployed revisions as `(repository id, commit)`, by repository id.
    pub fn deployed_revisions(&self, env_id: i64) -> Result<Vec<(i64, String)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT repository_id, revision FROM deployed_revisions
                 WHERE environment_id = ?1 ORDER BY repository_id",
            )?;
            let rows = stmt.query_map([env_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}

/// The `(organization_id, project_id, branch)` to store for `new`, or why its level does not fit.
fn owners(
    conn: &Connection,
    new: &NewRepository,
) -> Result<(Option<i64>, Option<i64>, Option<String>)> {
    let mismatch = |expected: &str| {
        StateError::Invalid(format!("a {} repository takes {expected}", new.level))
    };
    let fixed_branch = || {
        Some(
            new.branch
                .clone()
                .unwrap_or_else(|| DEFAULT_BRANCH.to_owned()),
        )
    };
    match (new.level, new.organization_id, new.project_id) {
        (RepositoryLevel::Platform, None, None) => Ok((None, None, fixed_branch())),
        (RepositoryLevel::Platform, ..) => Err(mismatch("no organization_id nor project_id")),
        (RepositoryLevel::Organization, Some(org_id), None) => {
            organization_row(conn, org_id)?;
            Ok((Some(org_id), None, fixed_branch()))
        }
        (RepositoryLevel::Organization, ..) => Err(mismatch("an organization_id, no project_id")),
        (RepositoryLevel::Project, org_id, Some(project_id)) => {
            let project = project_row(conn, project_id)?;
            if org_id.is_some_and(|org_id| org_id != project.organization_id) {
                return Err(StateError::NotFound(format!("project {project_id}")));
            }
            Ok((
                Some(project.organization_id),
                Some(project_id),
                new.branch.clone(),
            ))
        }
        (RepositoryLevel::Project, ..) => Err(mismatch("a project_id")),
    }
}
