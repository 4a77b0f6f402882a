//! Capabilities, grants and effective rights.
//!
//! A plugin *declares* the capabilities it wants; an operator *grants* capabilities to a plugin for a
//! scope (an organization, a project, or one environment); a run is *about* one environment. The
//! rights a plugin holds during an invocation are the intersection of the three, computed once per
//! invocation. Deny by default: nothing declared, nothing granted, or a grant for another scope all
//! mean no right. Host calls check [`Rights::allows`] before acting.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// One right a plugin can hold, e.g. `docker`, `ssh.exec` or `secret:smtp-password`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability {
    kind: Kind,
    /// The named thing, for capabilities about one thing (`secret:<name>`).
    target: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Files,
    Secret,
    SshExec,
    SshShell,
    SshFiles,
    Docker,
    Database,
    DatabaseAdmin,
    DatabaseDump,
    Storage,
    Git,
    Targets,
}

impl Kind {
    const ALL: [(Kind, &'static str); 12] = [
        (Kind::Files, "files"),
        (Kind::Secret, "secret"),
        (Kind::SshExec, "ssh.exec"),
        (Kind::SshShell, "ssh.shell"),
        (Kind::SshFiles, "ssh.files"),
        (Kind::Docker, "docker"),
        (Kind::Database, "database"),
        (Kind::DatabaseAdmin, "database.admin"),
        (Kind::DatabaseDump, "database.dump"),
        (Kind::Storage, "storage"),
        (Kind::Git, "git"),
        (Kind::Targets, "targets"),
    ];

    fn name(self) -> &'static str {
        Kind::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }
}

impl Capability {
    pub const FILES: Capability = Capability::plain(Kind::Files);
    pub const SSH_EXEC: Capability = Capability::plain(Kind::SshExec);
    pub const SSH_SHELL: Capability = Capability::plain(Kind::SshShell);
    pub const SSH_FILES: Capability = Capability::plain(Kind::SshFiles);
    pub const DOCKER: Capability = Capability::plain(Kind::Docker);
    pub const DATABASE: Capability = Capability::plain(Kind::Database);
    pub const DATABASE_ADMIN: Capability = Capability::plain(Kind::DatabaseAdmin);
    pub const DATABASE_DUMP: Capability = Capability::plain(Kind::DatabaseDump);
    pub const STORAGE: Capability = Capability::plain(Kind::Storage);
    pub const GIT: Capability = Capability::plain(Kind::Git);
    pub const TARGETS: Capability = Capability::plain(Kind::Targets);

    const fn plain(kind: Kind) -> Self {
        Capability { kind, target: None }
    }

    /// The right to read one named secret.
    pub fn secret(name: &str) -> Self {
        Capability {
            kind: Kind::Secret,
            target: Some(name.to_string()),
        }
    }

    /// Whether using this right is recorded in the audit log even when allowed. Workspace files are
    /// private to the run; everything else reaches outside the sandbox.
    pub fn is_sensitive(&self) -> bool {
        self.kind != Kind::Files
    }

    /// Every capability name the host knows, for error messages and documentation.
    pub fn known() -> impl Iterator<Item = &'static str> {
        Kind::ALL.iter().map(|(k, n)| {
            if *k == Kind::Secret {
                "secret:<name>"
            } else {
                n
            }
        })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Some(target) => write!(f, "{}:{target}", self.kind.name()),
            None => f.write_str(self.kind.name()),
        }
    }
}

/// A capability string that is not one the host knows.
#[derive(Debug, thiserror::Error)]
#[error("unknown capability `{0}` (known: {known})", known = Capability::known().collect::<Vec<_>>().join(", "))]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownCapability(s.to_string());
        if let Some(name) = s.strip_prefix("secret:") {
            if !is_name(name) {
                return Err(unknown());
            }
            return Ok(Capability::secret(name));
        }
        Kind::ALL
            .iter()
            .find(|(k, n)| *n == s && *k != Kind::Secret)
            .map(|(k, _)| Capability::plain(*k))
            .ok_or_else(unknown)
    }
}

/// Lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit; at most 64 bytes.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// Where a grant applies: a whole organization, one of its projects, or one environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub organization: String,
    pub project: Option<String>,
    pub environment: Option<String>,
}

impl Scope {
    /// The scope of exactly one environment.
    pub fn environment(organization: &str, project: &str, environment: &str) -> Self {
        Scope {
            organization: organization.into(),
            project: Some(project.into()),
            environment: Some(environment.into()),
        }
    }

    /// Whether this scope contains the environment `env` (organization/project/environment).
    pub fn covers(&self, env: &EnvRef) -> bool {
        self.organization == env.organization
            && self.project.as_ref().is_none_or(|p| *p == env.project)
            && self
                .environment
                .as_ref()
                .is_none_or(|e| *e == env.environment)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.organization)?;
        for part in [&self.project, &self.environment].into_iter().flatten() {
            write!(f, "/{part}")?;
        }
        Ok(())
    }
}

/// The environment a run is about, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvRef {
    pub organization: String,
    pub project: String,
    pub environment: String,
}

impl fmt::Display for EnvRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.organization, self.project, self.environment
        )
    }
}

/// An operator's decision: `plugin` may use `capability` within `scope`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub plugin: String,
    pub capability: Capability,
    pub scope: Scope,
}

/// The rights one plugin holds during one invocation.
#[derive(Clone, Debug, Default)]
pub struct Rights {
    held: BTreeSet<Capability>,
}

impl Rights {
    /// declared ∩ granted (to this plugin, for a scope covering `env`).
    pub fn effective(
        declared: &[Capability],
        grants: &[Grant],
        plugin: &str,
        env: &EnvRef,
    ) -> Self {
        let held = declared
            .iter()
            .filter(|cap| {
                grants
                    .iter()
                    .any(|g| g.plugin == plugin && g.capability == **cap && g.scope.covers(env))
            })
            .cloned()
            .collect();
        Rights { held }
    }

    pub fn allows(&self, cap: &Capability) -> bool {
        self.held.contains(cap)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Capability> {
        self.held.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(e: &str) -> EnvRef {
        EnvRef {
            organization: "acme".into(),
            project: "shop".into(),
            environment: e.into(),
        }
    }

    fn grant(cap: &str, scope: Scope) -> Grant {
        Grant {
            plugin: "p".into(),
            capability: cap.parse().unwrap(),
            scope,
        }
    }

    #[test]
    fn capabilities_round_trip_and_unknown_ones_are_refused() {
        for s in [
            "files",
            "ssh.exec",
            "docker",
            "secret:smtp-password",
            "database.dump",
        ] {
            assert_eq!(s.parse::<Capability>().unwrap().to_string(), s);
        }
        for s in ["", "root", "secret:", "secret:UPPER", "ssh", "docker "] {
            let err = s.parse::<Capability>().unwrap_err().to_string();
            assert!(err.contains("unknown capability"), "{err}");
        }
    }

    #[test]
    fn effective_rights_are_the_intersection_of_declared_granted_and_scope() {
        let declared: Vec<Capability> = ["docker", "files"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let grants = vec![
            grant("docker", Scope::environment("acme", "shop", "staging")),
            grant("ssh.exec", Scope::environment("acme", "shop", "staging")),
            grant(
                "files",
                Scope {
                    organization: "acme".into(),
                    project: None,
                    environment: None,
                },
            ),
        ];
        let staging = Rights::effective(&declared, &grants, "p", &env("staging"));
        assert!(staging.allows(&Capability::DOCKER));
        assert!(staging.allows(&Capability::FILES));
        assert!(
            !staging.allows(&Capability::SSH_EXEC),
            "granted but not declared"
        );

        let production = Rights::effective(&declared, &grants, "p", &env("production"));
        assert!(
            !production.allows(&Capability::DOCKER),
            "granted for another environment"
        );
        assert!(
            production.allows(&Capability::FILES),
            "organization-wide grant"
        );

        let other = Rights::effective(&declared, &grants, "q", &env("staging"));
        assert_eq!(other.iter().count(), 0, "grants belong to one plugin");
    }
}
