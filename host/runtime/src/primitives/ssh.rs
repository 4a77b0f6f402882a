//! `ssh`: declared in the contract; the backend (russh, pinned host keys, SFTP) is not built yet,
//! so each call is checked and answered `unsupported`.

use wasmtime::component::Resource;

use super::blobs::Blob;
use super::not_built_yet;
use crate::bindings::ssh::{ExecOptions, ExecResult, Host};
use crate::grants::Capability;
use crate::state::{Fault, RunState};

impl Host for RunState {
    async fn exec(
        &mut self,
        _argv: Vec<String>,
        _options: ExecOptions,
    ) -> Result<ExecResult, Fault> {
        not_built_yet(self, &Capability::SSH_EXEC, "ssh.exec")
    }

    async fn shell(&mut self, _script: String, _options: ExecOptions) -> Result<ExecResult, Fault> {
        not_built_yet(self, &Capability::SSH_SHELL, "ssh.shell")
    }

    async fn upload(
        &mut self,
        _data: Resource<Blob>,
        _path: String,
        _mode: u32,
    ) -> Result<(), Fault> {
        not_built_yet(self, &Capability::SSH_FILES, "ssh.upload")
    }

    async fn download(&mut self, _path: String) -> Result<Resource<Blob>, Fault> {
        not_built_yet(self, &Capability::SSH_FILES, "ssh.download")
    }
}
