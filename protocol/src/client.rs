//! A reference ThreadSpace WebSocket client, used by loadgen, the end-to-end tests and the
//! local-stack demo.
//!
//! A background task owns the read half and forwards decoded frames into a bounded queue, so
//! `recv` may time out without cancelling a half-read frame (fastwebsockets' `read_frame` is not
//! cancel-safe). When the queue is full the reader stops reading the socket, which is how a test
//! plays a client that cannot keep up.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError};
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, ORIGIN, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::WriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Mutex};

use crate::frames::{ClientFrame, Resume, ServerFrame, Welcome};

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
    #[error("websocket handshake with {url} failed")]
    Handshake {
        url: String,
        #[source]
        source: WebSocketError,
    },
    #[error("cannot write to the websocket")]
    Write(#[source] WebSocketError),
    #[error("timed out after {0:?} waiting for a frame")]
    Timeout(Duration),
    #[error("connection ended: {0:?}")]
    Ended(Option<Incoming>),
    #[error("expected {expected}, got {got:?}")]
    Unexpected { expected: &'static str, got: Box<Incoming> },
}

type Writer = fastwebsockets::WebSocketWrite<WriteHalf<TokioIo<Upgraded>>>;

/// One client connection.
pub struct Client {
    writer: Arc<Mutex<Writer>>,
    incoming: mpsc::Receiver<Incoming>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
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
            socket.bind(SocketAddr::new(ip, 0)).map_err(connect_error)?;
        }
        let stream: TcpStream = socket.connect(addr).await.map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;

        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut request = Request::builder()
            .method("GET")
            .uri(path)
            .header(HOST, format!("{host}:{port}"))
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "upgrade")
            .header("Sec-WebSocket-Key", fastwebsockets::handshake::generate_key())
            .header("Sec-WebSocket-Version", "13");
        if let Some(origin) = &options.origin {
            request = request.header(ORIGIN, origin);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|_| url_error("bad request"))?;
        let (ws, _response) = fastwebsockets::handshake::client(&SpawnExecutor, request, stream)
            .await
            .map_err(|source| ClientError::Handshake { url: options.url.clone(), source })?;
        Ok(Self::from_websocket(ws, options.queue, options.auto_pong))
    }

    fn from_websocket(ws: WebSocket<TokioIo<Upgraded>>, queue: usize, auto_pong: bool) -> Self {
        let (mut read, write) = ws.split(tokio::io::split);
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
                            let _ = tx.send(Incoming::Close { code, reason }).await;
                            return;
                        }
                        _ => continue,
                    },
                    Err(error) => {
                        let _ = tx.send(Incoming::Failed(error.to_string())).await;
                        return;
                    }
                };
                if tx.send(item).await.is_err() {
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
            Ok(Some(item)) => Ok(item),
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
