//! The `ftp` storage backend: backups in a directory of an FTP server.
//!
//! Target settings: `host`, `port` (default 21), `directory` (where the objects live; keys
//! with slashes become subdirectories), `prefix`. Credentials are the target's secrets, applied by
//! the host: user and password. Encryption is the host's too: explicit FTPS whenever the server
//! offers it, per the target's `tls` (`when-offered`, `required`, `off`) and `tls-ca` (PEM
//! certificates to trust) settings.

use berth_sdk::prelude::*;
use berth_sdk::storage::Protocol;
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
        settings.connect(&Protocol::Ftp(settings.remote(21)?))
    }
}

berth_sdk::export!(storage_backend: FtpBackend);
