//! What one simulated user does and when: drawn from the scenario's Poisson processes (seeded
//! by the scenario's seed and the user's index), or replayed from a recording of an earlier run
//! (`loadgen run --record FILE`, then `--replay FILE`; format in `docs/loadgen.md`).
//!
//! A recording holds, per user, its connect time and every action it actually took, resolved
//! (the channel of each message, read, history load; whether a typing preceded a message), at
//! its offset from the start of the ramp. Replaying plays exactly those; what the system
//! answers (seqs, latencies, deliveries) is measured anew.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use threadspace_protocol::frames::{ChannelInfo, ChannelKind};
use threadspace_protocol::ChannelId;
use tokio::time::Instant;

use crate::checker::Inbox;
use crate::scenario::Scenario;

/// One thing a simulated user does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A message to `channel`, preceded by a `typing` if `typing`.
    Send { channel: ChannelId, typing: bool },
    /// A read marker at the newest message received in `channel`.
    Read { channel: ChannelId },
    /// Go idle (`true`) or back online.
    Presence { idle: bool },
    /// Load the newest history page of `channel`.
    History { channel: ChannelId },
    /// Close the connection and resume on the next gateway.
    Reconnect,
}

/// An action `at_ms` after the ramp began.
pub type Timed = (u64, Action);

/// One user's line of a recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Global index of the user in the run.
    pub user: usize,
    /// Its user id, checked on replay (the same index must be the same user).
    pub id: i64,
    /// When its first connection was due, ms after the ramp began.
    pub connect_ms: u64,
    pub actions: Vec<Timed>,
}

/// First line of a recording.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Header {
    recording: u32,
    scenario: Scenario,
    users: usize,
}

const FORMAT: u32 = 1;

/// Writes a recording: a header line, then one line per user (JSON Lines).
pub fn write_recording(path: &Path, scenario: &Scenario, users: &[UserRecord]) -> anyhow::Result<()> {
    let error = |e: std::io::Error| anyhow::anyhow!("cannot write the recording {}: {e}", path.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(error)?);
    let header = Header { recording: FORMAT, scenario: scenario.clone(), users: users.len() };
    writeln!(out, "{}", serde_json::to_string(&header)?).map_err(error)?;
    for user in users {
        writeln!(out, "{}", serde_json::to_string(user)?).map_err(error)?;
    }
    out.flush().map_err(error)
}

/// Reads a recording: its scenario and every user's record, by index. Errors name the file
/// and the line.
pub fn read_recording(path: &Path) -> anyhow::Result<(Scenario, Vec<UserRecord>)> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read the recording {}: {e}", path.display()))?;
    let mut lines = BufReader::new(file).lines();
    let at = |n: usize| format!("recording {} line {n}", path.display());
    let first = lines
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}: empty file", at(1)))?
        .map_err(|e| anyhow::anyhow!("{}: {e}", at(1)))?;
    let header: Header = serde_json::from_str(&first)
        .map_err(|e| anyhow::anyhow!("{}: not a loadgen recording header: {e}", at(1)))?;
    anyhow::ensure!(
        header.recording == FORMAT,
        "{}: recording format {} (this loadgen reads {FORMAT})",
        at(1),
        header.recording
    );
    header.scenario.validate().map_err(|e| anyhow::anyhow!("{}: {e}", at(1)))?;
    let mut users: Vec<Option<UserRecord>> = vec![None; header.users];
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| anyhow::anyhow!("{}: {e}", at(n + 2)))?;
        let record: UserRecord =
            serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("{}: {e}", at(n + 2)))?;
        let slot = users.get_mut(record.user).ok_or_else(|| {
            anyhow::anyhow!("{}: user {} is outside the {} users", at(n + 2), record.user, header.users)
        })?;
        anyhow::ensure!(slot.is_none(), "{}: user {} appears twice", at(n + 2), record.user);
        anyhow::ensure!(
            record.actions.windows(2).all(|w| w[0].0 <= w[1].0),
            "{}: user {}'s actions are not in time order",
            at(n + 2),
            record.user
        );
        *slot = Some(record);
    }
    let users = users
        .into_iter()
        .enumerate()
        .map(|(i, u)| u.ok_or_else(|| anyhow::anyhow!("recording {}: user {i} is missing", path.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        users.len() == header.scenario.users,
        "recording {}: {} users for a scenario of {}",
        path.display(),
        users.len(),
        header.scenario.users
    );
    Ok((header.scenario, users))
}

/// Where a user's actions come from.
pub enum Script {
    Random(Box<RandomScript>),
    Recorded { t0: Instant, actions: VecDeque<Timed> },
}

/// The scenario's independent Poisson processes for one user.
pub struct RandomScript {
    rng: StdRng,
    /// Next due time of messages, reads, presence changes, history loads, reconnects.
    next: [Instant; 5],
    rates: [f64; 5],
    typing_share: f64,
    idle: bool,
}

impl Script {
    /// The random script of user `index`, starting `now`.
    pub fn random(scenario: &Scenario, index: usize, now: Instant) -> Self {
        let mut rng =
            StdRng::seed_from_u64(scenario.seed.wrapping_mul(0x9e37_79b9).wrapping_add(index as u64));
        let rates = [
            scenario.messages_per_user_second(),
            scenario.reads_per_user_second,
            scenario.presence_changes_per_user_second,
            scenario.history_loads_per_user_second,
            scenario.reconnects_per_user_second,
        ];
        let next = rates.map(|rate| now + next_after(&mut rng, rate));
        Self::Random(Box::new(RandomScript {
            rng,
            next,
            rates,
            typing_share: scenario.typing_share,
            idle: false,
        }))
    }

    /// When the next action is due (`None`: nothing more to do).
    pub fn due(&self) -> Option<Instant> {
        match self {
            Self::Random(r) => r.next.iter().min().copied(),
            Self::Recorded { t0, actions } => actions.front().map(|(ms, _)| *t0 + Duration::from_millis(*ms)),
        }
    }

    /// Takes the due action, resolving its random choices against the user's channels and
    /// inbox: `(intended time, action)`, or `None` when it resolves to nothing (no channel to
    /// pick, nothing received to mark read).
    pub fn take(&mut self, channels: &[ChannelInfo], inbox: &Inbox) -> Option<(Instant, Action)> {
        match self {
            Self::Recorded { t0, actions } => {
                let (ms, action) = actions.pop_front()?;
                let at = *t0 + Duration::from_millis(ms);
                // A recorded read needs something received in that channel in this run too.
                if let Action::Read { channel } = action {
                    inbox.latest_in(channel)?;
                }
                Some((at, action))
            }
            Self::Random(r) => {
                let kind = (0..5).min_by_key(|&k| r.next[k]).expect("five processes");
                let at = r.next[kind];
                r.next[kind] += next_after(&mut r.rng, r.rates[kind]);
                let action = match kind {
                    0 => {
                        let channel = pick_channel(&mut r.rng, channels)?;
                        Action::Send { channel, typing: r.rng.random_bool(r.typing_share) }
                    }
                    1 => Action::Read { channel: inbox.latest_in_random_channel(&mut r.rng)?.0 },
                    2 => {
                        r.idle = !r.idle;
                        Action::Presence { idle: r.idle }
                    }
                    3 => Action::History { channel: pick_channel(&mut r.rng, channels)? },
                    _ => Action::Reconnect,
                };
                Some((at, action))
            }
        }
    }

    /// A reconnect makes a user online again.
    pub fn reconnected(&mut self) {
        if let Self::Random(r) = self {
            r.idle = false;
        }
    }
}

/// Exponential inter-arrival time for `rate` events per second (never, for 0).
fn next_after(rng: &mut StdRng, rate: f64) -> Duration {
    if rate <= 0.0 {
        return Duration::from_secs(1 << 30);
    }
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    Duration::from_secs_f64(-u.ln() / rate)
}

/// Channel choice: DMs and group DMs a third of the time, else any channel.
fn pick_channel(rng: &mut StdRng, channels: &[ChannelInfo]) -> Option<ChannelId> {
    if channels.is_empty() {
        return None;
    }
    let direct: Vec<&ChannelInfo> =
        channels.iter().filter(|c| matches!(c.kind, ChannelKind::Dm | ChannelKind::GroupDm)).collect();
    if !direct.is_empty() && rng.random_bool(1.0 / 3.0) {
        return Some(direct[rng.random_range(0..direct.len())].id);
    }
    Some(channels[rng.random_range(0..channels.len())].id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: usize, actions: Vec<Timed>) -> UserRecord {
        UserRecord { user, id: 100 + user as i64, connect_ms: 10 * user as u64, actions }
    }

    #[test]
    fn a_recording_reads_back_what_was_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run.jsonl");
        let scenario = Scenario { users: 2, ..Scenario::default() };
        let users = vec![
            record(
                0,
                vec![(5, Action::Send { channel: ChannelId(3), typing: true }), (9, Action::Reconnect)],
            ),
            record(
                1,
                vec![(7, Action::Presence { idle: true }), (8, Action::History { channel: ChannelId(4) })],
            ),
        ];
        write_recording(&path, &scenario, &users).expect("writes");
        let (read_scenario, read_users) = read_recording(&path).expect("reads");
        assert_eq!(read_scenario, scenario);
        assert_eq!(read_users, users);
    }

    #[test]
    fn a_bad_recording_is_refused_naming_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run.jsonl");
        let header = serde_json::to_string(&Header {
            recording: FORMAT,
            scenario: Scenario { users: 2, ..Scenario::default() },
            users: 2,
        })
        .expect("json");
        let user =
            |u: usize, actions: &str| format!(r#"{{"user":{u},"id":1,"connect_ms":0,"actions":{actions}}}"#);
        for (text, named) in [
            (String::new(), "line 1: empty".to_owned()),
            ("{}".to_owned(), "line 1".to_owned()),
            (
                format!("{header}\n{}\n{}", user(0, "[]"), user(0, "[]")),
                "line 3: user 0 appears twice".to_owned(),
            ),
            (
                format!("{header}\n{}\n{}", user(0, "[]"), user(5, "[]")),
                "line 3: user 5 is outside".to_owned(),
            ),
            (format!("{header}\n{}", user(0, "[]")), "user 1 is missing".to_owned()),
            (
                format!("{header}\n{}\n{}", user(0, r#"[[9,"reconnect"],[3,"reconnect"]]"#), user(1, "[]")),
                "not in time order".to_owned(),
            ),
            (format!("{header}\n{}\n{}", user(0, r#"[[1,{"fly":{}}]]"#), user(1, "[]")), "line 2".to_owned()),
        ] {
            std::fs::write(&path, text.as_bytes()).expect("write");
            let error = read_recording(&path).expect_err("invalid").to_string();
            assert!(error.contains(&named), "{text}: {error}");
        }
    }

    #[test]
    fn the_random_script_is_seeded_and_recorded_scripts_replay_in_order() {
        let scenario = Scenario { load_factor: 2_000.0, ..Scenario::default() };
        let now = Instant::now();
        let channels = vec![ChannelInfo {
            id: ChannelId(1),
            kind: ChannelKind::Public,
            name: Some("general".into()),
            last_read: 0,
        }];
        let inbox = Inbox::new(0, [ChannelId(1)]);
        let draw = || {
            let mut script = Script::random(&scenario, 7, now);
            (0..20).filter_map(|_| script.take(&channels, &inbox)).collect::<Vec<_>>()
        };
        let first = draw();
        assert_eq!(first, draw(), "same seed and index, same actions");
        assert!(first.iter().any(|(_, a)| matches!(a, Action::Send { channel: ChannelId(1), .. })));
        assert!(first.windows(2).all(|w| w[0].0 <= w[1].0), "due times ascend");
        // Nothing received yet: no read is ever drawn.
        assert!(!first.iter().any(|(_, a)| matches!(a, Action::Read { .. })));

        let mut recorded = Script::Recorded {
            t0: now,
            actions: VecDeque::from(vec![
                (5, Action::Read { channel: ChannelId(1) }),
                (6, Action::Reconnect),
            ]),
        };
        assert_eq!(recorded.due(), Some(now + Duration::from_millis(5)));
        assert_eq!(recorded.take(&channels, &inbox), None, "a read of nothing received is skipped");
        assert_eq!(
            recorded.take(&channels, &inbox),
            Some((now + Duration::from_millis(6), Action::Reconnect))
        );
        assert_eq!(recorded.due(), None);
    }
}
