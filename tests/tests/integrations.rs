//! Integrations (docs/api.md, "Sending messages" and "Integrations"), against the real stack: a
//! bot posts through its API token and through an incoming webhook, a person sends over REST,
//! members get every message live over the WebSocket and in history, and the archive holds
//! exactly what was acknowledged — once. Scopes, revocation, deactivation, reused ids and bad
//! input are refused with the one error shape and store nothing. Every REST answer is checked
//! against the OpenAPI document.

use std::time::Duration;

use serde_json::{json, Value};
use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_devstack::{Stack, StackOptions};
use threadspace_protocol::frames::ServerFrame;
use threadspace_protocol::{ChannelId, UserId};
use threadspace_tests::accounts::{create_org, invite, Account};
use threadspace_tests::{archived, recv_until, rest, rest_json, rest_raw, send_and_ack, wait_archived, WAIT};

async fn connect(stack: &Stack, account: &Account, gateway: usize) -> anyhow::Result<Client> {
    let mut client = Client::connect(&ConnectOptions::new(stack.ws_url(gateway))).await?;
    client.hello(&account.access, None, WAIT).await?;
    Ok(client)
}

/// Waits for the message stored under `seq` on `client`; returns its sender and body.
async fn delivered(client: &mut Client, seq: u64) -> anyhow::Result<(UserId, String)> {
    let got = recv_until(
        client,
        &format!("message {seq}"),
        |item| matches!(item, Incoming::Frame(ServerFrame::Msg(m)) if m.seq == seq),
    )
    .await?;
    match got {
        Incoming::Frame(ServerFrame::Msg(m)) => Ok((m.sender, m.body)),
        other => anyhow::bail!("not a message: {other:?}"),
    }
}

/// A JSON POST with an optional bearer token: status and body.
async fn post(stack: &Stack, path: &str, token: Option<&str>, body: Value) -> anyhow::Result<(u16, Value)> {
    rest_json(stack, "POST", path, token, &body).await
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn seq(body: &Value) -> u64 {
    body["seq"].as_u64().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_post_through_tokens_and_webhooks_and_members_get_it_live_and_archived_once(
) -> anyhow::Result<()> {
    let mut options = StackOptions::for_tests(2);
    options.bridges = 1;
    let stack = Stack::start(options).await?;
    let owner = create_org(&stack, "acme").await?;
    let ann = invite(&stack, &owner, "member", "ann").await?;
    let bea = invite(&stack, &owner, "member", "bea").await?;
    let gus = invite(&stack, &owner, "guest", "gus").await?;
    let (status, alerts) =
        post(&stack, "/v1/channels", Some(&owner.access), json!({"name": "alerts", "kind": "public"}))
            .await?;
    assert_eq!(status, 201, "{alerts}");
    let alerts = ChannelId(alerts["id"].as_i64().unwrap_or_default());
    let (status, body) =
        rest(&stack, "PUT", &format!("/v1/channels/{alerts}/members/{}", ann.user), Some(&owner.access))
            .await?;
    assert_eq!(status, 200, "{body}");
    let (_, general) = rest(&stack, "GET", "/v1/channels", Some(&owner.access)).await?;
    let general = general["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "general")
        .and_then(|c| c["id"].as_i64())
        .map(ChannelId)
        .ok_or_else(|| anyhow::anyhow!("no #general: {general}"))?;
    let mut ann_ws = connect(&stack, &ann, 1).await?;

    // An admin creates a bot in #alerts and issues it a token (post and read) and a webhook.
    let (status, bot) = post(
        &stack,
        "/v1/bots",
        Some(&owner.access),
        json!({"handle": "deploy-bot", "display_name": "Deploy bot", "channels": [alerts.0]}),
    )
    .await?;
    assert_eq!(status, 201, "{bot}");
    let bot_id = UserId(bot["id"].as_i64().unwrap_or_default());
    let (_, person) = rest(&stack, "GET", &format!("/v1/users/{bot_id}"), Some(&gus.access)).await?;
    assert_eq!(person["error"]["code"], "not_found", "a guest in no shared channel does not see the bot");
    let (_, person) = rest(&stack, "GET", &format!("/v1/users/{bot_id}"), Some(&ann.access)).await?;
    assert_eq!((person["role"].as_str(), person["display_name"].as_str()), (Some("bot"), Some("Deploy bot")));
    let (status, issued) = post(
        &stack,
        &format!("/v1/bots/{bot_id}/tokens"),
        Some(&owner.access),
        json!({"name": "CI", "channels": [alerts.0], "scopes": ["post", "read"]}),
    )
    .await?;
    assert_eq!(status, 201, "{issued}");
    let token = issued["secret"].as_str().unwrap_or_default().to_owned();
    assert!(token.starts_with("tsb_") && token.len() > 40, "{issued}");
    let (status, hook) = post(
        &stack,
        &format!("/v1/bots/{bot_id}/webhooks"),
        Some(&owner.access),
        json!({"name": "Alertmanager", "channel": alerts.0}),
    )
    .await?;
    assert_eq!(status, 201, "{hook}");
    let hook_secret = hook["secret"].as_str().unwrap_or_default().to_owned();
    let hook_url = hook["url"].as_str().unwrap_or_default();
    assert!(hook_url.ends_with(&format!("/v1/hooks/{hook_secret}")), "{hook}");
    let hook_path = format!("/v1/hooks/{hook_secret}");

    // The bot posts with its token: acknowledged, delivered live to Ann on another gateway.
    let path = format!("/v1/channels/{alerts}/messages");
    let message = json!({"client_msg_id": "deploy-1", "body": "Deploy 1 finished"});
    let (status, sent) = post(&stack, &path, Some(&token), message.clone()).await?;
    assert_eq!(status, 201, "{sent}");
    assert_eq!((sent["sender"].as_i64(), sent["duplicate"].as_bool()), (Some(bot_id.0), Some(false)));
    assert_eq!(delivered(&mut ann_ws, seq(&sent)).await?, (bot_id, "Deploy 1 finished".to_owned()));
    // A retry is the same message; the same id for another body stores nothing.
    let (status, again) = post(&stack, &path, Some(&token), message).await?;
    assert_eq!((status, seq(&again), again["duplicate"].as_bool()), (200, seq(&sent), Some(true)), "{again}");
    let (status, reused) =
        post(&stack, &path, Some(&token), json!({"client_msg_id": "deploy-1", "body": "something else"}))
            .await?;
    assert_eq!((status, code(&reused)), (409, "id_reused"), "{reused}");

    // The webhook posts an urgent alert, retried once by its sender.
    let alert = json!({"text": "URGENT: db-primary disk 95% full", "client_msg_id": "alert-8812"});
    let (status, posted) = post(&stack, &hook_path, None, alert.clone()).await?;
    assert_eq!(status, 201, "{posted}");
    assert_eq!(delivered(&mut ann_ws, seq(&posted)).await?.1, "URGENT: db-primary disk 95% full");
    let (status, again) = post(&stack, &hook_path, None, alert).await?;
    assert_eq!((status, seq(&again)), (200, seq(&posted)), "{again}");
    let (status, no_id) = post(&stack, &hook_path, None, json!({"text": "resolved"})).await?;
    assert_eq!(status, 201, "{no_id}");
    assert!(no_id["client_msg_id"].as_str().is_some_and(|id| id.starts_with("hook-")), "{no_id}");

    // A person sends over REST; the id is shared with the WebSocket: one message either way.
    let (ws_seq, _, _) = send_and_ack(&mut ann_ws, alerts, "ann-1", "on it").await?;
    let (status, rest_retry) =
        post(&stack, &path, Some(&ann.access), json!({"client_msg_id": "ann-1", "body": "on it"})).await?;
    assert_eq!((status, seq(&rest_retry)), (200, ws_seq), "a WebSocket send retried over REST: {rest_retry}");
    let (status, by_rest) =
        post(&stack, &path, Some(&ann.access), json!({"client_msg_id": "ann-2", "body": "fixed"})).await?;
    assert_eq!(status, 201, "{by_rest}");
    assert_eq!(delivered(&mut ann_ws, seq(&by_rest)).await?, (ann.user, "fixed".to_owned()));

    // The bot reads its channel's history with the same token.
    let acked = [seq(&sent), seq(&posted), seq(&no_id), ws_seq, seq(&by_rest)];
    let stored = wait_archived(&stack, acked.len(), Duration::from_secs(10)).await?;
    let (status, page) = rest(&stack, "GET", &format!("{path}?limit=50"), Some(&token)).await?;
    assert_eq!(status, 200, "{page}");
    let seqs: Vec<u64> =
        page["messages"].as_array().into_iter().flatten().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, acked, "the bot reads what was posted, in order");

    // Refusals: each with the one error shape, none storing anything.
    let refusals: Vec<Refusal> = vec![
        (
            "a bot token outside its channels",
            format!("/v1/channels/{general}/messages"),
            Some(&token),
            json!({"client_msg_id": "x-1", "body": "hi"}),
            403,
            "forbidden",
        ),
        (
            "a guest to a channel it was not added to",
            path.clone(),
            Some(&gus.access),
            json!({"client_msg_id": "x-2", "body": "hi"}),
            404,
            "not_found",
        ),
        (
            "a member to a public channel not joined",
            path.clone(),
            Some(&bea.access),
            json!({"client_msg_id": "x-3", "body": "hi"}),
            403,
            "not_member",
        ),
        (
            "an empty body",
            path.clone(),
            Some(&token),
            json!({"client_msg_id": "x-4", "body": "  "}),
            400,
            "invalid_field",
        ),
        (
            "a NUL in the body",
            path.clone(),
            Some(&token),
            json!({"client_msg_id": "x-5", "body": "a\u{0}b"}),
            400,
            "invalid_field",
        ),
        (
            "a bad client_msg_id",
            path.clone(),
            Some(&token),
            json!({"client_msg_id": "a b", "body": "hi"}),
            400,
            "invalid_field",
        ),
        (
            "an unknown field",
            path.clone(),
            Some(&token),
            json!({"client_msg_id": "x-6", "body": "hi", "urgent": true}),
            400,
            "invalid_body",
        ),
        (
            "a body over the limit",
            path.clone(),
            Some(&token),
            json!({"client_msg_id": "x-7", "body": "x".repeat(16 * 1024 + 1)}),
            413,
            "body_too_large",
        ),
        (
            "a wrong webhook secret",
            format!("/v1/hooks/tsw_{}", "A".repeat(43)),
            None,
            json!({"text": "hi"}),
            401,
            "auth_failed",
        ),
        ("not a webhook secret", "/v1/hooks/hello".into(), None, json!({"text": "hi"}), 401, "auth_failed"),
        (
            "a bot token as a webhook secret",
            format!("/v1/hooks/{token}"),
            None,
            json!({"text": "hi"}),
            401,
            "auth_failed",
        ),
        (
            "a webhook without text",
            hook_path.clone(),
            None,
            json!({"client_msg_id": "x-8"}),
            400,
            "invalid_body",
        ),
        (
            "a Slack payload field",
            hook_path.clone(),
            None,
            json!({"text": "hi", "username": "x"}),
            400,
            "invalid_body",
        ),
        (
            "a bot token managing bots",
            "/v1/bots".into(),
            Some(&token),
            json!({"handle": "b2", "display_name": "B", "channels": []}),
            401,
            "auth_failed",
        ),
        (
            "a member managing bots",
            "/v1/bots".into(),
            Some(&ann.access),
            json!({"handle": "b2", "display_name": "B", "channels": []}),
            403,
            "forbidden",
        ),
        (
            "a token scoped to a channel the bot is not in",
            format!("/v1/bots/{bot_id}/tokens"),
            Some(&owner.access),
            json!({"name": "x", "channels": [general.0], "scopes": ["post"]}),
            400,
            "invalid_field",
        ),
        (
            "an unknown scope",
            format!("/v1/bots/{bot_id}/tokens"),
            Some(&owner.access),
            json!({"name": "x", "channels": [alerts.0], "scopes": ["admin"]}),
            400,
            "invalid_field",
        ),
        (
            "no scope",
            format!("/v1/bots/{bot_id}/tokens"),
            Some(&owner.access),
            json!({"name": "x", "channels": [alerts.0], "scopes": []}),
            400,
            "invalid_field",
        ),
        (
            "a person's id as a bot",
            format!("/v1/bots/{}/tokens", ann.user),
            Some(&owner.access),
            json!({"name": "x", "channels": [alerts.0], "scopes": ["post"]}),
            404,
            "not_found",
        ),
        (
            "a bot in a DM",
            "/v1/bots".into(),
            Some(&owner.access),
            json!({"handle": "b3", "display_name": "B", "channels": [dm(&stack, &owner, &ann).await?.0]}),
            400,
            "invalid_field",
        ),
        (
            "a taken handle",
            "/v1/bots".into(),
            Some(&owner.access),
            json!({"handle": "ann", "display_name": "B", "channels": []}),
            409,
            "conflict",
        ),
        (
            "inviting a bot",
            "/v1/invites".into(),
            Some(&owner.access),
            json!({"role": "bot"}),
            400,
            "invalid_field",
        ),
    ];
    let credentials_before = credential_rows(&stack).await?;
    for (what, path, token, body, status, want) in refusals {
        let (got, answer) = post(&stack, &path, token, body).await?;
        assert_eq!((got, code(&answer)), (status, want), "{what}: {answer}");
    }
    assert_eq!(credential_rows(&stack).await?, credentials_before, "a refusal issued a credential");
    let (status, me) = rest(&stack, "GET", "/v1/me", Some(&token)).await?;
    assert_eq!((status, code(&me)), (401, "auth_failed"), "a bot token is not a person's: {me}");
    let (status, role) = rest_json(
        &stack,
        "PUT",
        &format!("/v1/users/{bot_id}/role"),
        Some(&owner.access),
        &json!({"role": "member"}),
    )
    .await?;
    assert_eq!((status, code(&role)), (403, "forbidden"), "a bot stays a bot: {role}");

    // A read-only token may not post; a post-only token may not read.
    let (_, read_only) = post(
        &stack,
        &format!("/v1/bots/{bot_id}/tokens"),
        Some(&owner.access),
        json!({"name": "reader", "channels": [alerts.0], "scopes": ["read"]}),
    )
    .await?;
    let read_only = read_only["secret"].as_str().unwrap_or_default().to_owned();
    let (status, refused) =
        post(&stack, &path, Some(&read_only), json!({"client_msg_id": "x-9", "body": "hi"})).await?;
    assert_eq!((status, code(&refused)), (403, "forbidden"), "{refused}");
    let (status, _) = rest(&stack, "GET", &path, Some(&read_only)).await?;
    assert_eq!(status, 200);

    // An admin never reaches, through a bot, a channel they do not see: Ann adds the bot to her
    // private channel, and the owner (not in it) cannot scope a token to it. Bots are not
    // people to open a DM with.
    let (status, hidden) =
        post(&stack, "/v1/channels", Some(&ann.access), json!({"name": "ann-only", "kind": "private"}))
            .await?;
    assert_eq!(status, 201, "{hidden}");
    let hidden = hidden["id"].as_i64().unwrap_or_default();
    let (status, body) =
        rest(&stack, "PUT", &format!("/v1/channels/{hidden}/members/{bot_id}"), Some(&ann.access)).await?;
    assert_eq!(status, 200, "{body}");
    let (status, refused) = post(
        &stack,
        &format!("/v1/bots/{bot_id}/tokens"),
        Some(&owner.access),
        json!({"name": "peek", "channels": [hidden], "scopes": ["read"]}),
    )
    .await?;
    assert_eq!((status, code(&refused)), (404, "not_found"), "{refused}");
    let (status, refused) = post(
        &stack,
        &format!("/v1/bots/{bot_id}/webhooks"),
        Some(&owner.access),
        json!({"name": "x", "channel": hidden}),
    )
    .await?;
    assert_eq!((status, code(&refused)), (404, "not_found"), "{refused}");
    let (status, refused) =
        post(&stack, "/v1/conversations", Some(&ann.access), json!({"members": [bot_id.0]})).await?;
    assert_eq!((status, code(&refused)), (404, "not_found"), "a DM with a bot: {refused}");

    // Another org's admin finds none of it; the bot's token does not reach the other org.
    let globex = create_org(&stack, "globex").await?;
    let (_, theirs) = rest(&stack, "GET", "/v1/bots", Some(&globex.access)).await?;
    assert_eq!(theirs["bots"], json!([]), "{theirs}");
    let (status, refused) = post(
        &stack,
        &format!("/v1/bots/{bot_id}/tokens"),
        Some(&globex.access),
        json!({"name": "x", "channels": [alerts.0], "scopes": ["read"]}),
    )
    .await?;
    assert_eq!((status, code(&refused)), (404, "not_found"), "{refused}");
    let (status, refused) = post(
        &stack,
        "/v1/bots",
        Some(&globex.access),
        json!({"handle": "spy", "display_name": "Spy", "channels": [alerts.0]}),
    )
    .await?;
    assert_eq!((status, code(&refused)), (404, "not_found"), "{refused}");
    let (_, their_channels) = rest(&stack, "GET", "/v1/channels", Some(&globex.access)).await?;
    let their_general = their_channels["channels"][0]["id"].as_i64().unwrap_or_default();
    let (status, refused) = post(
        &stack,
        &format!("/v1/channels/{their_general}/messages"),
        Some(&token),
        json!({"client_msg_id": "x-11", "body": "hi"}),
    )
    .await?;
    assert_eq!((status, code(&refused)), (403, "forbidden"), "{refused}");

    // Revoked: refused from the next request on; revoking again changes nothing.
    let credential = issued["credential"]["id"].as_i64().unwrap_or_default();
    let revoke = format!("/v1/bots/{bot_id}/credentials/{credential}");
    for _ in 0..2 {
        let (status, revoked) = rest(&stack, "DELETE", &revoke, Some(&owner.access)).await?;
        assert_eq!((status, revoked["revoked"].as_bool()), (200, Some(true)), "{revoked}");
    }
    let (status, other_bot) = post(
        &stack,
        "/v1/bots",
        Some(&owner.access),
        json!({"handle": "other-bot", "display_name": "Other", "channels": []}),
    )
    .await?;
    assert_eq!(status, 201, "{other_bot}");
    let other_revoke = format!("/v1/bots/{}/credentials/{credential}", other_bot["id"]);
    let (status, refused) = rest(&stack, "DELETE", &other_revoke, Some(&owner.access)).await?;
    assert_eq!((status, code(&refused)), (404, "not_found"), "another bot's credential: {refused}");
    let (status, refused) =
        post(&stack, &path, Some(&token), json!({"client_msg_id": "x-10", "body": "hi"})).await?;
    assert_eq!((status, code(&refused)), (401, "auth_failed"), "{refused}");

    // Removed from the channel, the bot's credentials stop there; deactivated, everywhere.
    let (status, body) =
        rest(&stack, "DELETE", &format!("/v1/channels/{alerts}/members/{bot_id}"), Some(&owner.access))
            .await?;
    assert_eq!(status, 200, "{body}");
    let (status, refused) = post(&stack, &hook_path, None, json!({"text": "after removal"})).await?;
    assert_eq!((status, code(&refused)), (403, "not_member"), "{refused}");
    let (status, refused) = rest(&stack, "GET", &path, Some(&read_only)).await?;
    assert_eq!((status, code(&refused)), (403, "not_member"), "{refused}");
    let (status, body) =
        rest(&stack, "POST", &format!("/v1/users/{bot_id}/deactivate"), Some(&owner.access)).await?;
    assert_eq!(status, 200, "{body}");
    let (status, refused) = post(&stack, &hook_path, None, json!({"text": "after deactivation"})).await?;
    assert_eq!((status, code(&refused)), (401, "auth_failed"), "{refused}");
    let (status, refused) = rest(&stack, "GET", &path, Some(&read_only)).await?;
    assert_eq!((status, code(&refused)), (401, "auth_failed"), "{refused}");

    // An archived channel is read-only: a member's send is 409, not a 403 or 404.
    let pg = stack.pool.get().await?;
    pg.execute("UPDATE channels SET archived_at = now() WHERE id = $1", &[&alerts.0]).await?;
    let (status, refused) =
        post(&stack, &path, Some(&ann.access), json!({"client_msg_id": "x-12", "body": "hi"})).await?;
    assert_eq!((status, code(&refused)), (409, "archived"), "{refused}");
    let (status, refused) =
        post(&stack, &path, Some(&bea.access), json!({"client_msg_id": "x-13", "body": "hi"})).await?;
    assert_eq!(
        (status, code(&refused)),
        (403, "not_member"),
        "a non-member of an archived channel: {refused}"
    );

    // The list shows both credentials, never a secret; the audit log has every step.
    let (_, bots) = rest(&stack, "GET", "/v1/bots", Some(&owner.access)).await?;
    let listed = bots.to_string();
    assert!(!listed.contains("tsb_") && !listed.contains("tsw_"), "secrets listed: {listed}");
    let kinds: Vec<(&str, bool)> = bots["bots"][0]["credentials"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["kind"].as_str()?, c["revoked"].as_bool()?)))
        .collect();
    assert_eq!(kinds, [("token", true), ("webhook", false), ("token", false)], "{bots}");
    let (_, log) = rest(&stack, "GET", "/v1/audit?limit=100", Some(&owner.access)).await?;
    let actions: Vec<&str> =
        log["events"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    for action in ["bot.created", "bot.credential_issued", "bot.credential_revoked", "user.deactivated"] {
        assert!(actions.contains(&action), "{action} not in the audit log: {actions:?}");
    }
    let issued_count = actions.iter().filter(|a| **a == "bot.credential_issued").count();
    assert_eq!(issued_count, 3, "{actions:?}");
    let revoked_count = actions.iter().filter(|a| **a == "bot.credential_revoked").count();
    assert_eq!(revoked_count, 1, "a repeated revoke is not recorded again: {actions:?}");

    // The archive holds exactly the acknowledged messages, each once; nothing refused was stored.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = archived(&stack).await?;
    assert_eq!(rows.len(), stored.len(), "nothing after the acknowledged messages was stored: {rows:?}");
    let archived_seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(archived_seqs, acked, "the archive is the acknowledged set");
    assert!(rows.iter().all(|r| r.body != "something else" && r.body != "hi"), "{rows:?}");
    Ok(())
}

/// A request that must be refused: what it is, path, token, body, status and error code.
type Refusal<'a> = (&'a str, String, Option<&'a str>, Value, u16, &'a str);

/// A DM of `a` and `b`, opened by `a`.
async fn dm(stack: &Stack, a: &Account, b: &Account) -> anyhow::Result<ChannelId> {
    let (status, dm) =
        post(stack, "/v1/conversations", Some(&a.access), json!({"members": [b.user.0]})).await?;
    anyhow::ensure!(status == 201 || status == 200, "open a DM: {status} {dm}");
    Ok(ChannelId(dm["id"].as_i64().unwrap_or_default()))
}

async fn credential_rows(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let client = stack.pool.get().await?;
    let rows = client
        .query(
            "SELECT id::text || kind || coalesce(revoked_at::text, '') FROM bot_credentials ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bot_credential_has_its_own_rate() -> anyhow::Result<()> {
    let mut options = StackOptions::for_tests(1);
    options.api_args = vec!["--rate-per-bot-credential".into(), "1".into()];
    let stack = Stack::start(options).await?;
    let owner = create_org(&stack, "acme").await?;
    let (_, channels) = rest(&stack, "GET", "/v1/channels", Some(&owner.access)).await?;
    let general = channels["channels"][0]["id"].as_i64().unwrap_or_default();
    let (status, bot) = post(
        &stack,
        "/v1/bots",
        Some(&owner.access),
        json!({"handle": "reader", "display_name": "Reader", "channels": [general]}),
    )
    .await?;
    assert_eq!(status, 201, "{bot}");
    let bot = bot["id"].as_i64().unwrap_or_default();
    let mut tokens = Vec::new();
    for name in ["one", "two"] {
        let (status, issued) = post(
            &stack,
            &format!("/v1/bots/{bot}/tokens"),
            Some(&owner.access),
            json!({"name": name, "channels": [general], "scopes": ["read"]}),
        )
        .await?;
        assert_eq!(status, 201, "{issued}");
        tokens.push(issued["secret"].as_str().unwrap_or_default().to_owned());
    }
    // 1/s with bursts of 5: requests in a row are refused with Retry-After once the burst
    // (and what refilled meanwhile) is spent…
    let path = format!("/v1/channels/{general}/messages");
    let started = std::time::Instant::now();
    let mut allowed = 0;
    loop {
        let (status, body, response) = rest_raw(&stack, "GET", &path, Some(&tokens[0]), None).await?;
        if status == 429 {
            assert_eq!(code(&body), "rate_limited", "{body}");
            assert!(response.header("retry-after").is_some(), "429 without Retry-After");
            break;
        }
        assert_eq!(status, 200, "{body}");
        allowed += 1;
        assert!(allowed <= 30, "30 requests in a row and no 429");
    }
    let refilled = started.elapsed().as_secs_f64().ceil() as usize;
    assert!((5..=5 + refilled).contains(&allowed), "{allowed} allowed in {:?}", started.elapsed());
    // …while the bot's other token has its own budget.
    let (status, _) = rest(&stack, "GET", &path, Some(&tokens[1])).await?;
    assert_eq!(status, 200, "another credential is not limited by the first");
    Ok(())
}
