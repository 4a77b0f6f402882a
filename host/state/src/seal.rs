//! Secrets at rest: the environments' generated passwords and the storage targets' credentials
//! are sealed with AES-256-GCM before they reach `state.db`, under a key kept beside it in its own
//! file (`state.key`, mode 0600, created at the first open). A copy of the database alone — a
//! backup, a leaked file — holds no usable secret; keep the key file with it to restore.
//!
//! A sealed value is `sealed:v1:<hex of nonce ‖ ciphertext>`, with a fresh random nonce each time.
//! Values written before sealing existed are sealed when the store opens.
//!
//! Rotation (`berth secrets rotate-key`, control plane stopped): a new key is written to
//! `state.key.next`, every secret is resealed with it in one transaction, then the file replaces
//! `state.key`. A rotation cut short at any point completes at the next open: while a `.next` key
//! exists, values open with either key and are resealed with the new one.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aes_gcm::aead::{Aead, Generate, Key, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::{Result, StateError};

const PREFIX: &str = "sealed:v1:";
const NONCE: usize = 12;

/// The keys secrets open with; the first seals.
pub(crate) struct Sealer {
    ciphers: Vec<Aes256Gcm>,
}

/// Where a rotation's new key waits until every secret is resealed with it.
pub(crate) fn next_key_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("key.next")
}

impl Sealer {
    /// The key in `path` (created if missing), and the new key of a rotation in progress, which
    /// then seals.
    pub(crate) fn load(path: &Path) -> Result<Sealer> {
        let current = key_cipher(path, true)?;
        let next = next_key_path(path);
        let mut ciphers = Vec::new();
        if next.exists() {
            ciphers.push(key_cipher(&next, false)?);
        }
        ciphers.push(current);
        Ok(Sealer { ciphers })
    }

    /// Whether a rotation is waiting to complete.
    pub(crate) fn rotating(&self) -> bool {
        self.ciphers.len() > 1
    }

    /// Starts a rotation: a new key in `state.key.next`, which seals from now on.
    pub(crate) fn begin_rotation(&mut self, path: &Path) -> Result<()> {
        let next = next_key_path(path);
        if next.exists() {
            return Err(StateError::Invalid(format!(
                "{} exists: a rotation is already in progress (open the store to complete it)",
                next.display()
            )));
        }
        self.ciphers.insert(0, key_cipher(&next, true)?);
        Ok(())
    }

    /// Ends a rotation once every secret is sealed with the new key: it becomes `state.key`.
    pub(crate) fn finish_rotation(&mut self, path: &Path) -> Result<()> {
        std::fs::rename(next_key_path(path), path).map_err(|source| StateError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.ciphers.truncate(1);
        Ok(())
    }
}

/// The cipher of the key in `path`; with `create`, a new key (32 random bytes, mode 0600) when
/// the file does not exist.
fn key_cipher(path: &Path, create: bool) -> Result<Aes256Gcm> {
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    let key = match std::fs::File::open(path) {
        Ok(mut file) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io)?;
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
                StateError::Invalid(format!(
                    "{} is not a key of 32 bytes: the secrets in the state cannot be opened",
                    path.display()
                ))
            })?;
            Key::<Aes256Gcm>::from(bytes)
        }
        Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::<Aes256Gcm>::generate();
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(key.as_slice()).map_err(io)?;
            file.sync_all().map_err(io)?;
            key
        }
        Err(e) => return Err(io(e)),
    };
    Ok(Aes256Gcm::new(&key))
}

impl Sealer {
    /// A key that lives as long as the store: for in-memory stores.
    pub(crate) fn ephemeral() -> Sealer {
        Sealer {
            ciphers: vec![Aes256Gcm::new(&Key::<Aes256Gcm>::generate())],
        }
    }

    pub(crate) fn seal(&self, plain: &str) -> String {
        let nonce = Nonce::generate();
        let sealed = self.ciphers[0]
            .encrypt(&nonce, plain.as_bytes())
            .expect("AES-GCM seals any length a secret has");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{}", hex::encode(bytes))
    }

    /// The plain value of `stored`; a value from before sealing is returned as it is.
    pub(crate) fn open(&self, stored: &str) -> Result<String> {
        let Some(hexed) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let refuse = || {
            StateError::Invalid(
                "a sealed secret does not open with this key (was state.key replaced?)".into(),
            )
        };
        let bytes = hex::decode(hexed).map_err(|_| refuse())?;
        if bytes.len() < NONCE {
            return Err(refuse());
        }
        let (nonce, sealed) = bytes.split_at(NONCE);
        let nonce = Nonce::try_from(nonce).map_err(|_| refuse())?;
        let plain = self
            .ciphers
            .iter()
            .find_map(|cipher| cipher.decrypt(&nonce, sealed).ok())
            .ok_or_else(refuse)?;
        String::from_utf8(plain).map_err(|_| refuse())
    }

    pub(crate) fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::Sealer;

    #[test]
    fn sealed_values_open_with_their_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.key");
        let sealer = Sealer::load(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = sealer.seal("hunter22");
        assert!(Sealer::is_sealed(&sealed) && !sealed.contains("hunter22"));
        assert_ne!(sealed, sealer.seal("hunter22"), "a fresh nonce each time");
        let again = Sealer::load(&path).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "hunter22");
        assert_eq!(
            again.open("from before sealing").unwrap(),
            "from before sealing"
        );
        assert!(Sealer::ephemeral().open(&sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('0');
        assert!(again.open(&tampered).is_err() || tampered == sealed);
    }
}
