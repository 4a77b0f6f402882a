//! FTP through suppaftp's tokio client: one logged-in control connection per [`Ftp`], passive
//! data connections, binary transfers streamed in chunks. An upload goes to `<key>.part` and is
//! renamed when complete, so a broken transfer never looks like an object.
//!
//! Explicit FTPS (RFC 4217) whenever the server offers it: `AUTH TLS` before the password is sent,
//! then `PROT P` so the data connections are encrypted too. A server offers TLS by accepting
//! `AUTH TLS`; only that refusal lets a connection go on in plain FTP. The server's certificate is
//! verified against the system's roots and the certificates the operator trusts for the target; a
//! certificate that does not verify is an error, never a fall back to plain FTP.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use suppaftp::Status;
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::tokio_rustls::TlsConnector;
use suppaftp::tokio_rustls::rustls::pki_types::CertificateDer;
use suppaftp::tokio_rustls::rustls::pki_types::pem::PemObject;
use suppaftp::tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};
use suppaftp::types::FileType;
use tokio::sync::Mutex;

use super::{Credentials, ObjectInfo, Remote, Result, StorageError, copy, parent, partial};
use crate::egress::EgressPolicy;
use crate::{Sink, Source};

/// When an FTP connection is encrypted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS when the server accepts `AUTH TLS`, plain FTP when it refuses it.
    #[default]
    WhenOffered,
    /// TLS or nothing: a server that does not offer it is an error.
    Required,
    /// Plain FTP, even when the server offers TLS.
    Off,
}

impl FromStr for TlsMode {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "when-offered" => Ok(TlsMode::WhenOffered),
            "required" => Ok(TlsMode::Required),
            "off" => Ok(TlsMode::Off),
            other => Err(StorageError::Invalid(format!(
                "FTP tls {other:?}: expected when-offered, required or off"
            ))),
        }
    }
}

/// How an FTP target's connections are secured: the mode, and certificates (PEM) trusted beside
/// the system's roots, for a server with a private CA or a self-signed certificate.
#[derive(Clone, Debug, Default)]
pub struct FtpTls {
    pub mode: TlsMode,
    pub trusted_pem: Option<String>,
}

impl FtpTls {
    fn connector(&self) -> Result<AsyncRustlsConnector> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        if let Some(pem) = &self.trusted_pem {
            let invalid = |e: &dyn std::fmt::Display| {
                StorageError::Invalid(format!("FTP trusted certificates (tls-ca): {e}"))
            };
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(cert.map_err(|e| invalid(&e))?)
                    .map_err(|e| invalid(&e))?;
                added += 1;
            }
            if added == 0 {
                return Err(invalid(&"no PEM certificate found"));
            }
        }
        let config =
            ClientConfig::builder_with_provider(Arc::new(crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| StorageError::Failed(format!("FTP TLS set-up: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(AsyncRustlsConnector::from(TlsConnector::from(Arc::new(
            config,
        ))))
    }
}

/// The machine's trusted roots, read once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

pub struct Ftp {
    stream: Mutex<AsyncRustlsFtpStream>,
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

    /// Logs in to `remote`, connecting only to addresses `egress` checked (the name is resolved
    /// once, here, and the connection goes to what was checked).
    pub async fn open(
        remote: &Remote,
        tls: &FtpTls,
        credentials: &Credentials,
        egress: &EgressPolicy,
    ) -> Result<Self> {
        let address = format!("{}:{}", remote.host, remote.port);
        let failed = |what: &str, e: suppaftp::FtpError| {
            StorageError::Failed(format!("FTP {what} at {address}: {e}"))
        };
        let checked = egress
            .resolve(&remote.host, remote.port)
            .await
            .map_err(|e| StorageError::Invalid(format!("FTP server {address}: {e}")))?;
        let connect = async || {
            let mut stream = AsyncRustlsFtpStream::connect(&checked[..])
                .await
                .map_err(|e| failed("connection", e))?;
            // Data connections go to the server the control connection reached, whatever address
            // its PASV answer names: a server must not send the control plane anywhere else.
            stream.set_passive_nat_workaround(true);
            Ok(stream)
        };
        let mut stream = connect().await?;
        if tls.mode != TlsMode::Off {
            // Asked, not read from FEAT (whose listing servers word many ways). Only a refusal of
            // AUTH itself means "not offered": nothing has been sent yet, so this connection goes
            // on in plain FTP. Once a server agrees, every later failure is fatal.
            match stream.custom_command("AUTH TLS", &[Status::AuthOk]).await {
                Ok(_) => {
                    // This connection now waits for a handshake suppaftp starts only with its
                    // own AUTH: a fresh connection makes it.
                    drop(stream);
                    stream = connect()
                        .await?
                        .into_secure(tls.connector()?, &remote.host)
                        .await
                        .map_err(|e| {
                            StorageError::Failed(format!(
                                "FTP TLS with {address} failed: {e} (a server with a private or \
                                 self-signed certificate needs it in the target's tls-ca \
                                 setting)"
                            ))
                        })?;
                }
                Err(suppaftp::FtpError::UnexpectedResponse(answer)) => {
                    if tls.mode == TlsMode::Required {
                        return Err(StorageError::Failed(format!(
                            "FTP server at {address} refuses AUTH TLS ({answer}), and the target \
                             requires TLS (tls = required)"
                        )));
                    }
                }
                Err(e) => return Err(failed("AUTH TLS", e)),
            }
        }
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

#[cfg(test)]
mod tests {
    use super::TlsMode;

    #[test]
    fn tls_modes_parse_and_name_the_choices() {
        assert_eq!("required".parse::<TlsMode>().unwrap(), TlsMode::Required);
        assert_eq!("off".parse::<TlsMode>().unwrap(), TlsMode::Off);
        assert_eq!(
            "when-offered".parse::<TlsMode>().unwrap(),
            TlsMode::WhenOffered
        );
        let err = "yes".parse::<TlsMode>().unwrap_err().to_string();
        assert!(err.contains("when-offered, required or off"), "{err}");
    }
}
