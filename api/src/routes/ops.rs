//! Operational endpoints: liveness, readiness and Prometheus metrics. Not part of the OpenAPI
//! document (they are for orchestrators and Prometheus, not clients).

use crate::error::ApiError;
use crate::parts::{Changes, Draining, Telemetry};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub(crate) async fn health() -> &'static str {
    "ok\n"
}

/// 200 while the service can answer: not draining, NATS connected (membership changes need it).
pub(crate) async fn ready(
    State(draining): State<Draining>,
    State(changes): State<Changes>,
) -> (StatusCode, &'static str) {
    if draining.0.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if changes.feed.jetstream.client().connection_state() != async_nats::connection::State::Connected {
        (StatusCode::SERVICE_UNAVAILABLE, "nats disconnected\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

pub(crate) async fn metrics(State(telemetry): State<Telemetry>) -> Response {
    match telemetry.0 {
        Some(handle) => ([(CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => ApiError::not_found("metrics are not enabled").into_response(),
    }
}
