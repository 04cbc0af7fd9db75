//! Process lifecycle and directory changes: SIGTERM drain, membership kept fresh on live
//! connections, resume past the replay limit.

use std::time::{Duration, Instant};

use threadspace_client::Incoming;
use threadspace_protocol::frames::{close_code, ErrorCode, MemberChange, ServerFrame};
use threadspace_tests::{expect_no_message, recv_messages, recv_until, rest, send_and_ack, Fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_reconnect_closes_1001_and_exits_zero_within_grace() -> anyhow::Result<()> {
    let mut fx = Fixture::start(2, &["--shutdown-grace", "8s", "--reconnect-spread", "2s"]).await?;
    let port = fx.stack.gateways[0].port;
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let (mut bob, _) = fx.connect("bob", 0).await?;
    let started = Instant::now();
    let status = fx
        .stack
        .terminate_gateway(0, Duration::from_secs(12))
        .expect("gateway exits within the grace period");
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "drained in {:?}", started.elapsed());
    for client in [&mut alice, &mut bob] {
        let reconnect =
            recv_until(client, "reconnect", |i| matches!(i, Incoming::Frame(ServerFrame::Reconnect { .. })))
                .await?;
        let Incoming::Frame(ServerFrame::Reconnect { after_ms, .. }) = reconnect else { unreachable!() };
        assert!(after_ms < 2000, "delay hint within the spread: {after_ms}");
        let close = recv_until(client, "close", |i| matches!(i, Incoming::Close { .. })).await?;
        assert_eq!(close, Incoming::Close { code: close_code::GOING_AWAY, reason: "draining".into() });
    }
    assert!(threadspace_client::rest::http_status(port, "/readyz").await.is_none(), "the listener is closed");
    // The other gateway still serves.
    let (mut carol, _) = fx.connect("carol", 1).await?;
    let general = fx.channel("general").await;
    send_and_ack(&mut carol, general, "after-drain", "still up").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_reach_live_connections_on_every_gateway() -> anyhow::Result<()> {
    let fx = Fixture::start(2, &[]).await?;
    let team = fx.channel("team-1").await; // the first ten users: alice..judy
    let directory = fx.stack.directory();
    // mallory (the 11th user) is in team-2, not team-1.
    let (outsider, _) = directory.user_by_handle("test-1", "mallory").await?.expect("seeded");
    assert!(!directory.is_member(team, outsider).await?);
    let outsider_token = fx.stack.token(outsider, fx.org);
    let mut out_client =
        threadspace_client::Client::connect(&threadspace_client::ConnectOptions::new(fx.stack.ws_url(1)))
            .await?;
    out_client.hello(&outsider_token, None, threadspace_tests::WAIT).await?;
    let (mut alice, _) = fx.connect("alice", 0).await?;

    // Not a member yet: send refused.
    out_client
        .send_text(
            &serde_json::json!({"op":"send","ref":"x","channel":team,"client_msg_id":"x1","body":"hi"})
                .to_string(),
        )
        .await?;
    recv_until(&mut out_client, "not_member", |i| {
        matches!(i, Incoming::Frame(ServerFrame::Error { code: ErrorCode::NotMember, .. }))
    })
    .await?;

    // Joining a public channel is allowed for oneself (over the api service); the gateway on
    // the other side learns it.
    let stack = &fx.stack;
    let path = format!("/v1/channels/{team}/members/{outsider}");
    let (status, body) = rest(stack, "PUT", &path, Some(&outsider_token)).await?;
    assert_eq!(status, 200, "{body}");
    recv_until(&mut out_client, "member joined", |i| {
        matches!(i, Incoming::Frame(ServerFrame::Member { change: MemberChange::Joined, .. }))
    })
    .await?;
    let (seq, _, _) = send_and_ack(&mut alice, team, "t1", "welcome!").await?;
    assert_eq!(
        recv_messages(&mut out_client, 1).await?[0].seq,
        seq,
        "the new member receives without reconnecting"
    );
    send_and_ack(&mut out_client, team, "x2", "thanks").await?;

    // carol (a plain member; bob is the seeded admin) may not remove someone else; the user may leave.
    let carol_token = fx.token("carol");
    let (status, body) = rest(stack, "DELETE", &path, Some(&carol_token)).await?;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("forbidden"));
    let (status, _) = rest(stack, "DELETE", &path, Some(&outsider_token)).await?;
    assert_eq!(status, 200);
    recv_until(&mut out_client, "member left", |i| {
        matches!(i, Incoming::Frame(ServerFrame::Member { change: MemberChange::Left, .. }))
    })
    .await?;
    send_and_ack(&mut alice, team, "t2", "bye").await?;
    expect_no_message(&mut out_client, Duration::from_millis(500)).await?;

    // Bad REST input says what was wrong.
    let (status, body) = rest(stack, "PUT", "/v1/channels/abc/members/1", Some(&outsider_token)).await?;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("channel"), "{body}");
    let (status, _) = rest(stack, "PUT", &path, None).await?;
    assert_eq!(status, 401);
    let (status, _) = rest(stack, "PUT", &path, Some("garbage")).await?;
    assert_eq!(status, 401);
    let (status, _) = rest(stack, "PUT", "/v1/channels/999999/members/1", Some(&outsider_token)).await?;
    assert_eq!(status, 404);
    let (status, _) = rest(stack, "POST", &path, Some(&outsider_token)).await?;
    assert_eq!(status, 405);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_beyond_the_replay_limit_says_history_is_required() -> anyhow::Result<()> {
    let fx = Fixture::start(1, &["--max-replay", "5"]).await?;
    let general = fx.channel("general").await;
    let (mut alice, welcome) = fx.connect("alice", 0).await?;
    let cursor = welcome.head_seq;
    let mut acked = Vec::new();
    for i in 0..12 {
        acked.push(send_and_ack(&mut alice, general, &format!("h{i}"), "x").await?.0);
    }
    // bob was away since `cursor`: 12 missed, 5 may be replayed.
    let (mut bob, _) = fx
        .connect_with("bob", 0, Some(cursor), threadspace_client::ConnectOptions::new(fx.stack.ws_url(0)))
        .await?;
    let mut replayed = Vec::new();
    loop {
        match bob.recv(threadspace_tests::WAIT).await? {
            Incoming::Frame(ServerFrame::Msg(m)) => replayed.push(m.seq),
            Incoming::Frame(ServerFrame::HistoryRequired { after_seq, through_seq }) => {
                assert_eq!(after_seq, acked[4], "history is required after the last replayed message");
                assert_eq!(through_seq, *acked.last().expect("sent"));
            }
            Incoming::Frame(ServerFrame::Resumed { replayed: n, through_seq }) => {
                assert_eq!(n, 5);
                assert_eq!(through_seq, *acked.last().expect("sent"));
                break;
            }
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert_eq!(replayed, acked[..5].to_vec());
    // Live delivery continues after the resume.
    let (seq, _, _) = send_and_ack(&mut alice, general, "live", "y").await?;
    assert_eq!(recv_messages(&mut bob, 1).await?[0].seq, seq);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_is_the_api_services_and_its_document_lists_every_route() -> anyhow::Result<()> {
    let fx = Fixture::start(1, &[]).await?;
    let token = fx.token("alice");

    // The document the api serves names every client route with its methods, and the bearer
    // scheme they require.
    let (status, document) = threadspace_client::rest::http_get(fx.stack.api.port, "/v1/openapi.json")
        .await
        .ok_or_else(|| anyhow::anyhow!("the api service does not answer"))?;
    assert_eq!(status, 200, "{document}");
    let document: serde_json::Value = serde_json::from_str(&document)?;
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", document["openapi"]);
    let operations: Vec<(String, String)> = document["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object().into_iter().flatten().map(move |(method, _)| (method.clone(), path.clone()))
        })
        .collect();
    for expected in [
        ("get", "/v1/channels/{channel}/messages"),
        ("get", "/v1/search"),
        ("put", "/v1/channels/{channel}/members/{user}"),
        ("delete", "/v1/channels/{channel}/members/{user}"),
    ] {
        assert!(
            operations.iter().any(|(m, p)| (m.as_str(), p.as_str()) == expected),
            "{expected:?} missing from {operations:?}"
        );
    }
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    // Unknown routes and methods answer in the API's one error shape (checked by `rest`).
    let (status, body) = rest(&fx.stack, "GET", "/v1/nothing-here", Some(&token)).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = rest(&fx.stack, "POST", "/v1/search?q=x", Some(&token)).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (405, Some("method_not_allowed")), "{body}");

    // The gateway keeps only the WebSocket edge: REST paths are not found there, and the answer
    // says where the API lives.
    let gateway = fx.stack.gateways[0].port;
    let (status, body) =
        threadspace_client::rest::http_request(gateway, "GET", "/v1/search?q=x", Some(&token))
            .await
            .ok_or_else(|| anyhow::anyhow!("the gateway does not answer"))?;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("threadspace-api"), "{body}");
    assert_eq!(threadspace_client::rest::http_status(gateway, "/readyz").await, Some(200));
    Ok(())
}
