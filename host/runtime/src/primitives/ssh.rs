//! `ssh`: commands and files on the run environment's server, through the control plane's SSH pool.
//! Capabilities `ssh.exec` (argv), `ssh.shell` (a script through `sh -c`), `ssh.files` (SFTP).
//! Output streams into the run log as it arrives; the plugin gets the exit status and the tails.

use std::time::Duration;

use berth_primitives::ssh::{Command, SshError, Stream};
use wasmtime::component::Resource;

use super::blobs::Blob;
use crate::bindings::ssh::{ExecOptions, ExecResult, Host};
use crate::bindings::types::Error;
use crate::grants::Capability;
use crate::invoke::ServerAccess;
use crate::runlog::OutputLines;
use crate::state::{Fault, RunState};

/// Maps an SSH failure to the WIT error a plugin can act on.
pub(crate) fn ssh_fault(err: SshError) -> Fault {
    let msg = err.to_string();
    Fault::Guest(match err {
        SshError::Timeout { .. } => Error::Timeout(msg),
        SshError::Invalid(_) => Error::invalid(msg),
        SshError::Remote { reason, .. } if reason.contains("No such file") => Error::not_found(msg),
        _ => Error::failed(msg),
    })
}

impl RunState {
    /// The door of every `ssh` call: the grant, then the run's server.
    pub(crate) fn server(&mut self, cap: &Capability, call: &str) -> Result<ServerAccess, Fault> {
        self.gate(cap, call)?;
        self.server
            .clone()
            .ok_or_else(|| Error::unsupported(format!("{call}: this run has no server")).into())
    }

    /// The run's server for a stream's producer: on its own SSH connection (see
    /// [`SshPool::dedicated`](berth_primitives::ssh::SshPool::dedicated)), so a stream held back
    /// by its consumer never holds back the consumer's own channels.
    pub(crate) fn stream_server(
        &mut self,
        cap: &Capability,
        call: &str,
    ) -> Result<ServerAccess, Fault> {
        let mut access = self.server(cap, call)?;
        access.pool = std::sync::Arc::new(access.pool.dedicated());
        Ok(access)
    }

    async fn run_command(
        &mut self,
        access: ServerAccess,
        command: Command,
        shell: Option<String>,
    ) -> Result<ExecResult, Fault> {
        let mut lines = OutputLines::new(
            self.log.clone(),
            format!("{} on {}", self.plugin, access.target.name),
        );
        let mut sink = |stream: Stream, data: &[u8]| lines.push(stream == Stream::Stderr, data);
        let output = match shell {
            Some(script) => {
                access
                    .pool
                    .shell(&access.target, &script, command.timeout, &mut sink)
                    .await
            }
            None => access.pool.exec(&access.target, &command, &mut sink).await,
        };
        lines.finish();
        let output = output.map_err(ssh_fault)?;
        Ok(ExecResult {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

fn command(argv: Vec<String>, options: ExecOptions) -> Command {
    Command {
        argv,
        cwd: options.cwd,
        env: options.env,
        timeout: options
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into())),
    }
}

impl Host for RunState {
    async fn exec(&mut self, argv: Vec<String>, options: ExecOptions) -> Result<ExecResult, Fault> {
        let access = self.server(&Capability::SSH_EXEC, "ssh.exec")?;
        self.run_command(access, command(argv, options), None).await
    }

    async fn shell(&mut self, script: String, options: ExecOptions) -> Result<ExecResult, Fault> {
        let access = self.server(&Capability::SSH_SHELL, "ssh.shell")?;
        let command = command(vec!["sh".into()], options);
        if command.cwd.is_some() || !command.env.is_empty() {
            return Err(Error::invalid(
                "ssh.shell: set the directory and variables in the script itself",
            )
            .into());
        }
        self.run_command(access, command, Some(script)).await
    }

    async fn upload(&mut self, data: Resource<Blob>, path: String, mode: u32) -> Result<(), Fault> {
        let access = self.server(&Capability::SSH_FILES, "ssh.upload")?;
        let mut reader = self.blob_reader(&data, "ssh.upload")?;
        access
            .pool
            .upload(&access.target, &mut reader, &path, mode)
            .await
            .map_err(ssh_fault)?;
        Ok(())
    }

    async fn download(&mut self, path: String) -> Result<Resource<Blob>, Fault> {
        let access = self.stream_server(&Capability::SSH_FILES, "ssh.download")?;
        // Found now, read when consumed: a file of any size streams to wherever it goes next.
        access
            .pool
            .stat(&access.target, &path)
            .await
            .map_err(ssh_fault)?;
        let blob = Blob::stream(
            self.limits.blob_bytes,
            Box::new(move |mut pipe| {
                Box::pin(async move {
                    access
                        .pool
                        .download(&access.target, &path, &mut pipe)
                        .await
                        .map(drop)
                        .map_err(std::io::Error::other)
                })
            }),
        );
        self.push(blob)
    }
}
