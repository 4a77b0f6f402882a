//! The operator's routes (`/v1/operator/…`): what the platform team does for organizations and
//! never an organization for itself — creating organizations, setting the capabilities an
//! organization may grant its own plugins and deciding its requests for more, setting its upload
//! quotas, lifting an environment's protection. Every handler takes the [`Operator`] extractor,
//! which no organization's token passes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
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

#[derive(Deserialize)]
pub(crate) struct RequestFilter {
    /// `pending`, `approved` or `denied`; every request when absent.
    status: Option<String>,
}

/// Every organization's grant requests, newest first (`?status=pending`: those waiting).
pub(crate) async fn list_grant_requests(
    State(engine): Shared,
    _: Operator,
    Query(filter): Query<RequestFilter>,
) -> ApiResult<impl IntoResponse> {
    let status = match filter.status.as_deref() {
        Some(status) => Some(
            status
                .parse::<berth_state::GrantRequestStatus>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    Ok(Json(engine.store.grant_requests(None, status)?))
}

/// Approves a pending grant request: the grant it asked for holds from now on.
pub(crate) async fn approve_grant_request(
    State(engine): Shared,
    _: Operator,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    let (request, grant) = engine.store.approve_grant_request(id)?;
    Ok(Json(json!({ "request": request, "grant": grant })))
}

#[derive(Deserialize, Default)]
struct Denial {
    /// Why, for the organization to read.
    reason: Option<String>,
}

/// Denies a pending grant request; the body (`{"reason": …}`) is optional.
pub(crate) async fn deny_grant_request(
    State(engine): Shared,
    _: Operator,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let denial: Denial = if body.iter().all(u8::is_ascii_whitespace) {
        Denial::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not a denial: {e}")))?
    };
    if denial.reason.as_ref().is_some_and(|r| r.len() > 1000) {
        return Err(ApiError::bad_request("reason: at most 1000 characters"));
    }
    Ok(Json(
        engine
            .store
            .deny_grant_request(id, denial.reason.as_deref())?,
    ))
}

/// Sets organization `id`'s upload quotas; a field left out (or `null`) is the default.
pub(crate) async fn set_upload_quota(
    State(engine): Shared,
    _: Operator,
    Path(id): Path<i64>,
    Json(quota): Json<berth_state::UploadQuota>,
) -> ApiResult<impl IntoResponse> {
    engine.store.set_upload_quota(id, &quota)?;
    Ok(Json(upload_quota(&engine, id)?))
}

pub(crate) async fn get_upload_quota(
    State(engine): Shared,
    _: Operator,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    engine.store.organization(id)?;
    Ok(Json(upload_quota(&engine, id)?))
}

/// The quotas in force for organization `id`, and what the operator set (`null`: the default).
fn upload_quota(engine: &berth_engine::Engine, id: i64) -> ApiResult<serde_json::Value> {
    Ok(json!({
        "organization_id": id,
        "limits": engine.upload_limits(id)?,
        "set": engine.store.upload_quota(id)?,
    }))
}

#[derive(Deserialize)]
pub(crate) struct RunLimit {
    /// `null` gives the organization the platform's default back.
    concurrent_runs: Option<u32>,
}

/// How many runs organization `id` may run at once; more wait in the queue.
pub(crate) async fn set_run_limit(
    State(engine): Shared,
    _: Operator,
    Path(id): Path<i64>,
    Json(body): Json<RunLimit>,
) -> ApiResult<impl IntoResponse> {
    engine.store.set_concurrent_runs(id, body.concurrent_runs)?;
    // A raised share starts what waited for it now, not at the next run's end.
    engine.dispatch();
    run_limit(&engine, id)
}

pub(crate) async fn get_run_limit(
    State(engine): Shared,
    _: Operator,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    engine.store.organization(id)?;
    run_limit(&engine, id)
}

fn run_limit(engine: &berth_engine::Engine, id: i64) -> ApiResult<Json<serde_json::Value>> {
    let own = engine.store.concurrent_runs(id)?;
    Ok(Json(json!({
        "organization_id": id,
        "concurrent_runs": own.unwrap_or(engine.run_limits().per_organization),
        "default": own.is_none(),
    })))
}

#[derive(Deserialize)]
pub(crate) struct PlatformRepository {
    name: String,
    url: String,
    branch: Option<String>,
}

/// A platform repository: deployed to every environment of every organization, so only the
/// operator adds one.
pub(crate) async fn add_platform_repository(
    State(engine): Shared,
    _: Operator,
    Json(body): Json<PlatformRepository>,
) -> ApiResult<impl IntoResponse> {
    engine.check_repository_url(&body.url)?;
    if engine.store.repository_name_taken(&body.name)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a repository named {:?} exists already", body.name),
        ));
    }
    let repository = engine.store.add_repository(berth_state::NewRepository {
        level: berth_state::RepositoryLevel::Platform,
        organization_id: None,
        project_id: None,
        name: body.name,
        url: body.url,
        branch: body.branch,
    })?;
    Ok((StatusCode::CREATED, Json(repository)))
}

pub(crate) async fn platform_repositories(
    State(engine): Shared,
    _: Operator,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.platform_repositories()?))
}
