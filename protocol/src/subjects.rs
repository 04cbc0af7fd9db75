//! NATS subject layout and partition routing.
//!
//! Messages live on `msg.<partition>.<org>.<channel>`; the partition is a stable hash of the
//! org, so a partition is a set of whole orgs (docs/design.md §6). The hash must never change: stored
//! subjects and durable consumer filters depend on it.

use crate::ids::{ChannelId, OrgId};

/// Name of the JetStream stream that holds every message.
pub const MESSAGES_STREAM: &str = "MESSAGES";
/// Message subjects captured by [`MESSAGES_STREAM`].
pub const MESSAGES_SUBJECTS: &str = "msg.>";
/// Directory-event subjects captured by [`MESSAGES_STREAM`] too, so that directory changes
/// are ordered with the messages they affect: `dir.<partition>.<org>` (docs/accounts.md).
pub const DIRECTORY_SUBJECTS: &str = "dir.>";
/// The broker-bridge's dead-letter stream: the original payload of a message Postgres cannot
/// take, on `dlq.msg.<partition>`, with the original subject in [`DEAD_LETTER_SUBJECT_HEADER`].
pub const DEAD_LETTER_STREAM: &str = "MESSAGES_DLQ";
/// Header of a dead letter naming the subject the message was stored under.
pub const DEAD_LETTER_SUBJECT_HEADER: &str = "ThreadSpace-Subject";
/// The gateways' hello cache: the last directory read of each user's login session, kept so a
/// hello can be answered while Postgres is down (docs/drills.md, "Hellos without PostgreSQL").
/// One record per `hello.<user>.<login session, 0 for none>`.
pub const HELLO_CACHE_STREAM: &str = "HELLO_CACHE";
/// Subjects captured by [`HELLO_CACHE_STREAM`].
pub const HELLO_CACHE_SUBJECTS: &str = "hello.>";
/// Typing indicators (core NATS, never stored): `typing.<org>.<channel>`.
pub const TYPING_PREFIX: &str = "typing";
/// Gateway presence heartbeats (core NATS): `gw.heartbeat.<gateway>`.
pub const HEARTBEAT_PREFIX: &str = "gw.heartbeat";
/// Read-marker announcements (core NATS; the marker itself is in Postgres): `read.<org>.<channel>`.
pub const READ_PREFIX: &str = "read";

/// The hello-cache subject of `user`'s login session `session` (`None`: a token without one).
pub fn hello_cache_subject(user: crate::ids::UserId, session: Option<i64>) -> String {
    format!("hello.{}.{}", user, session.unwrap_or(0))
}

/// Every hello-cache subject of `user` (for an erasure's purge).
pub fn hello_cache_user_filter(user: crate::ids::UserId) -> String {
    format!("hello.{user}.*")
}

/// The dead-letter subject of stream partition `partition`.
pub fn dead_letter_subject(partition: u32) -> String {
    format!("dlq.msg.{partition}")
}

/// Stable partition of an org among `n_partitions` (splitmix64 finaliser, then modulo).
///
/// # Panics
/// Panics if `n_partitions` is zero; configuration validates it as non-zero.
pub fn partition_of(org: OrgId, n_partitions: u32) -> u32 {
    assert!(n_partitions > 0, "partition count is validated as non-zero");
    let mut z = (org.0 as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % u64::from(n_partitions)) as u32
}

/// The subject a message of `channel` in `org` is published on.
pub fn message_subject(n_partitions: u32, org: OrgId, channel: ChannelId) -> String {
    format!("msg.{}.{}.{}", partition_of(org, n_partitions), org, channel)
}

/// Filter matching every message of one org.
pub fn org_message_filter(n_partitions: u32, org: OrgId) -> String {
    format!("msg.{}.{}.>", partition_of(org, n_partitions), org)
}

/// Subject of a typing indicator in `channel` of `org`.
pub fn typing_subject(org: OrgId, channel: ChannelId) -> String {
    format!("{TYPING_PREFIX}.{org}.{channel}")
}

/// Subject of a read-marker announcement in `channel` of `org`.
pub fn read_subject(org: OrgId, channel: ChannelId) -> String {
    format!("{READ_PREFIX}.{org}.{channel}")
}

/// Parses `typing.<org>.<channel>`; `None` for any other shape.
pub fn parse_typing_subject(subject: &str) -> Option<(OrgId, ChannelId)> {
    parse_channel_subject(TYPING_PREFIX, subject)
}

/// Parses `read.<org>.<channel>`; `None` for any other shape.
pub fn parse_read_subject(subject: &str) -> Option<(OrgId, ChannelId)> {
    parse_channel_subject(READ_PREFIX, subject)
}

fn parse_channel_subject(prefix: &str, subject: &str) -> Option<(OrgId, ChannelId)> {
    let mut parts = subject.split('.');
    if parts.next()? != prefix {
        return None;
    }
    let org = OrgId(parts.next()?.parse().ok()?);
    let channel = ChannelId(parts.next()?.parse().ok()?);
    if parts.next().is_some() {
        return None;
    }
    Some((org, channel))
}

/// Subject of a gateway's heartbeats. `gateway` is a validated gateway id (one subject token).
pub fn heartbeat_subject(gateway: &str) -> String {
    format!("{HEARTBEAT_PREFIX}.{gateway}")
}

/// A gateway id usable as one subject token: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_gateway_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The subject of an org's directory events: `dir.<partition>.<org>`, in the org's partition.
pub fn directory_subject(n_partitions: u32, org: OrgId) -> String {
    format!("dir.{}.{}", partition_of(org, n_partitions), org)
}

/// Parses `dir.<partition>.<org>`; `None` for any other shape.
pub fn parse_directory_subject(subject: &str) -> Option<(u32, OrgId)> {
    let mut parts = subject.split('.');
    if parts.next()? != "dir" {
        return None;
    }
    let partition = parts.next()?.parse().ok()?;
    let org = OrgId(parts.next()?.parse().ok()?);
    if parts.next().is_some() {
        return None;
    }
    Some((partition, org))
}

/// Every message of partition `k` (a broker-bridge consumer's filter): `msg.<k>.>`.
pub fn partition_filter(partition: u32) -> String {
    format!("msg.{partition}.>")
}

/// Every org's typing indicators (a gateway's subscription).
pub fn all_typing() -> String {
    format!("{TYPING_PREFIX}.>")
}

/// Every org's read-marker announcements (a gateway's subscription).
pub fn all_reads() -> String {
    format!("{READ_PREFIX}.>")
}

/// Every gateway's presence heartbeats.
pub fn all_heartbeats() -> String {
    format!("{HEARTBEAT_PREFIX}.*")
}

/// Parses `msg.<partition>.<org>.<channel>` into its parts; `None` for any other shape.
pub fn parse_message_subject(subject: &str) -> Option<(u32, OrgId, ChannelId)> {
    let mut parts = subject.split('.');
    if parts.next()? != "msg" {
        return None;
    }
    let partition = parts.next()?.parse().ok()?;
    let org = OrgId(parts.next()?.parse().ok()?);
    let channel = ChannelId(parts.next()?.parse().ok()?);
    if parts.next().is_some() {
        return None;
    }
    Some((partition, org, channel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partition_is_stable_across_releases() {
        // Pinned values: changing the hash would strand stored subjects and consumer filters.
        let pinned: Vec<u32> = (1..=6).map(|o| partition_of(OrgId(o), 16)).collect();
        assert_eq!(pinned, PINNED_1_TO_6_OF_16.to_vec());
    }

    const PINNED_1_TO_6_OF_16: [u32; 6] = [1, 14, 13, 10, 10, 0];

    proptest! {
        #[test]
        fn partition_in_range(org in 1i64..i64::MAX, n in 1u32..1024) {
            prop_assert!(partition_of(OrgId(org), n) < n);
        }

        #[test]
        fn subject_round_trips(org in 1i64..i64::MAX, channel in 1i64..i64::MAX, n in 1u32..1024) {
            let subject = message_subject(n, OrgId(org), ChannelId(channel));
            prop_assert_eq!(
                parse_message_subject(&subject),
                Some((partition_of(OrgId(org), n), OrgId(org), ChannelId(channel)))
            );
            let filter = org_message_filter(n, OrgId(org));
            prop_assert!(subject.starts_with(filter.trim_end_matches('>')));
        }
    }

    #[test]
    fn orgs_spread_over_partitions() {
        let mut counts = [0u32; 16];
        for org in 1..=5_000 {
            counts[partition_of(OrgId(org), 16) as usize] += 1;
        }
        // 5,000 orgs over 16 partitions: ~312 each; a bad hash would leave some nearly empty.
        assert!(counts.iter().all(|&c| (200..=430).contains(&c)), "{counts:?}");
    }

    #[test]
    fn typing_subjects_round_trip() {
        assert_eq!(
            parse_typing_subject(&typing_subject(OrgId(4), ChannelId(9))),
            Some((OrgId(4), ChannelId(9)))
        );
        assert_eq!(parse_typing_subject("typing.4"), None);
        assert_eq!(parse_typing_subject("typing.4.9.1"), None);
        assert_eq!(parse_typing_subject("msg.4.9"), None);
    }

    #[test]
    fn directory_subjects_round_trip() {
        let subject = directory_subject(16, OrgId(3));
        assert_eq!(parse_directory_subject(&subject), Some((partition_of(OrgId(3), 16), OrgId(3))));
        assert_eq!(parse_directory_subject("dir.1"), None);
        assert_eq!(parse_directory_subject("dir.1.2.3"), None);
        assert_eq!(parse_directory_subject("msg.1.2"), None);
    }

    #[test]
    fn rejects_foreign_subjects() {
        assert_eq!(parse_message_subject("msg.1.2"), None);
        assert_eq!(parse_message_subject("msg.1.2.3.4"), None);
        assert_eq!(parse_message_subject("presence.1"), None);
        assert_eq!(parse_message_subject("msg.x.2.3"), None);
    }
}
