//! The restore flow, in the seed's steps: download the backup, extract it, stop the environment,
//! restore the database and files, start it, verify its health, install dependencies — then clean
//! up what the restore kept aside.
//!
//! Safety, step by step:
//! - Everything that can refuse a backup runs **before** Odoo is stopped: the download checks the
//!   size and SHA-256 recorded when the backup was made; the extraction tests every member's CRC,
//!   requires `dump.sql` and refuses a backup of a newer Odoo major version.
//! - The data is restored **beside** the current one: a database `<db>_restore` and a filestore
//!   `filestore/<db>_restore`, then switched by renames (the current ones become `_previous`). Odoo
//!   is stopped from `stop-environment` until `start-environment`, after the data is in place.
//! - If Odoo is not healthy on the restored data, the health check switches back to the previous
//!   database and filestore, starts Odoo on them, and fails saying so.
//! - The previous data is removed only by `clean-up`, the last step: a run that fails keeps it.
//! - The backup itself is only read: it is downloaded into a staging folder on the server and the
//!   extraction mounts that folder read-only.

use std::time::{Duration, Instant};

use berth_sdk::archive;
use berth_sdk::database::{self, DumpFormat};
use berth_sdk::{Error, docker, operation, ssh, targets};

use crate::backup::filestore;
use crate::steps::{self, Outcome, Run, container_exec, done, exec, inspect};
use crate::{DATA_DIR, DB_CONTAINER, ODOO_CONTAINER};

/// The restore's steps, in the seed's order, then the clean-up.
pub const STEPS: [&str; 8] = [
    "download-backup",
    "extract-backup",
    "stop-environment",
    "restore-data",
    "start-environment",
    "health-check",
    "install-dependencies",
    "clean-up",
];

/// Where the extraction leaves the dump, inside Odoo's data volume.
const WORK_DIR: &str = "/var/lib/odoo/.berth-restore";
/// The one-off containers that work on Odoo's data volume while Odoo itself is stopped.
const EXTRACT: &str = "restore-extract";
const SWITCH: &str = "restore-switch";

/// What the engine asks of a restore run: the backup, as recorded when it was made — or an object
/// of a target that Berth did not write (an Odoo or Odoo.sh download, a `pg_dump --format=c`),
/// which has no recorded size and checksum to hold it to.
struct Inputs {
    target: String,
    key: String,
    recorded: Option<(u64, String)>,
    version: Option<String>,
}

impl Inputs {
    fn load() -> Result<Self, Error> {
        let inputs = steps::Inputs::load()?;
        let text = |key: &str| inputs.text(key);
        let inputs = inputs.value();
        Ok(Inputs {
            target: text("target")?,
            key: text("key")?,
            recorded: match inputs.get("recorded").and_then(|v| v.as_bool()) {
                Some(true) => Some(
                    inputs
                        .get("size")
                        .and_then(|v| v.as_u64())
                        .zip(inputs.get("sha256").and_then(|v| v.as_str()))
                        .map(|(size, sha256)| (size, sha256.to_string()))
                        .ok_or_else(|| {
                            Error::invalid("a recorded backup without its size and SHA-256")
                        })?,
                ),
                _ => None,
            },
            version: inputs
                .pointer("/manifest/version")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        })
    }
}

fn staging(run: &Run) -> String {
    run.path("restore")
}

fn aside(run: &Run, suffix: &str) -> String {
    format!("{}_{suffix}", run.database())
}

/// Runs the restore step named `step`.
pub fn run_step(step: &str, run: &Run, health_limit: Duration) -> Outcome {
    match step {
        "download-backup" => download(run, &Inputs::load()?),
        "extract-backup" => extract(run),
        "stop-environment" => {
            if inspect(ODOO_CONTAINER)?.is_some_and(|c| c.running) {
                docker::stop(ODOO_CONTAINER, Some(30))?;
            }
            done("Odoo stopped: nothing writes to the data while it is replaced")
        }
        "restore-data" => restore_data(run),
        "start-environment" => {
            docker::start(ODOO_CONTAINER)?;
            done("Odoo started on the restored data")
        }
        "health-check" => health_check(run, health_limit),
        "install-dependencies" => steps::install_dependencies(run),
        "clean-up" => clean_up(run),
        other => Err(Error::invalid(format!("no step named {other:?}"))),
    }
}

// ---- download-backup ------------------------------------------------------------------------

/// Streams the archive from the target into the staging folder on the server, and checks it is
/// the archive that was backed up: same size, same SHA-256 (an object Berth did not record has its
/// checksum reported instead). Refuses a newer Odoo major version.
fn download(run: &Run, inputs: &Inputs) -> Outcome {
    if let (Some(theirs), Some(ours)) = (
        inputs.version.as_deref().and_then(crate::series),
        crate::series(&run.environment.odoo_version),
    ) && theirs.0 > ours.0
    {
        return Err(Error::invalid(format!(
            "the backup is of Odoo {}.{}, newer than this environment's {}: refused, nothing \
             was stopped",
            theirs.0, theirs.1, run.environment.odoo_version
        )));
    }
    let dir = staging(run);
    exec(&["rm", "-rf", &dir])?;
    exec(&["mkdir", "-p", &dir])?;
    let archive = format!("{dir}/backup.zip");
    let blob = targets::get(&inputs.target, &inputs.key)?;
    ssh::upload(&blob, &archive, 0o644)?;
    let size = blob.size();
    let sha256 = blob.sha256()?;
    let checked = match &inputs.recorded {
        Some((recorded_size, recorded_sha256))
            if (size, &sha256) != (*recorded_size, recorded_sha256) =>
        {
            exec(&["rm", "-rf", &dir])?;
            return Err(Error::invalid(format!(
                "the archive {} on {:?} is not the one backed up ({size} bytes, SHA-256 \
                 {sha256}; recorded {recorded_size} bytes, SHA-256 {recorded_sha256}): refused, \
                 nothing was stopped",
                inputs.key, inputs.target
            )));
        }
        Some(_) => "SHA-256 verified".to_string(),
        None => format!("SHA-256 {sha256} (not a backup Berth recorded: nothing to compare)"),
    };
    done(format!(
        "{} ({:.1} MiB) downloaded from {:?}, {checked}",
        inputs.key,
        size as f64 / (1 << 20) as f64,
        inputs.target
    ))
}

// ---- extract-backup -------------------------------------------------------------------------

/// The extraction, run by the environment's own Odoo image (Python's zipfile reads every zip Odoo
/// and Odoo.sh write). Checks every member's CRC and the layout before writing anything; writes
/// the dump into the data volume's work folder and the filestore beside the current one; prints
/// one line of JSON. Exit 2 means "refused".
///
/// A dump is plain SQL or PostgreSQL's custom format (`PGDMP`), whether it is a zip's `dump.sql`
/// or the whole file; a dump with no filestore (bare, or a zip without `filestore/`) leaves the
/// current one in place. A dump written by a newer `pg_dump` than the environment's client (`psql`,
/// `pg_restore`) is refused: that client cannot read its format or its SQL. The dump's header says
/// which `pg_dump` wrote it (the manifest's `pg_dump_version` or `pg_version` when it does not);
/// `pg_dump` never dumps a server newer than itself, so this also covers the server.
const EXTRACT_PY: &str = r#"
import json, os, re, shutil, sys, zipfile
src, work, dest = sys.argv[1], sys.argv[2], sys.argv[3]
major, client = int(sys.argv[4]), int(sys.argv[5])
def refuse(why):
    print(json.dumps({"refused": why})); sys.exit(2)
def dump_name(head):
    return "dump.dump" if head[:5] == b"PGDMP" else "dump.sql"
def leading_number(text):
    m = re.search(rb"(\d+)", text)
    return m and int(m.group(1))
def custom_writer(h):
    # PGDMP, archive version (3 bytes), int size, offset size, format, compression (a byte from
    # archive 1.15 on, an int before), creation time (7 ints), then strings: database, server
    # version, pg_dump version. An int is a sign byte and int-size bytes, little-endian.
    try:
        size = h[8]
        def integer(at):
            v = int.from_bytes(h[at + 1:at + 1 + size], "little")
            return -v if h[at] else v
        at = 11 + (1 if (h[5], h[6]) >= (1, 15) else 1 + size) + 7 * (1 + size)
        strings = []
        for _ in range(3):
            n = integer(at); at += 1 + size
            if at + max(n, 0) > len(h):
                return None
            strings.append(h[at:at + max(n, 0)]); at += max(n, 0)
        return leading_number(strings[2]) or leading_number(strings[1])
    except IndexError:
        return None
def check_postgres(head, manifest):
    if head[:5] == b"PGDMP":
        theirs = custom_writer(head)
    else:
        m = (re.search(rb"^-- Dumped by pg_dump version (\d+)", head, re.M)
             or re.search(rb"^-- Dumped from database version (\d+)", head, re.M))
        theirs = m and int(m.group(1))
    if theirs is None and manifest:
        theirs = (leading_number(str(manifest.get("pg_dump_version", "")).encode())
                  or leading_number(str(manifest.get("pg_version", "")).encode()))
    if theirs is not None and theirs > client:
        refuse("the dump was written by PostgreSQL %d's pg_dump, newer than this environment's "
               "PostgreSQL %d client (upgrade the environment's PostgreSQL first)"
               % (theirs, client))
with open(src, "rb") as f:
    head = f.read(4096)
shutil.rmtree(work, ignore_errors=True); os.makedirs(work)
shutil.rmtree(dest, ignore_errors=True)
if head[:5] == b"PGDMP":
    check_postgres(head, None)
    shutil.copyfile(src, os.path.join(work, "dump.dump"))
    print(json.dumps({"format": "custom", "filestore": False, "files": 0, "bytes": 0,
                      "manifest": None}))
    sys.exit(0)
os.makedirs(dest)
try:
    z = zipfile.ZipFile(src)
except zipfile.BadZipFile as e:
    refuse("not a zip archive nor a PostgreSQL custom dump: %s" % e)
with z:
    try:
        bad = z.testzip()
    except Exception as e:
        refuse("the archive is corrupted: %s" % e)
    if bad is not None:
        refuse("the archive is corrupted: member %s fails its CRC check" % bad)
    names = z.namelist()
    for n in names:
        if n.startswith("/") or ".." in n.split("/"):
            refuse("member %r escapes the archive" % n)
    if "dump.sql" not in names:
        refuse("the archive has no dump.sql (not an Odoo backup with its database)")
    manifest = None
    if "manifest.json" in names:
        try:
            manifest = json.loads(z.read("manifest.json"))
        except ValueError as e:
            refuse("manifest.json is not JSON: %s" % e)
        theirs = int(str(manifest.get("version", "0")).split(".")[0].replace("saas~", "") or 0)
        if theirs > major:
            refuse("the backup is of Odoo %s, newer than this environment's %d.0" % (manifest.get("version"), major))
    with z.open("dump.sql") as f:
        head = f.read(4096)
    check_postgres(head, manifest)
    name = dump_name(head)
    with z.open("dump.sql") as f, open(os.path.join(work, name), "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    files = total = 0
    for info in z.infolist():
        if not info.filename.startswith("filestore/") or info.is_dir():
            continue
        target = os.path.join(dest, info.filename[len("filestore/"):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as f, open(target, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
        files += 1; total += info.file_size
print(json.dumps({"format": "custom" if name == "dump.dump" else "plain",
                  "filestore": any(n.startswith("filestore/") for n in names),
                  "files": files, "bytes": total, "manifest": manifest}))
"#;

/// Runs `command` to completion in a one-off container of the Odoo image, with the data volume
/// (and, for the extraction, the staging folder read-only); returns its exit code and last line.
fn one_off(
    run: &Run,
    name: &str,
    command: Vec<String>,
    staging: Option<&str>,
    limit: Duration,
) -> Result<(i32, String), Error> {
    if inspect(name)?.is_some() {
        docker::remove(name)?;
    }
    let mut mounts = vec![docker::Mount {
        source: "odoo-data".into(),
        target: DATA_DIR.into(),
        read_only: false,
    }];
    if let Some(dir) = staging {
        mounts.push(docker::Mount {
            source: dir.to_string(),
            target: "/restore".into(),
            read_only: true,
        });
    }
    docker::create(&docker::ContainerSpec {
        name: name.to_string(),
        image: run.settings.odoo_image.clone(),
        command,
        env: Vec::new(),
        mounts,
        networks: Vec::new(),
        ports: Vec::new(),
        restart_policy: None,
        labels: Vec::new(),
    })?;
    docker::start(name)?;
    let deadline = Instant::now() + limit;
    let info = loop {
        let info = docker::inspect(name)?;
        if !info.running {
            break info;
        }
        if Instant::now() > deadline {
            let _ = docker::stop(name, Some(1));
            let _ = docker::remove(name);
            return Err(Error::Timeout(format!(
                "{name} did not finish within {limit:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let logs = docker::logs(name, 20)?;
    docker::remove(name)?;
    let last = logs
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Ok((info.exit_code.unwrap_or(-1), last.trim().to_string()))
}

fn extract(run: &Run) -> Outcome {
    let major = crate::series(&run.environment.odoo_version).map_or(0, |(m, _)| m);
    // The client that will restore the dump: the environment's own PostgreSQL's.
    let client = container_exec(DB_CONTAINER, &["pg_restore", "--version"], None)?;
    let client_major = client
        .split_whitespace()
        .find_map(|word| word.split('.').next()?.parse::<u32>().ok())
        .ok_or_else(|| Error::failed(format!("no version in `pg_restore --version`: {client}")))?;
    let command = [
        "python3",
        "-c",
        EXTRACT_PY,
        "/restore/backup.zip",
        WORK_DIR,
        &filestore(&aside(run, "restore")),
        &major.to_string(),
        &client_major.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let (status, last) = one_off(
        run,
        EXTRACT,
        command,
        Some(&staging(run)),
        Duration::from_secs(6 * 3600),
    )?;
    let report: serde_json::Value = serde_json::from_str(&last)
        .map_err(|_| Error::failed(format!("the extraction exited with {status}: {last}")))?;
    if let Some(why) = report.get("refused").and_then(|v| v.as_str()) {
        return Err(Error::invalid(format!(
            "{why}: refused, nothing was stopped"
        )));
    }
    if status != 0 {
        return Err(Error::failed(format!(
            "the extraction exited with {status}: {last}"
        )));
    }
    let format = report["format"].as_str().unwrap_or("plain");
    let with_filestore = report["filestore"].as_bool().unwrap_or(false);
    operation::note("restore-format", format)?;
    operation::note("restore-filestore", &with_filestore.to_string())?;
    if !with_filestore {
        return done(format!(
            "{format} database dump extracted; the backup carries no filestore, so the current \
             one stays"
        ));
    }
    done(format!(
        "{format} dump and {} filestore file(s) ({:.1} MiB) extracted beside the current data",
        report["files"].as_u64().unwrap_or(0),
        report["bytes"].as_u64().unwrap_or(0) as f64 / (1 << 20) as f64
    ))
}

/// What `extract-backup` found: whether the dump is in custom format, and whether the backup
/// carries a filestore.
fn extracted() -> Result<(bool, bool), Error> {
    let facts: serde_json::Value = serde_json::from_str(&operation::facts()?)
        .map_err(|e| Error::failed(format!("the run's facts are not JSON: {e}")))?;
    Ok((
        facts["restore-format"] == "custom",
        facts["restore-filestore"] != "false",
    ))
}

// ---- restore-data ---------------------------------------------------------------------------

fn databases() -> Result<Vec<String>, Error> {
    database::list_databases()
}

/// Swaps `<db>` and the restored data: the current database and filestore become `_previous`, the
/// restored ones take their names. With `back`, the reverse. A backup without a filestore swaps
/// the database only.
fn switch(run: &Run, back: bool) -> Result<(), Error> {
    let db = run.database();
    let (restored, previous) = (aside(run, "restore"), aside(run, "previous"));
    // Everything that can fail before a rename, fails before it.
    let with_filestore = extracted()?.1;
    let present = databases()?;
    if back {
        if present.iter().any(|d| d == db) {
            database::rename_database(db, &restored)?;
        }
        database::rename_database(&previous, db)?;
    } else {
        if present.contains(&previous) {
            database::drop_database(&previous)?;
        }
        if present.iter().any(|d| d == db) {
            database::rename_database(db, &previous)?;
        }
        database::rename_database(&restored, db)?;
    }
    if !with_filestore {
        return Ok(());
    }
    // The same swap for the filestore, by a one-off container on the data volume (Odoo is
    // stopped). Positional arguments: the script never interpolates a name.
    let (from, to) = if back {
        (filestore(&previous), filestore(&restored))
    } else {
        (filestore(&restored), filestore(&previous))
    };
    let script = "set -e; current=\"$1\"; incoming=\"$2\"; outgoing=\"$3\"; \
                  [ -d \"$incoming\" ] || { echo \"$incoming is missing\"; exit 1; }; \
                  rm -rf \"$outgoing\"; if [ -e \"$current\" ]; then mv \"$current\" \"$outgoing\"; fi; \
                  mv \"$incoming\" \"$current\"; echo switched";
    let command = ["sh", "-c", script, "sh", &filestore(db), &from, &to]
        .map(String::from)
        .to_vec();
    let (status, last) = one_off(run, SWITCH, command, None, Duration::from_secs(600))?;
    if status != 0 {
        return Err(Error::failed(format!(
            "switching the filestore exited with {status}: {last}"
        )));
    }
    Ok(())
}

fn restore_data(run: &Run) -> Outcome {
    let db = run.database();
    if inspect(ODOO_CONTAINER)?.is_some_and(|c| c.running) {
        return Err(Error::failed(
            "Odoo is running: the data is never replaced under it",
        ));
    }
    let restored = aside(run, "restore");
    if databases()?.contains(&restored) {
        database::drop_database(&restored)?;
    }
    database::create_database(&restored, None)?;
    // Owned by Odoo's role, so the restore (run as the owner) gives Odoo its tables.
    database::execute(
        &restored,
        &format!("ALTER DATABASE \"{restored}\" OWNER TO \"{db}\""),
        &[],
    )?;
    let (custom, with_filestore) = extracted()?;
    let (file, format) = if custom {
        ("dump.dump", DumpFormat::Custom)
    } else {
        ("dump.sql", DumpFormat::Plain)
    };
    // The dump streams from the data volume (Docker's archive API works on the stopped
    // container) into psql: stored nowhere on the way.
    let tar = docker::archive(ODOO_CONTAINER, &format!("{WORK_DIR}/{file}"))?;
    let dump = archive::tar_file(&tar, file)?;
    database::restore(&restored, &dump, format)?;
    let bytes = dump.size();
    switch(run, false)?;
    operation::note("restore-switched", "true")?;
    let with = if with_filestore {
        "with the filestore"
    } else {
        "(the current filestore stays)"
    };
    done(format!(
        "database restored from a {:.1} MiB dump into {restored}, then switched {with}; the \
         previous data is kept as {}",
        bytes as f64 / (1 << 20) as f64,
        aside(run, "previous")
    ))
}

// ---- health-check ---------------------------------------------------------------------------

/// Odoo's health on the restored data; when it fails, the previous data comes back.
fn health_check(run: &Run, limit: Duration) -> Outcome {
    match steps::health_check(run, limit) {
        Ok(outcome) => Ok(outcome),
        Err(error) => {
            docker::stop(ODOO_CONTAINER, Some(30))?;
            switch(run, true)?;
            docker::start(ODOO_CONTAINER)?;
            let again = match steps::health_check(run, limit) {
                Ok(_) => "Odoo is healthy on it again".to_string(),
                Err(e) => format!("but Odoo is not healthy on it either: {}", e.message()),
            };
            Err(Error::failed(format!(
                "Odoo was not healthy on the restored data ({}); switched back to the previous \
                 database and filestore, {again}. The restored data is kept as {}",
                error.message(),
                aside(run, "restore")
            )))
        }
    }
}

// ---- clean-up -------------------------------------------------------------------------------

/// The run succeeded: the previous data, the staging folder and the extracted dump go.
fn clean_up(run: &Run) -> Outcome {
    let previous = aside(run, "previous");
    if databases()?.contains(&previous) {
        database::drop_database(&previous)?;
    }
    let script = "rm -rf \"$1\" \"$2\"; echo removed";
    let command = ["sh", "-c", script, "sh", &filestore(&previous), WORK_DIR]
        .map(String::from)
        .to_vec();
    let (status, last) = one_off(run, SWITCH, command, None, Duration::from_secs(600))?;
    if status != 0 {
        return Err(Error::failed(format!(
            "removing the previous filestore: {last}"
        )));
    }
    exec(&["rm", "-rf", &staging(run)])?;
    done(format!(
        "previous database and filestore ({previous}) removed, staging folder removed; the \
         backup itself is untouched"
    ))
}
