//! FTP through suppaftp's tokio client: one logged-in control connection per [`Ftp`], passive
//! data connections, binary transfers streamed in chunks. An upload goes to `<key>.part` and is
//! renamed when complete, so a broken transfer never looks like an object.

use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use tokio::sync::Mutex;

use super::{Credentials, ObjectInfo, Remote, Result, StorageError, copy, parent, partial};
use crate::{Sink, Source};

pub struct Ftp {
    stream: Mutex<AsyncFtpStream>,
    remote: Remote,
}

impl Ftp {
    fn error(&self, what: &str, err: suppaftp::FtpError) -> StorageError {
        let text = format!(
            "FTP {what} at {}:{}: {err}",
            self.remote.host, self.remote.port
        );
        match err {
            suppaftp::FtpError::UnexpectedResponse(r) if r.status.code() == 550 => {
                StorageError::NotFound(text)
            }
            _ => StorageError::Failed(text),
        }
    }

    pub async fn open(remote: &Remote, credentials: &Credentials) -> Result<Self> {
        let address = format!("{}:{}", remote.host, remote.port);
        let failed = |what: &str, e: suppaftp::FtpError| {
            StorageError::Failed(format!("FTP {what} at {address}: {e}"))
        };
        let mut stream = AsyncFtpStream::connect(&address)
            .await
            .map_err(|e| failed("connection", e))?;
        stream
            .login(credentials.user.as_str(), credentials.secret.as_str())
            .await
            .map_err(|e| {
                StorageError::Denied(format!(
                    "FTP login of {} at {address} refused: {e}",
                    credentials.user
                ))
            })?;
        stream
            .transfer_type(FileType::Binary)
            .await
            .map_err(|e| failed("binary mode", e))?;
        if !remote.directory.is_empty() {
            stream
                .cwd(&remote.directory)
                .await
                .map_err(|e| failed(&format!("directory {}", remote.directory), e))?;
        }
        Ok(Ftp {
            stream: Mutex::new(stream),
            remote: remote.clone(),
        })
    }

    pub async fn put(&self, key: &str, data: Source<'_>) -> Result<ObjectInfo> {
        let mut ftp = self.stream.lock().await;
        if let Some(dir) = parent(key) {
            let mut path = String::new();
            for part in dir.split('/') {
                path = if path.is_empty() {
                    part.to_string()
                } else {
                    format!("{path}/{part}")
                };
                // Exists already, or made now; a real failure shows in the upload below.
                let _ = ftp.mkdir(&path).await;
            }
        }
        let part = partial(key);
        let mut upload = ftp
            .put_with_stream(&part)
            .await
            .map_err(|e| self.error(&format!("upload of {key}"), e))?;
        let copied = copy(data, &mut upload).await;
        let finished = upload.finish().await;
        let outcome = match (copied, finished) {
            (Err(e), _) => Err(StorageError::Failed(format!("FTP upload of {key}: {e}"))),
            (Ok(_), Err(e)) => Err(self.error(&format!("upload of {key}"), e)),
            (Ok(size), Ok(())) => ftp
                .rename(part.as_str(), key)
                .await
                .map(|()| size)
                .map_err(|e| self.error(&format!("upload of {key}"), e)),
        };
        match outcome {
            Ok(size) => Ok(ObjectInfo {
                key: key.to_string(),
                size,
                modified: None,
            }),
            Err(e) => {
                let _ = ftp.rm(&part).await;
                Err(e)
            }
        }
    }

    pub async fn get(&self, key: &str, sink: Sink<'_>) -> Result<u64> {
        let mut ftp = self.stream.lock().await;
        let mut download = ftp
            .retr_as_stream(key)
            .await
            .map_err(|e| self.error(&format!("download of {key}"), e))?;
        let copied = copy(&mut download, sink).await;
        let finished = download.finish().await;
        let size =
            copied.map_err(|e| StorageError::Failed(format!("FTP download of {key}: {e}")))?;
        finished.map_err(|e| self.error(&format!("download of {key}"), e))?;
        Ok(size)
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let mut ftp = self.stream.lock().await;
        match ftp.size(key).await {
            Ok(size) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: size as u64,
                modified: None,
            })),
            Err(suppaftp::FtpError::UnexpectedResponse(r)) if r.status.code() == 550 => Ok(None),
            Err(e) => Err(self.error(&format!("lookup of {key}"), e)),
        }
    }

    /// Files of the prefix's directory whose key starts with the prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir = parent(prefix).map(str::to_string);
        let names = {
            let mut ftp = self.stream.lock().await;
            match ftp.nlst(dir.as_deref()).await {
                Ok(names) => names,
                Err(suppaftp::FtpError::UnexpectedResponse(r)) if r.status.code() == 550 => {
                    return Ok(Vec::new());
                }
                Err(e) => return Err(self.error("listing", e)),
            }
        };
        let mut objects = Vec::new();
        for name in names {
            let base = name.rsplit('/').next().unwrap_or(&name);
            let key = match &dir {
                Some(dir) => format!("{dir}/{base}"),
                None => base.to_string(),
            };
            if key.starts_with(prefix)
                && let Some(info) = self.head(&key).await?
            {
                objects.push(info);
            }
        }
        Ok(objects)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let mut ftp = self.stream.lock().await;
        ftp.rm(key)
            .await
            .map_err(|e| self.error(&format!("deletion of {key}"), e))
    }
}
