//! One simulated user of `loadgen run` ([`virtual_user`]): connects at its ramp slot, plays its
//! script, answers and records every frame, reconnects and resumes; and [`Shared`], what the
//! users of one process share (counters, histograms, pending presence and typing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use threadspace_client::rest::http_request;
use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_protocol::frames::{
    close_code, ChannelInfo, ClientFrame, ClientStatus, PresenceStatus, Resume, ServerFrame,
};
use threadspace_protocol::token::Identity;
use threadspace_protocol::{ChannelId, Seq, UserId};
use tokio::time::Instant;

use super::series::{Recorder, Series};
use crate::checker::Inbox;
use crate::scenario::Scenario;
use crate::script::{Action, Script, Timed, UserRecord};
use crate::unix_micros;

/// What the users of one process count, read at every progress tick.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) connected: AtomicU64,
    pub(super) sent: AtomicU64,
    pub(super) acked: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) history_required: AtomicU64,
}

/// What the users of one process share.
pub(super) struct Shared {
    pub(super) scenario: Scenario,
    pub(super) urls: Vec<String>,
    pub(super) api_port: u16,
    pub(super) source_ips: u8,
    pub(super) histograms: Recorder,
    pub(super) counters: Counters,
    /// Error codes and close codes seen, by name.
    pub(super) errors: Mutex<HashMap<String, u64>>,
    /// Pending presence changes: user → (status, unix µs when made).
    pub(super) presence: Mutex<HashMap<UserId, (PresenceStatus, u64)>>,
    /// Latest typing per (user, channel), unix µs.
    pub(super) typing: Mutex<HashMap<(UserId, ChannelId), u64>>,
    /// Start of the ramp (shared by every agent).
    pub(super) t0: Instant,
    /// Sending stops here.
    pub(super) end: Instant,
    /// Keep what every user does, for `--record`.
    pub(super) record: bool,
    /// Keep every send and reconnect with its times, for a drill's verdict.
    pub(super) track: bool,
    /// Appended to every `client_msg_id` (see [`super::Plan::tag`]).
    pub(super) tag: String,
}

impl Shared {
    fn record(&self, series: Series, micros: u64) {
        self.histograms.record(series, micros);
    }

    fn error(&self, what: String) {
        *self.errors.lock().expect("errors lock").entry(what).or_default() += 1;
    }
}

/// What one virtual user leaves for the checker.
pub(super) struct Outcome {
    pub(super) index: usize,
    pub(super) inbox: Inbox,
    pub(super) acked: Vec<(Seq, ChannelId)>,
    /// What the user did, when the run is recorded.
    pub(super) record: Option<UserRecord>,
    /// Every send and reconnect, when the run tracks them.
    pub(super) track: Track,
}

/// One send as its user saw it: where it went, when it was due, and what came of it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SendRecord {
    pub client_msg_id: String,
    pub user: UserId,
    pub channel: ChannelId,
    /// Index of the gateway it was sent through.
    pub gateway: usize,
    /// When it was due (unix µs).
    pub intended_us: u64,
    pub outcome: SendOutcome,
}

/// What came of a send.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SendOutcome {
    Acked {
        seq: Seq,
        at_us: u64,
    },
    /// An error frame answered it (e.g. `unavailable`).
    Refused {
        code: String,
        at_us: u64,
    },
    /// The connection ended, or the run did, before an answer.
    Unanswered,
}

/// One reconnect: when the connection was lost and when the new one had resumed.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ReconnectRecord {
    pub user: UserId,
    pub from_gateway: usize,
    pub lost_us: u64,
    /// `None`: it never resumed.
    pub resumed_us: Option<u64>,
}

/// One of a user's slowest deliveries: enough to find it in the stack's logs (its seq, the
/// gateway that delivered it, when it was due) and to tell a stalled fanout (live) from a
/// client that was away (replayed on resume).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SlowDelivery {
    pub seq: Seq,
    pub channel: ChannelId,
    /// Who sent it (with `intended_us`, it names the send), and who received it.
    pub sender: UserId,
    pub user: UserId,
    /// Index of the gateway that delivered it.
    pub gateway: usize,
    /// When it was due (unix µs), and how long after that it arrived (µs).
    pub intended_us: u64,
    pub took_us: u64,
    /// It came in a resume's replay, not live.
    pub replayed: bool,
}

/// How many of its slowest live deliveries, and of its slowest replayed ones, a tracked user
/// keeps.
const SLOWEST_KEPT: usize = 3;

/// A user's sends and reconnects (empty unless the run tracks them).
#[derive(Default)]
pub(super) struct Track {
    pub(super) sends: Vec<SendRecord>,
    pub(super) reconnects: Vec<ReconnectRecord>,
    /// The slowest deliveries, at most [`SLOWEST_KEPT`] live and as many replayed.
    pub(super) slowest: Vec<SlowDelivery>,
    /// Pending sends' places in `sends`.
    pending: HashMap<String, usize>,
}

impl Track {
    fn answered(&mut self, client_msg_id: &str, outcome: SendOutcome) {
        if let Some(i) = self.pending.remove(client_msg_id) {
            self.sends[i].outcome = outcome;
        }
    }

    /// Keeps `delivery` if it is among the slowest of its kind (live or replayed) so far.
    fn delivered(&mut self, delivery: SlowDelivery) {
        let mut kept = 0;
        let mut fastest: Option<(usize, u64)> = None;
        for (i, d) in self.slowest.iter().enumerate().filter(|(_, d)| d.replayed == delivery.replayed) {
            kept += 1;
            if fastest.is_none_or(|(_, took_us)| d.took_us < took_us) {
                fastest = Some((i, d.took_us));
            }
        }
        match fastest {
            _ if kept < SLOWEST_KEPT => self.slowest.push(delivery),
            Some((i, took_us)) if took_us < delivery.took_us => self.slowest[i] = delivery,
            _ => {}
        }
    }
}

/// The connection of one virtual user, and what it is waiting for.
struct Session {
    client: Client,
    /// Index of the gateway it is connected to.
    gateway: usize,
    /// Its resume's replay is still coming (until `resumed`).
    replaying: bool,
    /// `client_msg_id` → (channel, intended unix µs).
    pending_sends: HashMap<String, (ChannelId, u64)>,
    /// read `ref` → sent at.
    pending_reads: HashMap<String, Instant>,
}

/// One simulated user: connects at `start`, then plays its script (random or recorded) until
/// the run's end, answering and checking every frame it receives.
pub(super) async fn virtual_user(
    shared: Arc<Shared>,
    index: usize,
    identity: Identity,
    token: String,
    start: Instant,
    recorded: Option<Vec<Timed>>,
) -> Outcome {
    let mut acked = Vec::new();
    let mut track = Track::default();
    tokio::time::sleep_until(start).await;
    let mut record = shared.record.then(|| UserRecord {
        user: index,
        id: identity.user.0,
        connect_ms: start.saturating_duration_since(shared.t0).as_millis() as u64,
        actions: Vec::new(),
    });
    let mut gateway = index % shared.urls.len();
    let Some((mut session, welcome_channels, head)) =
        Box::pin(connect(&shared, index, gateway, &token, None)).await
    else {
        let mut inbox = Inbox::new(0, []);
        inbox.broken_at = Some(0);
        return Outcome { index, inbox, acked, record, track };
    };
    shared.counters.connected.fetch_add(1, Ordering::Relaxed);
    let channels: Vec<ChannelInfo> = welcome_channels;
    let mut inbox = Inbox::new(head, channels.iter().map(|c| c.id));
    let mut script = match recorded {
        Some(actions) => Script::Recorded { t0: shared.t0, actions: actions.into() },
        None => Script::random(&shared.scenario, index, Instant::now()),
    };
    let (mut sent, mut reads) = (0u64, 0u64);
    let settle_end = shared.end + Duration::from_secs(5);
    loop {
        let sending = Instant::now() < shared.end;
        let wake = match script.due() {
            Some(due) if sending => due.min(shared.end),
            _ => settle_end,
        };
        tokio::select! {
            item = session.client.recv(Duration::from_secs(3600)) => {
                match item {
                    Ok(Incoming::Frame(frame)) => on_frame(&shared, identity.user, &mut session, &mut inbox, &mut acked, &mut track, frame),
                    Ok(other) => {
                        let what = match &other {
                            Incoming::Close { code, .. } => format!("close {code}"),
                            _ => "connection failed".to_owned(),
                        };
                        shared.error(what);
                        shared.presence.lock().expect("presence lock").remove(&identity.user);
                        // The chain continues on another gateway, resuming from the cursor.
                        let from = gateway;
                        gateway = (gateway + 1) % shared.urls.len();
                        let lost_us = unix_micros();
                        let result = Box::pin(reconnect(&shared, identity.user, index, &mut gateway, &token, &mut inbox, &mut session, &mut track)).await;
                        if shared.track {
                            let resumed_us = result.is_ok().then(unix_micros);
                            track.reconnects.push(ReconnectRecord { user: identity.user, from_gateway: from, lost_us, resumed_us });
                        }
                        match result {
                            Ok(()) => script.reconnected(),
                            Err(()) => break,
                        }
                    }
                    Err(_) => break,
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if !sending || script.due().is_none_or(|due| due > Instant::now()) {
                    if Instant::now() >= settle_end {
                        break;
                    }
                    continue;
                }
                let Some((at, action)) = script.take(&channels, &inbox) else { continue };
                if let Some(record) = &mut record {
                    record.actions.push((at.saturating_duration_since(shared.t0).as_millis() as u64, action));
                }
                match action {
                    Action::Send { channel, typing } => {
                        // Latency counts from when the message was due, not when it went out.
                        let intended = unix_micros().saturating_sub(Instant::now().saturating_duration_since(at).as_micros() as u64);
                        if typing {
                            shared.typing.lock().expect("typing lock").insert((identity.user, channel), unix_micros());
                            let _ = session.client.send(&ClientFrame::Typing { channel }).await;
                        }
                        let id = format!("lg{index}x{sent}y{:x}{}", shared.scenario.seed, shared.tag);
                        sent += 1;
                        session.pending_sends.insert(id.clone(), (channel, intended));
                        if shared.track {
                            track.pending.insert(id.clone(), track.sends.len());
                            track.sends.push(SendRecord { client_msg_id: id.clone(), user: identity.user, channel, gateway, intended_us: intended, outcome: SendOutcome::Unanswered });
                        }
                        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
                        let frame = ClientFrame::Send { reference: id.clone(), channel, client_msg_id: id, body: format!("lg:{intended}") };
                        let _ = session.client.send(&frame).await;
                    }
                    Action::Read { channel } => {
                        if let Some(seq) = inbox.latest_in(channel) {
                            let reference = format!("rd{index}x{reads}");
                            reads += 1;
                            session.pending_reads.insert(reference.clone(), Instant::now());
                            shared.counters.requests.fetch_add(1, Ordering::Relaxed);
                            let _ = session.client.send(&ClientFrame::Read { reference, channel, seq }).await;
                        }
                    }
                    Action::Presence { idle } => {
                        let (status, seen) = if idle { (ClientStatus::Idle, PresenceStatus::Idle) } else { (ClientStatus::Online, PresenceStatus::Online) };
                        shared.presence.lock().expect("presence lock").insert(identity.user, (seen, unix_micros()));
                        let _ = session.client.send(&ClientFrame::Presence { status }).await;
                    }
                    Action::History { channel } => Box::pin(history_page(&shared, &token, channel)).await,
                    Action::Reconnect => {
                        let _ = session.client.close(close_code::NORMAL).await;
                        // The reconnect supersedes any pending presence change: its flap must not
                        // be taken for that change arriving late.
                        shared.presence.lock().expect("presence lock").remove(&identity.user);
                        gateway = (gateway + 1) % shared.urls.len();
                        if Box::pin(reconnect(&shared, identity.user, index, &mut gateway, &token, &mut inbox, &mut session, &mut track)).await.is_err() {
                            break;
                        }
                        script.reconnected();
                    }
                }
            }
        }
    }
    shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
    if inbox.broken_at.is_none() && Instant::now() < settle_end {
        inbox.broken_at = Some(inbox.cursor());
    }
    let _ = session.client.close(close_code::NORMAL).await;
    Outcome { index, inbox, acked, record, track }
}

fn on_frame(
    shared: &Shared,
    me: UserId,
    session: &mut Session,
    inbox: &mut Inbox,
    acked: &mut Vec<(Seq, ChannelId)>,
    track: &mut Track,
    frame: ServerFrame,
) {
    match frame {
        ServerFrame::Msg(message) => {
            inbox.receive(message.seq, message.channel);
            if let Some(intended) = message.body.strip_prefix("lg:").and_then(|t| t.parse::<u64>().ok()) {
                let took_us = unix_micros().saturating_sub(intended);
                shared.record(Series::SendDeliver, took_us);
                shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
                if shared.track {
                    track.delivered(SlowDelivery {
                        seq: message.seq,
                        channel: message.channel,
                        sender: message.sender,
                        user: me,
                        gateway: session.gateway,
                        intended_us: intended,
                        took_us,
                        replayed: session.replaying,
                    });
                }
            }
        }
        ServerFrame::Ack { client_msg_id, seq, duplicate, .. } => {
            if let Some((channel, intended)) = session.pending_sends.remove(&client_msg_id) {
                shared.record(Series::SendAck, unix_micros().saturating_sub(intended));
                shared.counters.acked.fetch_add(1, Ordering::Relaxed);
                if !duplicate {
                    acked.push((seq, channel));
                }
                track.answered(&client_msg_id, SendOutcome::Acked { seq, at_us: unix_micros() });
            }
        }
        ServerFrame::Presence { users } => {
            let now = unix_micros();
            let pending = shared.presence.lock().expect("presence lock");
            for entry in users {
                if entry.user == me {
                    continue;
                }
                if let Some((status, at)) = pending.get(&entry.user) {
                    if *status == entry.status {
                        shared.record(Series::Presence, now.saturating_sub(*at));
                    }
                }
            }
        }
        ServerFrame::Typing { channel, user, .. } => {
            if let Some(at) = shared.typing.lock().expect("typing lock").get(&(user, channel)) {
                shared.record(Series::Typing, unix_micros().saturating_sub(*at));
            }
        }
        ServerFrame::ReadAck { reference, .. } => {
            if let Some(at) = session.pending_reads.remove(&reference) {
                shared.record(Series::ReadAck, at.elapsed().as_micros() as u64);
            }
        }
        ServerFrame::Error { code, reference, .. } => {
            shared.error(format!("error {}", code.as_str()));
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
            if let Some(reference) = reference {
                let code = code.as_str().to_owned();
                track.answered(&reference, SendOutcome::Refused { code, at_us: unix_micros() });
                session.pending_sends.remove(&reference);
                session.pending_reads.remove(&reference);
            }
        }
        ServerFrame::HistoryRequired { .. } => {
            shared.counters.history_required.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Connects (and resumes from `resume`); the session, the welcome's channels and head.
async fn connect(
    shared: &Shared,
    index: usize,
    gateway: usize,
    token: &str,
    resume: Option<Seq>,
) -> Option<(Session, Vec<ChannelInfo>, Seq)> {
    let mut options = ConnectOptions::new(shared.urls[gateway].clone());
    options.queue = 64;
    options.local_addr = crate::source_addr(index, shared.source_ips);
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let mut client = match Client::connect(&options).await {
        Ok(client) => client,
        Err(error) => {
            shared.error(format!("connect: {}", error_kind(&error.to_string())));
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    shared.record(Series::Connect, started.elapsed().as_micros() as u64);
    let hello_at = Instant::now();
    match client.hello(token, resume.map(|last_seq| Resume { last_seq }), Duration::from_secs(30)).await {
        Ok(welcome) => {
            shared.record(Series::HelloWelcome, hello_at.elapsed().as_micros() as u64);
            let session = Session {
                client,
                gateway,
                replaying: resume.is_some(),
                pending_sends: HashMap::new(),
                pending_reads: HashMap::new(),
            };
            Some((session, welcome.channels, welcome.head_seq))
        }
        Err(error) => {
            shared.error(format!("hello: {}", error_kind(&error.to_string())));
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The first words of an error, as a bounded label.
fn error_kind(text: &str) -> String {
    text.split(':').next().unwrap_or(text).chars().take(60).collect()
}

/// How long a user keeps trying to reconnect before its chain counts as broken: longer than
/// any fault a drill injects (docs/drills.md), as a real client keeps trying.
const RECONNECT_FOR: Duration = Duration::from_secs(45);

/// Reconnects with the inbox's cursor and waits for `resumed` (replayed messages are checked
/// like live ones), trying each gateway in turn from `*gateway` (left at the one that took it),
/// backing off from 100 ms to 2 s. Err if it cannot within [`RECONNECT_FOR`]: the chain is broken.
#[allow(clippy::too_many_arguments)]
async fn reconnect(
    shared: &Shared,
    me: UserId,
    index: usize,
    gateway: &mut usize,
    token: &str,
    inbox: &mut Inbox,
    session: &mut Session,
    track: &mut Track,
) -> Result<(), ()> {
    shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0;
    while attempt < 3 || started.elapsed() < RECONNECT_FOR {
        if attempt > 0 {
            *gateway = (*gateway + 1) % shared.urls.len();
        }
        attempt += 1;
        let cursor = inbox.cursor();
        inbox.connection += 1;
        let Some((mut next, _, _)) = connect(shared, index, *gateway, token, Some(cursor)).await else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        // Sends still waiting for an ack are abandoned with the old connection (a real client
        // would retry them with the same id; the checker only counts acked messages).
        let mut unused = Vec::new();
        loop {
            match next.client.recv(Duration::from_secs(30)).await {
                Ok(Incoming::Frame(ServerFrame::Resumed { .. })) => {
                    shared.record(Series::ReconnectResumed, started.elapsed().as_micros() as u64);
                    next.replaying = false;
                    *session = next;
                    return Ok(());
                }
                Ok(Incoming::Frame(ServerFrame::HistoryRequired { .. })) => {
                    shared.counters.history_required.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Incoming::Frame(frame)) => {
                    on_frame(shared, me, &mut next, inbox, &mut unused, track, frame)
                }
                _ => break,
            }
        }
    }
    inbox.broken_at = Some(inbox.cursor());
    shared.error("reconnect failed".into());
    Err(())
}

/// Loads the newest page of a channel over REST.
async fn history_page(shared: &Shared, token: &str, channel: ChannelId) {
    let port = shared.api_port;
    let path = format!("/v1/channels/{channel}/messages?limit=50");
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    match http_request(port, "GET", &path, Some(token)).await {
        Some((200, _)) => shared.record(Series::HistoryPage, started.elapsed().as_micros() as u64),
        Some((status, _)) => {
            shared.error(format!("history http {status}"));
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        None => {
            shared.error("history unreachable".into());
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_track_keeps_the_slowest_live_and_the_slowest_replayed_deliveries() {
        let mut track = Track::default();
        let delivery = |seq: Seq, took_us: u64, replayed: bool| SlowDelivery {
            seq,
            channel: ChannelId(1),
            sender: UserId(2),
            user: UserId(1),
            gateway: 0,
            intended_us: 0,
            took_us,
            replayed,
        };
        for (seq, took_us) in [(1, 50), (2, 10), (3, 70), (4, 20), (5, 60), (6, 5)] {
            track.delivered(delivery(seq, took_us, false));
        }
        track.delivered(delivery(7, 1, true));
        track.delivered(delivery(8, 900, true));
        let mut live: Vec<Seq> = track.slowest.iter().filter(|d| !d.replayed).map(|d| d.seq).collect();
        live.sort_unstable();
        assert_eq!(live, [1, 3, 5], "the three slowest live deliveries");
        let mut replayed: Vec<Seq> = track.slowest.iter().filter(|d| d.replayed).map(|d| d.seq).collect();
        replayed.sort_unstable();
        assert_eq!(replayed, [7, 8], "replayed ones are kept apart, not displaced by live ones");
    }
}
