//! Events: what travels between gateways on core NATS beside the message stream — presence
//! heartbeats, typing indicators and read-marker announcements — and how each reaches local
//! connections through the hub. None of it is stored in the stream. (Directory changes are:
//! the fanout applies them in stream order, `delivery/fanout.rs`.)

pub(crate) mod presence;
pub(crate) mod reads;
pub(crate) mod typing;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Calls `handle` for every message on `subject` until `shutdown` (or the subscription ends).
/// `what` names the events in the log line if subscribing fails.
pub(crate) async fn on_each(
    nats: &async_nats::Client,
    subject: String,
    what: &str,
    shutdown: CancellationToken,
    mut handle: impl FnMut(async_nats::Message),
) {
    let mut subscription = match nats.subscribe(subject).await {
        Ok(subscription) => subscription,
        Err(error) => {
            warn!(%error, "cannot subscribe to {what}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            message = subscription.next() => match message {
                Some(message) => handle(message),
                None => return,
            },
        }
    }
}
