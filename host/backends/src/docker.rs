//! Docker on a managed server, reached through the SSH connection (bollard over a forwarded
//! `/var/run/docker.sock`), and fenced to one environment.
//!
//! Each HTTP request to the Docker API opens a direct-streamlocal channel on the pooled SSH
//! connection and speaks HTTP/1.1 over it (upgrades kept for exec/attach), so the server needs no
//! open Docker port and Berth needs no `docker` binary.
//!
//! [`EnvDocker`] is the only way plugins reach Docker: every container, volume and network it
//! creates is named with the environment's prefix and carries labels naming the organization,
//! project and environment; it sees only containers with those labels (others are "not found");
//! it never asks for privileged mode, host networking, or a bind mount outside the environment's
//! directory on the server.
//!
//! That directory holds what tenants commit (a repository may contain a link `x -> /`), so a bind
//! mount's source is checked by its real path: resolved on the server (`realpath`, every link
//! followed), checked against the directory again, and mounted as resolved. Docker resolves the
//! source once more whenever it starts the container, so [`EnvDocker::start`] and
//! [`EnvDocker::restart`] first check that every bind source still resolves to itself. What
//! remains is the race this cannot close: a path component replaced by a link between that check
//! and Docker's start, or before a start Docker makes on its own (a restart policy, the daemon
//! restarting), by whoever can write in the environment's directory — the platform's plugins and
//! holders of the server-wide `ssh.*` capabilities, and containers given a writable bind mount of
//! it (the platform's own plugins mount it read-only).

use std::collections::HashMap;
use std::sync::Arc;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerSummary, HostConfig, Mount, MountType, NetworkCreateRequest,
    RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions,
    InspectContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    RestartContainerOptions, StartContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ssh::{Command, Output, SshPool, Stream, TAIL, Target};

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The request is against the fence (privileged, host network, a mount outside the environment).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

fn failed(what: &str, err: bollard::errors::Error) -> DockerError {
    match err {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message,
        } => DockerError::NotFound(format!("{what}: {message}")),
        other => DockerError::Failed(format!("{what}: {other}")),
    }
}

/// A Docker client for `target`, every request tunnelled through `pool`.
pub fn connect(pool: Arc<SshPool>, target: Target) -> Result<Docker, DockerError> {
    const SOCKET: &str = "/var/run/docker.sock";
    let transport = move |request: bollard::BollardRequest| {
        let (pool, target) = (pool.clone(), target.clone());
        async move {
            let io_error = |e: String| bollard::errors::Error::IOError {
                err: std::io::Error::other(e),
            };
            let stream = pool
                .open_socket(&target, SOCKET)
                .await
                .map_err(|e| io_error(e.to_string()))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| io_error(format!("HTTP over SSH to {SOCKET}: {e}")))?;
            tokio::spawn(connection.with_upgrades());
            let (mut parts, body) = request.into_parts();
            // bollard builds absolute URIs; the socket wants origin-form with a Host header.
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            parts.uri = path
                .parse()
                .map_err(|e| io_error(format!("bad request path {path}: {e}")))?;
            parts.headers.insert(
                hyper::header::HOST,
                hyper::header::HeaderValue::from_static("docker"),
            );
            sender
                .send_request(hyper::Request::from_parts(parts, body))
                .await
                .map_err(|err| bollard::errors::Error::HyperResponseError { err })
        }
    };
    Docker::connect_with_custom_transport(
        transport,
        Some("http://docker"),
        300,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| DockerError::Failed(format!("cannot set up Docker over SSH: {e}")))
}

/// Which environment the fence is drawn around.
#[derive(Clone, Debug)]
pub struct Scope {
    pub organization: String,
    pub project: String,
    pub environment: String,
    /// The environment's directory on the server; bind mounts must stay inside it.
    pub root: String,
}

/// Where environments live on a server: `<ENVIRONMENTS_ROOT>/<organization>/<project>/<environment>`.
pub const ENVIRONMENTS_ROOT: &str = "/srv/berth";

impl Scope {
    /// The scope of one environment, with its directory under [`ENVIRONMENTS_ROOT`].
    pub fn environment(organization: &str, project: &str, environment: &str) -> Self {
        Scope {
            organization: organization.into(),
            project: project.into(),
            environment: environment.into(),
            root: format!("{ENVIRONMENTS_ROOT}/{organization}/{project}/{environment}"),
        }
    }

    /// The prefix of every name Berth gives this environment's objects: `berth.<org>.<project>.<env>`.
    /// Dots separate the parts because no name may contain one, so two environments never share a
    /// prefix (with dashes, `acme`/`shop-x` and `acme-shop`/`x` would).
    pub fn prefix(&self) -> String {
        format!(
            "berth.{}.{}.{}",
            self.organization, self.project, self.environment
        )
    }

    fn full_name(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix())
    }

    fn scope_label(&self) -> String {
        format!(
            "{}/{}/{}",
            self.organization, self.project, self.environment
        )
    }

    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            ("berth.scope".into(), self.scope_label()),
            ("berth.organization".into(), self.organization.clone()),
            ("berth.project".into(), self.project.clone()),
            ("berth.environment".into(), self.environment.clone()),
        ])
    }
}

/// A container Berth should create, in the environment's own terms (names without prefix).
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// (source, target, read-only): a volume name, or a path inside the environment's directory.
    pub mounts: Vec<(String, String, bool)>,
    pub networks: Vec<String>,
    /// (container port, port on the server's loopback): refused, see [`EnvDocker::create`].
    pub ports: Vec<(u16, u16)>,
    pub restart_policy: Option<String>,
    pub labels: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// The name without the environment prefix.
    pub name: String,
    pub image: String,
    pub state: String,
    pub running: bool,
    pub exit_code: Option<i32>,
    /// (network without prefix, address)
    pub addresses: Vec<(String, String)>,
}

fn is_short_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Lexically checks that `path` is absolute and stays inside `root` (no `..`, no `.`).
fn inside(root: &str, path: &str) -> bool {
    let clean = |p: &str| p.split('/').all(|c| c != ".." && c != ".");
    path.starts_with('/')
        && clean(path)
        && (path == root || path.starts_with(&format!("{}/", root.trim_end_matches('/'))))
}

/// Docker, fenced to one environment.
#[derive(Clone)]
pub struct EnvDocker {
    docker: Docker,
    scope: Scope,
    /// The server's own files, where bind-mount sources are resolved.
    pool: Arc<SshPool>,
    target: Target,
}

impl EnvDocker {
    /// Docker on `target` through `pool`, fenced to `scope`.
    pub fn new(pool: Arc<SshPool>, target: Target, scope: Scope) -> Result<Self, DockerError> {
        let docker = connect(pool.clone(), target.clone())?;
        Ok(EnvDocker {
            docker,
            scope,
            pool,
            target,
        })
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub async fn image_present(&self, image: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(failed(&format!("inspecting image {image}"), e)),
        }
    }

    /// Pulls `image` unless it is present; a pull that cannot reach a registry fails cleanly.
    pub async fn ensure_image(&self, image: &str) -> Result<(), DockerError> {
        if self.image_present(image).await? {
            return Ok(());
        }
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(progress) = pull.next().await {
            let progress =
                progress.map_err(|e| DockerError::Failed(format!("pulling {image}: {e}")))?;
            if let Some(err) = progress.error_detail.and_then(|d| d.message) {
                return Err(DockerError::Failed(format!("pulling {image}: {err}")));
            }
        }
        match self.image_present(image).await? {
            true => Ok(()),
            false => Err(DockerError::Failed(format!(
                "pulling {image} finished but the image is absent"
            ))),
        }
    }

    /// Creates a container for the environment; returns its id.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        if !is_short_name(&spec.name) {
            return Err(DockerError::Invalid(format!(
                "container name {:?} must be lowercase letters, digits and dashes",
                spec.name
            )));
        }
        let mut mounts = Vec::new();
        let binds: Vec<&str> = spec
            .mounts
            .iter()
            .map(|(source, _, _)| source.as_str())
            .filter(|source| source.contains('/'))
            .collect();
        let mut resolved = self.real_binds(&binds).await?.into_iter();
        for (source, target, read_only) in &spec.mounts {
            if !target.starts_with('/') {
                return Err(DockerError::Invalid(format!(
                    "mount target {target:?} must be an absolute path"
                )));
            }
            let mount = if source.contains('/') {
                let real = resolved.next().ok_or_else(|| {
                    DockerError::Failed(format!("{source:?} was not resolved on the server"))
                })?;
                Mount {
                    typ: Some(MountType::BIND),
                    source: Some(real),
                    target: Some(target.clone()),
                    read_only: Some(*read_only),
                    ..Default::default()
                }
            } else {
                if !is_short_name(source) {
                    return Err(DockerError::Invalid(format!(
                        "volume name {source:?} is not valid"
                    )));
                }
                let volume = self.scope.full_name(source);
                let created = self
                    .docker
                    .create_volume(VolumeCreateRequest {
                        name: Some(volume.clone()),
                        labels: Some(self.scope.labels()),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| failed(&format!("creating volume {volume}"), e))?;
                // Creating an existing volume returns it: it must be this environment's.
                if created.labels.get("berth.scope") != Some(&self.scope.scope_label()) {
                    return Err(DockerError::Refused(format!(
                        "volume {volume} exists and is not this environment's"
                    )));
                }
                Mount {
                    typ: Some(MountType::VOLUME),
                    source: Some(volume),
                    target: Some(target.clone()),
                    read_only: Some(*read_only),
                    ..Default::default()
                }
            };
            mounts.push(mount);
        }
        // A published port is a door on the server itself (a hook published 127.0.0.1:22): the
        // platform's proxy is the only way into an environment.
        if !spec.ports.is_empty() {
            return Err(DockerError::Refused(
                "published ports refused: an environment is reached through the platform's proxy"
                    .into(),
            ));
        }
        let mut networks = Vec::new();
        for network in &spec.networks {
            if matches!(network.as_str(), "host" | "none" | "bridge" | "default")
                || !is_short_name(network)
            {
                return Err(DockerError::Refused(format!(
                    "network {network:?} refused: containers join only their environment's own networks"
                )));
            }
            networks.push(self.ensure_network(network).await?);
        }
        let restart = match spec.restart_policy.as_deref() {
            None | Some("no") => RestartPolicyNameEnum::NO,
            Some("always") => RestartPolicyNameEnum::ALWAYS,
            Some("unless-stopped") => RestartPolicyNameEnum::UNLESS_STOPPED,
            Some("on-failure") => RestartPolicyNameEnum::ON_FAILURE,
            Some(other) => {
                return Err(DockerError::Invalid(format!(
                    "unknown restart policy {other:?}"
                )));
            }
        };
        let mut labels = self.scope.labels();
        for (key, value) in &spec.labels {
            if key.starts_with("berth.") {
                return Err(DockerError::Refused(format!(
                    "label {key:?} is reserved for Berth"
                )));
            }
            labels.insert(key.clone(), value.clone());
        }
        let host_config = HostConfig {
            mounts: Some(mounts),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            // No network named: no network at all, never Docker's default bridge.
            network_mode: Some(networks.first().cloned().unwrap_or_else(|| "none".into())),
            privileged: Some(false),
            ..Default::default()
        };
        // On its environment's networks a container answers to its short name too, so the
        // environment's other containers reach it as e.g. `db` without knowing Berth's prefix.
        let endpoint = || bollard::models::EndpointSettings {
            aliases: Some(vec![spec.name.clone()]),
            ..Default::default()
        };
        let networking_config = networks
            .first()
            .map(|first| bollard::models::NetworkingConfig {
                endpoints_config: Some(HashMap::from([(first.clone(), endpoint())])),
            });
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            networking_config,
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = self.scope.full_name(&spec.name);
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| failed(&format!("creating container {}", spec.name), e))?;
        for network in networks.iter().skip(1) {
            let connect = bollard::models::NetworkConnectRequest {
                container: created.id.clone(),
                endpoint_config: Some(endpoint()),
            };
            self.docker
                .connect_network(network, connect)
                .await
                .map_err(|e| failed(&format!("attaching {} to {network}", spec.name), e))?;
        }
        Ok(created.id)
    }

    /// Where each bind-mount source really is on the server, each checked to be inside the
    /// environment's directory: by its spelling first, then by its real path (the directory's own
    /// real path: `/srv` may be a link on a server).
    async fn real_binds(&self, sources: &[&str]) -> Result<Vec<String>, DockerError> {
        let root = &self.scope.root;
        if let Some(source) = sources.iter().find(|s| !inside(root, s)) {
            return Err(DockerError::Refused(format!(
                "bind mount of {source:?} refused: only paths inside the environment's directory \
                 {root} may be mounted"
            )));
        }
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let mut real = self.real_paths(root, sources).await?;
        let real_root = real.remove(0);
        for (source, real) in sources.iter().zip(&real) {
            if !inside(&real_root, real) {
                return Err(DockerError::Refused(format!(
                    "bind mount of {source:?} refused: it resolves to {real:?} on the server, \
                     outside the environment's directory {root}"
                )));
            }
        }
        Ok(real)
    }

    /// Where `root` and each of `paths` really are on the server, every link followed
    /// (`realpath -e`, one argv); a path that does not exist is an error naming it.
    async fn real_paths(&self, root: &str, paths: &[&str]) -> Result<Vec<String>, DockerError> {
        let argv = ["realpath", "-e", "-z", "--", root]
            .into_iter()
            .chain(paths.iter().copied());
        let output = self
            .pool
            .exec(&self.target, &Command::new(argv), &mut |_, _| {})
            .await
            .map_err(|e| DockerError::Failed(format!("resolving bind-mount sources: {e}")))?;
        if output.status != 0 {
            return Err(DockerError::Invalid(format!(
                "bind-mount source {} on the server: {}",
                paths.join(", "),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let real: Vec<String> = output
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        if real.len() != paths.len() + 1 {
            return Err(DockerError::Failed(format!(
                "resolving bind-mount sources: {} paths asked, {} answered",
                paths.len() + 1,
                real.len()
            )));
        }
        Ok(real)
    }

    /// Refuses to (re)start container `full` unless every bind source it has still resolves to
    /// itself inside the environment's directory: Docker follows a link put in its place since
    /// the container was created.
    async fn check_binds(&self, name: &str, full: &str) -> Result<(), DockerError> {
        let container = self
            .docker
            .inspect_container(full, None::<InspectContainerOptions>)
            .await
            .map_err(|e| failed(&format!("inspecting {name}"), e))?;
        let sources: Vec<String> = container
            .host_config
            .and_then(|h| h.mounts)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.typ == Some(MountType::BIND))
            .filter_map(|m| m.source)
            .collect();
        let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
        let real = self.real_binds(&sources).await?;
        for (source, real) in sources.iter().zip(&real) {
            if source != real {
                return Err(DockerError::Refused(format!(
                    "{name} not started: its bind mount of {source:?} now resolves to {real:?} \
                     (a link replaced part of the path)"
                )));
            }
        }
        Ok(())
    }

    /// The full name of the environment's network `name`, created (labelled) if missing.
    pub async fn ensure_network(&self, name: &str) -> Result<String, DockerError> {
        let full = self.scope.full_name(name);
        if self.docker.inspect_network(&full, None).await.is_ok() {
            return Ok(full);
        }
        let request = NetworkCreateRequest {
            name: full.clone(),
            labels: Some(self.scope.labels()),
            ..Default::default()
        };
        self.docker
            .create_network(request)
            .await
            .map_err(|e| failed(&format!("creating network {name}"), e))?;
        Ok(full)
    }

    /// Resolves one of the environment's containers; anything else is "not found".
    async fn resolve(&self, name: &str) -> Result<String, DockerError> {
        let not_found =
            || DockerError::NotFound(format!("the environment has no container named {name:?}"));
        if !is_short_name(name) {
            return Err(not_found());
        }
        let full = self.scope.full_name(name);
        match self
            .docker
            .inspect_container(&full, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => {
                let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
                match labels.get("berth.scope") {
                    Some(scope) if *scope == self.scope.scope_label() => Ok(full),
                    _ => Err(not_found()),
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(not_found()),
            Err(e) => Err(failed(&format!("inspecting {name}"), e)),
        }
    }

    /// Starts one of the environment's containers, once its bind mounts are checked again.
    pub async fn start(&self, name: &str) -> Result<(), DockerError> {
        let full = self.resolve(name).await?;
        self.check_binds(name, &full).await?;
        self.docker
            .start_container(&full, None::<StartContainerOptions>)
            .await
            .map_err(|e| failed(&format!("starting {name}"), e))
    }

    pub async fn stop(&self, name: &str, timeout_secs: Option<u32>) -> Result<(), DockerError> {
        let full = self.resolve(name).await?;
        let options = StopContainerOptions {
            t: timeout_secs.map(|t| t as i32),
            ..Default::default()
        };
        match self.docker.stop_container(&full, Some(options)).await {
            // 304: already stopped — stopping is idempotent.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(failed(&format!("stopping {name}"), e)),
        }
    }

    /// Restarts one of the environment's containers, once its bind mounts are checked again.
    pub async fn restart(&self, name: &str) -> Result<(), DockerError> {
        let full = self.resolve(name).await?;
        self.check_binds(name, &full).await?;
        self.docker
            .restart_container(&full, None::<RestartContainerOptions>)
            .await
            .map_err(|e| failed(&format!("restarting {name}"), e))
    }

    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let full = self.resolve(name).await?;
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        self.docker
            .remove_container(&full, Some(options))
            .await
            .map_err(|e| failed(&format!("removing {name}"), e))
    }

    pub async fn inspect(&self, name: &str) -> Result<ContainerInfo, DockerError> {
        let full = self.resolve(name).await?;
        let c = self
            .docker
            .inspect_container(&full, None::<InspectContainerOptions>)
            .await
            .map_err(|e| failed(&format!("inspecting {name}"), e))?;
        let state = c.state.unwrap_or_default();
        let prefix = format!("{}.", self.scope.prefix());
        let addresses = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .map(|(net, endpoint)| {
                let net = net.strip_prefix(&prefix).map(str::to_string).unwrap_or(net);
                (net, endpoint.ip_address.unwrap_or_default())
            })
            .collect();
        Ok(ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: name.to_string(),
            image: c.config.and_then(|c| c.image).unwrap_or_default(),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code.map(|c| c as i32),
            addresses,
        })
    }

    /// The environment's containers (running or not).
    pub async fn list(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("berth.scope={}", self.scope.scope_label())],
            )])),
            ..Default::default()
        };
        let containers: Vec<ContainerSummary> = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| failed("listing containers", e))?;
        let prefix = format!("/{}.", self.scope.prefix());
        let mut out = Vec::new();
        for c in containers {
            let Some(name) = c
                .names
                .unwrap_or_default()
                .iter()
                .find_map(|n| n.strip_prefix(&prefix).map(str::to_string))
            else {
                continue;
            };
            out.push(self.inspect(&name).await?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Streams `path` inside one of the environment's containers into `sink` as a tar archive
    /// (Docker's archive API: the path's last component is the archive's top folder). Works on a
    /// stopped container too, and needs no `tar` on the server. Returns the bytes written.
    pub async fn archive(
        &self,
        name: &str,
        path: &str,
        sink: crate::Sink<'_>,
    ) -> Result<u64, DockerError> {
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(DockerError::Invalid(format!(
                "{path:?} must be an absolute path without '..'"
            )));
        }
        let full = self.resolve(name).await?;
        let what = format!("archive of {path} in {name}");
        let options = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let mut stream = self.docker.download_from_container(&full, Some(options));
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| failed(&what, e))?;
            sink.write_all(&chunk)
                .await
                .map_err(|e| DockerError::Failed(format!("{what}: passing it on: {e}")))?;
            total += chunk.len() as u64;
        }
        sink.flush()
            .await
            .map_err(|e| DockerError::Failed(format!("{what}: passing it on: {e}")))?;
        Ok(total)
    }

    /// The last `tail` lines of a container's output, at most [`TAIL`] bytes.
    pub async fn logs(&self, name: &str, tail: u32) -> Result<String, DockerError> {
        let full = self.resolve(name).await?;
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(&full, Some(options));
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| failed(&format!("logs of {name}"), e))?;
            text.extend_from_slice(&chunk.into_bytes());
            if text.len() > TAIL {
                text.drain(..text.len() - TAIL);
            }
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// Runs `argv` in one of the environment's running containers.
    pub async fn exec(
        &self,
        name: &str,
        argv: &[String],
        user: Option<&str>,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, DockerError> {
        self.exec_io(name, argv, user, None, None, sink).await
    }

    /// Runs `argv` in a container, feeding it `stdin` (streamed, in chunks) while its output is
    /// streamed into `sink`. With `stdout`, standard output is piped there instead (awaited, so a
    /// slow consumer holds the command back) and not kept in the returned tail.
    pub async fn exec_io(
        &self,
        name: &str,
        argv: &[String],
        user: Option<&str>,
        stdin: Option<crate::Source<'_>>,
        mut stdout_pipe: Option<crate::Sink<'_>>,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, DockerError> {
        if argv.is_empty() {
            return Err(DockerError::Invalid("the argv is empty".into()));
        }
        let full = self.resolve(name).await?;
        let config = CreateExecOptions {
            cmd: Some(argv.to_vec()),
            attach_stdin: Some(stdin.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            user: user.map(str::to_string),
            ..Default::default()
        };
        let what = format!("exec in {name}");
        let exec = self
            .docker
            .create_exec(&full, config)
            .await
            .map_err(|e| failed(&what, e))?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if let StartExecResults::Attached {
            mut output,
            mut input,
        } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| failed(&what, e))?
        {
            let feed = async {
                if let Some(stdin) = stdin {
                    let mut chunk = vec![0u8; 256 << 10];
                    loop {
                        let n = stdin.read(&mut chunk).await?;
                        if n == 0 {
                            break;
                        }
                        input.write_all(&chunk[..n]).await?;
                    }
                }
                input.shutdown().await
            };
            let drain = async {
                while let Some(chunk) = output.next().await {
                    let (stream, buf, data) = match chunk.map_err(|e| failed(&what, e))? {
                        LogOutput::StdErr { message } => (Stream::Stderr, &mut stderr, message),
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            (Stream::Stdout, &mut stdout, message)
                        }
                        LogOutput::StdIn { .. } => continue,
                    };
                    if stream == Stream::Stdout
                        && let Some(pipe) = stdout_pipe.as_mut()
                    {
                        pipe.write_all(&data).await.map_err(|e| {
                            DockerError::Failed(format!("{what}: passing its output on: {e}"))
                        })?;
                        continue;
                    }
                    sink(stream, &data);
                    buf.extend_from_slice(&data);
                    if buf.len() > TAIL {
                        buf.drain(..buf.len() - TAIL);
                    }
                }
                if let Some(pipe) = stdout_pipe.as_mut() {
                    pipe.flush().await.map_err(|e| {
                        DockerError::Failed(format!("{what}: passing its output on: {e}"))
                    })?;
                }
                Ok::<(), DockerError>(())
            };
            let (fed, drained) = tokio::join!(feed, drain);
            drained?;
            fed.map_err(|e| DockerError::Failed(format!("{what}: feeding its input: {e}")))?;
        }
        let inspected = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| failed(&what, e))?;
        Ok(Output {
            status: inspected.exit_code.unwrap_or(-1) as i32,
            stdout,
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_mounts_stay_inside_the_environment_directory() {
        let root = "/srv/berth/acme/shop/staging";
        assert!(inside(root, "/srv/berth/acme/shop/staging/filestore"));
        assert!(inside(root, root));
        assert!(!inside(root, "/"));
        assert!(!inside(root, "/srv/berth/acme/shop/staging-2/x"));
        assert!(!inside(root, "/srv/berth/acme/shop/staging/../production"));
        assert!(!inside(root, "relative/path"));
    }
}
