//! One client WebSocket connection from upgrade to close: the handshake (handshake.rs), then a
//! reader (this task, read.rs) and a writer task (write.rs) joined by the connection's bounded
//! outbound queue, then the closing handshake.
//!
//! Two tasks, because fastwebsockets' `read_frame` is not cancel-safe and so cannot sit in a
//! `select!` beside writes.

use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::OpCode;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::debug;

use threadspace_protocol::frames::close_code;

use crate::delivery::hub::ConnHandle;
use crate::edge::frame_reader::ReadError;
use crate::edge::handshake::{self, Opened};
use crate::edge::read::read_loop;
use crate::edge::wire::{WsRead, ABNORMAL, CLOSING_LINGER};
use crate::edge::Edge;

/// Serves one upgraded connection until it ends.
pub(crate) async fn serve(
    edge: Arc<Edge>,
    upgrade: fastwebsockets::upgrade::UpgradeFut,
    permit: Option<OwnedSemaphorePermit>,
) {
    let _permit = permit;
    // Everything up to the welcome runs in one boxed future: it is large, and finished once
    // the connection is idle, so it must not size this long-lived task.
    let Some(Opened { mut read, handle, assembler, writer }) =
        Box::pin(handshake::open(&edge, upgrade)).await
    else {
        return;
    };
    read_loop(&edge, &mut read, &handle, assembler).await;
    // The reader is done: make sure the writer ends too. The connection leaves the hub (and
    // presence) now, not after the closing handshake: a lingering socket is no longer a session.
    handle.kill(ABNORMAL);
    handshake::closed(&edge, &handle);
    // Boxed: the closing futures are cold and must not size the task every idle connection keeps.
    Box::pin(close(&edge.settings, &handle, read, writer)).await;
}

/// Waits for the writer to finish the connection, lingering after a deliberate close.
async fn close(
    settings: &crate::edge::Settings,
    handle: &ConnHandle,
    mut read: WsRead,
    mut writer: tokio::task::JoinHandle<()>,
) {
    let code = handle.close_code();
    if code == ABNORMAL || code == close_code::NORMAL {
        // The client is gone or closed itself: the writer only answers its close.
        if tokio::time::timeout(settings.write_timeout + Duration::from_secs(1), &mut writer).await.is_err() {
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
        let deadline = Instant::now() + 2 * settings.write_timeout + CLOSING_LINGER;
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
