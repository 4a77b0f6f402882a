//! `berth operator …`: the operator's powers over the API (`/v1/operator/…`) — organizations,
//! the capabilities each may grant its own plugins and the requests for more, upload quotas,
//! concurrent runs, platform repositories, lifting protection. They take the operator's token,
//! which no organization holds; an organization's token is refused (403) and the command says
//! which token it needs. `berth grant-requests` is the organization's side: its own requests.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client_cmd::{Api, ApiRefusal, lines, protection};
use crate::printable::printable;

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Grant requests of every organization: pending ones, or all with --all.
    GrantRequests {
        #[arg(long)]
        all: bool,
    },
    /// Approve a pending grant request: the grant it asked for holds from now on.
    Approve { id: i64 },
    /// Deny a pending grant request, with a reason the organization reads.
    Deny {
        id: i64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// The capabilities an organization may grant its own plugins: shown, or set to CAP… (or to
    /// nothing with --none). Beyond them, a grant is a request for the operator.
    Ceiling {
        organization: i64,
        /// e.g. `files secret:* docker targets ssh.exec`.
        #[arg(conflicts_with = "none")]
        capabilities: Vec<String>,
        /// Let the organization grant nothing itself.
        #[arg(long)]
        none: bool,
    },
    /// An organization's upload quotas: shown, or the ones given set (N, or `default` for the
    /// platform's); the others stay as they are.
    UploadQuota {
        organization: i64,
        /// How many plugins (by name) it may hold.
        #[arg(long, value_name = "N|default")]
        max_plugins: Option<Setting>,
        /// How many uploads it may make in an hour.
        #[arg(long, value_name = "N|default")]
        uploads_per_hour: Option<Setting>,
        /// How many MiB it may upload in an hour.
        #[arg(long, value_name = "N|default")]
        mib_per_hour: Option<Setting>,
    },
    /// How many runs an organization runs at once (more wait in the queue): shown, or set to N
    /// or back to the platform's `default`.
    RunLimit {
        organization: i64,
        #[arg(value_name = "N|default")]
        limit: Option<Setting>,
    },
    /// Platform repositories: deployed to every environment of every organization.
    #[command(subcommand)]
    Repo(PlatformRepoCommand),
    /// Protect an environment, or lift its protection (--off): a restore over a protected
    /// environment needs its name typed back.
    Protect {
        environment: i64,
        #[arg(long)]
        off: bool,
    },
}

#[derive(Subcommand)]
pub enum OrgCommand {
    /// Create an organization and print its first API token (shown once).
    Create { name: String },
}

#[derive(Subcommand)]
pub enum PlatformRepoCommand {
    Add {
        name: String,
        url: String,
        #[arg(long)]
        branch: Option<String>,
    },
    List,
}

/// A quota or limit as given on the command line: a number, or the platform's default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Setting {
    Default,
    Value(u32),
}

impl std::str::FromStr for Setting {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text == "default" {
            return Ok(Setting::Default);
        }
        text.parse()
            .map(Setting::Value)
            .map_err(|_| format!("{text:?} is neither a number nor `default`"))
    }
}

impl Setting {
    fn json(self) -> Value {
        match self {
            Setting::Default => Value::Null,
            Setting::Value(n) => json!(n),
        }
    }
}

/// Calls an operator route; a refusal of the token says which token the command takes.
async fn call(api: &Api, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    api.call(method, path, body).await.map_err(|e| {
        let refused = e
            .downcast_ref::<ApiRefusal>()
            .is_some_and(|r| matches!(r.status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED));
        if refused {
            e.context(
                "operator commands take the operator's token (`<data>/operator-token`, written at \
                 the control plane's first start), not an organization's",
            )
        } else {
            e
        }
    })
}

pub async fn operator(api: &Api, command: OperatorCommand) -> anyhow::Result<ExitCode> {
    match command {
        OperatorCommand::Org(OrgCommand::Create { name }) => {
            let body = json!({ "name": name });
            let v = call(api, Method::POST, "/v1/operator/organizations", Some(body)).await?;
            let id = &v["organization"]["id"];
            api.print(&v, |v| v["token"].as_str().unwrap_or("").to_string());
            eprintln!(
                "organization {} (id {id}) created; the token above is shown only once",
                printable(&name)
            );
        }
        OperatorCommand::GrantRequests { all } => {
            let path = if all {
                "/v1/operator/grant-requests"
            } else {
                "/v1/operator/grant-requests?status=pending"
            };
            let v = call(api, Method::GET, path, None).await?;
            api.print(&v, request_lines);
        }
        OperatorCommand::Approve { id } => {
            let path = format!("/v1/operator/grant-requests/{id}/approve");
            let v = call(api, Method::POST, &path, None).await?;
            api.print(&v, |v| {
                format!(
                    "approved: {} (grant {})",
                    request_line(&v["request"]),
                    v["grant"]["id"]
                )
            });
        }
        OperatorCommand::Deny { id, reason } => {
            let path = format!("/v1/operator/grant-requests/{id}/deny");
            let body = json!({ "reason": reason });
            let v = call(api, Method::POST, &path, Some(body)).await?;
            api.print(&v, |v| format!("denied: {}", request_line(v)));
        }
        OperatorCommand::Ceiling {
            organization,
            capabilities,
            none,
        } => {
            let path = format!("/v1/operator/organizations/{organization}/grant-ceiling");
            let v = if capabilities.is_empty() && !none {
                call(api, Method::GET, &path, None).await?
            } else {
                let body = json!({ "capabilities": capabilities });
                call(api, Method::PUT, &path, Some(body)).await?
            };
            api.print(&v, |v| {
                let names: Vec<String> = v["capabilities"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| printable(c.as_str().unwrap_or("?")).into_owned())
                    .collect();
                let names = if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                };
                format!("organization {organization} may grant its plugins: {names}")
            });
        }
        OperatorCommand::UploadQuota {
            organization,
            max_plugins,
            uploads_per_hour,
            mib_per_hour,
        } => {
            let path = format!("/v1/operator/organizations/{organization}/upload-quota");
            let mut v = call(api, Method::GET, &path, None).await?;
            let changes = [
                ("max_plugins", max_plugins),
                ("uploads_per_hour", uploads_per_hour),
                ("upload_mib_per_hour", mib_per_hour),
            ];
            if changes.iter().any(|(_, setting)| setting.is_some()) {
                // The route sets all three at once: the ones not given keep what was set.
                let mut quota = v["set"].clone();
                for (key, setting) in changes {
                    if let Some(setting) = setting {
                        quota[key] = setting.json();
                    }
                }
                v = call(api, Method::PUT, &path, Some(quota)).await?;
            }
            api.print(&v, |v| {
                let shown = |key: &str, unit: &str| {
                    let own = if v["set"][key].is_null() {
                        " (default)"
                    } else {
                        ""
                    };
                    format!("{} {unit}{own}", v["limits"][key])
                };
                format!(
                    "organization {organization}: at most {}, {}, {}",
                    shown("max_plugins", "plugins"),
                    shown("uploads_per_hour", "uploads an hour"),
                    shown("upload_mib_per_hour", "MiB an hour"),
                )
            });
        }
        OperatorCommand::RunLimit {
            organization,
            limit,
        } => {
            let path = format!("/v1/operator/organizations/{organization}/run-limit");
            let v = match limit {
                None => call(api, Method::GET, &path, None).await?,
                Some(setting) => {
                    let body = json!({ "concurrent_runs": setting.json() });
                    call(api, Method::PUT, &path, Some(body)).await?
                }
            };
            api.print(&v, |v| {
                format!(
                    "organization {organization}: {} runs at once{}",
                    v["concurrent_runs"],
                    if v["default"] == true {
                        " (the platform's default)"
                    } else {
                        ""
                    }
                )
            });
        }
        OperatorCommand::Repo(PlatformRepoCommand::Add { name, url, branch }) => {
            let body = json!({ "name": name, "url": url, "branch": branch });
            let v = call(api, Method::POST, "/v1/operator/repositories", Some(body)).await?;
            api.print(&v, |v| {
                format!(
                    "platform repository {} (id {})",
                    printable(v["name"].as_str().unwrap_or("?")),
                    v["id"]
                )
            });
        }
        OperatorCommand::Repo(PlatformRepoCommand::List) => {
            let v = call(api, Method::GET, "/v1/operator/repositories", None).await?;
            api.print(&v, |v| {
                lines(v, |r| {
                    format!(
                        "{}\t{}\t{}",
                        r["id"],
                        printable(r["name"].as_str().unwrap_or("")),
                        printable(r["url"].as_str().unwrap_or(""))
                    )
                })
            });
        }
        OperatorCommand::Protect { environment, off } => {
            let path = format!("/v1/operator/environments/{environment}/protected");
            let body = json!({ "protected": !off });
            let v = call(api, Method::PUT, &path, Some(body)).await?;
            api.print(&v, protection);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth grant-requests`: the organization's own requests, pending and decided.
pub async fn own_grant_requests(api: &Api) -> anyhow::Result<ExitCode> {
    let v = api
        .call(Method::GET, "/v1/grant-requests", None)
        .await
        .context("listing the organization's grant requests")?;
    api.print(&v, request_lines);
    Ok(ExitCode::SUCCESS)
}

fn request_lines(v: &Value) -> String {
    lines(v, request_line)
}

/// One request on one line: `ID STATUS org N PLUGIN CAPABILITY SCOPE [REASON]`. The plugin's name
/// is the organization's and the reason is free text: both printed as data.
fn request_line(r: &Value) -> String {
    let scope = match (r["server_id"].as_i64(), r["environment_id"].as_i64()) {
        (Some(server), _) => format!("server {server}"),
        (None, Some(env)) => format!("environment {env}"),
        (None, None) => "organization".to_string(),
    };
    let mut line = format!(
        "{}\t{}\torg {}\t{}\t{}\t{scope}",
        r["id"],
        r["status"].as_str().unwrap_or("?"),
        r["organization_id"],
        printable(r["plugin"].as_str().unwrap_or("?")),
        printable(r["capability"].as_str().unwrap_or("?")),
    );
    if let Some(reason) = r["reason"].as_str() {
        line.push('\t');
        line.push_str(&printable(reason));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::{Setting, request_line};
    use serde_json::json;

    #[test]
    fn a_setting_is_a_number_or_the_default() {
        assert_eq!("7".parse(), Ok(Setting::Value(7)));
        assert_eq!("default".parse(), Ok(Setting::Default));
        assert!("-1".parse::<Setting>().is_err());
        assert!("lots".parse::<Setting>().is_err());
    }

    #[test]
    fn a_request_is_one_line_whatever_its_plugin_name_or_reason() {
        let request = json!({
            "id": 4, "status": "denied", "organization_id": 2, "plugin": "gate\naudit: allowed",
            "capability": "ssh.exec", "server_id": 1, "environment_id": null,
            "reason": "no\r\u{1b}[2K",
        });
        assert_eq!(
            request_line(&request),
            "4\tdenied\torg 2\tgate\\naudit: allowed\tssh.exec\tserver 1\tno\\r\\x1b[2K"
        );
    }
}
