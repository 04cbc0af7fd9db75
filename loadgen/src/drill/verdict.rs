//! A drill's verdict beyond the delivery checker (docs/drills.md, "The verdict"): the archive
//! against the acknowledged set, every unacknowledged send classified, and per fault the
//! window in which sends failed or stalled and how long clients took to resume; and the run's
//! slowest deliveries, traced to the gateways and the fault.
//!
//! **Invariant:** the archive check reads Postgres only after the bridge has drained (every
//! acknowledged seq is there, or the drain timed out and says so), so "missing" means lost,
//! not late.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use threadspace_protocol::{ChannelId, Seq, UserId};

use super::faults::Struck;
use crate::run::{ReconnectRecord, SendOutcome, SendRecord, SlowDelivery};

/// The archive against what the run sent.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Archive {
    /// Acknowledged sends.
    pub acked: usize,
    /// Acknowledged sends whose seq is not in the archive with their id: lost.
    pub missing: usize,
    /// Ids stored more than once (at different seqs): duplicates.
    pub duplicated: usize,
    /// Acknowledged under one seq, archived under another.
    pub seq_mismatch: usize,
    /// Unacknowledged sends (an error or no answer) that were stored once: allowed, a retry
    /// with the same id would have been told `duplicate`.
    pub unacked_stored: usize,
    /// Unacknowledged sends never stored.
    pub unacked_not_stored: usize,
    /// Archived rows of this run that no send made.
    pub phantom: usize,
    /// How long the bridge took to archive every acknowledged message after the run (or
    /// until it stopped making progress).
    pub drain_ms: u64,
    /// When the first acknowledged send missing from the archive (or archived at another
    /// seq) was acknowledged (unix µs): which fault it fell in.
    pub first_missing_acked_us: Option<u64>,
    /// Whether the bridges archived every acknowledged message; false when the wait ended
    /// because they stopped making progress or time ran out (then "missing" may be "late").
    pub drained: bool,
    /// Why the archive could not be read at all.
    pub unreadable: Option<String>,
    /// A few problems, to start an investigation from.
    pub examples: Vec<String>,
}

impl Archive {
    /// Whether the archive equals the acknowledged set (and nothing is doubled).
    pub fn exact(&self) -> bool {
        self.unreadable.is_none()
            && self.missing == 0
            && self.duplicated == 0
            && self.seq_mismatch == 0
            && self.phantom == 0
    }

    /// An archive that could not be read: the run fails with the reason.
    pub fn unreadable(error: &anyhow::Error) -> Self {
        Self { unreadable: Some(format!("{error:#}")), ..Self::default() }
    }
}

/// Waits until every acknowledged seq is archived (up to `limit`, or until the count stops
/// growing for 15 s), then compares the run's archived rows (ids ending in `suffix`) with its
/// sends.
pub async fn archive(
    postgres_url: &str,
    sends: &[SendRecord],
    suffix: &str,
    limit: Duration,
) -> anyhow::Result<Archive> {
    let acked: Vec<i64> = sends
        .iter()
        .filter_map(|s| match s.outcome {
            SendOutcome::Acked { seq, .. } => Some(seq as i64),
            _ => None,
        })
        .collect();
    let started = tokio::time::Instant::now();
    let mut progress = (0, started);
    let mut drained = false;
    // Reconnects on every try: the drill may have failed PostgreSQL over.
    loop {
        let count = async {
            let client = threadspace_store::connect(postgres_url).await?;
            let row =
                client.query_one("SELECT count(*) FROM messages WHERE seq = ANY($1)", &[&acked]).await?;
            anyhow::Ok(row.get::<_, i64>(0) as usize)
        }
        .await;
        if matches!(count, Ok(n) if n >= acked.len()) {
            drained = true;
            break;
        }
        if started.elapsed() > limit {
            break;
        }
        match count {
            Ok(n) if n > progress.0 => progress = (n, tokio::time::Instant::now()),
            _ if progress.1.elapsed() > Duration::from_secs(15) => break,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drain_ms = started.elapsed().as_millis() as u64;
    let client = threadspace_store::connect(postgres_url).await?;
    let rows = client
        .query(
            "SELECT seq, client_msg_id FROM messages WHERE client_msg_id LIKE 'lg%' AND client_msg_id LIKE $1",
            &[&format!("%{suffix}")],
        )
        .await?;
    let stored: Vec<(Seq, String)> = rows.iter().map(|r| (r.get::<_, i64>(0) as Seq, r.get(1))).collect();
    let mut result = compare(sends, &stored);
    result.drain_ms = drain_ms;
    result.drained = drained;
    Ok(result)
}

/// Compares sends with the archived `(seq, client_msg_id)` rows of the run.
pub fn compare(sends: &[SendRecord], stored: &[(Seq, String)]) -> Archive {
    let mut by_id: HashMap<&str, Vec<Seq>> = HashMap::new();
    for (seq, id) in stored {
        by_id.entry(id.as_str()).or_default().push(*seq);
    }
    let mut result = Archive::default();
    let example = |result: &mut Archive, text: String| {
        if result.examples.len() < 10 {
            result.examples.push(text);
        }
    };
    for send in sends {
        let seqs = by_id.get(send.client_msg_id.as_str()).map_or(&[][..], |v| v.as_slice());
        if seqs.len() > 1 {
            result.duplicated += 1;
            example(
                &mut result,
                format!("{} stored {} times, at seqs {seqs:?}", send.client_msg_id, seqs.len()),
            );
        }
        match &send.outcome {
            SendOutcome::Acked { seq, at_us } => {
                result.acked += 1;
                if seqs.is_empty() || !seqs.contains(seq) {
                    let first = result.first_missing_acked_us.get_or_insert(*at_us);
                    *first = (*first).min(*at_us);
                }
                if seqs.is_empty() {
                    result.missing += 1;
                    example(
                        &mut result,
                        format!("{} acknowledged as seq {seq}, not in the archive", send.client_msg_id),
                    );
                } else if !seqs.contains(seq) {
                    result.seq_mismatch += 1;
                    example(
                        &mut result,
                        format!("{} acknowledged as seq {seq}, archived as {seqs:?}", send.client_msg_id),
                    );
                }
            }
            _ if seqs.is_empty() => result.unacked_not_stored += 1,
            _ => result.unacked_stored += 1,
        }
    }
    let sent: std::collections::HashSet<&str> = sends.iter().map(|s| s.client_msg_id.as_str()).collect();
    for (seq, id) in stored {
        if !sent.contains(id.as_str()) {
            result.phantom += 1;
            example(&mut result, format!("archived {id} at seq {seq}, which no send of the run made"));
        }
    }
    result
}

/// How long before a strike a send still counts as in flight when it struck.
const IN_FLIGHT_LOOKBACK: Duration = Duration::from_secs(5);

/// A send in a fault's slot: when it was due, and `Ok(acknowledged in time at)` or
/// `Err(failed at)` (unix µs).
type SendEvent = (u64, Result<u64, u64>);

/// What a fault did to the clients.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Impact {
    /// Sends in flight when the fault struck (due before it, answered after it or never).
    pub in_flight: usize,
    /// Sends due in the fault's slot that failed: refused, unanswered, or acknowledged later
    /// than the stall threshold.
    pub refused: usize,
    pub unanswered: usize,
    pub stalled: usize,
    /// The longest window, on one gateway, from a failed send to the next one acknowledged in
    /// time there (or, with none, to its last failure) (ms).
    pub unavailable_ms: u64,
    /// The gateway (1-based) of that window.
    pub unavailable_gateway: Option<usize>,
    /// Reconnects that began in the slot, and the longest of them until `resumed` (ms).
    pub reconnects: usize,
    pub longest_reconnect_ms: u64,
    /// From the strike until the last of those reconnects had resumed (ms).
    pub all_resumed_ms: u64,
    /// Reconnects that never resumed.
    pub never_resumed: usize,
    /// The slowest send→deliver in the progress intervals the slot overlaps (ms): a fanout
    /// that stalls shows here, not in the sends.
    pub deliver_max_ms: u64,
}

/// Measures a fault's impact over its slot `[slot_start, until)` (unix µs): sends in flight at the
/// strike, failures and reconnects from the fault's first action (see [`Struck::slot_start`]).
pub fn impact(
    struck: &Struck,
    until_us: u64,
    sends: &[SendRecord],
    reconnects: &[ReconnectRecord],
    stall: Duration,
) -> Impact {
    let stall_us = stall.as_micros() as u64;
    let start = struck.struck_us;
    // Failures and reconnects count from the fault's first action; in-flight sends from the strike.
    let from = struck.slot_start();
    let mut result = Impact::default();
    // Per gateway, the slot's sends: (due, Ok(acknowledged in time at) or Err(failed at)).
    let mut by_gateway: HashMap<usize, Vec<SendEvent>> = HashMap::new();
    for send in sends {
        let answered_at = match &send.outcome {
            SendOutcome::Acked { at_us, .. } | SendOutcome::Refused { at_us, .. } => Some(*at_us),
            SendOutcome::Unanswered => None,
        };
        // An unanswered send due long before lost its connection before: not this fault's.
        let recent = send.intended_us + IN_FLIGHT_LOOKBACK.as_micros() as u64 >= start;
        if recent && send.intended_us <= start && answered_at.is_none_or(|at| at >= start) {
            result.in_flight += 1;
        }
        // A send due a little before the strike can be the one it hit; one due a little
        // before the next strike belongs to the next fault.
        if send.intended_us + stall_us < from || send.intended_us + stall_us >= until_us {
            continue;
        }
        let failed_at = match &send.outcome {
            SendOutcome::Acked { at_us, .. } if at_us.saturating_sub(send.intended_us) <= stall_us => {
                by_gateway.entry(send.gateway).or_default().push((send.intended_us, Ok(*at_us)));
                continue;
            }
            SendOutcome::Acked { at_us, .. } => {
                result.stalled += 1;
                *at_us
            }
            SendOutcome::Refused { at_us, .. } => {
                result.refused += 1;
                *at_us
            }
            SendOutcome::Unanswered => {
                result.unanswered += 1;
                send.intended_us + stall_us
            }
        };
        by_gateway.entry(send.gateway).or_default().push((send.intended_us, Err(failed_at)));
    }
    let mut gateways: Vec<_> = by_gateway.into_iter().collect();
    gateways.sort_unstable_by_key(|(gateway, _)| *gateway);
    for (gateway, mut events) in gateways {
        events.sort_unstable_by_key(|e| e.0);
        let longest = longest_window(&events, stall_us) / 1000;
        if longest > result.unavailable_ms || (longest > 0 && result.unavailable_gateway.is_none()) {
            result.unavailable_ms = longest;
            result.unavailable_gateway = Some(gateway + 1);
        }
    }
    for reconnect in reconnects.iter().filter(|r| r.lost_us >= from && r.lost_us < until_us) {
        result.reconnects += 1;
        match reconnect.resumed_us {
            Some(resumed) => {
                result.longest_reconnect_ms =
                    result.longest_reconnect_ms.max(resumed.saturating_sub(reconnect.lost_us) / 1000);
                result.all_resumed_ms = result.all_resumed_ms.max(resumed.saturating_sub(start) / 1000);
            }
            None => result.never_resumed += 1,
        }
    }
    result
}

/// One of a run's slowest deliveries, traced: the gateway it was sent through and the one
/// that delivered it, when it was due, and the last fault that struck before it arrived. With the seq and
/// the wall-clock time, the gateways' logs (`--keep-stack-dir`) say what held it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TracedDelivery {
    pub seq: Seq,
    pub channel: ChannelId,
    pub receiver: UserId,
    /// When it was due: seconds since the ramp began, and unix ms (as in the logs).
    pub due_s: f64,
    pub due_unix_ms: u64,
    /// How long after that it arrived (ms).
    pub took_ms: u64,
    /// The gateway (1-based) it was sent through; `None`: not one of the run's sends (the
    /// drill's probe).
    pub sent_via: Option<usize>,
    /// The gateway (1-based) that delivered it.
    pub delivered_by: usize,
    /// It came in a resume's replay (its receiver was reconnecting), not live.
    pub replayed: bool,
    /// The kind of the last fault that struck before it arrived (`None`: none had): a message
    /// due just before a strike and held by it counts as that fault's.
    pub during: Option<String>,
}

/// How many of a run's slowest live deliveries, and of its slowest replayed ones, the report
/// keeps.
pub const SLOWEST_REPORTED: usize = 5;

/// The run's slowest live deliveries, then its slowest replayed ones, at most
/// [`SLOWEST_REPORTED`] of each, slowest first; only the slowest of each gateway after each
/// fault (see [`TracedDelivery::during`]): one stalled fanout delays many messages for every member on its gateway, and
/// listing them all would hide the other delays. `start_us` is the start of the ramp.
pub fn slowest(
    deliveries: &[SlowDelivery],
    sends: &[SendRecord],
    struck: &[Struck],
    start_us: u64,
) -> Vec<TracedDelivery> {
    let slot = |d: &SlowDelivery| struck.iter().rposition(|s| s.slot_start() <= d.intended_us + d.took_us);
    let mut sorted: Vec<&SlowDelivery> = deliveries.iter().collect();
    sorted.sort_by_key(|d| (std::cmp::Reverse(d.took_us), d.seq));
    let mut picked: Vec<&SlowDelivery> = Vec::new();
    for replayed in [false, true] {
        let mut seen = std::collections::HashSet::new();
        picked.extend(
            sorted
                .iter()
                .filter(|d| d.replayed == replayed && seen.insert((d.gateway, slot(d))))
                .take(SLOWEST_REPORTED),
        );
    }
    // The picked few, looked up in one pass over the sends.
    let mut sent_via: HashMap<(UserId, u64), Option<usize>> =
        picked.iter().map(|d| ((d.sender, d.intended_us), None)).collect();
    for send in sends {
        if let Some(gateway) = sent_via.get_mut(&(send.user, send.intended_us)) {
            *gateway = Some(send.gateway + 1);
        }
    }
    picked
        .into_iter()
        .map(|d| TracedDelivery {
            seq: d.seq,
            channel: d.channel,
            receiver: d.user,
            due_s: d.intended_us.saturating_sub(start_us) as f64 / 1e6,
            due_unix_ms: d.intended_us / 1000,
            took_ms: d.took_us / 1000,
            sent_via: sent_via.get(&(d.sender, d.intended_us)).copied().flatten(),
            delivered_by: d.gateway + 1,
            replayed: d.replayed,
            during: slot(d).map(|i| struck[i].kind.clone()),
        })
        .collect()
}

/// The longest span from a failure to the next success (its ack), or to the last failure when
/// no success follows — or when the next send (success or failure) was due more than `idle`
/// after the last failure: a gateway its users left (they reconnected elsewhere) was idle, not
/// failing, and a failure after it starts a window of its own (a rolling restart's first
/// gateway fails a send as it drains, sits empty, and takes clients again two restarts later).
/// `events` are `(due, Ok(acked at) | Err(failed at))` in due order (µs).
fn longest_window(events: &[SendEvent], idle: u64) -> u64 {
    let mut longest = 0;
    let mut open: Option<(u64, u64)> = None;
    for (due, outcome) in events {
        match (outcome, open) {
            (Err(failed_at), None) => open = Some((*due, *failed_at)),
            (Err(failed_at), Some((start, last))) if *due > last + idle => {
                longest = longest.max(last.saturating_sub(start));
                open = Some((*due, *failed_at));
            }
            (Err(failed_at), Some((start, last))) => open = Some((start, last.max(*failed_at))),
            (Ok(acked_at), Some((start, last))) => {
                let end = if *due > last + idle { last } else { *acked_at };
                longest = longest.max(end.saturating_sub(start));
                open = None;
            }
            (Ok(_), None) => {}
        }
    }
    if let Some((start, last)) = open {
        longest = longest.max(last.saturating_sub(start));
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(id: &str, gateway: usize, intended_us: u64, outcome: SendOutcome) -> SendRecord {
        SendRecord {
            client_msg_id: id.into(),
            user: UserId(1),
            channel: ChannelId(1),
            gateway,
            intended_us,
            outcome,
        }
    }

    fn slow(seq: u64, gateway: usize, intended_us: u64, took_us: u64, replayed: bool) -> SlowDelivery {
        SlowDelivery {
            seq,
            channel: ChannelId(1),
            sender: UserId(1),
            user: UserId(seq as i64),
            gateway,
            intended_us,
            took_us,
            replayed,
        }
    }

    #[test]
    fn the_slowest_deliveries_are_traced_to_gateways_and_faults() {
        let s = 1_000_000;
        let struck = |kind: &str, at: u64| Struck {
            kind: kind.into(),
            target: "x".into(),
            struck_us: at,
            recovered_us: at + s,
            ..Struck::default()
        };
        let faults =
            [struck("gateway-kill", 100 * s), struck("nats-pause", 200 * s), struck("bridge-kill", 300 * s)];
        let mut deliveries = vec![
            // A stall on gateway index 0 in the pause's slot: only its slowest is listed.
            slow(7, 0, 210 * s, 9 * s, false),
            slow(8, 0, 211 * s, 8_500_000, false),
            slow(9, 0, 212 * s, 8 * s, false),
            // The same message on another gateway is another delay.
            slow(7, 1, 210 * s, 2 * s, false),
            // Before the first strike.
            slow(3, 2, 50 * s, 3 * s, false),
            // One per gateway in the bridge kill's slot; the fifth live entry ends the list.
            slow(30, 0, 310 * s, 1_500_000, false),
            slow(31, 1, 310 * s, 1_400_000, false),
            slow(32, 2, 310 * s, 500_000, false),
            // Due just before the bridge kill, held by it: that fault's, and its gateway's slowest.
            slow(40, 2, 299 * s, 1_450_000, false),
            // Replayed ones are listed apart.
            slow(11, 2, 150 * s, 20 * s, true),
            slow(12, 2, 160 * s, 15 * s, true),
            slow(13, 0, 150 * s, 4 * s, true),
        ];
        deliveries.extend((20..26).map(|seq| slow(seq, 0, 120 * s, 1000 + seq, false)));
        // Seq 7's send was never answered (its gateway died), yet it names the gateway.
        let sends = [send("a", 1, 210 * s, SendOutcome::Unanswered)];
        let traced = slowest(&deliveries, &sends, &faults, 10 * s);
        let summary: Vec<_> = traced.iter().map(|t| (t.seq, t.delivered_by, t.replayed, t.took_ms)).collect();
        assert_eq!(
            summary,
            [
                (7, 1, false, 9000),
                (3, 3, false, 3000),
                (7, 2, false, 2000),
                (30, 1, false, 1500),
                (40, 3, false, 1450),
                (11, 3, true, 20_000),
                (13, 1, true, 4000)
            ]
        );
        assert_eq!(traced[0].sent_via, Some(2));
        assert_eq!(traced[0].during.as_deref(), Some("nats-pause"));
        assert_eq!((traced[0].due_s, traced[0].due_unix_ms), (200.0, 210_000));
        assert_eq!(traced[0].receiver, UserId(7));
        assert_eq!(traced[1].sent_via, None, "no send of the run was due then");
        assert_eq!(traced[1].during, None, "due before the first strike");
        assert_eq!(traced[3].during.as_deref(), Some("bridge-kill"));
        assert_eq!(traced[4].during.as_deref(), Some("bridge-kill"), "due before the strike, held by it");
        assert_eq!(traced[5].during.as_deref(), Some("gateway-kill"));
    }

    #[test]
    fn two_outages_on_one_gateway_are_two_windows() {
        let s = 1_000_000;
        let events = [
            (s, Err(2 * s)),
            (2 * s, Ok(2 * s + 100)),
            (8 * s, Err(8 * s)),
            (9 * s, Err(11 * s)),
            (12 * s, Ok(12 * s + 500_000)),
        ];
        // 1 s → 2.0001 s, then 8 s → 12.5 s: the second, not 1 s → 12.5 s.
        assert_eq!(longest_window(&events, 2 * s), 4_500_000);
        assert_eq!(longest_window(&[(s, Err(3 * s))], s), 2 * s, "no success after: to the last failure");
        assert_eq!(longest_window(&[(s, Ok(s + 1))], s), 0);
        // Users left the gateway after its failure and came back 9 s later: idle, not failing.
        assert_eq!(longest_window(&[(s, Err(2 * s)), (11 * s, Ok(11 * s + 1))], s), s);
        // ... and a failure after the idle stretch opens a window of its own.
        let apart = [(s, Err(2 * s)), (9 * s, Err(10 * s)), (10 * s, Err(11 * s)), (11 * s, Ok(11 * s + 1))];
        assert_eq!(longest_window(&apart, s), 2 * s + 1, "9 s → 11 s, not 1 s → 11 s");
    }

    #[test]
    fn the_archive_must_equal_the_acknowledged_set() {
        let sends = vec![
            send("a", 0, 0, SendOutcome::Acked { seq: 1, at_us: 5 }),
            send("b", 0, 0, SendOutcome::Acked { seq: 2, at_us: 5 }),
            send("c", 0, 0, SendOutcome::Acked { seq: 3, at_us: 5 }),
            send("d", 0, 0, SendOutcome::Refused { code: "unavailable".into(), at_us: 5 }),
            send("e", 0, 0, SendOutcome::Unanswered),
            send("f", 0, 0, SendOutcome::Unanswered),
        ];
        let stored = vec![
            (1, "a".into()),
            (7, "b".into()),
            (4, "d".into()),
            (5, "e".into()),
            (6, "e".into()),
            (9, "z".into()),
        ];
        let archive = compare(&sends, &stored);
        assert_eq!(archive.acked, 3);
        assert_eq!(archive.missing, 1, "c");
        assert_eq!(archive.seq_mismatch, 1, "b");
        assert_eq!(archive.duplicated, 1, "e");
        assert_eq!((archive.unacked_stored, archive.unacked_not_stored), (2, 1), "d and e stored, f not");
        assert_eq!(archive.phantom, 1, "z");
        assert!(!archive.exact());
        let clean = compare(&sends[..1], &[(1, "a".into())]);
        assert!(clean.exact(), "{clean:?}");
    }

    #[test]
    fn a_window_runs_from_the_first_failure_to_the_last_on_one_gateway() {
        let s = 1_000_000;
        let struck = Struck { struck_us: 10 * s, ..Struck::default() };
        let sends = vec![
            // In flight at the strike, answered with an error after it.
            send("a", 0, 10 * s, SendOutcome::Refused { code: "unavailable".into(), at_us: 11 * s }),
            send("b", 0, 12 * s, SendOutcome::Unanswered),
            send("c", 0, 13 * s, SendOutcome::Acked { seq: 1, at_us: 13 * s + 1000 }),
            // Another gateway: one stall.
            send("d", 1, 11 * s, SendOutcome::Acked { seq: 2, at_us: 13 * s }),
            // Before the slot, and after it.
            send("e", 0, 2 * s, SendOutcome::Unanswered),
            send("f", 0, 40 * s, SendOutcome::Unanswered),
        ];
        let reconnects = vec![
            ReconnectRecord {
                user: UserId(1),
                from_gateway: 0,
                lost_us: 10 * s,
                resumed_us: Some(10 * s + 300_000),
            },
            ReconnectRecord { user: UserId(2), from_gateway: 0, lost_us: 11 * s, resumed_us: Some(14 * s) },
        ];
        let impact = impact(&struck, 30 * s, &sends, &reconnects, Duration::from_secs(1));
        assert_eq!(impact.in_flight, 1);
        assert_eq!((impact.refused, impact.unanswered, impact.stalled), (1, 1, 1));
        // Gateway 1: from a's due time (10 s) to c's ack (13.001 s).
        assert_eq!(impact.unavailable_gateway, Some(1));
        assert_eq!(impact.unavailable_ms, 3_001);
        assert_eq!(
            (impact.reconnects, impact.longest_reconnect_ms, impact.all_resumed_ms),
            (2, 3_000, 4_000)
        );
    }

    #[test]
    fn a_fault_that_prepares_is_charged_from_its_first_action() {
        let s = 1_000_000;
        // The leader is moved from 5 s, the node struck at 10 s.
        let struck = Struck { began_us: 5 * s, struck_us: 10 * s, ..Struck::default() };
        assert_eq!(struck.slot_start(), 5 * s);
        let sends = vec![
            // Refused during the move: this fault's, not the one before.
            send("a", 0, 6 * s, SendOutcome::Refused { code: "unavailable".into(), at_us: 6 * s + 1000 }),
            send("b", 0, 7 * s, SendOutcome::Acked { seq: 1, at_us: 7 * s + 1000 }),
            // In flight at the strike.
            send("c", 0, 10 * s, SendOutcome::Acked { seq: 2, at_us: 10 * s + 1000 }),
            // Before the move.
            send("d", 0, 2 * s, SendOutcome::Refused { code: "unavailable".into(), at_us: 2 * s + 1000 }),
        ];
        let impact = impact(&struck, 30 * s, &sends, &[], Duration::from_secs(1));
        assert_eq!(impact.refused, 1, "a only");
        assert_eq!(impact.in_flight, 1, "c, counted at the strike");
        assert_eq!(impact.unavailable_ms, 1_001, "from a's due time to b's ack");
        // A fault without preparation starts at its strike.
        assert_eq!(Struck { struck_us: 10 * s, ..Struck::default() }.slot_start(), 10 * s);
    }
}
