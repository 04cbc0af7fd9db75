//! Storing one chat message: the shared rule (`threadspace_stream::publish`: PubAck, retry vs
//! `id_reused`), counted and timed under the gateway's metric names.

use threadspace_protocol::stored::StoredMessage;
pub(crate) use threadspace_stream::{Published, Publisher};

use crate::metrics as m;

/// Publishes `stored` and waits (up to `--publish-timeout`) for the outcome.
pub(crate) async fn publish(publisher: &Publisher, stored: &StoredMessage) -> Published {
    let (published, latency) = threadspace_stream::publish(publisher, stored).await;
    if let Some(latency) = latency {
        metrics::histogram!(m::PUBLISH_DURATION).record(latency.as_secs_f64());
    }
    metrics::counter!(m::PUBLISHED, "result" => published.label()).increment(1);
    published
}
