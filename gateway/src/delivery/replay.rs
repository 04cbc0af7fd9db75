//! Resume: replays the messages a reconnecting client missed, `(last_seq, head_seq]` of its
//! channels, straight from the JetStream stream, or says which range it must page from history.
//!
//! The replay reads the org's subjects with an ephemeral ordered consumer from `last_seq + 1`
//! and filters by the connection's channels. It always ends with a `resumed` frame; any range
//! it could not replay (older than the stream's tail, over the replay limit, or a stream
//! error) is announced with `history_required` first.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures_util::StreamExt as _;
use threadspace_protocol::frames::ServerFrame;
use threadspace_protocol::stored::{decode_record, Record};
use threadspace_protocol::subjects::{org_message_filter, parse_message_subject, MESSAGES_STREAM};
use threadspace_protocol::Seq;
use tracing::{debug, warn};

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
        warn!(error = %error_chain(&error), "replay cannot read the stream");
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
    let channels = handle.channel_set();
    let mut last_done = from - 1;
    for _ in 0..MAX_CONSUMERS {
        let from = last_done + 1;
        let config = pull::OrderedConfig {
            filter_subject: org_message_filter(replayer.partitions, handle.org),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
            ..Default::default()
        };
        let gap = |error: &dyn std::error::Error| {
            warn!(error = %error, conn_id = handle.id, "replay consumer failed");
            Stop::Gap { after_seq: from - 1 }
        };
        let mut consumer = stream.create_consumer(config).await.map_err(|e| gap(&e))?;
        if consumer.info().await.map_err(|e| gap(&e))?.num_pending == 0 {
            return Ok(());
        }
        let mut messages = consumer.messages().await.map_err(|e| gap(&e))?;
        match replay_from(replayer, write, &channels, &mut messages, head_seq, &mut last_done, replayed)
            .await?
        {
            Read::Done => return Ok(()),
            Read::WentBack { seq } => {
                // async-nats recreates an ordered consumer that lost its server from the stream's
                // first message when it had handed over none yet: replaying that would send the
                // client what it already has (found by the failover drill). Start again here.
                warn!(
                    conn_id = handle.id,
                    seq, from, "replay consumer went back before its start; recreating it"
                );
            }
        }
    }
    Err(Stop::Gap { after_seq: last_done })
}

/// Consumers a replay creates before it gives the rest up to history.
const MAX_CONSUMERS: usize = 3;

/// How reading one consumer ended.
enum Read {
    Done,
    /// It handed over `seq`, at or below what was already replayed.
    WentBack {
        seq: Seq,
    },
}

async fn replay_from(
    replayer: &Replayer,
    write: &mut impl FrameSink,
    channels: &std::collections::HashSet<threadspace_protocol::ChannelId>,
    messages: &mut pull::Ordered,
    head_seq: Seq,
    last_done: &mut Seq,
    replayed: &mut u64,
) -> Result<Read, Stop> {
    loop {
        let message = match tokio::time::timeout(NEXT_TIMEOUT, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(error))) => {
                warn!(error = %error, "replay read failed");
                return Err(Stop::Gap { after_seq: *last_done });
            }
            Ok(None) | Err(_) => return Err(Stop::Gap { after_seq: *last_done }),
        };
        let (seq, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(_) => return Err(Stop::Gap { after_seq: *last_done }),
        };
        if seq <= *last_done {
            return Ok(Read::WentBack { seq });
        }
        if seq > head_seq {
            return Ok(Read::Done);
        }
        // Only the user's channels (read from the subject, so other channels' records are not
        // parsed), and only what the archive keeps: the fanout's and the bridge's rule.
        let wanted = parse_message_subject(&message.subject).is_some_and(|(_, _, c)| channels.contains(&c));
        let record = wanted.then(|| decode_record(&message.subject, &message.payload, replayer.partitions));
        if let Some(Ok(Record { message: stored, .. })) = record {
            if *replayed >= replayer.max_replay {
                return Err(Stop::Gap { after_seq: *last_done });
            }
            write.send(&ServerFrame::Msg(stored.into_frame(seq))).await.map_err(|_| Stop::Write)?;
            *replayed += 1;
        }
        *last_done = seq;
        if seq == head_seq || pending == 0 {
            return Ok(Read::Done);
        }
    }
}
