//! Bearer tokens: each belongs to one organization ([`Org`]) or to the operator ([`Operator`]);
//! the store keeps only their SHA-256. The two never stand in for each other: an organization's
//! token is refused by every operator route, and the operator's is no organization's.

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
        let token = bearer(parts)?;
        engine
            .store
            .token_organization(token)?
            .map(Org)
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

/// The request's token is the operator's.
#[derive(Clone, Copy, Debug)]
pub struct Operator;

impl FromRequestParts<Arc<Engine>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Arc<Engine>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if engine.store.is_operator_token(token)? {
            return Ok(Operator);
        }
        if engine.store.token_organization(token)?.is_some() {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "this is the operator's: an organization's token does not reach it",
            ));
        }
        Err(ApiError::unauthorized("unknown token"))
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let token = header.strip_prefix("Bearer ").ok_or_else(|| {
        ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
    })?;
    Ok(token.trim())
}
