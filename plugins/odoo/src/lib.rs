//! What Berth's default lifecycle plugins know about running Odoo, shared by `deploy` and
//! `auto-deploy`.
//!
//! The facts (sizing PostgreSQL and Odoo from an environment's resources, writing `odoo.conf`,
//! reading dependency files, telling a code-only push from a dependency change) are plain functions,
//! tested natively. The steps ([`steps`]) are the seed's steps, one function each, named as the
//! seed names them; every one checks before it acts, so running it again is safe.

pub mod backup;
pub mod conf;
pub mod deps;
pub mod restore;
pub mod steps;
pub mod tuning;

/// The environment's containers, by their short names (the host prefixes them per environment).
pub const DB_CONTAINER: &str = "db";
pub const ODOO_CONTAINER: &str = "odoo";
/// The environment's private network: Odoo reaches PostgreSQL on it as `db`.
pub const NETWORK: &str = "internal";
/// Where the environment's code is mounted inside the Odoo container (read-only).
pub const CODE_MOUNT: &str = "/mnt/code";
/// Odoo's data directory (filestore, sessions) in the official image; a named volume.
pub const DATA_DIR: &str = "/var/lib/odoo";
/// The secrets the deploy flow reads: PostgreSQL's superuser password and Odoo's role password.
pub const POSTGRES_PASSWORD: &str = "postgres-password";
pub const ODOO_DB_PASSWORD: &str = "odoo-db-password";

/// The step names of a deploy (first deploy, redeploy, full auto-deploy), in the seed's order.
pub const DEPLOY_STEPS: [&str; 9] = [
    "connect-server",
    "setup-database",
    "configure-dns",
    "clone-repositories",
    "start-odoo",
    "install-dependencies",
    "initialize-database",
    "configure-ssl",
    "health-check",
];

/// The step names of a fast auto-deploy, in the seed's order.
pub const FAST_STEPS: [&str; 3] = ["pull-latest-code", "restart-odoo", "health-check"];

/// The capabilities the shared steps use; each plugin asks for exactly these.
pub const CAPABILITIES: [&str; 8] = [
    "ssh.exec",
    "ssh.files",
    "docker",
    "database",
    "database.admin",
    "git",
    "secret:postgres-password",
    "secret:odoo-db-password",
];

/// Odoo's series as (major, minor), e.g. "17.0" → (17, 0); `None` when it is not a series.
pub fn series(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn series_are_read() {
        assert_eq!(super::series("17.0"), Some((17, 0)));
        assert_eq!(super::series("saas-17.2"), None);
        assert_eq!(super::series("18"), None);
    }
}
