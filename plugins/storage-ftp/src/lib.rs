//! The `ftp` storage backend: backups in a directory of an FTP server.
//!
//! Target settings: `host`, `port` (default 21), `directory` (where the objects live; keys
//! with slashes become subdirectories), `prefix`. Credentials are the target's secrets, applied by
//! the host: user and password.

use berth_sdk::prelude::*;
use berth_sdk::storage::{self, Protocol, RemoteSettings};
use berth_sdk::{StorageTarget, TargetSettings};

struct FtpBackend;

impl Plugin for FtpBackend {
    fn describe() -> Description {
        Description::storage_backend("ftp", env!("CARGO_PKG_VERSION"))
            .summary("FTP storage targets")
            .capability("storage")
    }
}

impl StorageBackend for FtpBackend {
    fn open(target: &str) -> Result<StorageTarget, Error> {
        let settings = TargetSettings::read(target)?;
        let protocol = Protocol::Ftp(RemoteSettings {
            host: settings.required("host")?.to_string(),
            port: settings.port(21)?,
            directory: settings.get("directory").unwrap_or("").to_string(),
        });
        let connection = storage::connect(target, &protocol)?;
        Ok(StorageTarget::new(
            target,
            connection,
            settings.get("prefix").unwrap_or(""),
        ))
    }
}

berth_sdk::export!(storage_backend: FtpBackend);
