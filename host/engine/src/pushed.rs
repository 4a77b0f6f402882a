//! A push's commit is deployed only if it is on the branch the environment tracks. A webhook
//! delivery is signed with the environment's secret, but the commit it names (`after`) is only
//! the sender's word: a delivery naming a commit of another branch or of a fork must never deploy
//! it. So before a run pinned to a pushed commit does anything, the control plane fetches the
//! repository into its mirror and checks that the tracked branch reaches the commit (its head, or
//! one of its ancestors — a later push may have moved the branch on).

use berth_runtime::RunInputs;

use crate::{Engine, EngineError};

/// Refuses run `run_id` when its inputs pin a pushed commit the environment's tracked branch does
/// not reach.
pub(crate) async fn check(
    engine: &Engine,
    run_id: i64,
    inputs: &RunInputs,
) -> Result<(), EngineError> {
    let RunInputs::Push(push) = inputs else {
        return Ok(());
    };
    let Some(name) = &push.repository else {
        return Ok(());
    };
    let run = engine.store.run_by_id(run_id)?;
    let env = engine.store.environment_by_id(run.environment_id)?;
    let repository = engine
        .store
        .repositories_for(env.id)?
        .into_iter()
        .find(|r| &r.name == name)
        .ok_or_else(|| {
            EngineError::Invalid(format!(
                "the push names the repository {name:?}, which the environment does not deploy"
            ))
        })?;
    // The branch that repository deploys: its own, else the environment's.
    let branch = (repository.branch.clone())
        .or(env.branch.clone())
        .unwrap_or_else(|| "main".into());
    let mirrors = engine.mirrors.clone();
    let (url, commit) = (repository.url.clone(), push.commit.clone());
    let tracked = branch.clone();
    let reached = tokio::task::spawn_blocking(move || {
        mirrors.fetch(&url)?;
        mirrors.reaches(&url, &tracked, &commit)
    })
    .await
    .map_err(|e| EngineError::Setup(format!("git worker: {e}")))?
    .map_err(|e| {
        EngineError::Invalid(format!(
            "cannot check the pushed commit against {name}: {e}"
        ))
    })?;
    if reached {
        return Ok(());
    }
    Err(EngineError::Invalid(format!(
        "the pushed commit {} is not on branch {branch} of {name}: a push deploys only a commit \
         its tracked branch reaches (a commit of another branch or of a fork is refused)",
        push.commit
    )))
}
