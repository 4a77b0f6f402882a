//! SSH to the servers Berth manages (russh): the transport every other primitive rides on.
//!
//! - One multiplexed connection per server, reused across calls and runs; a connection found closed
//!   (or dropped under a running command) is replaced on the next call.
//! - Host keys are pinned per server record, never in a file shared by every tenant: a [`Target`]
//!   carries its record's pin, or the record to pin the first contact's key on; a different key is
//!   refused with both fingerprints in the error, and a cached connection is reused only while the
//!   key it was opened with is still the pin.
//! - Commands are argv: each element is quoted for the remote shell, so what a plugin passes reaches
//!   the program as exactly one argument and is never re-interpreted. Running a script through
//!   `sh -c` is a separate, explicit call.
//! - Output is streamed to a sink as it arrives and only bounded tails are kept; every call has a
//!   timeout after which the remote process is signalled and the channel closed.
//! - Files move over SFTP as streams, so their size never matters to the host's memory.

use crate::egress::EgressPolicy;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};

#[derive(Clone, Copy)]
enum Forward<'a> {
    Socket(&'a str),
    Tcp(&'a str, u16),
}

/// A forwarded byte stream (Unix socket or TCP) through an SSH connection.
pub type ChannelStream = russh::ChannelStream<client::Msg>;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where a server is, who Berth logs in as, and which host key it must offer.
#[derive(Clone, Debug)]
pub struct Target {
    /// The server's name in Berth (for messages).
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub host_key: HostKey,
}

impl Target {
    fn address(&self) -> Address {
        Address {
            name: self.name.clone(),
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}@{}:{})",
            self.name, self.user, self.host, self.port
        )
    }
}

/// What a pooled connection is kept under: one server record's address and login.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Address {
    name: String,
    host: String,
    port: u16,
    user: String,
}

/// The host key a server must offer: the pin on its record, or — until the first contact — the
/// record to pin the key it offers then.
#[derive(Clone)]
pub enum HostKey {
    /// An OpenSSH public key line (`ssh-ed25519 AAAA…`, with or without a comment).
    Pinned(String),
    /// Nothing pinned yet: the key the first contact offers is pinned on this record.
    FirstContact(Arc<dyn PinRecord>),
}

impl HostKey {
    /// The record's pin if it has one, else `record` to pin the first contact's key on.
    pub fn pinned_or(pin: Option<String>, record: impl FnOnce() -> Arc<dyn PinRecord>) -> Self {
        match pin {
            Some(pin) => HostKey::Pinned(pin),
            None => HostKey::FirstContact(record()),
        }
    }

    /// A pin learnt at the first contact and kept in memory ([`MemoryPin`]).
    pub fn first_contact_in_memory() -> Self {
        HostKey::FirstContact(Arc::new(MemoryPin::default()))
    }
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKey::Pinned(line) => write!(f, "Pinned({})", fingerprint_of(line)),
            HostKey::FirstContact(_) => f.write_str("FirstContact"),
        }
    }
}

/// Where one server's pin is kept (its record in the control plane's state).
pub trait PinRecord: Send + Sync {
    /// Pins `key` (an OpenSSH public key line) unless a key is pinned already; answers the key
    /// pinned now, which the server must have offered.
    fn pin(&self, key: &str) -> Result<String, String>;
}

/// A pin kept in memory for as long as it lives: the first key offered. For tools and tests; the
/// control plane pins on the server's record.
#[derive(Debug, Default)]
pub struct MemoryPin(Mutex<Option<String>>);

impl MemoryPin {
    /// The key pinned so far.
    pub fn pinned(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl PinRecord for MemoryPin {
    fn pin(&self, key: &str) -> Result<String, String> {
        let mut pin = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Ok(pin.get_or_insert_with(|| key.to_string()).clone())
    }
}

/// The SHA-256 fingerprint (`SHA256:…`, as OpenSSH prints it) of an OpenSSH public key line, or
/// why it is not one: for checking a pin before it is stored.
pub fn host_key_fingerprint(line: &str) -> Result<String, String> {
    PublicKey::from_openssh(line.trim())
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
        .map_err(|e| format!("not an OpenSSH public key (`ssh-ed25519 AAAA…`): {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "host key of {server} changed: pinned {pinned}, offered {offered}; refusing to connect \
         (if the server was rebuilt on purpose, replace the pin on its record)"
    )]
    HostKeyChanged {
        server: String,
        pinned: String,
        offered: String,
    },
    #[error("cannot pin the host key of {server}: {reason}")]
    Pin { server: String, reason: String },
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("{server} refused the key of Berth (public-key authentication failed)")]
    Auth { server: String },
    #[error("the connection to {server} dropped while running {what}")]
    Dropped { server: String, what: String },
    #[error("{what} on {server} did not finish within {after:?}; it was signalled and abandoned")]
    Timeout {
        server: String,
        what: String,
        after: Duration,
    },
    #[error("invalid command: {0}")]
    Invalid(String),
    #[error("{what} on {server}: {reason}")]
    Remote {
        server: String,
        what: String,
        reason: String,
    },
    #[error("cannot load the SSH key {path}: {reason}")]
    Key { path: String, reason: String },
}

/// Creates a new Ed25519 key pair at `path` (OpenSSH format, mode 0600; never overwrites) and
/// returns its public key as an `authorized_keys` line.
pub fn generate_key(path: &Path, comment: &str) -> Result<String, SshError> {
    use russh::keys::ssh_key::LineEnding;
    use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key_error = |reason: String| SshError::Key {
        path: path.display().to_string(),
        reason,
    };
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| key_error(format!("no randomness: {e}")))?;
    let keypair = KeypairData::Ed25519(Ed25519Keypair::from_seed(&seed));
    let private = PrivateKey::new(keypair, comment).map_err(|e| key_error(e.to_string()))?;
    let pem = private
        .to_openssh(LineEnding::LF)
        .map_err(|e| key_error(e.to_string()))?;
    let public = private
        .public_key()
        .to_openssh()
        .map_err(|e| key_error(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| key_error(e.to_string()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| key_error(e.to_string()))?;
    file.write_all(pem.as_bytes())
        .map_err(|e| key_error(e.to_string()))?;
    Ok(public)
}

/// The public key (an `authorized_keys` line) of the private key at `path`.
pub fn public_key(path: &Path) -> Result<String, SshError> {
    let key = russh::keys::load_secret_key(path, None).map_err(|e| SshError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    key.public_key().to_openssh().map_err(|e| SshError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Which stream a chunk of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A command to run on a server.
#[derive(Clone, Debug, Default)]
pub struct Command {
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

impl Command {
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Command {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// The line the remote shell receives: every piece quoted, so nothing is interpreted.
    pub fn to_remote_line(&self) -> Result<String, SshError> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(SshError::Invalid("the argv is empty".into()));
        }
        let all = self
            .argv
            .iter()
            .chain(self.cwd.iter())
            .chain(self.env.iter().map(|(_, v)| v));
        if all.into_iter().any(|s| s.contains('\0')) {
            return Err(SshError::Invalid(
                "arguments cannot contain NUL bytes".into(),
            ));
        }
        let mut line = String::new();
        if let Some(cwd) = &self.cwd {
            line.push_str(&format!("cd -- {} && ", quote(cwd)));
        }
        line.push_str("exec ");
        if !self.env.is_empty() {
            line.push_str("env -- ");
            for (name, value) in &self.env {
                if !is_env_name(name) {
                    return Err(SshError::Invalid(format!(
                        "{name:?} is not an environment variable name"
                    )));
                }
                line.push_str(&quote(&format!("{name}={value}")));
                line.push(' ');
            }
        }
        let argv: Vec<String> = self.argv.iter().map(|a| quote(a)).collect();
        line.push_str(&argv.join(" "));
        Ok(line)
    }

    /// A short description for messages: the program and the argument count.
    fn what(&self) -> String {
        match self.argv.first() {
            Some(program) => format!("`{program}` ({} arguments)", self.argv.len() - 1),
            None => "an empty command".into(),
        }
    }
}

/// POSIX shell quoting: safe characters pass, everything else is single-quoted.
pub fn quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// What a command left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The exit status; a process killed by a signal reports 128 + the signal's number.
    pub status: i32,
    /// The last [`TAIL`] bytes of each stream.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Bytes of each stream kept for the caller (all of it went to the sink).
pub const TAIL: usize = 64 << 10;

fn keep_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > TAIL {
        buf.drain(..buf.len() - TAIL);
    }
}

/// Checks the key `offered` by `server` against `host_key`, pinning it at the first contact.
fn verify(server: &str, host_key: &HostKey, offered: &PublicKey) -> Result<(), SshError> {
    let pinned = match host_key {
        HostKey::Pinned(line) => line.clone(),
        HostKey::FirstContact(record) => {
            let line = offered.to_openssh().map_err(|e| SshError::Pin {
                server: server.into(),
                reason: format!("unreadable host key: {e}"),
            })?;
            record.pin(&line).map_err(|reason| SshError::Pin {
                server: server.into(),
                reason,
            })?
        }
    };
    match same_key(&pinned, offered) {
        Some(true) => Ok(()),
        Some(false) => Err(SshError::HostKeyChanged {
            server: server.into(),
            pinned: fingerprint_of(&pinned),
            offered: offered.fingerprint(HashAlg::Sha256).to_string(),
        }),
        None => Err(SshError::Pin {
            server: server.into(),
            reason: format!(
                "the pinned host key is {}",
                host_key_fingerprint(&pinned).unwrap_err()
            ),
        }),
    }
}

/// Whether the pin `line` is the key `offered` (comments aside); `None` if `line` is no key.
fn same_key(line: &str, offered: &PublicKey) -> Option<bool> {
    PublicKey::from_openssh(line.trim())
        .ok()
        .map(|pinned| pinned.key_data() == offered.key_data())
}

fn fingerprint_of(openssh: &str) -> String {
    host_key_fingerprint(openssh).unwrap_or_else(|_| "an unreadable key".into())
}

struct Verifier {
    server: String,
    host_key: HostKey,
    /// The key the server offered, once accepted.
    accepted: Arc<Mutex<Option<PublicKey>>>,
    refusal: Arc<Mutex<Option<SshError>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = offered.public_key();
        match verify(&self.server, &self.host_key, &key) {
            Ok(()) => {
                *self.accepted.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
                Ok(true)
            }
            Err(refusal) => {
                *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(refusal);
                Ok(false)
            }
        }
    }
}

/// A pooled connection and the host key it was opened with.
struct Connection {
    handle: Arc<Handle<Verifier>>,
    host_key: PublicKey,
}

/// The connection to one server, if open; callers for that server wait on each other only.
type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// The SSH connections of one control plane.
pub struct SshPool {
    key: Arc<PrivateKey>,
    config: Arc<client::Config>,
    /// One slot per server: the map's lock is held only to find a slot, and a slot's lock while
    /// its server is connected to, so a server that never answers holds up only its own callers.
    connections: Mutex<HashMap<Address, Slot>>,
    opened: AtomicU64,
    connect_timeout: Duration,
    /// Where connections may go: every server's address is checked when it is connected to.
    egress: EgressPolicy,
}

/// Default per-call timeout of a command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

impl SshPool {
    /// A pool that authenticates with the private key in `key_path`. Each [`Target`] says which
    /// host key its server must offer.
    pub fn new(key_path: &Path) -> Result<Self, SshError> {
        let key = russh::keys::load_secret_key(key_path, None).map_err(|e| SshError::Key {
            path: key_path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_key(key))
    }

    /// A pool that authenticates with a private key given in OpenSSH format (e.g. a secret).
    pub fn with_key(key_openssh: &str) -> Result<Self, SshError> {
        let key = russh::keys::decode_secret_key(key_openssh, None).map_err(|e| SshError::Key {
            path: "(given key)".into(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: PrivateKey) -> Self {
        let config = client::Config {
            // Commands are small request/response exchanges: Nagle plus delayed ACKs would add
            // ~40 ms to each.
            nodelay: true,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            ..Default::default()
        };
        SshPool {
            key: Arc::new(key),
            config: Arc::new(config),
            connections: Default::default(),
            opened: AtomicU64::new(0),
            connect_timeout: Duration::from_secs(15),
            egress: EgressPolicy::open(),
        }
    }

    /// The pool with every connection checked by `egress` (resolved, each address checked, only
    /// checked addresses connected to). A new pool allows any address: the control plane sets
    /// the policy on the pools it uses for tenants.
    pub fn with_egress(mut self, egress: EgressPolicy) -> Self {
        self.egress = egress;
        self
    }

    /// A pool with the same key and settings but no connection yet: for a bulk stream
    /// that another transfer consumes at its own pace. SSH multiplexes channels over one TCP
    /// connection, and russh hands a channel's data to its reader through a bounded queue that
    /// the whole connection waits on (it opens the window on receipt, not on reading): a stream
    /// held back by its consumer would hold back every other channel of its connection — the
    /// very transfer that consumes it, when both run on one server.
    pub fn dedicated(&self) -> SshPool {
        SshPool {
            key: self.key.clone(),
            config: self.config.clone(),
            connections: Default::default(),
            opened: AtomicU64::new(0),
            connect_timeout: self.connect_timeout,
            egress: self.egress.clone(),
        }
    }

    /// How many connections this pool has opened (reuse shows as a low number).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// The live connection to `target`, opening one if there is none, it was closed, or it was
    /// opened with a key that is no longer `target`'s pin (the new connection is checked against
    /// the pin, so a changed key is refused).
    async fn connection(&self, target: &Target) -> Result<Arc<Handle<Verifier>>, SshError> {
        let slot = self.slot(target);
        let mut slot = slot.lock().await;
        if let Some(open) = slot.as_ref()
            && !open.handle.is_closed()
        {
            let still_pinned = match &target.host_key {
                HostKey::Pinned(pin) => same_key(pin, &open.host_key) == Some(true),
                HostKey::FirstContact(_) => true,
            };
            if still_pinned {
                return Ok(open.handle.clone());
            }
        }
        *slot = None;
        let open = self.connect(target).await?;
        let handle = open.handle.clone();
        *slot = Some(open);
        Ok(handle)
    }

    /// The slot of `target`'s server, made on first use.
    fn slot(&self, target: &Target) -> Slot {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.entry(target.address()).or_default().clone()
    }

    /// Forgets a connection that failed, so the next call reconnects.
    async fn forget(&self, target: &Target) {
        *self.slot(target).lock().await = None;
    }

    async fn connect(&self, target: &Target) -> Result<Connection, SshError> {
        let refusal = Arc::new(Mutex::new(None));
        let accepted = Arc::new(Mutex::new(None));
        let verifier = Verifier {
            server: target.to_string(),
            host_key: target.host_key.clone(),
            accepted: accepted.clone(),
            refusal: refusal.clone(),
        };
        let connect_error = |reason: String| SshError::Connect {
            server: target.to_string(),
            reason,
        };
        let addresses = self
            .egress
            .resolve(&target.host, target.port)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let connecting = client::connect(self.config.clone(), &addresses[..], verifier);
        let mut handle = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => {
                return Err(connect_error(format!(
                    "no answer within {:?}",
                    self.connect_timeout
                )));
            }
            Ok(Err(e)) => {
                if let Some(refusal) = refusal.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    return Err(refusal);
                }
                return Err(connect_error(e.to_string()));
            }
            Ok(Ok(handle)) => handle,
        };
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| connect_error(e.to_string()))?
            .flatten();
        let auth = handle
            .authenticate_publickey(
                &target.user,
                PrivateKeyWithHashAlg::new(self.key.clone(), hash),
            )
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        if !auth.success() {
            return Err(SshError::Auth {
                server: target.to_string(),
            });
        }
        let host_key = accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| connect_error("the server's host key was never checked".into()))?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Connection {
            handle: Arc::new(handle),
            host_key,
        })
    }

    /// Opens a session channel, reconnecting once if the cached connection turns out to be dead.
    async fn session(&self, target: &Target) -> Result<russh::Channel<client::Msg>, SshError> {
        for attempt in 0..2 {
            let handle = self.connection(target).await?;
            match handle.channel_open_session().await {
                Ok(channel) => return Ok(channel),
                // The cached connection may have died since it was last used: reconnect once.
                Err(_) if attempt == 0 => self.forget(target).await,
                Err(e) => {
                    return Err(SshError::Connect {
                        server: target.to_string(),
                        reason: format!("cannot open a channel: {e}"),
                    });
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Runs `command` on `target`, streaming its output into `sink` as it arrives.
    pub async fn exec(
        &self,
        target: &Target,
        command: &Command,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, SshError> {
        let line = command.to_remote_line()?;
        self.run_line(target, &line, &command.what(), command.timeout, sink)
            .await
    }

    /// Runs `script` with `sh -c` on `target` (the caller decides whether that is allowed).
    pub async fn shell(
        &self,
        target: &Target,
        script: &str,
        timeout: Option<Duration>,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, SshError> {
        let command = Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            timeout,
            ..Default::default()
        };
        let line = command.to_remote_line()?;
        self.run_line(target, &line, "a shell script", timeout, sink)
            .await
    }

    async fn run_line(
        &self,
        target: &Target,
        line: &str,
        what: &str,
        timeout: Option<Duration>,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, SshError> {
        let mut channel = self.session(target).await?;
        let remote = |reason: String| SshError::Remote {
            server: target.to_string(),
            what: what.to_string(),
            reason,
        };
        channel
            .exec(true, line)
            .await
            .map_err(|e| remote(e.to_string()))?;
        let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), None);
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        let waited = tokio::time::timeout(timeout, async {
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        sink(Stream::Stdout, &data);
                        keep_tail(&mut stdout, &data);
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        sink(Stream::Stderr, &data);
                        keep_tail(&mut stderr, &data);
                    }
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status as i32),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        status = Some(128 + signal_number(&signal_name))
                    }
                    _ => {}
                }
            }
        })
        .await;
        if waited.is_err() {
            // Best effort: the remote process should not outlive the call.
            let _ = channel.signal(Sig::KILL).await;
            let _ = channel.close().await;
            return Err(SshError::Timeout {
                server: target.to_string(),
                what: what.to_string(),
                after: timeout,
            });
        }
        match status {
            Some(status) => Ok(Output {
                status,
                stdout,
                stderr,
            }),
            None => {
                self.forget(target).await;
                Err(SshError::Dropped {
                    server: target.to_string(),
                    what: what.to_string(),
                })
            }
        }
    }

    /// A byte stream to the Unix socket `path` on `target` (e.g. `/var/run/docker.sock`).
    pub async fn open_socket(
        &self,
        target: &Target,
        path: &str,
    ) -> Result<ChannelStream, SshError> {
        self.open_forward(target, Forward::Socket(path)).await
    }

    /// A byte stream to `host:port` as seen from `target` (e.g. a database on a Docker network).
    pub async fn open_tcp(
        &self,
        target: &Target,
        host: &str,
        port: u16,
    ) -> Result<ChannelStream, SshError> {
        self.open_forward(target, Forward::Tcp(host, port)).await
    }

    /// Opens a forwarding channel, reconnecting once if the cached connection is dead.
    async fn open_forward(
        &self,
        target: &Target,
        to: Forward<'_>,
    ) -> Result<ChannelStream, SshError> {
        for attempt in 0..2 {
            let handle = self.connection(target).await?;
            let opened = match to {
                Forward::Socket(path) => handle.channel_open_direct_streamlocal(path).await,
                Forward::Tcp(host, port) => {
                    handle
                        .channel_open_direct_tcpip(host, port.into(), "127.0.0.1", 0)
                        .await
                }
            };
            match opened {
                Ok(channel) => return Ok(channel.into_stream()),
                Err(_) if attempt == 0 && handle.is_closed() => self.forget(target).await,
                Err(e) => {
                    let what = match to {
                        Forward::Socket(path) => path.to_string(),
                        Forward::Tcp(host, port) => format!("{host}:{port}"),
                    };
                    return Err(SshError::Remote {
                        server: target.to_string(),
                        what: format!("forwarding to {what}"),
                        reason: e.to_string(),
                    });
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// An SFTP session on `target` (a new channel of the pooled connection).
    pub async fn sftp_session(
        &self,
        target: &Target,
    ) -> Result<russh_sftp::client::SftpSession, SshError> {
        let channel = self.session(target).await?;
        let failed = |reason: String| SshError::Remote {
            server: target.to_string(),
            what: "SFTP".into(),
            reason,
        };
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| failed(e.to_string()))?;
        russh_sftp::client::SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| failed(e.to_string()))
    }

    /// Writes everything `data` yields to `path` on `target` with permissions `mode`.
    pub async fn upload(
        &self,
        target: &Target,
        data: crate::Source<'_>,
        path: &str,
        mode: u32,
    ) -> Result<u64, SshError> {
        let sftp = self.sftp_session(target).await?;
        let failed = |reason: String| SshError::Remote {
            server: target.to_string(),
            what: format!("upload to {path}"),
            reason,
        };
        // The mode from the start (a new file is created with it; an existing one gets it before
        // any byte is written): a file readable by its owner alone is never readable by others.
        use russh_sftp::protocol::{FileAttributes, OpenFlags};
        let mut attrs = FileAttributes::empty();
        attrs.permissions = Some(mode);
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        let mut file = sftp
            .open_with_flags_and_attributes(path, flags, attrs.clone())
            .await
            .map_err(|e| failed(e.to_string()))?;
        sftp.set_metadata(path, attrs)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut chunk = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            let n = data
                .read(&mut chunk)
                .await
                .map_err(|e| failed(format!("reading the data: {e}")))?;
            if n == 0 {
                break;
            }
            file.write_all(&chunk[..n])
                .await
                .map_err(|e| failed(e.to_string()))?;
            total += n as u64;
        }
        file.shutdown().await.map_err(|e| failed(e.to_string()))?;
        Ok(total)
    }

    /// The size of the file at `path` on `target` (an error naming it when it does not exist).
    pub async fn stat(&self, target: &Target, path: &str) -> Result<u64, SshError> {
        let sftp = self.sftp_session(target).await?;
        let meta = sftp.metadata(path).await.map_err(|e| SshError::Remote {
            server: target.to_string(),
            what: format!("lookup of {path}"),
            reason: e.to_string(),
        })?;
        Ok(meta.size.unwrap_or(0))
    }

    /// Streams the file at `path` on `target` into `sink`, chunk by chunk.
    pub async fn download(
        &self,
        target: &Target,
        path: &str,
        sink: crate::Sink<'_>,
    ) -> Result<u64, SshError> {
        let sftp = self.sftp_session(target).await?;
        let failed = |reason: String| SshError::Remote {
            server: target.to_string(),
            what: format!("download of {path}"),
            reason,
        };
        let mut file = sftp.open(path).await.map_err(|e| failed(e.to_string()))?;
        let mut chunk = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            let n = file
                .read(&mut chunk)
                .await
                .map_err(|e| failed(e.to_string()))?;
            if n == 0 {
                sink.flush()
                    .await
                    .map_err(|e| failed(format!("storing the data: {e}")))?;
                return Ok(total);
            }
            sink.write_all(&chunk[..n])
                .await
                .map_err(|e| failed(format!("storing the data: {e}")))?;
            total += n as u64;
        }
    }
}

fn signal_number(signal: &Sig) -> i32 {
    match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_every_argument_whole() {
        assert_eq!(quote("plain-arg_1.0"), "plain-arg_1.0");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /); `x`"), "'$(rm -rf /); `x`'");
    }

    #[test]
    fn the_remote_line_quotes_cwd_env_and_argv() {
        let cmd = Command {
            argv: vec!["printf".into(), "%s\n".into(), "a b".into()],
            cwd: Some("/srv/my env".into()),
            env: vec![("GREETING".into(), "hi there".into())],
            timeout: None,
        };
        assert_eq!(
            cmd.to_remote_line().unwrap(),
            "cd -- '/srv/my env' && exec env -- 'GREETING=hi there' printf '%s\n' 'a b'"
        );
        assert!(Command::new(Vec::<String>::new()).to_remote_line().is_err());
        let bad_env = Command {
            env: vec![("A;B".into(), "x".into())],
            ..Command::new(["true"])
        };
        assert!(bad_env.to_remote_line().is_err());
        assert!(
            Command::new(["echo", "nul\0byte"])
                .to_remote_line()
                .is_err()
        );
    }
}
