//! Bearer tokens: each belongs to one organization; the store keeps only its SHA-256.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use berth_engine::Engine;

use crate::error::ApiError;

/// The organization the request's token belongs to.
#[derive(Clone, Copy, Debug)]
pub struct Org(pub i64);

impl FromRequestParts<Arc<Engine>> for Org {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Arc<Engine>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
        })?;
        engine
            .store
            .token_organization(token.trim())?
            .map(Org)
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}
