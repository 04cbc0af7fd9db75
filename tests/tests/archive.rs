//! The archive path against real servers: the broker-bridge moves every acked message into
//! Postgres exactly once, through bridge crashes, a Postgres outage, poison messages and a
//! deleted consumer; history pages, search, retention and resume gaps read it back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use threadspace_broker_bridge::dead_letter;
use threadspace_devstack::StackOptions;
use threadspace_protocol::stored::StoredMessage;
use threadspace_tests::{
    archived, get_json, metric, recv_messages, send_and_ack, wait_archived, wait_indexed, Fixture,
    NO_RATE_LIMITS,
};

/// A stack with two gateways (no rate limits) and one bridge with `bridge_args`.
async fn fixture(bridge_args: &[&str]) -> anyhow::Result<Fixture> {
    let mut options = StackOptions::with_bridge(2, bridge_args);
    options.gateway_args = NO_RATE_LIMITS.iter().map(|s| s.to_string()).collect();
    Fixture::start_with(options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_reach_postgres_exactly_once_with_their_fields() -> anyhow::Result<()> {
    let fx = fixture(&["--batch-rows", "16"]).await?;
    let (general, random) = (fx.channel("general").await, fx.channel("random").await);
    let (mut alice, _) = fx.connect("alice", 0).await?;
    // `random` has every other user: carol, not bob.
    let (mut carol, _) = fx.connect("carol", 1).await?;
    let (mut bob, _) = fx.connect("bob", 1).await?;
    let mut expected = BTreeMap::new();
    for i in 0..30 {
        let body = format!("alice says {i}");
        let (seq, _, _) = send_and_ack(&mut alice, general, &format!("a{i}"), &body).await?;
        expected.insert(seq, (general, fx.user("alice"), format!("a{i}"), body));
    }
    for i in 0..20 {
        let body = format!("carol says {i} — ünïcödé ✓");
        let (seq, _, _) = send_and_ack(&mut carol, random, &format!("c{i}"), &body).await?;
        expected.insert(seq, (random, fx.user("carol"), format!("c{i}"), body));
    }
    // A retry: acked as a duplicate, archived once.
    let (seq, duplicate, _) = send_and_ack(&mut alice, general, "a7", "alice says 7").await?;
    assert!(duplicate && expected.contains_key(&seq));

    let rows = wait_archived(&fx.stack, 50, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows_after = archived(&fx.stack).await?;
    assert_eq!(rows_after.len(), 50, "nothing beyond the 50 distinct messages is archived");
    let got: BTreeMap<u64, _> = rows
        .iter()
        .map(|r| (r.seq, (r.channel, r.sender, r.client_msg_id.clone(), r.body.clone())))
        .collect();
    assert_eq!(
        got, expected,
        "each acked message is archived once with its seq, channel, sender, id and body"
    );

    // Timestamps: `sent_at` is the `ts` every member saw live.
    let live = recv_messages(&mut bob, 30).await?;
    for message in &live {
        let row = rows.iter().find(|r| r.seq == message.seq).expect("archived");
        assert_eq!(row.sent_at_ms, message.ts, "seq {}: archived sent_at equals the live ts", message.seq);
    }
    let client = fx.stack.pool.get().await?;
    let bad: i64 = client
        .query_one("SELECT count(*) FROM messages WHERE NOT (written_at >= stored_at AND stored_at >= sent_at - interval '5 seconds')", &[])
        .await?
        .get(0);
    assert_eq!(bad, 0, "stored_at and written_at are set and ordered");
    Ok(())
}

/// Sends from `senders` concurrently for `duration`; returns every acked (seq, sender handle, id).
async fn send_load(
    fx: &Fixture,
    senders: &[&str],
    duration: Duration,
    interval: Duration,
) -> anyhow::Result<tokio::task::JoinSet<anyhow::Result<Vec<u64>>>> {
    let general = fx.channel("general").await;
    let mut tasks = tokio::task::JoinSet::new();
    for (n, handle) in senders.iter().enumerate() {
        let (mut client, _) = fx.connect(handle, n % 2).await?;
        tasks.spawn(async move {
            let mut acked = Vec::new();
            let started = tokio::time::Instant::now();
            let mut i = 0;
            while started.elapsed() < duration {
                let (seq, _, _) =
                    send_and_ack(&mut client, general, &format!("load-{n}-{i}"), "load").await?;
                acked.push(seq);
                i += 1;
                tokio::time::sleep(interval).await;
            }
            Ok(acked)
        });
    }
    Ok(tasks)
}

async fn join_acked(
    mut tasks: tokio::task::JoinSet<anyhow::Result<Vec<u64>>>,
) -> anyhow::Result<BTreeSet<u64>> {
    let mut acked = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        acked.extend(result??);
    }
    Ok(acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_sigkilled_mid_batch_repeatedly_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let mut fx =
        fixture(&["--batch-rows", "20", "--batch-wait", "30ms", "--ack-wait", "2s", "--max-backoff", "1s"])
            .await?;
    let tasks =
        send_load(&fx, &["alice", "bob", "carol", "dave"], Duration::from_secs(8), Duration::from_millis(10))
            .await?;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        fx.stack.kill_bridge(0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        fx.stack.start_bridge(0).await?;
    }
    let acked = join_acked(tasks).await?;
    assert!(acked.len() > 300, "the load ran: {} acked", acked.len());
    let rows = wait_archived(&fx.stack, acked.len(), Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await; // redeliveries after the last kill, if any
    let rows_final = archived(&fx.stack).await?;
    assert_eq!(rows_final.len(), rows.len(), "no row appears after catching up");
    let stored: BTreeSet<u64> = rows_final.iter().map(|r| r.seq).collect();
    assert_eq!(stored.len(), rows_final.len(), "no seq is stored twice");
    assert_eq!(stored, acked, "the table holds exactly the acked messages");
    let ids: BTreeSet<&str> = rows_final.iter().map(|r| r.client_msg_id.as_str()).collect();
    assert_eq!(ids.len(), rows_final.len(), "no message is stored twice under two seqs");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_30s_live_delivery_continues_and_the_table_catches_up() -> anyhow::Result<()> {
    let mut fx = fixture(&["--ack-wait", "5s", "--max-backoff", "2s"]).await?;
    let general = fx.channel("general").await;
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let (mut bob, _) = fx.connect("bob", 1).await?;
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(send_and_ack(&mut alice, general, &format!("before-{i}"), "before the outage").await?.0);
    }
    wait_archived(&fx.stack, 10, Duration::from_secs(20)).await?;

    fx.stack.postgres.stop();
    let outage = tokio::time::Instant::now();
    let mut during = Vec::new();
    while outage.elapsed() < Duration::from_secs(31) {
        let i = during.len();
        let (seq, _, _) =
            send_and_ack(&mut alice, general, &format!("during-{i}"), "while postgres is down").await?;
        during.push(seq);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    acked.extend(&during);
    // Live delivery never waited for Postgres.
    let live = recv_messages(&mut bob, acked.len()).await?;
    assert_eq!(live.iter().map(|m| m.seq).collect::<Vec<_>>(), acked, "bob got every message live, in order");
    // History says so clearly while Postgres is away (and comes back with it).
    let path = format!("/v1/channels/{general}/messages?limit=5");
    let (status, body) = get_json(&fx.stack, &path, Some(&fx.token("bob"))).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    let failures =
        metric(fx.stack.bridges[0].port, "threadspace_bridge_write_errors_total", "sink=\"archive\"").await?;
    assert!(failures > 0.0, "the bridge saw Postgres fail");

    fx.stack.postgres.restart().await?;
    let rows = wait_archived(&fx.stack, acked.len(), Duration::from_secs(60)).await?;
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        acked,
        "the table caught up completely, once each"
    );
    let (status, page) = get_json(&fx.stack, &path, Some(&fx.token("bob"))).await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"][4]["seq"].as_u64(), acked.last().copied(), "history is back");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_their_partition_keeps_flowing() -> anyhow::Result<()> {
    let fx = fixture(&["--batch-wait", "300ms"]).await?;
    let general = fx.channel("general").await;
    // bob watches #general live: he must receive exactly what the archive keeps.
    let (mut bob, _) = fx.connect("bob", 0).await?;
    let nats = async_nats::connect(fx.stack.nats.url.as_str()).await?;
    let jetstream = async_nats::jetstream::new(nats);
    let subject = threadspace_protocol::subjects::message_subject(16, fx.org, general);
    let partition = threadspace_protocol::subjects::partition_of(fx.org, 16);
    let wrong_partition = format!("msg.{}.{}.{}", (partition + 1) % 16, fx.org, general);
    let record = |id: &str, body: &str| StoredMessage {
        org: fx.org,
        channel: general,
        sender: fx.user("alice"),
        client_msg_id: id.to_owned(),
        body: body.to_owned(),
        ts: 1_700_000_000_000,
    };
    let mut seqs = Vec::new();
    // In one batch: good, undecodable, a NUL Postgres cannot store, an id longer than the
    // table allows, good; then a well-formed record on another partition's subject.
    let records: Vec<(&str, Vec<u8>)> = vec![
        (&subject, serde_json::to_vec(&record("good-1", "fine"))?),
        (&subject, b"{this is not json".to_vec()),
        (&subject, serde_json::to_vec(&record("nul", "a\0b"))?),
        (&subject, serde_json::to_vec(&record(&"x".repeat(65), "id too long for the table"))?),
        (&subject, serde_json::to_vec(&record("good-2", "also fine"))?),
        (&wrong_partition, serde_json::to_vec(&record("elsewhere", "not this org's partition"))?),
    ];
    for (subject, payload) in records {
        seqs.push(jetstream.publish(subject.to_owned(), payload.into()).await?.await?.sequence);
    }
    // The partition keeps flowing for later messages sent through a gateway.
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let (after, _, _) = send_and_ack(&mut alice, general, "after-poison", "after the poison").await?;

    let rows = wait_archived(&fx.stack, 3, Duration::from_secs(30)).await?;
    let archived: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(archived, vec![seqs[0], seqs[4], after]);
    // Delivered implies durable: the gateway refuses exactly what the bridge refuses.
    let delivered: Vec<u64> = recv_messages(&mut bob, 3).await?.iter().map(|m| m.seq).collect();
    assert_eq!(delivered, archived, "bob received records the archive refused");
    threadspace_tests::expect_no_message(&mut bob, Duration::from_millis(500)).await?;

    let mut dlq = jetstream.get_stream(dead_letter::STREAM).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Each sink files the four invalid records.
    while dlq.info().await?.state.messages < 8 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dlq.info().await?.state.messages, 8, "four dead letters per sink, once each");
    let mut letters = BTreeMap::new();
    for n in 1..=dlq.info().await?.state.messages {
        let letter = dlq.get_raw_message(n).await?;
        let header = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
        if header(dead_letter::SINK_HEADER) != "archive" {
            continue;
        }
        letters.insert(
            header(dead_letter::SEQ_HEADER).parse::<u64>()?,
            (header(dead_letter::KIND_HEADER), header(dead_letter::REASON_HEADER)),
        );
    }
    assert_eq!(letters.keys().copied().collect::<Vec<_>>(), vec![seqs[1], seqs[2], seqs[3], seqs[5]]);
    for (seq, why) in [
        (seqs[1], "not a stored message"),
        (seqs[2], "U+0000"),
        (seqs[3], "client_msg_id"),
        (seqs[5], "partition"),
    ] {
        assert_eq!(letters[&seq].0, "undecodable", "seq {seq}: {:?}", letters[&seq]);
        assert!(letters[&seq].1.contains(why), "seq {seq}: the reason names {why:?}: {:?}", letters[&seq]);
    }
    let port = fx.stack.bridges[0].port;
    assert_eq!(metric(port, "threadspace_bridge_dead_letters_total", "sink=\"archive\"").await?, 4.0);
    assert_eq!(metric(port, "threadspace_bridge_dead_letters_total", "sink=\"search\"").await?, 4.0);
    let log = fx.stack.bridges[0].log_tail(200);
    assert!(
        log.contains(&format!("seq={}", seqs[1])) && log.contains("dead-letter"),
        "the log names the seq:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_recreated_and_nothing_is_skipped() -> anyhow::Result<()> {
    let fx = fixture(&[]).await?;
    let general = fx.channel("general").await;
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(send_and_ack(&mut alice, general, &format!("first-{i}"), "first").await?.0);
    }
    wait_archived(&fx.stack, 10, Duration::from_secs(20)).await?;
    let port = fx.stack.bridges[0].port;
    let created = metric(port, "threadspace_bridge_consumers_created_total", "").await?;
    assert_eq!(created, 32.0, "16 partitions × (archive, search)");
    let partition = threadspace_protocol::subjects::partition_of(fx.org, 16);
    let nats = async_nats::connect(fx.stack.nats.url.as_str()).await?;
    let stream = async_nats::jetstream::new(nats).get_stream("MESSAGES").await?;
    stream.delete_consumer(&format!("writer-p{partition}")).await?;
    for i in 0..10 {
        acked.push(send_and_ack(&mut alice, general, &format!("second-{i}"), "second").await?.0);
    }
    let rows = wait_archived(&fx.stack, 20, Duration::from_secs(30)).await?;
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), acked);
    assert_eq!(metric(port, "threadspace_bridge_consumers_created_total", "sink=\"archive\"").await?, 17.0);
    Ok(())
}

/// Pages through a channel's history with `step` (backward with `before`, or forward with
/// `after`) and returns the seqs in ascending order.
async fn page_all(
    fx: &Fixture,
    token: &str,
    channel: i64,
    limit: usize,
    forward: bool,
) -> anyhow::Result<Vec<u64>> {
    let mut seqs: Vec<u64> = Vec::new();
    let mut cursor: Option<u64> = if forward { Some(0) } else { None };
    for _ in 0..100 {
        let path = match (forward, cursor) {
            (true, Some(after)) => format!("/v1/channels/{channel}/messages?after={after}&limit={limit}"),
            (false, Some(before)) => format!("/v1/channels/{channel}/messages?before={before}&limit={limit}"),
            _ => format!("/v1/channels/{channel}/messages?limit={limit}"),
        };
        let (status, page) = get_json(&fx.stack, &path, Some(token)).await?;
        anyhow::ensure!(status == 200, "{path}: {status} {page}");
        let got: Vec<u64> = page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["seq"].as_u64().expect("seq"))
            .collect();
        anyhow::ensure!(got.windows(2).all(|w| w[0] < w[1]), "{path}: page not ascending: {got:?}");
        anyhow::ensure!(got.len() <= limit, "{path}: page over the limit");
        if forward {
            seqs.extend(&got);
            cursor = got.last().copied().or(cursor);
        } else {
            seqs.splice(0..0, got.iter().copied());
            cursor = got.first().copied().or(cursor);
        }
        if !page["has_more"].as_bool().expect("has_more") {
            return Ok(seqs);
        }
    }
    anyhow::bail!("paging did not end")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_across_partition_boundaries_are_complete_and_ordered() -> anyhow::Result<()> {
    let fx = fixture(&["--rows-per-partition", "10"]).await?;
    let (general, random) = (fx.channel("general").await, fx.channel("random").await);
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let mut in_general = Vec::new();
    for i in 0..45 {
        let channel = if i % 3 == 2 { random } else { general };
        let (seq, _, _) =
            send_and_ack(&mut alice, channel, &format!("h{i}"), &format!("history {i}")).await?;
        if channel == general {
            in_general.push(seq);
        }
    }
    wait_archived(&fx.stack, 45, Duration::from_secs(30)).await?;
    let client = fx.stack.pool.get().await?;
    let partitions = threadspace_store::messages::partitions(&client).await?;
    assert!(partitions.len() >= 5, "45 seqs over partitions of 10: {partitions:?}");

    let token = fx.token("bob");
    assert_eq!(page_all(&fx, &token, general.0, 7, false).await?, in_general, "backward pages");
    assert_eq!(page_all(&fx, &token, general.0, 4, true).await?, in_general, "forward pages");
    // A page's fields are the live frame's.
    let (_, page) =
        get_json(&fx.stack, &format!("/v1/channels/{general}/messages?limit=1"), Some(&token)).await?;
    let last = &page["messages"][0];
    assert_eq!(
        (last["body"].as_str(), last["sender"].as_i64()),
        (Some("history 43"), Some(fx.user("alice").0))
    );
    assert_eq!(page["has_more"], true);
    // Both bounds: the open interval between them.
    let (a, b) = (in_general[3], in_general[9]);
    let (_, page) = get_json(
        &fx.stack,
        &format!("/v1/channels/{general}/messages?after={a}&before={b}&limit=200"),
        Some(&token),
    )
    .await?;
    let got: Vec<u64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(got, in_general[4..9].to_vec());

    // Unhappy paths name what was wrong and read nothing.
    let private = private_channel_without(&fx, "alice").await?;
    // (path, token, status, code, what the message must mention)
    let bad = |query: &str, mentions: &'static str| {
        let path = format!("/v1/channels/{general}/messages{query}");
        (path, Some(token.clone()), 400, "invalid_parameter", mentions)
    };
    let cases: Vec<(String, Option<String>, u16, &str, &str)> = vec![
        (format!("/v1/channels/{private}/messages"), Some(fx.token("alice")), 404, "not_found", "channel"), // a private channel alice is not in: not seen (docs/accounts.md)
        (format!("/v1/channels/{general}/messages"), None, 401, "auth_failed", "Authorization"),
        (format!("/v1/channels/{general}/messages"), Some("garbage".into()), 401, "auth_failed", "token"),
        bad("?before=abc", "`before`"),
        bad("?limit=0", "`limit`"),
        bad("?limit=201", "`limit`"),
        bad("?after=-1", "`after`"),
        bad("?after=9&before=10", "`before`"),
        bad("?limit=5&limit=6", "twice"),
        bad("?page=2", "`page`"),
        ("/v1/channels/zero/messages".to_owned(), Some(token.clone()), 400, "invalid_parameter", "`channel`"),
        // Not UTF-8 once decoded: still the API's error shape, not the router's plain text.
        ("/v1/channels/%FF/messages".to_owned(), Some(token.clone()), 400, "invalid_parameter", "path"),
    ];
    for (path, token, status, code, mentions) in cases {
        let (got, body) = get_json(&fx.stack, &path, token.as_deref()).await?;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(mentions), "{path}: {message:?} should mention {mentions}");
    }
    Ok(())
}

/// A private channel of the org that `handle` is not a member of (some other user is).
async fn private_channel_without(fx: &Fixture, handle: &str) -> anyhow::Result<i64> {
    let client = fx.stack.pool.get().await?;
    let row = client
        .query_one(
            "SELECT c.id FROM channels c WHERE c.org_id = $1 AND c.kind = 'private'
               AND NOT EXISTS (SELECT 1 FROM channel_members m WHERE m.channel_id = c.id AND m.user_id = $2)
             ORDER BY c.id LIMIT 1",
            &[&fx.org.0, &fx.user(handle).0],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_words_respects_membership_and_never_crosses_orgs() -> anyhow::Result<()> {
    let fx = fixture(&[]).await?;
    let (mallory, other_org) = threadspace_tests::seed_other_org(&fx.stack).await?;
    let directory = fx.stack.directory();
    let other_general = directory.channel_by_name(other_org, "general").await?.expect("seeded");
    let (general, random) = (fx.channel("general").await, fx.channel("random").await);
    let private = threadspace_protocol::ChannelId(private_channel_without(&fx, "alice").await?);
    let insider = {
        let client = fx.stack.pool.get().await?;
        let row = client
            .query_one("SELECT user_id FROM channel_members WHERE channel_id = $1 LIMIT 1", &[&private.0])
            .await?;
        threadspace_protocol::UserId(row.get(0))
    };
    let insider_handle = fx.users.iter().find(|(_, id)| **id == insider).map(|(h, _)| h.clone());

    let (mut alice, _) = fx.connect("alice", 0).await?;
    let (best, _, _) = send_and_ack(&mut alice, general, "s1", "the deploy pipeline is green").await?;
    let (second, _, _) = send_and_ack(&mut alice, random, "s2", "deploying the canary now").await?;
    send_and_ack(&mut alice, general, "s3", "lunch at noon?").await?;
    let mut expected_rows = 3;
    if let Some(handle) = &insider_handle {
        let (mut insider, _) = fx.connect(handle, 1).await?;
        send_and_ack(&mut insider, private, "s4", "secret deploy plans").await?;
        expected_rows += 1;
    }
    let mut outsider =
        threadspace_client::Client::connect(&threadspace_client::ConnectOptions::new(fx.stack.ws_url(1)))
            .await?;
    outsider.hello(&fx.stack.token(mallory, other_org), None, threadspace_tests::WAIT).await?;
    send_and_ack(&mut outsider, other_general, "s5", "deploy in the other org").await?;
    expected_rows += 1;
    wait_archived(&fx.stack, expected_rows, Duration::from_secs(30)).await?;
    wait_indexed(&fx.stack, expected_rows as i64, Duration::from_secs(30)).await?;

    let token = fx.token("alice");
    let (status, found) = get_json(&fx.stack, "/v1/search?q=deploy%20pipeline", Some(&token)).await?;
    assert_eq!(status, 200, "{found}");
    let seqs = |v: &serde_json::Value| -> Vec<u64> {
        v["hits"].as_array().expect("hits").iter().map(|h| h["seq"].as_u64().expect("seq")).collect()
    };
    assert_eq!(seqs(&found), vec![best], "both words must match (web-search syntax)");
    let (_, found) = get_json(&fx.stack, "/v1/search?q=deploy", Some(&token)).await?;
    assert_eq!(
        seqs(&found).iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([best, second]),
        "stemmed; only alice's channels, only her org: {found}"
    );
    // Pagination through the ranking.
    let (_, first) = get_json(&fx.stack, "/v1/search?q=deploy&limit=1", Some(&token)).await?;
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let (_, next) =
        get_json(&fx.stack, &format!("/v1/search?q=deploy&limit=1&cursor={cursor}"), Some(&token)).await?;
    let mut both = seqs(&first);
    both.extend(seqs(&next));
    assert_eq!(both.iter().copied().collect::<BTreeSet<_>>(), BTreeSet::from([best, second]));
    // One channel only.
    let (_, only) =
        get_json(&fx.stack, &format!("/v1/search?q=deploy&channel={random}"), Some(&token)).await?;
    assert_eq!(seqs(&only), vec![second]);
    // The other org's user finds only their own org's message.
    let (_, theirs) =
        get_json(&fx.stack, "/v1/search?q=deploy", Some(&fx.stack.token(mallory, other_org))).await?;
    assert_eq!(theirs["hits"].as_array().map(Vec::len), Some(1), "{theirs}");
    assert_eq!(theirs["hits"][0]["channel"].as_i64(), Some(other_general.0));
    if let Some(handle) = &insider_handle {
        let (_, inside) = get_json(&fx.stack, "/v1/search?q=secret", Some(&fx.token(handle))).await?;
        assert_eq!(inside["hits"].as_array().map(Vec::len), Some(1), "members find the private message");
        let (_, outside) = get_json(&fx.stack, "/v1/search?q=secret", Some(&token)).await?;
        assert_eq!(outside["hits"].as_array().map(Vec::len), Some(0), "non-members do not");
    }

    let cases: Vec<(String, u16, &str, &str)> = vec![
        ("/v1/search".into(), 400, "invalid_parameter", "`q`"),
        ("/v1/search?q=%20%20".into(), 400, "invalid_parameter", "`q`"),
        ("/v1/search?q=the".into(), 400, "invalid_parameter", "searchable"),
        (format!("/v1/search?q={}", "a".repeat(300)), 400, "invalid_parameter", "`q`"),
        ("/v1/search?q=deploy&limit=0".into(), 400, "invalid_parameter", "`limit`"),
        ("/v1/search?q=deploy&cursor=5000".into(), 400, "invalid_parameter", "`cursor`"),
        ("/v1/search?q=deploy&sort=new".into(), 400, "invalid_parameter", "`sort`"),
        (format!("/v1/search?q=deploy&channel={private}"), 404, "not_found", "channel"),
    ];
    for (path, status, code, mentions) in cases {
        let (got, body) = get_json(&fx.stack, &path, Some(&token)).await?;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains(mentions), "{path}: {body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_gap_older_than_the_stream_tail_is_served_by_history() -> anyhow::Result<()> {
    use threadspace_client::Incoming;
    use threadspace_protocol::frames::ServerFrame;
    let fx = fixture(&[]).await?;
    let general = fx.channel("general").await;
    let (bob, welcome) = fx.connect("bob", 1).await?;
    let cursor = welcome.head_seq;
    drop(bob);
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(send_and_ack(&mut alice, general, &format!("g{i}"), "while bob was away").await?.0);
    }
    wait_archived(&fx.stack, 10, Duration::from_secs(20)).await?;
    // The stream's tail moves past the first 7 (as max_age would after days).
    let nats = async_nats::connect(fx.stack.nats.url.as_str()).await?;
    let stream = async_nats::jetstream::new(nats).get_stream("MESSAGES").await?;
    stream.purge().sequence(acked[7]).await?;

    let (mut bob, _) = fx
        .connect_with("bob", 1, Some(cursor), threadspace_client::ConnectOptions::new(fx.stack.ws_url(1)))
        .await?;
    let mut gap = None;
    let mut replayed = Vec::new();
    loop {
        match bob.recv(threadspace_tests::WAIT).await? {
            Incoming::Frame(ServerFrame::HistoryRequired { after_seq, through_seq }) => {
                gap = Some((after_seq, through_seq))
            }
            Incoming::Frame(ServerFrame::Msg(m)) => replayed.push(m.seq),
            Incoming::Frame(ServerFrame::Resumed { .. }) => break,
            Incoming::Frame(_) => {}
            other => anyhow::bail!("resume ended: {other:?}"),
        }
    }
    let (after_seq, through_seq) = gap.expect("the gap is announced");
    assert_eq!(replayed, acked[7..].to_vec(), "the retained tail is replayed");
    let path =
        format!("/v1/channels/{general}/messages?after={after_seq}&before={}&limit=200", through_seq + 1);
    let (status, page) = get_json(&fx.stack, &path, Some(&fx.token("bob"))).await?;
    assert_eq!(status, 200, "{page}");
    let from_history: Vec<u64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(from_history, acked[..7].to_vec(), "history serves exactly the gap");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_only_expired_partitions() -> anyhow::Result<()> {
    use std::time::SystemTime;
    use threadspace_store::messages::{self, MessageRow};
    let fx = Fixture::start_with(StackOptions::for_tests(0)).await?;
    let mut client = fx.stack.pool.get().await?;
    messages::ensure_partitions(&mut client, 40, 10, 0).await?;
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    // Partitions [1,11) and [11,21) hold only 400-day-old messages; [21,31) mixes old and new
    // (its newest is new: kept); [31,41) is new and holds the newest message.
    let rows: Vec<MessageRow> = (1..=35)
        .map(|seq| {
            let age = if seq <= 25 { day * 400 } else { day };
            MessageRow {
                seq,
                org: fx.org,
                channel: threadspace_protocol::ChannelId(1),
                sender: fx.user("alice"),
                client_msg_id: format!("r{seq}"),
                body: "old news".into(),
                sent_at: now - age,
                stored_at: now - age,
            }
        })
        .collect();
    messages::insert_batch(&client, &rows).await?;
    drop(client);

    let store = threadspace_devstack::tools::threadspace_bindir().join("threadspace-store");
    let run = |args: &[&str]| {
        std::process::Command::new(&store)
            .arg("--postgres-url")
            .arg(&fx.stack.postgres.url)
            .args(args)
            .output()
    };
    let dry = run(&["retention", "--keep", "365days", "--dry-run"])?;
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{text}{}", String::from_utf8_lossy(&dry.stderr));
    assert!(
        text.contains("would drop messages_000000000001")
            && text.contains("would drop messages_000000000011"),
        "{text}"
    );
    assert!(text.contains("kept messages_000000000021"), "{text}");
    assert_eq!(archived(&fx.stack).await?.len(), 35, "a dry run drops nothing");

    let real = run(&["retention", "--keep", "365days"])?;
    assert!(real.status.success(), "{}", String::from_utf8_lossy(&real.stderr));
    let left: Vec<u64> = archived(&fx.stack).await?.iter().map(|r| r.seq).collect();
    assert_eq!(left, (21..=35).collect::<Vec<u64>>(), "only the two expired partitions are gone");
    let client = fx.stack.pool.get().await?;
    let names: Vec<String> = messages::partitions(&client).await?.into_iter().map(|p| p.name).collect();
    assert_eq!(names, vec!["messages_000000000021", "messages_000000000031"]);
    let again = run(&["retention", "--keep", "365days"])?;
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 partition(s) dropped"));

    // A retention shorter than an hour is refused with a reason, and drops nothing.
    let refused = run(&["retention", "--keep", "5m"])?;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--keep"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(archived(&fx.stack).await?.len(), 15);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_switchover_is_followed_and_loses_nothing() -> anyhow::Result<()> {
    let mut fx = fixture(&["--ack-wait", "5s", "--max-backoff", "1s"]).await?;
    // A streaming standby, and the bridge pointed at both with target_session_attrs=read-write.
    let standby_port = threadspace_devstack::free_port()?;
    let standby = fx.stack.postgres.start_standby(&fx.stack.dir.join("standby"), standby_port).await?;
    let primary_port = fx.stack.postgres.port;
    let both = fx.stack.postgres.url.replace(
        &format!("127.0.0.1:{primary_port}/threadspace"),
        &format!(
            "127.0.0.1:{primary_port},127.0.0.1:{standby_port}/threadspace?target_session_attrs=read-write"
        ),
    );
    fx.stack.terminate_bridge(0, Duration::from_secs(10));
    fx.stack.set_bridge_postgres_url(0, &both);
    fx.stack.start_bridge(0).await?;

    let general = fx.channel("general").await;
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(send_and_ack(&mut alice, general, &format!("pre-{i}"), "before the switchover").await?.0);
    }
    wait_archived(&fx.stack, 20, Duration::from_secs(20)).await?;

    // Switchover, the way an operator (or Patroni) fences the old primary: it turns read-only
    // while still up, so the bridge's pooled connections get SQLSTATE 25006 and must be
    // dropped; reconnecting skips read-only hosts, and succeeds once the standby is promoted.
    let old = fx.stack.pool.get().await?;
    old.batch_execute("ALTER SYSTEM SET default_transaction_read_only = on").await?;
    old.batch_execute("SELECT pg_reload_conf()").await?;
    drop(old);
    for i in 0..10 {
        acked.push(
            send_and_ack(&mut alice, general, &format!("fenced-{i}"), "while no primary takes writes")
                .await?
                .0,
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    standby.promote().await?;
    for i in 0..10 {
        acked.push(send_and_ack(&mut alice, general, &format!("post-{i}"), "after the switchover").await?.0);
    }
    // The new primary holds everything, once.
    let pool = threadspace_store::pool(&standby.url, 1)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let stored: Vec<u64> = loop {
        let client = pool.get().await?;
        let rows = client.query("SELECT seq FROM messages ORDER BY seq", &[]).await?;
        let stored: Vec<u64> = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
        if stored.len() >= acked.len() || tokio::time::Instant::now() >= deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stored, acked, "the new primary holds every acked message once");
    let port = fx.stack.bridges[0].port;
    let dropped = metric(port, "threadspace_bridge_write_errors_total", "kind=\"connection\"").await?;
    assert!(dropped > 0.0, "the bridge dropped connections to the read-only primary");
    fx.stack.postgres.stop();
    Ok(())
}

/// Sends until one is acked (the gateway answers `unavailable` while NATS is away).
async fn send_when_nats_is_back(
    client: &mut threadspace_client::Client,
    channel: threadspace_protocol::ChannelId,
    id: &str,
) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match send_and_ack(client, channel, id, "after the restart").await {
            Ok((seq, _, _)) => return Ok(seq),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_is_absorbed_and_nothing_is_skipped() -> anyhow::Result<()> {
    let mut fx = fixture(&[]).await?;
    let general = fx.channel("general").await;
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(send_and_ack(&mut alice, general, &format!("before-{i}"), "before the restart").await?.0);
    }
    wait_archived(&fx.stack, 10, Duration::from_secs(20)).await?;
    let lifetime = fx.stack.options.lifetime;
    fx.stack.nats.restart(lifetime).await?;
    // The first send after the restart may need a retry (same id: idempotent).
    acked.push(send_when_nats_is_back(&mut alice, general, "after-0").await?);
    for i in 1..10 {
        acked.push(send_and_ack(&mut alice, general, &format!("after-{i}"), "after the restart").await?.0);
    }
    let rows = wait_archived(&fx.stack, 20, Duration::from_secs(40)).await?;
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), acked, "every acked message archived once");
    wait_indexed(&fx.stack, 20, Duration::from_secs(20)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_given_up_after_max_deliveries_is_dead_lettered() -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let mut fx =
        fixture(&["--max-deliver", "2", "--ack-wait", "1s", "--max-backoff", "500ms", "--sinks", "archive"])
            .await?;
    let general = fx.channel("general").await;
    fx.stack.terminate_bridge(0, Duration::from_secs(10));
    let (mut alice, _) = fx.connect("alice", 0).await?;
    let (seq, _, _) = send_and_ack(&mut alice, general, "stuck", "a message a bridge keeps dying on").await?;

    // Stand in for a bridge that crashes on this message: take it from the durable consumer
    // twice without acking, letting the ack wait lapse each time.
    let nats = async_nats::connect(fx.stack.nats.url.as_str()).await?;
    let jetstream = async_nats::jetstream::new(nats);
    let partition = threadspace_protocol::subjects::partition_of(fx.org, 16);
    let stream = jetstream.get_stream("MESSAGES").await?;
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(&format!("writer-p{partition}")).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    for delivery in 1..=2 {
        let mut batch = consumer.batch().max_messages(1).expires(Duration::from_secs(3)).messages().await?;
        let message = batch
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("delivery {delivery} missing"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence, seq);
        tokio::time::sleep(Duration::from_millis(1500)).await; // no ack
    }

    // A healthy bridge comes back: JetStream gives up on the message, the bridge files it.
    fx.stack.start_bridge(0).await?;
    let mut dlq = jetstream.get_stream(dead_letter::STREAM).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while dlq.info().await?.state.messages < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let letter = dlq.get_raw_message(1).await?;
    let header = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
    assert_eq!(header(dead_letter::SEQ_HEADER), seq.to_string());
    assert_eq!(header(dead_letter::KIND_HEADER), "max_deliveries");
    assert!(
        header(dead_letter::REASON_HEADER).contains("delivered 2 times"),
        "{}",
        header(dead_letter::REASON_HEADER)
    );
    assert!(String::from_utf8_lossy(&letter.payload).contains("a message a bridge keeps dying on"));
    // Its partition keeps flowing.
    let (next, _, _) = send_and_ack(&mut alice, general, "next", "after the stuck one").await?;
    let rows = wait_archived(&fx.stack, 1, Duration::from_secs(20)).await?;
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![next]);
    Ok(())
}
