//! The delivery checker: knows who should receive what, and reports every message lost,
//! duplicated, delivered out of order, or delivered to someone who should not have it.
//!
//! Each virtual user records what its connection chain received ([`Inbox`]); the run records
//! every acknowledged message. A virtual user must receive, exactly once and in `seq` order per
//! channel, every acknowledged message of its channels with `seq` above the `head_seq` of its
//! first `welcome` — across reconnects, since it resumes with its cursor. A user whose chain
//! broke (a reconnect that failed) is only held to the messages before the break.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use threadspace_protocol::{ChannelId, Seq};

/// What one virtual user received over its connections.
#[derive(Debug, Default)]
pub struct Inbox {
    /// `head_seq` of the first `welcome`: the user is owed everything after it.
    pub start_seq: Seq,
    /// The channels the user is a member of.
    pub channels: HashSet<ChannelId>,
    /// Received seqs (a second copy counts as a duplicate, not again here).
    received: HashSet<Seq>,
    last_in_channel: HashMap<ChannelId, Seq>,
    pub duplicates: u64,
    /// The first few duplicated seqs, with the connection number (0 = first) of each copy.
    pub duplicate_examples: Vec<(Seq, u32, u32)>,
    /// Which connection of the chain received each seq (for duplicate examples).
    received_on: HashMap<Seq, u32>,
    /// Connections opened so far, minus one.
    pub connection: u32,
    pub out_of_order: u64,
    pub unexpected: u64,
    /// Owed messages end here if the chain broke (`None`: connected to the end).
    pub broken_at: Option<Seq>,
}

impl Inbox {
    pub fn new(start_seq: Seq, channels: impl IntoIterator<Item = ChannelId>) -> Self {
        Self { start_seq, channels: channels.into_iter().collect(), ..Self::default() }
    }

    /// Records one delivered message.
    pub fn receive(&mut self, seq: Seq, channel: ChannelId) {
        if !self.channels.contains(&channel) {
            self.unexpected += 1;
            return;
        }
        if !self.received.insert(seq) {
            self.duplicates += 1;
            if self.duplicate_examples.len() < 3 {
                let first = self.received_on.get(&seq).copied().unwrap_or(u32::MAX);
                self.duplicate_examples.push((seq, first, self.connection));
            }
            return;
        }
        if self.connection > 0 || self.received_on.len() < 4096 {
            self.received_on.insert(seq, self.connection);
        }
        let last = self.last_in_channel.entry(channel).or_insert(0);
        if seq < *last {
            self.out_of_order += 1;
        } else {
            *last = seq;
        }
    }

    /// The highest seq received (the resume cursor), or the start.
    pub fn cursor(&self) -> Seq {
        self.received.iter().copied().max().unwrap_or(self.start_seq).max(self.start_seq)
    }

    /// The newest seq received in `channel`.
    pub fn latest_in(&self, channel: ChannelId) -> Option<Seq> {
        self.last_in_channel.get(&channel).copied()
    }

    /// A random channel with something received, and the newest seq in it (for a read marker).
    pub fn latest_in_random_channel(&self, rng: &mut impl rand::Rng) -> Option<(ChannelId, Seq)> {
        use rand::RngExt as _;
        if self.last_in_channel.is_empty() {
            return None;
        }
        let pick = rng.random_range(0..self.last_in_channel.len());
        self.last_in_channel.iter().nth(pick).map(|(c, s)| (*c, *s))
    }

    pub fn received(&self) -> usize {
        self.received.len()
    }

    fn owes(&self, seq: Seq, channel: ChannelId) -> bool {
        seq > self.start_seq && self.channels.contains(&channel) && self.broken_at.is_none_or(|b| seq <= b)
    }
}

/// The verdict over all users.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Deliveries owed.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    /// A few lost deliveries as `(user index, seq)`, to start an investigation from.
    pub lost_examples: Vec<(usize, Seq)>,
    /// A few duplicates as `(seq, connection of the first copy, connection of the second)`.
    #[serde(default)]
    pub duplicate_examples: Vec<(Seq, u32, u32)>,
}

impl Verdict {
    /// Adds another process's verdict (its users are disjoint from ours).
    pub fn merge(&mut self, other: &Self) {
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
        let room = 10usize.saturating_sub(self.lost_examples.len());
        self.lost_examples.extend(other.lost_examples.iter().take(room).copied());
        let room = 10usize.saturating_sub(self.duplicate_examples.len());
        self.duplicate_examples.extend(other.duplicate_examples.iter().take(room).copied());
    }

    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.unexpected == 0
    }
}

/// Checks every inbox against every acknowledged `(seq, channel)`.
pub fn check(acked: &[(Seq, ChannelId)], inboxes: &[Inbox]) -> Verdict {
    let mut members: HashMap<ChannelId, Vec<usize>> = HashMap::new();
    for (i, inbox) in inboxes.iter().enumerate() {
        for channel in &inbox.channels {
            members.entry(*channel).or_default().push(i);
        }
    }
    let mut verdict = Verdict::default();
    for &(seq, channel) in acked {
        for &i in members.get(&channel).into_iter().flatten() {
            let inbox = &inboxes[i];
            if !inbox.owes(seq, channel) {
                continue;
            }
            verdict.expected += 1;
            if inbox.received.contains(&seq) {
                verdict.delivered += 1;
            } else {
                verdict.lost += 1;
                if verdict.lost_examples.len() < 10 {
                    verdict.lost_examples.push((i, seq));
                }
            }
        }
    }
    for inbox in inboxes {
        verdict.duplicated += inbox.duplicates;
        if verdict.duplicate_examples.len() < 10 {
            verdict.duplicate_examples.extend(inbox.duplicate_examples.iter().copied());
        }
        verdict.out_of_order += inbox.out_of_order;
        verdict.unexpected += inbox.unexpected;
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ChannelId = ChannelId(1);
    const B: ChannelId = ChannelId(2);

    fn deliver_all(inbox: &mut Inbox, acked: &[(Seq, ChannelId)]) {
        for &(seq, channel) in acked {
            if inbox.channels.contains(&channel) && seq > inbox.start_seq {
                inbox.receive(seq, channel);
            }
        }
    }

    #[test]
    fn a_clean_run_is_clean() {
        let acked = [(11, A), (12, B), (13, A)];
        let mut inboxes = vec![Inbox::new(10, [A, B]), Inbox::new(10, [A]), Inbox::new(12, [A, B])];
        for inbox in &mut inboxes {
            deliver_all(inbox, &acked);
        }
        let verdict = check(&acked, &inboxes);
        assert!(verdict.is_clean(), "{verdict:?}");
        assert_eq!(verdict.expected, 3 + 2 + 1);
        assert_eq!(verdict.delivered, verdict.expected);
    }

    #[test]
    fn catches_a_dropped_delivery() {
        let acked = [(11, A), (12, A), (13, A)];
        let mut ok = Inbox::new(10, [A]);
        deliver_all(&mut ok, &acked);
        let mut dropped = Inbox::new(10, [A]);
        dropped.receive(11, A);
        dropped.receive(13, A);
        let verdict = check(&acked, &[ok, dropped]);
        assert_eq!(verdict.lost, 1);
        assert_eq!(verdict.lost_examples, vec![(1, 12)]);
        assert_eq!((verdict.duplicated, verdict.out_of_order), (0, 0));
        assert!(!verdict.is_clean());
    }

    #[test]
    fn catches_a_duplicated_delivery() {
        let acked = [(11, A), (12, A)];
        let mut inbox = Inbox::new(10, [A]);
        deliver_all(&mut inbox, &acked);
        inbox.receive(12, A);
        let verdict = check(&acked, &[inbox]);
        assert_eq!((verdict.lost, verdict.duplicated), (0, 1));
        assert!(!verdict.is_clean());
    }

    #[test]
    fn catches_reordering_and_strangers() {
        let acked = [(11, A), (12, A)];
        let mut inbox = Inbox::new(10, [A]);
        inbox.receive(12, A);
        inbox.receive(11, A);
        inbox.receive(14, B);
        let verdict = check(&acked, &[inbox]);
        assert_eq!((verdict.lost, verdict.out_of_order, verdict.unexpected), (0, 1, 1));
    }

    #[test]
    fn a_broken_chain_is_owed_only_what_came_before() {
        let acked = [(11, A), (12, A), (13, A)];
        let mut inbox = Inbox::new(10, [A]);
        inbox.receive(11, A);
        inbox.broken_at = Some(11);
        assert!(check(&acked, &[inbox]).is_clean());
        let mut early = Inbox::new(10, [A]);
        early.broken_at = Some(12);
        early.receive(11, A);
        assert_eq!(check(&acked, &[early]).lost, 1, "12 was owed before the break");
    }

    #[test]
    fn the_cursor_is_the_highest_seq_seen() {
        let mut inbox = Inbox::new(10, [A, B]);
        assert_eq!(inbox.cursor(), 10);
        inbox.receive(15, B);
        inbox.receive(12, A);
        assert_eq!(inbox.cursor(), 15);
    }
}
