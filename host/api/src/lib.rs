//! Berth's HTTP API (axum): REST for organizations' objects, git push webhooks, live run events.
//!
//! Handlers are thin: authentication is one extractor ([`auth::Org`], a bearer token scoped to one
//! organization), errors are one type ([`error::ApiError`]) mapped to status codes once, and every
//! lookup goes through the state store's organization-scoped queries, so a token of organization A
//! gets 404 on organization B's objects. The OpenAPI document is served at `/v1/openapi.json`.
//!
//! Deploys answer `202 Accepted` with the run; a second deploy of an environment whose run is in
//! progress answers `409 Conflict` with `{"error": "busy: run N in progress", "run_id": N}` —
//! requests are refused, not queued, so a caller always knows which run its request became.

pub mod auth;
mod backups;
pub mod error;
mod operator;
mod routes;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use berth_engine::Engine;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The application: every route, sharing the engine.
pub fn app(engine: Arc<Engine>) -> Router {
    routes::router().with_state(engine)
}
