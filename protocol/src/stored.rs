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
}

/// A typing indicator, published on `typing.<org>.<channel>` (core NATS, never stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingEvent {
    pub user: UserId,
}
