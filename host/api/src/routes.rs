//! The REST routes. Each handler extracts the caller's organization, calls the store or the engine,
//! and returns JSON; errors convert through [`ApiError`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use berth_engine::Engine;
use berth_engine::grants::GrantOutcome;
use berth_runtime::{Operation, RunInputs};
use berth_state::{
    EnvironmentPatch, FIXED_SETTINGS, NewEnvironment, NewGrantRequest, NewRepository, NewServer,
    RepositoryLevel,
};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Org;
use crate::backups;
use crate::error::{ApiError, ApiResult};

pub(crate) type Shared = State<Arc<Engine>>;

pub(crate) fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/v1/ssh-keys", post(create_ssh_key))
        .route("/v1/ssh-keys/{name}", get(get_ssh_key))
        .route("/v1/servers", post(create_server).get(list_servers))
        .route("/v1/servers/{id}", get(get_server))
        .route("/v1/servers/{id}/host-key", put(set_host_key))
        .route("/v1/projects", post(create_project).get(list_projects))
        .route("/v1/projects/{id}", get(get_project))
        .route(
            "/v1/projects/{id}/environments",
            post(create_environment).get(list_environments),
        )
        .route(
            "/v1/environments/{id}",
            get(get_environment).patch(update_environment),
        )
        .route("/v1/environments/{id}/deploy", post(deploy))
        .route("/v1/environments/{id}/runs", get(list_runs))
        .route(
            "/v1/environments/{id}/backups",
            post(backups::create_backup).get(backups::list_backups),
        )
        .route("/v1/environments/{id}/restore", post(backups::restore))
        .route(
            "/v1/environments/{id}/backup-policy",
            put(backups::set_policy),
        )
        .route(
            "/v1/environments/{id}/protected",
            put(backups::set_protected),
        )
        .route(
            "/v1/storage-targets",
            post(backups::create_target).get(backups::list_targets),
        )
        .route(
            "/v1/repositories",
            post(add_repository).get(list_repositories),
        )
        .route("/v1/plugins", post(upload_plugin).get(list_plugins))
        .route("/v1/grants", post(add_grant))
        .route("/v1/grant-requests", get(list_grant_requests))
        .route(
            "/v1/operator/organizations",
            post(crate::operator::create_organization),
        )
        .route(
            "/v1/operator/organizations/{id}/grant-ceiling",
            put(crate::operator::set_grant_ceiling).get(crate::operator::get_grant_ceiling),
        )
        .route(
            "/v1/operator/organizations/{id}/upload-quota",
            put(crate::operator::set_upload_quota).get(crate::operator::get_upload_quota),
        )
        .route(
            "/v1/operator/grant-requests",
            get(crate::operator::list_grant_requests),
        )
        .route(
            "/v1/operator/grant-requests/{id}/approve",
            post(crate::operator::approve_grant_request),
        )
        .route(
            "/v1/operator/grant-requests/{id}/deny",
            post(crate::operator::deny_grant_request),
        )
        .route(
            "/v1/operator/repositories",
            post(crate::operator::add_platform_repository)
                .get(crate::operator::platform_repositories),
        )
        .route(
            "/v1/operator/organizations/{id}/run-limit",
            put(crate::operator::set_run_limit).get(crate::operator::get_run_limit),
        )
        .route(
            "/v1/operator/environments/{id}/protected",
            put(crate::operator::set_protected),
        )
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/events", get(run_events))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route(
            "/hooks/github/{environment}",
            post(crate::webhooks::github).layer(DefaultBodyLimit::max(crate::webhooks::MAX_BODY)),
        )
        .route(
            "/hooks/gitlab/{environment}",
            post(crate::webhooks::gitlab).layer(DefaultBodyLimit::max(crate::webhooks::MAX_BODY)),
        )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI)
}

fn created<T: serde::Serialize>(value: T) -> (StatusCode, Json<T>) {
    (StatusCode::CREATED, Json(value))
}

// ---- servers, projects, environments ---------------------------------------------------------

#[derive(Deserialize)]
struct NewKey {
    name: String,
}

/// A new SSH key of the organization; the answer carries its public key, for the servers'
/// `authorized_keys`. The private key never leaves the control plane.
async fn create_ssh_key(
    State(engine): Shared,
    Org(org): Org,
    Json(new): Json<NewKey>,
) -> ApiResult<impl IntoResponse> {
    let public_key = engine.create_ssh_key(org, &new.name)?;
    Ok(created(
        json!({ "name": new.name, "public_key": public_key }),
    ))
}

async fn get_ssh_key(
    State(engine): Shared,
    Org(org): Org,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let public_key = engine.public_key(org, &name)?;
    Ok(Json(json!({ "name": name, "public_key": public_key })))
}

/// `ssh_key` names one of the organization's SSH keys.
async fn create_server(
    State(engine): Shared,
    Org(org): Org,
    Json(new): Json<NewServer>,
) -> ApiResult<impl IntoResponse> {
    engine.public_key(org, &new.ssh_key)?;
    engine.check_server_host(&new.host)?;
    if let Some(key) = &new.host_key {
        engine.check_host_key(key)?;
    }
    Ok(created(engine.store.create_server(org, new)?))
}

#[derive(Deserialize)]
struct HostKeyPin {
    /// The OpenSSH public key line the server must offer; `null` pins the next contact's key.
    host_key: Option<String>,
}

/// Replaces a server's pinned host key (a server rebuilt on purpose): every connection is checked
/// against the pin, and a changed key is refused until its organization says so here.
async fn set_host_key(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
    Json(pin): Json<HostKeyPin>,
) -> ApiResult<impl IntoResponse> {
    if let Some(key) = &pin.host_key {
        engine.check_host_key(key)?;
    }
    Ok(Json(engine.store.set_host_key(
        org,
        id,
        pin.host_key.as_deref(),
    )?))
}

async fn list_servers(State(engine): Shared, Org(org): Org) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.servers(org)?))
}

async fn get_server(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.server(org, id)?))
}

#[derive(Deserialize)]
struct NewToken {
    label: String,
    /// Days until it stops opening anything; without it, until revoked.
    #[serde(default)]
    expires_in_days: Option<u32>,
}

/// A new token of the organization, shown once.
async fn create_token(
    State(engine): Shared,
    Org(org): Org,
    Json(new): Json<NewToken>,
) -> ApiResult<impl IntoResponse> {
    if new.label.is_empty() || new.label.len() > 200 {
        return Err(ApiError::bad_request("label: 1 to 200 characters"));
    }
    let expires_at = new
        .expires_in_days
        .map(|days| berth_state::now_ms() + i64::from(days.max(1)) * 86_400_000);
    let (info, token) = engine
        .store
        .create_token_until(org, &new.label, expires_at)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "info": info })),
    ))
}

async fn list_tokens(State(engine): Shared, Org(org): Org) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.tokens(org)?))
}

/// Revokes one of the organization's tokens (the one making the request too, if it is named).
async fn revoke_token(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    engine.store.revoke_token(org, id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct NewProject {
    name: String,
}

async fn create_project(
    State(engine): Shared,
    Org(org): Org,
    Json(new): Json<NewProject>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(engine.store.create_project(org, &new.name)?))
}

async fn list_projects(State(engine): Shared, Org(org): Org) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.projects(org)?))
}

async fn get_project(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.project(org, id)?))
}

async fn create_environment(
    State(engine): Shared,
    Org(org): Org,
    Path(project): Path<i64>,
    Json(new): Json<NewEnvironment>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(engine.store.create_environment(org, project, new)?))
}

async fn list_environments(
    State(engine): Shared,
    Org(org): Org,
    Path(project): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.environments(org, project)?))
}

async fn get_environment(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.environment(org, id)?))
}

/// Changes some of an environment's settings. A setting it keeps for life is refused by name with
/// the reason (422); an unknown field or an empty change is a bad request (400). Nothing is
/// deployed: the answer says whether a redeploy is needed, and for which settings.
async fn update_environment(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Some(fields) = body.as_object() else {
        return Err(ApiError::bad_request(
            "the change is a JSON object of settings",
        ));
    };
    // The environment is looked up first: another organization's answers 404 whatever is asked.
    engine.store.environment(org, id)?;
    if let Some((field, why)) = FIXED_SETTINGS.iter().find(|(f, _)| fields.contains_key(*f)) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field} cannot be changed: {why}"),
        ));
    }
    let patch: EnvironmentPatch =
        serde_json::from_value(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if patch.is_empty() {
        return Err(ApiError::bad_request("the change names no setting"));
    }
    Ok(Json(engine.store.update_environment(org, id, &patch)?))
}

// ---- repositories, plugins, grants -----------------------------------------------------------

#[derive(Deserialize)]
struct RepositoryRequest {
    /// `organization` or `project` (platform repositories are the platform operator's).
    level: RepositoryLevel,
    project_id: Option<i64>,
    name: String,
    url: String,
    branch: Option<String>,
}

async fn add_repository(
    State(engine): Shared,
    Org(org): Org,
    Json(request): Json<RepositoryRequest>,
) -> ApiResult<impl IntoResponse> {
    engine.check_repository_url(&request.url)?;
    // Each repository is exported to a folder named after it: no two an environment deploys may
    // share a name, whatever their level.
    if engine
        .store
        .repositories(org)?
        .iter()
        .any(|r| r.name == request.name)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a repository named {:?} exists already", request.name),
        ));
    }
    let (organization_id, project_id) = match request.level {
        RepositoryLevel::Platform => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "platform repositories are added by the platform's operator (`POST /v1/operator/repositories`)",
            ));
        }
        RepositoryLevel::Organization => (Some(org), None),
        RepositoryLevel::Project => {
            let project = request
                .project_id
                .ok_or_else(|| ApiError::bad_request("a project repository needs project_id"))?;
            engine.store.project(org, project)?;
            (None, Some(project))
        }
    };
    let repository = engine.store.add_repository(NewRepository {
        level: request.level,
        organization_id,
        project_id,
        name: request.name,
        url: request.url,
        branch: request.branch,
    })?;
    Ok(created(repository))
}

async fn list_repositories(State(engine): Shared, Org(org): Org) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.repositories(org)?))
}

/// The body is the component's bytes (`Content-Type: application/wasm`).
async fn upload_plugin(
    State(engine): Shared,
    Org(org): Org,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    Ok(created(engine.upload_plugin(org, &body).await?))
}

async fn list_plugins(State(engine): Shared, Org(org): Org) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.plugins(org)?))
}

#[derive(Deserialize)]
struct GrantBody {
    plugin: String,
    capability: String,
    /// The environment the grant covers; the whole organization when absent.
    environment_id: Option<i64>,
    /// The server a server-wide capability (`ssh.*`) is granted for: its only scope.
    server_id: Option<i64>,
}

/// Within the organization's ceiling, the grant (201); beyond it, a request the operator decides
/// (202 with the request).
async fn add_grant(
    State(engine): Shared,
    Org(org): Org,
    Json(request): Json<GrantBody>,
) -> ApiResult<axum::response::Response> {
    if let Err(e) = request.capability.parse::<berth_runtime::Capability>() {
        return Err(ApiError::bad_request(e.to_string()));
    }
    let outcome = engine.ask_grant(NewGrantRequest {
        organization_id: org,
        plugin: request.plugin,
        capability: request.capability,
        environment_id: request.environment_id,
        server_id: request.server_id,
    })?;
    Ok(match outcome {
        GrantOutcome::Granted(grant) => created(grant).into_response(),
        GrantOutcome::Requested(request) => (StatusCode::ACCEPTED, Json(request)).into_response(),
    })
}

/// The organization's grant requests (newest first), pending and decided.
async fn list_grant_requests(State(engine): Shared, Org(org): Org) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.grant_requests(Some(org), None)?))
}

// ---- deploys and runs ------------------------------------------------------------------------

async fn deploy(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    let environment = engine.store.environment(org, id)?;
    let operation = if environment.deployed {
        Operation::Redeploy
    } else {
        Operation::FirstDeploy
    };
    let run = engine.start(org, id, operation, "api", RunInputs::None)?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

async fn list_runs(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
    Query(query): Query<Limit>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(engine.store.runs(
        org,
        id,
        query.limit.unwrap_or(50),
    )?))
}

async fn get_run(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    let run = engine.store.run(org, id)?;
    let steps = engine.store.steps(id)?;
    let mut body = serde_json::to_value(run).map_err(|e| ApiError::bad_request(e.to_string()))?;
    body["steps"] = serde_json::to_value(steps).unwrap_or(Value::Null);
    Ok(Json(body))
}

async fn cancel_run(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    engine.store.run(org, id)?;
    let live = engine.cancel(id)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": id, "cancel_requested": true, "in_progress": live })),
    ))
}

/// Live events of a run as Server-Sent Events: what was recorded so far (after `Last-Event-ID`
/// when reconnecting), then each new event as it happens; the stream ends with the run.
async fn run_events(
    State(engine): Shared,
    Org(org): Org,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    engine.store.run(org, id)?;
    let slot = engine.open_stream(org)?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    // Subscribe before reading the backlog, so nothing falls between the two.
    let live = engine.subscribe(id);
    let backlog = engine.store.events(id, after, 100_000)?;
    let state = EventStream {
        engine: engine.clone(),
        run_id: id,
        last: after,
        backlog: backlog.into_iter().collect(),
        live,
        done: false,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        Some((Ok(event), state))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct EventStream {
    engine: Arc<Engine>,
    run_id: i64,
    last: i64,
    backlog: std::collections::VecDeque<berth_state::Event>,
    live: Option<tokio::sync::broadcast::Receiver<berth_state::Event>>,
    done: bool,
    /// Given back when the client goes away or the stream ends.
    _slot: berth_engine::StreamSlot,
}

impl EventStream {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if self.done {
                return None;
            }
            let event = match self.backlog.pop_front() {
                Some(event) => event,
                None => match &mut self.live {
                    Some(live) => match live.recv().await {
                        Ok(event) => event,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            // Too slow for the live stream: catch up from the store.
                            let missed = self
                                .engine
                                .store
                                .events(self.run_id, self.last, 100_000)
                                .ok()?;
                            self.backlog.extend(missed);
                            continue;
                        }
                        Err(_) => {
                            // The run ended between reads: whatever is left is in the store.
                            self.live = None;
                            let rest = self
                                .engine
                                .store
                                .events(self.run_id, self.last, 100_000)
                                .ok()?;
                            if rest.is_empty() {
                                return None;
                            }
                            self.backlog.extend(rest);
                            continue;
                        }
                    },
                    None => return None,
                },
            };
            if event.id <= self.last {
                continue;
            }
            self.last = event.id;
            if event.data.get("finished") == Some(&Value::Bool(true)) {
                self.done = true;
            }
            let data = serde_json::to_string(&event).unwrap_or_default();
            return Some(
                SseEvent::default()
                    .id(event.id.to_string())
                    .event(event_kind(&event))
                    .data(data),
            );
        }
    }
}

fn event_kind(event: &berth_state::Event) -> String {
    serde_json::to_value(event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "log".into())
}
