//! A reference ThreadSpace WebSocket client, used by loadgen, the end-to-end tests and the
//! local-stack demo.
//!
//! A background task owns the read half and forwards decoded frames into a bounded queue, so
//! `recv` may time out without cancelling a half-read frame (fastwebsockets' `read_frame` is not
//! cancel-safe). When the queue is full the reader stops reading the socket, which is how a test
//! plays a client that cannot keep up.
//!
//! The upgrade request is written straight onto the TCP stream and the response parsed with
//! `httparse`, so a connection is a bare `TcpStream` split into owned halves: no hyper connection
//! task, no boxed `Upgraded` and no lock around the read half. loadgen keeps 75,000 of these, and
//! every kilobyte per connection is 75 MB.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket, WebSocketError};
use hyper::Uri;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Mutex};

use threadspace_protocol::frames::{ClientFrame, Resume, ServerFrame, Welcome};

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// `ws://host:port/path`.
    pub url: String,
    /// `Origin` header to send, as a browser would.
    pub origin: Option<String>,
    /// Source address to bind (loadgen spreads connections over 127.0.0.0/8).
    pub local_addr: Option<IpAddr>,
    /// `SO_RCVBUF` for the socket; small values make a non-reading client back up quickly.
    pub recv_buffer: Option<u32>,
    /// Frames buffered between the reader task and `recv`.
    pub queue: usize,
    /// Answer the server's pings (a client that does not is eventually closed as idle).
    pub auto_pong: bool,
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            origin: None,
            local_addr: None,
            recv_buffer: None,
            queue: 4096,
            auto_pong: true,
        }
    }
}

/// What the reader task saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    Frame(ServerFrame),
    /// A text frame that is not a known server frame.
    Undecodable(String),
    /// The server closed the connection with this code and reason.
    Close {
        code: u16,
        reason: String,
    },
    /// The connection failed without a close frame.
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid url {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("websocket upgrade with {url} failed: {reason}")]
    Upgrade { url: String, reason: String },
    #[error("cannot write to the websocket")]
    Write(#[source] WebSocketError),
    #[error("timed out after {0:?} waiting for a frame")]
    Timeout(Duration),
    #[error("connection ended: {0:?}")]
    Ended(Option<Incoming>),
    #[error("expected {expected}, got {got:?}")]
    Unexpected { expected: &'static str, got: Box<Incoming> },
}

type Writer = fastwebsockets::WebSocketWrite<OwnedWriteHalf>;

/// Largest upgrade response accepted.
const MAX_UPGRADE_RESPONSE: usize = 8 * 1024;

/// One client connection.
pub struct Client {
    writer: Arc<Mutex<Writer>>,
    /// Boxed: a queue block holds 32 slots, and an unboxed `Incoming` is hundreds of bytes.
    incoming: mpsc::Receiver<Box<Incoming>>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Connects and completes the WebSocket handshake (no `hello` yet).
    pub async fn connect(options: &ConnectOptions) -> Result<Self, ClientError> {
        let url_error = |reason| ClientError::Url { url: options.url.clone(), reason };
        let uri: Uri = options.url.parse().map_err(|_| url_error("not a URI"))?;
        if uri.scheme_str() != Some("ws") {
            return Err(url_error("scheme must be ws"));
        }
        let host = uri.host().ok_or_else(|| url_error("missing host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let addr: SocketAddr = tokio::net::lookup_host((host, port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| url_error("host does not resolve"))?;
        let connect_error = |source| ClientError::Connect { addr: addr.to_string(), source };
        let socket =
            if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(connect_error)?;
        if let Some(size) = options.recv_buffer {
            socket.set_recv_buffer_size(size).map_err(connect_error)?;
        }
        if let Some(ip) = options.local_addr {
            // Without this, `bind(ip, 0)` reserves a port for every destination at once, and
            // with tens of thousands bound the kernel's search for a free one took half the
            // CPU of a 2-core box (loadgen hit that wall at ~56,000 connections). With it the
            // port is chosen at connect time, per 4-tuple.
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)
                .map_err(|errno| connect_error(std::io::Error::from(errno)))?;
            socket.bind(SocketAddr::new(ip, 0)).map_err(connect_error)?;
        }
        let stream: TcpStream = socket.connect(addr).await.map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;

        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let stream = upgrade(stream, &format!("{host}:{port}"), path, options.origin.as_deref())
            .await
            .map_err(|reason| ClientError::Upgrade { url: options.url.clone(), reason })?;
        Ok(Self::from_websocket(
            WebSocket::after_handshake(stream, Role::Client),
            options.queue,
            options.auto_pong,
        ))
    }

    fn from_websocket(ws: WebSocket<TcpStream>, queue: usize, auto_pong: bool) -> Self {
        let (mut read, write) = ws.split(TcpStream::into_split);
        read.set_auto_close(true);
        read.set_auto_pong(auto_pong);
        let writer = Arc::new(Mutex::new(write));
        let (tx, incoming) = mpsc::channel(queue.max(1));
        let reader_writer = writer.clone();
        // The reader ends when the socket ends or when `Client` is dropped (the task is aborted).
        let reader = tokio::spawn(async move {
            // Pongs and close echoes are best effort: after a server close the socket may
            // already be gone, and that must not hide the close frame we just read.
            let mut obligated = |frame: Frame<'static>| {
                let writer = reader_writer.clone();
                async move {
                    let _ = writer.lock().await.write_frame(frame).await;
                    Ok::<(), WebSocketError>(())
                }
            };
            loop {
                let item = match read.read_frame(&mut obligated).await {
                    Ok(frame) => match frame.opcode {
                        OpCode::Text => match serde_json::from_slice::<ServerFrame>(&frame.payload) {
                            Ok(decoded) => Incoming::Frame(decoded),
                            Err(_) => {
                                Incoming::Undecodable(String::from_utf8_lossy(&frame.payload).into_owned())
                            }
                        },
                        OpCode::Close => {
                            let payload = &frame.payload[..];
                            let code = if payload.len() >= 2 {
                                u16::from_be_bytes([payload[0], payload[1]])
                            } else {
                                1005
                            };
                            let reason =
                                String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                            let _ = tx.send(Box::new(Incoming::Close { code, reason })).await;
                            return;
                        }
                        _ => continue,
                    },
                    Err(error) => {
                        let _ = tx.send(Box::new(Incoming::Failed(error.to_string()))).await;
                        return;
                    }
                };
                if tx.send(Box::new(item)).await.is_err() {
                    return;
                }
            }
        });
        Self { writer, incoming, reader }
    }

    /// Sends one client frame.
    pub async fn send(&self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text = serde_json::to_vec(frame).expect("client frames serialize");
        self.send_raw(OpCode::Text, true, text).await
    }

    /// Sends arbitrary text (for malformed-input tests).
    pub async fn send_text(&self, text: &str) -> Result<(), ClientError> {
        self.send_raw(OpCode::Text, true, text.as_bytes().to_vec()).await
    }

    /// Sends one raw frame: any opcode, fragmented or not.
    pub async fn send_raw(&self, opcode: OpCode, fin: bool, payload: Vec<u8>) -> Result<(), ClientError> {
        let frame = Frame::new(fin, opcode, None, Payload::Owned(payload));
        self.writer.lock().await.write_frame(frame).await.map_err(ClientError::Write)
    }

    /// Waits up to `timeout` for the next incoming item.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Incoming, ClientError> {
        match tokio::time::timeout(timeout, self.incoming.recv()).await {
            Ok(Some(item)) => Ok(*item),
            Ok(None) => Err(ClientError::Ended(None)),
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    /// Waits for the next server frame; a close or failure is an error.
    pub async fn recv_frame(&mut self, timeout: Duration) -> Result<ServerFrame, ClientError> {
        match self.recv(timeout).await? {
            Incoming::Frame(frame) => Ok(frame),
            other => Err(ClientError::Ended(Some(other))),
        }
    }

    /// Sends `hello` and waits for `welcome`.
    pub async fn hello(
        &mut self,
        token: &str,
        resume: Option<Resume>,
        timeout: Duration,
    ) -> Result<Welcome, ClientError> {
        self.send(&ClientFrame::Hello { token: token.to_owned(), resume }).await?;
        match self.recv(timeout).await? {
            Incoming::Frame(ServerFrame::Welcome(welcome)) => Ok(welcome),
            other => Err(ClientError::Unexpected { expected: "welcome", got: Box::new(other) }),
        }
    }

    /// Sends a close frame with `code`; the server's close follows on `recv`.
    pub async fn close(&self, code: u16) -> Result<(), ClientError> {
        let frame = Frame::close(code, b"");
        self.writer.lock().await.write_frame(frame).await.map_err(ClientError::Write)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The client half of the WebSocket upgrade (RFC 6455 §4.1) on a fresh TCP stream: writes the
/// request, reads the response headers and checks that they switch protocols. The server speaks
/// only after the client's `hello`, so bytes after the headers are a protocol error.
async fn upgrade(
    mut stream: TcpStream,
    host: &str,
    path: &str,
    origin: Option<&str>,
) -> Result<TcpStream, String> {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
        fastwebsockets::handshake::generate_key()
    );
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("cannot send the request: {e}"))?;
    let mut buffer = Vec::with_capacity(512);
    loop {
        if buffer.len() >= MAX_UPGRADE_RESPONSE {
            return Err(format!("response headers longer than {MAX_UPGRADE_RESPONSE} bytes"));
        }
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await.map_err(|e| format!("cannot read the response: {e}"))?;
        if n == 0 {
            return Err("connection closed before the response ended".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buffer) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(length)) => {
                let code = response.code.unwrap_or(0);
                if code != 101 {
                    return Err(format!("status {code} instead of 101 Switching Protocols"));
                }
                let upgrade = response.headers.iter().find(|h| h.name.eq_ignore_ascii_case("upgrade"));
                if !upgrade.is_some_and(|h| h.value.eq_ignore_ascii_case(b"websocket")) {
                    return Err("the response does not upgrade to websocket".into());
                }
                if length != buffer.len() {
                    return Err("the server sent data before the client's hello".into());
                }
                return Ok(stream);
            }
            Err(e) => return Err(format!("malformed response: {e}")),
        }
    }
}
