//! Delivery across gateways: acked once with a seq, received by every online member exactly
//! once and in seq order; idempotent retries; resume after a gateway is SIGKILLed.

use threadspace_tests::{recv_messages, send_and_ack, Fixture};

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
        let (seq, duplicate, interleaved) = send_and_ack(&mut alice_a, general, &format!("m{i}"), &format!("hello {i}")).await?;
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
