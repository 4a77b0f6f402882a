//! The backup flow: an environment's database and filestore as Odoo's database-manager zip
//! (`dump.sql`, `filestore/…`, `manifest.json`), streamed from the server into a storage target,
//! then the target pruned grandfather-father-son.
//!
//! The plugin only wires streams together — `pg_dump`, the filestore's tar from Docker, the
//! manifest — into `archive.zip` and hands the zip to `targets.put`; the host moves the bytes. The
//! size and SHA-256 recorded are those measured as the archive streamed, and the backup is
//! recorded only if the upload completed.

use berth_contract::backup_key;
use berth_contract::dates::civil_from_days;
use berth_contract::facts;
use berth_sdk::archive::{self, Content, Member};
use berth_sdk::blobs::Blob;
use berth_sdk::database::{self, DumpFormat, Value};
use berth_sdk::{
    BackupInputs, Error, Retention, RunInputs, StepOutcome, docker, operation, targets,
};
use serde_json::json;

use crate::steps::{Outcome, Run, Step, container_exec, done, inspect, wrong_inputs};
use crate::{DATA_DIR, DB_CONTAINER, ODOO_CONTAINER};

/// The steps of a backup, in order.
pub const STEPS: &[Step] = &[
    Step::new("check-target", check_target),
    Step::new("upload-backup", upload_backup),
    Step::new("prune-backups", prune_backups),
];

/// What the engine asks of a backup run: the target, the key, this environment's folder on the
/// target, its retention policy there.
fn inputs() -> Result<BackupInputs, Error> {
    match operation::inputs()? {
        RunInputs::Backup(inputs) => Ok(inputs),
        other => Err(wrong_inputs("backup", &other)),
    }
}

// ---- check-target ---------------------------------------------------------------------------

fn check_target(_run: &Run) -> Outcome {
    let inputs = inputs()?;
    targets::check(&inputs.target)?;
    done(format!(
        "storage target {:?} reachable and writable",
        inputs.target
    ))
}

/// The filestore of database `db` inside the Odoo container.
pub fn filestore(db: &str) -> String {
    format!("{DATA_DIR}/filestore/{db}")
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::Text(s)) => s.clone(),
        Some(Value::Integer(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The manifest Odoo's database manager writes, from the database itself.
fn manifest(run: &Run) -> Result<serde_json::Value, Error> {
    let db = run.database();
    let installed = database::query(
        db,
        "SELECT name::text, coalesce(latest_version, '')::text FROM ir_module_module \
         WHERE state = 'installed' ORDER BY name",
        &[],
    )?;
    let modules: serde_json::Map<String, serde_json::Value> = installed
        .rows
        .iter()
        .map(|r| (text(r.first()), json!(text(r.get(1)))))
        .collect();
    let server = database::query(db, "SHOW server_version_num", &[])?;
    let num: u32 = text(server.rows.first().and_then(|r| r.first()))
        .parse()
        .unwrap_or(0);
    let client = container_exec(DB_CONTAINER, &["pg_dump", "--version"], None)?;
    let version = &run.environment.odoo_version;
    let (major, minor) = crate::series(version).unwrap_or((0, 0));
    Ok(json!({
        "odoo_dump": "1",
        "db_name": db,
        "version": version,
        "version_info": [major, minor, 0, "final", 0, ""],
        "major_version": version,
        "pg_version": format!("{}.{}", num / 10000, num % 100),
        "pg_dump_version": client.trim(),
        "modules": modules,
    }))
}

// ---- upload-backup --------------------------------------------------------------------------

fn upload_backup(run: &Run) -> Outcome {
    let inputs = inputs()?;
    let db = run.database();
    let odoo = inspect(ODOO_CONTAINER)?.ok_or_else(|| {
        Error::not_found("the environment has no Odoo container: deploy it first")
    })?;
    if odoo.running {
        // A database with no attachment yet has no filestore folder: an empty one is its backup.
        container_exec(ODOO_CONTAINER, &["mkdir", "-p", &filestore(db)], None)?;
    }
    let manifest = manifest(run)?;
    let manifest_blob = Blob::new();
    manifest_blob.append(
        serde_json::to_string_pretty(&manifest)
            .expect("JSON")
            .as_bytes(),
    )?;
    // Three streams, nothing moved yet: the dump, the filestore's tar, the manifest.
    let dump = database::dump(db, DumpFormat::Plain)?;
    let files = docker::archive(ODOO_CONTAINER, &filestore(db))?;
    let zip = archive::zip(&[
        Member {
            name: "dump.sql".into(),
            data: &dump,
            content: Content::File,
        },
        Member {
            name: "filestore".into(),
            data: &files,
            content: Content::Tree(1),
        },
        Member {
            name: "manifest.json".into(),
            data: &manifest_blob,
            content: Content::File,
        },
    ])?;
    // Now they flow: pg_dump → zip → the target's upload, at the pace of the slowest.
    let stored = targets::put(&inputs.target, &inputs.key, &zip)?;
    let size = zip.size();
    let sha256 = zip.sha256()?;
    if stored.size != size {
        return Err(Error::failed(format!(
            "the target stored {} bytes of a {size}-byte archive",
            stored.size
        )));
    }
    let modules = manifest["modules"].as_object().map_or(0, |m| m.len());
    let mut recorded = manifest.clone();
    if recorded.to_string().len() > 3500 {
        // The run's facts are bounded: the module list stays in the archive's manifest.
        recorded["modules"] = json!(modules);
    }
    operation::note(facts::BACKUP_TARGET, &inputs.target)?;
    operation::note(facts::BACKUP_KEY, &inputs.key)?;
    operation::note(facts::BACKUP_SIZE, &size.to_string())?;
    operation::note(facts::BACKUP_SHA256, &sha256)?;
    operation::note(facts::BACKUP_MANIFEST, &recorded.to_string())?;
    done(format!(
        "{} ({:.1} MiB, {modules} modules, PostgreSQL {}) stored on {:?}, SHA-256 {}",
        inputs.key,
        size as f64 / (1 << 20) as f64,
        manifest["pg_version"].as_str().unwrap_or("?"),
        inputs.target,
        &sha256[..12]
    ))
}

// ---- prune-backups --------------------------------------------------------------------------

fn prune_backups(_run: &Run) -> Outcome {
    let inputs = inputs()?;
    let Some(retention) = inputs.retention else {
        return Ok(StepOutcome::Skipped(format!(
            "no retention policy for storage target {:?}",
            inputs.target
        )));
    };
    let objects = targets::list_objects(&inputs.target, &inputs.prefix)?;
    let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
    let prune = to_prune(&keys, &inputs.prefix, retention);
    let backups = keys
        .iter()
        .filter(|k| backup_key::parse(k, &inputs.prefix).is_some())
        .count();
    for key in &prune {
        targets::delete(&inputs.target, key)?;
    }
    operation::note(
        facts::BACKUP_PRUNED,
        &serde_json::to_string(&prune).expect("JSON"),
    )?;
    done(format!(
        "kept {} of {} backup(s) ({} daily, {} weekly, {} monthly); pruned {}",
        backups - prune.len(),
        backups,
        retention.daily,
        retention.weekly,
        retention.monthly,
        prune.len()
    ))
}

/// The backups to delete under grandfather-father-son retention: keep the newest backup of each
/// of the `daily` most recent days that have one, of each of the `weekly` most recent weeks
/// (Monday to Sunday) and of each of the `monthly` most recent months; the newest is always kept.
/// Keys that are not Berth's backups are never pruned.
pub fn to_prune(keys: &[String], prefix: &str, retention: Retention) -> Vec<String> {
    let mut dated: Vec<(&String, (i64, u32))> = keys
        .iter()
        .filter_map(|k| backup_key::parse(k, prefix).map(|s| (k, s)))
        .collect();
    dated.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(a.0)));
    // Months since year 0, from the day count (via the civil date's year and month).
    let month = |days: i64| {
        let (y, m, _) = civil_from_days(days);
        y * 12 + i64::from(m)
    };
    // 1970-01-01 was a Thursday: shifting by 3 makes weeks start on Monday.
    let periods: [(u32, &dyn Fn(i64) -> i64); 3] = [
        (retention.daily, &|d| d),
        (retention.weekly, &|d| (d + 3).div_euclid(7)),
        (retention.monthly, &month),
    ];
    let mut keep: std::collections::BTreeSet<&String> =
        dated.iter().take(1).map(|(k, _)| *k).collect();
    for (count, period) in periods {
        let mut seen = Vec::new();
        for (key, (days, _)) in &dated {
            let p = period(*days);
            if seen.contains(&p) {
                continue;
            }
            if seen.len() == count as usize {
                break;
            }
            seen.push(p);
            keep.insert(*key);
        }
    }
    dated
        .iter()
        .filter(|(k, _)| !keep.contains(k))
        .map(|(k, _)| (*k).clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_contract::dates::days_from_civil;

    fn key(date: &str) -> String {
        format!("shop/prod/{date}T030000Z-run1.zip")
    }

    #[test]
    fn gfs_keeps_seven_daily_four_weekly_three_monthly() {
        // One backup a day from 2026-06-01 to 2026-11-27 (180 days).
        let start = days_from_civil(2026, 6, 1);
        let keys: Vec<String> = (0..180)
            .map(|i| {
                let (y, m, d) = civil_from_days(start + i);
                key(&format!("{y:04}{m:02}{d:02}"))
            })
            .collect();
        let retention = Retention {
            daily: 7,
            weekly: 4,
            monthly: 3,
        };
        let pruned = to_prune(&keys, "shop/prod/", retention);
        let kept: Vec<&String> = keys.iter().filter(|k| !pruned.contains(k)).collect();
        let names: Vec<&str> = kept.iter().map(|k| &k[10..18]).collect();
        // 7 daily (21..27 Nov), Sundays of the 4 latest weeks (the current week's newest is the
        // 27th), the newest of November, October, September.
        assert_eq!(
            names,
            [
                "20260930", "20261031", "20261108", "20261115", "20261121", "20261122", "20261123",
                "20261124", "20261125", "20261126", "20261127"
            ]
        );
        assert_eq!(pruned.len(), 180 - 11);
    }

    #[test]
    fn gfs_never_prunes_the_newest_nor_foreign_keys() {
        let keys = vec![key("20261101"), "shop/prod/manual-copy.zip".to_string()];
        let none = Retention {
            daily: 1,
            weekly: 0,
            monthly: 0,
        };
        assert!(to_prune(&keys, "shop/prod/", none).is_empty());
        let keys = vec![key("20261101"), key("20261102"), key("20261103")];
        assert_eq!(
            to_prune(&keys, "shop/prod/", none),
            vec![key("20261102"), key("20261101")]
        );
    }
}
