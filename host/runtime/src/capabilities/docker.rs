//! `docker`: containers of the run's environment on its server, through the SSH connection.
//! Capability `docker`. The fence (labels, name prefix, no privileged mode, no host network, bind
//! mounts only inside the environment's directory, by their real paths on the server) is
//! `berth_backends::docker::EnvDocker`'s; a request against it is answered `denied`.
//!
//! A hook (any plugin but the run's lifecycle) is fenced further: its bind mounts are read-only
//! (a container it could write a folder from could swap that folder for a link between Berth's
//! check and Docker's start), and it neither execs in nor reads from the database's container
//! (whose local socket trusts the superuser): its SQL goes through `database`, as its own role.

use berth_backends::docker::{self as backend, DockerError, EnvDocker, Scope};
use berth_backends::ssh::Stream;

use wasmtime::component::Resource;

use super::blobs::Blob;
use crate::bindings::Fault;
use crate::bindings::docker::{ContainerInfo, ContainerSpec, Host};
use crate::bindings::ssh::ExecResult;
use crate::bindings::types::{Error, Role};
use crate::grants::Capability;
use crate::runlog::OutputLines;
use crate::state::RunState;

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

    /// The hooks' fence around `name`: not the environment's database container.
    fn hook_may_enter(&self, call: &str, name: &str) -> Result<(), Fault> {
        if self.description.role == Role::Lifecycle {
            return Ok(());
        }
        let access = self.lent_ref::<super::ssh::ServerAccess>();
        let database = access.and_then(|a| a.database.as_ref());
        if database.is_some_and(|db| db.container == name) {
            return Err(Error::denied(format!(
                "{call}: {} may not enter the database's container {name:?}; its SQL goes \
                 through `database`, as the environment's hooks role",
                self.plugin
            ))
            .into());
        }
        Ok(())
    }

    fn env_docker(&self, access: super::ssh::ServerAccess) -> Result<EnvDocker, Fault> {
        let env = &self.env;
        let scope = Scope::environment(&env.organization, &env.project, &env.environment);
        EnvDocker::new(access.pool, access.target, scope).map_err(docker_fault)
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
        let docker = self.docker("docker.create")?;
        let writable = spec.mounts.iter().find(|m| !m.read_only);
        if let Some(mount) = writable
            && self.description.role != Role::Lifecycle
        {
            return Err(Error::denied(format!(
                "docker.create: {}'s bind mounts are read-only; {:?} asks to write",
                self.plugin, mount.source
            ))
            .into());
        }
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
        docker.create(&spec).await.map_err(docker_fault)
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
        self.hook_may_enter("docker.exec", &name)?;
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
        self.hook_may_enter("docker.archive", &name)?;
        // Found now, read when consumed: the tar streams into whatever consumes the blob.
        docker.inspect(&name).await.map_err(docker_fault)?;
        self.push_stream(
            move |mut pipe| async move { docker.archive(&name, &path, &mut pipe).await },
        )
    }
}

#[cfg(test)]
mod tests {
    //! The door of `docker` (its grant, its scope, the server the run lent), how Docker failures
    //! reach the plugin, and that the environment's fence answers `denied` before anything is
    //! sent to a server.

    use std::sync::Arc;

    use super::super::testing::{self, Run};
    use super::{ContainerSpec, DockerError, Error, Fault, RunState, docker_fault};
    use crate::bindings::docker::{self, Mount};

    async fn start(state: &mut RunState) -> Result<(), Fault> {
        docker::Host::start(state, "odoo".into()).await
    }

    async fn list(state: &mut RunState) -> Result<Vec<docker::ContainerInfo>, Fault> {
        docker::Host::list_containers(state).await
    }

    async fn archive(
        state: &mut RunState,
    ) -> Result<wasmtime::component::Resource<super::Blob>, Fault> {
        docker::Host::archive(state, "odoo".into(), "/var/lib/odoo".into()).await
    }

    fn spec(name: &str, mounts: Vec<Mount>, networks: Vec<String>) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: "odoo:17".into(),
            command: vec![],
            env: vec![],
            mounts,
            networks,
            ports: vec![],
            restart_policy: None,
            labels: vec![],
        }
    }

    #[tokio::test]
    async fn a_call_without_the_grant_is_denied_and_audited() {
        testing::assert_denied_without_grant("docker", "docker.start", start).await;
        testing::assert_denied_without_grant("docker", "docker.list-containers", list).await;
        testing::assert_denied_without_grant("docker", "docker.archive", archive).await;
    }

    #[tokio::test]
    async fn a_grant_for_another_scope_does_not_count() {
        testing::assert_other_scopes_do_not_count("docker", "docker.start", start).await;
        testing::assert_other_scopes_do_not_count("docker", "docker.archive", archive).await;
    }

    #[tokio::test]
    async fn a_run_without_a_server_answers_unsupported() {
        let missing = "this run has no server";
        testing::assert_unsupported_when_nothing_lent("docker", "docker.start", missing, start)
            .await;
        testing::assert_unsupported_when_nothing_lent(
            "docker",
            "docker.list-containers",
            missing,
            list,
        )
        .await;
        testing::assert_unsupported_when_nothing_lent("docker", "docker.archive", missing, archive)
            .await;
    }

    /// A hook granted `docker` ran `psql -U postgres` in the database's container (whose local
    /// socket trusts the superuser), and could race a link under a folder its own container
    /// wrote to. A hook's bind mounts are read-only, and the database's container is not its.
    #[tokio::test]
    async fn a_hook_neither_writes_through_bind_mounts_nor_enters_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let database = berth_backends::database::DbAccess {
            host: String::new(),
            port: 5432,
            user: "postgres".into(),
            password: "secret".into(),
            container: "db".into(),
        };
        let run = Run::hook()
            .granted("docker")
            .lend(Arc::new(testing::server_access(dir.path(), Some(database))));
        let writable = Mount {
            source: "data".into(),
            target: "/mnt".into(),
            read_only: false,
        };
        let err = testing::guest_error(
            docker::Host::create(&mut run.state(), spec("swap", vec![writable], vec![])).await,
        );
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("read-only")),
            "{err:?}"
        );
        let argv = vec!["psql".to_string(), "-U".into(), "postgres".into()];
        let err = testing::guest_error(
            docker::Host::exec(&mut run.state(), "db".into(), argv, Some("postgres".into())).await,
        );
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("database's container")),
            "{err:?}"
        );
        let err = testing::guest_error(
            docker::Host::archive(&mut run.state(), "db".into(), "/var/lib/postgresql".into())
                .await,
        );
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("database's container")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn the_fence_answers_before_the_server_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::lifecycle()
            .granted("docker")
            .lend(Arc::new(testing::server_access(dir.path(), None)));
        let mount = |source: &str| Mount {
            source: source.into(),
            target: "/mnt".into(),
            read_only: true,
        };
        let outside = spec("odoo", vec![mount("/etc")], vec![]);
        let err = testing::guest_error(docker::Host::create(&mut run.state(), outside).await);
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("\"/etc\"")),
            "a bind mount outside the environment: {err:?}"
        );
        let host_network = spec("odoo", vec![], vec!["host".into()]);
        let err = testing::guest_error(docker::Host::create(&mut run.state(), host_network).await);
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("\"host\"")),
            "the host network: {err:?}"
        );
        let bad_name = spec("Odoo Server", vec![], vec![]);
        let err = testing::guest_error(docker::Host::create(&mut run.state(), bad_name).await);
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    }

    #[test]
    fn docker_errors_map_to_the_error_a_plugin_can_act_on() {
        let map = |err: DockerError| match docker_fault(err) {
            Fault::Guest(err) => (err.kind(), err.message().to_string()),
            Fault::Trap(trap) => panic!("a Docker error must not trap: {trap:#}"),
        };
        assert_eq!(
            map(DockerError::NotFound("no container odoo".into())),
            ("not-found", "no container odoo".into())
        );
        assert_eq!(map(DockerError::Invalid("bad".into())).0, "invalid");
        assert_eq!(map(DockerError::Refused("privileged".into())).0, "denied");
        assert_eq!(map(DockerError::Failed("daemon".into())).0, "failed");
    }
}
