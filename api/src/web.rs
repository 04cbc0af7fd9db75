//! The web client (docs/web.md): the files under `web/`, embedded into the binary at build
//! time (read from the source tree in debug builds, so editing them needs no rebuild), served
//! at `/` and `/app/…` with a strict Content-Security-Policy, and `/app/config.json`, which
//! tells the client where the gateways are.
//!
//! Every answer here carries the policy: scripts and styles only from this origin (no inline
//! script, no `eval`), nothing framed, no plugins, and WebSocket connections only to this
//! origin and the configured gateways. A message body that slipped into the DOM as HTML could
//! still not run a script.

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::RustEmbed;
use serde::Serialize;

use crate::error::ApiError;

/// The client's files (`web/`): `index.html` and `app/…`.
#[derive(RustEmbed)]
#[folder = "../web/"]
struct Assets;

/// What the web routes need: the security headers and the client's configuration, both fixed
/// at start.
#[derive(Clone)]
pub(crate) struct WebClient {
    policy: HeaderValue,
    config: bytes::Bytes,
}

/// The client's configuration (`GET /app/config.json`).
#[derive(Serialize)]
struct ClientConfig<'a> {
    /// WebSocket URLs of the gateways (absolute `ws://`/`wss://`, or a path on this origin).
    gateways: &'a [String],
    /// After this long without input the client tells the gateway it is idle.
    idle_after_ms: u64,
}

impl WebClient {
    /// The headers and config for gateways at `gateway_urls` (validated by `Config`).
    pub(crate) fn new(gateway_urls: &[String], idle_after: std::time::Duration) -> Self {
        let config = ClientConfig {
            gateways: gateway_urls,
            idle_after_ms: u64::try_from(idle_after.as_millis()).unwrap_or(u64::MAX),
        };
        let config = serde_json::to_vec(&config).expect("the client config serializes");
        let policy = HeaderValue::from_str(&content_security_policy(gateway_urls))
            .expect("validated gateway URLs make a valid header value");
        Self { policy, config: config.into() }
    }
}

/// The page's Content-Security-Policy: everything from this origin only, WebSocket
/// connections also to each gateway's origin (a path-only gateway URL is this origin).
fn content_security_policy(gateway_urls: &[String]) -> String {
    let mut connect = vec!["'self'".to_owned()];
    for url in gateway_urls {
        if let Some(origin) = ws_origin(url) {
            if !connect.contains(&origin) {
                connect.push(origin);
            }
        }
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {}; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'",
        connect.join(" ")
    )
}

/// `ws://host:port` of an absolute WebSocket URL; `None` for a path on this origin.
pub(crate) fn ws_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    Some(format!("{scheme}://{authority}"))
}

/// Whether `url` can be a gateway URL for the client: `ws://` or `wss://` with a host, or a
/// path on this origin. The message says what is wrong.
pub(crate) fn check_gateway_url(url: &str) -> Result<(), String> {
    let printable = |s: &str| s.chars().all(|c| c.is_ascii_graphic());
    if url.starts_with('/') && !url.starts_with("//") && printable(url) {
        return Ok(());
    }
    match url.split_once("://") {
        Some(("ws" | "wss", rest)) if printable(url) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.is_empty() || authority.contains('@') {
                Err(format!("{url:?} has no host (or carries credentials)"))
            } else {
                Ok(())
            }
        }
        _ => Err(format!("{url:?} must be a ws:// or wss:// URL, or a path such as /v1/ws")),
    }
}

/// `/`, `/app/config.json` and `/app/{file}`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(client: WebClient) -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/app/config.json", get(config))
        .route("/app/{*file}", get(asset))
        .with_state(client)
}

async fn index(State(client): State<WebClient>, headers: HeaderMap) -> Response {
    serve(&client, "index.html", &headers)
}

async fn asset(State(client): State<WebClient>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&client, &format!("app/{file}"), &headers)
}

async fn config(State(client): State<WebClient>) -> Response {
    let mut response = client.config.clone().into_response();
    secure(&client, &mut response, "application/json");
    response
}

/// One embedded file, revalidated by its content hash: the client is always current after a
/// deploy, and an unchanged file costs a 304.
fn serve(client: &WebClient, path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::not_found(format!("no file {path} in the web client")).into_response();
    };
    let tag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response =
        if fresh { StatusCode::NOT_MODIFIED.into_response() } else { file.data.into_owned().into_response() };
    secure(client, &mut response, content_type(path));
    if let Ok(tag) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(ETAG, tag);
    }
    response
}

/// The headers every web answer carries.
fn secure(client: &WebClient, response: &mut Response, content_type: &'static str) {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", client.policy.clone());
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_only_this_origin_and_the_gateways() {
        let policy = content_security_policy(&[
            "ws://127.0.0.1:18080/v1/ws".into(),
            "ws://127.0.0.1:18080/v1/ws?x".into(),
            "wss://chat.example.com/v1/ws".into(),
            "/v1/ws".into(),
        ]);
        assert!(
            policy.contains("connect-src 'self' ws://127.0.0.1:18080 wss://chat.example.com;"),
            "{policy}"
        );
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe"), "no unsafe-inline or unsafe-eval: {policy}");
    }

    #[test]
    fn gateway_urls_are_checked() {
        assert_eq!(check_gateway_url("ws://127.0.0.1:18080/v1/ws"), Ok(()));
        assert_eq!(check_gateway_url("wss://chat.example.com/v1/ws"), Ok(()));
        assert_eq!(check_gateway_url("/v1/ws"), Ok(()));
        for bad in
            ["http://x/v1/ws", "//evil.example/v1/ws", "ws:///v1/ws", "ws://u:p@host/", "ws://a b/", "v1/ws"]
        {
            assert!(check_gateway_url(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn every_client_file_has_a_known_type_and_the_page_loads_only_local_files() {
        let index = Assets::get("index.html").expect("web/index.html exists");
        let page = std::str::from_utf8(&index.data).expect("the page is UTF-8");
        assert!(!page.contains("<script>") && !page.contains("style="), "no inline script or style");
        for path in Assets::iter() {
            assert_ne!(content_type(&path), "application/octet-stream", "{path} has no content type");
        }
        for needle in ["http://", "https://", "//cdn"] {
            assert!(!page.contains(needle), "the page must not load anything remote ({needle})");
        }
    }
}
