//! What the backup and restore tests and the backup benchmark share: the test's own windows on an
//! environment's data (SQL through `psql` in its database container, files through its Odoo
//! container), the API calls of a backup and a restore, and archives planted on a target as if
//! backed up.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use berth_backends::zip_stream::ZipStream;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::control_plane::{Fixture, unique};
use crate::{storage_targets, testbed};

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

/// The environment's folder on the test servers (they share `/srv/berth` with the test machine).
pub fn server_dir(env: &str) -> PathBuf {
    PathBuf::from(format!("/srv/berth/acme/shop/{env}"))
}

/// The uid Odoo runs as in the environment's Odoo image.
pub fn odoo_uid(env: &str) -> u32 {
    docker(&["exec", &odoo_container(env), "id", "-u"])
        .trim()
        .parse()
        .unwrap()
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

/// A zip shaped like an Odoo backup, from members given as (name, bytes).
pub fn zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = ZipStream::new(Vec::new());
    for (name, data) in members {
        let mut entry = zip.entry(name).unwrap();
        entry.write_all(data).unwrap();
        entry.finish().unwrap();
    }
    zip.finish().unwrap().0
}

/// Puts `bytes` on the MinIO-preset target under the environment's prefix through the S3
/// primitive, and records it as a backup of `env` (as if a backup run had made it).
pub async fn planted(
    f: &Fixture,
    env_id: i64,
    key: &str,
    bytes: &[u8],
    sha256: Option<&str>,
    manifest: Value,
) -> i64 {
    upload(key, bytes).await;
    let store = &f.cp.engine.store;
    let env = store.environment_by_id(env_id).unwrap();
    let target = store.storage_target(env.organization_id, "minio").unwrap();
    let run = store
        .create_run(env_id, "backup", "test", json!({}))
        .unwrap();
    store
        .finish_run(run.id, berth_state::RunStatus::Succeeded, None)
        .unwrap();
    store
        .record_backup(berth_state::NewBackup {
            environment_id: env_id,
            target_id: target.id,
            run_id: run.id,
            key: key.to_string(),
            kind: "manual".into(),
            size: bytes.len() as u64,
            sha256: sha256
                .map(str::to_string)
                .unwrap_or_else(|| hex::encode(Sha256::digest(bytes))),
            manifest,
        })
        .unwrap()
        .id
}

/// Puts `bytes` under `key` of the MinIO-preset target (under its prefix `backups/acme`).
pub async fn upload(key: &str, bytes: &[u8]) {
    minio()
        .await
        .put(
            &format!("backups/acme/{key}"),
            &mut std::io::Cursor::new(bytes.to_vec()),
        )
        .await
        .unwrap();
}

/// The test bed's S3 server, as the MinIO-preset target reaches it (its prefix is `backups/acme`).
pub async fn minio() -> berth_backends::storage::Connection {
    let bed = testbed();
    let (endpoint, bucket, ak, sk) = &bed.s3;
    berth_backends::storage::Connection::open(
        &berth_backends::storage::Protocol::S3 {
            endpoint: endpoint.clone(),
            region: "us-east-1".into(),
            bucket: bucket.clone(),
            path_style: true,
        },
        &berth_backends::storage::Credentials {
            user: ak.clone(),
            secret: sk.clone(),
        },
        berth_backends::ssh::HostKey::first_contact_in_memory(),
        // The test bed is on this machine.
        &berth_backends::egress::EgressPolicy::open(),
    )
    .await
    .unwrap()
}
