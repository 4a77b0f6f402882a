//! Capabilities, grants and effective rights.
//!
//! A plugin *declares* the capabilities it wants; an operator *grants* capabilities to a plugin for a
//! scope (an organization, a project, or one environment); a run is *about* one environment. The
//! rights a plugin holds during an invocation are the intersection of the three, computed once per
//! invocation. Deny by default: nothing declared, nothing granted, or a grant for another scope all
//! mean no right. Host calls check [`Rights::allows`] before acting.
//!
//! Some capabilities are the whole server's by nature ([`Capability::is_server_wide`]: a command
//! as the server's SSH user reaches every environment on it); they are granted for one server
//! ([`Scope::server`]), and a grant of them for an environment would be a server's power in
//! disguise, so it counts for nothing.
//!
//! A capability may name the one thing it is about (`secret:<name>`, `targets:<target>`). A plain
//! capability covers each of its named forms: a grant of `targets` reaches every storage target of
//! the organization, a grant of `targets:offsite` only that one, whatever the plugin declared.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// One right a plugin can hold, e.g. `docker`, `ssh.exec`, `secret:smtp-password` or
/// `targets:offsite`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability {
    kind: Kind,
    /// The named thing, for capabilities about one thing (`secret:<name>`, `targets:<target>`).
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

    /// The right to reach one storage target of the organization (`targets:<target>`).
    pub fn storage_target(name: &str) -> Self {
        Capability {
            kind: Kind::Targets,
            target: Some(name.to_string()),
        }
    }

    /// Whether holding `self` gives `other`: the same right, or `self` is the plain form of a
    /// named one (`targets` covers `targets:offsite`).
    pub fn covers(&self, other: &Capability) -> bool {
        self.kind == other.kind && (self.target.is_none() || self.target == other.target)
    }

    /// What holding both `self` and `other` gives: the narrower of the two, if one covers the
    /// other.
    fn meet(&self, other: &Capability) -> Option<Capability> {
        if self.covers(other) {
            Some(other.clone())
        } else if other.covers(self) {
            Some(self.clone())
        } else {
            None
        }
    }

    /// Whether this right is the whole server's, whatever environment a run is about: a command
    /// (`ssh.exec`, `ssh.shell`) or a file (`ssh.files`) as the server's SSH user reaches every
    /// environment on it. Such a right is granted for one server ([`Scope::server`]) and never
    /// counts when granted for an environment, a project or an organization.
    pub fn is_server_wide(&self) -> bool {
        matches!(self.kind, Kind::SshExec | Kind::SshShell | Kind::SshFiles)
    }

    /// Whether using this right is recorded in the audit log even when allowed. Workspace files are
    /// private to the run; everything else reaches outside the sandbox.
    pub fn is_sensitive(&self) -> bool {
        self.kind != Kind::Files
    }

    /// Every capability name the host knows, for error messages and documentation.
    pub fn known() -> impl Iterator<Item = &'static str> {
        Kind::ALL
            .iter()
            .map(|(k, n)| {
                if *k == Kind::Secret {
                    "secret:<name>"
                } else {
                    n
                }
            })
            .chain(["targets:<target>"])
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
        if let Some(name) = s.strip_prefix("targets:") {
            if !is_name(name) {
                return Err(unknown());
            }
            return Ok(Capability::storage_target(name));
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

/// Where a grant applies: a whole organization, one of its projects, or one environment — or,
/// for a server-wide capability, one server of the organization (and every run on it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub organization: String,
    pub project: Option<String>,
    pub environment: Option<String>,
    /// The server, for a grant of a server-wide capability (then no project nor environment).
    pub server: Option<String>,
}

impl Scope {
    /// The scope of a whole organization.
    pub fn organization(organization: &str) -> Self {
        Scope {
            organization: organization.into(),
            project: None,
            environment: None,
            server: None,
        }
    }

    /// The scope of exactly one environment.
    pub fn environment(organization: &str, project: &str, environment: &str) -> Self {
        Scope {
            project: Some(project.into()),
            environment: Some(environment.into()),
            ..Scope::organization(organization)
        }
    }

    /// The scope of one server of an organization: where a server-wide capability is granted.
    pub fn server(organization: &str, server: &str) -> Self {
        Scope {
            server: Some(server.into()),
            ..Scope::organization(organization)
        }
    }

    /// The narrowest scope `capability` can be granted in for the run about `env`: its server for
    /// a server-wide capability, its environment otherwise.
    pub fn of_run(capability: &Capability, env: &EnvRef) -> Self {
        if capability.is_server_wide() {
            Scope::server(&env.organization, &env.server)
        } else {
            Scope::environment(&env.organization, &env.project, &env.environment)
        }
    }

    /// Whether this scope contains the environment `env` (organization/project/environment, or
    /// the server it is on).
    pub fn covers(&self, env: &EnvRef) -> bool {
        self.organization == env.organization
            && self.project.as_ref().is_none_or(|p| *p == env.project)
            && self
                .environment
                .as_ref()
                .is_none_or(|e| *e == env.environment)
            && self.server.as_ref().is_none_or(|s| *s == env.server)
    }

    /// Whether a grant of `capability` in this scope can count: a server-wide capability only
    /// for a server, any other never for a server.
    pub fn fits(&self, capability: &Capability) -> bool {
        self.server.is_some() == capability.is_server_wide()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.organization)?;
        for part in [&self.project, &self.environment].into_iter().flatten() {
            write!(f, "/{part}")?;
        }
        if let Some(server) = &self.server {
            write!(f, " (server {server})")?;
        }
        Ok(())
    }
}

/// The environment a run is about, by name, and the server it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvRef {
    pub organization: String,
    pub project: String,
    pub environment: String,
    pub server: String,
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
    /// declared ∩ granted (to this plugin, for a scope covering `env`); where one of the two is
    /// the plain form of the other, the named (narrower) one is held.
    pub fn effective(
        declared: &[Capability],
        grants: &[Grant],
        plugin: &str,
        env: &EnvRef,
    ) -> Self {
        let granted: Vec<&Capability> = grants
            .iter()
            .filter(|g| g.plugin == plugin && g.scope.covers(env) && g.scope.fits(&g.capability))
            .map(|g| &g.capability)
            .collect();
        let held = declared
            .iter()
            .flat_map(|cap| granted.iter().filter_map(|g| cap.meet(g)))
            .collect();
        Rights { held }
    }

    /// Whether a held right covers `cap`.
    pub fn allows(&self, cap: &Capability) -> bool {
        self.held.iter().any(|held| held.covers(cap))
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
            server: "web-1".into(),
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
            "targets",
            "targets:offsite",
        ] {
            assert_eq!(s.parse::<Capability>().unwrap().to_string(), s);
        }
        for s in [
            "",
            "root",
            "secret:",
            "secret:UPPER",
            "ssh",
            "docker ",
            "targets:",
            "targets:../x",
            "docker:x",
        ] {
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
            grant("files", Scope::organization("acme")),
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

    /// The `targets` grant once reached every target of the organization (read and delete): it can
    /// be given for one target, and then reaches that one only.
    #[test]
    fn a_grant_for_one_target_reaches_that_target_only() {
        let declared = vec![Capability::TARGETS];
        let one = vec![grant(
            "targets:offsite",
            Scope::environment("acme", "shop", "staging"),
        )];
        let rights = Rights::effective(&declared, &one, "p", &env("staging"));
        assert!(rights.allows(&Capability::storage_target("offsite")));
        assert!(!rights.allows(&Capability::storage_target("archive")));
        assert!(!rights.allows(&Capability::TARGETS), "not every target");

        let every = vec![grant(
            "targets",
            Scope::environment("acme", "shop", "staging"),
        )];
        let rights = Rights::effective(&declared, &every, "p", &env("staging"));
        assert!(rights.allows(&Capability::storage_target("offsite")));
        assert!(rights.allows(&Capability::storage_target("archive")));

        // Declared for one target, granted for all: still that one only.
        let declared = vec![Capability::storage_target("offsite")];
        let rights = Rights::effective(&declared, &every, "p", &env("staging"));
        assert!(rights.allows(&Capability::storage_target("offsite")));
        assert!(!rights.allows(&Capability::storage_target("archive")));

        // A named grant of one kind is nothing of another.
        let secret = Capability::secret("offsite");
        assert!(!Capability::TARGETS.covers(&secret));
    }

    /// `ssh.exec` granted for one environment once ran as the server's SSH user and read a sibling
    /// environment's files: a server-wide capability counts only when granted for the run's server.
    #[test]
    fn a_server_wide_capability_counts_only_when_granted_for_the_runs_server() {
        let declared = vec![Capability::SSH_EXEC, Capability::DOCKER];
        let for_run = |scope: Scope| {
            let grants = vec![grant("ssh.exec", scope.clone()), grant("docker", scope)];
            Rights::effective(&declared, &grants, "p", &env("staging"))
        };
        for (case, scope) in [
            (
                "its environment",
                Scope::environment("acme", "shop", "staging"),
            ),
            ("its organization", Scope::organization("acme")),
            ("another server", Scope::server("acme", "web-2")),
            (
                "another organization's server",
                Scope::server("globex", "web-1"),
            ),
        ] {
            assert!(
                !for_run(scope).allows(&Capability::SSH_EXEC),
                "ssh.exec granted for {case}"
            );
        }
        let on_server = for_run(Scope::server("acme", "web-1"));
        assert!(on_server.allows(&Capability::SSH_EXEC));
        assert!(
            !on_server.allows(&Capability::DOCKER),
            "an environment's capability is never granted per server"
        );
        assert!(Capability::SSH_SHELL.is_server_wide() && Capability::SSH_FILES.is_server_wide());
        assert!(!Capability::DOCKER.is_server_wide() && !Capability::FILES.is_server_wide());
        assert_eq!(
            Scope::of_run(&Capability::SSH_FILES, &env("staging")),
            Scope::server("acme", "web-1")
        );
        assert_eq!(
            Scope::of_run(&Capability::DOCKER, &env("staging")),
            Scope::environment("acme", "shop", "staging")
        );
    }
}
