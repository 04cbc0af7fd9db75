//! Read markers against real servers: stored before `read_ack`, announced on every gateway —
//! in a DM to its members (to show "seen"), in a channel only to the reader's own sessions,
//! never to anyone else or another org — carried in `welcome` across reconnects and gateway
//! restarts, and never moved back by a stale marker.

use std::time::Duration;

use threadspace_client::{Client, Incoming};
use threadspace_protocol::frames::{ChannelKind, ClientFrame, ErrorCode, ServerFrame, Welcome};
use threadspace_protocol::{ChannelId, Seq, UserId};
use threadspace_tests::{frames_within, recv_until, send_and_ack, Fixture};

async fn mark_read(
    client: &mut Client,
    channel: ChannelId,
    seq: Seq,
    reference: &str,
) -> anyhow::Result<Seq> {
    client.send(&ClientFrame::Read { reference: reference.into(), channel, seq }).await?;
    match recv_until(client, "read_ack", |i| {
        matches!(i, Incoming::Frame(ServerFrame::ReadAck { reference: r, .. } | ServerFrame::Error { reference: Some(r), .. }) if r == reference)
    })
    .await?
    {
        Incoming::Frame(ServerFrame::ReadAck { seq, .. }) => Ok(seq),
        other => anyhow::bail!("read {reference} failed: {other:?}"),
    }
}

/// Every `read` announcement that arrives within `window`.
async fn announcements(client: &mut Client, window: Duration) -> Vec<(ChannelId, UserId, Seq)> {
    frames_within(client, window, |frame| match frame {
        ServerFrame::Read { channel, user, seq } => Some((*channel, *user, *seq)),
        _ => None,
    })
    .await
}

fn last_read(welcome: &Welcome, channel: ChannelId) -> Seq {
    welcome.channels.iter().find(|c| c.id == channel).map_or(0, |c| c.last_read)
}

/// Waits until `client` has received the message `seq` (other frames are skipped).
async fn seen_by(client: &mut Client, seq: Seq) -> anyhow::Result<()> {
    recv_until(
        client,
        &format!("message {seq}"),
        |i| matches!(i, Incoming::Frame(ServerFrame::Msg(m)) if m.seq == seq),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_markers_sync_devices_show_seen_in_dms_survive_restarts_and_never_move_back(
) -> anyhow::Result<()> {
    let mut fx = Fixture::start(2, &[]).await?;
    let (mallory, other_org) = threadspace_tests::seed_other_org(&fx.stack).await?;
    // `random`: alice, carol, erin are members; bob is not.
    let random = fx.channel("random").await;
    let (mut alice, welcome) = fx.connect("alice", 0).await?;
    assert_eq!(last_read(&welcome, random), 0, "nothing read yet");
    let (mut alice_phone, _) = fx.connect("alice", 1).await?;
    let (mut carol, _) = fx.connect("carol", 1).await?;
    let (mut bob, _) = fx.connect("bob", 0).await?;
    let mut outsider = Client::connect(&threadspace_client::ConnectOptions::new(fx.stack.ws_url(1))).await?;
    outsider.hello(&fx.stack.token(mallory, other_org), None, threadspace_tests::WAIT).await?;

    let mut seqs = Vec::new();
    for i in 0..3 {
        seqs.push(send_and_ack(&mut carol, random, &format!("m{i}"), "news").await?.0);
    }
    // A client marks what it has shown: alice's gateway delivered it, so its head is there (a
    // marker beyond the gateway's head is clamped to it, protocol.md).
    seen_by(&mut alice, seqs[2]).await?;
    assert_eq!(mark_read(&mut alice, random, seqs[2], "r1").await?, seqs[2]);
    let expected = vec![(random, fx.user("alice"), seqs[2])];
    let window = Duration::from_millis(1500);
    assert_eq!(announcements(&mut alice_phone, window).await, expected, "the reader's other device syncs");
    assert!(
        announcements(&mut carol, Duration::from_millis(500)).await.is_empty(),
        "a channel's other members do not hear each read"
    );
    assert!(announcements(&mut bob, Duration::from_millis(300)).await.is_empty(), "not a member");
    assert!(announcements(&mut outsider, Duration::from_millis(300)).await.is_empty(), "another org");

    // In a DM the other member is told, on the other gateway: that is "seen". (The seeded
    // layout pairs each user with the next one: alice and bob share a DM.)
    let (mut bob_dm, bob_welcome) = fx.connect("bob", 1).await?;
    let dm = welcome
        .channels
        .iter()
        .find(|c| c.kind == ChannelKind::Dm && bob_welcome.channels.iter().any(|b| b.id == c.id))
        .expect("alice and bob share a DM")
        .id;
    let (dm_seq, _, _) = send_and_ack(&mut bob_dm, dm, "dm1", "lunch?").await?;
    seen_by(&mut alice, dm_seq).await?;
    assert_eq!(mark_read(&mut alice, dm, dm_seq, "r-dm").await?, dm_seq);
    let seen = vec![(dm, fx.user("alice"), dm_seq)];
    assert_eq!(announcements(&mut bob_dm, window).await, seen, "bob sees alice saw it");
    assert_eq!(announcements(&mut alice_phone, window).await, seen, "and alice's other device syncs");
    assert!(announcements(&mut carol, Duration::from_millis(300)).await.is_empty(), "not in the DM");

    // A stale marker does not move it back, and is not announced.
    assert_eq!(
        mark_read(&mut alice, random, seqs[0], "r2").await?,
        seqs[2],
        "the ack names the marker in force"
    );
    assert!(
        announcements(&mut alice_phone, Duration::from_millis(500)).await.is_empty(),
        "a stale marker is not announced"
    );

    // Reconnect, and restart both gateways: welcome carries the marker.
    drop(alice);
    let (_alice, welcome) = fx.connect("alice", 1).await?;
    assert_eq!(last_read(&welcome, random), seqs[2]);
    for gateway in 0..2 {
        fx.stack.terminate_gateway(gateway, Duration::from_secs(25));
        fx.stack.start_gateway(gateway).await?;
    }
    let (_alice, welcome) = fx.connect("alice", 0).await?;
    assert_eq!(last_read(&welcome, random), seqs[2], "the marker survives gateway restarts");
    let (_carol, welcome) = fx.connect("carol", 0).await?;
    assert_eq!(last_read(&welcome, random), 0, "markers are per user");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_read_markers_are_refused_and_store_nothing() -> anyhow::Result<()> {
    let fx = Fixture::start(1, &[]).await?;
    let random = fx.channel("random").await;
    let (mut bob, _) = fx.connect("bob", 0).await?;
    bob.send(&ClientFrame::Read { reference: "x1".into(), channel: random, seq: 5 }).await?;
    let refused = recv_until(&mut bob, "not_member", |i| {
        matches!(i, Incoming::Frame(ServerFrame::Error { code: ErrorCode::NotMember, reference: Some(r), .. }) if r == "x1")
    })
    .await?;
    assert!(format!("{refused:?}").contains("channel"), "{refused:?}");
    for (text, field) in [
        (r#"{"op":"read","ref":"x2","channel":1,"seq":0}"#, "seq"),
        (r#"{"op":"read","ref":"x3","channel":1,"seq":"latest"}"#, "seq"),
        (r#"{"op":"read","ref":"x4","seq":3}"#, "channel"),
    ] {
        bob.send_text(text).await?;
        let invalid = recv_until(&mut bob, "invalid_field", |i| {
            matches!(i, Incoming::Frame(ServerFrame::Error { code: ErrorCode::InvalidField, .. }))
        })
        .await?;
        assert!(format!("{invalid:?}").contains(field), "{text}: {invalid:?}");
    }
    let client = fx.stack.pool.get().await?;
    let stored: i64 = client.query_one("SELECT count(*) FROM read_markers", &[]).await?.get(0);
    assert_eq!(stored, 0, "nothing was stored");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_past_the_newest_message_is_clamped_and_stored_ones_are_repaired() -> anyhow::Result<()> {
    let mut fx = Fixture::start(1, &[]).await?;
    let random = fx.channel("random").await;
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let (newest, _, early) = send_and_ack(&mut alice, random, "clamp-1", "the newest message").await?;
    // Once alice has it, the gateway's fanout has passed it (the marker is clamped to that head).
    if !early.iter().any(|f| matches!(f, ServerFrame::Msg(m) if m.seq == newest)) {
        threadspace_tests::recv_messages(&mut alice, 1).await?;
    }

    // 2^53: far past every message. Accepting it would mark the channel read forever.
    let far = 1u64 << 53;
    let marker = mark_read(&mut alice, random, far, "far").await?;
    assert_eq!(marker, newest, "a marker past the stream's newest message is clamped to it");
    let (_, welcome) = fx.connect("alice", 0).await?;
    assert_eq!(last_read(&welcome, random), newest, "what was stored is the clamped marker");
    // The clamp follows the head: once a later message is in, the same far marker lands on it.
    let (later, _, early) = send_and_ack(&mut alice, random, "clamp-2", "a later message").await?;
    if !early.iter().any(|f| matches!(f, ServerFrame::Msg(m) if m.seq == later)) {
        threadspace_tests::recv_messages(&mut alice, 1).await?;
    }
    assert_eq!(mark_read(&mut alice, random, far, "far-again").await?, later);

    // A marker stored beyond the stream by an older gateway (an hour ago) is repaired when a
    // gateway starts.
    let carol = fx.user("carol");
    fx.stack
        .pool
        .get()
        .await?
        .execute(
            "INSERT INTO read_markers (user_id, channel_id, seq, updated_at)
             VALUES ($1, $2, $3, now() - interval '1 hour')
             ON CONFLICT (user_id, channel_id) DO UPDATE SET seq = EXCLUDED.seq, updated_at = EXCLUDED.updated_at",
            &[&carol.0, &random.0, &(far as i64)],
        )
        .await?;
    fx.stack.kill_gateway(0);
    fx.stack.start_gateway(0).await?;
    let (_, welcome) = fx.connect("carol", 0).await?;
    let repaired = last_read(&welcome, random);
    assert!(
        (later..far).contains(&repaired),
        "carol's stored marker {far} is repaired to the stream's newest seq ({later}), got {repaired}"
    );
    Ok(())
}
