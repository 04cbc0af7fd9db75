//! Every metric the bridge emits, declared in one place. Labels: `sink` (`archive` or
//! `search`), `partition` (a stream partition number, bounded by `--partitions`), `reason` and
//! `kind` (fixed sets below).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Label `partition`.
pub const ROWS_WRITTEN: &str = "threadspace_bridge_rows_written_total";
/// Rows of a batch that already existed (redeliveries after a lost ack or a crash).
pub const ROWS_EXISTING: &str = "threadspace_bridge_rows_existing_total";
pub const BATCHES: &str = "threadspace_bridge_batches_total";
pub const BATCH_ROWS: &str = "threadspace_bridge_batch_rows";
/// Insert + checkpoint + commit of one batch.
pub const COMMIT_DURATION: &str = "threadspace_bridge_commit_duration_seconds";
/// JetStream stored time → Postgres commit, per row.
pub const STORED_TO_COMMITTED: &str = "threadspace_bridge_stored_to_committed_seconds";
/// Label `partition`: messages the partition's consumer has not had acked yet.
pub const LAG_MESSAGES: &str = "threadspace_bridge_lag_messages";
/// Label `partition`: age of the oldest message not yet committed (0 when caught up).
pub const LAG_SECONDS: &str = "threadspace_bridge_lag_seconds";
/// Label `kind`: `connection` (connection dropped), `retryable`, `partition`.
pub const WRITE_ERRORS: &str = "threadspace_bridge_write_errors_total";
/// Label `reason`: `undecodable`, `refused`, `max_deliveries`.
pub const DEAD_LETTERS: &str = "threadspace_bridge_dead_letters_total";
/// Durable consumers created (first start, or recreated after deletion).
pub const CONSUMERS_CREATED: &str = "threadspace_bridge_consumers_created_total";
/// Label `partition`: the partition's consumer loop failed and is being reopened.
pub const CONSUMER_FAILURES: &str = "threadspace_bridge_consumer_failures_total";
pub const READY: &str = "threadspace_bridge_ready";

/// Registers descriptions so `/metrics` documents itself.
pub fn describe() {
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
}
