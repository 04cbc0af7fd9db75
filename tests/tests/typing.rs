//! Typing indicators against real servers: delivered across gateways to the other members of
//! the channel only, never echoed to the typist, never to non-members or another org, and
//! throttled.

use std::time::Duration;

use threadspace_client::{Client, Incoming};
use threadspace_protocol::frames::{ClientFrame, ErrorCode, ServerFrame, TYPING_EXPIRES_MS};
use threadspace_protocol::{ChannelId, UserId};
use threadspace_tests::{frames_within, recv_until, Fixture};

async fn typing(client: &mut Client, channel: ChannelId) -> anyhow::Result<()> {
    client.send(&ClientFrame::Typing { channel }).await?;
    Ok(())
}

/// Every `typing` frame that arrives within `window`.
async fn typing_frames(client: &mut Client, window: Duration) -> Vec<(ChannelId, UserId, u64)> {
    frames_within(client, window, |frame| match frame {
        ServerFrame::Typing { channel, user, expires_ms } => Some((*channel, *user, *expires_ms)),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_other_members_only_and_is_throttled() -> anyhow::Result<()> {
    let fx = Fixture::start(2, &[]).await?;
    let (mallory, other_org) = threadspace_tests::seed_other_org(&fx.stack).await?;
    // `random` has every other user: alice, carol, erin are members; bob and dave are not.
    let random = fx.channel("random").await;
    let (mut alice_a, _) = fx.connect("alice", 0).await?;
    let (mut alice_b, _) = fx.connect("alice", 1).await?;
    let (mut carol, _) = fx.connect("carol", 0).await?;
    let (mut erin, _) = fx.connect("erin", 1).await?;
    let (mut bob, _) = fx.connect("bob", 0).await?;
    let (mut dave, _) = fx.connect("dave", 1).await?;
    let mut outsider = Client::connect(&threadspace_client::ConnectOptions::new(fx.stack.ws_url(1))).await?;
    outsider.hello(&fx.stack.token(mallory, other_org), None, threadspace_tests::WAIT).await?;

    // A burst of ten: the others see exactly one (throttled), the typist's sessions none.
    for _ in 0..10 {
        typing(&mut alice_a, random).await?;
    }
    let expected = vec![(random, fx.user("alice"), TYPING_EXPIRES_MS)];
    let window = Duration::from_millis(1500);
    assert_eq!(typing_frames(&mut carol, window).await, expected, "carol (same gateway) sees it once");
    assert_eq!(typing_frames(&mut erin, window).await, expected, "erin (other gateway) sees it once");
    for (name, client) in [("alice's sessions", &mut alice_a), ("alice's other session", &mut alice_b)] {
        assert!(typing_frames(client, Duration::from_millis(300)).await.is_empty(), "{name}: not echoed");
    }
    for (name, client) in [("bob", &mut bob), ("dave", &mut dave), ("another org", &mut outsider)] {
        assert!(typing_frames(client, Duration::from_millis(300)).await.is_empty(), "{name}: not a member");
    }

    // After the throttle window, the next indicator goes through again.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    typing(&mut alice_b, random).await?;
    assert_eq!(typing_frames(&mut carol, window).await, expected, "a new window, a new indicator");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_in_a_channel_you_are_not_in_is_refused_and_reaches_nobody() -> anyhow::Result<()> {
    let fx = Fixture::start(1, &[]).await?;
    let random = fx.channel("random").await;
    let (mut bob, _) = fx.connect("bob", 0).await?;
    let (mut alice, _) = fx.connect("alice", 0).await?;
    typing(&mut bob, random).await?;
    let refused = recv_until(&mut bob, "not_member", |i| {
        matches!(i, Incoming::Frame(ServerFrame::Error { code: ErrorCode::NotMember, .. }))
    })
    .await?;
    assert!(format!("{refused:?}").contains("typing"), "{refused:?}");
    assert!(typing_frames(&mut alice, Duration::from_millis(500)).await.is_empty());
    // A malformed one names the field, and the connection lives on.
    bob.send_text(r#"{"op":"typing","channel":"general"}"#).await?;
    let invalid = recv_until(&mut bob, "invalid_field", |i| {
        matches!(i, Incoming::Frame(ServerFrame::Error { code: ErrorCode::InvalidField, .. }))
    })
    .await?;
    assert!(format!("{invalid:?}").contains("channel"), "{invalid:?}");
    bob.send(&ClientFrame::Ping { reference: Some("still-here".into()) }).await?;
    recv_until(&mut bob, "pong", |i| matches!(i, Incoming::Frame(ServerFrame::Pong { .. }))).await?;
    Ok(())
}
