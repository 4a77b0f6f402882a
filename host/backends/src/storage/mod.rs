//! Object storage for backups: S3 (and every S3-compatible service), FTP (with explicit FTPS) and
//! SFTP clients, one module each, behind one [`Connection`] with the same five calls.
//!
//! Every transfer streams: an upload reads its source chunk by chunk (S3 sends parts of
//! [`PART_SIZE`] through a multipart upload), a download hands each chunk to a sink as it arrives.
//! Memory stays bounded by one part whatever the object's size. Credentials are given to
//! [`Connection::open`] and live only inside the client; errors name the target and the operation,
//! never a secret.

mod ftp;
mod s3;
mod sftp;

use tokio::io::AsyncReadExt;

pub use ftp::{FtpTls, TlsMode};

use crate::{Sink, Source};

/// Bytes of one S3 multipart part (the minimum S3 accepts is 5 MiB).
pub const PART_SIZE: usize = 8 << 20;
/// Bytes moved per read or write on FTP and SFTP.
const CHUNK: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The target refused the credentials or the access.
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Failed(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Where a target is, as its backend plugin describes it.
#[derive(Clone, Debug)]
pub enum Protocol {
    S3 {
        endpoint: String,
        region: String,
        bucket: String,
        path_style: bool,
    },
    Ftp(Remote, FtpTls),
    Sftp(Remote),
}

#[derive(Clone, Debug)]
pub struct Remote {
    pub host: String,
    pub port: u16,
    /// The directory objects live under; keys are relative to it.
    pub directory: String,
}

/// A target's credentials: access key and secret key (S3), user and password (FTP), user and
/// private key in OpenSSH format (SFTP).
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.user)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Seconds since the Unix epoch, when the backend says.
    pub modified: Option<u64>,
}

/// An open connection to one storage target.
pub enum Connection {
    S3(s3::S3),
    Ftp(ftp::Ftp),
    Sftp(sftp::Sftp),
}

/// Refuses a key that could leave the target's directory or confuse a path.
pub fn check_key(key: &str) -> Result<()> {
    let clean = !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && key.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b'+' | b'=')
        });
    if clean {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "object key {key:?} must be a relative path of letters, digits and . _ - + = /"
        )))
    }
}

/// A connection shared by the calls that use it (a plugin's handle holds one).
pub type SharedConnection = std::sync::Arc<Connection>;

impl Connection {
    /// Connects and authenticates. `sftp_host_key` is the key an SFTP server must offer (the
    /// target's pin), or where to pin the one it offers first. Every server (S3 endpoint, FTP and
    /// SFTP host) is reached only at addresses `egress` checked when connecting.
    pub async fn open(
        protocol: &Protocol,
        credentials: &Credentials,
        sftp_host_key: crate::ssh::HostKey,
        egress: &crate::egress::EgressPolicy,
    ) -> Result<Self> {
        Ok(match protocol {
            Protocol::S3 {
                endpoint,
                region,
                bucket,
                path_style,
            } => Connection::S3(s3::S3::open(
                endpoint,
                region,
                bucket,
                *path_style,
                credentials,
                egress,
            )?),
            Protocol::Ftp(remote, tls) => {
                Connection::Ftp(ftp::Ftp::open(remote, tls, credentials, egress).await?)
            }
            Protocol::Sftp(remote) => Connection::Sftp(
                sftp::Sftp::open(remote, credentials, sftp_host_key, egress).await?,
            ),
        })
    }

    /// Stores everything `data` yields under `key`; its size need not be known (a stream's is not).
    /// The object appears under `key` only once it is complete: S3 completes a multipart upload, FTP
    /// and SFTP write a `.part` file and rename it. A failed upload leaves nothing behind.
    pub async fn put(&self, key: &str, data: Source<'_>) -> Result<ObjectInfo> {
        check_key(key)?;
        match self {
            Connection::S3(c) => c.put(key, data).await,
            Connection::Ftp(c) => c.put(key, data).await,
            Connection::Sftp(c) => c.put(key, data).await,
        }
    }

    /// Streams the object `key` into `sink`; returns its size.
    pub async fn get(&self, key: &str, sink: Sink<'_>) -> Result<u64> {
        check_key(key)?;
        match self {
            Connection::S3(c) => c.get(key, sink).await,
            Connection::Ftp(c) => c.get(key, sink).await,
            Connection::Sftp(c) => c.get(key, sink).await,
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        check_key(key)?;
        match self {
            Connection::S3(c) => c.head(key).await,
            Connection::Ftp(c) => c.head(key).await,
            Connection::Sftp(c) => c.head(key).await,
        }
    }

    /// Objects whose key starts with `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        if !prefix.is_empty() {
            check_key(prefix.trim_end_matches('/'))?;
        }
        let mut objects = match self {
            Connection::S3(c) => c.list(prefix).await?,
            Connection::Ftp(c) => c.list(prefix).await?,
            Connection::Sftp(c) => c.list(prefix).await?,
        };
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        match self {
            Connection::S3(c) => c.delete(key).await,
            Connection::Ftp(c) => c.delete(key).await,
            Connection::Sftp(c) => c.delete(key).await,
        }
    }
}

/// Reads up to `buf.len()` bytes, fewer only at the end of `data`.
async fn read_full(data: Source<'_>, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match data.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Where an upload is written until it is complete.
fn partial(key: &str) -> String {
    format!("{key}.part")
}

/// Writes `data` into `sink` in chunks; returns the bytes copied. Errors say which side failed.
async fn copy(data: Source<'_>, sink: Sink<'_>) -> std::io::Result<u64> {
    use tokio::io::AsyncWriteExt;
    let mut chunk = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = data.read(&mut chunk).await?;
        if n == 0 {
            sink.flush().await?;
            return Ok(total);
        }
        sink.write_all(&chunk[..n]).await?;
        total += n as u64;
    }
}

/// The directory part of a key (`a/b/c` → `a/b`), if any.
fn parent(key: &str) -> Option<&str> {
    key.rsplit_once('/').map(|(dir, _)| dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::EgressPolicy;
    use crate::egress::testing::{Server, own_name};

    /// FTP and SFTP servers were connected to by name, after the API's check: a name that
    /// resolved to the control plane's own machine was reached. Now the name is resolved through
    /// the egress policy when connecting, and only checked addresses are connected to.
    #[tokio::test]
    async fn ftp_and_sftp_servers_are_reached_only_at_checked_addresses() {
        let server = Server::answering(String::new());
        let remote = Remote {
            host: own_name(),
            port: server.port,
            directory: "backups".into(),
        };
        let credentials = Credentials {
            user: "u".into(),
            secret: "-----BEGIN OPENSSH PRIVATE KEY-----".into(),
        };
        let tls = ftp::FtpTls {
            mode: ftp::TlsMode::Off,
            trusted_pem: None,
        };
        let policy = EgressPolicy::public_only();
        let ftp = Connection::open(
            &Protocol::Ftp(remote.clone(), tls),
            &credentials,
            crate::ssh::HostKey::Pinned(String::new()),
            &policy,
        )
        .await;
        assert!(
            matches!(&ftp, Err(StorageError::Invalid(m)) if m.contains("does not connect there")),
            "{:?}",
            ftp.err()
        );
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        crate::ssh::generate_key(&key, "test").unwrap();
        let credentials = Credentials {
            user: "u".into(),
            secret: std::fs::read_to_string(&key).unwrap(),
        };
        let sftp = Connection::open(
            &Protocol::Sftp(remote),
            &credentials,
            crate::ssh::HostKey::Pinned(String::new()),
            &policy,
        )
        .await;
        let err = sftp.err().expect("refused");
        assert!(err.to_string().contains("does not connect there"), "{err}");
        assert_eq!(server.connections(), 0, "a client reached the server");
    }

    #[test]
    fn keys_stay_inside_the_target() {
        for good in ["backups/prod/2026-11-27.zip", "a", "x.sha256"] {
            assert!(super::check_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/etc/passwd", "../up", "a//b", "a/./b", "a b", "a\nb"] {
            assert!(super::check_key(bad).is_err(), "{bad:?}");
        }
    }
}
