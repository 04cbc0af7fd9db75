//! The hub: which local connections belong to which channel, and the fanout of stored
//! messages to them.
//!
//! **Invariant:** `head_seq` only moves while the fanout holds the read lock, and a connection
//! registers under the write lock; so every message with `seq > head_seq` at registration is
//! delivered live to that connection, and every message with `seq <= head_seq` is not. Resume
//! replays exactly `(last_seq, head_seq]` — no gap, no overlap.
//!
//! **Invariant:** directory events (docs/accounts.md, "The directory feed") are applied by the
//! fanout at their place in the stream, under the write lock, and advance `head_seq` there; so
//! a message stored after a member's removal never reaches that member's connections. A
//! connection is admitted only if the directory read it was authenticated with is at least as
//! new as every event this hub applied for its org (`dir_version`); otherwise the hello
//! re-reads, so no event can fall between the read and the registration.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use threadspace_protocol::frames::{
    close_code, ChannelChange, ChannelInfo, MemberChange, PresenceStatus, ServerFrame,
};
use threadspace_protocol::stored::{DirectoryChange, DirectoryEvent};
use threadspace_protocol::{ChannelId, OrgId, Seq, UserId};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::limits::TokenBucket;
use crate::metrics as m;

/// What the writer task of a connection sends. One pointer wide: tokio allocates each queue's
/// first block of 32 slots up front, so slot size is per-connection memory. A message frame is
/// one `Arc` shared by every recipient.
pub(crate) type Outbound = Arc<OutFrame>;

/// A frame queued for a connection.
#[derive(Debug)]
pub(crate) enum OutFrame {
    /// A message frame; skipped if `seq` was already replayed.
    Msg { seq: Seq, frame: Bytes },
    /// Any other encoded server frame.
    Frame(Bytes),
    /// A WebSocket pong answering a client ping.
    Pong(Vec<u8>),
}

/// A connection as the hub and other tasks see it.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub id: u64,
    pub user: UserId,
    pub org: OrgId,
    /// The login session (`sid`) of the token the connection authenticated with; 0 for a
    /// token without one. Ending that session closes the connection.
    login_session: i64,
    /// The org's directory version the connection's hello read: an event at or below it is
    /// already reflected in the connection's state (a republished or late-applied event must
    /// not undo a newer read, nor close a connection admitted after the change).
    dir_version: u64,
    /// Outbound queue, bounded by `queue_cap`: when it is full the connection is a slow
    /// consumer and is killed. A `VecDeque` rather than a tokio channel because an idle
    /// connection's empty deque allocates nothing, where a channel costs ~1 KiB up front.
    queue: Mutex<VecDeque<Outbound>>,
    queue_cap: usize,
    /// Wakes the writer after a push (a permit is kept if it is not waiting yet).
    queued: Notify,
    pub cancel: CancellationToken,
    /// The close code chosen by whoever killed the connection first; 0 while alive.
    close_code: AtomicU16,
    /// Channels this connection may send to and receives from; kept in step with the hub index.
    channels: Mutex<HashSet<ChannelId>>,
    /// Send limiter shared by all of the user's connections on this gateway.
    pub send_limiter: Arc<Mutex<TokenBucket>>,
    /// Milliseconds since the process epoch of the last frame received from the client.
    last_rx_ms: AtomicU64,
    /// Milliseconds since the process epoch of the last sign of a person: `send`, `typing`,
    /// `read`, `presence online` (and the hello).
    last_active_ms: AtomicU64,
    /// The client said `presence idle` (cleared by any activity).
    client_idle: AtomicBool,
}

impl ConnHandle {
    /// Ends the connection with `code` (the first caller's code wins).
    pub(crate) fn kill(&self, code: u16) {
        let _ = self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.cancel.cancel();
    }

    pub(crate) fn close_code(&self) -> u16 {
        self.close_code.load(Ordering::Acquire)
    }

    /// Queues a frame; a full queue kills the connection as a slow consumer. False if the
    /// frame was not queued (full, or the connection is ending).
    pub(crate) fn push(&self, item: Outbound) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        let mut queue = self.queue.lock().expect("queue lock is never poisoned");
        if queue.len() >= self.queue_cap {
            drop(queue);
            self.kill(close_code::SLOW_CONSUMER);
            return false;
        }
        queue.push_back(item);
        drop(queue);
        self.queued.notify_one();
        true
    }

    /// Takes the next queued frame. An emptied queue gives back memory a burst made it grow.
    pub(crate) fn pop(&self) -> Option<Outbound> {
        let mut queue = self.queue.lock().expect("queue lock is never poisoned");
        let item = queue.pop_front();
        if queue.is_empty() && queue.capacity() > 16 {
            *queue = VecDeque::new();
        }
        item
    }

    /// Number of queued frames.
    pub(crate) fn queued_len(&self) -> usize {
        self.queue.lock().expect("queue lock is never poisoned").len()
    }

    /// Resolves after the next push (immediately if one happened since the last wait).
    pub(crate) async fn wait_queued(&self) {
        self.queued.notified().await;
    }

    /// Queues an encoded server frame.
    pub(crate) fn push_frame(&self, frame: &ServerFrame) -> bool {
        self.push(Arc::new(OutFrame::Frame(Bytes::from(frame.encode()))))
    }

    /// Records that the client sent something at `now_ms`.
    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_rx_ms.store(now_ms, Ordering::Relaxed);
    }

    pub(crate) fn last_rx_ms(&self) -> u64 {
        self.last_rx_ms.load(Ordering::Relaxed)
    }

    /// Records activity at `now_ms`; true if the connection counted as idle until now
    /// (by the client's word or by `idle_after_ms` of inactivity).
    pub(crate) fn mark_active(&self, now_ms: u64, idle_after_ms: u64) -> bool {
        let was_idle = self.is_idle(now_ms, idle_after_ms);
        self.client_idle.store(false, Ordering::Relaxed);
        self.last_active_ms.store(now_ms, Ordering::Relaxed);
        was_idle
    }

    /// The client says it is idle; true if that changed anything.
    pub(crate) fn mark_idle(&self) -> bool {
        !self.client_idle.swap(true, Ordering::Relaxed)
    }

    /// Idle by the client's word or after `idle_after_ms` without activity.
    pub(crate) fn is_idle(&self, now_ms: u64, idle_after_ms: u64) -> bool {
        self.client_idle.load(Ordering::Relaxed)
            || now_ms.saturating_sub(self.last_active_ms.load(Ordering::Relaxed)) >= idle_after_ms
    }

    pub(crate) fn is_member(&self, channel: ChannelId) -> bool {
        self.channels.lock().expect("channel set lock is never poisoned").contains(&channel)
    }

    /// A snapshot of the connection's channels (for replay filtering).
    pub(crate) fn channel_set(&self) -> HashSet<ChannelId> {
        self.channels.lock().expect("channel set lock is never poisoned").clone()
    }
}

struct UserEntry {
    conns: Vec<Arc<ConnHandle>>,
    send_limiter: Arc<Mutex<TokenBucket>>,
}

#[derive(Default)]
struct Inner {
    channels: HashMap<ChannelId, Vec<Arc<ConnHandle>>>,
    users: HashMap<UserId, UserEntry>,
    /// Every connection by org, for presence frames.
    orgs: HashMap<OrgId, Vec<Arc<ConnHandle>>>,
    /// The newest directory version applied per org (from the stream, since this process
    /// started).
    versions: HashMap<OrgId, u64>,
}

/// A `channel` frame with the channel's name, topic and purpose, encoded once for every
/// connection it goes to.
fn channel_frame(
    channel: ChannelId,
    change: ChannelChange,
    name: &Option<String>,
    topic: &str,
    purpose: &str,
) -> Outbound {
    let frame = ServerFrame::Channel {
        channel,
        change,
        name: name.clone(),
        topic: Some(topic.to_owned()),
        purpose: Some(purpose.to_owned()),
    };
    Arc::new(OutFrame::Frame(Bytes::from(frame.encode())))
}

/// Who is being admitted, and how new the directory read behind it is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Admission {
    pub user: UserId,
    pub org: OrgId,
    /// The token's login session; 0 for none.
    pub login_session: i64,
    /// The org's directory version the session was read at; `None` admits regardless.
    pub dir_version: Option<u64>,
}

/// The directory read behind an admission predates an event this hub already applied:
/// re-read and try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stale;

/// What applying a directory event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Applied; this many local connections were affected.
    Changed(usize),
    /// Its version was applied before (a republished event).
    Repeated,
}

/// Limits applied to new registrations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HubLimits {
    pub outbound_queue: usize,
    pub sends_per_second: u32,
    pub send_burst: u32,
}

/// The registry of local connections.
pub(crate) struct Hub {
    inner: RwLock<Inner>,
    head_seq: AtomicU64,
    next_conn_id: AtomicU64,
    limits: HubLimits,
    /// Set when the gateway starts draining: no new connections, presence holds departures.
    draining: AtomicBool,
    /// The time base of every connection's activity stamps (`now_ms`).
    epoch: Instant,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("head_seq", &self.head_seq()).finish_non_exhaustive()
    }
}

/// A registered connection: its handle and the head of the stream at registration.
#[derive(Debug)]
pub(crate) struct Registration {
    pub handle: Arc<ConnHandle>,
    pub head_seq: Seq,
}

impl Hub {
    /// A hub whose fanout starts after `head_seq`.
    pub(crate) fn new(head_seq: Seq, limits: HubLimits) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            head_seq: AtomicU64::new(head_seq),
            next_conn_id: AtomicU64::new(1),
            limits,
            draining: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the hub was created (monotonic): the clock of activity stamps.
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(crate) fn head_seq(&self) -> Seq {
        self.head_seq.load(Ordering::Acquire)
    }

    /// Registers a connection regardless of directory versions (tests).
    #[cfg(test)]
    pub(crate) fn register(
        &self,
        user: UserId,
        org: OrgId,
        channels: &[ChannelInfo],
        parent: &CancellationToken,
        now_ms: u64,
    ) -> Registration {
        let who = Admission { user, org, login_session: 0, dir_version: None };
        self.admit(who, channels, parent, now_ms).expect("admission without a version is never stale")
    }

    /// Registers a connection of `who.user` in `channels`, unless the directory read behind
    /// it is older than an event already applied for the org ([`Stale`]).
    pub(crate) fn admit(
        &self,
        who: Admission,
        channels: &[ChannelInfo],
        parent: &CancellationToken,
        now_ms: u64,
    ) -> Result<Registration, Stale> {
        let Admission { user, org, login_session, dir_version } = who;
        let mut inner = self.inner.write().expect("hub lock is never poisoned");
        if let Some(read_at) = dir_version {
            if inner.versions.get(&org).is_some_and(|&applied| applied > read_at) {
                return Err(Stale);
            }
        }
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let limits = self.limits;
        let entry = inner.users.entry(user).or_insert_with(|| UserEntry {
            conns: Vec::new(),
            send_limiter: Arc::new(Mutex::new(TokenBucket::new(
                limits.sends_per_second,
                limits.send_burst,
                Instant::now(),
            ))),
        });
        let handle = Arc::new(ConnHandle {
            id,
            user,
            org,
            login_session,
            dir_version: dir_version.unwrap_or(0),
            queue: Mutex::new(VecDeque::new()),
            queue_cap: limits.outbound_queue,
            queued: Notify::new(),
            cancel: parent.child_token(),
            close_code: AtomicU16::new(0),
            channels: Mutex::new(channels.iter().map(|c| c.id).collect()),
            send_limiter: entry.send_limiter.clone(),
            last_rx_ms: AtomicU64::new(now_ms),
            last_active_ms: AtomicU64::new(now_ms),
            client_idle: AtomicBool::new(false),
        });
        entry.conns.push(handle.clone());
        inner.orgs.entry(org).or_default().push(handle.clone());
        for channel in channels {
            inner.channels.entry(channel.id).or_default().push(handle.clone());
        }
        // Read under the write lock: see the module invariant.
        let head_seq = self.head_seq();
        drop(inner);
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        Ok(Registration { handle, head_seq })
    }

    /// Removes a connection from every index.
    pub(crate) fn deregister(&self, handle: &ConnHandle) {
        let channels = handle.channel_set();
        let mut inner = self.inner.write().expect("hub lock is never poisoned");
        for channel in channels {
            if let Some(conns) = inner.channels.get_mut(&channel) {
                conns.retain(|c| c.id != handle.id);
                if conns.is_empty() {
                    inner.channels.remove(&channel);
                }
            }
        }
        if let Some(entry) = inner.users.get_mut(&handle.user) {
            entry.conns.retain(|c| c.id != handle.id);
            if entry.conns.is_empty() {
                inner.users.remove(&handle.user);
            }
        }
        if let Some(conns) = inner.orgs.get_mut(&handle.org) {
            conns.retain(|c| c.id != handle.id);
            if conns.is_empty() {
                inner.orgs.remove(&handle.org);
            }
        }
        drop(inner);
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
    }

    /// Delivers one stored message to the channel's local members and advances the head.
    /// Returns how many connections it was queued to.
    pub(crate) fn deliver(&self, seq: Seq, channel: Option<ChannelId>, frame: &Bytes) -> usize {
        let item: Outbound = Arc::new(OutFrame::Msg { seq, frame: frame.clone() });
        let inner = self.inner.read().expect("hub lock is never poisoned");
        // The head moves before the first push: a client may answer the message (a read
        // marker, clamped to the head) before this thread runs again.
        self.head_seq.fetch_max(seq, Ordering::AcqRel);
        let mut delivered = 0;
        if let Some(conns) = channel.and_then(|c| inner.channels.get(&c)) {
            for conn in conns {
                if conn.push(item.clone()) {
                    delivered += 1;
                }
            }
        }
        drop(inner);
        delivered
    }

    /// Queues an ephemeral frame (typing, read markers) to the channel's local members, except
    /// `except`'s connections; a connection whose queue is over half full misses it (it is not
    /// worth a disconnect). Returns how many connections it was queued to.
    pub(crate) fn deliver_ephemeral(
        &self,
        channel: ChannelId,
        except: Option<UserId>,
        frame: &Bytes,
    ) -> usize {
        let item: Outbound = Arc::new(OutFrame::Frame(frame.clone()));
        let inner = self.inner.read().expect("hub lock is never poisoned");
        let mut delivered = 0;
        if let Some(conns) = inner.channels.get(&channel) {
            for conn in conns.iter().filter(|c| Some(c.user) != except) {
                if conn.queued_len() < conn.queue_cap / 2 && conn.push(item.clone()) {
                    delivered += 1;
                }
            }
        }
        delivered
    }

    /// Queues an ephemeral frame to every local connection of `user`. Returns how many.
    pub(crate) fn deliver_user(&self, user: UserId, frame: &Bytes) -> usize {
        let item: Outbound = Arc::new(OutFrame::Frame(frame.clone()));
        let inner = self.inner.read().expect("hub lock is never poisoned");
        inner
            .users
            .get(&user)
            .map_or(0, |entry| entry.conns.iter().filter(|conn| conn.push(item.clone())).count())
    }

    /// Queues a presence frame to every local connection of `org`. Returns how many.
    pub(crate) fn deliver_org(&self, org: OrgId, frame: &Bytes) -> usize {
        let item: Outbound = Arc::new(OutFrame::Frame(frame.clone()));
        let inner = self.inner.read().expect("hub lock is never poisoned");
        inner.orgs.get(&org).map_or(0, |conns| conns.iter().filter(|conn| conn.push(item.clone())).count())
    }

    /// The presence of a user's local connections: `None` without any, `Online` if one of
    /// them is active, else `Idle`.
    pub(crate) fn local_status(
        &self,
        user: UserId,
        now_ms: u64,
        idle_after_ms: u64,
    ) -> Option<(OrgId, PresenceStatus)> {
        let inner = self.inner.read().expect("hub lock is never poisoned");
        let conns = &inner.users.get(&user)?.conns;
        let org = conns.first()?.org;
        let status = if conns.iter().all(|c| c.is_idle(now_ms, idle_after_ms)) {
            PresenceStatus::Idle
        } else {
            PresenceStatus::Online
        };
        Some((org, status))
    }

    /// Every user with a local connection.
    pub(crate) fn local_users(&self) -> Vec<UserId> {
        self.inner.read().expect("hub lock is never poisoned").users.keys().copied().collect()
    }

    /// Applies the directory event stored at `seq` and advances the head past it, under the
    /// write lock (see the module invariant). A member change updates the indexes and tells
    /// the user's connections; an archive takes the channel from every connection, an unarchive
    /// gives it back to its members' connections, and they or a rename tell them (`channel`); a
    /// deactivation or ended session closes the connections it covers with 4004. Only
    /// connections admitted before the event are touched: a later hello read it already.
    pub(crate) fn apply_directory(&self, seq: Seq, event: &DirectoryEvent) -> Applied {
        let mut inner = self.inner.write().expect("hub lock is never poisoned");
        self.head_seq.fetch_max(seq, Ordering::AcqRel);
        let applied = inner.versions.entry(event.org).or_insert(0);
        if event.version <= *applied {
            return Applied::Repeated;
        }
        *applied = event.version;
        let affected = match &event.change {
            DirectoryChange::Member { channel, user, change } => {
                let conns = Self::change_membership(&mut inner, *user, *channel, *change, event.version);
                drop(inner);
                let frame = ServerFrame::Member { channel: *channel, user: *user, change: *change };
                for conn in &conns {
                    conn.push_frame(&frame);
                }
                conns.len()
            }
            DirectoryChange::Deactivated { user } => Self::end(&inner, *user, event.version, |_| true),
            DirectoryChange::SessionsEnded { user, session: None } => {
                Self::end(&inner, *user, event.version, |_| true)
            }
            DirectoryChange::SessionsEnded { user, session: Some(session) } => {
                Self::end(&inner, *user, event.version, |conn| conn.login_session == *session)
            }
            DirectoryChange::ChannelUpdated { channel, name, topic, purpose } => {
                let conns: Vec<Arc<ConnHandle>> = inner
                    .channels
                    .get(channel)
                    .into_iter()
                    .flatten()
                    .filter(|c| c.dir_version < event.version)
                    .cloned()
                    .collect();
                drop(inner);
                let frame = channel_frame(*channel, ChannelChange::Updated, name, topic, purpose);
                conns.iter().filter(|conn| conn.push(frame.clone())).count()
            }
            DirectoryChange::ChannelArchived { channel } => {
                // Connections admitted before the event lose it; a later one read the directory
                // after it (and after an unarchive, maybe): its set is already right.
                let mut taken = Vec::new();
                if let Some(list) = inner.channels.get_mut(channel) {
                    list.retain(|conn| {
                        if conn.dir_version >= event.version {
                            return true;
                        }
                        // In step with the index, under the write lock.
                        conn.channels.lock().expect("channel set lock is never poisoned").remove(channel);
                        taken.push(conn.clone());
                        false
                    });
                    if list.is_empty() {
                        inner.channels.remove(channel);
                    }
                }
                drop(inner);
                let frame = ServerFrame::Channel {
                    channel: *channel,
                    change: ChannelChange::Archived,
                    name: None,
                    topic: None,
                    purpose: None,
                };
                for conn in &taken {
                    conn.push_frame(&frame);
                }
                taken.len()
            }
            DirectoryChange::ChannelUnarchived { channel, name, topic, purpose, members } => {
                let mut conns = Vec::new();
                for member in members {
                    conns.extend(Self::change_membership(
                        &mut inner,
                        *member,
                        *channel,
                        MemberChange::Joined,
                        event.version,
                    ));
                }
                drop(inner);
                let frame = channel_frame(*channel, ChannelChange::Unarchived, name, topic, purpose);
                conns.iter().filter(|conn| conn.push(frame.clone())).count()
            }
            DirectoryChange::Role { .. } | DirectoryChange::Reactivated { .. } => 0,
        };
        Applied::Changed(affected)
    }

    /// Closes `user`'s connections that `covered` selects and that were admitted before the
    /// event at `version` (a later hello already read the change and passed authentication).
    fn end(inner: &Inner, user: UserId, version: u64, covered: impl Fn(&ConnHandle) -> bool) -> usize {
        let Some(entry) = inner.users.get(&user) else { return 0 };
        let mut n = 0;
        for conn in entry.conns.iter().filter(|c| c.dir_version < version && covered(c)) {
            conn.kill(close_code::SESSION_ENDED);
            n += 1;
        }
        n
    }

    /// Applies a membership change to `user`'s connections admitted before the event at
    /// `version` (later ones read it at hello); returns the connections it changed.
    fn change_membership(
        inner: &mut Inner,
        user: UserId,
        channel: ChannelId,
        change: MemberChange,
        version: u64,
    ) -> Vec<Arc<ConnHandle>> {
        let Some(entry) = inner.users.get(&user) else { return Vec::new() };
        let conns: Vec<Arc<ConnHandle>> =
            entry.conns.iter().filter(|c| c.dir_version < version).cloned().collect();
        for conn in &conns {
            let mut set = conn.channels.lock().expect("channel set lock is never poisoned");
            match change {
                MemberChange::Joined => {
                    if set.insert(channel) {
                        inner.channels.entry(channel).or_default().push(conn.clone());
                    }
                }
                MemberChange::Left => {
                    if set.remove(&channel) {
                        if let Some(list) = inner.channels.get_mut(&channel) {
                            list.retain(|c| c.id != conn.id);
                            if list.is_empty() {
                                inner.channels.remove(&channel);
                            }
                        }
                    }
                }
            }
        }
        conns
    }

    /// Kills every connection with `code` (used by the drain).
    pub(crate) fn kill_all(&self, code: u16) -> usize {
        let inner = self.inner.read().expect("hub lock is never poisoned");
        let mut n = 0;
        for entry in inner.users.values() {
            for conn in &entry.conns {
                conn.kill(code);
                n += 1;
            }
        }
        n
    }

    /// Number of registered connections.
    pub(crate) fn len(&self) -> usize {
        let inner = self.inner.read().expect("hub lock is never poisoned");
        inner.users.values().map(|e| e.conns.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadspace_protocol::frames::ChannelKind;

    fn hub() -> Hub {
        Hub::new(10, HubLimits { outbound_queue: 2, sends_per_second: 1, send_burst: 1 })
    }

    fn channels(ids: &[i64]) -> Vec<ChannelInfo> {
        ids.iter()
            .map(|&id| ChannelInfo { id: ChannelId(id), kind: ChannelKind::Public, name: None, last_read: 0 })
            .collect()
    }

    #[test]
    fn delivers_only_to_members_and_advances_head() {
        let hub = hub();
        let root = CancellationToken::new();
        let a = hub.register(UserId(1), OrgId(1), &channels(&[5]), &root, 0);
        let b = hub.register(UserId(2), OrgId(1), &channels(&[6]), &root, 0);
        assert_eq!(a.head_seq, 10);
        assert_eq!(hub.deliver(11, Some(ChannelId(5)), &Bytes::from_static(b"x")), 1);
        assert!(matches!(a.handle.pop().as_deref(), Some(OutFrame::Msg { seq: 11, .. })));
        assert!(b.handle.pop().is_none());
        assert_eq!(hub.head_seq(), 11);
        assert_eq!(hub.deliver(12, None, &Bytes::new()), 0);
        assert_eq!(hub.head_seq(), 12);
        let c = hub.register(UserId(3), OrgId(1), &channels(&[5]), &root, 0);
        assert_eq!(c.head_seq, 12);
    }

    #[test]
    fn full_queue_kills_as_slow_consumer_without_touching_others() {
        let hub = hub();
        let root = CancellationToken::new();
        let slow = hub.register(UserId(1), OrgId(1), &channels(&[5]), &root, 0);
        let fast = hub.register(UserId(2), OrgId(1), &channels(&[5]), &root, 0);
        for seq in 11..=13 {
            hub.deliver(seq, Some(ChannelId(5)), &Bytes::from_static(b"x"));
            while fast.handle.pop().is_some() {}
        }
        assert_eq!(slow.handle.close_code(), close_code::SLOW_CONSUMER);
        assert!(slow.handle.cancel.is_cancelled());
        assert_eq!(fast.handle.close_code(), 0);
    }

    fn member(version: u64, channel: i64, change: MemberChange) -> DirectoryEvent {
        DirectoryEvent {
            org: OrgId(1),
            version,
            change: DirectoryChange::Member { channel: ChannelId(channel), user: UserId(1), change },
        }
    }

    #[test]
    fn membership_changes_update_index_and_notify() {
        let hub = hub();
        let root = CancellationToken::new();
        let a = hub.register(UserId(1), OrgId(1), &channels(&[5]), &root, 0);
        assert_eq!(hub.apply_directory(11, &member(1, 9, MemberChange::Joined)), Applied::Changed(1));
        assert!(a.handle.is_member(ChannelId(9)));
        assert!(matches!(a.handle.pop().as_deref(), Some(OutFrame::Frame(_))));
        assert_eq!(hub.deliver(12, Some(ChannelId(9)), &Bytes::from_static(b"x")), 1);
        hub.apply_directory(13, &member(2, 9, MemberChange::Left));
        assert_eq!(hub.head_seq(), 13);
        assert!(!a.handle.is_member(ChannelId(9)));
        while a.handle.pop().is_some() {}
        assert_eq!(hub.deliver(14, Some(ChannelId(9)), &Bytes::from_static(b"x")), 0);
        // A republished older event changes nothing.
        assert_eq!(hub.apply_directory(15, &member(1, 9, MemberChange::Joined)), Applied::Repeated);
        assert!(!a.handle.is_member(ChannelId(9)));
        hub.deregister(&a.handle);
        assert_eq!(hub.len(), 0);
        assert_eq!(hub.deliver(16, Some(ChannelId(5)), &Bytes::from_static(b"x")), 0);
    }

    /// The text of the next queued frame ("" if none or not a text frame).
    fn next_text(handle: &ConnHandle) -> String {
        match handle.pop().as_deref() {
            Some(OutFrame::Frame(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            _ => String::new(),
        }
    }

    #[test]
    fn archiving_takes_a_channel_away_and_unarchiving_gives_it_back_to_its_members() {
        let hub = Hub::new(10, HubLimits { outbound_queue: 8, sends_per_second: 1, send_burst: 1 });
        let root = CancellationToken::new();
        let a = hub.register(UserId(1), OrgId(1), &channels(&[5, 6]), &root, 0);
        let b = hub.register(UserId(2), OrgId(1), &channels(&[5]), &root, 0);
        let event = |version, change| DirectoryEvent { org: OrgId(1), version, change };
        let renamed = DirectoryChange::ChannelUpdated {
            channel: ChannelId(5),
            name: Some("ops".into()),
            topic: "deploys".into(),
            purpose: String::new(),
        };
        assert_eq!(hub.apply_directory(11, &event(1, renamed)), Applied::Changed(2));
        let text = next_text(&a.handle);
        assert!(text.contains(r#""op":"channel""#) && text.contains(r#""change":"updated""#), "{text}");
        assert!(text.contains(r#""name":"ops""#) && text.contains(r#""topic":"deploys""#), "{text}");
        assert!(next_text(&b.handle).contains(r#""name":"ops""#));

        let archived = DirectoryChange::ChannelArchived { channel: ChannelId(5) };
        assert_eq!(hub.apply_directory(12, &event(2, archived)), Applied::Changed(2));
        assert!(!a.handle.is_member(ChannelId(5)) && !b.handle.is_member(ChannelId(5)));
        assert!(a.handle.is_member(ChannelId(6)), "other channels stay");
        assert!(next_text(&a.handle).contains(r#""change":"archived""#));
        assert!(next_text(&b.handle).contains(r#""change":"archived""#));
        assert_eq!(hub.deliver(13, Some(ChannelId(5)), &Bytes::from_static(b"x")), 0, "no delivery after");

        let back = DirectoryChange::ChannelUnarchived {
            channel: ChannelId(5),
            name: Some("ops".into()),
            topic: String::new(),
            purpose: String::new(),
            members: vec![UserId(1)],
        };
        assert_eq!(hub.apply_directory(14, &event(3, back)), Applied::Changed(1));
        assert!(a.handle.is_member(ChannelId(5)) && !b.handle.is_member(ChannelId(5)), "only its members");
        assert!(next_text(&a.handle).contains(r#""change":"unarchived""#));
        assert!(b.handle.pop().is_none());
        assert_eq!(hub.deliver(15, Some(ChannelId(5)), &Bytes::from_static(b"x")), 1);
        assert_eq!(hub.head_seq(), 15);
    }

    #[test]
    fn an_archive_leaves_alone_a_connection_whose_hello_read_the_unarchive_after_it() {
        let hub = Hub::new(10, HubLimits { outbound_queue: 8, sends_per_second: 1, send_burst: 1 });
        let root = CancellationToken::new();
        // Read at version 6 (archived at 5, unarchived at 6) while the hub is still at 4.
        let who = Admission { user: UserId(1), org: OrgId(1), login_session: 0, dir_version: Some(6) };
        let late = hub.admit(who, &channels(&[5]), &root, 0).expect("the hub applied nothing newer");
        let event = |version, change| DirectoryEvent { org: OrgId(1), version, change };
        let archived = DirectoryChange::ChannelArchived { channel: ChannelId(5) };
        assert_eq!(hub.apply_directory(11, &event(5, archived)), Applied::Changed(0));
        let back = DirectoryChange::ChannelUnarchived {
            channel: ChannelId(5),
            name: None,
            topic: String::new(),
            purpose: String::new(),
            members: vec![UserId(1)],
        };
        assert_eq!(hub.apply_directory(12, &event(6, back)), Applied::Changed(0));
        assert!(late.handle.is_member(ChannelId(5)), "the channel its hello read stays");
        assert_eq!(hub.deliver(13, Some(ChannelId(5)), &Bytes::from_static(b"x")), 1);
    }

    #[test]
    fn a_directory_read_older_than_an_applied_event_is_not_admitted() {
        let hub = hub();
        let root = CancellationToken::new();
        hub.apply_directory(11, &member(4, 9, MemberChange::Left));
        let who = |v| Admission { user: UserId(2), org: OrgId(1), login_session: 0, dir_version: Some(v) };
        assert_eq!(hub.admit(who(3), &channels(&[9]), &root, 0).err(), Some(Stale));
        assert!(hub.admit(who(4), &channels(&[9]), &root, 0).is_ok());
        // Another org's versions do not matter.
        let other = Admission { org: OrgId(2), ..who(0) };
        assert!(hub.admit(other, &channels(&[7]), &root, 0).is_ok());
    }

    #[test]
    fn an_event_older_than_a_connections_read_leaves_it_alone() {
        let hub = hub();
        let root = CancellationToken::new();
        // Admitted with a read at version 5: it already reflects events 1 to 5.
        let who = Admission { user: UserId(1), org: OrgId(1), login_session: 7, dir_version: Some(5) };
        let conn = hub.admit(who, &channels(&[9]), &root, 0).expect("admitted").handle;
        // Event 4 reaches this gateway late (or is republished after a restart): no effect.
        assert_eq!(hub.apply_directory(11, &member(4, 9, MemberChange::Left)), Applied::Changed(0));
        assert!(conn.is_member(ChannelId(9)));
        let ended = |version| DirectoryEvent {
            org: OrgId(1),
            version,
            change: DirectoryChange::SessionsEnded { user: UserId(1), session: None },
        };
        assert_eq!(hub.apply_directory(12, &ended(5)), Applied::Changed(0));
        assert_eq!(conn.close_code(), 0, "a change the hello already read does not close it");
        assert_eq!(hub.apply_directory(13, &member(6, 9, MemberChange::Left)), Applied::Changed(1));
        assert!(!conn.is_member(ChannelId(9)));
        assert_eq!(hub.apply_directory(14, &ended(7)), Applied::Changed(1));
        assert_eq!(conn.close_code(), close_code::SESSION_ENDED);
    }

    #[test]
    fn ended_sessions_and_deactivation_close_exactly_the_covered_connections() {
        let hub = hub();
        let root = CancellationToken::new();
        let admit = |user, session| {
            let who =
                Admission { user: UserId(user), org: OrgId(1), login_session: session, dir_version: None };
            hub.admit(who, &channels(&[5]), &root, 0).expect("admitted").handle
        };
        let (laptop, phone, other) = (admit(1, 10), admit(1, 11), admit(2, 20));
        let ended = |version, user, session| DirectoryEvent {
            org: OrgId(1),
            version,
            change: DirectoryChange::SessionsEnded { user: UserId(user), session },
        };
        assert_eq!(hub.apply_directory(11, &ended(1, 1, Some(10))), Applied::Changed(1));
        assert_eq!(laptop.close_code(), close_code::SESSION_ENDED);
        assert_eq!(phone.close_code(), 0);
        assert_eq!(hub.apply_directory(12, &ended(2, 1, None)), Applied::Changed(2));
        assert_eq!(phone.close_code(), close_code::SESSION_ENDED);
        assert_eq!(other.close_code(), 0);
        let deactivated = DirectoryEvent {
            org: OrgId(1),
            version: 3,
            change: DirectoryChange::Deactivated { user: UserId(2) },
        };
        hub.apply_directory(13, &deactivated);
        assert_eq!(other.close_code(), close_code::SESSION_ENDED);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_writer_never_misses_a_push() {
        let hub = Hub::new(0, HubLimits { outbound_queue: 100_000, sends_per_second: 1, send_burst: 1 });
        let root = CancellationToken::new();
        let conn = hub.register(UserId(1), OrgId(1), &channels(&[5]), &root, 0).handle;
        // A push before anyone waits leaves a permit: the wait returns at once.
        conn.push(Arc::new(OutFrame::Frame(Bytes::new())));
        tokio::time::timeout(std::time::Duration::from_secs(1), conn.wait_queued())
            .await
            .expect("permit kept");
        assert!(conn.pop().is_some());
        // A consumer shaped like the writer (drain, then wait) against concurrent producers.
        let consumer = {
            let conn = conn.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.len() < 20_000 {
                    match conn.pop() {
                        Some(item) => {
                            if let OutFrame::Msg { seq, .. } = &*item {
                                seen.push(*seq);
                            }
                        }
                        None => conn.wait_queued().await,
                    }
                }
                seen
            })
        };
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let conn = conn.clone();
                tokio::spawn(async move {
                    for i in 0..10_000u64 {
                        assert!(conn
                            .push(Arc::new(OutFrame::Msg { seq: p * 1_000_000 + i, frame: Bytes::new() })));
                        if i % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.await.expect("producer finished");
        }
        let seen = tokio::time::timeout(std::time::Duration::from_secs(10), consumer)
            .await
            .expect("consumer saw every item without a lost wake-up")
            .expect("consumer finished");
        for p in 0..2u64 {
            let mine: Vec<u64> = seen.iter().copied().filter(|s| s / 1_000_000 == p).collect();
            assert_eq!(
                mine,
                (0..10_000).map(|i| p * 1_000_000 + i).collect::<Vec<_>>(),
                "per-producer order kept"
            );
        }
    }

    #[test]
    fn users_share_one_send_limiter() {
        let hub = hub();
        let root = CancellationToken::new();
        let a = hub.register(UserId(1), OrgId(1), &channels(&[]), &root, 0);
        let b = hub.register(UserId(1), OrgId(1), &channels(&[]), &root, 0);
        let now = Instant::now();
        assert!(a.handle.send_limiter.lock().expect("lock").try_take(now));
        assert!(!b.handle.send_limiter.lock().expect("lock").try_take(now));
    }
}
