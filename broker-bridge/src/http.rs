//! The bridge's HTTP endpoint: `/metrics` (Prometheus), `/healthz` (the process runs),
//! `/readyz` (connected to NATS and not shutting down).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    nats: async_nats::Client,
    metrics: Option<PrometheusHandle>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let (nats, metrics, stop) = (nats.clone(), metrics.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &nats, metrics.as_ref(), &stop);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    nats: &async_nats::Client,
    metrics: Option<&PrometheusHandle>,
    stop: &CancellationToken,
) -> Response<Full<Bytes>> {
    let (status, body) = match (request.method().as_str(), request.uri().path()) {
        ("GET", "/healthz") => (StatusCode::OK, "ok\n".to_owned()),
        ("GET", "/readyz") => {
            if stop.is_cancelled() {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_owned())
            } else if nats.connection_state() != async_nats::connection::State::Connected {
                (StatusCode::SERVICE_UNAVAILABLE, "nats disconnected\n".to_owned())
            } else {
                (StatusCode::OK, "ready\n".to_owned())
            }
        }
        ("GET", "/metrics") => match metrics {
            Some(handle) => (StatusCode::OK, handle.render()),
            None => (StatusCode::NOT_FOUND, "metrics are not enabled\n".to_owned()),
        },
        (_, path) => (StatusCode::NOT_FOUND, format!("no route for {path}\n")),
    };
    Response::builder().status(status).body(Full::new(Bytes::from(body))).expect("static response")
}
