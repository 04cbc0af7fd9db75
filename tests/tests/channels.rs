//! Channels, DMs and group DMs over the API (docs/api.md, "Channels"), against the real stack:
//! a company creates channels and opens conversations, members hear of them live (`member`
//! frames in stream order) and post at once; names are unique under concurrent creation; the
//! same people opened from both sides at once get one conversation; the browser and member
//! lists; bad input stores nothing. Every REST answer is checked against the OpenAPI document.

use std::collections::HashSet;

use serde_json::{json, Value};
use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_devstack::{Stack, StackOptions};
use threadspace_protocol::frames::{ChannelChange, MemberChange, ServerFrame};
use threadspace_protocol::ChannelId;
use threadspace_tests::accounts::{create_org, invite, Account};
use threadspace_tests::{recv_until, rest, rest_json, rest_raw, send_and_ack, WAIT};

async fn connect(stack: &Stack, account: &Account) -> anyhow::Result<Client> {
    let mut client = Client::connect(&ConnectOptions::new(stack.ws_url(0))).await?;
    client.hello(&account.access, None, WAIT).await?;
    Ok(client)
}

/// Waits for the `member` frame telling `client` it joined `channel`.
async fn joined(client: &mut Client, channel: ChannelId) -> anyhow::Result<()> {
    recv_until(client, "a member frame", |item| {
        matches!(item, Incoming::Frame(ServerFrame::Member { channel: c, change: MemberChange::Joined, .. }) if *c == channel)
    })
    .await
    .map(|_| ())
}

fn id(value: &Value) -> ChannelId {
    ChannelId(value["id"].as_i64().unwrap_or_default())
}

/// Rows of the tables a refused request must not touch.
async fn conversations_state(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let client = stack.pool.get().await?;
    let rows = client
        .query(
            "SELECT 'c' || id || kind || coalesce(name, '') || coalesce(dm_key, '') FROM channels
             UNION ALL SELECT 'm' || channel_id || ':' || user_id FROM channel_members
             UNION ALL SELECT 'e' || org_id || ':' || version FROM directory_events ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_creates_channels_and_conversations_and_members_post_in_them_live() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::for_tests(1)).await?;
    let owner = create_org(&stack, "acme").await?;
    let ann = invite(&stack, &owner, "member", "ann").await?;
    let bea = invite(&stack, &owner, "member", "bea").await?;
    let gus = invite(&stack, &owner, "guest", "gus").await?;
    let mut ann_ws = connect(&stack, &ann).await?;
    let mut bea_ws = connect(&stack, &bea).await?;

    // A member creates a public channel; another joins it from the browser and both post.
    let (status, ops) = rest_json(
        &stack,
        "POST",
        "/v1/channels",
        Some(&ann.access),
        &json!({"name": "ops", "kind": "public"}),
    )
    .await?;
    assert_eq!(status, 201, "{ops}");
    assert_eq!((ops["kind"].as_str(), ops["members"].clone()), (Some("public"), json!([ann.user.0])));
    assert!(ops["position"].as_u64().is_some(), "the join was published: {ops}");
    let ops_id = id(&ops);
    joined(&mut ann_ws, ops_id).await?;
    let (_, listed) = rest(&stack, "GET", "/v1/browse/channels?q=OP", Some(&bea.access)).await?;
    assert_eq!(listed["channels"], json!([{"id": ops_id.0, "name": "ops", "members": 1, "joined": false}]));
    let (status, body) =
        rest(&stack, "PUT", &format!("/v1/channels/{ops_id}/members/{}", bea.user), Some(&bea.access))
            .await?;
    assert_eq!(status, 200, "{body}");
    joined(&mut bea_ws, ops_id).await?;
    let (seq, _, _) = send_and_ack(&mut ann_ws, ops_id, "ops-1", "deploy at noon").await?;
    let got = recv_until(
        &mut bea_ws,
        "ann's message",
        |item| matches!(item, Incoming::Frame(ServerFrame::Msg(m)) if m.seq == seq),
    )
    .await?;
    assert!(matches!(got, Incoming::Frame(ServerFrame::Msg(m)) if m.body == "deploy at noon"));
    let (_, members) =
        rest(&stack, "GET", &format!("/v1/channels/{ops_id}/members"), Some(&owner.access)).await?;
    let mut both = vec![ann.user.0, bea.user.0];
    both.sort_unstable();
    assert_eq!(members["members"], json!(both), "{members}");

    // A private channel is invisible to others: not in the browser, its members 404.
    let (status, secret) = rest_json(
        &stack,
        "POST",
        "/v1/channels",
        Some(&owner.access),
        &json!({"name": "secret", "kind": "private"}),
    )
    .await?;
    assert_eq!(status, 201, "{secret}");
    let (_, listed) = rest(&stack, "GET", "/v1/browse/channels", Some(&ann.access)).await?;
    let names: Vec<&str> =
        listed["channels"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["general", "ops"], "public channels by name: {listed}");
    let (status, _) =
        rest(&stack, "GET", &format!("/v1/channels/{}/members", id(&secret)), Some(&ann.access)).await?;
    assert_eq!(status, 404);

    // A DM: opened by Ann, opened again by Bea — the same conversation, created once.
    let (status, dm) =
        rest_json(&stack, "POST", "/v1/conversations", Some(&ann.access), &json!({"members": [bea.user.0]}))
            .await?;
    assert_eq!(status, 201, "{dm}");
    assert_eq!(dm["kind"], "dm");
    joined(&mut bea_ws, id(&dm)).await?;
    let (status, again) = rest_json(
        &stack,
        "POST",
        "/v1/conversations",
        Some(&bea.access),
        &json!({"members": [ann.user.0, bea.user.0]}),
    )
    .await?;
    assert_eq!(
        (status, again["id"].clone(), again["created"].clone()),
        (200, dm["id"].clone(), json!(false))
    );
    let (seq, _, _) = send_and_ack(&mut bea_ws, id(&dm), "dm-1", "lunch?").await?;
    recv_until(
        &mut ann_ws,
        "the DM",
        |item| matches!(item, Incoming::Frame(ServerFrame::Msg(m)) if m.seq == seq),
    )
    .await?;

    // A group DM of three; the owner's channel list names its members.
    let (status, group) = rest_json(
        &stack,
        "POST",
        "/v1/conversations",
        Some(&owner.access),
        &json!({"members": [ann.user.0, bea.user.0]}),
    )
    .await?;
    assert_eq!((status, group["kind"].as_str()), (201, Some("group_dm")), "{group}");
    let (_, mine) = rest(&stack, "GET", "/v1/channels", Some(&owner.access)).await?;
    let listed = mine["channels"].as_array().into_iter().flatten().find(|c| c["id"] == group["id"]).cloned();
    assert_eq!(listed.map(|c| c["members"].clone()), Some(group["members"].clone()));

    // Guests: no channel creation, no browsing, conversations only with people of their
    // channels (Gus is in none yet: everyone is a stranger, answered 404).
    let (status, body) = rest_json(
        &stack,
        "POST",
        "/v1/channels",
        Some(&gus.access),
        &json!({"name": "mine", "kind": "public"}),
    )
    .await?;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    let (status, _) = rest(&stack, "GET", "/v1/browse/channels", Some(&gus.access)).await?;
    assert_eq!(status, 403);
    let (status, _) =
        rest_json(&stack, "POST", "/v1/conversations", Some(&gus.access), &json!({"members": [ann.user.0]}))
            .await?;
    assert_eq!(status, 404);
    let (status, _) =
        rest(&stack, "PUT", &format!("/v1/channels/{ops_id}/members/{}", gus.user), Some(&ann.access))
            .await?;
    assert_eq!(status, 200);
    let (status, _) =
        rest_json(&stack, "POST", "/v1/conversations", Some(&gus.access), &json!({"members": [ann.user.0]}))
            .await?;
    assert_eq!(status, 201, "a guest may talk with someone of their channel");

    // The audit log has the creations.
    let (_, log) = rest(&stack, "GET", "/v1/audit?action=channel", Some(&owner.access)).await?;
    assert_eq!(log["events"].as_array().map(Vec::len), Some(2), "{log}");
    // A private channel's name stays out of it (its readers do not see the channel).
    assert_eq!(log["events"][0]["detail"], json!({"kind": "private", "name": null}), "{log}");
    assert_eq!(log["events"][1]["detail"], json!({"kind": "public", "name": "ops"}), "{log}");
    let (_, log) = rest(&stack, "GET", "/v1/audit?action=conversation", Some(&owner.access)).await?;
    assert_eq!(log["events"].as_array().map(Vec::len), Some(3), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_make_one_channel_and_one_conversation() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::for_tests(1)).await?;
    let owner = create_org(&stack, "acme").await?;
    let admin = invite(&stack, &owner, "admin", "adam").await?;
    let ann = invite(&stack, &owner, "member", "ann").await?;

    // Two admins create the same name at once, ten times: one wins, one gets a conflict.
    for round in 0..10 {
        let body = json!({"name": format!("race-{round}"), "kind": "public"});
        let (a, b) = tokio::join!(
            rest_json(&stack, "POST", "/v1/channels", Some(&owner.access), &body),
            rest_json(&stack, "POST", "/v1/channels", Some(&admin.access), &body),
        );
        let mut statuses = [a?.0, b?.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "round {round}");
    }
    // The same DM opened from both sides at once, ten times: one conversation each time.
    let mut seen = HashSet::new();
    for round in 0..10 {
        let third = invite(&stack, &owner, "member", &format!("p{round}")).await?;
        let (with_third, with_ann) = (json!({"members": [third.user.0]}), json!({"members": [ann.user.0]}));
        let (a, b) = tokio::join!(
            rest_json(&stack, "POST", "/v1/conversations", Some(&ann.access), &with_third),
            rest_json(&stack, "POST", "/v1/conversations", Some(&third.access), &with_ann),
        );
        let ((sa, a), (sb, b)) = (a?, b?);
        assert_eq!(a["id"], b["id"], "round {round}: one conversation");
        let mut statuses = [sa, sb];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 201], "round {round}: created once");
        assert!(seen.insert(a["id"].as_i64()), "a new conversation each round");
    }
    let client = stack.pool.get().await?;
    let dms: i64 = client.query_one("SELECT count(*) FROM channels WHERE kind = 'dm'", &[]).await?.get(0);
    assert_eq!(dms, 10);
    let members: i64 = client
        .query_one(
            "SELECT count(*) FROM channel_members m JOIN channels c ON c.id = m.channel_id WHERE c.kind = 'dm'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(members, 20, "each DM has exactly its two members");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_channel_and_conversation_requests_are_named_and_store_nothing() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::for_tests(1)).await?;
    let owner = create_org(&stack, "acme").await?;
    let ann = invite(&stack, &owner, "member", "ann").await?;
    let deactivated = invite(&stack, &owner, "member", "gone").await?;
    let (status, _) =
        rest(&stack, "POST", &format!("/v1/users/{}/deactivate", deactivated.user), Some(&owner.access))
            .await?;
    assert_eq!(status, 200);
    let other = create_org(&stack, "other").await?;
    let (status, _) = rest_json(
        &stack,
        "POST",
        "/v1/channels",
        Some(&owner.access),
        &json!({"name": "taken", "kind": "public"}),
    )
    .await?;
    assert_eq!(status, 201);

    let before = conversations_state(&stack).await?;
    let long = "a".repeat(81);
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        ("/v1/channels", json!({"name": "Ops", "kind": "public"}), 400, "invalid_field", "`name`"),
        ("/v1/channels", json!({"name": "has space", "kind": "public"}), 400, "invalid_field", "`name`"),
        ("/v1/channels", json!({"name": "-ops", "kind": "public"}), 400, "invalid_field", "`name`"),
        ("/v1/channels", json!({"name": long, "kind": "public"}), 400, "invalid_field", "`name`"),
        (
            "/v1/channels",
            json!({"name": "<img src=x onerror=alert(1)>", "kind": "public"}),
            400,
            "invalid_field",
            "`name`",
        ),
        ("/v1/channels", json!({"name": "ops", "kind": "dm"}), 400, "invalid_field", "`kind`"),
        ("/v1/channels", json!({"name": "ops"}), 400, "invalid_body", "`kind`"),
        (
            "/v1/channels",
            json!({"name": "ops", "kind": "public", "topic": "x"}),
            400,
            "invalid_body",
            "`topic`",
        ),
        ("/v1/channels", json!({"name": "taken", "kind": "private"}), 409, "conflict", "channel"),
        ("/v1/conversations", json!({"members": []}), 400, "invalid_field", "`members`"),
        ("/v1/conversations", json!({"members": [owner.user.0]}), 400, "invalid_field", "`members`"),
        (
            "/v1/conversations",
            json!({"members": [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009]}),
            400,
            "invalid_field",
            "`members`",
        ),
        ("/v1/conversations", json!({"members": [-1]}), 400, "invalid_field", "`members`"),
        ("/v1/conversations", json!({"members": ["ann"]}), 400, "invalid_body", "`members"),
        ("/v1/conversations", json!({"members": [other.user.0]}), 404, "not_found", "members"),
        ("/v1/conversations", json!({"members": [deactivated.user.0]}), 404, "not_found", "members"),
        ("/v1/conversations", json!({"members": [9_000_000_000_000i64]}), 404, "not_found", "members"),
        ("/v1/conversations", json!({"members": [ann.user.0, other.user.0]}), 404, "not_found", "members"),
    ];
    for (path, body, status, code, named) in cases {
        let (got, answer) = rest_json(&stack, "POST", path, Some(&owner.access), &body).await?;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{path} {body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{path} {body}: {message:?} names {named}");
    }
    let (status, _, _) =
        rest_raw(&stack, "POST", "/v1/channels", Some(&owner.access), Some(("text/plain", b"x"))).await?;
    assert_eq!(status, 415);
    for (query, named) in [("limit=0", "`limit`"), ("q=", "`q`"), ("after=%01", "`after`"), ("x=1", "`x`")] {
        let (status, body) = rest(&stack, "GET", &format!("/v1/browse/channels?{query}"), None).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_parameter")), "{query}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains(named), "{query}: {body}");
    }
    for (path, status) in [
        ("/v1/channels/0/members", 400),
        ("/v1/channels/1/members?limit=500", 400),
        ("/v1/channels/9000000000000/members", 404),
    ] {
        let (got, body) = rest(&stack, "GET", path, Some(&owner.access)).await?;
        assert_eq!(got, status, "{path}: {body}");
    }
    assert_eq!(conversations_state(&stack).await?, before, "refused requests stored nothing");
    // The conflict left the taken channel as it was.
    let (_, listed) = rest(&stack, "GET", "/v1/browse/channels?q=taken", Some(&owner.access)).await?;
    assert_eq!(listed["channels"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_conversations_are_the_ones_their_people_open() -> anyhow::Result<()> {
    let fixture = threadspace_tests::Fixture::start(1, &[]).await?;
    let stack = &fixture.stack;
    let client = stack.pool.get().await?;
    for kind in ["dm", "group_dm"] {
        let row = client
            .query_one(
                "SELECT c.id, array_agg(m.user_id ORDER BY m.user_id) FROM channels c
                 JOIN channel_members m ON m.channel_id = c.id
                 WHERE c.kind = $1 AND c.dm_key IS NOT NULL GROUP BY c.id ORDER BY c.id LIMIT 1",
                &[&kind],
            )
            .await?;
        let (seeded, members): (i64, Vec<i64>) = (row.get(0), row.get(1));
        let opener = threadspace_protocol::UserId(members[0]);
        let token = stack.token(opener, fixture.org);
        let (status, opened) =
            rest_json(stack, "POST", "/v1/conversations", Some(&token), &json!({"members": members[1..]}))
                .await?;
        assert_eq!((status, opened["id"].as_i64()), (200, Some(seeded)), "the seeded {kind}: {opened}");
    }
    // Every seeded conversation has its key, but those repeating an earlier one's people.
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE dm_key IS NULL), count(*) - count(DISTINCT k) FROM (
                 SELECT c.dm_key, (SELECT string_agg(m.user_id::text, ',' ORDER BY m.user_id)
                                   FROM channel_members m WHERE m.channel_id = c.id) AS k
                 FROM channels c WHERE c.kind IN ('dm', 'group_dm')) conversations",
            &[],
        )
        .await?;
    let (unkeyed, repeats): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(unkeyed, repeats, "unkeyed conversations are exactly the repeated ones");
    Ok(())
}

/// Waits for the `channel` frame about `channel` with `change`; returns its name and topic.
async fn channel_frame(
    client: &mut Client,
    channel: ChannelId,
    change: ChannelChange,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let got = recv_until(client, "a channel frame", |item| {
        matches!(item, Incoming::Frame(ServerFrame::Channel { channel: c, change: x, .. }) if *c == channel && *x == change)
    })
    .await?;
    match got {
        Incoming::Frame(ServerFrame::Channel { name, topic, .. }) => Ok((name, topic)),
        other => anyhow::bail!("not a channel frame: {other:?}"),
    }
}

/// Everything a refused lifecycle request could change.
async fn lifecycle_state(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let client = stack.pool.get().await?;
    let rows = client
        .query(
            "SELECT 'c' || id || kind || coalesce(name, '') || topic || '|' || purpose
                    || CASE WHEN archived_at IS NULL THEN '' ELSE ' archived' END FROM channels
             UNION ALL SELECT 'm' || channel_id || ':' || user_id FROM channel_members
             UNION ALL SELECT 'e' || org_id || ':' || version FROM directory_events ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_renamed_archived_and_unarchived_live_and_archived_history_stays() -> anyhow::Result<()>
{
    let mut options = StackOptions::for_tests(2);
    options.bridges = 1;
    let stack = Stack::start(options).await?;
    let owner = create_org(&stack, "acme").await?;
    let ann = invite(&stack, &owner, "member", "ann").await?;
    let bea = invite(&stack, &owner, "member", "bea").await?;
    let cal = invite(&stack, &owner, "member", "cal").await?;
    let gus = invite(&stack, &owner, "guest", "gus").await?;
    let mut ann_ws = connect(&stack, &ann).await?;
    let mut bea_ws = Client::connect(&ConnectOptions::new(stack.ws_url(1))).await?;
    bea_ws.hello(&bea.access, None, WAIT).await?;

    // Ann creates #ops; Bea joins; the owner adds the guest.
    let body = json!({"name": "ops", "kind": "public"});
    let (status, ops) = rest_json(&stack, "POST", "/v1/channels", Some(&ann.access), &body).await?;
    assert_eq!(status, 201, "{ops}");
    let ops = id(&ops);
    joined(&mut ann_ws, ops).await?;
    for (who, token) in [(bea.user, &bea.access), (gus.user, &owner.access)] {
        let (status, body) =
            rest(&stack, "PUT", &format!("/v1/channels/{ops}/members/{who}"), Some(token)).await?;
        assert_eq!(status, 200, "{body}");
    }
    joined(&mut bea_ws, ops).await?;
    let path = format!("/v1/channels/{ops}");

    // Ann (its creator) renames it and sets a topic, between two messages: Bea, on the other
    // gateway, hears of it live, in stream order.
    let (first, _, _) = send_and_ack(&mut ann_ws, ops, "ops-1", "before the rename").await?;
    let patch = json!({"name": "ops-eu", "topic": "  deploys and incidents  "});
    let (status, changed) = rest_json(&stack, "PATCH", &path, Some(&ann.access), &patch).await?;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["changed"], true);
    assert_eq!(
        (changed["channel"]["name"].as_str(), changed["channel"]["topic"].as_str()),
        (Some("ops-eu"), Some("deploys and incidents"))
    );
    let position = changed["position"].as_u64().unwrap_or_default();
    assert!(position > first, "{changed}");
    let (second, _, _) = send_and_ack(&mut ann_ws, ops, "ops-2", "after the rename").await?;
    let mut order = Vec::new();
    while order.len() < 3 {
        match bea_ws.recv(WAIT).await? {
            Incoming::Frame(ServerFrame::Msg(m)) if m.channel == ops => order.push(format!("msg {}", m.seq)),
            Incoming::Frame(ServerFrame::Channel {
                channel,
                change: ChannelChange::Updated,
                name,
                topic,
                ..
            }) if channel == ops => {
                assert_eq!(
                    (name.as_deref(), topic.as_deref()),
                    (Some("ops-eu"), Some("deploys and incidents"))
                );
                order.push("renamed".into());
            }
            _ => {}
        }
    }
    assert_eq!(order, [format!("msg {first}"), "renamed".to_owned(), format!("msg {second}")]);
    let (_, view) = rest(&stack, "GET", &path, Some(&bea.access)).await?;
    assert_eq!(
        (
            view["name"].as_str(),
            view["created_by"].as_i64(),
            view["members"].as_i64(),
            view["archived"].as_bool()
        ),
        (Some("ops-eu"), Some(ann.user.0), Some(3), Some(false)),
        "{view}"
    );
    // The same values again change nothing.
    let (status, same) =
        rest_json(&stack, "PATCH", &path, Some(&ann.access), &json!({"name": "ops-eu"})).await?;
    assert_eq!((status, same["changed"].clone(), same["position"].clone()), (200, json!(false), Value::Null));

    // Refusals: each named, none storing anything.
    let (_, general) = rest(&stack, "GET", "/v1/browse/channels?q=general", Some(&owner.access)).await?;
    let general = id(&general["channels"][0]);
    let (status, dm) =
        rest_json(&stack, "POST", "/v1/conversations", Some(&ann.access), &json!({"members": [bea.user.0]}))
            .await?;
    assert_eq!(status, 201, "{dm}");
    let dm = id(&dm);
    let before = lifecycle_state(&stack).await?;
    let long = "x".repeat(251);
    // What, where, as whom, the PATCH body (none: a POST), the answer.
    type Refusal<'a> = (&'a str, String, &'a str, Option<Value>, (u16, &'a str));
    let refusals: Vec<Refusal> = vec![
        (
            "bea (not its creator)",
            path.clone(),
            &bea.access,
            Some(json!({"topic": "mine"})),
            (403, "forbidden"),
        ),
        ("the guest", path.clone(), &gus.access, Some(json!({"topic": "mine"})), (403, "forbidden")),
        (
            "renaming #general",
            format!("/v1/channels/{general}"),
            &owner.access,
            Some(json!({"name": "all"})),
            (409, "default_channel"),
        ),
        (
            "a DM",
            format!("/v1/channels/{dm}"),
            &ann.access,
            Some(json!({"topic": "us"})),
            (409, "not_a_channel"),
        ),
        ("a taken name", path.clone(), &ann.access, Some(json!({"name": "general"})), (409, "conflict")),
        ("nothing to change", path.clone(), &ann.access, Some(json!({})), (400, "invalid_field")),
        ("a bad name", path.clone(), &ann.access, Some(json!({"name": "Ops EU"})), (400, "invalid_field")),
        ("a long topic", path.clone(), &ann.access, Some(json!({"topic": long})), (400, "invalid_field")),
        (
            "a control character",
            path.clone(),
            &ann.access,
            Some(json!({"purpose": "a\u{7}b"})),
            (400, "invalid_field"),
        ),
        ("an unknown field", path.clone(), &ann.access, Some(json!({"title": "x"})), (400, "invalid_body")),
        (
            "a bad id",
            "/v1/channels/abc".to_owned(),
            &ann.access,
            Some(json!({"topic": "x"})),
            (400, "invalid_parameter"),
        ),
        (
            "no such channel",
            "/v1/channels/9000000000000".to_owned(),
            &ann.access,
            Some(json!({"topic": "x"})),
            (404, "not_found"),
        ),
        (
            "archiving #general",
            format!("/v1/channels/{general}/archive"),
            &owner.access,
            None,
            (409, "default_channel"),
        ),
        ("archiving a DM", format!("/v1/channels/{dm}/archive"), &ann.access, None, (409, "not_a_channel")),
        ("bea archiving", format!("{path}/archive"), &bea.access, None, (403, "forbidden")),
        ("the guest archiving", format!("{path}/archive"), &gus.access, None, (403, "forbidden")),
    ];
    for (what, path, token, body, want) in refusals {
        let (status, answer) = match body {
            Some(body) => rest_json(&stack, "PATCH", &path, Some(token), &body).await?,
            None => rest(&stack, "POST", &path, Some(token)).await?,
        };
        assert_eq!((status, answer["error"]["code"].as_str().unwrap_or("")), want, "{what}: {answer}");
    }
    assert_eq!(lifecycle_state(&stack).await?, before, "a refused request changed something");
    // #general's topic may be set, by an admin or owner.
    let (status, body) = rest_json(
        &stack,
        "PATCH",
        &format!("/v1/channels/{general}"),
        Some(&owner.access),
        &json!({"topic": "hello"}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");

    // Ann archives it: read-only for everyone, live; its history stays for its members.
    let (status, archived) = rest(&stack, "POST", &format!("{path}/archive"), Some(&ann.access)).await?;
    assert_eq!((status, archived["channel"]["archived"].as_bool()), (200, Some(true)), "{archived}");
    channel_frame(&mut bea_ws, ops, ChannelChange::Archived).await?;
    let refused = send_and_ack(&mut bea_ws, ops, "bea-late", "too late").await;
    assert!(refused.as_ref().is_err_and(|e| e.to_string().contains("NotMember")), "{refused:?}");
    let (status, body) = rest_json(
        &stack,
        "POST",
        &format!("{path}/messages"),
        Some(&ann.access),
        &json!({"client_msg_id": "late-rest", "body": "too late"}),
    )
    .await?;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("archived")), "{body}");
    let (status, body) =
        rest(&stack, "PUT", &format!("{path}/members/{}", cal.user), Some(&owner.access)).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("archived")), "{body}");
    let (status, body) = rest_json(&stack, "PATCH", &path, Some(&ann.access), &json!({"topic": "x"})).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("archived")), "{body}");
    threadspace_tests::wait_archived(&stack, 2, WAIT).await?;
    let (status, page) = rest(&stack, "GET", &format!("{path}/messages"), Some(&bea.access)).await?;
    assert_eq!(status, 200, "{page}");
    let bodies: Vec<&str> =
        page["messages"].as_array().into_iter().flatten().filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(bodies, ["before the rename", "after the rename"]);
    let (status, body) = rest(&stack, "GET", &format!("{path}/messages"), Some(&cal.access)).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("not_member")), "{body}");
    let (_, mine) = rest(&stack, "GET", "/v1/channels", Some(&bea.access)).await?;
    assert!(!mine["channels"].as_array().into_iter().flatten().any(|c| c["id"] == ops.0), "{mine}");
    let (_, browsed) = rest(&stack, "GET", "/v1/browse/channels?archived=true", Some(&cal.access)).await?;
    assert_eq!(browsed["channels"][0]["name"], "ops-eu", "{browsed}");
    let (_, browsed) = rest(&stack, "GET", "/v1/browse/channels", Some(&cal.access)).await?;
    assert!(!browsed["channels"].as_array().into_iter().flatten().any(|c| c["id"] == ops.0), "{browsed}");
    let (status, body) = rest(&stack, "GET", "/v1/browse/channels?archived=maybe", Some(&cal.access)).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_parameter")), "{body}");
    // A new connection's welcome does not list it.
    let mut again_ws = Client::connect(&ConnectOptions::new(stack.ws_url(0))).await?;
    let welcome = again_ws.hello(&bea.access, None, WAIT).await?;
    assert!(!welcome.channels.iter().any(|c| c.id == ops), "{:?}", welcome.channels);
    // Archiving again changes nothing.
    let (status, again) = rest(&stack, "POST", &format!("{path}/archive"), Some(&ann.access)).await?;
    assert_eq!((status, again["changed"].as_bool()), (200, Some(false)), "{again}");

    // Unarchived, it is back for its members, live, and takes messages again.
    let (status, back) = rest(&stack, "POST", &format!("{path}/unarchive"), Some(&owner.access)).await?;
    assert_eq!((status, back["channel"]["archived"].as_bool()), (200, Some(false)), "{back}");
    let (name, topic) = channel_frame(&mut bea_ws, ops, ChannelChange::Unarchived).await?;
    assert_eq!((name.as_deref(), topic.as_deref()), (Some("ops-eu"), Some("deploys and incidents")));
    let (seq, _, _) = send_and_ack(&mut bea_ws, ops, "bea-back", "we are back").await?;
    let got = recv_until(
        &mut ann_ws,
        "bea's message",
        |item| matches!(item, Incoming::Frame(ServerFrame::Msg(m)) if m.seq == seq),
    )
    .await?;
    assert!(matches!(got, Incoming::Frame(ServerFrame::Msg(m)) if m.body == "we are back"));

    let (_, log) = rest(&stack, "GET", "/v1/audit?action=channel", Some(&owner.access)).await?;
    let actions: Vec<&str> =
        log["events"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    for action in ["channel.updated", "channel.archived", "channel.unarchived"] {
        assert!(actions.contains(&action), "{action} not in the audit log: {actions:?}");
    }
    Ok(())
}
