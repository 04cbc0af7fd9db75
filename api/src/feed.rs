//! The directory feed's publishing side (docs/accounts.md, "The directory feed"). A directory
//! change commits with its event in the outbox (`threadspace_store::accounts`); then
//! [`Feed::publish`] puts the org's unpublished events into the MESSAGES stream on
//! `dir.<partition>.<org>`, in version order, under the org's publisher lock, and stamps each
//! with its stream sequence — the change's *position* among the org's messages. A request that
//! changed the directory answers only after this, so its position exists when the client hears
//! of it. [`sweep`] publishes what a crash between commit and publish left behind.

use std::time::Duration;

use async_nats::jetstream;
use threadspace_protocol::stored::DirectoryEvent;
use threadspace_protocol::subjects::directory_subject;
use threadspace_protocol::{error_chain, OrgId};
use threadspace_store::accounts::outbox;
use threadspace_store::directory::DirectoryError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics as m;

/// How long a publisher waits for JetStream to acknowledge one event.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Publishes directory events.
#[derive(Clone)]
pub(crate) struct Feed {
    pub pool: threadspace_store::Pool,
    pub jetstream: jetstream::Context,
    pub partitions: u32,
}

/// Why publishing failed; the change is committed and the sweeper will publish it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FeedError {
    #[error("directory outbox unavailable")]
    Store(#[from] DirectoryError),
    #[error("postgres pool unavailable")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("postgres transaction failed")]
    Transaction(#[from] tokio_postgres::Error),
    #[error("publishing to the stream failed")]
    Publish(#[source] async_nats::Error),
}

impl Feed {
    /// Makes sure the MESSAGES stream captures directory events (`dir.>`): a stream created
    /// before they existed gets the subject added. A stream that does not exist yet is left to
    /// the gateways, which create it; until then publishing fails and the sweeper retries.
    pub(crate) async fn ensure_subjects(&self) {
        use threadspace_protocol::subjects::{DIRECTORY_SUBJECTS, MESSAGES_STREAM};
        let mut stream = match self.jetstream.get_stream(MESSAGES_STREAM).await {
            Ok(stream) => stream,
            Err(e) => {
                warn!(error = %e, "the MESSAGES stream is not there yet; directory events wait for it");
                return;
            }
        };
        let config = match stream.info().await {
            Ok(info) => info.config.clone(),
            Err(e) => {
                warn!(error = %e, "cannot read the MESSAGES stream's configuration");
                return;
            }
        };
        if config.subjects.iter().any(|s| s == DIRECTORY_SUBJECTS) {
            return;
        }
        let mut updated = config;
        updated.subjects.push(DIRECTORY_SUBJECTS.to_owned());
        match self.jetstream.update_stream(&updated).await {
            Ok(_) => info!(subjects = ?updated.subjects, "the MESSAGES stream now captures directory events"),
            Err(e) => warn!(error = %e, "cannot add directory events to the MESSAGES stream"),
        }
    }

    /// Publishes a committed change's event; the change stands even if this fails (the sweeper
    /// publishes it within seconds), so a failure is logged and `None` returned, not answered.
    pub(crate) async fn announce(&self, event: &DirectoryEvent) -> Option<u64> {
        match self.publish(event).await {
            Ok(seq) => Some(seq),
            Err(e) => {
                warn!(org = %event.org, version = event.version, error = %error_chain(&e),
                      "directory event committed but not yet published; the sweeper will");
                None
            }
        }
    }

    /// Publishes every unpublished event of `org`, oldest first; returns the stream sequence of
    /// `event` (the one the caller just committed), or of the newest published if it was already
    /// published by a concurrent publisher.
    pub(crate) async fn publish(&self, event: &DirectoryEvent) -> Result<u64, FeedError> {
        let published = self.publish_org(event.org).await?;
        if let Some(&(_, seq)) = published.iter().find(|(v, _)| *v == event.version) {
            return Ok(seq);
        }
        // Another request's publisher got there first: read the stamp it left.
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT coalesce(stream_seq, 0) FROM directory_events WHERE org_id = $1 AND version = $2",
                &[&event.org.0, &(event.version as i64)],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Publishes `org`'s pending events in version order; returns `(version, seq)` of each.
    async fn publish_org(&self, org: OrgId) -> Result<Vec<(u64, u64)>, FeedError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let pending = outbox::lock_pending(&tx, org).await?;
        let mut published = Vec::with_capacity(pending.len());
        for event in pending {
            let payload = serde_json::to_vec(&event).expect("directory events serialize");
            let mut headers = async_nats::HeaderMap::new();
            // A republish after a crash within the dedup window is dropped by JetStream; after
            // it, gateways skip a version they already applied.
            headers.insert("Nats-Msg-Id", format!("dir:{}:{}", org, event.version).as_str());
            let ack = self
                .jetstream
                .publish_with_headers(directory_subject(self.partitions, org), headers, payload.into())
                .await
                .map_err(|e| FeedError::Publish(e.into()))?;
            // Bounded: the org's lock and a feed connection are held meanwhile. A timed-out
            // event stays unpublished; the sweeper retries it (a duplicate is dropped by
            // JetStream's dedup window, or skipped by the gateways' versions).
            let ack = tokio::time::timeout(PUBLISH_TIMEOUT, ack)
                .await
                .map_err(|_| FeedError::Publish("no acknowledgement from JetStream within 2 s".into()))?
                .map_err(|e| FeedError::Publish(e.into()))?;
            outbox::mark_published(&tx, org, event.version, ack.sequence).await?;
            metrics::counter!(m::DIRECTORY_EVENTS, "result" => "published").increment(1);
            published.push((event.version, ack.sequence));
        }
        tx.commit().await?;
        Ok(published)
    }
}

/// Every second, publishes events left unpublished for over 2 s (a crash or a NATS outage
/// between commit and publish), until `shutdown`.
pub(crate) async fn sweep(feed: Feed, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let orgs = match feed.pool.get().await {
            Ok(client) => outbox::stale_orgs(&client, Duration::from_secs(2)).await,
            Err(e) => Err(DirectoryError::Pool(e)),
        };
        if let Ok(orgs) = &orgs {
            metrics::gauge!(m::DIRECTORY_STALE_ORGS).set(orgs.len() as f64);
            if !orgs.is_empty() {
                // A stream created (or restored) without the directory subject is one reason
                // publishing fails; repair it before retrying.
                feed.ensure_subjects().await;
            }
        }
        match orgs {
            Ok(orgs) => {
                for org in orgs {
                    match feed.publish_org(org).await {
                        Ok(published) => {
                            metrics::counter!(m::DIRECTORY_EVENTS, "result" => "swept")
                                .increment(published.len() as u64);
                            info!(%org, events = published.len(), "published directory events left behind");
                        }
                        Err(e) => warn!(%org, error = %error_chain(&e), "directory events still unpublished"),
                    }
                }
            }
            Err(e) => warn!(error = %error_chain(&e), "cannot read the directory outbox"),
        }
    }
}
