//! One error type for every handler, mapped to a status code and a JSON body once.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_engine::EngineError;
use berth_state::StateError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The run in progress, for `busy` answers.
    pub run_id: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            run_id: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StateError> for ApiError {
    fn from(err: StateError) -> Self {
        let status = match &err {
            StateError::NotFound(_) => StatusCode::NOT_FOUND,
            StateError::Conflict(_) | StateError::Busy { .. } => StatusCode::CONFLICT,
            StateError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let run_id = match &err {
            StateError::Busy { run_id } => Some(*run_id),
            _ => None,
        };
        ApiError {
            status,
            message: err.to_string(),
            run_id,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::State(e) => e.into(),
            EngineError::Invalid(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            EngineError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, m),
            EngineError::Limited(m) => Self::new(StatusCode::TOO_MANY_REQUESTS, m),
            // Everything else is the control plane's own failure: logged, not shown.
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The details of an internal failure (paths, SQL) are for the operator's log only.
        if self.status.is_server_error() {
            tracing::error!("internal error: {}", self.message);
            let body =
                serde_json::json!({ "error": "internal error (see the control plane's log)" });
            return (self.status, Json(body)).into_response();
        }
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(run_id) = self.run_id {
            body["run_id"] = run_id.into();
        }
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
