//! Delivery across gateways: acked once with a seq, received by every online member exactly
//! once and in seq order; idempotent retries; resume after a gateway is SIGKILLed.

use threadspace_protocol::frames::{ClientFrame, ServerFrame};
use threadspace_tests::{recv_messages, send_and_ack, Fixture, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_two_gateways_receive_every_message_once_in_order() -> anyhow::Result<()> {
    let fx = Fixture::start(2, &[]).await?;
    let general = fx.channel("general").await;
    // alice on both gateways (the sender's other session), bob on 1, carol on 0.
    let (mut alice_a, _) = fx.connect("alice", 0).await?;
    let (mut alice_b, _) = fx.connect("alice", 1).await?;
    let (mut bob, _) = fx.connect("bob", 1).await?;
    let (mut carol, _) = fx.connect("carol", 0).await?;

    let mut seqs = Vec::new();
    let mut own = Vec::new();
    for i in 0..15 {
        let (seq, duplicate, interleaved) =
            send_and_ack(&mut alice_a, general, &format!("m{i}"), &format!("hello {i}")).await?;
        assert!(!duplicate);
        seqs.push(seq);
        own.extend(interleaved.into_iter().filter_map(|f| match f {
            threadspace_protocol::ServerFrame::Msg(m) => Some(m.seq),
            _ => None,
        }));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "acks carry increasing seqs: {seqs:?}");

    for (name, client) in [("alice_b", &mut alice_b), ("bob", &mut bob), ("carol", &mut carol)] {
        let got = recv_messages(client, 15).await?;
        let got_seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
        assert_eq!(got_seqs, seqs, "{name} receives every message once, in seq order");
        assert!(got.iter().all(|m| m.sender == fx.user("alice") && m.channel == general));
        assert_eq!(got[3].body, "hello 3");
        threadspace_tests::expect_no_message(client, std::time::Duration::from_millis(300)).await?;
    }
    // The sending session receives its own messages too, once each, in order.
    let rest = recv_messages(&mut alice_a, 15 - own.len()).await?;
    own.extend(rest.iter().map(|m| m.seq));
    assert_eq!(own, seqs, "the sending session receives its own messages once, in order");
    threadspace_tests::expect_no_message(&mut alice_a, std::time::Duration::from_millis(300)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_the_other_gateway_returns_the_same_seq_and_stores_once() -> anyhow::Result<()> {
    let fx = Fixture::start(2, &[]).await?;
    let general = fx.channel("general").await;
    let (mut bob, _) = fx.connect("bob", 1).await?;
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let (seq, duplicate, _) = send_and_ack(&mut alice, general, "retry-1", "only once").await?;
    assert!(!duplicate);
    drop(alice);

    // The client lost the ack (say) and retries on the other gateway after reconnecting.
    let (mut alice, _) = fx.connect("alice", 1).await?;
    let (again, duplicate, _) = send_and_ack(&mut alice, general, "retry-1", "only once").await?;
    assert_eq!(again, seq, "a retry of the same client_msg_id returns the same seq");
    assert!(duplicate, "the ack says it was a duplicate");

    // The same id with another body is not a retry: refused with its own code, nothing stored.
    alice
        .send(&ClientFrame::Send {
            reference: "changed".into(),
            channel: general,
            client_msg_id: "retry-1".into(),
            body: "a different body".into(),
        })
        .await?;
    let answer = loop {
        match alice.recv_frame(WAIT).await? {
            ServerFrame::Presence { .. } | ServerFrame::Msg(_) => continue,
            other => break other,
        }
    };
    match answer {
        ServerFrame::Error { code, reference, message } => {
            assert_eq!(code.as_str(), "id_reused", "{message}");
            assert_eq!(reference.as_deref(), Some("changed"));
            assert!(message.contains("retry-1") && message.contains(&seq.to_string()), "{message}");
        }
        other => panic!("the same client_msg_id with another body was answered {other:?}"),
    }

    // Another user may use the same client id: it is scoped by sender, so it is a new message.
    let (mut carol, _) = fx.connect("carol", 0).await?;
    let (other, duplicate, _) = send_and_ack(&mut carol, general, "retry-1", "mine").await?;
    assert!(!duplicate && other > seq);

    let got = recv_messages(&mut bob, 2).await?;
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![seq, other]);
    threadspace_tests::expect_no_message(&mut bob, std::time::Duration::from_millis(500)).await?;

    let nats = async_nats::connect(fx.stack.nats.url.as_str()).await?;
    let mut stream = async_nats::jetstream::new(nats).get_stream("MESSAGES").await?;
    assert_eq!(stream.info().await?.state.messages, 2, "the stream holds one message per distinct send");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_sigkilled_gateway_resume_elsewhere_without_gaps_or_duplicates() -> anyhow::Result<()> {
    use threadspace_client::{ConnectOptions, Incoming};
    use threadspace_protocol::frames::ServerFrame;

    // alice sends ~100+ frames per second: over the default send and frame limits.
    let mut fx = Fixture::start(2, threadspace_tests::NO_RATE_LIMITS).await?;
    let general = fx.channel("general").await;
    let (mut alice, _) = fx.connect("alice", 1).await?;
    let mut receivers = Vec::new();
    for handle in ["bob", "carol"] {
        let (client, welcome) = fx.connect(handle, 0).await?;
        receivers.push((handle, client, welcome.head_seq, Vec::<u64>::new()));
    }
    let (mut dave, _) = fx.connect("dave", 1).await?;

    // alice sends 150 messages in the background while gateway 0 is killed mid-way.
    let total = 150;
    let sender = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..total {
            let (seq, _, _) =
                send_and_ack(&mut alice, general, &format!("k{i}"), &format!("during crash {i}")).await?;
            acked.push(seq);
            tokio::time::sleep(std::time::Duration::from_millis(4)).await;
        }
        anyhow::Ok(acked)
    });

    // Read until roughly a third has arrived, then crash the receivers' gateway.
    for (_, client, _, seen) in receivers.iter_mut() {
        let first = recv_messages(client, 50).await?;
        seen.extend(first.iter().map(|m| m.seq));
    }
    fx.stack.kill_gateway(0);
    // Let the sender get well ahead, so the resume has something to replay.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Each receiver drains what it still got, notices the failure, and resumes on gateway 1.
    let mut resumed = Vec::new();
    for (handle, mut client, head, mut seen) in receivers {
        loop {
            match client.recv(threadspace_tests::WAIT).await {
                Ok(Incoming::Frame(ServerFrame::Msg(m))) => seen.push(m.seq),
                Ok(Incoming::Frame(_)) => {}
                Ok(_) | Err(_) => break,
            }
        }
        let cursor = seen.last().copied().unwrap_or(head);
        let (client, _) =
            fx.connect_with(handle, 1, Some(cursor), ConnectOptions::new(fx.stack.ws_url(1))).await?;
        resumed.push((handle, client, seen));
    }
    let acked = sender.await??;
    assert_eq!(acked.len(), total);

    for (handle, mut client, mut seen) in resumed {
        let mut replayed = None;
        while seen.len() < acked.len() {
            match client.recv(threadspace_tests::WAIT).await? {
                Incoming::Frame(ServerFrame::Msg(m)) => seen.push(m.seq),
                Incoming::Frame(ServerFrame::Resumed { replayed: n, .. }) => replayed = Some(n),
                Incoming::Frame(ServerFrame::HistoryRequired { .. }) => {
                    anyhow::bail!("{handle}: unexpected history_required")
                }
                Incoming::Frame(_) => {}
                other => anyhow::bail!("{handle}: connection ended: {other:?}"),
            }
        }
        assert!(replayed.is_some_and(|n| n > 0), "{handle}: the gap was served by replay ({replayed:?})");
        assert_eq!(seen, acked, "{handle}: complete, gap-free, duplicate-free, in order after resume");
        threadspace_tests::expect_no_message(&mut client, std::time::Duration::from_millis(500)).await?;
    }
    let dave_seen: Vec<u64> = recv_messages(&mut dave, total).await?.iter().map(|m| m.seq).collect();
    assert_eq!(dave_seen, acked, "a member on the surviving gateway was unaffected");
    Ok(())
}

/// Creating a consumer goes through the JetStream meta leader; a gateway's fanout can be
/// without one for seconds after a node dies (docs/drills.md). The hidden fault flag makes it
/// so for the whole test: every message must come from the stream leader, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_without_a_consumer_delivers_from_the_stream_leader() -> anyhow::Result<()> {
    let mut args = threadspace_tests::NO_RATE_LIMITS.to_vec();
    args.push("--fault-fanout-no-consumer");
    let fx = Fixture::start(1, &args).await?;
    let general = fx.channel("general").await;
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let (mut bob, _) = fx.connect("bob", 0).await?;

    let mut acked = Vec::new();
    for i in 0..20 {
        acked
            .push(send_and_ack(&mut alice, general, &format!("nc{i}"), &format!("no consumer {i}")).await?.0);
    }
    let got = recv_messages(&mut bob, 20).await?;
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), acked, "every message once, in seq order");
    assert_eq!(got[7].body, "no consumer 7");
    threadspace_tests::expect_no_message(&mut bob, std::time::Duration::from_millis(600)).await?;
    let port = fx.stack.gateways[0].port;
    let from_leader =
        threadspace_tests::metric(port, "threadspace_gateway_fanout_from_leader_total", "").await?;
    assert!(from_leader >= 20.0, "the records came from the stream leader ({from_leader})");
    Ok(())
}

/// A replay consumer is R1 and may sit on a replica that has not applied the newest messages:
/// its "nothing pending" is not the end. With the gateways' hidden fault flag every replay
/// finds its consumer's replica empty, and the stream leader must serve the whole range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_whose_consumer_replica_lags_is_finished_from_the_stream_leader() -> anyhow::Result<()> {
    use threadspace_client::{ConnectOptions, Incoming};

    let mut args = threadspace_tests::NO_RATE_LIMITS.to_vec();
    args.push("--fault-replay-lagging-replica");
    let fx = Fixture::start(1, &args).await?;
    let general = fx.channel("general").await;
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let (bob, welcome) = fx.connect("bob", 0).await?;
    drop(bob);

    // Missed while bob is away; then the cursor he resumes from.
    let mut acked = Vec::new();
    for i in 0..25 {
        acked.push(send_and_ack(&mut alice, general, &format!("l{i}"), &format!("while away {i}")).await?.0);
    }
    let (mut bob, _) =
        fx.connect_with("bob", 0, Some(welcome.head_seq), ConnectOptions::new(fx.stack.ws_url(0))).await?;
    let mut seen = Vec::new();
    let replayed = loop {
        match bob.recv(WAIT).await? {
            Incoming::Frame(ServerFrame::Msg(m)) => seen.push(m.seq),
            Incoming::Frame(ServerFrame::Resumed { replayed, .. }) => break replayed,
            Incoming::Frame(ServerFrame::HistoryRequired { .. }) => {
                anyhow::bail!("unexpected history_required")
            }
            Incoming::Frame(_) => {}
            other => anyhow::bail!("connection ended: {other:?}"),
        }
    };
    assert_eq!(seen, acked, "the leader replayed every missed message once, in order");
    assert_eq!(replayed, 25);
    let port = fx.stack.gateways[0].port;
    let from_leader =
        threadspace_tests::metric(port, "threadspace_gateway_replayed_from_leader_total", "").await?;
    assert!(from_leader >= 25.0, "the records came from the leader ({from_leader})");

    // Live delivery continues after the replay, without repeating it.
    let (next, _, _) = send_and_ack(&mut alice, general, "l-live", "back").await?;
    let live = recv_messages(&mut bob, 1).await?;
    assert_eq!(live[0].seq, next);
    threadspace_tests::expect_no_message(&mut bob, std::time::Duration::from_millis(300)).await?;
    Ok(())
}
