//! The writer: owns the socket's write half. It replays missed messages on resume, then writes
//! queued frames and pings, and finally the close frame whose code says why the connection
//! ended.

use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload};
use threadspace_protocol::frames::{close_code, Resume, ServerFrame};
use threadspace_protocol::Seq;
use tokio::time::Instant;
use tracing::debug;

use crate::delivery::hub::{ConnHandle, OutFrame, Outbound};
use crate::delivery::replay::{self, FrameSink, WriteFailed};
use crate::edge::wire::{write_text, WsWrite, ABNORMAL, CLOSING_LINGER};
use crate::edge::{Edge, Settings};
use crate::metrics as m;

/// The socket as the replay's sink: each frame within `--write-timeout`.
struct Replaying<'a> {
    write: &'a mut WsWrite,
    write_timeout: Duration,
}

impl FrameSink for Replaying<'_> {
    async fn send(&mut self, frame: &ServerFrame) -> Result<(), WriteFailed> {
        write_text(self.write_timeout, self.write, &frame.encode()).await.map_err(|()| WriteFailed)
    }
}

/// What the writer writes next.
enum Next {
    Item(Outbound),
    Ping,
}

/// Owns the write half: replay, then queued frames and pings, then the close frame.
pub(crate) async fn write_loop(
    edge: Arc<Edge>,
    mut write: WsWrite,
    handle: Arc<ConnHandle>,
    resume: Option<(Resume, Seq)>,
) {
    let mut skip_through: Seq = 0;
    if let Some((resume, head_seq)) = resume {
        match Box::pin(replay::replay(
            &edge.replayer,
            &mut Replaying { write: &mut write, write_timeout: edge.settings.write_timeout },
            &handle,
            resume.last_seq,
            head_seq,
        ))
        .await
        {
            Ok(through) => skip_through = through,
            Err(WriteFailed) => {
                handle.kill(ABNORMAL);
                return;
            }
        }
    }
    let heartbeat = edge.settings.heartbeat;
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
                let silent_ms = edge.hub.now_ms().saturating_sub(handle.last_rx_ms());
                if silent_ms > edge.settings.idle_timeout.as_millis() as u64 {
                    handle.kill(close_code::IDLE_TIMEOUT);
                    break;
                }
                Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[]))
            }
        };
        // Boxed: a timed write holds a timer, and the idle writer should not reserve room for it.
        match Box::pin(timed_write(&edge.settings, &handle, &mut write, frame)).await {
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
        finish(&edge.settings, &mut write, &handle).await;
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
async fn timed_write(
    settings: &Settings,
    handle: &ConnHandle,
    write: &mut WsWrite,
    frame: Frame<'_>,
) -> Written {
    let mut writing = std::pin::pin!(write.write_frame(frame));
    match tokio::time::timeout(settings.write_timeout, &mut writing).await {
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
async fn finish(settings: &Settings, write: &mut WsWrite, handle: &ConnHandle) {
    let code = handle.close_code();
    if code == ABNORMAL || code == 0 {
        return;
    }
    if code == close_code::GOING_AWAY {
        let spread = settings.reconnect_spread.as_millis() as u64;
        let after_ms = if spread == 0 { 0 } else { rand::random_range(0..spread) };
        let frame = ServerFrame::Reconnect { after_ms, reason: "draining".into() };
        if write_text(settings.write_timeout, write, &frame.encode()).await.is_err() {
            return;
        }
    }
    let reason = m::close_reason(code);
    let _ = tokio::time::timeout(
        settings.write_timeout,
        write.write_frame(Frame::close(code, reason.as_bytes())),
    )
    .await;
}
