//! Storage targets, backups, backup policies and restores. A target's secret is accepted on
//! creation and never answered back; a restore needs its confirmation (see
//! [`berth_engine::backups::Confirmation`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use berth_engine::backups::{Confirmation, RestoreSource};
use berth_engine::{Engine, EngineError};
use berth_state::{BackupPolicy, NewStorageTarget};
use serde::Deserialize;

use crate::auth::Org;
use crate::error::ApiResult;

type Shared = State<Arc<Engine>>;

pub(crate) async fn create_target(
    State(engine): Shared,
    Org(org): Org,
    Json(body): Json<NewStorageTarget>,
) -> ApiResult<impl IntoResponse> {
    engine.check_target_settings(&body.settings)?;
    let target = engine.store.create_storage_target(org, body)?;
    Ok((StatusCode::CREATED, Json(target)))
}

pub(crate) async fn list_targets(
    State(engine): Shared,
    Org(org): Org,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.storage_targets(org)?))
}

#[derive(Deserialize)]
pub(crate) struct NewBackupRequest {
    target: String,
}

/// A manual backup: 202 with its run.
pub(crate) async fn create_backup(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
    Json(body): Json<NewBackupRequest>,
) -> ApiResult<impl IntoResponse> {
    let run = engine.start_backup(org, id, &body.target, "api")?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

pub(crate) async fn list_backups(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    engine.store.environment(org, id)?;
    Ok(Json(engine.store.backups(id)?))
}

/// A restore of a recorded backup (`backup_id`), or of an object of a target (`target` and `key`).
#[derive(Deserialize)]
pub(crate) struct RestoreRequest {
    backup_id: Option<i64>,
    target: Option<String>,
    key: Option<String>,
    #[serde(flatten)]
    confirmation: Confirmation,
}

/// A restore: 202 with its run, or 422 without the confirmation it needs.
pub(crate) async fn restore(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
    Json(body): Json<RestoreRequest>,
) -> ApiResult<impl IntoResponse> {
    let source = match (body.backup_id, body.target, body.key) {
        (Some(backup), None, None) => RestoreSource::Backup(backup),
        (None, Some(target), Some(key)) => RestoreSource::Object { target, key },
        _ => {
            return Err(EngineError::Invalid(
                "restore from either `backup_id`, or `target` and `key`".into(),
            )
            .into());
        }
    };
    let run = engine.start_restore(org, id, &source, &body.confirmation)?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

#[derive(Deserialize)]
pub(crate) struct PolicyRequest {
    target: String,
    every_hours: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
}

pub(crate) async fn set_policy(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
    Json(body): Json<PolicyRequest>,
) -> ApiResult<impl IntoResponse> {
    let policy = BackupPolicy {
        environment_id: id,
        target: body.target,
        every_hours: body.every_hours.unwrap_or(24),
        keep_daily: body.keep_daily.unwrap_or(7),
        keep_weekly: body.keep_weekly.unwrap_or(4),
        keep_monthly: body.keep_monthly.unwrap_or(3),
    };
    engine.store.set_backup_policy(org, &policy)?;
    Ok(Json(policy))
}

#[derive(Deserialize)]
pub(crate) struct ProtectRequest {
    pub(crate) protected: bool,
}

pub(crate) async fn set_protected(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
    Json(body): Json<ProtectRequest>,
) -> ApiResult<impl IntoResponse> {
    if !body.protected {
        // Protection is what makes a restore over production ask for the environment's name; the
        // token that could lift it is the very one it guards against.
        return Err(berth_engine::EngineError::Forbidden(
            "lifting an environment's protection is the operator's: PUT \
             /v1/operator/environments/{id}/protected with an operator token"
                .into(),
        )
        .into());
    }
    engine.store.set_protected(org, id, true)?;
    Ok(Json(engine.store.environment(org, id)?))
}
