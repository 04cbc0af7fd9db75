//! The fanout: one ordered JetStream consumer per gateway process reads every stored message
//! in stream order and hands each, encoded once, to the hub.
//!
//! **Invariant:** a client only ever receives messages that JetStream has stored (docs/design.md §4.2),
//! because fanout reads the stream rather than relaying what clients sent.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::{self, pull, DeliverPolicy};
use async_nats::jetstream::stream::{self, RawMessageErrorKind, StorageType};
use bytes::Bytes;
use futures_util::StreamExt as _;
use threadspace_protocol::frames::ServerFrame;
use threadspace_protocol::stored::{decode_directory_event, decode_record, Record};
use threadspace_protocol::subjects::{DIRECTORY_SUBJECTS, MESSAGES_STREAM, MESSAGES_SUBJECTS};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics as m;
use threadspace_protocol::error_chain;

use crate::delivery::hub::{Applied, Hub};

/// The fanout's own watchdog: every `STALL_CHECK` it looks whether its head moved, and after
/// `STALL_AFTER` without progress it asks the stream whether there is anything to deliver. If
/// there is, or if the stream cannot answer (a leader election), the consumer is recreated.
/// async-nats recreates a lost ordered consumer itself, but backs off to 10 s between failed
/// attempts, and after a stream leader's death it often did not recover until the watchdog
/// stepped in: drills saw gateways deliver nothing for 7–23 s (docs/drills.md, "What the
/// drills found").
const STALL_CHECK: Duration = Duration::from_millis(500);
const STALL_AFTER: Duration = Duration::from_millis(1500);

/// How long the watchdog's question, and each step of creating a consumer, may take. During an
/// election a request can go unanswered: asking again soon beats waiting out the client's 5 s.
const STREAM_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// A handle on the MESSAGES stream (no cached info: the watchdog asks afresh).
type MessagesStream = async_nats::jetstream::stream::Stream<()>;

/// The pause between a failed consumer and the next attempt.
const RECREATE_PAUSE: Duration = Duration::from_millis(250);

/// Between attempts to create a consumer, the stream leader serves the records after the head,
/// one request each, at most this many before the consumer is tried again (it is cheaper per
/// record), and each read may take this long.
const LEADER_BATCH: u64 = 1000;
const LEADER_READ_TIMEOUT: Duration = Duration::from_millis(500);

/// Errs (so the consumer is recreated) when the stream holds messages past `head` that the
/// consumer has not handed over for `idle`, or cannot say whether it does; an idle stream is
/// left alone.
async fn stalled(stream: &MessagesStream, head: u64, idle: Duration) -> Result<(), async_nats::Error> {
    let why = match tokio::time::timeout(STREAM_REQUEST_TIMEOUT, stream.get_info()).await {
        Ok(Ok(info)) if info.state.last_sequence <= head => return Ok(()),
        Ok(Ok(info)) => format!("the stream is at {} and this gateway at {head}", info.state.last_sequence),
        Ok(Err(error)) => format!("the stream cannot say why: {error}"),
        Err(_) => "the stream did not answer".to_owned(),
    };
    metrics::counter!(m::FANOUT_STALLS).increment(1);
    Err(format!("the fanout delivered nothing for {idle:?}; {why}").into())
}

/// Errs (so the consumer is recreated) when the consumer handed over `seq` after `head` while
/// the stream leader holds an earlier record after `head`, or cannot say. The fanout's consumer
/// reads every subject, so sequences come dense unless records were deleted (an erasure); an
/// R1 consumer can sit on a replica that lags or is catching up, and a skipped record would be
/// lost for every member on this gateway (docs/drills.md, "What the drills found").
async fn skipped(stream: &MessagesStream, head: u64, seq: u64) -> Result<(), async_nats::Error> {
    let next = stream.get_first_raw_message_by_subject(">", head + 1);
    let first = match tokio::time::timeout(STREAM_REQUEST_TIMEOUT, next).await {
        Ok(Ok(message)) if message.sequence >= seq => return Ok(()),
        Ok(Err(error)) if error.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
        Ok(Ok(message)) => message.sequence.to_string(),
        Ok(Err(error)) => format!("unknown ({error})"),
        Err(_) => "unknown (no answer)".to_owned(),
    };
    metrics::counter!(m::FANOUT_SKIPS).increment(1);
    Err(format!("the consumer skipped from {head} to {seq}; the stream leader's next record is {first}")
        .into())
}

/// Why the consumer described by `consumer` sits on a replica that lags the stream leader
/// ([`super::lagging_host`]), from the stream's info asked afresh; `None` also when the
/// stream cannot say (the consumer is kept: the watchdog still looks after it).
async fn on_lagging_replica(stream: &MessagesStream, consumer: &consumer::Info) -> Option<String> {
    let info = tokio::time::timeout(STREAM_REQUEST_TIMEOUT, stream.get_info()).await.ok()?.ok()?;
    super::lagging_host(info.cluster.as_ref(), consumer.cluster.as_ref())
}

/// The longest pull request of the fanout's consumer (see `consume`).
const CONSUMER_PULL_EXPIRY: Duration = Duration::from_secs(1);

/// Dedup window of the stream: a retry within it returns the original seq.
pub(crate) const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Creates the MESSAGES stream if it does not exist, and adds the directory-event subjects to
/// one created before they existed; returns its last sequence and its max age (which may be
/// another gateway's setting: the stream's own is what counts).
pub(crate) async fn ensure_stream(
    jetstream: &async_nats::jetstream::Context,
    replicas: usize,
    max_age: Duration,
) -> Result<(u64, Duration), async_nats::Error> {
    let subjects = vec![MESSAGES_SUBJECTS.to_owned(), DIRECTORY_SUBJECTS.to_owned()];
    let mut stream = jetstream
        .get_or_create_stream(stream::Config {
            name: MESSAGES_STREAM.to_owned(),
            subjects: subjects.clone(),
            storage: StorageType::File,
            num_replicas: replicas,
            max_age,
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: true,
            ..Default::default()
        })
        .await?;
    let info = stream.info().await?;
    threadspace_stream::ensure_replicas(jetstream, info, replicas).await?;
    if !subjects.iter().all(|s| info.config.subjects.contains(s)) {
        let mut config = info.config.clone();
        config.num_replicas = replicas;
        for subject in &subjects {
            if !config.subjects.contains(subject) {
                config.subjects.push(subject.clone());
            }
        }
        jetstream.update_stream(&config).await?;
        info!(subjects = ?config.subjects, "stream now captures directory events");
    }
    Ok((info.state.last_sequence, info.config.max_age))
}

/// What the fanout reads and where it delivers.
pub(crate) struct Fanout {
    pub hub: Arc<Hub>,
    pub jetstream: async_nats::jetstream::Context,
    pub partitions: u32,
    /// `--fault-fanout-delay`: a test-only pause before each delivery.
    pub fault_delay: Duration,
    /// `--fault-fanout-no-consumer`: test-only, creating the consumer always fails.
    pub fault_no_consumer: bool,
}

/// Runs the fanout until `shutdown`, recreating the consumer after failures. Between attempts
/// the stream leader serves what was stored since the head: creating a consumer goes through
/// the JetStream meta leader, which after a node's death can answer seconds after the stream's
/// own new leader does (docs/drills.md, "What the drills found").
pub(crate) async fn run(fanout: Fanout, shutdown: CancellationToken) {
    let mut stream = None;
    let mut failures = 0u32;
    // Records the stream leader served since a consumer last made progress.
    let mut from_leader_in_streak = 0u64;
    loop {
        let start = fanout.hub.head_seq() + 1;
        let result = consume(&fanout, &mut stream, start, &shutdown).await;
        if fanout.hub.head_seq() + 1 > start {
            failures = 0;
            from_leader_in_streak = 0;
        }
        match result {
            Ok(()) => return,
            Err(error) => {
                failures += 1;
                // Every failure of a streak would repeat the first: log the first, then every 20th.
                if failures % 20 == 1 {
                    warn!(error = %error_chain(error.as_ref()), start, failures, "fanout consumer failed; recreating");
                } else {
                    debug!(error = %error_chain(error.as_ref()), start, failures, "fanout consumer failed again");
                }
            }
        }
        if let Some(stream) = &stream {
            let loud = from_leader_in_streak == 0;
            from_leader_in_streak += from_leader(&fanout, stream, &shutdown, loud).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECREATE_PAUSE) => {}
        }
    }
}

/// Hands over what the stream leader holds after the head, one request per record (the
/// non-direct get, which only the leader answers: a replica could lack a record and skip it),
/// until the leader has nothing more, cannot answer, or [`LEADER_BATCH`] records were read;
/// returns how many it read. `loud`: log at info what was read (the first reads of a streak
/// without a consumer), else at debug.
async fn from_leader(
    fanout: &Fanout,
    stream: &MessagesStream,
    shutdown: &CancellationToken,
    loud: bool,
) -> u64 {
    let from = fanout.hub.head_seq() + 1;
    let mut read = 0u64;
    while read < LEADER_BATCH && !shutdown.is_cancelled() {
        let head = fanout.hub.head_seq();
        let next = stream.get_first_raw_message_by_subject(">", head + 1);
        match tokio::time::timeout(LEADER_READ_TIMEOUT, next).await {
            Ok(Ok(message)) => {
                hand_over(fanout, message.sequence, &message.subject, &message.payload).await;
                read += 1;
            }
            Ok(Err(error)) if error.kind() == RawMessageErrorKind::NoMessageFound => break,
            Ok(Err(error)) => {
                debug!(error = %error_chain(&error), head, "the stream leader cannot serve the fanout");
                break;
            }
            Err(_) => {
                debug!(head, "the stream leader did not answer the fanout");
                break;
            }
        }
    }
    if read > 0 {
        metrics::counter!(m::FANOUT_FROM_LEADER).increment(read);
        let through = fanout.hub.head_seq();
        if loud {
            info!(read, from, through, "fanout read from the stream leader while it had no consumer");
        } else {
            debug!(read, from, through, "fanout read from the stream leader while it had no consumer");
        }
    }
    read
}

/// Reads the stream from `start` until shutdown (`Ok`) or a failure or stall (`Err`). `stream`
/// keeps the stream's handle between attempts.
async fn consume(
    fanout: &Fanout,
    stream: &mut Option<MessagesStream>,
    start: u64,
    shutdown: &CancellationToken,
) -> Result<(), async_nats::Error> {
    let stream = match stream {
        Some(stream) => stream,
        None => stream.insert(
            tokio::time::timeout(
                STREAM_REQUEST_TIMEOUT,
                fanout.jetstream.get_stream_no_info(MESSAGES_STREAM),
            )
            .await
            .map_err(|_| "the stream's handle was not returned in time")??,
        ),
    };
    if fanout.fault_no_consumer {
        return Err("--fault-fanout-no-consumer: the consumer is not created".into());
    }
    let create = stream.create_consumer(pull::OrderedConfig {
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start },
        // Pull requests of 1 s make the server's idle heartbeat 0.5 s, so a consumer lost
        // with its NATS node is noticed within ~1 s; the 30 s default expiry meant 30 s
        // without deliveries after a node failure (docs/drills.md, found by the drill).
        max_expires: CONSUMER_PULL_EXPIRY,
        ..Default::default()
    });
    let consumer = tokio::time::timeout(STREAM_REQUEST_TIMEOUT, create)
        .await
        .map_err(|_| "the consumer was not created in time")??;
    if let Some(why) = on_lagging_replica(stream, consumer.cached_info()).await {
        metrics::counter!(m::FANOUT_LAGGING_PLACEMENTS).increment(1);
        return Err(why.into());
    }
    let mut messages = consumer.messages().await?;
    info!(start, "fanout consumer started");
    let mut watchdog = tokio::time::interval(STALL_CHECK);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut progress = (fanout.hub.head_seq(), tokio::time::Instant::now());
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = watchdog.tick() => {
                let head = fanout.hub.head_seq();
                if head != progress.0 {
                    progress = (head, tokio::time::Instant::now());
                } else if progress.1.elapsed() >= STALL_AFTER {
                    stalled(stream, head, progress.1.elapsed()).await?;
                }
                continue;
            }
            next = messages.next() => match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(error.into()),
                None => return Err("fanout consumer ended".into()),
            },
        };
        let seq = message.info()?.stream_sequence;
        if seq < start {
            // async-nats recreates an ordered consumer that lost its server from the stream's
            // first message when it had handed over none yet: skipping the whole stream back
            // to the head would look like a long stall (found by the failover drill).
            metrics::counter!(m::FANOUT_STALLS).increment(1);
            return Err(format!("the consumer went back to seq {seq}, before its start at {start}").into());
        }
        if seq <= fanout.hub.head_seq() {
            // Already fanned out: an ordered consumer that reset itself under load can hand
            // back a message it delivered before. Delivering it again would duplicate it for
            // every member.
            metrics::counter!(m::FANOUT_REDELIVERED).increment(1);
            debug!(seq, head = fanout.hub.head_seq(), "fanout skipped a message it had already delivered");
            continue;
        }
        let head = fanout.hub.head_seq();
        if seq > head + 1 {
            skipped(stream, head, seq).await?;
        }
        hand_over(fanout, seq, &message.subject, &message.payload).await;
    }
}

/// Hands the record at `seq` to the hub: a directory event is applied, a message delivered to
/// the members of its channel on this gateway; a record of neither kind still advances the head.
async fn hand_over(fanout: &Fanout, seq: u64, subject: &str, payload: &[u8]) {
    if !fanout.fault_delay.is_zero() {
        tokio::time::sleep(fanout.fault_delay).await;
    }
    if subject.starts_with("dir.") {
        apply_directory(fanout, seq, subject, payload);
        return;
    }
    metrics::counter!(m::FANOUT_MESSAGES).increment(1);
    // The bridge's own rule: a record it would dead-letter is never delivered, so what
    // members receive is exactly what the archive keeps.
    match decode_record(subject, payload, fanout.partitions) {
        Ok(Record { message: stored, .. }) => {
            let lag_ms = unix_ms().saturating_sub(stored.ts).max(0);
            metrics::histogram!(m::FANOUT_LAG).record(lag_ms as f64 / 1000.0);
            let channel = stored.channel;
            let frame = Bytes::from(ServerFrame::Msg(stored.into_frame(seq)).encode());
            let delivered = fanout.hub.deliver(seq, Some(channel), &frame);
            metrics::counter!(m::FANOUT_DELIVERIES).increment(delivered as u64);
        }
        Err(why) => {
            // Still advance the head, so resume ranges stay exact.
            metrics::counter!(m::FANOUT_UNDECODABLE).increment(1);
            warn!(seq, %subject, %why, "stream record is not a valid message; not delivered");
            fanout.hub.deliver(seq, None, &Bytes::new());
        }
    }
}

/// Applies a directory event at its place in the stream (docs/accounts.md, "The directory
/// feed"); an undecodable one still advances the head.
fn apply_directory(fanout: &Fanout, seq: u64, subject: &str, payload: &[u8]) {
    match decode_directory_event(subject, payload, fanout.partitions) {
        Ok(event) => {
            let kind = m::directory_change(&event.change);
            match fanout.hub.apply_directory(seq, &event) {
                Applied::Changed(connections) => {
                    metrics::counter!(m::DIRECTORY_EVENTS, "change" => kind).increment(1);
                    debug!(seq, org = %event.org, version = event.version, kind, connections, "directory event applied");
                }
                Applied::Repeated => {
                    metrics::counter!(m::DIRECTORY_EVENTS, "change" => "repeated").increment(1);
                }
            }
        }
        Err(why) => {
            metrics::counter!(m::FANOUT_UNDECODABLE).increment(1);
            warn!(seq, %subject, %why, "stream record is not a valid directory event; ignored");
            fanout.hub.deliver(seq, None, &Bytes::new());
        }
    }
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
