//! What Berth's default lifecycle plugins know about running Odoo, shared by `deploy`,
//! `auto-deploy`, `backup` and `restore`.
//!
//! The facts (sizing PostgreSQL and Odoo from an environment's resources, writing `odoo.conf`,
//! reading dependency files, telling a code-only push from a dependency change) are plain functions,
//! tested natively. Each lifecycle's steps are one table ([`steps::DEPLOY`], [`steps::FAST`],
//! [`backup::STEPS`], [`restore::STEPS`]) of the seed's step names, each mapped to the one function
//! that performs it; every step checks before it acts, so running it again is safe. The names the
//! host prepares for these runs (secrets, database, images) are declared once, by [`conventions`].

pub mod backup;
pub mod conf;
pub mod deps;
pub mod restore;
pub mod steps;
pub mod tuning;

use berth_sdk::{Conventions, DatabaseService};

/// The environment's containers, by their short names (the host prefixes them per environment).
pub const DB_CONTAINER: &str = "db";
pub const ODOO_CONTAINER: &str = "odoo";
/// The environment's private network: Odoo reaches PostgreSQL on it as `db`.
pub const NETWORK: &str = "internal";
/// Where the environment's code is mounted inside the Odoo container (read-only).
pub const CODE_MOUNT: &str = "/mnt/code";
/// The user Odoo runs as in the official image: what only Odoo may read on the server (its
/// `odoo.conf`, a staged backup) is given to this user's uid, read from the image.
pub const ODOO_USER: &str = "odoo";
/// Odoo's data directory (filestore, sessions) in the official image; a named volume.
pub const DATA_DIR: &str = "/var/lib/odoo";
/// The official image declares this folder a volume; Berth's code is at [`CODE_MOUNT`], so an
/// empty, labelled volume of the environment takes it (else every container creation would leave
/// an anonymous volume behind).
pub const EXTRA_ADDONS: &str = "/mnt/extra-addons";
/// The secrets the host generates for an environment: PostgreSQL's superuser password and Odoo's
/// role password.
pub const POSTGRES_PASSWORD: &str = "postgres-password";
pub const ODOO_DB_PASSWORD: &str = "odoo-db-password";
/// PostgreSQL's port and superuser inside the database container (the official image's).
pub const DB_PORT: u16 = 5432;
pub const DB_SUPERUSER: &str = "postgres";
/// The images an environment runs when it names none; `{version}` is its Odoo series.
pub const DEFAULT_ODOO_IMAGE: &str = "odoo:{version}";
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:16";

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

/// What the host prepares for the runs of every lifecycle built on this crate: it generates the
/// two passwords, reaches PostgreSQL as its superuser in the database container, and gives an
/// environment that names no image the official ones.
pub fn conventions() -> Conventions {
    Conventions {
        generated_secrets: vec![POSTGRES_PASSWORD.into(), ODOO_DB_PASSWORD.into()],
        database: DatabaseService {
            container: DB_CONTAINER.into(),
            port: DB_PORT,
            user: DB_SUPERUSER.into(),
            password_secret: POSTGRES_PASSWORD.into(),
        },
        default_app_image: DEFAULT_ODOO_IMAGE.into(),
        default_database_image: DEFAULT_POSTGRES_IMAGE.into(),
    }
}

/// Odoo's series as (major, minor), e.g. "17.0" → (17, 0); `None` when it is not a series.
pub fn series(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_password_is_a_generated_secret() {
        let conventions = super::conventions();
        assert!(
            conventions
                .generated_secrets
                .contains(&conventions.database.password_secret)
        );
        for secret in &conventions.generated_secrets {
            let capability = format!("secret:{secret}");
            assert!(
                super::CAPABILITIES.contains(&capability.as_str()),
                "{secret}"
            );
        }
    }

    #[test]
    fn series_are_read() {
        assert_eq!(super::series("17.0"), Some((17, 0)));
        assert_eq!(super::series("saas-17.2"), None);
        assert_eq!(super::series("18"), None);
    }
}
