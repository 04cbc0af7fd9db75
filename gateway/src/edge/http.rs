//! The gateway's HTTP routes: the WebSocket upgrade (`/v1/ws`), liveness (`/healthz`),
//! readiness (`/readyz`) and Prometheus metrics (`/metrics`). The REST API is the api
//! service's (api/); here every other path is 404. Error bodies have the api's shape,
//! `{"error":{"code":…,"message":…}}`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::OwnedSemaphorePermit;

use crate::edge::{conn, Edge};

pub(crate) type Body = Full<Bytes>;

/// What the routes need: the edge for upgrades, NATS for readiness, the metrics handle.
pub(crate) struct Routes {
    pub edge: Arc<Edge>,
    pub nats: async_nats::Client,
    pub metrics: Option<PrometheusHandle>,
}

/// Per-TCP-connection context: the connection-limit permit moves into the WebSocket task on
/// upgrade, so the limit counts WebSockets, not just HTTP exchanges.
pub(crate) struct ConnContext {
    pub permit: Mutex<Option<OwnedSemaphorePermit>>,
}

/// Handles one HTTP request.
pub(crate) async fn handle(
    routes: Arc<Routes>,
    ctx: Arc<ConnContext>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path();
    let response = match (path, request.method()) {
        ("/v1/ws", &Method::GET) => upgrade(&routes.edge, &ctx, request),
        ("/healthz", &Method::GET) => text(StatusCode::OK, "ok\n"),
        ("/readyz", &Method::GET) => {
            let connected = routes.nats.connection_state() == async_nats::connection::State::Connected;
            if routes.edge.hub.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !connected {
                text(StatusCode::SERVICE_UNAVAILABLE, "nats disconnected\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        ("/metrics", &Method::GET) => match &routes.metrics {
            Some(handle) => Response::builder()
                .header(CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(handle.render())))
                .expect("static response"),
            None => error(StatusCode::NOT_FOUND, "not_found", "metrics are not enabled"),
        },
        ("/v1/ws" | "/healthz" | "/readyz" | "/metrics", method) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no route for {path} (the REST API is served by threadspace-api)"),
        ),
    };
    Ok(response)
}

fn upgrade(edge: &Arc<Edge>, ctx: &ConnContext, mut request: Request<Incoming>) -> Response<Body> {
    if edge.hub.is_draining() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this gateway is draining; connect to another",
        );
    }
    if let Some(origin) = request.headers().get(ORIGIN) {
        let allowed = &edge.settings.allowed_origins;
        let ok = origin.to_str().is_ok_and(|o| allowed.iter().any(|a| a == "*" || a == o));
        if !ok {
            return error(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "the Origin of this request is not allowed",
            );
        }
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        return error(StatusCode::BAD_REQUEST, "upgrade_required", "expected a WebSocket upgrade request");
    }
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(pair) => pair,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, "bad_upgrade", &format!("invalid WebSocket upgrade: {e}"))
        }
    };
    let permit = ctx.permit.lock().expect("permit lock is never poisoned").take();
    edge.tracker.spawn(conn::serve(edge.clone(), fut, permit));
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Full::default())
}

/// A plain-text response.
fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response")
}

/// A JSON error response with a stable code.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response")
}
