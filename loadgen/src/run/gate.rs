//! The SLO gate of `loadgen run` and `capacity`: thresholds from flags or a thresholds file
//! (JSON, documented in `docs/loadgen.md`), and the check of a report against them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::series::Series;
use crate::scenario::humantime_serde;

/// Thresholds `gate` checks. Lost, duplicated, out-of-order and unexpected deliveries are
/// always failures: they are semantics, not budgets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gate {
    #[serde(with = "humantime_serde")]
    pub max_delivery_p99: Duration,
    #[serde(with = "humantime_serde")]
    pub max_presence_p99: Duration,
    /// Largest share of requests (sends, reads, history, hellos) that may fail.
    pub max_error_rate: f64,
    /// Further p99 ceilings by metric (any [`Series`] name), e.g. `"send_ack": "300ms"`.
    #[serde(with = "duration_map")]
    pub max_p99: BTreeMap<String, Duration>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            max_delivery_p99: Duration::from_millis(500),
            max_presence_p99: Duration::from_secs(10),
            max_error_rate: 0.001,
            max_p99: BTreeMap::new(),
        }
    }
}

/// What the gate found.
#[derive(Clone, Debug, Serialize)]
pub struct GateResult {
    pub thresholds: Gate,
    pub passed: bool,
    pub failures: Vec<String>,
}

impl Gate {
    /// Loads a thresholds file; fields it leaves out keep their defaults. Errors name the file
    /// and the field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read thresholds file {}: {e}", path.display()))?;
        let mut deserializer = serde_json::Deserializer::from_str(&text);
        let gate: Self = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            anyhow::anyhow!("thresholds file {}: field `{}`: {}", path.display(), e.path(), e.inner())
        })?;
        gate.validate().map_err(|e| anyhow::anyhow!("thresholds file {}: {e}", path.display()))?;
        Ok(gate)
    }

    /// Checks ranges and metric names; the error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.validate_as(|field| format!("`{field}`"))
    }

    /// [`Gate::validate`], naming a field as `name` says (a file's field, or the flag that set it).
    pub fn validate_as(&self, name: impl Fn(&str) -> String) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.max_error_rate),
            "{} must be between 0 and 1, got {}",
            name("max_error_rate"),
            self.max_error_rate
        );
        for (field, value) in
            [("max_delivery_p99", self.max_delivery_p99), ("max_presence_p99", self.max_presence_p99)]
        {
            anyhow::ensure!(!value.is_zero(), "{} must be positive", name(field));
        }
        for (metric, value) in &self.max_p99 {
            anyhow::ensure!(
                Series::named(metric).is_some(),
                "`max_p99` names unknown metric `{metric}`; metrics: {}",
                Series::names().join(", ")
            );
            anyhow::ensure!(!value.is_zero(), "`max_p99.{metric}` must be positive");
        }
        Ok(())
    }
}

/// `{"metric": "300ms"}` maps.
mod duration_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, v)| (k.clone(), humantime::format_duration(*v).to_string()))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                humantime::parse_duration(&v)
                    .map(|d| (k.clone(), d))
                    .map_err(|e| serde::de::Error::custom(format!("`{k}`: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thresholds_file_overrides_defaults_and_errors_name_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.json");
        std::fs::write(&path, r#"{"max_delivery_p99":"250ms","max_p99":{"send_ack":"300ms"}}"#)
            .expect("write");
        let gate = Gate::load(&path).expect("loads");
        assert_eq!(gate.max_delivery_p99, Duration::from_millis(250));
        assert_eq!(gate.max_presence_p99, Gate::default().max_presence_p99);
        assert_eq!(gate.max_p99.get("send_ack"), Some(&Duration::from_millis(300)));
        for (text, named) in [
            (r#"{"max_delivery_p99":"soon"}"#, "max_delivery_p99"),
            (r#"{"max_error_rate":2}"#, "max_error_rate"),
            (r#"{"max_p99":{"send_ak":"1s"}}"#, "send_ak"),
            (r#"{"max_p99":{"typing":"fast"}}"#, "typing"),
            (r#"{"max_presence_p99":"0s"}"#, "max_presence_p99"),
            (r#"{"max_deliver_p99":"1s"}"#, "max_deliver_p99"),
            ("[", "t.json"),
        ] {
            std::fs::write(&path, text).expect("write");
            let error = Gate::load(&path).expect_err("invalid").to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
        let missing = Gate::load(&dir.path().join("none.json")).expect_err("missing").to_string();
        assert!(missing.contains("none.json"), "{missing}");
    }
}
