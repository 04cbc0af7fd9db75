//! The reader: decodes and validates client frames, enforces frame and send rate limits, and
//! handles each op — sends are published (the `ack` waits for JetStream's PubAck), reads,
//! typing and presence go to their event modules.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fastwebsockets::OpCode;
use threadspace_protocol::frames::{
    close_code, decode_client_frame, ClientFrame, ClientStatus, ErrorCode, ServerFrame,
};
use threadspace_protocol::stored::StoredMessage;
use threadspace_protocol::ChannelId;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::delivery::hub::{ConnHandle, OutFrame};
use crate::delivery::publish::{publish, Published};
use crate::edge::assembler::Assembler;
use crate::edge::wire::{close_for, close_reply, WsRead, ABNORMAL};
use crate::edge::Edge;
use crate::events::{reads, typing};
use crate::limits::{Strikes, TokenBucket};
use crate::metrics as m;

/// Reads client frames until the connection ends or is killed.
pub(crate) async fn read_loop(
    edge: &Edge,
    read: &mut WsRead,
    handle: &Arc<ConnHandle>,
    mut assembler: Assembler,
) {
    let config = &edge.settings;
    let mut frames = TokenBucket::new(config.frames_per_second, config.frame_burst, Instant::now());
    let mut strikes = Strikes::new(config.flood_strikes, Instant::now());
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
        handle.touch(edge.hub.now_ms());
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
                    let handled = Box::pin(handle_message(edge, handle, opcode, &bytes, &mut strikes)).await;
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
    edge: &Edge,
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
            active(edge, handle);
            reads::mark(&edge.reads, &edge.hub, handle, reference, channel, seq).await
        }
        Ok(ClientFrame::Typing { channel }) => {
            active(edge, handle);
            typing::publish(&edge.typing, handle, channel).await
        }
        Ok(ClientFrame::Presence { status }) => {
            let changed = match status {
                ClientStatus::Online => {
                    handle.mark_active(edge.hub.now_ms(), edge.settings.idle_after.as_millis() as u64)
                }
                ClientStatus::Idle => handle.mark_idle(),
            };
            metrics::counter!(m::PRESENCE_SIGNALS, "status" => match status {
                ClientStatus::Online => "online",
                ClientStatus::Idle => "idle",
            })
            .increment(1);
            if changed {
                edge.presence.touched(handle.user);
            }
        }
        Ok(ClientFrame::Ping { reference }) => {
            handle.push_frame(&ServerFrame::Pong { reference });
        }
        Ok(ClientFrame::Send { reference, channel, client_msg_id, body }) => {
            active(edge, handle);
            return handle_send(
                edge,
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
fn active(edge: &Edge, handle: &ConnHandle) {
    if handle.mark_active(edge.hub.now_ms(), edge.settings.idle_after.as_millis() as u64) {
        edge.presence.touched(handle.user);
    }
}

struct SendRequest {
    reference: String,
    channel: ChannelId,
    client_msg_id: String,
    body: String,
}

async fn handle_send(
    edge: &Edge,
    handle: &ConnHandle,
    request: SendRequest,
    strikes: &mut Strikes,
) -> Result<(), Flood> {
    let SendRequest { reference, channel, client_msg_id, body } = request;
    if body.len() > edge.settings.max_body_bytes {
        push_error(
            handle,
            ErrorCode::BodyTooLarge,
            Some(reference),
            format!("body is {} bytes; the limit is {}", body.len(), edge.settings.max_body_bytes),
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
            format!("more than {} messages per second; slow down", edge.settings.sends_per_second),
        );
        return if strikes.strike(now) { Err(Flood) } else { Ok(()) };
    }
    let stored =
        StoredMessage { org: handle.org, channel, sender: handle.user, client_msg_id, body, ts: unix_ms() };
    match publish(&edge.publisher, &stored).await {
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
