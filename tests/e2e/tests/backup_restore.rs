//! Backups and restores through the HTTP API against the real test servers and storage servers:
//! a round trip through every backend (S3 with the AWS, R2, B2 and MinIO presets, FTP, SFTP) with
//! rows and attachment files identical afterwards and the restore's ordering proven from Docker's
//! own container events; a restore Odoo cannot serve, switched back; archives that must be refused
//! before anything stops; custom-format dumps from objects Berth did not write; confirmations;
//! wrong credentials.

use berth_e2e::backups::{
    add_targets, backup, db_container, deployed, docker, filestore, minio, odoo_container,
    odoo_running, partners, planted, restore, restore_from, server_dir, sql, upload,
    write_attachment, zip,
};
use berth_e2e::control_plane::{commit, fixture, step, steps, unique};
use berth_e2e::{storage_targets, testbed};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The start, die and stop events of a container between two instants (ms), from Docker itself.
fn container_events(container: &str, from_ms: i64, to_ms: i64) -> Vec<(i64, String)> {
    let since = format!("{}", from_ms / 1000 - 1);
    let until = format!("{}", to_ms / 1000 + 2);
    docker(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        &format!("container={container}"),
        "--format",
        "{{.TimeNano}} {{.Action}}",
    ])
    .lines()
    .filter_map(|l| l.split_once(' '))
    .map(|(t, a)| (t.parse::<i64>().unwrap() / 1_000_000, a.to_string()))
    .filter(|(_, a)| matches!(a.as_str(), "start" | "die" | "stop"))
    .collect()
}

/// No Odoo from the end of `stop-environment` to the end of `restore-data`: proven from the
/// container's events, not from Berth's own account.
fn assert_ordering(env: &str, run: &Value) {
    let at = |name: &str, field: &str| step(run, name)[field].as_i64().unwrap();
    let stopped = at("stop-environment", "finished_at");
    let restored = at("restore-data", "finished_at");
    let started = at("start-environment", "started_at");
    let began = at("download-backup", "started_at");
    // Docker's window is in whole seconds: what happened before the run (a deploy's restart) is
    // left out here.
    let events: Vec<_> = container_events(&odoo_container(env), began, restored + 5000)
        .into_iter()
        .filter(|(t, _)| *t >= began)
        .collect();
    let died = events
        .iter()
        .filter(|(_, a)| a == "die")
        .map(|(t, _)| *t)
        .min()
        .unwrap_or_else(|| panic!("Odoo never stopped: {events:?}"));
    assert!(
        died <= stopped + 5,
        "Odoo died after stop-environment ended: {events:?}"
    );
    let during: Vec<_> = events
        .iter()
        .filter(|(t, a)| a == "start" && *t > died && *t <= restored)
        .collect();
    assert!(
        during.is_empty(),
        "Odoo started while its data was replaced: {during:?}"
    );
    assert!(
        events
            .iter()
            .any(|(t, a)| a == "start" && *t >= started - 5),
        "Odoo was started again by start-environment: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_round_trip_through_every_backend() {
    let f = fixture().await;
    add_targets(&f).await;
    let (env, id) = deployed(&f).await;
    sql(
        &env,
        "INSERT INTO res_partner (name, email) VALUES ('Azure Interior', 'azure@example.com'), \
         ('Deco Addict', 'deco@example.com')",
    );
    write_attachment(&env, "a1b2c3d4e5", "an invoice PDF, or close enough");
    // A bigger, incompressible attachment, made inside the container.
    docker(&[
        "exec",
        &odoo_container(&env),
        "sh",
        "-c",
        "mkdir -p \"$(dirname \"$1\")\" && head -c 3000000 /dev/urandom > \"$1\"",
        "sh",
        &format!("/var/lib/odoo/filestore/{env}/ff/ff00ee11dd"),
    ]);
    let (rows, files) = (partners(&env), filestore(&env));

    for target in storage_targets().iter().map(|t| t.name) {
        let run = backup(&f, id, target).await;
        assert_eq!(run["status"], "succeeded", "{target}: {run:#}");
        let backups =
            f.cp.get(&f.token, &format!("/v1/environments/{id}/backups"))
                .await;
        let made = &backups[0];
        assert_eq!(made["run_id"], run["id"], "{target}");
        assert!(made["size"].as_u64().unwrap() > 3_000_000, "{made}");
        assert_eq!(made["manifest"]["version"], "17.0", "{made}");
        assert!(
            made["manifest"]["pg_version"]
                .as_str()
                .unwrap()
                .starts_with("1"),
            "{made}"
        );

        // Everything changes after the backup…
        sql(&env, "DELETE FROM res_partner WHERE name = 'Deco Addict'");
        sql(
            &env,
            "INSERT INTO res_partner (name) VALUES ('After the backup')",
        );
        write_attachment(&env, "a1b2c3d4e5", "overwritten");
        write_attachment(&env, "9999999999", "new after the backup");
        assert_ne!(
            (partners(&env), filestore(&env)),
            (rows.clone(), files.clone())
        );

        // …and the restore brings back exactly what was backed up.
        let (status, run) = restore(&f, id, made["id"].as_i64().unwrap(), None).await;
        assert_eq!(status, 202, "{run}");
        assert_eq!(run["status"], "succeeded", "{target}: {run:#}");
        assert_eq!(
            steps(&run)
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            [
                "download-backup",
                "extract-backup",
                "stop-environment",
                "restore-data",
                "start-environment",
                "health-check",
                "install-dependencies",
                "clean-up"
            ]
        );
        assert_eq!(partners(&env), rows, "{target}: the rows came back");
        assert_eq!(filestore(&env), files, "{target}: the files came back");
        assert!(odoo_running(&env));
        assert_ordering(&env, &run);
        // The previous data went with the clean-up; the backup itself is still there.
        let dbs = sql(&env, "SELECT datname FROM pg_database ORDER BY 1");
        assert!(!dbs.contains(&format!("{env}_previous")), "{dbs}");
    }
    // The SFTP target (on test server 1) pinned its server's host key on its own record, at its
    // first contact: the key the server's own record pinned at the deploy's.
    let org = f.org;
    let sftp = f.cp.engine.store.storage_target(org, "sftp").unwrap();
    let server =
        f.cp.get(&f.token, &format!("/v1/servers/{}", f.server))
            .await;
    assert!(sftp.host_key.is_some(), "{sftp:?}");
    assert_eq!(sftp.host_key.as_deref(), server["host_key"].as_str());
}

/// Every successful run once overwrote the environment's deployed commits with its own, and a
/// backup deploys none: the next push was Full ("shop was never deployed to this environment").
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_does_not_make_the_next_push_full() {
    let f = fixture().await;
    add_targets(&f).await;
    let (_, id) = deployed(&f).await;
    let run = backup(&f, id, storage_targets()[0].name).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let env = f.cp.get(&f.token, &format!("/v1/environments/{id}")).await;
    let secret = env["webhook_secret"].as_str().unwrap();
    let code = commit(
        &f.project_repo,
        &[("addons/shop_sale/models.py", "# after a backup\n")],
        "code",
    );
    let (status, run) = f.cp.github_push(id, secret, "main", &code).await;
    assert_eq!(status, 202, "{run}");
    let run = f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["facts"]["path"], "fast", "{run:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_backups_are_refused_before_anything_stops_and_unhealthy_ones_switch_back() {
    let f = fixture().await;
    add_targets(&f).await;
    let (env, id) = deployed(&f).await;
    sql(&env, "INSERT INTO res_partner (name) VALUES ('Kept safe')");
    write_attachment(&env, "abcdef0123", "kept safe too");
    let (rows, files) = (partners(&env), filestore(&env));
    let manifest = json!({ "version": "17.0" });
    let good_sql = b"CREATE TABLE not_odoo (x int);\n" as &[u8];
    let zeros = "0".repeat(64);

    // Refusals, each before stop-environment: Odoo never stops, nothing changes.
    let corrupted = {
        let mut bytes = zip(&[
            ("dump.sql", good_sql),
            ("manifest.json", b"{\"version\": \"17.0\"}"),
        ]);
        bytes[60] ^= 0xff; // inside dump.sql's deflated data (after its 58-byte local header)
        bytes
    };
    // (case, archive, recorded SHA-256 if not its own, recorded manifest, failing step, error)
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, Value, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "checksum",
            zip(&[("dump.sql", good_sql)]),
            Some(zeros.as_str()),
            manifest.clone(),
            "download-backup",
            "not the one backed up",
        ),
        (
            "newer",
            zip(&[("dump.sql", good_sql)]),
            None,
            json!({ "version": "18.0" }),
            "download-backup",
            "newer than this environment",
        ),
        (
            "no-dump",
            zip(&[("filestore/ab/abcd", b"x")]),
            None,
            manifest.clone(),
            "extract-backup",
            "no dump.sql",
        ),
        (
            "corrupted",
            corrupted,
            None,
            manifest.clone(),
            "extract-backup",
            "corrupted",
        ),
        (
            "newer-postgres",
            zip(&[(
                "dump.sql",
                b"--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version 99.1\n\
                  -- Dumped by pg_dump version 99.1\n\nCREATE TABLE not_odoo (x int);\n",
            )]),
            None,
            manifest.clone(),
            "extract-backup",
            "newer than this environment's PostgreSQL",
        ),
        (
            "not-a-zip",
            b"just some bytes".to_vec(),
            None,
            manifest.clone(),
            "extract-backup",
            "not a zip archive",
        ),
    ];
    for (label, bytes, sha, manifest, failing, message) in cases {
        let key = format!("shop/{env}/planted-{label}.zip");
        let backup = planted(&f, id, &key, &bytes, sha, manifest).await;
        let (status, run) = restore(&f, id, backup, None).await;
        assert_eq!(status, 202, "{label}: {run}");
        assert_eq!(run["status"], "failed", "{label}: {run:#}");
        let failed = step(&run, failing);
        assert_eq!(failed["status"], "failed", "{label}: {run:#}");
        let error = failed["error"].as_str().unwrap();
        assert!(
            error.contains(message) && error.contains("nothing was stopped"),
            "{label}: {error}"
        );
        assert_eq!(
            step(&run, "stop-environment")["status"],
            "cancelled",
            "{label}"
        );
        assert!(odoo_running(&env), "{label}: Odoo kept running");
        assert_eq!(
            (partners(&env), filestore(&env)),
            (rows.clone(), files.clone()),
            "{label}"
        );
        // A refused archive is not left on the server (the test servers share /srv/berth).
        let staged = server_dir(&env).join("restore");
        assert!(!staged.exists(), "{label}: {} is left", staged.display());
    }

    // A dump Odoo cannot serve (no Odoo tables): restored, unhealthy, switched back.
    let key = format!("shop/{env}/planted-unservable.zip");
    let bytes = zip(&[
        ("dump.sql", good_sql),
        ("filestore/zz/zzzz", b"restored file"),
        ("manifest.json", b"{}"),
    ]);
    let backup = planted(&f, id, &key, &bytes, None, manifest.clone()).await;
    let (_, run) = restore(&f, id, backup, None).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(step(&run, "restore-data")["status"], "done", "{run:#}");
    let error = step(&run, "health-check")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("switched back to the previous database and filestore"),
        "{error}"
    );
    assert!(error.contains("healthy on it again"), "{error}");
    assert!(odoo_running(&env));
    assert_eq!(partners(&env), rows, "the previous rows are back");
    assert_eq!(filestore(&env), files, "the previous files are back");
}

/// `pg_dump --format=c` of the environment's database, as bytes.
fn custom_dump(env: &str) -> Vec<u8> {
    let out = std::process::Command::new("docker")
        .args(["exec", "-u", "postgres", &db_container(env)])
        .args(["pg_dump", "--format=c", "-d", env])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.starts_with(b"PGDMP"));
    out.stdout
}

/// Objects of a target that Berth did not write restore too: a bare `pg_dump --format=c` (the
/// database alone: restored by `pg_restore`, the current filestore stays), and an Odoo zip whose
/// `dump.sql` is in custom format (the filestore comes from the zip). With the same ordering as any
/// restore; a dump of a newer PostgreSQL is refused before anything stops; an unknown target or no
/// source at all is refused before a run starts.
#[tokio::test(flavor = "multi_thread")]
async fn custom_format_dumps_restore_from_objects_berth_did_not_write() {
    let f = fixture().await;
    add_targets(&f).await;
    let (env, id) = deployed(&f).await;
    sql(
        &env,
        "INSERT INTO res_partner (name) VALUES ('In the dump')",
    );
    let rows = partners(&env);
    let dump = custom_dump(&env);

    // A bare custom dump: the rows come back, the files written since stay.
    sql(
        &env,
        "INSERT INTO res_partner (name) VALUES ('After the dump')",
    );
    write_attachment(&env, "c0ffee0000", "written after the dump");
    let files = filestore(&env);
    let key = format!("imports/{env}.dump");
    upload(&key, &dump).await;
    let (status, run) = restore_from(&f, id, json!({ "target": "minio", "key": key }), None).await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(
        step(&run, "download-backup")["summary"]
            .as_str()
            .unwrap()
            .contains("not a backup Berth recorded"),
        "{run:#}"
    );
    assert!(
        step(&run, "extract-backup")["summary"]
            .as_str()
            .unwrap()
            .contains("custom database dump extracted"),
        "{run:#}"
    );
    assert_ordering(&env, &run);
    assert_eq!(partners(&env), rows, "the dump's rows are back");
    assert_eq!(filestore(&env), files, "the current filestore stayed");

    // An Odoo zip whose dump.sql is a custom dump: database and filestore from the zip.
    sql(
        &env,
        "INSERT INTO res_partner (name) VALUES ('After again')",
    );
    let zipped = zip(&[
        ("dump.sql", dump.as_slice()),
        ("filestore/cu/custom0001", b"from the zip"),
        ("manifest.json", b"{\"version\": \"17.0\"}"),
    ]);
    let key = format!("imports/{env}-custom.zip");
    upload(&key, &zipped).await;
    let (_, run) = restore_from(&f, id, json!({ "target": "minio", "key": key }), None).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(partners(&env), rows);
    let restored_files = filestore(&env);
    assert_eq!(
        restored_files
            .lines()
            .map(|l| l.rsplit_once(' ').unwrap().1)
            .collect::<Vec<_>>(),
        ["./cu/custom0001"],
        "{restored_files}"
    );
    assert!(odoo_running(&env));

    // A custom dump whose header says a newer pg_dump wrote it: refused before the stop. (Its
    // header holds the server's version, then pg_dump's: the last of the two is changed.)
    let server = sql(&env, "SHOW server_version");
    let major = server.split('.').next().unwrap().trim();
    assert_eq!(major.len(), 2, "{server}");
    let mut newer = dump.clone();
    let at = newer[..256]
        .windows(server.trim().len())
        .rposition(|w| w == server.trim().as_bytes())
        .unwrap_or_else(|| panic!("{server} is not in the dump's header"));
    newer[at..at + 2].copy_from_slice(b"99");
    let key = format!("imports/{env}-newer.dump");
    upload(&key, &newer).await;
    let (_, run) = restore_from(&f, id, json!({ "target": "minio", "key": key }), None).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = step(&run, "extract-backup")["error"].as_str().unwrap();
    assert!(
        error.contains("written by PostgreSQL 99's pg_dump, newer than")
            && error.contains("nothing was stopped"),
        "{error}"
    );
    assert!(odoo_running(&env));
    assert_eq!(partners(&env), rows);

    // Refused before any run: an unknown target, a key leaving the target, no source at all.
    let runs = f.run_count(id).await;
    for (source, expected) in [
        (json!({ "target": "nowhere", "key": "x.dump" }), 404),
        (json!({ "target": "minio", "key": "../x.dump" }), 422),
        (json!({}), 422),
    ] {
        let (status, answer) = restore_from(&f, id, source.clone(), None).await;
        assert_eq!(status, expected, "{source}: {answer}");
    }
    let (_, answer) = restore_from(&f, id, json!({}), None).await;
    assert!(
        answer["error"].as_str().unwrap().contains("backup_id"),
        "{answer}"
    );
    assert_eq!(f.run_count(id).await, runs, "no run was started");
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_need_confirmation_and_wrong_credentials_name_the_backend() {
    let f = fixture().await;
    add_targets(&f).await;
    let env = f.environment(&unique("pr"), f.server).await;
    let id = env["id"].as_i64().unwrap();
    let name = env["name"].as_str().unwrap().to_string();
    let key = format!("shop/{name}/planted.zip");
    let planted_id = planted(&f, id, &key, &zip(&[("dump.sql", b"")]), None, json!({})).await;
    let runs = f.run_count(id).await;

    // No confirmation: refused, no run.
    let (status, answer) =
        f.cp.call(
            &f.token,
            reqwest::Method::POST,
            &format!("/v1/environments/{id}/restore"),
            Some(json!({ "backup_id": planted_id })),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("replaces all current data")
    );
    // Protected: the name must be typed back.
    let (status, _) =
        f.cp.call(
            &f.token,
            reqwest::Method::PUT,
            &format!("/v1/environments/{id}/protected"),
            Some(json!({ "protected": true })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, answer) = restore(&f, id, planted_id, Some("not-its-name")).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("is protected"),
        "{answer}"
    );
    assert_eq!(f.run_count(id).await, runs, "no run was started");

    // Wrong credentials: the backup fails at its first step, naming the backend, never the secret.
    f.cp.post(
        &f.token,
        "/v1/storage-targets",
        json!({ "name": "wrong", "backend": "s3", "user": "nobody",
                "secret": "definitely-wrong-secret",
                "settings": { "provider": "minio", "bucket": testbed().s3.1,
                              "endpoint": testbed().s3.0 } }),
    )
    .await;
    let run = backup(&f, id, "wrong").await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = step(&run, "check-target")["error"].as_str().unwrap();
    assert!(error.contains("s3@") && error.contains("wrong"), "{error}");
    assert!(!error.contains("definitely-wrong-secret"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_backups_start_when_due_and_prune_grandfather_father_son() {
    let f = fixture().await;
    add_targets(&f).await;
    let (env, id) = deployed(&f).await;
    // What earlier backups left on the target, and an object that is not a backup.
    let connection = minio().await;
    let old = [
        "20200101T030000Z-run1.zip",
        "20200102T030000Z-run2.zip",
        "20200215T030000Z-run3.zip",
        "notes.txt",
    ];
    for name in old {
        let key = format!("backups/acme/shop/{env}/{name}");
        connection
            .put(&key, &mut std::io::Cursor::new(b"old".to_vec()))
            .await
            .unwrap();
    }
    let (status, policy) =
        f.cp.call(
            &f.token,
            reqwest::Method::PUT,
            &format!("/v1/environments/{id}/backup-policy"),
            Some(
                json!({ "target": "minio", "every_hours": 24, "keep_daily": 1,
                         "keep_weekly": 1, "keep_monthly": 2 }),
            ),
        )
        .await;
    assert_eq!(status, 200, "{policy}");

    // The environment has no backup yet: the scheduler finds it due and starts one.
    let scheduler = berth_engine::backups::scheduler(&f.cp.engine, Duration::from_millis(200));
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let runs =
            f.cp.get(&f.token, &format!("/v1/environments/{id}/runs"))
                .await;
        if let Some(run) = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["operation"] == "backup")
        {
            break run.clone();
        }
        assert!(Instant::now() < deadline, "no scheduled backup started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["trigger"], "schedule");
    let run = f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    // Done, it is not due again: no second run while the scheduler keeps ticking.
    tokio::time::sleep(Duration::from_secs(1)).await;
    scheduler.abort();
    assert_eq!(f.run_count(id).await, 2, "the deploy and one backup");

    let backups =
        f.cp.get(&f.token, &format!("/v1/environments/{id}/backups"))
            .await;
    assert_eq!(backups[0]["kind"], "scheduled");
    let new = backups[0]["key"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    // Kept: the new one (the day's, the week's and the month's), the newest of the other month
    // (February 2020), and what is not a backup. Pruned: January 2020's two.
    let left: Vec<String> = connection
        .list(&format!("backups/acme/shop/{env}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.rsplit('/').next().unwrap().to_string())
        .collect();
    let mut expected = vec![
        "20200215T030000Z-run3.zip".to_string(),
        "notes.txt".into(),
        new,
    ];
    expected.sort();
    assert_eq!(left, expected);
    let summary = step(&run, "prune-backups")["summary"].as_str().unwrap();
    assert!(summary.contains("pruned 2"), "{summary}");
}
