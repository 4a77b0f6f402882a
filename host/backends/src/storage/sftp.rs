//! SFTP through the SSH client Berth already speaks (russh + russh-sftp): a key from the target's
//! secret, the server's host key pinned on the target's own record (its organization's), on first
//! contact like every server Berth reaches.

use crate::egress::EgressPolicy;
use crate::ssh::{HostKey, SshPool, Target};

use super::{Credentials, ObjectInfo, Remote, Result, StorageError, parent, partial};
use crate::{Sink, Source};

pub struct Sftp {
    pool: SshPool,
    target: Target,
    directory: String,
}

impl Sftp {
    pub async fn open(
        remote: &Remote,
        credentials: &Credentials,
        host_key: HostKey,
        egress: &EgressPolicy,
    ) -> Result<Self> {
        let pool = SshPool::with_key(&credentials.secret)
            .map_err(|e| {
                StorageError::Invalid(format!("the SFTP target's private key cannot be used: {e}"))
            })?
            .with_egress(egress.clone());
        let target = Target {
            name: format!("sftp://{}:{}", remote.host, remote.port),
            host: remote.host.clone(),
            port: remote.port,
            user: credentials.user.clone(),
            host_key,
        };
        let sftp = Sftp {
            pool,
            target,
            directory: remote.directory.trim_end_matches('/').to_string(),
        };
        // Log in now, so wrong credentials are reported by `open`.
        sftp.pool
            .sftp_session(&sftp.target)
            .await
            .map_err(|e| match e {
                crate::ssh::SshError::Auth { .. } => StorageError::Denied(e.to_string()),
                other => StorageError::Failed(other.to_string()),
            })?;
        Ok(sftp)
    }

    fn path(&self, key: &str) -> String {
        format!("{}/{key}", self.directory)
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> StorageError {
        StorageError::Failed(format!("SFTP {what} at {}: {e}", self.target.name))
    }

    pub async fn put(&self, key: &str, data: Source<'_>) -> Result<ObjectInfo> {
        let sftp = self
            .pool
            .sftp_session(&self.target)
            .await
            .map_err(|e| self.failed("session", e))?;
        if let Some(dir) = parent(key) {
            let mut path = self.directory.clone();
            for part in dir.split('/') {
                path = format!("{path}/{part}");
                if sftp.try_exists(&path).await.unwrap_or(false) {
                    continue;
                }
                sftp.create_dir(&path)
                    .await
                    .map_err(|e| self.failed(&format!("creating {path}"), e))?;
            }
        }
        let part = self.path(&partial(key));
        let size = match self.pool.upload(&self.target, data, &part, 0o600).await {
            Ok(size) => size,
            Err(e) => {
                let _ = sftp.remove_file(&part).await;
                return Err(self.failed(&format!("upload of {key}"), e));
            }
        };
        let path = self.path(key);
        // SFTP's rename refuses an existing target: replacing an object removes it first.
        if sftp.try_exists(&path).await.unwrap_or(false) {
            let _ = sftp.remove_file(&path).await;
        }
        sftp.rename(&part, &path)
            .await
            .map_err(|e| self.failed(&format!("upload of {key}"), e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size,
            modified: None,
        })
    }

    pub async fn get(&self, key: &str, sink: Sink<'_>) -> Result<u64> {
        if self.head(key).await?.is_none() {
            return Err(StorageError::NotFound(format!(
                "SFTP download of {key} at {}: no such object",
                self.target.name
            )));
        }
        self.pool
            .download(&self.target, &self.path(key), sink)
            .await
            .map_err(|e| self.failed(&format!("download of {key}"), e))
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let sftp = self
            .pool
            .sftp_session(&self.target)
            .await
            .map_err(|e| self.failed("session", e))?;
        let path = self.path(key);
        if !sftp
            .try_exists(&path)
            .await
            .map_err(|e| self.failed("lookup", e))?
        {
            return Ok(None);
        }
        let meta = sftp
            .metadata(&path)
            .await
            .map_err(|e| self.failed(&format!("lookup of {key}"), e))?;
        Ok(Some(ObjectInfo {
            key: key.to_string(),
            size: meta.size.unwrap_or(0),
            modified: meta.mtime.map(u64::from),
        }))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let sftp = self
            .pool
            .sftp_session(&self.target)
            .await
            .map_err(|e| self.failed("session", e))?;
        let dir = parent(prefix);
        let path = match dir {
            Some(dir) => self.path(dir),
            None => self.directory.clone(),
        };
        if !sftp
            .try_exists(&path)
            .await
            .map_err(|e| self.failed("listing", e))?
        {
            return Ok(Vec::new());
        }
        let entries = sftp
            .read_dir(&path)
            .await
            .map_err(|e| self.failed("listing", e))?;
        let mut objects = Vec::new();
        for entry in entries {
            let meta = entry.metadata();
            if meta.is_dir() {
                continue;
            }
            let key = match dir {
                Some(dir) => format!("{dir}/{}", entry.file_name()),
                None => entry.file_name(),
            };
            if key.starts_with(prefix) {
                objects.push(ObjectInfo {
                    key,
                    size: meta.size.unwrap_or(0),
                    modified: meta.mtime.map(u64::from),
                });
            }
        }
        Ok(objects)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let sftp = self
            .pool
            .sftp_session(&self.target)
            .await
            .map_err(|e| self.failed("session", e))?;
        sftp.remove_file(self.path(key))
            .await
            .map_err(|e| self.failed(&format!("deletion of {key}"), e))
    }
}
