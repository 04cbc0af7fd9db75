//! The kinds of data kept in NATS JetStream: the MESSAGES stream's retained tail and the
//! broker-bridge's dead-letter stream; and the two waits an erasure makes before touching any
//! copy of a person's messages (the module invariant of `super`).

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::DeleteMessageErrorKind;
use async_nats::jetstream::ErrorCode;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde_json::Value;
use threadspace_protocol::subjects::{
    dead_letter_subject, hello_cache_user_filter, org_message_filter, parse_message_subject, partition_of,
    DEAD_LETTER_STREAM, DEAD_LETTER_SUBJECT_HEADER, HELLO_CACHE_STREAM, MESSAGES_STREAM,
};
use threadspace_protocol::{error_chain, OrgId};
use threadspace_store::messages::Sink;
use threadspace_store::rights::ErasurePolicy;
use tracing::info;

use super::{DataKind, Erasure, Outcome, Rights, RightsError};

/// How long a scan waits for the next record before giving up on the stream.
const NEXT_TIMEOUT: Duration = Duration::from_secs(10);

fn stream_error(error: &(dyn std::error::Error + 'static)) -> RightsError {
    RightsError::Stream(error_chain(error))
}

/// The stream `name`, or `None` if it does not exist (a dead-letter stream no bridge made).
async fn stream(
    rights: &Rights,
    name: &str,
) -> Result<Option<async_nats::jetstream::stream::Stream>, RightsError> {
    match rights.jetstream().get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
            Ok(None)
        }
        Err(e) => Err(stream_error(&e)),
    }
}

/// The sequences of the records of `stream` on `filter` (up to `through`, if given) that
/// `matches` selects. Reads with an ephemeral ordered consumer, as a resume replay does.
async fn scan(
    stream: &async_nats::jetstream::stream::Stream,
    filter: String,
    through: Option<u64>,
    mut matches: impl FnMut(&async_nats::jetstream::Message) -> bool,
) -> Result<Vec<u64>, RightsError> {
    let config = pull::OrderedConfig {
        filter_subject: filter,
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    let mut consumer = stream.create_consumer(config).await.map_err(|e| stream_error(&e))?;
    if consumer.info().await.map_err(|e| stream_error(&e))?.num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer.messages().await.map_err(|e| stream_error(&e))?;
    let mut found = Vec::new();
    loop {
        let message = match tokio::time::timeout(NEXT_TIMEOUT, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(stream_error(&e)),
            Ok(None) | Err(_) => {
                return Err(RightsError::Stream("the scan stopped before the stream's end".into()))
            }
        };
        let info = message.info().map_err(|e| RightsError::Stream(e.to_string()))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        if through.is_some_and(|t| seq > t) {
            break;
        }
        if matches(&message) {
            found.push(seq);
        }
        if pending == 0 || through == Some(seq) {
            break;
        }
    }
    Ok(found)
}

/// Deletes `seqs` from `stream` (JetStream overwrites a deleted record's bytes); how many were
/// still there.
async fn delete(stream: &async_nats::jetstream::stream::Stream, seqs: &[u64]) -> Result<u64, RightsError> {
    let mut deleted = 0;
    for &seq in seqs {
        match stream.delete_message(seq).await {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            // Aged out meanwhile: nothing left to delete.
            Err(e) if matches!(e.kind(), DeleteMessageErrorKind::JetStream(j) if j.error_code() == ErrorCode::NO_MESSAGE_FOUND) =>
                {}
            Err(e) => return Err(stream_error(&e)),
        }
    }
    Ok(deleted)
}

/// Whether a record's JSON names `user` as its sender. Read leniently, not as a valid record:
/// a record the archive refused (a dead letter, or its original still in the stream) is the
/// person's all the same.
fn sent_by(payload: &[u8], user: threadspace_protocol::UserId) -> bool {
    serde_json::from_slice::<Value>(payload)
        .is_ok_and(|v| v.get("sender").and_then(Value::as_i64) == Some(user.0))
}

/// The MESSAGES stream's last sequence now.
pub(super) async fn last_seq(rights: &Rights) -> Result<u64, RightsError> {
    let Some(mut stream) = stream(rights, MESSAGES_STREAM).await? else { return Ok(0) };
    Ok(stream.info().await.map_err(|e| stream_error(&e))?.state.last_sequence)
}

/// Waits until each broker-bridge consumer of `org`'s partition has taken everything through
/// `through` (its ack floor passed it, or nothing is pending), or fails after `rights.bridge_wait`.
/// A sink with no consumer and no checkpoint never ran there and holds nothing; one whose
/// consumer is gone but whose checkpoint exists is being set up again, and is waited for.
pub(super) async fn wait_for_bridge(rights: &Rights, org: OrgId, through: u64) -> Result<(), RightsError> {
    let Some(stream) = stream(rights, MESSAGES_STREAM).await? else { return Ok(()) };
    let partition = partition_of(org, rights.partitions());
    let deadline = tokio::time::Instant::now() + rights.bridge_wait;
    for sink in Sink::ALL {
        let name = sink.consumer_name(partition);
        loop {
            let caught_up = match stream.consumer_info(&name).await {
                Ok(info) => {
                    info.ack_floor.stream_sequence >= through
                        || (info.num_pending == 0 && info.num_ack_pending == 0)
                }
                // Never made: the bridge never ran this sink here, and holds nothing of it. A
                // consumer that existed (its checkpoint says so) is being made again: wait.
                Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {
                    !rights.store().bridge_has_run(sink.as_str(), partition).await?
                }
                Err(e) => return Err(stream_error(&e)),
            };
            if caught_up {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RightsError::BridgeBehind { through, waited: rights.bridge_wait });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The gateways' hello cache: copies of the person's directory reads (profile, channels, read
/// markers), one per login session (docs/drills.md, "Hellos without PostgreSQL"). Exports
/// read the originals; an erasure purges the copies whatever the org's policy, as it scrubs
/// the profile they copy.
pub(crate) struct HelloCache;

impl DataKind for HelloCache {
    fn name(&self) -> &'static str {
        "hello_cache"
    }

    fn erase<'a>(
        &'a self,
        rights: &'a Rights,
        erasure: &'a Erasure,
    ) -> BoxFuture<'a, Result<Outcome, RightsError>> {
        Box::pin(async move {
            let Some(stream) = stream(rights, HELLO_CACHE_STREAM).await? else {
                return Ok(Outcome::Deleted(0));
            };
            let purged = stream
                .purge()
                .filter(hello_cache_user_filter(erasure.subject.user))
                .await
                .map_err(|e| stream_error(&e))?;
            Ok(Outcome::Deleted(purged.purged))
        })
    }
}

/// The MESSAGES stream's retained tail (its copies of messages the archive also holds; exports
/// read the archive).
pub(crate) struct StreamTail;

impl DataKind for StreamTail {
    fn name(&self) -> &'static str {
        "stream"
    }

    fn erase<'a>(
        &'a self,
        rights: &'a Rights,
        erasure: &'a Erasure,
    ) -> BoxFuture<'a, Result<Outcome, RightsError>> {
        Box::pin(async move {
            if erasure.subject.policy == ErasurePolicy::Anonymise {
                return Ok(Outcome::Kept(
                    "the org's policy is anonymise: the stream keeps what the archive keeps",
                ));
            }
            let Some(stream) = stream(rights, MESSAGES_STREAM).await? else { return Ok(Outcome::Deleted(0)) };
            let (org, user) = (erasure.subject.org, erasure.subject.user);
            // The org's subjects only: another org's records are never read.
            let filter = org_message_filter(rights.partitions(), org);
            let seqs =
                scan(&stream, filter, Some(erasure.through_seq), |message| sent_by(&message.payload, user))
                    .await?;
            let found: Vec<i64> = seqs.iter().map(|&s| s as i64).collect();
            // Kept with the job before the copies go: a retry still finds the search rows of
            // messages the archive refused.
            rights.store().note_found_seqs(&erasure.job, &found).await?;
            erasure.found_seqs.lock().expect("seq list lock is never poisoned").extend(found);
            let deleted = delete(&stream, &seqs).await?;
            info!(%org, %user, deleted, "erasure: the stream's copies deleted");
            Ok(Outcome::Deleted(deleted))
        })
    }
}

/// The broker-bridge's dead letters of the person's messages (not exported: operators' material
/// for repair, not a person's data to hand out).
pub(crate) struct DeadLetters;

impl DataKind for DeadLetters {
    fn name(&self) -> &'static str {
        "dead_letters"
    }

    fn erase<'a>(
        &'a self,
        rights: &'a Rights,
        erasure: &'a Erasure,
    ) -> BoxFuture<'a, Result<Outcome, RightsError>> {
        Box::pin(async move {
            if erasure.subject.policy == ErasurePolicy::Anonymise {
                return Ok(Outcome::Kept("the org's policy is anonymise: messages stay"));
            }
            let Some(stream) = stream(rights, DEAD_LETTER_STREAM).await? else {
                return Ok(Outcome::Deleted(0));
            };
            let (org, user) = (erasure.subject.org, erasure.subject.user);
            let filter = dead_letter_subject(partition_of(org, rights.partitions()));
            // A dead letter is the person's when its original subject is their org's and its
            // JSON names them as the sender.
            let seqs = scan(&stream, filter, None, |message| {
                let subject = message.headers.as_ref().and_then(|h| h.get(DEAD_LETTER_SUBJECT_HEADER));
                let of_org = subject
                    .and_then(|s| parse_message_subject(s.as_str()))
                    .is_some_and(|(_, message_org, _)| message_org == org);
                of_org && sent_by(&message.payload, user)
            })
            .await?;
            Ok(Outcome::Deleted(delete(&stream, &seqs).await?))
        })
    }
}
