//! The traffic model of `loadgen run`: presets and scenario files (JSON, documented in
//! `docs/loadgen.md`). Rates are per connected user and derive from the workload in docs/design.md §2:
//! 5 M messages/day is ≈ 110/s over business hours and ≈ 300/s at the peak, from 75,000
//! connected users: 0.004 messages/s per connected user at the peak (`load_factor` 1).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Messages per second of one connected user at the design peak.
pub const PEAK_MESSAGES_PER_USER: f64 = 300.0 / 75_000.0;

/// One run's traffic. Every field has a default (the `smoke` preset), so a scenario file need
/// only name what it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Simulated users, each one connection (seeded as orgs of `org_size`).
    pub users: usize,
    pub org_size: usize,
    /// Measured part of the run, after the ramp-up.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Connections open evenly over this long (with jitter).
    #[serde(with = "humantime_serde")]
    pub ramp_up: Duration,
    /// Ceiling on new connections per second during the ramp.
    pub connect_rate: f64,
    /// Multiplies the per-user message rate (1.0 = the design peak).
    pub load_factor: f64,
    /// Share of messages preceded by a `typing`.
    pub typing_share: f64,
    /// Per user and second: read markers, presence changes, history page loads, reconnects.
    pub reads_per_user_second: f64,
    pub presence_changes_per_user_second: f64,
    pub history_loads_per_user_second: f64,
    pub reconnects_per_user_second: f64,
    /// Users who log in with their password through the api service before connecting (the
    /// rest use operator-minted tokens): the run's `login` latency. Each costs an argon2id
    /// verification, so it is a sample, not everyone. More than `users` means all of them.
    pub api_logins: usize,
    /// Seed of every random choice: the same seed and scenario replay the same schedule.
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "smoke".into(),
            users: 2_000,
            org_size: 100,
            duration: Duration::from_secs(45),
            ramp_up: Duration::from_secs(10),
            connect_rate: 2_000.0,
            // 2,000 users at the design peak send 8 msg/s: too few to see a tail. ×8 ≈ 64 msg/s.
            load_factor: 8.0,
            typing_share: 0.8,
            reads_per_user_second: 1.0 / 60.0,
            presence_changes_per_user_second: 1.0 / 120.0,
            history_loads_per_user_second: 1.0 / 120.0,
            reconnects_per_user_second: 1.0 / 300.0,
            api_logins: 100,
            seed: 1,
        }
    }
}

impl Scenario {
    /// A named preset.
    pub fn preset(name: &str) -> Option<Self> {
        let smoke = Self::default();
        Some(match name {
            "smoke" => smoke,
            "threadspace-75k" => Self {
                name: name.into(),
                // The docs/design.md §2 population is 5,000 orgs × 50 users with 30 % online, so an org
                // has ~15 members online on average. Every simulated user is online, so orgs of
                // 50 fully online are already 3× the design's presence and channel fanout.
                // (Orgs of 250 made every presence change 250 frames: 5× this preset's traffic.)
                users: 75_000,
                org_size: 50,
                duration: Duration::from_secs(300),
                // 250 hellos/s: each is a directory query, and on this 2-core box 625/s
                // starved Postgres (and with it every hello).
                ramp_up: Duration::from_secs(300),
                connect_rate: 250.0,
                load_factor: 1.0,
                reads_per_user_second: 1.0 / 120.0,
                presence_changes_per_user_second: 1.0 / 300.0,
                history_loads_per_user_second: 1.0 / 300.0,
                reconnects_per_user_second: 1.0 / 1_800.0,
                ..smoke
            },
            "burst" => Self {
                name: name.into(),
                users: 5_000,
                org_size: 250,
                duration: Duration::from_secs(60),
                ramp_up: Duration::from_secs(15),
                // The whole design peak (300 msg/s) from 5,000 users, then some: an all-hands
                // announcement storm concentrated on few connections.
                load_factor: 20.0,
                ..smoke
            },
            "drill" => Self {
                name: name.into(),
                // Steady traffic for `loadgen drill` on the HA stack: ~48 msg/s from 300 users,
                // and no scripted reconnects, so every reconnect is a fault's.
                users: 300,
                org_size: 50,
                duration: Duration::from_secs(60),
                ramp_up: Duration::from_secs(5),
                load_factor: 40.0,
                reconnects_per_user_second: 0.0,
                api_logins: 0,
                ..smoke
            },
            _ => return None,
        })
    }

    pub const PRESETS: [&'static str; 4] = ["smoke", "threadspace-75k", "burst", "drill"];

    /// Loads a scenario file: a preset named by `base` (default `smoke`) with the file's fields
    /// on top.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read scenario file {}: {e}", path.display()))?;
        let mut value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("scenario file {} is not JSON: {e}", path.display()))?;
        let base = match value.as_object_mut().and_then(|o| o.remove("base")) {
            None => "smoke".to_owned(),
            Some(serde_json::Value::String(base)) => base,
            Some(_) => anyhow::bail!("scenario file {}: `base` must be a preset name", path.display()),
        };
        let mut merged = serde_json::to_value(
            Self::preset(&base).ok_or_else(|| anyhow::anyhow!("unknown base preset `{base}`"))?,
        )?;
        let fields = value
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("scenario file {} must hold a JSON object", path.display()))?;
        for (key, field) in fields {
            merged[key] = field.clone();
        }
        let scenario: Self = serde_path_to_error::deserialize(merged).map_err(|e| {
            anyhow::anyhow!("scenario file {}: field `{}`: {}", path.display(), e.path(), e.inner())
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((2..=200_000).contains(&self.users), "`users` must be between 2 and 200000");
        anyhow::ensure!((2..=500).contains(&self.org_size), "`org_size` must be between 2 and 500");
        anyhow::ensure!(!self.duration.is_zero(), "`duration` must be positive");
        anyhow::ensure!(
            self.connect_rate > 0.0 && self.connect_rate.is_finite(),
            "`connect_rate` must be positive"
        );
        anyhow::ensure!(
            self.load_factor > 0.0 && self.load_factor <= 100_000.0,
            "`load_factor` must be in (0, 100000]"
        );
        anyhow::ensure!((0.0..=1.0).contains(&self.typing_share), "`typing_share` must be between 0 and 1");
        for (name, rate) in [
            ("reads_per_user_second", self.reads_per_user_second),
            ("presence_changes_per_user_second", self.presence_changes_per_user_second),
            ("history_loads_per_user_second", self.history_loads_per_user_second),
            ("reconnects_per_user_second", self.reconnects_per_user_second),
        ] {
            anyhow::ensure!((0.0..=10.0).contains(&rate), "`{name}` must be between 0 and 10");
        }
        Ok(())
    }

    /// The ramp: `ramp_up`, or longer if `connect_rate` needs it.
    pub fn ramp(&self) -> Duration {
        self.ramp_up.max(Duration::from_secs_f64(self.users as f64 / self.connect_rate))
    }

    /// Messages per second per connected user.
    pub fn messages_per_user_second(&self) -> f64 {
        PEAK_MESSAGES_PER_USER * self.load_factor
    }

    /// Messages per second over all users.
    pub fn message_rate(&self) -> f64 {
        self.messages_per_user_second() * self.users as f64
    }
}

/// `humantime` (de)serialisation of durations in scenario files ("45s", "5m").
pub(crate) mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_sized_like_the_design() {
        for name in Scenario::PRESETS {
            let scenario = Scenario::preset(name).expect("preset exists");
            scenario.validate().expect("preset validates");
        }
        let full = Scenario::preset("threadspace-75k").expect("preset");
        // 75,000 connected users at the design peak: 300 messages/s.
        assert!((299.0..301.0).contains(&full.message_rate()), "{}", full.message_rate());
        assert!(Scenario::preset("nope").is_none());
    }

    #[test]
    fn the_shipped_scenario_files_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).expect("scenarios directory") {
            let path = entry.expect("entry").path();
            let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(path.to_string_lossy().contains(&scenario.name), "{} names itself", path.display());
            loaded += 1;
        }
        assert!(loaded >= 1);
    }

    #[test]
    fn a_file_overrides_its_base_and_errors_name_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        std::fs::write(&path, r#"{"base":"burst","users":300,"duration":"20s"}"#).expect("write");
        let scenario = Scenario::load(&path).expect("loads");
        assert_eq!((scenario.users, scenario.duration), (300, Duration::from_secs(20)));
        assert_eq!(scenario.load_factor, Scenario::preset("burst").expect("preset").load_factor);
        for (text, named) in [
            (r#"{"users":1}"#, "users"),
            (r#"{"typing_share":2}"#, "typing_share"),
            (r#"{"duration":"soon"}"#, "duration"),
            (r#"{"userz":5}"#, "userz"),
            (r#"{"base":"huge"}"#, "huge"),
            ("[1]", "object"),
        ] {
            std::fs::write(&path, text).expect("write");
            let error = Scenario::load(&path).expect_err("invalid").to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
    }
}
