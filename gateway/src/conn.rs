//! One client WebSocket connection: the hello handshake, then a reader (this task) and a
//! writer task joined by the connection's bounded outbound queue.
//!
//! The reader decodes and validates client frames, enforces rate limits and publishes sends
//! (awaiting JetStream's PubAck before the `ack`). The writer owns the socket's write half: it
//! replays missed messages on resume, then writes queued frames, pings, and finally the close
//! frame whose code says why the connection ended. Two tasks, because fastwebsockets'
//! `read_frame` is not cancel-safe and so cannot sit in a `select!` beside writes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketWrite};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use threadspace_protocol::frames::{
    close_code, decode_client_frame, hello_shape, ClientFrame, ClientStatus, ErrorCode, HelloShape, Limits,
    PresenceEntry, PresenceStatus, Resume, ServerFrame, Welcome,
};
use threadspace_protocol::stored::StoredMessage;
use threadspace_protocol::{ChannelId, Seq};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::frame_reader::{FrameReader, InFrame, ReadError};
use crate::hub::{ConnHandle, OutFrame, Outbound};
use crate::limits::{Strikes, TokenBucket};
use crate::metrics as m;
use crate::publish::Published;
use crate::replay;
use crate::state::{anyhow_chain, State};

pub type WsRead = FrameReader<ReadHalf<TokioIo<Upgraded>>>;
pub type WsWrite = WebSocketWrite<WriteHalf<TokioIo<Upgraded>>>;

/// Internal marker: the socket is gone, so no close frame is written. Never sent on the wire.
pub const ABNORMAL: u16 = 1006;

/// Serves one upgraded connection until it ends.
pub async fn serve(
    state: Arc<State>,
    upgrade: fastwebsockets::upgrade::UpgradeFut,
    permit: Option<OwnedSemaphorePermit>,
) {
    let _permit = permit;
    // Everything up to the welcome runs in one boxed future: it is large, and finished once
    // the connection is idle, so it must not size this long-lived task.
    let Some(Opened { mut read, handle, assembler, writer }) = Box::pin(open(&state, upgrade)).await else {
        return;
    };
    read_loop(&state, &mut read, &handle, assembler).await;
    // The reader is done: make sure the writer ends too. The connection leaves the hub (and
    // presence) now, not after the closing handshake: a lingering socket is no longer a session.
    handle.kill(ABNORMAL);
    closed(&state, &handle);
    // Boxed: the closing futures are cold and must not size the task every idle connection keeps.
    Box::pin(close(&state, &handle, read, writer)).await;
}

/// Waits for the writer to finish the connection, lingering after a deliberate close.
async fn close(
    state: &State,
    handle: &ConnHandle,
    mut read: WsRead,
    mut writer: tokio::task::JoinHandle<()>,
) {
    let code = handle.close_code();
    if code == ABNORMAL || code == close_code::NORMAL {
        // The client is gone or closed itself: the writer only answers its close.
        if tokio::time::timeout(state.config.write_timeout + Duration::from_secs(1), &mut writer)
            .await
            .is_err()
        {
            debug!(conn_id = handle.id, "writer did not finish in time");
        }
    } else {
        // Lingering close: after a deliberate close, keep reading and discarding what the
        // client sends while the writer gets the close frame out, and until the client closes.
        // Closing a socket with unread client data makes the kernel send a reset, which
        // destroys the close frame (and whatever the client had not read yet) before the client
        // reads it — a slow consumer that keeps sending would see a reset, not 4008.
        // The writer may take long only for a slow consumer (its last frame waits for the
        // client to read); once the close frame is out, the client gets AFTER_CLOSE_LINGER to
        // answer it.
        let deadline = Instant::now() + 2 * state.config.write_timeout + CLOSING_LINGER;
        let drain = until_client_close(&mut read);
        tokio::pin!(drain);
        let client_closed = tokio::select! {
            _ = &mut writer => false,
            _ = &mut drain => true,
            _ = tokio::time::sleep_until(deadline) => {
                debug!(conn_id = handle.id, code, "the writer did not finish closing in time");
                writer.abort();
                return;
            }
        };
        if client_closed {
            // The client closed first: only our side of the handshake is left to write.
            let _ = tokio::time::timeout_at(deadline, &mut writer).await;
        } else if tokio::time::timeout(AFTER_CLOSE_LINGER, &mut drain).await.is_err() {
            debug!(conn_id = handle.id, code, "the client did not answer the close in time");
        }
    }
    writer.abort();
}

/// After the gateway's close frame is out, how long it keeps reading for the client's answer.
const AFTER_CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Reads and discards client frames until the client's close frame (the closing handshake is
/// complete once ours is written too) or the end of the stream. A reader cancelled mid-frame
/// leaves the stream misaligned: on the first frame that does not parse, the rest is discarded
/// as raw bytes until the client closes.
async fn until_client_close(read: &mut WsRead) {
    loop {
        match read.read_frame().await {
            Ok(frame) if frame.opcode == OpCode::Close => return,
            Ok(_) => {}
            Err(ReadError::Eof | ReadError::Io(_)) => return,
            Err(_) => return read.discard_until_eof().await,
        }
    }
}

/// How long a write that outlasted `--write-timeout` may still take to finish: the client of a
/// slow-consumer close must read again within it to see its 4008.
const CLOSING_LINGER: Duration = Duration::from_secs(10);

/// A connection past its welcome: what the reader keeps, and the writer task.
struct Opened {
    read: WsRead,
    handle: Arc<ConnHandle>,
    assembler: Assembler,
    writer: tokio::task::JoinHandle<()>,
}

/// Upgrade, hello, authentication, registration, welcome; then spawns the writer.
async fn open(state: &Arc<State>, upgrade: fastwebsockets::upgrade::UpgradeFut) -> Option<Opened> {
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
    let mut read = FrameReader::new(read_half, state.config.max_frame_bytes.get());
    let mut assembler = Assembler::new(state.config.max_message_bytes.get());

    let (hello, resume) = await_hello(state, &mut read, &mut write, &mut assembler).await?;
    let session = authenticate(state, &hello, &mut write).await?;
    drop(hello);

    let registration = state.hub.register(
        session.user.id,
        session.user.org,
        &session.channels,
        &state.connections,
        state.now_ms(),
    );
    let handle = registration.handle;
    state.presence.touched(handle.user);
    // Read after registering: a change from here on also reaches this connection.
    let mut presence = state.presence.snapshot(handle.org);
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
            max_frame_bytes: state.config.max_frame_bytes.get(),
            max_body_bytes: state.config.max_body_bytes.get(),
            sends_per_second: state.config.sends_per_second.get(),
            send_burst: state.config.send_burst.get(),
        },
        heartbeat_ms: state.config.heartbeat.as_millis() as u64,
        head_seq: registration.head_seq,
        presence,
    });
    let result = match resume {
        Some(_) => "replayed",
        None => "fresh",
    };
    metrics::counter!(m::RESUMES, "result" => result).increment(1);
    debug!(conn_id = handle.id, user = %handle.user, head_seq = registration.head_seq, "connection authenticated");

    if write_bytes(state, &mut write, &welcome.encode()).await.is_err() {
        handle.kill(ABNORMAL);
        closed(state, &handle);
        return None;
    }
    let writer = state.tracker.spawn(write_loop(
        state.clone(),
        write,
        handle.clone(),
        resume.map(|r| (r, registration.head_seq)),
    ));
    Some(Opened { read, handle, assembler, writer })
}

/// Removes an ended connection from the hub and counts why it ended.
fn closed(state: &State, handle: &ConnHandle) {
    state.hub.deregister(handle);
    state.presence.touched(handle.user);
    let code = handle.close_code();
    metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => m::close_reason(code)).increment(1);
    debug!(conn_id = handle.id, user = %handle.user, code, reason = m::close_reason(code), "connection closed");
}

/// Reads frames until a complete `hello` within the hello deadline.
async fn await_hello(
    state: &State,
    read: &mut WsRead,
    write: &mut WsWrite,
    assembler: &mut Assembler,
) -> Option<(String, Option<Resume>)> {
    let deadline = Instant::now() + state.config.hello_timeout;
    loop {
        let frame = match tokio::time::timeout_at(deadline, read.read_frame()).await {
            Err(_) => {
                close_early(state, write, close_code::HELLO_TIMEOUT, "no hello within the deadline").await;
                return None;
            }
            Ok(Err(error)) => {
                close_early(state, write, close_for(&error), "invalid websocket frame").await;
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
                close_early(state, write, code, m::close_reason(code)).await;
                return None;
            }
            _ => match assembler.push(frame) {
                Ok(None) => {}
                Ok(Some((OpCode::Text, bytes))) => {
                    return match decode_client_frame(&bytes) {
                        Ok(ClientFrame::Hello { token, resume }) => Some((token, resume)),
                        Ok(_) => {
                            refuse(
                                state,
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
                                    reject_token(state, write, "hello has no token (a string)").await;
                                    return None;
                                }
                                HelloShape::Hello => (error.code, error.message),
                                HelloShape::NotHello => (
                                    ErrorCode::HelloRequired,
                                    format!("the first frame must be hello ({})", error.message),
                                ),
                            };
                            refuse(
                                state,
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
                        state,
                        write,
                        ServerFrame::error(ErrorCode::BadFrame, None, "binary frames are not supported"),
                        close_code::HELLO_REQUIRED,
                    )
                    .await;
                    return None;
                }
                Err(error) => {
                    close_early(state, write, error.close_code(), error.reason()).await;
                    return None;
                }
            },
        }
    }
}

/// Verifies the token and loads the session; on failure answers and closes.
async fn authenticate(
    state: &State,
    token: &str,
    write: &mut WsWrite,
) -> Option<threadspace_store::directory::Session> {
    let identity = match state.keys().verify(token) {
        Ok(identity) => identity,
        Err(error) => {
            debug!(error = %anyhow_chain(&error), "token rejected");
            reject_token(state, write, "token rejected").await;
            return None;
        }
    };
    match state.directory.session(identity.user).await {
        Ok(Some(session)) if session.user.org == identity.org && !session.deactivated => {
            metrics::counter!(m::AUTH, "result" => "ok").increment(1);
            Some(session)
        }
        Ok(_) => {
            debug!(user = %identity.user, "token names an unknown, moved or deactivated user");
            reject_token(state, write, "token rejected").await;
            None
        }
        Err(error) => {
            warn!(error = %anyhow_chain(&error), user = %identity.user, "directory unavailable at hello");
            refuse(
                state,
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
async fn reject_token(state: &State, write: &mut WsWrite, message: &str) {
    metrics::counter!(m::AUTH, "result" => "rejected").increment(1);
    let error = ServerFrame::error(ErrorCode::AuthFailed, None, message);
    refuse(state, write, error, close_code::AUTH_FAILED).await;
}

/// Answers a failed hello with an `error` frame, then closes with `close`.
async fn refuse(state: &State, write: &mut WsWrite, error: ServerFrame, close: u16) {
    if let ServerFrame::Error { code, .. } = &error {
        metrics::counter!(m::ERRORS, "code" => code.as_str()).increment(1);
    }
    let _ = write_bytes(state, write, &error.encode()).await;
    close_early(state, write, close, m::close_reason(close)).await;
}

async fn close_early(state: &State, write: &mut WsWrite, code: u16, reason: &str) {
    metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => m::close_reason(code)).increment(1);
    let _ = tokio::time::timeout(
        state.config.write_timeout,
        write.write_frame(Frame::close(code, reason.as_bytes())),
    )
    .await;
}

async fn write_bytes(state: &State, write: &mut WsWrite, bytes: &[u8]) -> Result<(), ()> {
    match tokio::time::timeout(
        state.config.write_timeout,
        write.write_frame(Frame::text(Payload::Borrowed(bytes))),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The close code that answers a client's close frame: 1000 for a valid one, 1002 for a
/// payload RFC 6455 forbids (§5.5.1, §7.4: a 1-byte payload, a code no endpoint may send —
/// below 1000, 1004–1006, 1015, 1016–2999, 5000 and up — or a reason that is not UTF-8).
fn close_reply(payload: &[u8]) -> u16 {
    let valid = match payload {
        [] => true,
        [_] => false,
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            allowed && std::str::from_utf8(reason).is_ok()
        }
    };
    if valid {
        close_code::NORMAL
    } else {
        close_code::PROTOCOL_ERROR
    }
}

/// The close code for a WebSocket-level read error.
fn close_for(error: &ReadError) -> u16 {
    match error {
        ReadError::TooLarge { .. } => close_code::TOO_LARGE,
        ReadError::Eof | ReadError::Io(_) => ABNORMAL,
        ReadError::Protocol(_) | ReadError::InvalidUtf8 => close_code::PROTOCOL_ERROR,
    }
}

/// Reads client frames until the connection ends or is killed.
async fn read_loop(state: &State, read: &mut WsRead, handle: &Arc<ConnHandle>, mut assembler: Assembler) {
    let config = &state.config;
    let mut frames =
        TokenBucket::new(config.frames_per_second.get(), config.frame_burst.get(), Instant::now());
    let mut strikes = Strikes::new(config.flood_strikes.get(), Instant::now());
    loop {
        // Cancelling a read mid-frame is fine here: the connection is ending either way.
        let result = tokio::select! {
            biased;
            _ = handle.cancel.cancelled() => return,
            result = read.read_frame() => result,
        };
        let frame = match result {
            Ok(frame) => frame,
            Err(error) => {
                let code = close_for(&error);
                if code != ABNORMAL {
                    debug!(conn_id = handle.id, %error, "websocket protocol error");
                }
                handle.kill(code);
                return;
            }
        };
        let now = Instant::now();
        handle.touch(state.now_ms());
        if !frames.try_take(now) {
            if strikes.strike(now) {
                info!(conn_id = handle.id, user = %handle.user, "closing flooding connection");
                handle.kill(close_code::RATE_LIMITED);
                return;
            }
            if frame.fin && matches!(frame.opcode, OpCode::Text | OpCode::Binary | OpCode::Continuation) {
                // Name the dropped request when it is a whole text frame, so the client can
                // retry it instead of waiting for an answer that will not come. Strikes bound
                // how often a flooder can make us read an envelope.
                let reference = match frame.opcode {
                    OpCode::Text => threadspace_protocol::frames::reference_of(&frame.payload),
                    _ => None,
                };
                push_error(handle, ErrorCode::RateLimited, reference, "too many frames; slow down".into());
            }
            // A dropped fragment would corrupt the message being assembled: drop it whole.
            assembler.reset();
            continue;
        }
        match frame.opcode {
            OpCode::Close => {
                handle.kill(close_reply(&frame.payload));
                return;
            }
            OpCode::Ping => {
                handle.push(Arc::new(OutFrame::Pong(frame.payload)));
            }
            OpCode::Pong => {}
            _ => match assembler.push(frame) {
                Ok(None) => {}
                Ok(Some((opcode, bytes))) => {
                    // Boxed: the publish future is large and idle connections should not carry it.
                    let handled = Box::pin(handle_message(state, handle, opcode, &bytes, &mut strikes)).await;
                    if let Err(Flood) = handled {
                        handle.kill(close_code::RATE_LIMITED);
                        return;
                    }
                }
                Err(error) => {
                    debug!(conn_id = handle.id, reason = error.reason(), "bad fragment sequence");
                    handle.kill(error.close_code());
                    return;
                }
            },
        }
    }
}

/// The client exceeded its strikes.
struct Flood;

async fn handle_message(
    state: &State,
    handle: &ConnHandle,
    opcode: OpCode,
    bytes: &[u8],
    strikes: &mut Strikes,
) -> Result<(), Flood> {
    if opcode != OpCode::Text {
        push_error(handle, ErrorCode::BadFrame, None, "binary frames are not supported".into());
        return Ok(());
    }
    if std::str::from_utf8(bytes).is_err() {
        push_error(handle, ErrorCode::BadFrame, None, "text frame is not valid UTF-8".into());
        return Ok(());
    }
    match decode_client_frame(bytes) {
        Err(error) => push_error(handle, error.code, error.reference, error.message),
        Ok(ClientFrame::Hello { .. }) => push_error(
            handle,
            ErrorCode::AlreadyAuthenticated,
            None,
            "hello was already accepted on this connection".into(),
        ),
        Ok(ClientFrame::Read { reference, channel, seq }) => {
            active(state, handle);
            crate::reads::mark(state, handle, reference, channel, seq).await
        }
        Ok(ClientFrame::Typing { channel }) => {
            active(state, handle);
            crate::typing::publish(state, handle, channel).await
        }
        Ok(ClientFrame::Presence { status }) => {
            let changed = match status {
                ClientStatus::Online => handle.mark_active(state.now_ms(), state.idle_after_ms()),
                ClientStatus::Idle => handle.mark_idle(),
            };
            metrics::counter!(m::PRESENCE_SIGNALS, "status" => match status {
                ClientStatus::Online => "online",
                ClientStatus::Idle => "idle",
            })
            .increment(1);
            if changed {
                state.presence.touched(handle.user);
            }
        }
        Ok(ClientFrame::Ping { reference }) => {
            handle.push_frame(&ServerFrame::Pong { reference });
        }
        Ok(ClientFrame::Send { reference, channel, client_msg_id, body }) => {
            active(state, handle);
            return handle_send(
                state,
                handle,
                SendRequest { reference, channel, client_msg_id, body },
                strikes,
            )
            .await;
        }
    }
    Ok(())
}

/// A sign of a person at the keyboard: the connection is active again.
fn active(state: &State, handle: &ConnHandle) {
    if handle.mark_active(state.now_ms(), state.idle_after_ms()) {
        state.presence.touched(handle.user);
    }
}

struct SendRequest {
    reference: String,
    channel: ChannelId,
    client_msg_id: String,
    body: String,
}

async fn handle_send(
    state: &State,
    handle: &ConnHandle,
    request: SendRequest,
    strikes: &mut Strikes,
) -> Result<(), Flood> {
    let SendRequest { reference, channel, client_msg_id, body } = request;
    if body.len() > state.config.max_body_bytes.get() {
        push_error(
            handle,
            ErrorCode::BodyTooLarge,
            Some(reference),
            format!("body is {} bytes; the limit is {}", body.len(), state.config.max_body_bytes),
        );
        return Ok(());
    }
    if !handle.is_member(channel) {
        push_error(
            handle,
            ErrorCode::NotMember,
            Some(reference),
            format!("you are not a member of channel {channel}"),
        );
        return Ok(());
    }
    let now = Instant::now();
    let allowed = handle.send_limiter.lock().expect("limiter lock is never poisoned").try_take(now);
    if !allowed {
        push_error(
            handle,
            ErrorCode::RateLimited,
            Some(reference),
            format!("more than {} messages per second; slow down", state.config.sends_per_second),
        );
        return if strikes.strike(now) { Err(Flood) } else { Ok(()) };
    }
    let stored =
        StoredMessage { org: handle.org, channel, sender: handle.user, client_msg_id, body, ts: unix_ms() };
    match crate::publish::publish(state, &stored).await {
        Published::Stored { seq, duplicate } => {
            handle.push_frame(&ServerFrame::Ack { reference, client_msg_id: stored.client_msg_id, seq, duplicate });
        }
        Published::IdReused { seq } => push_error(
            handle,
            ErrorCode::IdReused,
            Some(reference),
            format!(
                "client_msg_id {} was already used for a different message (seq {seq}); nothing was stored: send it under a new client_msg_id",
                stored.client_msg_id
            ),
        ),
        Published::Unavailable { timed_out } => {
            debug!(conn_id = handle.id, timed_out, "send not confirmed");
            let message = if timed_out {
                "message not confirmed in time; retry with the same client_msg_id"
            } else {
                "message not stored; retry with the same client_msg_id"
            };
            push_error(handle, ErrorCode::Unavailable, Some(reference), message.into());
        }
    }
    Ok(())
}

fn push_error(handle: &ConnHandle, code: ErrorCode, reference: Option<String>, message: String) {
    metrics::counter!(m::ERRORS, "code" => code.as_str()).increment(1);
    handle.push_frame(&ServerFrame::Error { code, reference, message });
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// What the writer writes next.
enum Next {
    Item(Outbound),
    Ping,
}

/// Owns the write half: replay, then queued frames and pings, then the close frame.
async fn write_loop(
    state: Arc<State>,
    mut write: WsWrite,
    handle: Arc<ConnHandle>,
    resume: Option<(Resume, Seq)>,
) {
    let mut skip_through: Seq = 0;
    if let Some((resume, head_seq)) = resume {
        match Box::pin(replay::replay(&state, &mut write, &handle, resume.last_seq, head_seq)).await {
            Ok(through) => skip_through = through,
            Err(replay::WriteFailed) => {
                handle.kill(ABNORMAL);
                return;
            }
        }
    }
    let heartbeat = state.config.heartbeat;
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if handle.cancel.is_cancelled() {
            break;
        }
        let next = match handle.pop() {
            Some(item) => Next::Item(item),
            None => tokio::select! {
                biased;
                _ = handle.cancel.cancelled() => break,
                _ = handle.wait_queued() => continue,
                _ = ticker.tick() => Next::Ping,
            },
        };
        let frame = match &next {
            Next::Item(item) => match &**item {
                OutFrame::Msg { seq, .. } if *seq <= skip_through => continue,
                OutFrame::Msg { frame, .. } | OutFrame::Frame(frame) => Frame::text(Payload::Borrowed(frame)),
                OutFrame::Pong(payload) => Frame::pong(Payload::Borrowed(payload)),
            },
            Next::Ping => {
                let silent_ms = state.now_ms().saturating_sub(handle.last_rx_ms());
                if silent_ms > state.idle_timeout().as_millis() as u64 {
                    handle.kill(close_code::IDLE_TIMEOUT);
                    break;
                }
                Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[]))
            }
        };
        // Boxed: a timed write holds a timer, and the idle writer should not reserve room for it.
        match Box::pin(timed_write(&state, &handle, &mut write, frame)).await {
            Written::Done => {}
            Written::Failed => {
                handle.kill(ABNORMAL);
                return;
            }
            // timed_write already killed the connection as a slow consumer.
            Written::Late => break,
            Written::Stuck => return,
        }
    }
    // Boxed, like the replay: cold code should not size the idle writer's state machine.
    Box::pin(async {
        flush_queued(&mut write, &handle, skip_through).await;
        finish(&state, &mut write, &handle).await;
    })
    .await;
}

/// How a frame write ended.
enum Written {
    Done,
    /// The socket failed: the client is gone.
    Failed,
    /// The client stopped reading for `--write-timeout`, then read again while the connection
    /// lingered: the frame is out whole and a close frame can follow it.
    Late,
    /// The client did not read again: the frame may be half written, so nothing can follow it.
    Stuck,
}

/// Writes one frame; a write that outlasts `--write-timeout` marks a slow consumer but is not
/// cancelled — a cancelled write could leave a torn frame on the wire, and then the 4008 close
/// frame behind it could never be read.
async fn timed_write(state: &State, handle: &ConnHandle, write: &mut WsWrite, frame: Frame<'_>) -> Written {
    let mut writing = std::pin::pin!(write.write_frame(frame));
    match tokio::time::timeout(state.config.write_timeout, &mut writing).await {
        Ok(Ok(())) => Written::Done,
        Ok(Err(_)) => Written::Failed,
        Err(_) => {
            // A slow consumer from this moment: the reader stops and nothing more is queued.
            handle.kill(close_code::SLOW_CONSUMER);
            match tokio::time::timeout(CLOSING_LINGER, writing).await {
                Ok(Ok(())) => Written::Late,
                _ => Written::Stuck,
            }
        }
    }
}

/// Before a deliberate close, writes what is already queued (acks, errors, messages), so the
/// client learns e.g. why it was rate limited. A slow consumer's queue is dropped instead:
/// it is full because the client cannot take it.
async fn flush_queued(write: &mut WsWrite, handle: &ConnHandle, skip_through: Seq) {
    let code = handle.close_code();
    if matches!(code, 0 | ABNORMAL | close_code::SLOW_CONSUMER) {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    debug!(conn_id = handle.id, queued = handle.queued_len(), code, "flushing queued frames before close");
    while let Some(item) = handle.pop() {
        let frame = match &*item {
            OutFrame::Msg { seq, .. } if *seq <= skip_through => continue,
            OutFrame::Msg { frame, .. } | OutFrame::Frame(frame) => Frame::text(Payload::Borrowed(frame)),
            OutFrame::Pong(_) => continue,
        };
        match tokio::time::timeout_at(deadline, write.write_frame(frame)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// Writes the parting frames for the close code the connection was killed with.
async fn finish(state: &State, write: &mut WsWrite, handle: &ConnHandle) {
    let code = handle.close_code();
    if code == ABNORMAL || code == 0 {
        return;
    }
    if code == close_code::GOING_AWAY {
        let spread = state.config.reconnect_spread.as_millis() as u64;
        let after_ms = if spread == 0 { 0 } else { rand::random_range(0..spread) };
        let frame = ServerFrame::Reconnect { after_ms, reason: "draining".into() };
        if write_bytes(state, write, &frame.encode()).await.is_err() {
            return;
        }
    }
    let reason = m::close_reason(code);
    let _ = tokio::time::timeout(
        state.config.write_timeout,
        write.write_frame(Frame::close(code, reason.as_bytes())),
    )
    .await;
}

/// Why a fragment sequence was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssembleError {
    /// The assembled message would exceed the cap.
    TooLarge,
    /// A continuation without a start, or a new message inside a fragmented one.
    Protocol,
}

impl AssembleError {
    fn close_code(self) -> u16 {
        match self {
            Self::TooLarge => close_code::TOO_LARGE,
            Self::Protocol => close_code::PROTOCOL_ERROR,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "message too large",
            Self::Protocol => "invalid fragment sequence",
        }
    }
}

/// Assembles fragmented messages with a cap on the assembled size (fastwebsockets caps only
/// single frames).
#[derive(Debug)]
pub struct Assembler {
    cap: usize,
    opcode: Option<OpCode>,
    buffer: Vec<u8>,
}

impl Assembler {
    pub fn new(cap: usize) -> Self {
        Self { cap, opcode: None, buffer: Vec::new() }
    }

    /// Drops any partial message.
    pub fn reset(&mut self) {
        self.opcode = None;
        self.buffer = Vec::new();
    }

    /// Feeds one data frame; returns a complete message when `fin` ends one.
    pub fn push(&mut self, frame: InFrame) -> Result<Option<(OpCode, Vec<u8>)>, AssembleError> {
        match (frame.opcode, self.opcode) {
            (OpCode::Text | OpCode::Binary, None) => {
                if frame.payload.len() > self.cap {
                    return Err(AssembleError::TooLarge);
                }
                if frame.fin {
                    return Ok(Some((frame.opcode, frame.payload)));
                }
                self.opcode = Some(frame.opcode);
                self.buffer = frame.payload;
                Ok(None)
            }
            (OpCode::Continuation, Some(opcode)) => {
                if self.buffer.len() + frame.payload.len() > self.cap {
                    self.reset();
                    return Err(AssembleError::TooLarge);
                }
                self.buffer.extend_from_slice(&frame.payload);
                if frame.fin {
                    let bytes = std::mem::take(&mut self.buffer);
                    self.opcode = None;
                    return Ok(Some((opcode, bytes)));
                }
                Ok(None)
            }
            _ => Err(AssembleError::Protocol),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> InFrame {
        InFrame { fin, opcode, payload: payload.to_vec() }
    }

    #[test]
    fn assembles_fragments() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(frame(false, OpCode::Text, b"ab")), Ok(None));
        assert_eq!(a.push(frame(false, OpCode::Continuation, b"cd")), Ok(None));
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, b"e")),
            Ok(Some((OpCode::Text, b"abcde".to_vec())))
        );
        assert_eq!(a.push(frame(true, OpCode::Text, b"x")), Ok(Some((OpCode::Text, b"x".to_vec()))));
    }

    #[test]
    fn caps_the_assembled_size() {
        let mut a = Assembler::new(4);
        assert_eq!(a.push(frame(false, OpCode::Text, b"abc")), Ok(None));
        assert_eq!(a.push(frame(false, OpCode::Continuation, b"de")), Err(AssembleError::TooLarge));
        assert_eq!(a.push(frame(true, OpCode::Text, b"abcde")), Err(AssembleError::TooLarge));
    }

    #[test]
    fn rejects_bad_sequences() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(frame(true, OpCode::Continuation, b"x")), Err(AssembleError::Protocol));
        assert_eq!(a.push(frame(false, OpCode::Text, b"x")), Ok(None));
        assert_eq!(a.push(frame(true, OpCode::Text, b"y")), Err(AssembleError::Protocol));
    }
}
