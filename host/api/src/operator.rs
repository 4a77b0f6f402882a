//! The operator's routes (`/v1/operator/…`): what the platform team does for organizations and
//! never an organization for itself — creating organizations, setting the capabilities an
//! organization may grant its own plugins, lifting an environment's protection. Every handler
//! takes the [`Operator`] extractor, which no organization's token passes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Operator;
use crate::error::{ApiError, ApiResult};
use crate::routes::Shared;

#[derive(Deserialize)]
pub(crate) struct NewOrganization {
    name: String,
}

/// A new organization and its first token (shown once).
pub(crate) async fn create_organization(
    State(engine): Shared,
    _: Operator,
    Json(body): Json<NewOrganization>,
) -> ApiResult<impl IntoResponse> {
    let org = engine.store.create_organization(&body.name)?;
    let (_, token) = engine
        .store
        .create_token(org.id, "created by the operator")?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "organization": org, "token": token })),
    ))
}

#[derive(Deserialize)]
pub(crate) struct Ceiling {
    capabilities: Vec<String>,
}

/// The capabilities organization `id` may grant its own plugins.
pub(crate) async fn set_grant_ceiling(
    State(engine): Shared,
    _: Operator,
    Path(id): Path<i64>,
    Json(body): Json<Ceiling>,
) -> ApiResult<impl IntoResponse> {
    for capability in &body.capabilities {
        let known =
            capability == "secret:*" || capability.parse::<berth_runtime::Capability>().is_ok();
        if !known {
            return Err(ApiError::bad_request(format!(
                "unknown capability {capability:?}"
            )));
        }
    }
    engine.store.organization(id)?;
    engine.store.set_grant_ceiling(id, &body.capabilities)?;
    Ok(Json(
        json!({ "organization_id": id, "capabilities": body.capabilities }),
    ))
}

pub(crate) async fn get_grant_ceiling(
    State(engine): Shared,
    _: Operator,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    engine.store.organization(id)?;
    let capabilities = engine.grant_ceiling(id)?;
    Ok(Json(
        json!({ "organization_id": id, "capabilities": capabilities }),
    ))
}

/// The operator's: protect an environment, or lift its protection.
pub(crate) async fn set_protected(
    State(engine): Shared,
    _: Operator,
    Path(id): Path<i64>,
    Json(body): Json<crate::backups::ProtectRequest>,
) -> ApiResult<impl IntoResponse> {
    let env = engine.store.environment_by_id(id)?;
    engine
        .store
        .set_protected(env.organization_id, id, body.protected)?;
    Ok(Json(engine.store.environment_by_id(id)?))
}
