//! Membership changes: the api service commits them to the directory and announces them on
//! `ctl.membership.<org>`; this subscriber applies announced changes to this gateway's
//! connections, so sends and fanout follow membership without a reconnect.

use std::sync::Arc;

use threadspace_protocol::stored::MembershipEvent;
use threadspace_protocol::subjects::all_membership;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::delivery::hub::Hub;
use crate::metrics as m;

/// Applies announced membership changes until `shutdown`.
pub(crate) async fn subscribe(hub: Arc<Hub>, nats: async_nats::Client, shutdown: CancellationToken) {
    super::on_each(&nats, all_membership(), "membership events", shutdown, |message| {
        match serde_json::from_slice::<MembershipEvent>(&message.payload) {
            Ok(event) => {
                metrics::counter!(m::MEMBERSHIP_EVENTS).increment(1);
                hub.apply_membership(event.user, event.channel, event.change);
            }
            Err(e) => warn!(error = %e, subject = %message.subject, "undecodable membership event"),
        }
    })
    .await;
}
