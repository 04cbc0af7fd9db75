//! HTTP: the WebSocket upgrade, health and readiness, Prometheus metrics, and the REST API.
//! Routing is matchit's; every error body is `{"error":{"code":…,"message":…}}`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use threadspace_protocol::{ChannelId, UserId};
use tokio::sync::OwnedSemaphorePermit;

use crate::state::State;
use crate::{history, membership};

pub type Body = Full<Bytes>;

/// The routes, matched once per request.
#[derive(Clone, Copy, Debug)]
enum Route {
    WebSocket,
    Health,
    Ready,
    Metrics,
    ChannelMember,
    ChannelMessages,
    Search,
}

fn router() -> matchit::Router<Route> {
    let mut router = matchit::Router::new();
    for (path, route) in [
        ("/v1/ws", Route::WebSocket),
        ("/healthz", Route::Health),
        ("/readyz", Route::Ready),
        ("/metrics", Route::Metrics),
        ("/v1/channels/{channel}/members/{user}", Route::ChannelMember),
        ("/v1/channels/{channel}/messages", Route::ChannelMessages),
        ("/v1/search", Route::Search),
    ] {
        router.insert(path, route).expect("static routes do not conflict");
    }
    router
}

/// Per-TCP-connection context: the connection-limit permit moves into the WebSocket task on
/// upgrade, so the limit counts WebSockets, not just HTTP exchanges.
pub struct ConnContext {
    pub permit: Mutex<Option<OwnedSemaphorePermit>>,
}

/// Handles one HTTP request.
pub async fn handle(
    state: Arc<State>,
    ctx: Arc<ConnContext>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    thread_local! {
        static ROUTER: matchit::Router<Route> = router();
    }
    let path = request.uri().path().to_owned();
    let matched = ROUTER.with(|router| {
        router.at(&path).ok().map(|m| {
            let params: Vec<(String, String)> =
                m.params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            (*m.value, params)
        })
    });
    let Some((route, params)) = matched else {
        return Ok(error(StatusCode::NOT_FOUND, "not_found", &format!("no route for {path}")));
    };
    let response = match (route, request.method().clone()) {
        (Route::Health, Method::GET) => text(StatusCode::OK, "ok\n"),
        (Route::Ready, Method::GET) => {
            let connected = state.nats.connection_state() == async_nats::connection::State::Connected;
            if state.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !connected {
                text(StatusCode::SERVICE_UNAVAILABLE, "nats disconnected\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (Route::Metrics, Method::GET) => match &state.metrics {
            Some(handle) => Response::builder()
                .header(CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(handle.render())))
                .expect("static response"),
            None => error(StatusCode::NOT_FOUND, "not_found", "metrics are not enabled"),
        },
        (Route::WebSocket, Method::GET) => upgrade(&state, &ctx, request),
        (Route::ChannelMember, method @ (Method::PUT | Method::DELETE)) => {
            let ids = parse_ids(&params);
            match ids {
                Ok((channel, user)) => {
                    let token = bearer(&request);
                    membership::change(&state, token.as_deref(), channel, user, method == Method::PUT).await
                }
                Err(message) => error(StatusCode::BAD_REQUEST, "invalid_parameter", &message),
            }
        }
        (Route::ChannelMessages, Method::GET) => match parse_id(&params, "channel") {
            Ok(channel) => {
                let token = bearer(&request);
                history::messages(&state, token.as_deref(), ChannelId(channel), request.uri().query()).await
            }
            Err(message) => error(StatusCode::BAD_REQUEST, "invalid_parameter", &message),
        },
        (Route::Search, Method::GET) => {
            let token = bearer(&request);
            history::search(&state, token.as_deref(), request.uri().query()).await
        }
        (_, method) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{method} is not allowed on {path}"),
        ),
    };
    Ok(response)
}

/// The path's ids, or a message naming the bad parameter.
fn parse_ids(params: &[(String, String)]) -> Result<(ChannelId, UserId), String> {
    Ok((ChannelId(parse_id(params, "channel")?), UserId(parse_id(params, "user")?)))
}

/// A positive integer path parameter, or a message naming it.
fn parse_id(params: &[(String, String)], name: &str) -> Result<i64, String> {
    let raw = params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("");
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!("path parameter `{name}` must be a positive integer, got {raw:?}")),
    }
}

fn bearer(request: &Request<Incoming>) -> Option<String> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

fn upgrade(state: &Arc<State>, ctx: &ConnContext, mut request: Request<Incoming>) -> Response<Body> {
    if state.is_draining() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this gateway is draining; connect to another",
        );
    }
    if let Some(origin) = request.headers().get(ORIGIN) {
        let allowed = &state.config.allowed_origins;
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
    state.tracker.spawn(crate::conn::serve(state.clone(), fut, permit));
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Full::default())
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response")
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static response")
}

/// A JSON error response with a stable code.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": { "code": code, "message": message } }))
}
