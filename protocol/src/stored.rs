//! The record the gateway publishes to JetStream and the broker-bridge writes to Postgres.
//! Its `seq` is not part of it: JetStream assigns the sequence when it stores the record.

use serde::{Deserialize, Serialize};

use crate::frames::{valid_body, valid_client_msg_id, MessageFrame};
use crate::ids::{ChannelId, OrgId, Seq, UserId};
use crate::subjects::{parse_message_subject, partition_of};

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

/// Largest body a stored record may carry, in bytes: the archive's `CHECK` on `messages.body`.
/// Gateways refuse bodies far smaller (`--max-body-bytes`, 16 KiB by default).
pub const MAX_STORED_BODY_BYTES: usize = 65_536;

/// Latest `ts` a stored record may carry: the last millisecond of the year 9999 (Postgres
/// `timestamptz` and the archive's conversion hold it; far larger values overflow).
pub const MAX_STORED_TS_MS: i64 = 253_402_300_799_999;

/// A stream record that is well formed: its subject, partition and payload agree, and every
/// field is one the archive can store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: u32,
    pub message: StoredMessage,
}

/// Why a stream record is not a message: the one rule the gateway's fanout and replay and the
/// broker-bridge all apply, so what is delivered live is exactly what the archive keeps
/// ("delivered implies durable", ARCHITECTURE.md). The text names what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRecord(pub String);

/// Decodes and validates the stream record `payload` stored under `subject`, in a stream
/// split into `n_partitions` partitions.
pub fn decode_record(subject: &str, payload: &[u8], n_partitions: u32) -> Result<Record, InvalidRecord> {
    let Some((partition, org, channel)) = parse_message_subject(subject) else {
        return Err(InvalidRecord(format!("subject {subject:?} is not msg.<partition>.<org>.<channel>")));
    };
    let expected = partition_of(org, n_partitions);
    if partition != expected {
        return Err(InvalidRecord(format!(
            "subject {subject:?} is in partition {partition}, but org {org} belongs to partition {expected}"
        )));
    }
    let message: StoredMessage = serde_json::from_slice(payload)
        .map_err(|e| InvalidRecord(format!("payload is not a stored message: {e}")))?;
    if message.org != org || message.channel != channel {
        return Err(InvalidRecord(format!(
            "payload names org {} channel {}, its subject org {org} channel {channel}",
            message.org, message.channel
        )));
    }
    message.validate()?;
    Ok(Record { partition, message })
}

impl StoredMessage {
    /// The field rules the archive enforces (ids positive, `client_msg_id` of the wire
    /// alphabet, `ts` within [`MAX_STORED_TS_MS`], body without U+0000 and within
    /// [`MAX_STORED_BODY_BYTES`]).
    pub fn validate(&self) -> Result<(), InvalidRecord> {
        if self.org.0 <= 0 || self.channel.0 <= 0 || self.sender.0 <= 0 {
            return Err(InvalidRecord(format!(
                "org {}, channel {} and sender {} must all be positive",
                self.org, self.channel, self.sender
            )));
        }
        if !valid_client_msg_id(&self.client_msg_id) {
            return Err(InvalidRecord(format!(
                "client_msg_id {:?} is not 1 to 64 characters of [A-Za-z0-9_-]",
                self.client_msg_id.chars().take(80).collect::<String>()
            )));
        }
        if let Err(why) = valid_body(&self.body) {
            return Err(InvalidRecord(why.into()));
        }
        if !(0..=MAX_STORED_TS_MS).contains(&self.ts) {
            return Err(InvalidRecord(format!("ts {} is outside 1970 to 9999", self.ts)));
        }
        if self.body.len() > MAX_STORED_BODY_BYTES {
            return Err(InvalidRecord(format!(
                "body is {} bytes; a stored body holds at most {MAX_STORED_BODY_BYTES}",
                self.body.len()
            )));
        }
        Ok(())
    }

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

/// A directory change, stored in the MESSAGES stream on `dir.<partition>.<org>` (the org's
/// partition) so that every gateway applies it at its place among the org's messages: a message
/// stored after a member's removal is never delivered to them (docs/accounts.md, "The
/// directory feed"). `version` counts the org's directory changes (gap-free, in commit order);
/// a gateway ignores a version it already applied (a republished event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEvent {
    pub org: OrgId,
    pub version: u64,
    pub change: DirectoryChange,
}

/// What changed in an org's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum DirectoryChange {
    /// `user` joined or left `channel`.
    Member { channel: ChannelId, user: UserId, change: crate::frames::MemberChange },
    /// `user`'s role is now `role`.
    Role { user: UserId, role: String },
    /// `user` was deactivated: their sockets close (4004) and their tokens stop working.
    Deactivated { user: UserId },
    /// `user` was reactivated.
    Reactivated { user: UserId },
    /// `channel` was renamed or its topic or purpose set: what they are now (`name` is `None`
    /// for a DM or group DM). Its members' connections are told.
    ChannelUpdated { channel: ChannelId, name: Option<String>, topic: String, purpose: String },
    /// `channel` was archived: it leaves every connection's channels (sends and deliveries
    /// stop, as after `left`); its history stays.
    ChannelArchived { channel: ChannelId },
    /// `channel` was unarchived: it is back in the channels of its `members`.
    ChannelUnarchived {
        channel: ChannelId,
        name: Option<String>,
        topic: String,
        purpose: String,
        members: Vec<UserId>,
    },
    /// Sessions of `user` ended: one (`session`), or all of them (`None`, "sign out everywhere",
    /// a password change). Their sockets close with 4004.
    SessionsEnded {
        user: UserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<i64>,
    },
}

/// Decodes a directory event stored under `subject`, checking that subject and payload agree.
pub fn decode_directory_event(
    subject: &str,
    payload: &[u8],
    n_partitions: u32,
) -> Result<DirectoryEvent, InvalidRecord> {
    let Some((partition, org)) = crate::subjects::parse_directory_subject(subject) else {
        return Err(InvalidRecord(format!("subject {subject:?} is not dir.<partition>.<org>")));
    };
    let expected = partition_of(org, n_partitions);
    if partition != expected {
        return Err(InvalidRecord(format!(
            "subject {subject:?} is in partition {partition}, but org {org} belongs to partition {expected}"
        )));
    }
    let event: DirectoryEvent = serde_json::from_slice(payload)
        .map_err(|e| InvalidRecord(format!("payload is not a directory event: {e}")))?;
    if event.org != org {
        return Err(InvalidRecord(format!("payload names org {}, its subject org {org}", event.org)));
    }
    if event.version == 0 {
        return Err(InvalidRecord("directory event version 0 (versions start at 1)".into()));
    }
    Ok(event)
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
