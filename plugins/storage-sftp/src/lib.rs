//! The `sftp` storage backend: backups in a directory of an SFTP server.
//!
//! Target settings: `host`, `port` (default 22), `directory` (where the objects live; keys
//! with slashes become subdirectories), `prefix`. Credentials are the target's secrets, applied by
//! the host: user and private key (OpenSSH format); the server's host key is pinned on first
//! contact.

use berth_sdk::prelude::*;
use berth_sdk::storage::Protocol;
use berth_sdk::{StorageTarget, TargetSettings};

struct SftpBackend;

impl Plugin for SftpBackend {
    fn describe() -> Description {
        Description::storage_backend("sftp", env!("CARGO_PKG_VERSION"))
            .summary("SFTP storage targets")
            .capability("storage")
    }
}

impl StorageBackend for SftpBackend {
    fn open(target: &str) -> Result<StorageTarget, Error> {
        let settings = TargetSettings::read(target)?;
        settings.connect(&Protocol::Sftp(settings.remote(22)?))
    }
}

berth_sdk::export!(storage_backend: SftpBackend);
