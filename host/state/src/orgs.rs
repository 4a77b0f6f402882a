//! Organizations, their API tokens, their servers and their projects: the owners everything else
//! hangs from. Reads take the organization id so one tenant can never name another's rows.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    Record, Result, SqlResultExt, StateError, Store, all, insert_returning, now_ms, one,
    random_hex, require, touch,
};

/// A tenant: it owns servers, projects and API tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

/// An API token as listed: its secret is shown once, at creation, and never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub organization_id: i64,
    pub label: String,
    pub created_at: i64,
    /// When it stops opening anything (Unix ms), if it was given an end.
    pub expires_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// A machine Berth reaches over SSH to run Docker on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub id: i64,
    pub organization_id: i64,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The host key the server must offer, an OpenSSH public key line (`ssh-ed25519 AAAA…`):
    /// given at creation, or pinned at the first contact. Every connection is checked against it.
    pub host_key: Option<String>,
    /// Where the control plane finds the private key it logs in with (a path or reference).
    pub ssh_key: String,
    pub created_at: i64,
}

/// What [`Store::create_server`] needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewServer {
    pub name: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default)]
    pub host_key: Option<String>,
    pub ssh_key: String,
}

fn default_port() -> u16 {
    22
}

fn default_user() -> String {
    "root".to_owned()
}

/// A group of environments sharing one primary repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: i64,
    pub organization_id: i64,
    pub name: String,
    pub created_at: i64,
}

impl Record for Organization {
    const SELECT: &'static str = "id, name, created_at FROM organizations";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Organization {
            id: row.get(0)?,
            name: row.get(1)?,
            created_at: row.get(2)?,
        })
    }
}

impl Record for TokenInfo {
    const SELECT: &'static str =
        "id, organization_id, label, created_at, expires_at, revoked_at FROM api_tokens";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(TokenInfo {
            id: row.get(0)?,
            organization_id: row.get(1)?,
            label: row.get(2)?,
            created_at: row.get(3)?,
            expires_at: row.get(4)?,
            revoked_at: row.get(5)?,
        })
    }
}

impl Record for Server {
    const SELECT: &'static str =
        "id, organization_id, name, host, port, user, host_key, ssh_key, created_at FROM servers";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Server {
            id: row.get(0)?,
            organization_id: row.get(1)?,
            name: row.get(2)?,
            host: row.get(3)?,
            port: row.get(4)?,
            user: row.get(5)?,
            host_key: row.get(6)?,
            ssh_key: row.get(7)?,
            created_at: row.get(8)?,
        })
    }
}

impl Record for Project {
    const SELECT: &'static str = "id, organization_id, name, created_at FROM projects";
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Project {
            id: row.get(0)?,
            organization_id: row.get(1)?,
            name: row.get(2)?,
            created_at: row.get(3)?,
        })
    }
}

/// The prefix that makes a Berth token recognisable (to people and to secret scanners).
const TOKEN_PREFIX: &str = "berth_";

fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Store {
    pub fn create_organization(&self, name: &str) -> Result<Organization> {
        crate::check_name("organization", name)?;
        self.write(|conn| {
            insert_returning(
                conn,
                "INSERT INTO organizations (name, created_at) VALUES (?1, ?2)",
                params![name, now_ms()],
            )
            .unique(|| format!("organization {name:?}"))
        })
    }

    pub fn organization(&self, id: i64) -> Result<Organization> {
        self.read(|conn| organization_row(conn, id))
    }

    pub fn organization_by_name(&self, name: &str) -> Result<Option<Organization>> {
        self.read(|conn| Ok(one(conn, "WHERE name = ?1", [name]).optional()?))
    }

    /// Makes an API token for `org_id`. The secret (`berth_` + 64 hex digits) is returned only
    /// here; the store keeps its SHA-256.
    pub fn create_token(&self, org_id: i64, label: &str) -> Result<(TokenInfo, String)> {
        self.create_token_until(org_id, label, None)
    }

    /// A new token of the organization that opens nothing after `expires_at` (Unix ms).
    pub fn create_token_until(
        &self,
        org_id: i64,
        label: &str,
        expires_at: Option<i64>,
    ) -> Result<(TokenInfo, String)> {
        let secret = format!("{TOKEN_PREFIX}{}", random_hex(32));
        self.write(|conn| {
            organization_row(conn, org_id)?;
            let info = insert_returning(
                conn,
                "INSERT INTO api_tokens (organization_id, label, secret_sha256, created_at,
                     expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![org_id, label, token_hash(&secret), now_ms(), expires_at],
            )?;
            Ok((info, secret))
        })
    }

    /// The organization's tokens, without their secrets.
    pub fn tokens(&self, org_id: i64) -> Result<Vec<TokenInfo>> {
        self.read(|conn| all(conn, "WHERE organization_id = ?1 ORDER BY id", [org_id]))
    }

    /// Revokes token `id` of the organization: it opens nothing from now on.
    pub fn revoke_token(&self, org_id: i64, id: i64) -> Result<()> {
        self.write(|conn| {
            touch(
                conn,
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?1)
                 WHERE id = ?2 AND organization_id = ?3",
                params![now_ms(), id, org_id],
                || format!("token {id}"),
            )
        })
    }

    /// A new operator token, returned once; the store keeps only its SHA-256.
    pub fn create_operator_token(&self, label: &str) -> Result<String> {
        let secret = format!("{TOKEN_PREFIX}op_{}", random_hex(32));
        self.write(|conn| {
            conn.execute(
                "INSERT INTO operator_tokens (label, secret_sha256, created_at) VALUES (?1, ?2, ?3)",
                params![label, token_hash(&secret), now_ms()],
            )?;
            Ok(secret)
        })
    }

    /// Whether `secret` is an operator token.
    pub fn is_operator_token(&self, secret: &str) -> Result<bool> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM operator_tokens WHERE secret_sha256 = ?1",
                    [token_hash(secret)],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
    }

    /// The capabilities organization `org_id` may grant its own plugins, if the operator set
    /// them (otherwise the platform's default applies).
    pub fn grant_ceiling(&self, org_id: i64) -> Result<Option<Vec<String>>> {
        self.read(|conn| {
            let text: Option<String> = conn
                .query_row(
                    "SELECT capabilities FROM grant_ceilings WHERE organization_id = ?1",
                    [org_id],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(text.map(|t| serde_json::from_str(&t).unwrap_or_default()))
        })
    }

    pub fn set_grant_ceiling(&self, org_id: i64, capabilities: &[String]) -> Result<()> {
        let json = serde_json::to_string(capabilities).expect("a list of strings");
        self.write(|conn| {
            organization_row(conn, org_id)?;
            conn.execute(
                "INSERT INTO grant_ceilings (organization_id, capabilities) VALUES (?1, ?2)
                 ON CONFLICT (organization_id) DO UPDATE SET capabilities = excluded.capabilities",
                params![org_id, json],
            )?;
            Ok(())
        })
    }

    /// The organization a token secret belongs to, if it is a token at all.
    pub fn token_organization(&self, secret: &str) -> Result<Option<i64>> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT organization_id FROM api_tokens WHERE secret_sha256 = ?1
                     AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
                    params![token_hash(secret), now_ms()],
                    |row| row.get(0),
                )
                .optional()?)
        })
    }

    pub fn create_server(&self, org_id: i64, new: NewServer) -> Result<Server> {
        require("server name", &new.name)?;
        require("server host", &new.host)?;
        require("server user", &new.user)?;
        if new.port == 0 {
            return Err(StateError::Invalid("server port must not be 0".into()));
        }
        self.write(|conn| {
            organization_row(conn, org_id)?;
            insert_returning(
                conn,
                "INSERT INTO servers (organization_id, name, host, port, user, host_key, ssh_key,
                                      created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    org_id,
                    new.name,
                    new.host,
                    new.port,
                    new.user,
                    new.host_key,
                    new.ssh_key,
                    now_ms()
                ],
            )
            .unique(|| format!("server {:?}", new.name))
        })
    }

    pub fn server(&self, org_id: i64, id: i64) -> Result<Server> {
        self.read(|conn| server_in(conn, org_id, id))
    }

    pub fn servers(&self, org_id: i64) -> Result<Vec<Server>> {
        self.read(|conn| all(conn, "WHERE organization_id = ?1 ORDER BY name", [org_id]))
    }

    /// Pins `key` (an OpenSSH public key line, offered at the first contact) as server `id`'s
    /// host key unless one is pinned; answers the key pinned now (another contact may have
    /// pinned one first, atomically).
    pub fn pin_host_key(&self, id: i64, key: &str) -> Result<String> {
        require("host key", key)?;
        self.write(|conn| pin_once(conn, "servers", id, key, || format!("server {id}")))
    }

    /// Replaces the pinned host key of the organization's server `id` (a server rebuilt on
    /// purpose); `None` forgets it, and the next contact's key is pinned.
    pub fn set_host_key(&self, org_id: i64, id: i64, key: Option<&str>) -> Result<Server> {
        if let Some(key) = key {
            require("host key", key)?;
        }
        self.write(|conn| {
            touch(
                conn,
                "UPDATE servers SET host_key = ?3 WHERE id = ?1 AND organization_id = ?2",
                params![id, org_id, key],
                || format!("server {id}"),
            )?;
            server_in(conn, org_id, id)
        })
    }

    pub fn create_project(&self, org_id: i64, name: &str) -> Result<Project> {
        crate::check_name("project", name)?;
        self.write(|conn| {
            organization_row(conn, org_id)?;
            insert_returning(
                conn,
                "INSERT INTO projects (organization_id, name, created_at) VALUES (?1, ?2, ?3)",
                params![org_id, name, now_ms()],
            )
            .unique(|| format!("project {name:?}"))
        })
    }

    pub fn project(&self, org_id: i64, id: i64) -> Result<Project> {
        self.read(|conn| project_in(conn, org_id, id))
    }

    pub fn projects(&self, org_id: i64) -> Result<Vec<Project>> {
        self.read(|conn| all(conn, "WHERE organization_id = ?1 ORDER BY name", [org_id]))
    }
}

/// The organization `id`.
pub(crate) fn organization_row(conn: &Connection, id: i64) -> Result<Organization> {
    one(conn, "WHERE id = ?1", [id]).found(|| format!("organization {id}"))
}

/// The server `id`, if `org_id` owns it.
pub(crate) fn server_in(conn: &Connection, org_id: i64, id: i64) -> Result<Server> {
    one(conn, "WHERE id = ?1 AND organization_id = ?2", [id, org_id])
        .found(|| format!("server {id}"))
}

/// The project `id`, if `org_id` owns it.
pub(crate) fn project_in(conn: &Connection, org_id: i64, id: i64) -> Result<Project> {
    one(conn, "WHERE id = ?1 AND organization_id = ?2", [id, org_id])
        .found(|| format!("project {id}"))
}

/// The project `id`, whoever owns it.
pub(crate) fn project_row(conn: &Connection, id: i64) -> Result<Project> {
    one(conn, "WHERE id = ?1", [id]).found(|| format!("project {id}"))
}

/// Sets the `host_key` of row `id` of `table` (a table of this crate, never a caller's text) to
/// `key` unless it has one, in the caller's transaction; answers the key it has now.
pub(crate) fn pin_once(
    conn: &Connection,
    table: &'static str,
    id: i64,
    key: &str,
    what: impl FnOnce() -> String,
) -> Result<String> {
    conn.execute(
        &format!("UPDATE {table} SET host_key = ?2 WHERE id = ?1 AND host_key IS NULL"),
        params![id, key],
    )?;
    conn.query_row(
        &format!("SELECT host_key FROM {table} WHERE id = ?1"),
        [id],
        |row| row.get(0),
    )
    .found(what)
}
