//! The opening of a connection: upgrade, `hello` within the deadline, authentication (one
//! rule, in `threadspace_auth`), registration in the hub, `welcome`; then the writer starts.

use std::sync::Arc;

use fastwebsockets::{Frame, OpCode, Payload, Role};
use threadspace_auth::{authenticate_from, AuthError};
use threadspace_protocol::error_chain;
use threadspace_protocol::frames::{
    close_code, decode_client_frame, hello_shape, ClientFrame, ErrorCode, HelloShape, Limits, PresenceEntry,
    PresenceStatus, Resume, ServerFrame, Welcome,
};
use threadspace_protocol::token::Identity;
use threadspace_store::directory::Session;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::delivery::hub::{Admission, ConnHandle, Stale};
use crate::edge::assembler::Assembler;
use crate::edge::frame_reader::FrameReader;
use crate::edge::wire::{close_early, close_for, close_reply, write_text, WsRead, WsWrite, ABNORMAL};
use crate::edge::write::write_loop;
use crate::edge::Edge;
use crate::metrics as m;

/// A connection past its welcome: what the reader keeps, and the writer task.
pub(crate) struct Opened {
    pub read: WsRead,
    pub handle: Arc<ConnHandle>,
    pub assembler: Assembler,
    pub writer: tokio::task::JoinHandle<()>,
}

/// Upgrade, hello, authentication, registration, welcome; then spawns the writer.
pub(crate) async fn open(edge: &Arc<Edge>, upgrade: fastwebsockets::upgrade::UpgradeFut) -> Option<Opened> {
    let io = match upgrade.await {
        Ok(ws) => ws.into_inner(),
        Err(error) => {
            debug!(%error, "websocket upgrade did not complete");
            return None;
        }
    };
    metrics::counter!(m::CONNECTIONS_ACCEPTED).increment(1);
    // Reads go through our buffer-less FrameReader (see frame_reader.rs); fastwebsockets writes.
    // Its read half is built on an empty reader and dropped at once, with its buffer.
    let (read_half, write_half) = tokio::io::split(io);
    let (_, mut write) = fastwebsockets::after_handshake_split(tokio::io::empty(), write_half, Role::Server);
    // Vectored writes for every frame with a payload: the non-vectored path keeps a write
    // buffer as large as the largest frame written, for the life of the connection.
    write.set_writev_threshold(0);
    let mut read = FrameReader::new(read_half, edge.settings.max_frame_bytes);
    let mut assembler = Assembler::new(edge.settings.max_message_bytes);

    let (hello, resume) = await_hello(edge, &mut read, &mut write, &mut assembler).await?;
    // A directory read older than an event the hub already applied would miss that event
    // (hub.rs, module invariant): read again. Changes to one org come at human speed, so a
    // second read is rare and a third rarer; an org changing faster than hellos can read it is
    // told to retry rather than admitted with a stale view.
    let mut attempts = 0;
    let (session, registration) = loop {
        attempts += 1;
        let (identity, session) = authenticated(edge, &hello, &mut write).await?;
        let who = Admission {
            user: session.user.id,
            org: session.user.org,
            login_session: identity.session.unwrap_or(0),
            dir_version: Some(session.dir_version),
        };
        match edge.hub.admit(who, &session.channels, &edge.connections, edge.hub.now_ms()) {
            Ok(registration) => break (session, registration),
            Err(Stale) if attempts < MAX_ADMISSIONS => metrics::counter!(m::HELLO_REREADS).increment(1),
            Err(Stale) => {
                warn!(user = %session.user.id, org = %session.user.org, "directory changing faster than a hello can read it");
                let busy = ServerFrame::error(ErrorCode::Unavailable, None, "directory busy; retry later");
                refuse(edge, &mut write, busy, close_code::INTERNAL).await;
                return None;
            }
        }
    };
    drop(hello);

    let handle = registration.handle;
    edge.presence.touched(handle.user);
    // Read after registering: a change from here on also reaches this connection.
    let mut presence = edge.presence.snapshot(handle.org);
    // The user is online through this very connection, whether or not the merged table has
    // heard of it yet (it hears within a tick): the snapshot says so (protocol.md, welcome).
    presence.retain(|entry| entry.user != handle.user);
    presence.push(PresenceEntry { user: handle.user, status: PresenceStatus::Online });
    presence.sort_unstable_by_key(|entry| entry.user);
    let welcome = ServerFrame::Welcome(Welcome {
        user: session.user,
        session_id: handle.id,
        channels: session.channels,
        limits: Limits {
            max_frame_bytes: edge.settings.max_frame_bytes,
            max_body_bytes: edge.settings.max_body_bytes,
            sends_per_second: edge.settings.sends_per_second,
            send_burst: edge.settings.send_burst,
        },
        heartbeat_ms: edge.settings.heartbeat.as_millis() as u64,
        head_seq: registration.head_seq,
        presence,
    });
    let result = match resume {
        Some(_) => "replayed",
        None => "fresh",
    };
    metrics::counter!(m::RESUMES, "result" => result).increment(1);
    debug!(conn_id = handle.id, user = %handle.user, head_seq = registration.head_seq, "connection authenticated");

    if write_text(edge.settings.write_timeout, &mut write, &welcome.encode()).await.is_err() {
        handle.kill(ABNORMAL);
        closed(edge, &handle);
        return None;
    }
    let writer = edge.tracker.spawn(write_loop(
        edge.clone(),
        write,
        handle.clone(),
        resume.map(|r| (r, registration.head_seq)),
    ));
    Some(Opened { read, handle, assembler, writer })
}

/// Removes an ended connection from the hub and counts why it ended.
pub(crate) fn closed(edge: &Edge, handle: &ConnHandle) {
    edge.hub.deregister(handle);
    edge.presence.touched(handle.user);
    let code = handle.close_code();
    metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => m::close_reason(code)).increment(1);
    debug!(conn_id = handle.id, user = %handle.user, code, reason = m::close_reason(code), "connection closed");
}

/// Reads frames until a complete `hello` within the hello deadline.
async fn await_hello(
    edge: &Edge,
    read: &mut WsRead,
    write: &mut WsWrite,
    assembler: &mut Assembler,
) -> Option<(String, Option<Resume>)> {
    let deadline = Instant::now() + edge.settings.hello_timeout;
    loop {
        let frame = match tokio::time::timeout_at(deadline, read.read_frame()).await {
            Err(_) => {
                close_early(
                    edge.settings.write_timeout,
                    write,
                    close_code::HELLO_TIMEOUT,
                    "no hello within the deadline",
                )
                .await;
                return None;
            }
            Ok(Err(error)) => {
                close_early(edge.settings.write_timeout, write, close_for(&error), "invalid websocket frame")
                    .await;
                return None;
            }
            Ok(Ok(frame)) => frame,
        };
        match frame.opcode {
            OpCode::Ping => {
                if write.write_frame(Frame::pong(Payload::Owned(frame.payload))).await.is_err() {
                    return None;
                }
            }
            OpCode::Pong => {}
            OpCode::Close => {
                let code = close_reply(&frame.payload);
                close_early(edge.settings.write_timeout, write, code, m::close_reason(code)).await;
                return None;
            }
            _ => match assembler.push(frame) {
                Ok(None) => {}
                Ok(Some((OpCode::Text, bytes))) => {
                    return match decode_client_frame(&bytes) {
                        Ok(ClientFrame::Hello { token, resume }) => Some((token, resume)),
                        Ok(_) => {
                            refuse(
                                edge,
                                write,
                                ServerFrame::error(
                                    ErrorCode::HelloRequired,
                                    None,
                                    "the first frame must be hello",
                                ),
                                close_code::HELLO_REQUIRED,
                            )
                            .await;
                            None
                        }
                        Err(error) => {
                            // protocol.md: anything but a hello (another op, or not JSON at all)
                            // is hello_required; a hello without a token is an auth failure; a
                            // hello with another bad field names it.
                            let (code, message) = match hello_shape(&bytes) {
                                HelloShape::NoToken => {
                                    reject_token(edge, write, "hello has no token (a string)").await;
                                    return None;
                                }
                                HelloShape::Hello => (error.code, error.message),
                                HelloShape::NotHello => (
                                    ErrorCode::HelloRequired,
                                    format!("the first frame must be hello ({})", error.message),
                                ),
                            };
                            refuse(
                                edge,
                                write,
                                ServerFrame::error(code, error.reference, message),
                                close_code::HELLO_REQUIRED,
                            )
                            .await;
                            None
                        }
                    };
                }
                Ok(Some(_)) => {
                    refuse(
                        edge,
                        write,
                        ServerFrame::error(ErrorCode::BadFrame, None, "binary frames are not supported"),
                        close_code::HELLO_REQUIRED,
                    )
                    .await;
                    return None;
                }
                Err(error) => {
                    close_early(edge.settings.write_timeout, write, error.close_code(), error.reason()).await;
                    return None;
                }
            },
        }
    }
}

/// Directory reads a hello makes before it gives up (`unavailable`: the client retries).
const MAX_ADMISSIONS: u32 = 4;

/// Authenticates the hello's token (the one rule, `threadspace_auth::authenticate`); on
/// failure answers and closes.
async fn authenticated(edge: &Edge, token: &str, write: &mut WsWrite) -> Option<(Identity, Session)> {
    let keys = edge.keys.current();
    match authenticate_from(&keys, token, |user, login_session| edge.sessions.session(user, login_session))
        .await
    {
        Ok(authenticated) => {
            metrics::counter!(m::AUTH, "result" => "ok").increment(1);
            Some(authenticated)
        }
        Err(error @ (AuthError::Token(_) | AuthError::NoSession { .. })) => {
            debug!(error = %error_chain(&error), "token rejected");
            reject_token(edge, write, "token rejected").await;
            None
        }
        Err(error @ AuthError::Unavailable(_)) => {
            warn!(error = %error_chain(&error), "directory unavailable at hello");
            refuse(
                edge,
                write,
                ServerFrame::error(ErrorCode::Unavailable, None, "directory unavailable; retry later"),
                close_code::INTERNAL,
            )
            .await;
            None
        }
    }
}

/// Refuses a hello whose token (or the user it names) is not acceptable. The client learns
/// only `auth_failed`; the log says why.
async fn reject_token(edge: &Edge, write: &mut WsWrite, message: &str) {
    metrics::counter!(m::AUTH, "result" => "rejected").increment(1);
    let error = ServerFrame::error(ErrorCode::AuthFailed, None, message);
    refuse(edge, write, error, close_code::AUTH_FAILED).await;
}

/// Answers a failed hello with an `error` frame, then closes with `close`.
async fn refuse(edge: &Edge, write: &mut WsWrite, error: ServerFrame, close: u16) {
    if let ServerFrame::Error { code, .. } = &error {
        metrics::counter!(m::ERRORS, "code" => code.as_str()).increment(1);
    }
    let _ = write_text(edge.settings.write_timeout, write, &error.encode()).await;
    close_early(edge.settings.write_timeout, write, close, m::close_reason(close)).await;
}
