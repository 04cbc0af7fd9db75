//! The socket of one connection: its read and write halves, the frames written during the
//! handshake and at close, and which close code answers what.

use std::time::Duration;

use fastwebsockets::{Frame, Payload, WebSocketWrite};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use threadspace_protocol::frames::close_code;
use tokio::io::{ReadHalf, WriteHalf};

use crate::edge::frame_reader::{FrameReader, ReadError};
use crate::metrics as m;

pub(crate) type WsRead = FrameReader<ReadHalf<TokioIo<Upgraded>>>;
pub(crate) type WsWrite = WebSocketWrite<WriteHalf<TokioIo<Upgraded>>>;

/// Internal marker: the socket is gone, so no close frame is written. Never sent on the wire.
pub(crate) const ABNORMAL: u16 = 1006;

/// How long a write that outlasted `--write-timeout` may still take to finish: the client of a
/// slow-consumer close must read again within it to see its 4008.
pub(crate) const CLOSING_LINGER: Duration = Duration::from_secs(10);

/// Writes a close frame during the handshake (before the connection is registered) and
/// counts why.
pub(crate) async fn close_early(write_timeout: Duration, write: &mut WsWrite, code: u16, reason: &str) {
    metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => m::close_reason(code)).increment(1);
    let _ =
        tokio::time::timeout(write_timeout, write.write_frame(Frame::close(code, reason.as_bytes()))).await;
}

/// Writes one text frame within `write_timeout`.
pub(crate) async fn write_text(write_timeout: Duration, write: &mut WsWrite, bytes: &[u8]) -> Result<(), ()> {
    match tokio::time::timeout(write_timeout, write.write_frame(Frame::text(Payload::Borrowed(bytes)))).await
    {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The close code that answers a client's close frame: 1000 for a valid one, 1002 for a
/// payload RFC 6455 forbids (§5.5.1, §7.4: a 1-byte payload, a code no endpoint may send —
/// below 1000, 1004–1006, 1015, 1016–2999, 5000 and up — or a reason that is not UTF-8).
pub(crate) fn close_reply(payload: &[u8]) -> u16 {
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
pub(crate) fn close_for(error: &ReadError) -> u16 {
    match error {
        ReadError::TooLarge { .. } => close_code::TOO_LARGE,
        ReadError::Eof | ReadError::Io(_) => ABNORMAL,
        ReadError::Protocol(_) | ReadError::InvalidUtf8 => close_code::PROTOCOL_ERROR,
    }
}
