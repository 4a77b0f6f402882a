//! `docker`: containers of the run's environment on its server, through the SSH connection.
//! Capability `docker`. The fence (labels, name prefix, no privileged mode, no host network, bind
//! mounts only inside the environment's directory) is `berth_primitives::docker::EnvDocker`'s; a
//! request against it is answered `denied`.

use berth_primitives::docker::{self as backend, DockerError, EnvDocker, Scope};
use berth_primitives::ssh::Stream;

use wasmtime::component::Resource;

use super::blobs::Blob;
use crate::bindings::docker::{ContainerInfo, ContainerSpec, Host};
use crate::bindings::ssh::ExecResult;
use crate::bindings::types::Error;
use crate::grants::Capability;
use crate::runlog::OutputLines;
use crate::state::{Fault, RunState};

fn docker_fault(err: DockerError) -> Fault {
    Fault::Guest(match err {
        DockerError::NotFound(m) => Error::not_found(m),
        DockerError::Invalid(m) => Error::invalid(m),
        DockerError::Refused(m) => Error::denied(m),
        DockerError::Failed(m) => Error::failed(m),
    })
}

impl RunState {
    /// The door of every `docker` call: the grant, the run's server, the environment's fence.
    fn docker(&mut self, call: &str) -> Result<EnvDocker, Fault> {
        let access = self.server(&Capability::DOCKER, call)?;
        self.env_docker(access)
    }

    fn env_docker(&self, access: crate::invoke::ServerAccess) -> Result<EnvDocker, Fault> {
        let docker = backend::connect(access.pool, access.target).map_err(docker_fault)?;
        let env = &self.env;
        Ok(EnvDocker::new(
            docker,
            Scope::environment(&env.organization, &env.project, &env.environment),
        ))
    }
}

fn info(c: backend::ContainerInfo) -> ContainerInfo {
    ContainerInfo {
        id: c.id,
        name: c.name,
        image: c.image,
        state: c.state,
        running: c.running,
        exit_code: c.exit_code,
        addresses: c.addresses,
    }
}

impl Host for RunState {
    async fn image_present(&mut self, image: String) -> Result<bool, Fault> {
        self.docker("docker.image-present")?
            .image_present(&image)
            .await
            .map_err(docker_fault)
    }

    async fn ensure_image(&mut self, image: String) -> Result<(), Fault> {
        self.docker("docker.ensure-image")?
            .ensure_image(&image)
            .await
            .map_err(docker_fault)
    }

    async fn create(&mut self, spec: ContainerSpec) -> Result<String, Fault> {
        let spec = backend::ContainerSpec {
            name: spec.name,
            image: spec.image,
            command: spec.command,
            env: spec.env,
            mounts: spec
                .mounts
                .into_iter()
                .map(|m| (m.source, m.target, m.read_only))
                .collect(),
            networks: spec.networks,
            ports: spec.ports,
            restart_policy: spec.restart_policy,
            labels: spec.labels,
        };
        self.docker("docker.create")?
            .create(&spec)
            .await
            .map_err(docker_fault)
    }

    async fn start(&mut self, name: String) -> Result<(), Fault> {
        self.docker("docker.start")?
            .start(&name)
            .await
            .map_err(docker_fault)
    }

    async fn stop(&mut self, name: String, timeout: Option<u32>) -> Result<(), Fault> {
        self.docker("docker.stop")?
            .stop(&name, timeout)
            .await
            .map_err(docker_fault)
    }

    async fn restart(&mut self, name: String) -> Result<(), Fault> {
        self.docker("docker.restart")?
            .restart(&name)
            .await
            .map_err(docker_fault)
    }

    async fn remove(&mut self, name: String) -> Result<(), Fault> {
        self.docker("docker.remove")?
            .remove(&name)
            .await
            .map_err(docker_fault)
    }

    async fn inspect(&mut self, name: String) -> Result<ContainerInfo, Fault> {
        self.docker("docker.inspect")?
            .inspect(&name)
            .await
            .map(info)
            .map_err(docker_fault)
    }

    async fn list_containers(&mut self) -> Result<Vec<ContainerInfo>, Fault> {
        let containers = self
            .docker("docker.list-containers")?
            .list()
            .await
            .map_err(docker_fault)?;
        Ok(containers.into_iter().map(info).collect())
    }

    async fn logs(&mut self, name: String, tail: u32) -> Result<String, Fault> {
        self.docker("docker.logs")?
            .logs(&name, tail)
            .await
            .map_err(docker_fault)
    }

    async fn exec(
        &mut self,
        name: String,
        argv: Vec<String>,
        user: Option<String>,
    ) -> Result<ExecResult, Fault> {
        let docker = self.docker("docker.exec")?;
        let mut lines = OutputLines::new(self.log.clone(), format!("{} in {name}", self.plugin));
        let output = docker
            .exec(&name, &argv, user.as_deref(), &mut |stream, data| {
                lines.push(stream == Stream::Stderr, data)
            })
            .await;
        lines.finish();
        let output = output.map_err(docker_fault)?;
        Ok(ExecResult {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    async fn archive(&mut self, name: String, path: String) -> Result<Resource<Blob>, Fault> {
        let access = self.stream_server(&Capability::DOCKER, "docker.archive")?;
        let docker = self.env_docker(access)?;
        // Found now, read when consumed: the tar streams into whatever consumes the blob.
        docker.inspect(&name).await.map_err(docker_fault)?;
        let blob = Blob::stream(
            self.limits.blob_bytes,
            Box::new(move |mut pipe| {
                Box::pin(async move {
                    docker
                        .archive(&name, &path, &mut pipe)
                        .await
                        .map(drop)
                        .map_err(std::io::Error::other)
                })
            }),
        );
        self.push(blob)
    }
}
