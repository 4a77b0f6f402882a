//! What keeps the control plane from growing with every run: the events, audit records and steps
//! of finished runs beyond the [`Retention`], git mirrors no repository names any more or nobody
//! used for [`MIRROR_UNUSED`], and the workspaces of runs a stopped control plane left behind.
//! The scheduler runs it every tick, on the blocking pool (it deletes rows and files); whatever
//! fails is logged and tried again at the next tick.

use std::sync::Arc;
use std::time::Duration;

use berth_state::Retention;

use crate::Engine;

/// A mirror no run used for this long is removed (and fetched whole again on its next use).
pub const MIRROR_UNUSED: Duration = Duration::from_secs(30 * 24 * 3600);

/// Runs pruned per transaction: the state is never held long by the clean-up.
const PRUNE_BATCH: u32 = 500;

/// One round of housekeeping.
pub(crate) async fn tidy(engine: Arc<Engine>) {
    let worker = tokio::task::spawn_blocking(move || {
        prune_runs(&engine);
        prune_mirrors(&engine);
        prune_workspaces(&engine);
    });
    if let Err(e) = worker.await {
        tracing::error!("housekeeping failed: {e}");
    }
}

fn prune_runs(engine: &Engine) {
    let retention = Retention::default();
    loop {
        match engine
            .store
            .prune_runs(&retention, berth_state::now_ms(), PRUNE_BATCH)
        {
            Ok(pruned) if pruned.runs > 0 || pruned.audit > 0 => tracing::info!(
                runs = pruned.runs,
                events = pruned.events,
                audit = pruned.audit,
                "housekeeping: pruned finished runs beyond the retention"
            ),
            Ok(_) => return,
            Err(e) => return tracing::error!("housekeeping: cannot prune runs: {e}"),
        }
    }
}

fn prune_mirrors(engine: &Engine) {
    let urls = match engine.store.repository_urls() {
        Ok(urls) => urls,
        Err(e) => return tracing::error!("housekeeping: cannot list repositories: {e}"),
    };
    match engine.mirrors.prune(&urls, MIRROR_UNUSED) {
        Ok(removed) if !removed.is_empty() => tracing::info!(
            mirrors = removed.len(),
            "housekeeping: removed the mirrors of gone or unused repositories"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!("housekeeping: {e}"),
    }
}

/// A run removes its workspace when it ends; a control plane stopped mid-run leaves it behind.
fn prune_workspaces(engine: &Engine) {
    let runs = engine.data_dir().join("runs");
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(run) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let active = match engine.store.run_by_id(run) {
            Ok(found) => found.status.is_active(),
            Err(berth_state::StateError::NotFound(_)) => false,
            Err(e) => {
                tracing::error!(run, "housekeeping: {e}");
                continue;
            }
        };
        if !active && let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(
                run,
                "housekeeping: cannot remove a finished run's workspace: {e}"
            );
        }
    }
}
