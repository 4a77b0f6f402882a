//! The object key of a backup Berth makes: `<project>/<environment>/<YYYYmmdd>T<HHMMSS>Z-run<id>.zip`.
//! The engine names each backup run's archive with [`format`]; retention reads the time back with
//! [`parse`] and never touches a key it cannot read, so objects Berth did not write are safe.

use crate::dates::{civil_from_days, days_from_civil};

/// The folder under which environment `environment` of `project` keeps its backups.
pub fn prefix(project: &str, environment: &str) -> String {
    format!("{project}/{environment}/")
}

/// The key of the backup made by run `run_id` at `unix_ms` (UTC). Keys sort by time.
pub fn format(project: &str, environment: &str, run_id: i64, unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{}{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z-run{run_id}.zip",
        prefix(project, environment),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A backup's time as (days since 1970-01-01, seconds into the day), when `key` is a backup key
/// directly under `prefix`; `None` for anything else.
pub fn parse(key: &str, prefix: &str) -> Option<(i64, u32)> {
    let name = key.strip_prefix(prefix)?;
    if name.contains('/') || !name.ends_with(".zip") || name.len() < 16 {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then_some(());
    let (date, time) = (name.get(..8)?, name.get(9..15)?);
    digits(date)?;
    digits(time)?;
    if name.get(8..9)? != "T" || name.get(15..16)? != "Z" {
        return None;
    }
    let y: i64 = date[..4].parse().ok()?;
    let m: u32 = date[4..6].parse().ok()?;
    let d: u32 = date[6..8].parse().ok()?;
    let secs: u32 = time[..2].parse::<u32>().ok()? * 3600
        + time[2..4].parse::<u32>().ok()? * 60
        + time[4..6].parse::<u32>().ok()?;
    Some((days_from_civil(y, m, d), secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_utc_time_and_sort_by_it() {
        // 2026-11-27 09:05:03 UTC
        let key = format("shop", "prod", 42, 1_795_770_303_000);
        assert_eq!(key, "shop/prod/20261127T090503Z-run42.zip");
        assert_eq!(
            format("p", "e", 1, 951_782_400_000),
            "p/e/20000229T000000Z-run1.zip"
        );
        assert!(format("p", "e", 9, 1_000) < format("p", "e", 10, 2_000));
    }

    #[test]
    fn keys_are_read_back_from_berth_keys_only() {
        let key = |date: &str| std::format!("shop/prod/{date}T030000Z-run1.zip");
        assert_eq!(parse(&key("19700102"), "shop/prod/"), Some((1, 10_800)));
        assert_eq!(
            parse(&key("20000301"), "shop/prod/"),
            Some((11_017, 10_800))
        );
        assert_eq!(parse("shop/prod/notes.txt", "shop/prod/"), None);
        assert_eq!(parse("shop/prod/é20000301T030000Z.zip", "shop/prod/"), None);
        assert_eq!(
            parse("shop/prod/x/20000301T030000Z-run1.zip", "shop/prod/"),
            None
        );
        assert_eq!(parse(&key("20000301"), "other/"), None);
        let made = format("shop", "prod", 7, 1_795_770_303_000);
        let (days, secs) = parse(&made, &prefix("shop", "prod")).unwrap();
        assert_eq!(civil_from_days(days), (2026, 11, 27));
        assert_eq!(secs, 9 * 3600 + 5 * 60 + 3);
    }
}
