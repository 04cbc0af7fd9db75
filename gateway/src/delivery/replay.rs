//! Resume: replays the messages a reconnecting client missed, `(last_seq, head_seq]` of its
//! channels, straight from the JetStream stream, or says which range it must page from history.
//!
//! The replay reads the org's subjects with an ephemeral ordered consumer from `last_seq + 1`
//! and filters by the connection's channels. It always ends with a `resumed` frame; any range
//! it could not replay (older than the stream's tail, over the replay limit, or a stream
//! error) is announced with `history_required` first.
//!
//! **Invariant:** the replay ends only when it has handed over a message at or past
//! `head_seq`, or when the stream *leader* says no message of the org lies between the last
//! one handed over and `head_seq`. An ordered consumer is R1 and JetStream places it on any
//! replica, including a follower that has not applied the newest messages yet: its "nothing
//! pending" means "nothing on this replica". Trusting it lost the newest messages for every
//! client that resumed on a lagging replica (found by the failover drill; docs/drills.md).

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::RawMessageErrorKind;
use futures_util::StreamExt as _;
use threadspace_protocol::frames::ServerFrame;
use threadspace_protocol::stored::{decode_record, Record};
use threadspace_protocol::subjects::{org_message_filter, parse_message_subject, MESSAGES_STREAM};
use threadspace_protocol::{ChannelId, Seq};
use tracing::{debug, info, warn};

use threadspace_protocol::error_chain;
use tokio::sync::Semaphore;

use crate::delivery::hub::ConnHandle;
use crate::metrics as m;

/// The client socket failed during replay.
#[derive(Debug)]
pub(crate) struct WriteFailed;

/// Where the replay writes: the connection's socket, before its writer takes the queue. The
/// edge implements it (with its write timeout); a failed write ends the replay.
pub(crate) trait FrameSink {
    fn send(
        &mut self,
        frame: &ServerFrame,
    ) -> impl std::future::Future<Output = Result<(), WriteFailed>> + Send;
}

/// What a replay reads from, and how much of it at once.
pub(crate) struct Replayer {
    pub jetstream: async_nats::jetstream::Context,
    pub partitions: u32,
    /// `--max-replay`: the most messages one resume replays before `history_required`.
    pub max_replay: u64,
    /// `--replay-concurrency` permits: bounds concurrent replays.
    pub permits: Semaphore,
    /// `--fault-replay-lagging-replica`: test-only; skip the consumer, as if its replica lagged.
    pub fault_lagging_replica: bool,
}

/// How long to wait for the next replayed message before giving up on the rest.
const NEXT_TIMEOUT: Duration = Duration::from_secs(5);

/// Replays `(last_seq, head_seq]` and returns `max(last_seq, head_seq)`: every message at or
/// below it has been replayed, announced as a history gap, or already seen by the client, so
/// live frames at or below it are skipped. (A client can be *ahead* of this gateway: it comes
/// from a gateway whose fanout was further along. Without the `max`, the live frames between
/// this gateway's head and the client's cursor would reach it a second time — the loadgen
/// checker caught exactly that under overload.)
pub(crate) async fn replay(
    replayer: &Replayer,
    write: &mut impl FrameSink,
    handle: &ConnHandle,
    last_seq: Seq,
    head_seq: Seq,
) -> Result<Seq, WriteFailed> {
    let mut replayed = 0u64;
    if last_seq < head_seq {
        let permit = tokio::select! {
            permit = replayer.permits.acquire() => permit,
            _ = handle.cancel.cancelled() => return Err(WriteFailed),
        };
        let outcome = replay_range(replayer, write, handle, last_seq, head_seq, &mut replayed).await;
        drop(permit);
        match outcome {
            Ok(()) => {}
            Err(Stop::Write) => return Err(WriteFailed),
            Err(Stop::Gap { after_seq }) => {
                warn!(
                    conn_id = handle.id,
                    after_seq,
                    head_seq,
                    replayed,
                    "resume replay stopped short; the client must page the rest from history"
                );
                metrics::counter!(m::RESUMES, "result" => "history_required").increment(1);
                write.send(&ServerFrame::HistoryRequired { after_seq, through_seq: head_seq }).await?;
            }
        }
    }
    metrics::counter!(m::REPLAYED_MESSAGES).increment(replayed);
    let through_seq = head_seq.max(last_seq);
    write.send(&ServerFrame::Resumed { replayed, through_seq }).await?;
    debug!(conn_id = handle.id, last_seq, head_seq, replayed, "resume replay done");
    Ok(through_seq)
}

enum Stop {
    Write,
    /// Messages after `after_seq` (up to the head) could not be replayed.
    Gap {
        after_seq: Seq,
    },
}

async fn replay_range(
    replayer: &Replayer,
    write: &mut impl FrameSink,
    handle: &ConnHandle,
    last_seq: Seq,
    head_seq: Seq,
    replayed: &mut u64,
) -> Result<(), Stop> {
    let stream = replayer.jetstream.get_stream(MESSAGES_STREAM).await.map_err(|error| {
        warn!(error = %error_chain(&error), conn_id = handle.id, "replay cannot read the stream");
        Stop::Gap { after_seq: last_seq }
    })?;
    let first_seq = stream.cached_info().state.first_sequence;
    let mut from = last_seq + 1;
    if from < first_seq {
        // Older than the retained tail: that part lives only in Postgres now.
        metrics::counter!(m::RESUMES, "result" => "history_required").increment(1);
        write
            .send(&ServerFrame::HistoryRequired { after_seq: last_seq, through_seq: first_seq - 1 })
            .await
            .map_err(|_| Stop::Write)?;
        from = first_seq;
    }
    if from > head_seq {
        return Ok(());
    }
    let mut replay = Replay {
        replayer,
        channels: handle.channel_set(),
        filter: org_message_filter(replayer.partitions, handle.org),
        head_seq,
        last_done: from - 1,
        replayed,
    };
    let mut consumers = if replayer.fault_lagging_replica { 0 } else { MAX_CONSUMERS };
    let mut from_leader = 0u64;
    let outcome = loop {
        if consumers > 0 {
            consumers -= 1;
            match replay.read_consumer(&stream, write, handle.id).await? {
                Read::Done => break Ok(()),
                Read::Drained => {}
                Read::WentBack { seq } => {
                    // async-nats recreates an ordered consumer that lost its server from the
                    // stream's first message when it had handed over none yet: replaying that
                    // would send the client what it already has (found by the failover drill).
                    // Start again here.
                    warn!(
                        conn_id = handle.id,
                        seq,
                        from = replay.last_done + 1,
                        "replay consumer went back before its start; recreating it"
                    );
                    continue;
                }
            }
        }
        // The consumer ran dry before the head: the leader has the last word. What it has that
        // the consumer did not hand over came from a lagging replica; a new consumer (placed
        // anew) takes over from there, and once they are used up the leader serves the rest
        // one record at a time.
        match replay.next_from_leader(&stream, write, handle.id).await {
            Ok(true) => from_leader += 1,
            Ok(false) => break Ok(()),
            Err(stop) => break Err(stop),
        }
    };
    if from_leader > 0 {
        metrics::counter!(m::REPLAYED_FROM_LEADER).increment(from_leader);
        info!(
            conn_id = handle.id,
            from_leader,
            head = head_seq,
            "replay read from the stream leader what the consumer's replica did not have yet"
        );
    }
    outcome
}

/// One replay's progress: everything at or below `last_done` has been handed over or skipped.
struct Replay<'a> {
    replayer: &'a Replayer,
    channels: HashSet<ChannelId>,
    /// The org's message subjects.
    filter: String,
    head_seq: Seq,
    last_done: Seq,
    replayed: &'a mut u64,
}

impl Replay<'_> {
    /// Reads an ordered consumer from `last_done + 1` until it reaches the head, runs dry, fails
    /// or goes back. A consumer that cannot be created or read counts as run dry: the leader
    /// is asked next.
    async fn read_consumer(
        &mut self,
        stream: &async_nats::jetstream::stream::Stream,
        write: &mut impl FrameSink,
        conn_id: u64,
    ) -> Result<Read, Stop> {
        let from = self.last_done + 1;
        let config = pull::OrderedConfig {
            filter_subject: self.filter.clone(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
            ..Default::default()
        };
        let dry = |error: &dyn std::error::Error| {
            warn!(error = %error, conn_id, from, "replay consumer failed; asking the stream leader");
            Read::Drained
        };
        let consumer = match stream.create_consumer(config).await {
            Ok(consumer) => consumer,
            Err(error) => return Ok(dry(&error)),
        };
        // As of its creation (the answer carries it: no second request). Nothing on the
        // consumer's replica: the leader says whether that is everything.
        if consumer.cached_info().num_pending == 0 {
            return Ok(Read::Drained);
        }
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => return Ok(dry(&error)),
        };
        loop {
            let message = match tokio::time::timeout(NEXT_TIMEOUT, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => return Ok(dry(&error)),
                Ok(None) => return Ok(Read::Drained),
                Err(_) => {
                    warn!(
                        conn_id,
                        after = self.last_done,
                        "replay consumer handed over nothing for 5 s; asking the stream leader"
                    );
                    return Ok(Read::Drained);
                }
            };
            let Ok(info) = message.info() else { return Ok(Read::Drained) };
            let (seq, pending) = (info.stream_sequence, info.pending);
            if seq <= self.last_done {
                return Ok(Read::WentBack { seq });
            }
            if seq > self.head_seq {
                return Ok(Read::Done);
            }
            self.hand_over(write, seq, &message.subject, &message.payload).await?;
            if seq == self.head_seq {
                return Ok(Read::Done);
            }
            if pending == 0 {
                return Ok(Read::Drained);
            }
        }
    }

    /// Asks the stream leader (it has every stored record, where a consumer's replica may lag)
    /// for the org's next record after `last_done` and hands it over if it is at or below the
    /// head: true if it did, false if the replay is complete. Usually the first answer is that
    /// nothing of the org lies before the head.
    async fn next_from_leader(
        &mut self,
        stream: &async_nats::jetstream::stream::Stream,
        write: &mut impl FrameSink,
        conn_id: u64,
    ) -> Result<bool, Stop> {
        let next = stream.get_first_raw_message_by_subject(&self.filter, self.last_done + 1);
        let message = match tokio::time::timeout(LEADER_TIMEOUT, next).await {
            Ok(Ok(message)) => message,
            Ok(Err(error)) if error.kind() == RawMessageErrorKind::NoMessageFound => return Ok(false),
            Ok(Err(error)) => {
                warn!(error = %error_chain(&error), conn_id, after = self.last_done, head = self.head_seq, "the stream leader cannot finish the replay");
                return Err(Stop::Gap { after_seq: self.last_done });
            }
            Err(_) => {
                warn!(
                    conn_id,
                    after = self.last_done,
                    head = self.head_seq,
                    "the stream leader did not answer; the replay stops"
                );
                return Err(Stop::Gap { after_seq: self.last_done });
            }
        };
        if message.sequence > self.head_seq {
            return Ok(false);
        }
        self.hand_over(write, message.sequence, &message.subject, &message.payload).await?;
        Ok(true)
    }

    /// Sends the message at `seq` if it belongs to one of the connection's channels (read from
    /// the subject, so other channels' records are not parsed) and is what the archive keeps
    /// (the fanout's and the bridge's rule); either way, it is done.
    async fn hand_over(
        &mut self,
        write: &mut impl FrameSink,
        seq: Seq,
        subject: &str,
        payload: &[u8],
    ) -> Result<(), Stop> {
        let wanted = parse_message_subject(subject).is_some_and(|(_, _, c)| self.channels.contains(&c));
        let record = wanted.then(|| decode_record(subject, payload, self.replayer.partitions));
        if let Some(Ok(Record { message: stored, .. })) = record {
            if *self.replayed >= self.replayer.max_replay {
                return Err(Stop::Gap { after_seq: self.last_done });
            }
            write.send(&ServerFrame::Msg(stored.into_frame(seq))).await.map_err(|_| Stop::Write)?;
            *self.replayed += 1;
        }
        self.last_done = seq;
        Ok(())
    }
}

/// How long the stream leader may take to answer one read.
const LEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Consumers a replay creates before the stream leader serves the rest one record at a time.
const MAX_CONSUMERS: usize = 3;

/// How reading one consumer ended.
enum Read {
    /// It handed over a message at or past the head: the replay is complete.
    Done,
    /// It had nothing more (or failed) before the head: the leader has the last word.
    Drained,
    /// It handed over `seq`, at or below what was already replayed.
    WentBack { seq: Seq },
}
