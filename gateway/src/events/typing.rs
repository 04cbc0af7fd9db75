//! Typing indicators: ephemeral, never stored. A member's `typing` is throttled to one per
//! user and channel per [`TYPING_THROTTLE_MS`] on this gateway, published on core NATS
//! (`typing.<org>.<channel>`), and every gateway hands it to its local connections that are
//! members of the channel, except the typist's own sessions. Channels belong to one org, so
//! another org's users can never receive it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use threadspace_protocol::frames::{ErrorCode, ServerFrame, TYPING_EXPIRES_MS, TYPING_THROTTLE_MS};
use threadspace_protocol::stored::TypingEvent;
use threadspace_protocol::subjects::{all_typing, parse_typing_subject, typing_subject};
use threadspace_protocol::{ChannelId, UserId};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::delivery::hub::{ConnHandle, Hub};
use crate::metrics as m;

/// When each (user, channel) last had a `typing` forwarded by this gateway. Holds only recent
/// typists: [`Throttle::prune`] drops entries older than the throttle window.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Mutex<HashMap<(UserId, ChannelId), Instant>>,
}

impl Throttle {
    /// True if this `typing` may be forwarded now (and records it).
    pub(crate) fn admit(&self, user: UserId, channel: ChannelId, now: Instant) -> bool {
        let window = Duration::from_millis(TYPING_THROTTLE_MS);
        let mut last = self.last.lock().expect("throttle lock is never poisoned");
        match last.get(&(user, channel)) {
            Some(at) if now.duration_since(*at) < window => false,
            _ => {
                last.insert((user, channel), now);
                true
            }
        }
    }

    /// Forgets entries older than the window.
    pub(crate) fn prune(&self, now: Instant) {
        let window = Duration::from_millis(TYPING_THROTTLE_MS);
        self.last
            .lock()
            .expect("throttle lock is never poisoned")
            .retain(|_, at| now.duration_since(*at) < window);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.lock().expect("throttle lock is never poisoned").len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's way to announce typing: the per-gateway throttle and the NATS client.
pub(crate) struct Typing {
    pub throttle: std::sync::Arc<Throttle>,
    pub nats: async_nats::Client,
}

/// A client's `typing {channel}`.
pub(crate) async fn publish(typing: &Typing, handle: &ConnHandle, channel: ChannelId) {
    if !handle.is_member(channel) {
        metrics::counter!(m::TYPING, "result" => "not_member").increment(1);
        metrics::counter!(m::ERRORS, "code" => ErrorCode::NotMember.as_str()).increment(1);
        handle.push_frame(&ServerFrame::Error {
            code: ErrorCode::NotMember,
            reference: None,
            message: format!("typing: you are not a member of channel {channel}"),
        });
        return;
    }
    if !typing.throttle.admit(handle.user, channel, Instant::now()) {
        metrics::counter!(m::TYPING, "result" => "throttled").increment(1);
        return;
    }
    metrics::counter!(m::TYPING, "result" => "published").increment(1);
    let payload = serde_json::to_vec(&TypingEvent { user: handle.user }).expect("events serialize");
    if let Err(error) = typing.nats.publish(typing_subject(handle.org, channel), payload.into()).await {
        // Ephemeral by design: a lost indicator is not worth an error to the client.
        warn!(%error, "typing indicator not published");
    }
}

/// Hands typing indicators from every gateway to local members until `shutdown`.
pub(crate) async fn subscribe(
    hub: std::sync::Arc<Hub>,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) {
    super::on_each(&nats, all_typing(), "typing indicators", shutdown, |message| {
        let event = serde_json::from_slice::<TypingEvent>(&message.payload);
        let (Some((_, channel)), Ok(event)) = (parse_typing_subject(&message.subject), event) else {
            warn!(subject = %message.subject, "undecodable typing indicator");
            return;
        };
        let frame = ServerFrame::Typing { channel, user: event.user, expires_ms: TYPING_EXPIRES_MS };
        let delivered = hub.deliver_ephemeral(channel, Some(event.user), &Bytes::from(frame.encode()));
        metrics::counter!(m::TYPING_DELIVERIES).increment(delivered as u64);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_indicator_per_user_and_channel_per_window() {
        let throttle = Throttle::default();
        let t0 = Instant::now();
        let (alice, bob, general, random) = (UserId(1), UserId(2), ChannelId(1), ChannelId(2));
        assert!(throttle.admit(alice, general, t0));
        assert!(!throttle.admit(alice, general, t0 + Duration::from_millis(2_999)));
        assert!(throttle.admit(alice, random, t0), "another channel is not throttled");
        assert!(throttle.admit(bob, general, t0), "another user is not throttled");
        assert!(throttle.admit(alice, general, t0 + Duration::from_millis(3_000)));
        throttle.prune(t0 + Duration::from_millis(3_500));
        assert_eq!(throttle.len(), 1, "only the entry refreshed at 3.0 s is younger than the window");
        throttle.prune(t0 + Duration::from_secs(10));
        assert!(throttle.is_empty());
    }
}
