//! Every metric the bridge emits, declared in one place. Labels: `sink` (`archive` or
//! `search`), `partition` (a stream partition number, bounded by `--partitions`), `reason` and
//! `kind` (fixed sets below).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

use threadspace_store::messages::Sink;

/// Label `partition`.
pub(crate) const ROWS_WRITTEN: &str = "threadspace_bridge_rows_written_total";
/// Rows of a batch that already existed (redeliveries after a lost ack or a crash).
pub(crate) const ROWS_EXISTING: &str = "threadspace_bridge_rows_existing_total";
pub(crate) const BATCHES: &str = "threadspace_bridge_batches_total";
pub(crate) const BATCH_ROWS: &str = "threadspace_bridge_batch_rows";
/// Insert + checkpoint + commit of one batch.
pub(crate) const COMMIT_DURATION: &str = "threadspace_bridge_commit_duration_seconds";
/// JetStream stored time → Postgres commit, per row.
pub(crate) const STORED_TO_COMMITTED: &str = "threadspace_bridge_stored_to_committed_seconds";
/// Label `partition`: messages the partition's consumer has not had acked yet.
pub(crate) const LAG_MESSAGES: &str = "threadspace_bridge_lag_messages";
/// Label `partition`: age of the oldest message not yet committed (0 when caught up).
pub(crate) const LAG_SECONDS: &str = "threadspace_bridge_lag_seconds";
/// Label `kind`: `connection` (connection dropped), `retryable`, `partition`.
pub(crate) const WRITE_ERRORS: &str = "threadspace_bridge_write_errors_total";
/// Label `reason`: `undecodable`, `refused`, `max_deliveries`.
pub(crate) const DEAD_LETTERS: &str = "threadspace_bridge_dead_letters_total";
/// Durable consumers created (first start, or recreated after deletion).
pub(crate) const CONSUMERS_CREATED: &str = "threadspace_bridge_consumers_created_total";
/// Label `partition`: the partition's consumer loop failed and is being reopened.
pub(crate) const CONSUMER_FAILURES: &str = "threadspace_bridge_consumer_failures_total";
pub(crate) const READY: &str = "threadspace_bridge_ready";
/// The stream's partition count (`--partitions`): with the `LAG_SECONDS` series of the live
/// bridges, it tells whether every partition has a live writer (the archive-lag alert).
pub(crate) const PARTITIONS: &str = "threadspace_bridge_partitions";

/// Registers descriptions so `/metrics` documents itself.
pub(crate) fn describe() {
    describe_counter!(ROWS_WRITTEN, "Rows newly inserted into messages");
    describe_counter!(ROWS_EXISTING, "Rows of committed batches that already existed (redeliveries)");
    describe_counter!(BATCHES, "Batches committed");
    describe_histogram!(BATCH_ROWS, "Rows per committed batch");
    describe_histogram!(COMMIT_DURATION, Unit::Seconds, "Insert, checkpoint and commit of one batch");
    describe_histogram!(
        STORED_TO_COMMITTED,
        Unit::Seconds,
        "JetStream stored time to Postgres commit, per row"
    );
    describe_gauge!(LAG_MESSAGES, "Messages of the partition not yet acked by the bridge");
    describe_gauge!(LAG_SECONDS, Unit::Seconds, "Age of the partition's oldest uncommitted message");
    describe_counter!(WRITE_ERRORS, "Failed batch writes (retried), by kind");
    describe_counter!(DEAD_LETTERS, "Messages moved to the dead-letter stream, by reason");
    describe_counter!(CONSUMERS_CREATED, "Durable partition consumers created");
    describe_counter!(CONSUMER_FAILURES, "Partition consumer loops that failed and were reopened");
    describe_gauge!(READY, "1 while the bridge is connected to NATS and not shutting down");
    describe_gauge!(PARTITIONS, "Stream partitions shared by all bridges (--partitions)");
}

/// Every `kind` of [`WRITE_ERRORS`] (the writer's fault classes).
pub(crate) const WRITE_ERROR_KINDS: [&str; 3] = ["connection", "retryable", "partition"];
/// Every `reason` of [`DEAD_LETTERS`].
pub(crate) const DEAD_LETTER_REASONS: [&str; 3] = ["undecodable", "refused", "max_deliveries"];

/// Creates every counter of this process's sinks and partitions at zero, so each series exists
/// from the first scrape: a labelled counter otherwise appears at its first event, with value
/// 1, and `increase()` sees no increase from a series' first sample, so the first dead letter
/// or write error would never alert. Also sets [`PARTITIONS`]. The lag gauges are left to the
/// partition loops: they appear once the partition's consumer has reported, so a partition
/// whose consumer never opens counts as not covered.
pub(crate) fn register_zero(sinks: &[Sink], owned: &[u32], partitions: u32) {
    metrics::gauge!(PARTITIONS).set(f64::from(partitions));
    for &sink in sinks {
        let sink = sink.as_str();
        for name in [ROWS_EXISTING, BATCHES, CONSUMERS_CREATED] {
            metrics::counter!(name, "sink" => sink).absolute(0);
        }
        for kind in WRITE_ERROR_KINDS {
            metrics::counter!(WRITE_ERRORS, "sink" => sink, "kind" => kind).absolute(0);
        }
        for reason in DEAD_LETTER_REASONS {
            metrics::counter!(DEAD_LETTERS, "sink" => sink, "reason" => reason).absolute(0);
        }
        for k in owned {
            let labels = [("sink", sink.to_owned()), ("partition", k.to_string())];
            metrics::counter!(ROWS_WRITTEN, &labels).absolute(0);
            metrics::counter!(CONSUMER_FAILURES, &labels).absolute(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exported_at_zero_before_their_first_event() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            register_zero(&[Sink::Archive, Sink::Search], &[1, 3], 4);
        });
        let text = handle.render();
        for series in [
            format!("{DEAD_LETTERS}{{sink=\"archive\",reason=\"undecodable\"}} 0"),
            format!("{DEAD_LETTERS}{{sink=\"search\",reason=\"max_deliveries\"}} 0"),
            format!("{WRITE_ERRORS}{{sink=\"archive\",kind=\"connection\"}} 0"),
            format!("{CONSUMER_FAILURES}{{sink=\"archive\",partition=\"3\"}} 0"),
            format!("{ROWS_WRITTEN}{{sink=\"search\",partition=\"1\"}} 0"),
            format!("{PARTITIONS} 4"),
        ] {
            assert!(text.lines().any(|l| l == series), "{series} missing from:\n{text}");
        }
        assert!(!text.contains("partition=\"0\""), "only owned partitions: {text}");
    }
}
