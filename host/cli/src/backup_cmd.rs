//! `berth target`, `berth backup`, `berth restore`: storage targets, backups, their policy, and
//! restores (which replace all of an environment's data, so they must be confirmed).

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client_cmd::{Api, lines, started};

#[derive(Subcommand)]
pub enum TargetCommand {
    /// Add a storage target. The secret (S3 secret key, FTP password, SFTP private key) is read
    /// from a file or from $BERTH_TARGET_SECRET, never from the command line.
    Add {
        name: String,
        /// The storage-backend plugin: s3, ftp or sftp.
        #[arg(long)]
        backend: String,
        /// Access key id, FTP or SSH user.
        #[arg(long)]
        user: String,
        #[arg(long)]
        secret_file: Option<std::path::PathBuf>,
        /// Backend settings, `key=value` (provider, bucket, region, endpoint, host, prefix…).
        #[arg(long = "set", value_parser = key_value)]
        settings: Vec<(String, String)>,
    },
    List,
}

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Back an environment up now, and follow the run.
    Create {
        environment: i64,
        #[arg(long)]
        target: String,
        #[arg(long)]
        no_watch: bool,
    },
    /// An environment's backups, newest first.
    List { environment: i64 },
    /// Scheduled backups of an environment, pruned grandfather-father-son.
    Policy {
        environment: i64,
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 24)]
        every_hours: u32,
        #[arg(long, default_value_t = 7)]
        daily: u32,
        #[arg(long, default_value_t = 4)]
        weekly: u32,
        #[arg(long, default_value_t = 3)]
        monthly: u32,
    },
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

pub async fn target(api: &Api, command: TargetCommand) -> anyhow::Result<ExitCode> {
    match command {
        TargetCommand::Add {
            name,
            backend,
            user,
            secret_file,
            settings,
        } => {
            let secret = match secret_file {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
                None => std::env::var("BERTH_TARGET_SECRET")
                    .context("give --secret-file or set BERTH_TARGET_SECRET")?,
            };
            let settings: serde_json::Map<String, Value> =
                settings.into_iter().map(|(k, v)| (k, json!(v))).collect();
            let body = json!({ "name": name, "backend": backend, "user": user,
                               "secret": secret.trim_end_matches('\n'), "settings": settings });
            let v = api
                .call(Method::POST, "/v1/storage-targets", Some(body))
                .await?;
            api.print(&v, |v| {
                format!(
                    "storage target {} ({}, id {})",
                    v["name"].as_str().unwrap_or("?"),
                    v["backend"].as_str().unwrap_or("?"),
                    v["id"]
                )
            });
        }
        TargetCommand::List => {
            let v = api.call(Method::GET, "/v1/storage-targets", None).await?;
            api.print(&v, |v| {
                lines(v, |t| {
                    format!(
                        "{}\t{}",
                        t["name"].as_str().unwrap_or(""),
                        t["backend"].as_str().unwrap_or("")
                    )
                })
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn backup(api: &Api, command: BackupCommand) -> anyhow::Result<ExitCode> {
    match command {
        BackupCommand::Create {
            environment,
            target,
            no_watch,
        } => {
            let path = format!("/v1/environments/{environment}/backups");
            let run = api
                .call(Method::POST, &path, Some(json!({ "target": target })))
                .await?;
            return started(api, &run, environment, !no_watch).await;
        }
        BackupCommand::List { environment } => {
            let path = format!("/v1/environments/{environment}/backups");
            let v = api.call(Method::GET, &path, None).await?;
            api.print(&v, |v| {
                lines(v, |b| {
                    format!(
                        "{}\t{}\t{} bytes\t{}{}",
                        b["id"],
                        b["key"].as_str().unwrap_or(""),
                        b["size"],
                        b["kind"].as_str().unwrap_or(""),
                        if b["pruned_at"].is_null() {
                            ""
                        } else {
                            "\tpruned"
                        }
                    )
                })
            });
        }
        BackupCommand::Policy {
            environment,
            target,
            every_hours,
            daily,
            weekly,
            monthly,
        } => {
            let path = format!("/v1/environments/{environment}/backup-policy");
            let body = json!({ "target": target, "every_hours": every_hours,
                               "keep_daily": daily, "keep_weekly": weekly, "keep_monthly": monthly });
            let v = api.call(Method::PUT, &path, Some(body)).await?;
            api.print(&v, |_| {
                format!(
                    "environment {environment}: every {every_hours} h to {target}, keeping \
                     {daily} daily, {weekly} weekly, {monthly} monthly"
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `berth restore` restores from: a backup's id, or a target and an object's key.
pub struct RestoreFrom {
    pub backup: Option<i64>,
    pub target: Option<String>,
    pub key: Option<String>,
}

/// `berth restore ENV (BACKUP | --target T --key K) --replace-all-data [--name ENV-NAME]`.
pub async fn restore(
    api: &Api,
    environment: i64,
    from: RestoreFrom,
    replace_all_data: bool,
    name: Option<String>,
    watch: bool,
) -> anyhow::Result<ExitCode> {
    let body = json!({ "backup_id": from.backup, "target": from.target, "key": from.key,
                       "replace_all_data": replace_all_data, "environment_name": name });
    let path = format!("/v1/environments/{environment}/restore");
    let run = api.call(Method::POST, &path, Some(body)).await?;
    started(api, &run, environment, watch).await
}
