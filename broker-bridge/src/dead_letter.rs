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
pub const STREAM: &str = "MESSAGES_DLQ";
/// Header: `archive` or `search`: which writer refused it.
pub const SINK_HEADER: &str = "ThreadSpace-Sink";
/// Header: the original stream sequence.
pub const SEQ_HEADER: &str = "ThreadSpace-Seq";
/// Header: the original subject.
pub const SUBJECT_HEADER: &str = "ThreadSpace-Subject";
/// Header: `undecodable` or `refused`.
pub const KIND_HEADER: &str = "ThreadSpace-Dead-Letter-Kind";
/// Header: why, in words.
pub const REASON_HEADER: &str = "ThreadSpace-Reason";

/// Creates the dead-letter stream if it does not exist.
pub async fn ensure_stream(
    jetstream: &async_nats::jetstream::Context,
    replicas: usize,
    max_age: Duration,
) -> Result<(), async_nats::Error> {
    jetstream
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
    Ok(())
}

/// One message for the dead-letter stream.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    pub sink: threadspace_store::messages::Sink,
    pub partition: u32,
    pub seq: i64,
    pub subject: &'a str,
    /// `undecodable` or `refused`.
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
    let subject = format!("dlq.msg.{}", letter.partition);
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
