//! `berth`: the command line of the Berth control plane.
//!
//! `berth serve` runs the control plane (embedded SQLite state, default plugins, HTTP API); the
//! object and deploy commands talk to it over its API, as any script or CI would.
//!
//! `berth plugin inspect` and `berth plugin run` put a plugin author (or an operator vetting an
//! upload) in front of the real sandbox: the same loader, validation, limits and grant checks the
//! control plane uses, with a local harness standing in for the run.

mod backup_cmd;
mod client_cmd;
mod operator_cmd;
mod plugin_cmd;
mod printable;
mod serve_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Deploy and operate Odoo on your own servers, with sandboxed plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: state, default plugins, HTTP API.
    Serve(serve_cmd::ServeArgs),
    /// Organizations (local admin: works on the state file).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Platform-wide settings (local admin: works on the state file).
    #[command(subcommand)]
    Platform(PlatformCommand),
    /// SSH keys of the organization (the private half stays on the control plane).
    Key {
        #[command(flatten)]
        api: client_cmd::Api,
        #[command(subcommand)]
        command: client_cmd::KeyCommand,
    },
    /// Servers of the organization.
    Server {
        #[command(flatten)]
        api: client_cmd::Api,
        #[command(subcommand)]
        command: client_cmd::ServerCommand,
    },
    /// Projects of the organization.
    Project {
        #[command(flatten)]
        api: client_cmd::Api,
        #[command(subcommand)]
        command: client_cmd::ProjectCommand,
    },
    /// Environments.
    Env {
        #[command(flatten)]
        api: client_cmd::Api,
        #[command(subcommand)]
        command: client_cmd::EnvCommand,
    },
    /// Organization and project repositories.
    Repo {
        #[command(flatten)]
        api: client_cmd::Api,
        #[command(subcommand)]
        command: client_cmd::RepoCommand,
    },
    /// First deploy or redeploy an environment, and follow it step by step.
    Deploy {
        #[command(flatten)]
        api: client_cmd::Api,
        environment: i64,
        /// Return once the run is started.
        #[arg(long)]
        no_watch: bool,
    },
    /// Storage targets: where backups live.
    Target {
        #[command(flatten)]
        api: client_cmd::Api,
        #[command(subcommand)]
        command: backup_cmd::TargetCommand,
    },
    /// Backups of an environment: create, list, schedule.
    Backup {
        #[command(flatten)]
        api: client_cmd::Api,
        #[command(subcommand)]
        command: backup_cmd::BackupCommand,
    },
    /// Restore a backup, or an object of a storage target, into an environment: replaces all its
    /// data.
    Restore {
        #[command(flatten)]
        api: client_cmd::Api,
        environment: i64,
        /// The backup's id (see `berth backup list`).
        #[arg(required_unless_present = "key", conflicts_with_all = ["target", "key"])]
        backup: Option<i64>,
        /// Restore an object of this storage target instead (with --key).
        #[arg(long, requires = "key")]
        target: Option<String>,
        /// The object's key on the target: an archive of Odoo's database manager or Odoo.sh, or a
        /// `pg_dump --format=c` dump (the database only; the current filestore stays).
        #[arg(long, requires = "target")]
        key: Option<String>,
        /// Confirms that all current data of the environment is replaced.
        #[arg(long)]
        replace_all_data: bool,
        /// The environment's name, typed back (required when it is protected).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        no_watch: bool,
    },
    /// Runs: show, watch, cancel.
    Run {
        #[command(flatten)]
        api: client_cmd::Api,
        #[command(subcommand)]
        command: client_cmd::RunCommand,
    },
    /// The organization's grant requests (grants beyond its ceiling), pending and decided.
    GrantRequests {
        #[command(flatten)]
        api: client_cmd::Api,
    },
    /// The operator's powers over the API: organizations, grant ceilings and requests, quotas,
    /// run limits, platform repositories, protection. Take the operator's token (`--token`,
    /// `BERTH_TOKEN`, else `$BERTH_DATA/operator-token`, written at the first start).
    Operator {
        #[command(flatten)]
        api: client_cmd::Api,
        #[command(subcommand)]
        command: operator_cmd::OperatorCommand,
    },
    /// Inspect and run plugins.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Create an organization and print its first API token.
    Create {
        name: String,
        #[command(flatten)]
        data: serve_cmd::DataArgs,
    },
}

#[derive(Subcommand)]
enum PlatformCommand {
    /// Add a platform addon repository, deployed to every environment.
    RepoAdd {
        name: String,
        url: String,
        #[arg(long)]
        branch: Option<String>,
        #[command(flatten)]
        data: serve_cmd::DataArgs,
    },
    /// Reseal every secret in the state with a new key (stop the control plane first).
    RotateKey {
        #[command(flatten)]
        data: serve_cmd::DataArgs,
    },
}

fn admin(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    use client_cmd as c;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve_cmd::serve(args).await,
            Command::Org(OrgCommand::Create { name, data }) => {
                admin(serve_cmd::create_org(&data, &name))
            }
            Command::Platform(PlatformCommand::RepoAdd {
                name,
                url,
                branch,
                data,
            }) => admin(serve_cmd::add_platform_repo(&data, &name, &url, branch)),
            Command::Platform(PlatformCommand::RotateKey { data }) => {
                admin(serve_cmd::rotate_key(&data))
            }
            Command::Key { api, command } => c::run(api, async |a| c::key(a, command).await).await,
            Command::Server { api, command } => {
                c::run(api, async |a| c::server(a, command).await).await
            }
            Command::Project { api, command } => {
                c::run(api, async |a| c::project(a, command).await).await
            }
            Command::Env { api, command } => c::run(api, async |a| c::env(a, command).await).await,
            Command::Repo { api, command } => {
                c::run(api, async |a| c::repo(a, command).await).await
            }
            Command::Deploy {
                api,
                environment,
                no_watch,
            } => c::run(api, async |a| c::deploy(a, environment, !no_watch).await).await,
            Command::Run { api, command } => c::run(api, async |a| c::runs(a, command).await).await,
            Command::Target { api, command } => {
                c::run(api, async |a| backup_cmd::target(a, command).await).await
            }
            Command::Backup { api, command } => {
                c::run(api, async |a| backup_cmd::backup(a, command).await).await
            }
            Command::Restore {
                api,
                environment,
                backup,
                target,
                key,
                replace_all_data,
                name,
                no_watch,
            } => {
                let from = backup_cmd::RestoreFrom {
                    backup,
                    target,
                    key,
                };
                c::run(api, async |a| {
                    backup_cmd::restore(a, environment, from, replace_all_data, name, !no_watch)
                        .await
                })
                .await
            }
            Command::GrantRequests { api } => {
                c::run(api, async |a| operator_cmd::own_grant_requests(a).await).await
            }
            Command::Operator { api, command } => {
                c::run(api.for_operator(), async |a| {
                    operator_cmd::operator(a, command).await
                })
                .await
            }
            Command::Plugin(cmd) => plugin_cmd::run(cmd).await,
        }
    })
}
