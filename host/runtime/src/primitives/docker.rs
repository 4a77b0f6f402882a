//! `docker`: declared in the contract; the backend (bollard over the SSH connection) is not built
//! yet, so each call is checked and answered `unsupported`.

use super::not_built_yet;
use crate::bindings::docker::{ContainerInfo, ContainerSpec, Host};
use crate::bindings::ssh::ExecResult;
use crate::grants::Capability;
use crate::state::{Fault, RunState};

const CAP: Capability = Capability::DOCKER;

impl Host for RunState {
    async fn image_present(&mut self, _image: String) -> Result<bool, Fault> {
        not_built_yet(self, &CAP, "docker.image-present")
    }

    async fn ensure_image(&mut self, _image: String) -> Result<(), Fault> {
        not_built_yet(self, &CAP, "docker.ensure-image")
    }

    async fn create(&mut self, _spec: ContainerSpec) -> Result<String, Fault> {
        not_built_yet(self, &CAP, "docker.create")
    }

    async fn start(&mut self, _name: String) -> Result<(), Fault> {
        not_built_yet(self, &CAP, "docker.start")
    }

    async fn stop(&mut self, _name: String, _timeout: Option<u32>) -> Result<(), Fault> {
        not_built_yet(self, &CAP, "docker.stop")
    }

    async fn restart(&mut self, _name: String) -> Result<(), Fault> {
        not_built_yet(self, &CAP, "docker.restart")
    }

    async fn remove(&mut self, _name: String) -> Result<(), Fault> {
        not_built_yet(self, &CAP, "docker.remove")
    }

    async fn inspect(&mut self, _name: String) -> Result<ContainerInfo, Fault> {
        not_built_yet(self, &CAP, "docker.inspect")
    }

    async fn list_containers(&mut self) -> Result<Vec<ContainerInfo>, Fault> {
        not_built_yet(self, &CAP, "docker.list-containers")
    }

    async fn logs(&mut self, _name: String, _tail: u32) -> Result<String, Fault> {
        not_built_yet(self, &CAP, "docker.logs")
    }

    async fn exec(
        &mut self,
        _name: String,
        _argv: Vec<String>,
        _user: Option<String>,
    ) -> Result<ExecResult, Fault> {
        not_built_yet(self, &CAP, "docker.exec")
    }
}
