//! The dead-letter stream `MESSAGES_DLQ` (subjects `dlq.msg.<partition>`): the original
//! payload of a message Postgres cannot take, with headers naming its seq, subject and reason.
//! Publishing is idempotent (`Nats-Msg-Id: dlq-<sink>-<seq>`), so a crash between the dead
//! letter and the original's ack does not file it twice; the archive and the search index
//! each file their own.

use std::time::Duration;

use async_nats::jetstream::stream::{self, StorageType};
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics as m;

/// Name of the dead-letter stream.
pub const STREAM: &str = threadspace_protocol::subjects::DEAD_LETTER_STREAM;
/// Header: `archive` or `search`: which writer refused it.
pub const SINK_HEADER: &str = "ThreadSpace-Sink";
/// Header: the original stream sequence.
pub const SEQ_HEADER: &str = "ThreadSpace-Seq";
/// Header: the original subject.
pub const SUBJECT_HEADER: &str = threadspace_protocol::subjects::DEAD_LETTER_SUBJECT_HEADER;
/// Header: `undecodable`, `refused` or `max_deliveries`.
pub const KIND_HEADER: &str = "ThreadSpace-Dead-Letter-Kind";
/// Header: why, in words.
pub const REASON_HEADER: &str = "ThreadSpace-Reason";

/// Creates the dead-letter stream if it does not exist.
pub async fn ensure_stream(
    jetstream: &async_nats::jetstream::Context,
    replicas: usize,
    max_age: Duration,
) -> Result<(), async_nats::Error> {
    let mut stream = jetstream
        .get_or_create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["dlq.msg.>".to_owned()],
            storage: StorageType::File,
            num_replicas: replicas,
            max_age,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    threadspace_stream::ensure_replicas(jetstream, stream.info().await?, replicas).await?;
    Ok(())
}

/// One message for the dead-letter stream.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    pub sink: threadspace_store::messages::Sink,
    pub partition: u32,
    pub seq: i64,
    pub subject: &'a str,
    /// `undecodable`, `refused` or `max_deliveries`.
    pub kind: &'static str,
    pub reason: &'a str,
}

/// Stores `letter` (waiting for the PubAck, retrying until stored or `shutdown`).
pub async fn publish(
    jetstream: &async_nats::jetstream::Context,
    letter: &DeadLetter<'_>,
    payload: Bytes,
    shutdown: &CancellationToken,
) -> Result<(), async_nats::Error> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("dlq-{}-{}", letter.sink.as_str(), letter.seq).as_str());
    headers.insert(SINK_HEADER, letter.sink.as_str());
    headers.insert(SEQ_HEADER, letter.seq.to_string().as_str());
    headers.insert(SUBJECT_HEADER, letter.subject);
    headers.insert(KIND_HEADER, letter.kind);
    // Header values are one line.
    let reason: String =
        letter.reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(500).collect();
    headers.insert(REASON_HEADER, reason.as_str());
    let subject = threadspace_protocol::subjects::dead_letter_subject(letter.partition);
    let mut attempt = 0u32;
    loop {
        let stored = async {
            jetstream.publish_with_headers(subject.clone(), headers.clone(), payload.clone()).await?.await
        };
        match stored.await {
            Ok(_) => break,
            Err(error) => {
                attempt += 1;
                warn!(seq = letter.seq, attempt, %error, "dead letter not stored yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err("shutting down before the dead letter was stored".into()),
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt.min(25)))) => {}
                }
            }
        }
    }
    metrics::counter!(m::DEAD_LETTERS, "sink" => letter.sink.as_str(), "reason" => letter.kind).increment(1);
    warn!(
        sink = letter.sink.as_str(),
        seq = letter.seq,
        partition = letter.partition,
        subject = letter.subject,
        kind = letter.kind,
        reason = %reason,
        "message moved to the dead-letter stream {STREAM}"
    );
    Ok(())
}

/// JetStream's advisory when a consumer gives up on a message after `max_deliver` attempts.
#[derive(Debug, PartialEq, Eq, serde::Deserialize)]
pub struct MaxDeliveries {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: u64,
}

/// Subject of max-deliveries advisories for the MESSAGES stream's consumers.
pub fn max_deliveries_subject() -> String {
    format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
        threadspace_protocol::subjects::MESSAGES_STREAM
    )
}

/// Subscribed before the writers start, so no advisory of theirs is missed.
/// Files every message one of this process's consumers gave up on (after `--max-deliver`
/// deliveries without an ack: the bridge crashed or stalled on it each time) as a dead letter,
/// so it is visible and recoverable instead of silently skipped. Runs until `shutdown`.
pub async fn watch_max_deliveries(
    mut advisories: async_nats::Subscriber,
    jetstream: async_nats::jetstream::Context,
    ours: Vec<(String, threadspace_store::messages::Sink, u32)>,
    shutdown: CancellationToken,
) {
    use futures_util::StreamExt as _;
    loop {
        let advisory = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = advisories.next() => match next {
                Some(message) => message,
                None => return,
            },
        };
        let Ok(advisory) = serde_json::from_slice::<MaxDeliveries>(&advisory.payload) else {
            warn!(subject = %advisory.subject, "undecodable max-deliveries advisory");
            continue;
        };
        let Some((_, sink, partition)) = ours.iter().find(|(name, _, _)| *name == advisory.consumer) else {
            continue;
        };
        let original = match jetstream.get_stream(&advisory.stream).await {
            Ok(stream) => stream.get_raw_message(advisory.stream_seq).await.map_err(async_nats::Error::from),
            Err(error) => Err(error.into()),
        };
        let (subject, payload) = match original {
            Ok(message) => (message.subject.to_string(), message.payload),
            Err(error) => {
                warn!(seq = advisory.stream_seq, %error, "message given up by JetStream is no longer readable");
                (String::new(), Bytes::new())
            }
        };
        let reason = format!("delivered {} times without a commit", advisory.deliveries);
        let letter = DeadLetter {
            sink: *sink,
            partition: *partition,
            seq: advisory.stream_seq as i64,
            subject: &subject,
            kind: "max_deliveries",
            reason: &reason,
        };
        if publish(&jetstream, &letter, payload, &shutdown).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_max_deliveries_advisory() {
        let json = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2026-11-22T09:00:00Z","stream":"MESSAGES","consumer":"writer-p3","stream_seq":42,"deliveries":20}"#;
        let advisory: MaxDeliveries = serde_json::from_slice(json).expect("parses");
        assert_eq!(
            advisory,
            MaxDeliveries {
                stream: "MESSAGES".into(),
                consumer: "writer-p3".into(),
                stream_seq: 42,
                deliveries: 20
            }
        );
        assert_eq!(max_deliveries_subject(), "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.MESSAGES.*");
    }
}
