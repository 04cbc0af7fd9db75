//! Read markers: `read {channel, seq}` moves the user's marker forward in Postgres (never
//! back), answers `read_ack` once committed, and when the marker moved announces it on core
//! NATS `read.<org>.<channel>`; every gateway hands `read {channel, user, seq}` to its local
//! members of the channel, the reader's other sessions included (they sync unread counts).
//! `welcome` carries each channel's `last_read`.
//!
//! **Invariant:** `read_ack` is sent only after the marker is committed; a lost announcement
//! never loses the marker (the next `welcome` has it).

use std::sync::Arc;

use bytes::Bytes;
use threadspace_protocol::frames::{ErrorCode, ServerFrame};
use threadspace_protocol::stored::ReadEvent;
use threadspace_protocol::subjects::{all_reads, parse_read_subject, read_subject};
use threadspace_protocol::{ChannelId, Seq};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use threadspace_protocol::error_chain;
use threadspace_store::Directory;

use crate::delivery::hub::{ConnHandle, Hub};
use crate::metrics as m;

fn error(handle: &ConnHandle, code: ErrorCode, reference: String, message: String) {
    metrics::counter!(m::ERRORS, "code" => code.as_str()).increment(1);
    handle.push_frame(&ServerFrame::Error { code, reference: Some(reference), message });
}

/// Where read markers go: Postgres (on the history pool, so a flood of markers never starves
/// hellos of directory connections) and the announcement on core NATS.
pub(crate) struct Reads {
    pub markers: Directory,
    pub nats: async_nats::Client,
}

/// A client's `read {ref, channel, seq}`.
pub(crate) async fn mark(
    reads: &Reads,
    hub: &Hub,
    handle: &ConnHandle,
    reference: String,
    channel: ChannelId,
    seq: Seq,
) {
    if !handle.is_member(channel) {
        metrics::counter!(m::READS, "result" => "not_member").increment(1);
        let message = format!("you are not a member of channel {channel}");
        return error(handle, ErrorCode::NotMember, reference, message);
    }
    // Never past the newest message in the stream (this gateway's head): a marker there would
    // count messages not sent yet as read, forever, since markers never move back. Clamped, not
    // refused — a client that read everything and sends a generous `seq` gets what it meant.
    let seq = seq.min(hub.head_seq());
    if seq == 0 {
        // The stream holds no message yet: nothing to mark.
        metrics::counter!(m::READS, "result" => "stale").increment(1);
        handle.push_frame(&ServerFrame::ReadAck { reference, channel, seq: 0 });
        return;
    }
    let (stored, moved, direct) = match reads.markers.mark_read(handle.user, channel, seq).await {
        Ok(outcome) => outcome,
        Err(e) => {
            metrics::counter!(m::READS, "result" => "failed").increment(1);
            warn!(error = %error_chain(&e), "read marker not stored");
            let message = "the read marker could not be stored; retry".to_owned();
            return error(handle, ErrorCode::Unavailable, reference, message);
        }
    };
    metrics::counter!(m::READS, "result" => if moved { "moved" } else { "stale" }).increment(1);
    handle.push_frame(&ServerFrame::ReadAck { reference, channel, seq: stored });
    if moved {
        let payload = serde_json::to_vec(&ReadEvent { user: handle.user, seq: stored, direct })
            .expect("events serialize");
        if let Err(e) = reads.nats.publish(read_subject(handle.org, channel), payload.into()).await {
            warn!(error = %e, "read marker announcement not published");
        }
    }
}

/// Hands read-marker announcements from every gateway to local members until `shutdown`.
pub(crate) async fn subscribe(hub: Arc<Hub>, nats: async_nats::Client, shutdown: CancellationToken) {
    super::on_each(&nats, all_reads(), "read markers", shutdown, |message| {
        let event = serde_json::from_slice::<ReadEvent>(&message.payload);
        let (Some((_, channel)), Ok(event)) = (parse_read_subject(&message.subject), event) else {
            warn!(subject = %message.subject, "undecodable read marker announcement");
            return;
        };
        let frame = Bytes::from(ServerFrame::Read { channel, user: event.user, seq: event.seq }.encode());
        if event.direct {
            hub.deliver_ephemeral(channel, None, &frame);
        } else {
            hub.deliver_user(event.user, &frame);
        }
    })
    .await;
}
