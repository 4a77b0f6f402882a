//! Git push webhooks. A push to an environment's tracked branch, with auto-deploy on, starts an
//! `auto-deploy` run pinned to the pushed commit.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex>` is HMAC-SHA256 of the raw body with the
//!   environment's webhook secret, verified in constant time before the body is even parsed.
//! - GitLab: `X-Gitlab-Token` equals the secret, compared in constant time.
//!
//! A missing or wrong signature is `401 invalid signature` and nothing runs; an unknown
//! environment answers exactly the same (the caller learns nothing about which environments
//! exist). A delivery is accepted once: one sent again (the same `X-GitHub-Delivery` or
//! `X-Gitlab-Event-UUID`, as a sender's redelivery or a replayed capture is) answers `200` with
//! `duplicate` and starts nothing. Bodies up to 25 MB are read, as GitHub sends.
//!
//! The commit a push names (`after`) is the sender's word: the run it starts fetches the
//! repository and checks that the tracked branch reaches that commit before anything else, and
//! fails naming it otherwise (a commit of another branch or of a fork is never deployed). The
//! check belongs to the run, not to this handler, so that a fetch never holds up the answer and a
//! push that waits in the queue is checked when it runs.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use berth_engine::Engine;
use berth_runtime::{Operation, Push, RunInputs};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub fn github_signature_valid(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The largest webhook body read (GitHub's limit for a delivery).
pub const MAX_BODY: usize = 25 << 20;

/// The one answer to every delivery that is not proven to come from the environment's sender.
fn refused() -> ApiError {
    ApiError::unauthorized("invalid signature")
}

/// The environment's webhook secret, or the same 401 as a bad signature.
fn secret_of(engine: &Engine, environment: i64) -> ApiResult<berth_state::Environment> {
    engine
        .store
        .environment_by_id(environment)
        .map_err(|_| refused())
}

/// `Some(answer)` when the signed delivery `id` was accepted before: it starts nothing again.
fn replayed(
    engine: &Engine,
    env: &berth_state::Environment,
    id: Option<&str>,
) -> ApiResult<Option<(StatusCode, Json<Value>)>> {
    let Some(id) = id else { return Ok(None) };
    if engine.store.record_delivery(env.id, id)? {
        return Ok(None);
    }
    Ok(Some((StatusCode::OK, Json(json!({ "duplicate": id })))))
}

pub async fn github(
    State(engine): State<Arc<Engine>>,
    Path(environment): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let env = secret_of(&engine, environment)?;
    let signature = header(&headers, "x-hub-signature-256").unwrap_or("");
    if !github_signature_valid(env.webhook_secret.as_bytes(), &body, signature) {
        return Err(refused());
    }
    if let Some(answer) = replayed(&engine, &env, header(&headers, "x-github-delivery"))? {
        return Ok(answer);
    }
    match header(&headers, "x-github-event") {
        Some("push") => push(&engine, env, &body, "github"),
        Some("ping") => Ok((StatusCode::OK, Json(json!({ "pong": true })))),
        other => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "ignored": format!("event {other:?} is not a push") })),
        )),
    }
}

pub async fn gitlab(
    State(engine): State<Arc<Engine>>,
    Path(environment): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let env = secret_of(&engine, environment)?;
    let token = header(&headers, "x-gitlab-token").unwrap_or("");
    if !bool::from(token.as_bytes().ct_eq(env.webhook_secret.as_bytes())) {
        return Err(refused());
    }
    if let Some(answer) = replayed(&engine, &env, header(&headers, "x-gitlab-event-uuid"))? {
        return Ok(answer);
    }
    match header(&headers, "x-gitlab-event") {
        Some("Push Hook") => push(&engine, env, &body, "gitlab"),
        other => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "ignored": format!("event {other:?} is not a push") })),
        )),
    }
}

/// A verified push: GitHub and GitLab both send `ref` and `after`.
fn push(
    engine: &Arc<Engine>,
    env: berth_state::Environment,
    body: &[u8],
    source: &str,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the push payload is not JSON: {e}")))?;
    let branch = payload["ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("refs/heads/"))
        .ok_or_else(|| ApiError::bad_request("the push has no branch ref"))?;
    let commit = payload["after"]
        .as_str()
        .filter(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| ApiError::bad_request("the push has no commit (`after`)"))?;
    let repository = pushed_repository(engine, &env, &payload)?;
    // The branch the pushed repository deploys: its own, else the environment's.
    let tracked = repository
        .as_ref()
        .and_then(|r| r.branch.as_deref())
        .or(env.branch.as_deref())
        .unwrap_or("main");
    let deleted = payload["deleted"] == true || commit.bytes().all(|b| b == b'0');
    let ignored = if deleted {
        Some("the push deleted the branch".to_string())
    } else if branch != tracked {
        Some(format!(
            "push to {branch}; the environment tracks {tracked}"
        ))
    } else if !env.auto_deploy {
        Some("auto-deploy is off for this environment".to_string())
    } else if repository.is_none() {
        Some("the push is to no repository of this environment's project".to_string())
    } else {
        None
    };
    if let Some(reason) = ignored {
        return Ok((StatusCode::ACCEPTED, Json(json!({ "ignored": reason }))));
    }
    let inputs = RunInputs::Push(Push {
        repository: repository.map(|r| r.name),
        branch: branch.to_string(),
        commit: commit.to_string(),
        source: source.to_string(),
    });
    // While the environment is busy, the push waits as one follow-up run: a later push updates
    // it (`coalesced`) instead of queueing another or being refused.
    let queued = engine.queue(
        env.organization_id,
        env.id,
        Operation::AutoDeploy,
        source,
        |_| inputs,
    )?;
    let mut answer = serde_json::to_value(queued.run()).unwrap_or(Value::Null);
    answer["coalesced"] = matches!(queued, berth_state::Queued::Coalesced(_)).into();
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// The project repository of `env` the push is about: the one whose URL the payload names
/// (GitHub's `repository.*_url`, GitLab's `project.git_*_url`), or the only one when the payload
/// names none.
fn pushed_repository(
    engine: &Engine,
    env: &berth_state::Environment,
    payload: &Value,
) -> ApiResult<Option<berth_state::Repository>> {
    let named: Vec<&str> = [
        &payload["repository"]["clone_url"],
        &payload["repository"]["ssh_url"],
        &payload["repository"]["git_url"],
        &payload["repository"]["html_url"],
        &payload["repository"]["git_http_url"],
        &payload["repository"]["git_ssh_url"],
        &payload["project"]["git_http_url"],
        &payload["project"]["git_ssh_url"],
    ]
    .into_iter()
    .filter_map(Value::as_str)
    .collect();
    let project: Vec<_> = engine
        .store
        .repositories_for(env.id)?
        .into_iter()
        .filter(|r| r.level == berth_state::RepositoryLevel::Project)
        .collect();
    let found = if named.is_empty() {
        (project.len() == 1).then(|| project[0].clone())
    } else {
        project
            .into_iter()
            .find(|r| named.iter().any(|url| normalise(url) == normalise(&r.url)))
    };
    Ok(found)
}

fn normalise(url: &str) -> String {
    url.trim_end_matches('/')
        .trim_end_matches(".git")
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signatures_are_checked() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(github_signature_valid(b"s3cret", body, &good));
        assert!(!github_signature_valid(b"other", body, &good));
        assert!(!github_signature_valid(b"s3cret", b"{}", &good));
        assert!(!github_signature_valid(b"s3cret", body, "sha256=zz"));
        assert!(!github_signature_valid(b"s3cret", body, &good[7..]));
    }
}
