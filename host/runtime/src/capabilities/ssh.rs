//! `ssh`: commands and files on the run environment's server, through the control plane's SSH pool.
//! Capabilities `ssh.exec` (argv), `ssh.shell` (a script through `sh -c`), `ssh.files` (SFTP).
//! Output streams into the run log as it arrives; the plugin gets the exit status and the tails.
//! All three act as the server's SSH user, so they reach every environment on the server: they are
//! server-wide, and only a grant for the run's server opens them (see `grants`).

use std::sync::Arc;
use std::time::Duration;

use berth_backends::ssh::{Command, SshError, Stream};
use wasmtime::component::Resource;

use super::blobs::Blob;
use crate::bindings::Fault;
use crate::bindings::ssh::{ExecOptions, ExecResult, Host};
use crate::bindings::types::Error;
use crate::grants::Capability;
use crate::runlog::OutputLines;
use crate::state::RunState;

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

/// What the run lends `ssh` (and `docker`, `database`, `archive`, `git`'s export, which reach
/// the same server): the control plane's SSH pool, the address of the run environment's server,
/// and how to reach the environment's PostgreSQL on it (once it has one).
#[derive(Clone)]
pub struct ServerAccess {
    pub pool: Arc<berth_backends::ssh::SshPool>,
    pub target: berth_backends::ssh::Target,
    pub database: Option<berth_backends::database::DbAccess>,
}

impl RunState {
    /// The door of every call that acts on the run's server: the grant, then the server.
    pub(crate) fn server(&mut self, cap: &Capability, call: &str) -> Result<ServerAccess, Fault> {
        let access = self.gate_lent::<ServerAccess>(cap, call, "this run has no server")?;
        Ok((*access).clone())
    }

    /// The run's server for a stream's producer: on its own SSH connection (see
    /// [`SshPool::dedicated`](berth_backends::ssh::SshPool::dedicated)), so a stream held back
    /// by its consumer never holds back the consumer's own channels.
    pub(crate) fn stream_server(
        &mut self,
        cap: &Capability,
        call: &str,
    ) -> Result<ServerAccess, Fault> {
        let mut access = self.server(cap, call)?;
        access.pool = Arc::new(access.pool.dedicated());
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
        self.push_stream(move |mut pipe| async move {
            access.pool.download(&access.target, &path, &mut pipe).await
        })
    }
}

#[cfg(test)]
mod tests {
    //! The door of each `ssh` call (its own capability, its grant scope, the server the run lent)
    //! and how SSH failures reach the plugin; nothing here reaches a server.

    use std::sync::Arc;
    use std::time::Duration;

    use berth_backends::ssh::SshError;

    use super::super::blobs::Blob;
    use super::super::testing::{self, Run};
    use super::{Error, ExecOptions, Fault, RunState, ssh_fault};
    use crate::bindings::ssh;

    fn options() -> ExecOptions {
        ExecOptions {
            cwd: None,
            env: vec![],
            timeout_ms: None,
        }
    }

    async fn exec(state: &mut RunState) -> Result<ssh::ExecResult, Fault> {
        ssh::Host::exec(state, vec!["true".into()], options()).await
    }

    async fn shell(state: &mut RunState) -> Result<ssh::ExecResult, Fault> {
        ssh::Host::shell(state, "true".into(), options()).await
    }

    async fn upload(state: &mut RunState) -> Result<(), Fault> {
        let blob = state.push(Blob::new(1024))?;
        ssh::Host::upload(state, blob, "/tmp/x".into(), 0o644).await
    }

    async fn download(state: &mut RunState) -> Result<wasmtime::component::Resource<Blob>, Fault> {
        ssh::Host::download(state, "/etc/hostname".into()).await
    }

    #[tokio::test]
    async fn each_call_without_its_grant_is_denied_and_audited() {
        testing::assert_denied_without_grant("ssh.exec", "ssh.exec", exec).await;
        testing::assert_denied_without_grant("ssh.shell", "ssh.shell", shell).await;
        testing::assert_denied_without_grant("ssh.files", "ssh.upload", upload).await;
        testing::assert_denied_without_grant("ssh.files", "ssh.download", download).await;
    }

    #[tokio::test]
    async fn one_ssh_capability_does_not_open_another() {
        let run = Run::lifecycle().granted("ssh.exec");
        let err = testing::guest_error(shell(&mut run.state()).await);
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("`ssh.shell`")),
            "{err:?}"
        );
        let err = testing::guest_error(upload(&mut run.state()).await);
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("`ssh.files`")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_grant_for_another_scope_does_not_count() {
        testing::assert_other_scopes_do_not_count("ssh.exec", "ssh.exec", exec).await;
        testing::assert_other_scopes_do_not_count("ssh.files", "ssh.download", download).await;
    }

    #[tokio::test]
    async fn a_run_without_a_server_answers_unsupported() {
        let missing = "this run has no server";
        testing::assert_unsupported_when_nothing_lent("ssh.exec", "ssh.exec", missing, exec).await;
        testing::assert_unsupported_when_nothing_lent("ssh.shell", "ssh.shell", missing, shell)
            .await;
        testing::assert_unsupported_when_nothing_lent("ssh.files", "ssh.upload", missing, upload)
            .await;
        testing::assert_unsupported_when_nothing_lent(
            "ssh.files",
            "ssh.download",
            missing,
            download,
        )
        .await;
    }

    #[tokio::test]
    async fn a_shell_script_takes_no_directory_or_variables_from_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::lifecycle()
            .granted("ssh.shell")
            .lend(Arc::new(testing::server_access(dir.path(), None)));
        let with_cwd = ExecOptions {
            cwd: Some("/srv".into()),
            ..options()
        };
        let with_env = ExecOptions {
            env: vec![("A".into(), "1".into())],
            ..options()
        };
        for options in [with_cwd, with_env] {
            let err = testing::guest_error(
                ssh::Host::shell(&mut run.state(), "true".into(), options).await,
            );
            assert!(
                matches!(&err, Error::Invalid(m) if m.starts_with("ssh.shell:")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn ssh_errors_map_to_the_error_a_plugin_can_act_on() {
        let server = || "web-1".to_string();
        let kind = |err: SshError| match ssh_fault(err) {
            Fault::Guest(err) => err.kind(),
            Fault::Trap(trap) => panic!("an SSH error must not trap: {trap:#}"),
        };
        assert_eq!(
            kind(SshError::Timeout {
                server: server(),
                what: "sleep 60".into(),
                after: Duration::from_secs(1),
            }),
            "timeout"
        );
        assert_eq!(kind(SshError::Invalid("empty argv".into())), "invalid");
        assert_eq!(
            kind(SshError::Remote {
                server: server(),
                what: "stat /nope".into(),
                reason: "No such file".into(),
            }),
            "not-found"
        );
        assert_eq!(
            kind(SshError::Remote {
                server: server(),
                what: "write /etc/x".into(),
                reason: "Permission denied".into(),
            }),
            "failed"
        );
        for err in [
            SshError::HostKeyChanged {
                server: server(),
                pinned: "a".into(),
                offered: "b".into(),
            },
            SshError::Connect {
                server: server(),
                reason: "refused".into(),
            },
            SshError::Auth { server: server() },
            SshError::Dropped {
                server: server(),
                what: "ls".into(),
            },
            SshError::Key {
                path: "/k".into(),
                reason: "bad".into(),
            },
            SshError::Pin {
                server: server(),
                reason: "bad".into(),
            },
        ] {
            let shown = err.to_string();
            assert_eq!(kind(err), "failed", "{shown}");
        }
    }

    #[test]
    fn ssh_errors_keep_their_message() {
        let Fault::Guest(err) = ssh_fault(SshError::Auth {
            server: "web-1".into(),
        }) else {
            panic!("trapped")
        };
        assert!(err.message().contains("web-1"), "{err:?}");
    }
}
