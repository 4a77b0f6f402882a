//! What a plugin says about itself (`describe`), checked and in host types.
//!
//! A description is validated when the plugin loads, before anything runs for real: name,
//! version, role matching its world, hook points, capabilities it can be granted, config keys, and
//! for a lifecycle plugin the conventions the host prepares its runs with. The first problem is
//! the refusal's reason.

use crate::bindings::types::{self, Role};
use crate::grants::{Capability, is_name};

/// What a plugin says about itself, checked and in host types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub role: Role,
    pub summary: String,
    pub hooks: Vec<String>,
    pub priority: i32,
    pub capabilities: Vec<Capability>,
    pub config: Vec<ConfigKey>,
    /// What the host prepares for a lifecycle plugin's runs.
    pub conventions: Option<Conventions>,
}

/// A lifecycle plugin's conventions (see the WIT's `conventions`): the host learns the names of
/// what it prepares from the plugin, never from its own code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conventions {
    pub generated_secrets: Vec<String>,
    pub database: DatabaseService,
    pub default_app_image: String,
    pub default_database_image: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseService {
    pub container: String,
    pub port: u16,
    pub user: String,
    pub password_secret: String,
}

impl Conventions {
    fn validate(raw: types::Conventions) -> Result<Self, String> {
        for secret in raw
            .generated_secrets
            .iter()
            .chain([&raw.database.password_secret])
        {
            if !is_name(secret) {
                return Err(format!("secret name {secret:?} is not a valid name"));
            }
        }
        if !raw
            .generated_secrets
            .contains(&raw.database.password_secret)
        {
            return Err(format!(
                "the database password secret {:?} is not among the generated secrets",
                raw.database.password_secret
            ));
        }
        if !is_name(&raw.database.container) || !is_name(&raw.database.user) {
            return Err("the database container and user must be valid names".into());
        }
        for image in [&raw.default_app_image, &raw.default_database_image] {
            let ok = !image.is_empty()
                && image.len() <= 255
                && !image
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
            if !ok {
                return Err(format!("default image {image:?} is not an image reference"));
            }
        }
        Ok(Conventions {
            generated_secrets: raw.generated_secrets,
            database: DatabaseService {
                container: raw.database.container,
                port: raw.database.port,
                user: raw.database.user,
                password_secret: raw.database.password_secret,
            },
            default_app_image: raw.default_app_image,
            default_database_image: raw.default_database_image,
        })
    }

    /// The application image of an environment at `version` that names none.
    pub fn app_image(&self, version: &str) -> String {
        self.default_app_image.replace("{version}", version)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: String,
    pub description: String,
    pub required: bool,
    pub default: Option<String>,
}

impl Description {
    /// `name@version`
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Checks what a plugin returned from `describe`; the first problem is the error.
    pub fn validate(raw: types::Description, world_role: Role) -> Result<Self, String> {
        if !is_name(&raw.name) {
            return Err(format!(
                "name {:?} must be 1-64 lowercase letters, digits, '-', '_' or '.'",
                raw.name
            ));
        }
        if !is_semver(&raw.version) {
            return Err(format!(
                "version {:?} is not a semantic version (e.g. 1.2.0)",
                raw.version
            ));
        }
        if raw.role != world_role {
            return Err(format!(
                "describes itself as a {} plugin but exports the {} world",
                role_name(raw.role),
                role_name(world_role)
            ));
        }
        if raw.summary.len() > 200 || raw.summary.contains('\n') {
            return Err("summary must be one line of at most 200 bytes".into());
        }
        match world_role {
            Role::Hook if raw.hooks.is_empty() => {
                return Err("a hook plugin must subscribe to at least one hook point".into());
            }
            Role::Hook => {}
            _ if !raw.hooks.is_empty() => {
                return Err("only hook plugins subscribe to hook points".into());
            }
            _ => {}
        }
        for point in &raw.hooks {
            if !is_hook_point(point) {
                return Err(format!(
                    "hook point {point:?} is not one of before:<step>, after:<step>, before:*, after:*, on-failure, on-success"
                ));
            }
        }
        let capabilities = raw
            .capabilities
            .iter()
            .map(|c| c.parse::<Capability>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let conventions = match raw.conventions {
            Some(_) if world_role != Role::Lifecycle => {
                return Err("only lifecycle plugins declare conventions".into());
            }
            Some(raw) => Some(Conventions::validate(raw)?),
            None => None,
        };
        let mut seen = std::collections::BTreeSet::new();
        for key in &raw.config {
            if !is_name(&key.name) || !seen.insert(key.name.as_str()) {
                return Err(format!(
                    "config key {:?} is not a valid, unique name",
                    key.name
                ));
            }
        }
        Ok(Description {
            name: raw.name,
            version: raw.version,
            role: raw.role,
            summary: raw.summary,
            hooks: raw.hooks,
            priority: raw.priority,
            capabilities,
            conventions,
            config: raw
                .config
                .into_iter()
                .map(|k| ConfigKey {
                    name: k.name,
                    description: k.description,
                    required: k.required,
                    default: k.default,
                })
                .collect(),
        })
    }

    /// Whether this plugin subscribes to `point` (exactly, or by `before:*` / `after:*`).
    pub fn subscribes_to(&self, point: &str) -> bool {
        self.hooks.iter().any(|h| {
            h == point
                || h.strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with(':') && point.starts_with(prefix))
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "version": self.version,
            "role": role_name(self.role),
            "summary": self.summary,
            "hooks": self.hooks,
            "priority": self.priority,
            "capabilities": self.capabilities.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "config": self.config.iter().map(|k| serde_json::json!({
                "name": k.name,
                "description": k.description,
                "required": k.required,
                "default": k.default,
            })).collect::<Vec<_>>(),
        })
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Lifecycle => "lifecycle",
        Role::Hook => "hook",
        Role::StorageBackend => "storage-backend",
        Role::Neutralizer => "neutralizer",
        Role::Importer => "importer",
    }
}

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_hook_point(point: &str) -> bool {
    match point.split_once(':') {
        Some(("before" | "after", "*")) => true,
        Some(("before" | "after", step)) => is_name(step),
        _ => matches!(point, "on-failure" | "on-success"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_points_and_subscriptions() {
        for ok in ["before:health-check", "after:*", "on-failure", "on-success"] {
            assert!(is_hook_point(ok), "{ok}");
        }
        for bad in ["before:", "during:x", "before:Bad Step", "on-whatever", ""] {
            assert!(!is_hook_point(bad), "{bad}");
        }
        let d = Description {
            name: "n".into(),
            version: "1.0.0".into(),
            role: Role::Hook,
            summary: String::new(),
            hooks: vec!["before:*".into(), "on-failure".into()],
            priority: 0,
            capabilities: vec![],
            config: vec![],
            conventions: None,
        };
        assert!(d.subscribes_to("before:start-odoo"));
        assert!(d.subscribes_to("on-failure"));
        assert!(!d.subscribes_to("after:start-odoo"));
    }

    #[test]
    fn versions() {
        assert!(is_semver("0.1.0") && is_semver("1.2.3-rc.1"));
        assert!(!is_semver("1.2") && !is_semver("v1.2.3") && !is_semver("1..3"));
    }
}
