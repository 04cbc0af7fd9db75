//! The REST half of the reference client: minimal HTTP/1.0 requests to the api service (and to
//! any `/metrics`, `/readyz` endpoint), enough for tests, loadgen and the local-stack demo. The
//! API itself is described by the OpenAPI document the api service serves at
//! `/v1/openapi.json` (docs/api.md).

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET path` on 127.0.0.1:port; the status code, or `None` if unreachable.
pub async fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).await.map(|(status, _)| status)
}

/// A minimal HTTP/1.0 GET (readiness probes need nothing more); status and body.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_request(port, "GET", path, None).await
}

/// The sum of every series of metric `name` on `127.0.0.1:port/metrics` whose labels contain
/// `labels` (e.g. `kind="full"`; empty for all); `None` if the endpoint is unreachable.
pub async fn metric_sum(port: u16, name: &str, labels: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics").await?;
    Some(
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.split(' ').next().is_some_and(|series| series.contains(labels)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// A minimal HTTP/1.0 request with an optional bearer token; status and body.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> Option<(u16, String)> {
    http_send(port, method, path, bearer, None).await.map(|r| (r.status, r.body))
}

/// An HTTP answer.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines as `(lower-case name, value)`.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.0 request with an optional bearer token and an optional body
/// `(content type, bytes)`; 10 s timeout.
pub async fn http_send(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Option<HttpResponse> {
    http_send_within(port, method, path, bearer, body, Duration::from_secs(10)).await
}

/// [`http_send`] with its own timeout (a request that may queue: a login burst).
pub async fn http_send_within(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Option<HttpResponse> {
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let (content_type, bytes) = match body {
        Some((kind, bytes)) => (format!("Content-Type: {kind}\r\n"), bytes),
        None => (String::new(), &[][..]),
    };
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}{content_type}Content-Length: {}\r\n\r\n",
            bytes.len()
        );
        stream.write_all(head.as_bytes()).await.ok()?;
        stream.write_all(bytes).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Some(HttpResponse { status, headers, body: body.to_owned() })
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}
