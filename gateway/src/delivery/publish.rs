//! Storing one chat message: publish the record to JetStream with its dedup id, await the
//! PubAck, and tell a retry from a reuse of the same `client_msg_id` for another message.
//!
//! **Invariant:** a send is acknowledged only after JetStream's PubAck (ARCHITECTURE.md). A
//! PubAck that says `duplicate` means JetStream already holds a record under this sender's
//! `client_msg_id` within the dedup window ([`crate::delivery::fanout::DUPLICATE_WINDOW`]); it is a retry
//! only if that record is the same message (same channel and body). Otherwise the client reused
//! an id for a different message, which stored nothing: it gets `id_reused`, never an `ack`
//! that would let it believe the new body was kept.

use bytes::Bytes;
use threadspace_protocol::stored::StoredMessage;
use threadspace_protocol::subjects::{message_subject, MESSAGES_STREAM};
use threadspace_protocol::Seq;
use tokio::time::Instant;
use tracing::warn;

use crate::metrics as m;
use threadspace_protocol::error_chain;

/// What became of a publish.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Published {
    /// Stored under `seq` (`duplicate`: by an earlier send of the same message).
    Stored { seq: Seq, duplicate: bool },
    /// The id was already used for another message, stored under `seq`; nothing was stored.
    IdReused { seq: Seq },
    /// JetStream did not confirm in time, or failed; a retry with the same id is safe.
    Unavailable { timed_out: bool },
}

/// Publishes `stored` and waits (up to `--publish-timeout`) for the outcome.
/// Where sends are published: the MESSAGES stream, under its partitioned subjects.
#[derive(Clone)]
pub(crate) struct Publisher {
    pub jetstream: async_nats::jetstream::Context,
    pub partitions: u32,
    /// `--publish-timeout`: how long a send may wait for its PubAck.
    pub timeout: std::time::Duration,
}

pub(crate) async fn publish(publisher: &Publisher, stored: &StoredMessage) -> Published {
    let dedup_id = stored.dedup_id();
    let payload = Bytes::from(serde_json::to_vec(stored).expect("stored messages serialize"));
    let subject = message_subject(publisher.partitions, stored.org, stored.channel);
    let started = Instant::now();
    let publish = async {
        let message =
            async_nats::jetstream::message::PublishMessage::build().payload(payload).message_id(dedup_id);
        let ack = publisher.jetstream.send_publish(subject, message).await?;
        ack.await
    };
    let ack = match tokio::time::timeout(publisher.timeout, publish).await {
        Ok(Ok(ack)) => ack,
        Ok(Err(error)) => {
            metrics::counter!(m::PUBLISHED, "result" => "failed").increment(1);
            warn!(error = %error_chain(&error), "publish failed");
            return Published::Unavailable { timed_out: false };
        }
        Err(_) => {
            metrics::counter!(m::PUBLISHED, "result" => "failed").increment(1);
            warn!("publish timed out");
            return Published::Unavailable { timed_out: true };
        }
    };
    metrics::histogram!(m::PUBLISH_DURATION).record(started.elapsed().as_secs_f64());
    if !ack.duplicate {
        metrics::counter!(m::PUBLISHED, "result" => "ok").increment(1);
        return Published::Stored { seq: ack.sequence, duplicate: false };
    }
    // Rare (a retry), so one direct read of the stored record is cheap.
    match same_as_stored(publisher, ack.sequence, stored).await {
        Ok(true) => {
            metrics::counter!(m::PUBLISHED, "result" => "duplicate").increment(1);
            Published::Stored { seq: ack.sequence, duplicate: true }
        }
        Ok(false) => {
            metrics::counter!(m::PUBLISHED, "result" => "id_reused").increment(1);
            Published::IdReused { seq: ack.sequence }
        }
        Err(error) => {
            // Unknown whether it is a retry: answering `ack` could hide a lost body, so the
            // client retries (the same id is safe either way).
            metrics::counter!(m::PUBLISHED, "result" => "failed").increment(1);
            warn!(%error, seq = ack.sequence, "cannot read the record a duplicate publish refers to");
            Published::Unavailable { timed_out: false }
        }
    }
}

/// Whether the record stored under `seq` is the message `stored` (a true retry). The
/// timestamp differs between attempts by design, so only channel and body count.
async fn same_as_stored(
    publisher: &Publisher,
    seq: Seq,
    stored: &StoredMessage,
) -> Result<bool, async_nats::Error> {
    let stream = publisher.jetstream.get_stream_no_info(MESSAGES_STREAM).await?;
    let record = tokio::time::timeout(publisher.timeout, stream.direct_get(seq)).await??;
    let original: StoredMessage = serde_json::from_slice(&record.payload)?;
    Ok(original.channel == stored.channel && original.body == stored.body)
}
