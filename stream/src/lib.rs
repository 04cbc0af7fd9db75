//! Storing one chat message: publish the record to JetStream with its dedup id, await the
//! PubAck, and tell a retry from a reuse of the same `client_msg_id` for another message. The
//! gateway's `send` and the api service's REST send both store messages through [`publish`],
//! so a message is acknowledged by the same rule whichever way it came (ARCHITECTURE.md,
//! "Sending over REST").
//!
//! **Invariant:** a send is acknowledged only after JetStream's PubAck. A PubAck that says
//! `duplicate` means JetStream already holds a record under this sender's `client_msg_id`
//! within the stream's dedup window; it is a retry only if that record is the same message
//! (same channel and body). Otherwise the sender reused an id for a different message, which
//! stored nothing: it gets `id_reused`, never an acknowledgement that would let it believe the
//! new body was kept.

use std::time::Duration;

use bytes::Bytes;
use threadspace_protocol::error_chain;
use threadspace_protocol::stored::StoredMessage;
use threadspace_protocol::subjects::{message_subject, MESSAGES_STREAM};
use threadspace_protocol::Seq;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Where messages are stored: the MESSAGES stream, under its partitioned subjects.
#[derive(Clone)]
pub struct Publisher {
    pub jetstream: async_nats::jetstream::Context,
    pub partitions: u32,
    /// How long a send may wait for its PubAck (`--publish-timeout`).
    pub timeout: Duration,
}

/// What became of a publish.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    /// Stored under `seq` (`duplicate`: by an earlier send of the same message).
    Stored { seq: Seq, duplicate: bool },
    /// The id was already used for another message, stored under `seq`; nothing was stored.
    IdReused { seq: Seq },
    /// JetStream did not confirm in time, or failed; a retry with the same id is safe.
    Unavailable { timed_out: bool },
}

impl Published {
    /// The outcome as a metric label: `ok`, `duplicate`, `id_reused` or `failed`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Stored { duplicate: false, .. } => "ok",
            Self::Stored { duplicate: true, .. } => "duplicate",
            Self::IdReused { .. } => "id_reused",
            Self::Unavailable { .. } => "failed",
        }
    }
}

/// How long one attempt waits for its PubAck before the publish is sent again (same dedup id,
/// so JetStream stores it once). A PubAck lost with the NATS server the publish went through,
/// or a publish sent while the stream elected a leader, is never answered: without a retry the
/// send waited out the whole `--publish-timeout` and failed (docs/drills.md, "What the drills
/// found"). Far above a PubAck's normal latency (milliseconds), so a loaded stream is not
/// flooded with retries.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The pause before a retry after an attempt failed at once (no responders while a leader is
/// elected, a connection being re-established).
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Publishes `stored` and waits (up to the publisher's timeout, retrying within it) for the
/// outcome. Also returns how long the PubAck took, when one came.
pub async fn publish(publisher: &Publisher, stored: &StoredMessage) -> (Published, Option<Duration>) {
    let dedup_id = stored.dedup_id();
    let payload = Bytes::from(serde_json::to_vec(stored).expect("stored messages serialize"));
    let subject = message_subject(publisher.partitions, stored.org, stored.channel);
    let started = Instant::now();
    let deadline = started + publisher.timeout;
    let mut attempts = 0u32;
    let ack = loop {
        attempts += 1;
        let attempt = async {
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(dedup_id.as_str());
            let ack = publisher.jetstream.send_publish(subject.clone(), message).await?;
            ack.await
        };
        let attempt_deadline = deadline.min(Instant::now() + ATTEMPT_TIMEOUT);
        let (failure, pause) = match tokio::time::timeout_at(attempt_deadline, attempt).await {
            Ok(Ok(ack)) => break ack,
            Ok(Err(error)) => (error_chain(&error), RETRY_PAUSE),
            Err(_) => (format!("no PubAck within {:?}", attempt_deadline - started), Duration::ZERO),
        };
        let retry_at = Instant::now() + pause;
        if retry_at >= deadline {
            warn!(attempts, last = %failure, "publish not acknowledged within the publish timeout");
            let timed_out = Instant::now() >= deadline;
            return (Published::Unavailable { timed_out }, None);
        }
        debug!(attempts, %failure, "publish not acknowledged; sending it again under the same id");
        tokio::time::sleep_until(retry_at).await;
    };
    let latency = Some(started.elapsed());
    if !ack.duplicate {
        return (Published::Stored { seq: ack.sequence, duplicate: false }, latency);
    }
    // Rare (a retry), so one direct read of the stored record is cheap.
    let published = match same_as_stored(publisher, ack.sequence, stored).await {
        Ok(true) => Published::Stored { seq: ack.sequence, duplicate: true },
        Ok(false) => Published::IdReused { seq: ack.sequence },
        Err(error) => {
            // Unknown whether it is a retry: acknowledging could hide a lost body, so the
            // sender retries (the same id is safe either way).
            warn!(%error, seq = ack.sequence, "cannot read the record a duplicate publish refers to");
            Published::Unavailable { timed_out: false }
        }
    };
    (published, latency)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_its_own_metric_label() {
        let labels = [
            Published::Stored { seq: 1, duplicate: false }.label(),
            Published::Stored { seq: 1, duplicate: true }.label(),
            Published::IdReused { seq: 1 }.label(),
            Published::Unavailable { timed_out: true }.label(),
        ];
        assert_eq!(labels, ["ok", "duplicate", "id_reused", "failed"]);
    }
}

/// A stream found with another replica count than the one configured. A stream at R1 where
/// R3 is configured loses acknowledged messages with its one node (docs/drills.md, "The HA
/// topology"), so it is never silently kept: see [`ensure_replicas`].
#[derive(Debug, PartialEq, Eq)]
pub struct ReplicaMismatch {
    pub stream: String,
    pub found: usize,
    pub configured: usize,
}

impl std::fmt::Display for ReplicaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { stream, found, configured } = self;
        write!(
            f,
            "stream {stream} has {found} replica(s) but {configured} are configured (--stream-replicas): \
             change the stream (`nats stream edit {stream} --replicas {configured}`) or the setting"
        )
    }
}

impl std::error::Error for ReplicaMismatch {}

/// Brings a stream to the configured replica count. One with fewer replicas is raised
/// (JetStream copies it to the new peers; an upgrade from R1 to R3 needs no manual step) and
/// the raise is logged; one with more, or one that cannot be raised (a cluster too small), is
/// an error naming both counts.
pub async fn ensure_replicas(
    jetstream: &async_nats::jetstream::Context,
    info: &async_nats::jetstream::stream::Info,
    configured: usize,
) -> Result<(), async_nats::Error> {
    let Err(mismatch) = check_replicas(info, configured) else { return Ok(()) };
    if mismatch.found > configured {
        return Err(mismatch.into());
    }
    let mut config = info.config.clone();
    config.num_replicas = configured;
    jetstream.update_stream(&config).await.map_err(|e| format!("{mismatch}; raising it failed: {e}"))?;
    warn!(
        stream = %mismatch.stream,
        found = mismatch.found,
        configured,
        "stream had fewer replicas than configured: raised"
    );
    Ok(())
}

/// Checks a stream's replica count against the configured one.
pub fn check_replicas(
    info: &async_nats::jetstream::stream::Info,
    configured: usize,
) -> Result<(), ReplicaMismatch> {
    let found = info.config.num_replicas.max(1);
    if found == configured {
        return Ok(());
    }
    Err(ReplicaMismatch { stream: info.config.name.clone(), found, configured })
}
