//! Backup and restore of a large environment on the test bed, side by side with the plain shell
//! pipeline on the same data: throughput and the control plane's peak memory.
//!
//! The environment gets a database of about `BERTH_BENCH_DB_MIB` MiB (default 1024) and a
//! filestore of `BERTH_BENCH_FILES_MIB` MiB (default 1024) of incompressible 1 MiB attachments.
//! - Berth: a backup through the API to the S3 target (MinIO preset, the test bed's S3 server),
//!   then a restore of it; the control plane runs in this process, so its peak RSS is this
//!   process's VmHWM, read before and after.
//! - The shell pipeline: what an operator writes without Berth — `pg_dump | gzip -1` and `tar` of
//!   the filestore to files, each uploaded with `curl --aws-sigv4` (plain S3 needs a length, so the
//!   pipeline spools to disk), and the reverse for the restore (`curl | gunzip | psql`,
//!   `curl | tar -x`). No checksum, no manifest, no atomic switch, no health check.
//!
//! Run: `./dev bench` (or `cargo bench -p berth-e2e --bench backup` with the test bed up).

use std::process::Command;
use std::time::Instant;

use berth_e2e::backups::{add_targets, backup, deployed, docker, odoo_container, restore, sql};
use berth_e2e::control_plane::{fixture, report_timing};
use berth_e2e::{peak_rss_mib, testbed};

fn mib_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs a shell pipeline on the test machine (where the test servers' Docker engine runs).
fn shell(script: &str, args: &[&str]) -> f64 {
    let started = Instant::now();
    let status = Command::new("bash")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
    started.elapsed().as_secs_f64()
}

fn main() {
    berth_e2e::run_bench(bench());
}

async fn bench() {
    let db_mib = mib_env("BERTH_BENCH_DB_MIB", 1024);
    let files_mib = mib_env("BERTH_BENCH_FILES_MIB", 1024);
    let f = fixture().await;
    add_targets(&f).await;
    let (env, id) = deployed(&f).await;

    // ~1 KiB rows of hex text (it compresses as real data roughly does, about 2:1).
    let started = Instant::now();
    sql(
        &env,
        &format!(
            "INSERT INTO res_partner (name, email) SELECT repeat(md5(i::text), 30), \
             md5(random()::text) || '@example.com' FROM generate_series(1, {}) i",
            db_mib * 1024
        ),
    );
    docker(&[
        "exec",
        &odoo_container(&env),
        "sh",
        "-c",
        "for i in $(seq 1 \"$2\"); do d=\"$1/$(printf %02x $((i % 256)))\"; mkdir -p \"$d\"; \
         head -c 1048576 /dev/urandom > \"$d/attachment-$i\"; done",
        "sh",
        &format!("/var/lib/odoo/filestore/{env}"),
        &files_mib.to_string(),
    ]);
    let db_bytes: u64 = sql(&env, &format!("SELECT pg_database_size('{env}')"))
        .trim()
        .parse()
        .unwrap();
    let data_mib = (db_bytes as f64 / (1 << 20) as f64) + files_mib as f64;
    println!(
        "data: database {:.0} MiB on disk + filestore {files_mib} MiB, made in {:.0?}",
        db_bytes as f64 / (1 << 20) as f64,
        started.elapsed()
    );

    // Berth.
    let rss_before = peak_rss_mib();
    let run = backup(&f, id, "minio").await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    report_timing("backup", &run);
    let backups =
        f.cp.get(&f.token, &format!("/v1/environments/{id}/backups"))
            .await;
    let archive = backups[0]["size"].as_u64().unwrap();
    let backup_secs = wall(&run);
    let rss_backup = peak_rss_mib();
    let (status, run) = restore(&f, id, backups[0]["id"].as_i64().unwrap(), None).await;
    assert_eq!(status, 202);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    report_timing("restore", &run);
    let restore_secs = wall(&run);
    let rss_restore = peak_rss_mib();

    // The shell pipeline, on the same data.
    let bed = testbed();
    let (endpoint, bucket, ak, sk) = &bed.s3;
    let url = format!("{endpoint}/{bucket}/shell/{env}");
    let user = format!("{ak}:{sk}");
    let spool = tempfile::tempdir().unwrap();
    let dir = spool.path().to_str().unwrap();
    let db_container = format!("berth.acme.shop.{env}.db");
    let odoo = odoo_container(&env);
    let curl = "curl -sSf -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --aws-sigv4 aws:amz:us-east-1:s3 --user \"$5\"";
    let shell_backup = shell(
        &format!(
            "docker exec -u postgres \"$1\" pg_dump --no-owner -d \"$3\" | gzip -1 > \"$6/dump.sql.gz\" \
             && docker exec \"$2\" tar -C /var/lib/odoo/filestore -cf - \"$3\" > \"$6/filestore.tar\" \
             && {curl} -T \"$6/dump.sql.gz\" \"$4/dump.sql.gz\" -o /dev/null \
             && {curl} -T \"$6/filestore.tar\" \"$4/filestore.tar\" -o /dev/null"
        ),
        &[&db_container, &odoo, &env, &url, &user, dir],
    );
    let spooled: u64 = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let shell_restore = shell(
        &format!(
            "docker exec -u postgres \"$1\" createdb \"$3_shell\" \
             && {curl} \"$4/dump.sql.gz\" | gunzip | docker exec -i -u postgres \"$1\" psql -q -d \"$3_shell\" > /dev/null \
             && {curl} \"$4/filestore.tar\" | docker exec -i \"$2\" tar -C /tmp -xf -"
        ),
        &[&db_container, &odoo, &env, &url, &user, dir],
    );

    let rate = |secs: f64| data_mib / secs;
    println!(
        "backup   Berth {backup_secs:>6.1} s = {:>5.1} MiB/s (archive {:.0} MiB, streamed, nothing \
         spooled)   shell {shell_backup:>6.1} s = {:>5.1} MiB/s ({:.0} MiB spooled to disk)   \
         Berth/shell time {:.2}",
        rate(backup_secs),
        archive as f64 / (1 << 20) as f64,
        rate(shell_backup),
        spooled as f64 / (1 << 20) as f64,
        backup_secs / shell_backup
    );
    println!(
        "restore  Berth {restore_secs:>6.1} s = {:>5.1} MiB/s (download, extract, restore beside, \
         switch, health, deps)   shell {shell_restore:>6.1} s = {:>5.1} MiB/s (into a new \
         database, files untarred, nothing switched)   Berth/shell time {:.2}",
        rate(restore_secs),
        rate(shell_restore),
        restore_secs / shell_restore
    );
    println!(
        "control plane peak RSS (VmHWM): {rss_before:.0} MiB before, {rss_backup:.0} MiB after \
         the backup, {rss_restore:.0} MiB after the restore"
    );
}

fn wall(run: &serde_json::Value) -> f64 {
    (run["finished_at"].as_i64().unwrap() - run["started_at"].as_i64().unwrap()) as f64 / 1000.0
}
