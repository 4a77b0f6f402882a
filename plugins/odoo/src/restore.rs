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
//!   extraction mounts that folder read-only. Folder and archive belong to Odoo's user (the
//!   extraction runs as it) and no one else may read them (0700, 0600); they are removed as soon
//!   as the extraction ends, however it ends, and when the download fails.
//! - The dump runs as a role of its own that owns the restored database only (see the host's
//!   `database.restore`): it reaches neither the current database nor Odoo's role. A dump that
//!   fails to restore leaves the current data as it was, and Odoo is started on it again.
//!
//! The programs that run in one-off containers on Odoo's data volume are files of their own in
//! `scripts/` (the extraction, in Python, has its unit tests there).

use std::time::{Duration, Instant};

use berth_sdk::archive;
use berth_sdk::database::{self, DumpFormat};
use berth_sdk::{Error, RestoreInputs, RunInputs, docker, operation, ssh, targets};

use crate::backup::filestore;
use crate::steps::{
    self, Outcome, Run, Step, container_exec, create_owned, done, exec, facts, inspect, odoo_owner,
    wrong_inputs,
};
use crate::{DATA_DIR, DB_CONTAINER, ODOO_CONTAINER};

/// The restore's steps, in the seed's order, then the clean-up.
pub const STEPS: &[Step] = &[
    Step::new("download-backup", download_backup),
    Step::new("extract-backup", extract_backup),
    Step::new("stop-environment", stop_environment),
    Step::new("restore-data", restore_data),
    Step::new("start-environment", start_environment),
    Step::new("health-check", health_check),
    Step::new("install-dependencies", steps::install_dependencies),
    Step::new("clean-up", clean_up),
];

/// Where the extraction leaves the dump, inside Odoo's data volume.
const WORK_DIR: &str = "/var/lib/odoo/.berth-restore";
/// The one-off containers that work on Odoo's data volume while Odoo itself is stopped.
const EXTRACT: &str = "restore-extract";
const SWITCH: &str = "restore-switch";

/// The extraction, run by the environment's own Odoo image with `python3 -c` (see the script).
const EXTRACT_PY: &str = include_str!("scripts/restore_extract.py");
/// The filestore swap and the final clean-up, run with `sh -c` (see the scripts).
const SWITCH_SH: &str = include_str!("scripts/restore_switch.sh");
const CLEAN_UP_SH: &str = include_str!("scripts/restore_clean_up.sh");

/// The facts the restore's steps record for its later steps: the dump's format (`custom` or
/// `plain`), whether the backup carries a filestore, whether the data was switched.
const FORMAT_FACT: &str = "restore-format";
const FILESTORE_FACT: &str = "restore-filestore";
const SWITCHED_FACT: &str = "restore-switched";

/// What the engine asks of a restore run: the backup, as recorded when it was made — or an object
/// of a target that Berth did not write (an Odoo or Odoo.sh download, a `pg_dump --format=c`),
/// which has no recorded size and checksum to hold it to.
fn inputs() -> Result<RestoreInputs, Error> {
    match operation::inputs()? {
        RunInputs::Restore(inputs) => Ok(inputs),
        other => Err(wrong_inputs("restore", &other)),
    }
}

fn staging(run: &Run) -> String {
    run.path("restore")
}

fn aside(run: &Run, suffix: &str) -> String {
    format!("{}_{suffix}", run.database())
}

// ---- download-backup ------------------------------------------------------------------------

/// Streams the archive from the target into the staging folder on the server, and checks it is
/// the archive that was backed up: same size, same SHA-256 (an object Berth did not record has its
/// checksum reported instead). Refuses a newer Odoo major version.
fn download_backup(run: &Run) -> Outcome {
    let inputs = inputs()?;
    let recorded = inputs.recorded.as_ref();
    if let (Some(theirs), Some(ours)) = (
        recorded
            .and_then(|r| r.version.as_deref())
            .and_then(crate::series),
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
    let (size, sha256) = match stage(&dir, &inputs) {
        Ok(staged) => staged,
        Err(error) => return discard(run, Err(error)),
    };
    let checked = match recorded {
        Some(r) if (size, &sha256) != (r.size, &r.sha256) => {
            return discard(
                run,
                Err(Error::invalid(format!(
                    "the archive {} on {:?} is not the one backed up ({size} bytes, SHA-256 \
                     {sha256}; recorded {} bytes, SHA-256 {}): refused, nothing was stopped",
                    inputs.key, inputs.target, r.size, r.sha256
                ))),
            );
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

/// Streams the archive into `dir/backup.zip`, folder and archive Odoo's user's alone from their
/// creation on (the extraction runs as that user). Returns the archive's size and SHA-256.
fn stage(dir: &str, inputs: &RestoreInputs) -> Result<(u64, String), Error> {
    let owner = odoo_owner()?;
    create_owned(dir, owner, "0700", true)?;
    let archive = format!("{dir}/backup.zip");
    create_owned(&archive, owner, "0600", false)?;
    let blob = targets::get(&inputs.target, &inputs.key)?;
    ssh::upload(&blob, &archive, 0o600)?;
    Ok((blob.size(), blob.sha256()?))
}

/// Removes the staging folder, then returns `outcome` (with the removal's failure added to it).
fn discard<T>(run: &Run, outcome: Result<T, Error>) -> Result<T, Error> {
    let removed = exec(&["rm", "-rf", &staging(run)]);
    match (outcome, removed) {
        (outcome, Ok(_)) => outcome,
        (Ok(_), Err(e)) => Err(Error::failed(format!(
            "the staged archive stays on the server: {}",
            e.message()
        ))),
        (Err(error), Err(e)) => Err(Error::failed(format!(
            "{}; and the staged archive stays on the server: {}",
            error.message(),
            e.message()
        ))),
    }
}

// ---- extract-backup -------------------------------------------------------------------------

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

/// Extracts the backup with the environment's own Odoo image (see `scripts/restore_extract.py`):
/// the dump into the data volume's work folder, the filestore beside the current one. Refuses a
/// corrupted archive, one without `dump.sql`, a newer Odoo major version, a dump of a newer
/// PostgreSQL than the environment's client — all before anything is stopped. The staged archive
/// is removed however the extraction ends: nothing needs it after.
fn extract_backup(run: &Run) -> Outcome {
    discard(run, extract(run))
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
    operation::note(FORMAT_FACT, format)?;
    operation::note(FILESTORE_FACT, &with_filestore.to_string())?;
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
    let facts = facts()?;
    Ok((
        facts[FORMAT_FACT] == "custom",
        facts[FILESTORE_FACT] != "false",
    ))
}

// ---- stop-environment -----------------------------------------------------------------------

fn stop_environment(_run: &Run) -> Outcome {
    if inspect(ODOO_CONTAINER)?.is_some_and(|c| c.running) {
        docker::stop(ODOO_CONTAINER, Some(30))?;
    }
    done("Odoo stopped: nothing writes to the data while it is replaced")
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
    let command = ["sh", "-c", SWITCH_SH, "sh", &filestore(db), &from, &to]
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
    if inspect(ODOO_CONTAINER)?.is_some_and(|c| c.running) {
        return Err(Error::failed(
            "Odoo is running: the data is never replaced under it",
        ));
    }
    let restored = aside(run, "restore");
    // Up to the switch the current data is untouched: a dump that does not restore leaves it as it
    // was, and Odoo runs on it again.
    let bytes = match load(&restored) {
        Ok(bytes) => bytes,
        Err(error) => {
            let again = match docker::start(ODOO_CONTAINER) {
                Ok(()) => "Odoo was started on it again".to_string(),
                Err(e) => format!("but Odoo did not start again: {}", e.message()),
            };
            return Err(Error::failed(format!(
                "{}: nothing was switched, the current data is as it was and {again}",
                error.message()
            )));
        }
    };
    let with_filestore = extracted()?.1;
    switch(run, false)?;
    operation::note(SWITCHED_FACT, "true")?;
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

/// The extracted dump into a new database `restored` (the host makes it the environment's role's,
/// and runs the dump as a role confined to it); returns the dump's size.
fn load(restored: &str) -> Result<u64, Error> {
    if databases()?.iter().any(|d| d == restored) {
        database::drop_database(restored)?;
    }
    database::create_database(restored, None)?;
    let (file, format) = if extracted()?.0 {
        ("dump.dump", DumpFormat::Custom)
    } else {
        ("dump.sql", DumpFormat::Plain)
    };
    // The dump streams from the data volume (Docker's archive API works on the stopped
    // container) into PostgreSQL: stored nowhere on the way.
    let tar = docker::archive(ODOO_CONTAINER, &format!("{WORK_DIR}/{file}"))?;
    let dump = archive::tar_file(&tar, file)?;
    database::restore(restored, &dump, format)?;
    Ok(dump.size())
}

// ---- start-environment ----------------------------------------------------------------------

fn start_environment(_run: &Run) -> Outcome {
    docker::start(ODOO_CONTAINER)?;
    done("Odoo started on the restored data")
}

// ---- health-check ---------------------------------------------------------------------------

/// Odoo's health on the restored data, within a deploy's [`steps::HEALTH_LIMIT`]; when it fails,
/// the previous data comes back.
fn health_check(run: &Run) -> Outcome {
    match steps::health_check(run) {
        Ok(outcome) => Ok(outcome),
        Err(error) => {
            docker::stop(ODOO_CONTAINER, Some(30))?;
            switch(run, true)?;
            docker::start(ODOO_CONTAINER)?;
            let again = match steps::health_check(run) {
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
    let command = [
        "sh",
        "-c",
        CLEAN_UP_SH,
        "sh",
        &filestore(&previous),
        WORK_DIR,
    ]
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    /// The scripts' own tests (`scripts/test_*.py`, Python's `unittest`) run with this crate's.
    #[test]
    fn the_scripts_pass_their_python_tests() {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scripts");
        let output = Command::new("python3")
            .args(["-m", "unittest", "discover", "-s"])
            .arg(&scripts)
            .args(["-p", "test_*.py"])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap_or_else(|e| {
                panic!("the restore scripts' tests need python3 (3.11 or later) on PATH: {e}")
            });
        assert!(
            output.status.success(),
            "python3 -m unittest discover -s {} failed ({}):\n{}{}",
            scripts.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
