//! The latencies a run measures, by name ([`Series`]); a value per series ([`PerSeries`]); the
//! buckets processes exchange histograms as; and the histograms one process's simulated users
//! record into ([`Recorder`]).

use std::ops::{Index, IndexMut};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::latency_histogram;

/// One latency a run measures. Reports, HDR logs, Prometheus labels and thresholds files call
/// it by its [`name`](Series::name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Series {
    /// Opening the WebSocket.
    Connect,
    /// `hello` → `welcome`.
    HelloWelcome,
    /// A send, from when it was due, → its ack.
    SendAck,
    /// A send, from when it was due, → each delivery of it.
    SendDeliver,
    /// A presence change → each other member of the process seeing it.
    Presence,
    /// Typing → each other member of the process seeing it.
    Typing,
    /// A read → its ack.
    ReadAck,
    /// A history page over REST.
    HistoryPage,
    /// A reconnect (all its attempts) → `resumed`.
    ReconnectResumed,
}

impl Series {
    /// How many there are.
    pub const COUNT: usize = 9;

    /// Every series, in the order reports and logs list them.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Connect,
        Self::HelloWelcome,
        Self::SendAck,
        Self::SendDeliver,
        Self::Presence,
        Self::Typing,
        Self::ReadAck,
        Self::HistoryPage,
        Self::ReconnectResumed,
    ];

    /// The name reports, HDR logs, Prometheus labels and thresholds files use.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::HelloWelcome => "hello_welcome",
            Self::SendAck => "send_ack",
            Self::SendDeliver => "send_deliver",
            Self::Presence => "presence",
            Self::Typing => "typing",
            Self::ReadAck => "read_ack",
            Self::HistoryPage => "history_page",
            Self::ReconnectResumed => "reconnect_resumed",
        }
    }

    /// The series called `name`, if any.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|series| series.name() == name)
    }

    /// Every series' name, in [`Series::ALL`] order.
    pub fn names() -> [&'static str; Self::COUNT] {
        Self::ALL.map(Self::name)
    }

    /// Its slot in a [`PerSeries`]: the declaration order, which [`Series::ALL`] follows.
    const fn slot(self) -> usize {
        self as usize
    }
}

/// One value for each [`Series`] (a histogram, its buckets, a lock around them), indexed by
/// series. Serialized as a list in [`Series::ALL`] order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PerSeries<T>([T; Series::COUNT]);

impl<T> PerSeries<T> {
    /// `f` of every series.
    pub fn from_fn(f: impl FnMut(Series) -> T) -> Self {
        Self(Series::ALL.map(f))
    }

    /// Every series with its value, in [`Series::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Series, &T)> {
        Series::ALL.into_iter().zip(&self.0)
    }

    /// `f` of every value.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> PerSeries<U> {
        PerSeries::from_fn(|series| f(&self[series]))
    }
}

impl<T> Index<Series> for PerSeries<T> {
    type Output = T;

    fn index(&self, series: Series) -> &T {
        &self.0[series.slot()]
    }
}

impl<T> IndexMut<Series> for PerSeries<T> {
    fn index_mut(&mut self, series: Series) -> &mut T {
        &mut self.0[series.slot()]
    }
}

/// Every recorded `(value µs, count)` of a histogram: how processes hand histograms to each
/// other (an agent's part, a progress tick).
pub type Buckets = Vec<(u64, u64)>;

/// The [`Buckets`] of a histogram.
pub(crate) fn buckets(h: &Histogram<u64>) -> Buckets {
    h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

/// A histogram of [`Buckets`] from one or several processes.
pub(crate) fn from_buckets<'a>(parts: impl IntoIterator<Item = &'a Buckets>) -> Histogram<u64> {
    let mut h = latency_histogram();
    for part in parts {
        for &(value, count) in part {
            let _ = h.record_n(value.max(1), count);
        }
    }
    h
}

/// p99 of [`Buckets`], in ms (0 without samples).
/// The largest value of a series' buckets, in ms.
pub(crate) fn max_ms(buckets: &Buckets) -> f64 {
    from_buckets([buckets]).max() as f64 / 1000.0
}

pub(crate) fn p99_ms(buckets: &Buckets) -> f64 {
    from_buckets([buckets]).value_at_quantile(0.99) as f64 / 1000.0
}

/// The histograms one process's simulated users record into: per series, the whole run and the
/// current progress interval.
pub(crate) struct Recorder(PerSeries<Mutex<(Histogram<u64>, Histogram<u64>)>>);

impl Recorder {
    pub(crate) fn new() -> Self {
        Self(PerSeries::from_fn(|_| Mutex::new((latency_histogram(), latency_histogram()))))
    }

    pub(crate) fn record(&self, series: Series, micros: u64) {
        let mut h = self.0[series].lock().expect("histogram lock");
        let _ = h.0.record(micros.max(1));
        let _ = h.1.record(micros.max(1));
    }

    /// Ends the current interval: every series' samples since the last call.
    pub(crate) fn take_interval(&self) -> PerSeries<Buckets> {
        self.0.map(|h| {
            let mut h = h.lock().expect("histogram lock");
            let buckets = buckets(&h.1);
            h.1.reset();
            buckets
        })
    }

    /// Every series' samples over the whole run.
    pub(crate) fn whole_run(&self) -> PerSeries<Buckets> {
        self.0.map(|h| buckets(&h.lock().expect("histogram lock").0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keep_their_published_names_and_order() {
        // Reports, HDR logs, Prometheus labels and thresholds files name series so: renaming or
        // reordering one breaks their readers.
        assert_eq!(
            Series::names(),
            [
                "connect",
                "hello_welcome",
                "send_ack",
                "send_deliver",
                "presence",
                "typing",
                "read_ack",
                "history_page",
                "reconnect_resumed",
            ]
        );
        for (slot, series) in Series::ALL.into_iter().enumerate() {
            assert_eq!(series.slot(), slot, "{series:?}");
            assert_eq!(Series::named(series.name()), Some(series));
        }
        assert_eq!(Series::named("send_ak"), None);
    }

    #[test]
    fn per_series_values_serialize_as_a_list_in_order() {
        let mut values = PerSeries::from_fn(|series| vec![(series.slot() as u64, 1)]);
        values[Series::Typing].push((7, 2));
        let json = serde_json::to_string(&values).expect("serializes");
        assert!(json.starts_with("[[[0,1]],[[1,1]],"), "{json}");
        let back: PerSeries<Buckets> = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, values);
        assert_eq!(back[Series::Typing], vec![(5, 1), (7, 2)]);
    }

    #[test]
    fn the_recorder_keeps_the_whole_run_and_resets_the_interval() {
        let recorder = Recorder::new();
        recorder.record(Series::SendDeliver, 2_000);
        recorder.record(Series::SendDeliver, 0);
        let interval = recorder.take_interval();
        assert_eq!(interval[Series::SendDeliver], vec![(1, 1), (2_000, 1)]);
        assert!(interval[Series::SendAck].is_empty());
        recorder.record(Series::SendAck, 5);
        let next = recorder.take_interval();
        assert!(next[Series::SendDeliver].is_empty());
        assert_eq!(next[Series::SendAck], vec![(5, 1)]);
        let whole = recorder.whole_run();
        assert_eq!(whole[Series::SendDeliver].iter().map(|b| b.1).sum::<u64>(), 2);
        assert!((p99_ms(&whole[Series::SendDeliver]) - 2.0).abs() < 0.01);
    }
}
