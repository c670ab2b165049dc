//! API errors: one JSON shape (`{"error": {"code", "message"}}`) with the right status, and Retry-After on 503.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::compute::ComputeError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// The compute worker's queue is full: explicit backpressure, counted in /metrics.
    pub fn busy(message: impl Into<String>) -> ApiError {
        crate::metrics::global().api_busy.inc();
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, code: "busy", message: message.into(), retry_after: Some(1) }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        match e.downcast_ref::<ComputeError>() {
            Some(ComputeError::Busy(_)) => ApiError::busy(e.to_string()),
            Some(ComputeError::Unavailable(_)) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                message: format!("{e:#}"),
                retry_after: Some(30),
            },
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{e:#}")),
        }
    }
}

impl From<ComputeError> for ApiError {
    fn from(e: ComputeError) -> ApiError {
        ApiError::from(anyhow::Error::from(e))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "database", format!("database: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        resp
    }
}
