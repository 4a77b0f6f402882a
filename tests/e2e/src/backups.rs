//! What the backup and restore tests and the backup benchmark share: the test's own windows on an
//! environment's data (SQL through `psql` in its database container, files through its Odoo
//! container), and the API calls of a backup and a restore.

use std::process::Command;

use serde_json::{Value, json};

use crate::control_plane::{Fixture, unique};
use crate::storage_targets;

/// Runs `docker` on the test machine (the servers' engine) and returns its stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn odoo_container(env: &str) -> String {
    format!("berth.acme.shop.{env}.odoo")
}

pub fn db_container(env: &str) -> String {
    format!("berth.acme.shop.{env}.db")
}

/// `psql` in the environment's database container, as the test's window on the data.
pub fn sql(env: &str, query: &str) -> String {
    docker(&[
        "exec",
        "-u",
        "postgres",
        &db_container(env),
        "psql",
        "-At",
        "-d",
        env,
        "-c",
        query,
    ])
}

/// The partners, in order: what a restore must bring back exactly.
pub fn partners(env: &str) -> String {
    sql(env, "SELECT id, name, email FROM res_partner ORDER BY id")
}

/// Every file of the environment's filestore with its SHA-256, in order.
pub fn filestore(env: &str) -> String {
    docker(&[
        "exec",
        &odoo_container(env),
        "sh",
        "-c",
        "cd /var/lib/odoo/filestore/\"$1\" && find . -type f | sort | xargs -r sha256sum",
        "sh",
        env,
    ])
}

pub fn write_attachment(env: &str, name: &str, content: &str) {
    let path = format!("/var/lib/odoo/filestore/{env}/{}/{name}", &name[..2]);
    docker(&[
        "exec",
        &odoo_container(env),
        "sh",
        "-c",
        "mkdir -p \"$(dirname \"$1\")\" && printf %s \"$2\" > \"$1\"",
        "sh",
        &path,
        content,
    ]);
}

pub fn odoo_running(env: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", &odoo_container(env)]).trim() == "true"
}

pub async fn deployed(f: &Fixture) -> (String, i64) {
    let name = unique("bk");
    let env = f.environment(&name, f.server).await;
    let id = env["id"].as_i64().unwrap();
    let run = f.deploy(id).await;
    let run = f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    (name, id)
}

pub async fn add_targets(f: &Fixture) {
    for t in storage_targets() {
        let settings: serde_json::Map<String, Value> =
            t.settings.into_iter().map(|(k, v)| (k, json!(v))).collect();
        f.cp.post(
            &f.token,
            "/v1/storage-targets",
            json!({ "name": t.name, "backend": t.backend, "settings": settings,
                    "user": t.user, "secret": t.secret }),
        )
        .await;
    }
}

pub async fn backup(f: &Fixture, env: i64, target: &str) -> Value {
    let run =
        f.cp.post(
            &f.token,
            &format!("/v1/environments/{env}/backups"),
            json!({ "target": target }),
        )
        .await;
    f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await
}

pub async fn restore(f: &Fixture, env: i64, backup: i64, name: Option<&str>) -> (u16, Value) {
    restore_from(f, env, json!({ "backup_id": backup }), name).await
}

/// A restore from `source` (`backup_id`, or `target` and `key`), confirmed, followed to its end.
pub async fn restore_from(
    f: &Fixture,
    env: i64,
    mut source: Value,
    name: Option<&str>,
) -> (u16, Value) {
    source["replace_all_data"] = json!(true);
    source["environment_name"] = json!(name);
    let (status, run) =
        f.cp.call(
            &f.token,
            reqwest::Method::POST,
            &format!("/v1/environments/{env}/restore"),
            Some(source),
        )
        .await;
    if status != 202 {
        return (status, run);
    }
    (
        status,
        f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await,
    )
}
