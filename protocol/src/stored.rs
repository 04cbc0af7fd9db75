//! The record the gateway publishes to JetStream and the broker-bridge writes to Postgres.
//! Its `seq` is not part of it: JetStream assigns the sequence when it stores the record.

use serde::{Deserialize, Serialize};

use crate::frames::MessageFrame;
use crate::ids::{ChannelId, OrgId, Seq, UserId};

/// JetStream payload of one chat message (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub org: OrgId,
    pub channel: ChannelId,
    pub sender: UserId,
    pub client_msg_id: String,
    pub body: String,
    /// Gateway time at publish, milliseconds since the Unix epoch.
    pub ts: i64,
}

impl StoredMessage {
    /// The `Nats-Msg-Id` that makes retries idempotent: scoped by sender, so two users can
    /// never collide on a client-chosen id.
    pub fn dedup_id(&self) -> String {
        format!("{}:{}", self.sender, self.client_msg_id)
    }

    /// The frame every member receives once the record is stored under `seq`.
    pub fn into_frame(self, seq: Seq) -> MessageFrame {
        MessageFrame {
            seq,
            channel: self.channel,
            sender: self.sender,
            client_msg_id: self.client_msg_id,
            body: self.body,
            ts: self.ts,
        }
    }
}

/// A membership change, published on `ctl.membership.<org>` (core NATS) after the directory
/// committed it, so every gateway updates its connections of that user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipEvent {
    pub channel: ChannelId,
    pub user: UserId,
    pub change: crate::frames::MemberChange,
}

/// A read marker that moved forward, published on `read.<org>.<channel>` (core NATS) after
/// Postgres committed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadEvent {
    pub user: UserId,
    pub seq: crate::ids::Seq,
    /// A DM or group DM: every member is told (to show "seen"). In a channel only the
    /// reader's own sessions are (read state syncs across devices; a 500-member channel does
    /// not hear each member's every read).
    #[serde(default)]
    pub direct: bool,
}

/// A typing indicator, published on `typing.<org>.<channel>` (core NATS, never stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingEvent {
    pub user: UserId,
}

/// A gateway's presence heartbeat, published on `gw.heartbeat.<gateway>` (core NATS) every
/// interval and whenever its users' presence changed. Every gateway keeps a table of every
/// gateway's users from these and expires a gateway silent for [`HEARTBEAT_MISSES`] intervals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceBeat {
    pub gateway: String,
    /// Random per process start: a restarted gateway's table replaces the old one.
    pub instance: u64,
    /// Counts beats of this instance; the parts of one full snapshot share it.
    pub seq: u64,
    /// The sender's heartbeat interval: silent for `HEARTBEAT_MISSES` of these means dead.
    pub interval_ms: u64,
    pub kind: BeatKind,
    /// `(org, user, status)`: the changes of a delta, or every user of a snapshot part.
    pub users: Vec<(OrgId, UserId, crate::frames::PresenceStatus)>,
}

/// How many heartbeat intervals of silence make a gateway dead.
pub const HEARTBEAT_MISSES: u64 = 3;

/// What a [`PresenceBeat`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum BeatKind {
    /// Changes since the previous beat (possibly none: a liveness beat).
    Delta,
    /// Part `part` (from 0) of `parts` of the complete table; replaces the previous one.
    Full { part: u32, parts: u32 },
    /// The gateway is stopping: forget its users now.
    Bye,
}
