//! `berth`: the command line of the Berth control plane.
//!
//! `berth plugin inspect` and `berth plugin run` put a plugin author (or an operator vetting an
//! upload) in front of the real sandbox: the same loader, validation, limits and grant checks the
//! control plane uses, with a local harness standing in for the run.

mod plugin_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Deploy and operate Odoo on your own servers, with sandboxed plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and run plugins.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Plugin(cmd) => runtime.block_on(plugin_cmd::run(cmd)),
    }
}
