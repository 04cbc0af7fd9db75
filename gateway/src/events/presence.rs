//! Presence: who of an org is online, idle or offline, converging within seconds on every
//! gateway — also when a gateway dies without a word.
//!
//! - **Local state.** A user is `online` on this gateway while one of their connections is
//!   active, `idle` while all of them are idle (the client said `presence idle`, or nothing but
//!   pings came for `--idle-after`), and absent once the last one closed.
//! - **Heartbeats.** When a local user changes (at most once per [`TICK`]) the gateway
//!   compares its users' local state with what it last told the others and publishes the
//!   differences on `gw.heartbeat.<gateway>` (core
//!   NATS); with no change it still beats every `--presence-interval`, and every
//!   [`FULL_EVERY`] intervals it sends its complete table (in parts of [`FULL_PART`] users),
//!   which repairs anything a lost delta left wrong. It also sends it at once when it hears a
//!   gateway new to its table, which otherwise would not know this gateway's users until then.
//! - **The table.** Every gateway (itself included) keeps each gateway's users from those
//!   beats and merges them per user: online if any gateway says online, idle if all say idle.
//!   A gateway silent for [`HEARTBEAT_MISSES`] of its intervals is expired: its users count as
//!   gone. A restarted gateway (new `instance`) replaces its old table; a stopping one says
//!   `bye`.
//! - **To clients.** Merged changes are sent at once if the last flush is a [`TICK`] old, else
//!   when it is: changes in between are coalesced (a user who flapped and came back is not
//!   announced at all), one `presence` frame per org to that org's local connections — at most
//!   one frame per connection per tick however many users reconnect.
//!   `welcome` carries the org's snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use threadspace_protocol::frames::{PresenceEntry, PresenceStatus, ServerFrame};
use threadspace_protocol::stored::{BeatKind, PresenceBeat, HEARTBEAT_MISSES};
use threadspace_protocol::subjects::{all_heartbeats, heartbeat_subject};
use threadspace_protocol::{OrgId, UserId};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::delivery::hub::Hub;
use crate::metrics as m;

/// Local changes are published, and merged changes sent to clients, at most this often.
pub(crate) const TICK: Duration = Duration::from_millis(200);
/// A full snapshot every this many heartbeat intervals.
pub(crate) const FULL_EVERY: u32 = 5;
/// Users per part of a full snapshot (keeps each beat far below the NATS payload limit).
pub(crate) const FULL_PART: usize = 2_000;
/// Beyond --reconnect-spread, how long a draining gateway keeps its departed users present:
/// time for the last reconnect to reach another gateway and its beat to reach everyone.
pub(crate) const DRAIN_MARGIN: Duration = Duration::from_secs(1);
/// How often every local user is re-examined for inactivity (changes are found at once).
const SCAN_EVERY: Duration = Duration::from_secs(1);

type Entry = (OrgId, UserId, PresenceStatus);

/// Both halves of presence on one gateway.
#[derive(Debug)]
pub(crate) struct Presence {
    pub instance: u64,
    local: Mutex<Local>,
    table: Mutex<Table>,
    /// A local user was touched: publish soon.
    local_changed: Notify,
    /// A beat changed the table: flush to clients soon.
    table_changed: Notify,
    /// A gateway joined: send it this gateway's full table now rather than at the next
    /// scheduled snapshot (up to [`FULL_EVERY`] intervals away).
    full_wanted: AtomicBool,
}

impl Presence {
    pub(crate) fn new(instance: u64) -> Self {
        Self {
            instance,
            local: Mutex::default(),
            table: Mutex::default(),
            local_changed: Notify::new(),
            table_changed: Notify::new(),
            full_wanted: AtomicBool::new(false),
        }
    }

    /// A local connection of `user` opened, closed or changed its activity: look again.
    pub(crate) fn touched(&self, user: UserId) {
        self.local.lock().expect("presence lock is never poisoned").dirty.insert(user);
        self.local_changed.notify_one();
    }

    /// The org's users who are online or idle, by user id.
    pub(crate) fn snapshot(&self, org: OrgId) -> Vec<PresenceEntry> {
        self.table.lock().expect("presence lock is never poisoned").snapshot(org)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("presence lock is never poisoned")
    }
}

/// What this gateway told the others about its own users.
#[derive(Debug, Default)]
struct Local {
    published: HashMap<UserId, (OrgId, PresenceStatus)>,
    dirty: HashSet<UserId>,
    /// Users whose last connection closed, with the time (ms) their `offline` is due. Until
    /// then they stay published as they were, so a quick reconnect is no change at all.
    leaving: HashMap<UserId, u64>,
}

impl Local {
    /// Differences between the hub and what was published (and records them as published).
    /// Looks at the touched users and those whose offline grace ran out, or at everyone when
    /// `full_scan`. A user left without connections is announced offline only once
    /// `offline_grace_ms` passed without a new one.
    fn changes(
        &mut self,
        hub: &Hub,
        now_ms: u64,
        idle_after_ms: u64,
        offline_grace_ms: u64,
        full_scan: bool,
    ) -> Vec<Entry> {
        let mut candidates: Vec<UserId> = self.dirty.drain().collect();
        candidates.extend(self.leaving.iter().filter(|(_, due)| **due <= now_ms).map(|(user, _)| *user));
        if full_scan {
            candidates.extend(hub.local_users());
            candidates.extend(self.published.keys().copied());
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut changes = Vec::new();
        for user in candidates {
            let now = hub.local_status(user, now_ms, idle_after_ms);
            let before = self.published.get(&user).copied();
            if now.is_some() {
                self.leaving.remove(&user);
            }
            match (before, now) {
                (Some(before), Some(now)) if before == now => {}
                (None, None) => {}
                (_, Some((org, status))) => {
                    self.published.insert(user, (org, status));
                    changes.push((org, user, status));
                }
                (Some((org, _)), None) => {
                    let due = *self.leaving.entry(user).or_insert(now_ms + offline_grace_ms);
                    if due <= now_ms {
                        self.leaving.remove(&user);
                        self.published.remove(&user);
                        changes.push((org, user, PresenceStatus::Offline));
                    }
                }
            }
        }
        changes
    }

    /// When the next offline grace runs out (ms), if anyone is leaving.
    fn next_due(&self) -> Option<u64> {
        self.leaving.values().copied().min()
    }

    /// The complete table in parts.
    fn full(&self) -> Vec<Vec<Entry>> {
        let all: Vec<Entry> =
            self.published.iter().map(|(user, (org, status))| (*org, *user, *status)).collect();
        if all.is_empty() {
            return vec![Vec::new()];
        }
        all.chunks(FULL_PART).map(<[Entry]>::to_vec).collect()
    }
}

/// How many gateways report a user online or idle.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    online: u32,
    idle: u32,
}

impl Counts {
    fn status(self) -> PresenceStatus {
        if self.online > 0 {
            PresenceStatus::Online
        } else if self.idle > 0 {
            PresenceStatus::Idle
        } else {
            PresenceStatus::Offline
        }
    }

    fn count(&mut self, status: PresenceStatus) -> &mut u32 {
        match status {
            PresenceStatus::Online => &mut self.online,
            _ => &mut self.idle,
        }
    }
}

/// One gateway as seen through its beats.
#[derive(Debug)]
struct Peer {
    instance: u64,
    last_seen: Instant,
    interval: Duration,
    next_seq: u64,
    users: HashMap<UserId, (OrgId, PresenceStatus)>,
    /// A full snapshot whose parts are arriving.
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    next_part: u32,
    users: HashMap<UserId, (OrgId, PresenceStatus)>,
}

/// What applying a beat found out.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// A beat (or a snapshot part) was missing before this one.
    pub gap: bool,
    /// The gateway came back as a new instance: its old table was dropped.
    pub restarted: bool,
    /// The gateway said goodbye.
    pub left: bool,
    /// The gateway is new to this table (first heard, restarted, or back after expiry).
    pub joined: bool,
}

/// Every gateway's users, merged per user.
#[derive(Debug, Default)]
pub(crate) struct Table {
    peers: HashMap<String, Peer>,
    merged: HashMap<OrgId, HashMap<UserId, Counts>>,
    /// Users whose merged status may have changed since the last flush, with the status
    /// clients were last told.
    changed: HashMap<UserId, (OrgId, PresenceStatus)>,
}

/// Moves one gateway's report of `user` from `old` to `new` in the merged counts.
fn adjust(
    merged: &mut HashMap<OrgId, HashMap<UserId, Counts>>,
    changed: &mut HashMap<UserId, (OrgId, PresenceStatus)>,
    (org, user): (OrgId, UserId),
    old: PresenceStatus,
    new: PresenceStatus,
) {
    if old == new {
        return;
    }
    let users = merged.entry(org).or_default();
    let counts = users.entry(user).or_default();
    changed.entry(user).or_insert((org, counts.status()));
    if old != PresenceStatus::Offline {
        let n = counts.count(old);
        *n = n.saturating_sub(1);
    }
    if new != PresenceStatus::Offline {
        *counts.count(new) += 1;
    }
    if counts.status() == PresenceStatus::Offline {
        users.remove(&user);
        if users.is_empty() {
            merged.remove(&org);
        }
    }
}

/// Replaces a gateway's users with `new`, adjusting the merged counts.
fn replace(
    merged: &mut HashMap<OrgId, HashMap<UserId, Counts>>,
    changed: &mut HashMap<UserId, (OrgId, PresenceStatus)>,
    users: &mut HashMap<UserId, (OrgId, PresenceStatus)>,
    new: HashMap<UserId, (OrgId, PresenceStatus)>,
) {
    for (user, (org, old)) in users.iter() {
        if !new.contains_key(user) {
            adjust(merged, changed, (*org, *user), *old, PresenceStatus::Offline);
        }
    }
    for (user, (org, status)) in &new {
        let old = users.get(user).map_or(PresenceStatus::Offline, |(_, s)| *s);
        adjust(merged, changed, (*org, *user), old, *status);
    }
    *users = new;
}

impl Table {
    /// Applies one gateway's beat received at `now`.
    pub(crate) fn apply(&mut self, beat: PresenceBeat, now: Instant) -> Applied {
        let mut applied = Applied::default();
        let Self { peers, merged, changed } = self;
        if let Some(peer) = peers.get_mut(&beat.gateway) {
            if peer.instance != beat.instance {
                replace(merged, changed, &mut peer.users, HashMap::new());
                peers.remove(&beat.gateway);
                applied.restarted = true;
            }
        }
        if beat.kind == BeatKind::Bye {
            if let Some(mut peer) = peers.remove(&beat.gateway) {
                replace(merged, changed, &mut peer.users, HashMap::new());
            }
            applied.left = true;
            return applied;
        }
        let peer = peers.entry(beat.gateway).or_insert_with(|| {
            applied.joined = true;
            Peer {
                instance: beat.instance,
                last_seen: now,
                interval: Duration::ZERO,
                next_seq: beat.seq,
                users: HashMap::new(),
                pending: None,
            }
        });
        peer.last_seen = now;
        peer.interval = Duration::from_millis(beat.interval_ms);
        match beat.kind {
            BeatKind::Delta => {
                applied.gap = beat.seq != peer.next_seq || peer.pending.take().is_some();
                peer.next_seq = beat.seq + 1;
                for (org, user, status) in beat.users {
                    let old = peer.users.get(&user).map_or(PresenceStatus::Offline, |(_, s)| *s);
                    if status == PresenceStatus::Offline {
                        peer.users.remove(&user);
                    } else {
                        peer.users.insert(user, (org, status));
                    }
                    adjust(merged, changed, (org, user), old, status);
                }
            }
            BeatKind::Full { part, parts } => {
                if part == 0 {
                    applied.gap = beat.seq != peer.next_seq || peer.pending.is_some();
                    peer.pending = Some(Pending { seq: beat.seq, next_part: 0, users: HashMap::new() });
                }
                match peer.pending.as_mut() {
                    Some(pending) if pending.seq == beat.seq && pending.next_part == part => {
                        pending.users.extend(
                            beat.users
                                .into_iter()
                                .filter(|(_, _, s)| *s != PresenceStatus::Offline)
                                .map(|(org, user, status)| (user, (org, status))),
                        );
                        pending.next_part += 1;
                        if pending.next_part >= parts {
                            let complete = std::mem::take(&mut pending.users);
                            peer.pending = None;
                            replace(merged, changed, &mut peer.users, complete);
                        }
                    }
                    _ => {
                        // A part of a snapshot whose start was lost: wait for the next one.
                        applied.gap = true;
                        peer.pending = None;
                    }
                }
                peer.next_seq = beat.seq + 1;
            }
            BeatKind::Bye => unreachable!("handled above"),
        }
        applied
    }

    /// Forgets gateways silent for [`HEARTBEAT_MISSES`] of their intervals; returns each one's
    /// id and how many users it took offline (or idle, where another gateway still has them).
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(String, usize)> {
        let misses = HEARTBEAT_MISSES as u32;
        let dead: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, peer)| now.saturating_duration_since(peer.last_seen) > peer.interval * misses)
            .map(|(id, _)| id.clone())
            .collect();
        let Self { peers, merged, changed } = self;
        dead.into_iter()
            .filter_map(|id| {
                let mut peer = peers.remove(&id)?;
                let users = peer.users.len();
                replace(merged, changed, &mut peer.users, HashMap::new());
                Some((id, users))
            })
            .collect()
    }

    /// The merged changes since the last call, per org (users sorted), and how many changes
    /// cancelled out within the window.
    pub(crate) fn take_changes(&mut self) -> (Vec<(OrgId, Vec<PresenceEntry>)>, usize) {
        let mut by_org: HashMap<OrgId, Vec<PresenceEntry>> = HashMap::new();
        let mut coalesced = 0;
        for (user, (org, before)) in self.changed.drain() {
            let status = self
                .merged
                .get(&org)
                .and_then(|users| users.get(&user))
                .map_or(PresenceStatus::Offline, |c| c.status());
            if status == before {
                coalesced += 1;
            } else {
                by_org.entry(org).or_default().push(PresenceEntry { user, status });
            }
        }
        let mut out: Vec<_> = by_org.into_iter().collect();
        for (_, users) in &mut out {
            users.sort_unstable_by_key(|e| e.user);
        }
        (out, coalesced)
    }

    /// The org's online and idle users, by user id.
    pub(crate) fn snapshot(&self, org: OrgId) -> Vec<PresenceEntry> {
        let mut users: Vec<PresenceEntry> = self
            .merged
            .get(&org)
            .into_iter()
            .flatten()
            .map(|(user, counts)| PresenceEntry { user: *user, status: counts.status() })
            .collect();
        users.sort_unstable_by_key(|e| e.user);
        users
    }

    /// Known users by merged status (online, idle) and known gateways.
    fn sizes(&self) -> (usize, usize, usize) {
        let (mut online, mut idle) = (0, 0);
        for counts in self.merged.values().flat_map(HashMap::values) {
            match counts.status() {
                PresenceStatus::Online => online += 1,
                _ => idle += 1,
            }
        }
        (online, idle, self.peers.len())
    }
}

/// What the presence loops need.
pub(crate) struct PresenceTask {
    pub presence: Arc<Presence>,
    pub hub: Arc<Hub>,
    pub nats: async_nats::Client,
    pub gateway_id: String,
    /// `--presence-interval`: the heartbeat period.
    pub interval: Duration,
    /// `--idle-after`: inactivity after which a connection counts as idle.
    pub idle_after: Duration,
    /// `--offline-grace`: how long a departure is held in case the user reconnects.
    pub offline_grace: Duration,
    /// `--reconnect-spread`: while draining, departures are held this long (plus a margin).
    pub reconnect_spread: Duration,
}

/// Publishes this gateway's beats, applies everyone's, expires silent gateways and sends the
/// coalesced changes to local clients, until `shutdown`; then says `bye`.
pub(crate) async fn run(task: PresenceTask, shutdown: CancellationToken) {
    let task = Arc::new(task);
    let receiver = tokio::spawn(receive(task.clone(), shutdown.clone()));
    let flusher = tokio::spawn(flush_loop(task.clone(), shutdown.clone()));
    publish_loop(&task, &shutdown).await;
    let _ = flusher.await;
    receiver.abort();
}

/// Publishes local changes (at most once per [`TICK`], so a burst goes out as one beat), a
/// liveness beat every interval and a full snapshot every [`FULL_EVERY`] intervals.
async fn publish_loop(task: &PresenceTask, shutdown: &CancellationToken) {
    let interval = task.interval;
    let idle_after_ms = task.idle_after.as_millis() as u64;
    let subject = heartbeat_subject(&task.gateway_id);
    let mut seq = 0u64;
    let mut beats_since_full = FULL_EVERY; // the first beat is a full snapshot
    let mut last_beat: Option<Instant> = None;
    let mut last_publish: Option<Instant> = None;
    let mut last_scan = Instant::now();
    let offline_grace_ms = task.offline_grace.as_millis() as u64;
    // While draining, clients were told to reconnect elsewhere within --reconnect-spread: their
    // departure from here is held that long (and `bye` waits for it, lib.rs), so a rolling
    // restart does not show them offline and back.
    let drain_grace_ms = offline_grace_ms.max((task.reconnect_spread + DRAIN_MARGIN).as_millis() as u64);
    loop {
        let beat_at = last_beat.map_or_else(Instant::now, |at| at + interval);
        let mut wake = beat_at.min(last_scan + SCAN_EVERY);
        let next_due = task.presence.local.lock().expect("presence lock is never poisoned").next_due();
        if let Some(due_ms) = next_due {
            let in_ms = due_ms.saturating_sub(task.hub.now_ms());
            wake = wake.min(Instant::now() + Duration::from_millis(in_ms));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = task.presence.local_changed.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
        if let Some(at) = last_publish {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(at + TICK) => {}
            }
        }
        let now = Instant::now();
        let full_scan = now.duration_since(last_scan) >= SCAN_EVERY;
        if full_scan {
            last_scan = now;
        }
        let beat_due = last_beat.is_none_or(|at| now.duration_since(at) >= interval);
        let (changes, full) = {
            let mut local = task.presence.local.lock().expect("presence lock is never poisoned");
            let grace_ms = if task.hub.is_draining() { drain_grace_ms } else { offline_grace_ms };
            let changes = local.changes(&task.hub, task.hub.now_ms(), idle_after_ms, grace_ms, full_scan);
            let wanted = task.presence.full_wanted.swap(false, Ordering::AcqRel);
            let full = ((beat_due && beats_since_full >= FULL_EVERY) || wanted).then(|| local.full());
            (changes, full)
        };
        metrics::counter!(m::PRESENCE_LOCAL_CHANGES).increment(changes.len() as u64);
        if let Some(parts) = full {
            // The snapshot already includes this round's changes.
            let count = parts.len() as u32;
            for (part, users) in parts.into_iter().enumerate() {
                publish(task, &subject, seq, BeatKind::Full { part: part as u32, parts: count }, users).await;
            }
            beats_since_full = 1;
        } else if beat_due || !changes.is_empty() {
            publish(task, &subject, seq, BeatKind::Delta, changes).await;
            if beat_due {
                beats_since_full += 1;
            }
        } else {
            continue;
        }
        seq += 1;
        last_publish = Some(now);
        if beat_due {
            last_beat = Some(now);
        }
    }
    publish(task, &subject, seq, BeatKind::Bye, Vec::new()).await;
    let _ = task.nats.flush().await;
}

/// Sends merged changes to local clients at most once per [`TICK`] (changes in between are
/// coalesced), and expires silent gateways.
async fn flush_loop(task: Arc<PresenceTask>, shutdown: CancellationToken) {
    let mut last_flush = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = task.presence.table_changed.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(last_flush + TICK) => {}
        }
        last_flush = Instant::now();
        flush_to_clients(&task, last_flush);
    }
}

async fn publish(task: &PresenceTask, subject: &str, seq: u64, kind: BeatKind, users: Vec<Entry>) {
    let beat = PresenceBeat {
        gateway: task.gateway_id.clone(),
        instance: task.presence.instance,
        seq,
        interval_ms: task.interval.as_millis() as u64,
        kind,
        users,
    };
    let payload = serde_json::to_vec(&beat).expect("beats serialize");
    metrics::counter!(m::PRESENCE_BEATS_SENT, "kind" => kind_label(kind)).increment(1);
    metrics::counter!(m::PRESENCE_BEAT_BYTES_SENT).increment(payload.len() as u64);
    if let Err(error) = task.nats.publish(subject.to_owned(), payload.into()).await {
        // The next full snapshot repairs whatever this beat would have said.
        warn!(%error, "presence heartbeat not published");
    }
}

fn kind_label(kind: BeatKind) -> &'static str {
    match kind {
        BeatKind::Delta => "delta",
        BeatKind::Full { .. } => "full",
        BeatKind::Bye => "bye",
    }
}

/// Applies every gateway's beats to the table.
async fn receive(task: Arc<PresenceTask>, shutdown: CancellationToken) {
    super::on_each(&task.nats, all_heartbeats(), "presence heartbeats", shutdown, |message| {
        metrics::counter!(m::PRESENCE_BEAT_BYTES_RECEIVED).increment(message.payload.len() as u64);
        let beat = match serde_json::from_slice::<PresenceBeat>(&message.payload) {
            Ok(beat) => beat,
            Err(error) => {
                warn!(subject = %message.subject, %error, "undecodable presence heartbeat");
                return;
            }
        };
        metrics::counter!(m::PRESENCE_BEATS_RECEIVED, "kind" => kind_label(beat.kind)).increment(1);
        let gateway = beat.gateway.clone();
        let applied = {
            let mut table = task.presence.table();
            let applied = table.apply(beat, Instant::now());
            if !table.changed.is_empty() {
                task.presence.table_changed.notify_one();
            }
            applied
        };
        if applied.gap {
            metrics::counter!(m::PRESENCE_BEAT_GAPS).increment(1);
        }
        if applied.restarted {
            info!(%gateway, "gateway restarted: its old presence table was dropped");
        }
        if applied.joined && gateway != task.gateway_id {
            // A new gateway knows nobody else's users until their next full snapshots: a
            // rolling restart showed its clients a wrong presence for up to 8.7 s
            // (docs/drills.md). Every gateway answers a newcomer with its table at once.
            task.presence.full_wanted.store(true, Ordering::Release);
            task.presence.local_changed.notify_one();
        }
        if applied.left {
            info!(%gateway, "gateway stopped: its users' presence was dropped");
        }
    })
    .await;
}

/// Expires silent gateways and sends the merged changes to local connections.
fn flush_to_clients(task: &PresenceTask, now: Instant) {
    let (expired, (changes, coalesced), (online, idle, peers)) = {
        let mut table = task.presence.table();
        let expired = table.expire(now);
        (expired, table.take_changes(), table.sizes())
    };
    for (gateway, users) in &expired {
        warn!(%gateway, users, "gateway silent for {HEARTBEAT_MISSES} heartbeat intervals: its users are offline");
        metrics::counter!(m::PRESENCE_EXPIRIES).increment(1);
        metrics::counter!(m::PRESENCE_EXPIRED_USERS).increment(*users as u64);
    }
    metrics::counter!(m::PRESENCE_COALESCED).increment(coalesced as u64);
    metrics::gauge!(m::PRESENCE_USERS, "status" => "online").set(online as f64);
    metrics::gauge!(m::PRESENCE_USERS, "status" => "idle").set(idle as f64);
    metrics::gauge!(m::PRESENCE_GATEWAYS).set(peers as f64);
    for (org, users) in changes {
        for entry in &users {
            metrics::counter!(m::PRESENCE_CHANGES, "status" => entry.status.as_str()).increment(1);
        }
        let frame = Bytes::from(ServerFrame::Presence { users }.encode());
        let queued = task.hub.deliver_org(org, &frame);
        metrics::counter!(m::PRESENCE_FRAMES).increment(queued as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PresenceStatus::{Idle, Offline, Online};

    const ORG: OrgId = OrgId(1);
    const OTHER: OrgId = OrgId(2);

    fn beat(gateway: &str, seq: u64, kind: BeatKind, users: &[(OrgId, i64, PresenceStatus)]) -> PresenceBeat {
        PresenceBeat {
            gateway: gateway.into(),
            instance: 7,
            seq,
            interval_ms: 1_000,
            kind,
            users: users.iter().map(|(o, u, s)| (*o, UserId(*u), *s)).collect(),
        }
    }

    fn entries(users: &[(i64, PresenceStatus)]) -> Vec<PresenceEntry> {
        users.iter().map(|(u, s)| PresenceEntry { user: UserId(*u), status: *s }).collect()
    }

    fn changes(table: &mut Table) -> Vec<(OrgId, Vec<PresenceEntry>)> {
        let mut out = table.take_changes().0;
        out.sort_unstable_by_key(|(org, _)| *org);
        out
    }

    #[test]
    fn merges_users_across_gateways() {
        let mut table = Table::default();
        let t0 = Instant::now();
        table.apply(
            beat("a", 0, BeatKind::Delta, &[(ORG, 1, Online), (ORG, 2, Idle), (OTHER, 9, Online)]),
            t0,
        );
        table.apply(beat("b", 0, BeatKind::Delta, &[(ORG, 2, Online)]), t0);
        assert_eq!(
            changes(&mut table),
            vec![(ORG, entries(&[(1, Online), (2, Online)])), (OTHER, entries(&[(9, Online)]))]
        );
        assert_eq!(table.snapshot(ORG), entries(&[(1, Online), (2, Online)]));
        // User 2 leaves gateway b: still idle on a.
        table.apply(beat("b", 1, BeatKind::Delta, &[(ORG, 2, Offline)]), t0);
        assert_eq!(changes(&mut table), vec![(ORG, entries(&[(2, Idle)]))]);
        table.apply(beat("a", 1, BeatKind::Delta, &[(ORG, 2, Offline)]), t0);
        assert_eq!(changes(&mut table), vec![(ORG, entries(&[(2, Offline)]))]);
        assert_eq!(table.snapshot(ORG), entries(&[(1, Online)]));
        assert_eq!(table.snapshot(OTHER), entries(&[(9, Online)]));
    }

    #[test]
    fn a_flap_within_one_window_is_not_announced() {
        let mut table = Table::default();
        let t0 = Instant::now();
        table.apply(beat("a", 0, BeatKind::Delta, &[(ORG, 1, Online)]), t0);
        changes(&mut table);
        table.apply(beat("a", 1, BeatKind::Delta, &[(ORG, 1, Offline)]), t0);
        table.apply(beat("b", 0, BeatKind::Delta, &[(ORG, 1, Online)]), t0);
        let (out, coalesced) = table.take_changes();
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(coalesced, 1);
    }

    #[test]
    fn a_silent_gateway_expires_after_three_intervals() {
        let mut table = Table::default();
        let t0 = Instant::now();
        table.apply(beat("a", 0, BeatKind::Delta, &[(ORG, 1, Online), (ORG, 2, Online)]), t0);
        table.apply(beat("b", 0, BeatKind::Delta, &[(ORG, 2, Idle)]), t0);
        changes(&mut table);
        assert!(table.expire(t0 + Duration::from_millis(3_000)).is_empty(), "not yet: exactly 3 intervals");
        table.apply(beat("b", 1, BeatKind::Delta, &[]), t0 + Duration::from_millis(2_500));
        assert_eq!(table.expire(t0 + Duration::from_millis(3_001)), vec![("a".to_owned(), 2)]);
        assert_eq!(changes(&mut table), vec![(ORG, entries(&[(1, Offline), (2, Idle)]))]);
        assert_eq!(table.snapshot(ORG), entries(&[(2, Idle)]));
    }

    #[test]
    fn a_full_snapshot_in_parts_replaces_the_gateways_table() {
        let mut table = Table::default();
        let t0 = Instant::now();
        table.apply(beat("a", 0, BeatKind::Delta, &[(ORG, 1, Online), (ORG, 2, Online)]), t0);
        changes(&mut table);
        // A lost delta said 2 went offline; then the snapshot arrives in two parts.
        let first = table.apply(beat("a", 2, BeatKind::Full { part: 0, parts: 2 }, &[(ORG, 1, Idle)]), t0);
        assert!(first.gap, "seq 1 was missed");
        assert!(changes(&mut table).is_empty(), "nothing applies before the last part");
        table.apply(beat("a", 2, BeatKind::Full { part: 1, parts: 2 }, &[(ORG, 3, Online)]), t0);
        assert_eq!(changes(&mut table), vec![(ORG, entries(&[(1, Idle), (2, Offline), (3, Online)]))]);
        let next = table.apply(beat("a", 3, BeatKind::Delta, &[]), t0);
        assert!(!next.gap);
        // A part without its start is ignored.
        let orphan = table.apply(beat("a", 5, BeatKind::Full { part: 1, parts: 2 }, &[(ORG, 9, Online)]), t0);
        assert!(orphan.gap);
        assert!(changes(&mut table).is_empty());
    }

    #[test]
    fn a_restarted_or_departing_gateway_drops_its_old_users() {
        let mut table = Table::default();
        let t0 = Instant::now();
        assert!(table.apply(beat("a", 0, BeatKind::Delta, &[(ORG, 1, Online), (ORG, 2, Online)]), t0).joined);
        assert!(!table.apply(beat("a", 1, BeatKind::Delta, &[]), t0).joined, "only the first beat joins");
        changes(&mut table);
        let mut restarted = beat("a", 0, BeatKind::Full { part: 0, parts: 1 }, &[(ORG, 2, Online)]);
        restarted.instance = 8;
        let applied = table.apply(restarted, t0);
        assert!(applied.restarted && applied.joined, "a restart is a join: {applied:?}");
        assert_eq!(changes(&mut table), vec![(ORG, entries(&[(1, Offline)]))]);
        let mut bye = beat("a", 1, BeatKind::Bye, &[]);
        bye.instance = 8;
        assert!(table.apply(bye, t0).left);
        assert_eq!(changes(&mut table), vec![(ORG, entries(&[(2, Offline)]))]);
        assert!(
            table.expire(t0 + Duration::from_secs(60)).is_empty(),
            "a departed gateway is not expired again"
        );
        let mut back = beat("a", 0, BeatKind::Delta, &[]);
        back.instance = 9;
        assert!(table.apply(back, t0).joined, "a gateway heard again after its bye joins");
    }

    /// A hub, the token its connections hang off, and one public channel to register them in.
    fn hub_with_one_channel() -> (Hub, CancellationToken, [threadspace_protocol::frames::ChannelInfo; 1]) {
        use threadspace_protocol::frames::{ChannelInfo, ChannelKind};
        let hub = Hub::new(
            0,
            crate::delivery::hub::HubLimits { outbound_queue: 8, sends_per_second: 1, send_burst: 1 },
        );
        let channel = ChannelInfo {
            id: threadspace_protocol::ChannelId(1),
            kind: ChannelKind::Public,
            name: None,
            last_read: 0,
        };
        (hub, CancellationToken::new(), [channel])
    }

    #[test]
    fn local_changes_follow_connections_and_activity() {
        let (hub, root, channels) = hub_with_one_channel();
        let mut local = Local::default();
        let a1 = hub.register(UserId(1), ORG, &channels, &root, 0).handle;
        let a2 = hub.register(UserId(1), ORG, &channels, &root, 0).handle;
        local.dirty.insert(UserId(1));
        assert_eq!(local.changes(&hub, 10, 1_000, 0, false), vec![(ORG, UserId(1), Online)]);
        assert!(local.changes(&hub, 20, 1_000, 0, true).is_empty(), "nothing changed");
        assert!(a1.mark_idle());
        local.dirty.insert(UserId(1));
        assert!(local.changes(&hub, 30, 1_000, 0, false).is_empty(), "the other connection is active");
        // Inactivity makes the second connection idle; only a scan notices.
        assert!(local.changes(&hub, 1_500, 1_000, 0, false).is_empty());
        assert_eq!(local.changes(&hub, 1_500, 1_000, 0, true), vec![(ORG, UserId(1), Idle)]);
        assert!(a2.mark_active(1_600, 1_000), "was idle by inactivity");
        local.dirty.insert(UserId(1));
        assert_eq!(local.changes(&hub, 1_600, 1_000, 0, false), vec![(ORG, UserId(1), Online)]);
        hub.deregister(&a1);
        hub.deregister(&a2);
        local.dirty.insert(UserId(1));
        assert_eq!(local.changes(&hub, 1_700, 1_000, 0, false), vec![(ORG, UserId(1), Offline)]);
        assert_eq!(local.full(), vec![Vec::<Entry>::new()], "an empty snapshot is one empty part");
    }

    #[test]
    fn a_reconnect_within_the_offline_grace_is_no_change_and_a_departure_waits_for_it() {
        let (hub, root, channels) = hub_with_one_channel();
        let mut local = Local::default();
        let first = hub.register(UserId(1), ORG, &channels, &root, 0).handle;
        local.dirty.insert(UserId(1));
        assert_eq!(local.changes(&hub, 10, 60_000, 2_000, false), vec![(ORG, UserId(1), Online)]);
        // Drop and come back 3 ms later: nothing to tell anyone.
        hub.deregister(&first);
        local.dirty.insert(UserId(1));
        assert!(local.changes(&hub, 100, 60_000, 2_000, false).is_empty(), "offline is held");
        assert_eq!(local.next_due(), Some(2_100));
        assert_eq!(local.full(), vec![vec![(ORG, UserId(1), Online)]], "still published while held");
        let again = hub.register(UserId(1), ORG, &channels, &root, 103).handle;
        local.dirty.insert(UserId(1));
        assert!(local.changes(&hub, 103, 60_000, 2_000, false).is_empty(), "a reconnect is no change");
        assert_eq!(local.next_due(), None, "the reconnect cancelled the pending offline");
        assert!(local.changes(&hub, 5_000, 60_000, 2_000, false).is_empty());
        // A real departure: offline once the grace ran out, found without any new touch.
        hub.deregister(&again);
        local.dirty.insert(UserId(1));
        assert!(local.changes(&hub, 6_000, 60_000, 2_000, false).is_empty());
        assert!(local.changes(&hub, 7_999, 60_000, 2_000, false).is_empty(), "not before the grace ran out");
        assert_eq!(local.changes(&hub, 8_000, 60_000, 2_000, false), vec![(ORG, UserId(1), Offline)]);
        assert_eq!(local.next_due(), None);
    }
}
