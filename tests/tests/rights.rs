//! Data rights (docs/api.md, "Data rights"), against the real stack with a broker-bridge: a
//! person's export holds exactly the documented keys and their data; an org export too; an
//! erasure under the `delete` policy leaves no trace of the person in Postgres (checked on a
//! full `pg_dump`), in the MESSAGES stream's retained tail or in the dead-letter stream, while
//! others' messages stay; under `anonymise` the messages stay and the person's identity goes.
//! Refusals use the one error shape and store nothing. Every REST answer is checked against the
//! OpenAPI document.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures_util::StreamExt;
use serde_json::{json, Value};
use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_devstack::{Stack, StackOptions};
use threadspace_protocol::frames::ClientFrame;
use threadspace_protocol::subjects::{
    message_subject, DEAD_LETTER_STREAM, HELLO_CACHE_STREAM, MESSAGES_STREAM,
};
use threadspace_protocol::ChannelId;
use threadspace_tests::accounts::{create_org, invite_named, login, Account};
use threadspace_tests::{recv_until, rest, rest_json, rest_raw, send_and_ack, wait_archived, WAIT};

/// The keys of a person's export (docs/api.md lists them).
const USER_EXPORT_KEYS: [&str; 12] = [
    "audit",
    "channels",
    "format",
    "generated_at_ms",
    "job",
    "messages",
    "org",
    "profile",
    "read_markers",
    "scope",
    "sessions",
    "user",
];

/// The keys of an org export.
const ORG_EXPORT_KEYS: [&str; 9] =
    ["channels", "format", "generated_at_ms", "job", "messages", "org", "profile", "scope", "user"];

async fn connect(stack: &Stack, account: &Account) -> anyhow::Result<Client> {
    let mut client = Client::connect(&ConnectOptions::new(stack.ws_url(0))).await?;
    client.hello(&account.access, None, WAIT).await?;
    Ok(client)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// The id of the caller's `general`.
async fn general_of(stack: &Stack, account: &Account) -> anyhow::Result<ChannelId> {
    let (_, list) = rest(stack, "GET", "/v1/channels", Some(&account.access)).await?;
    list["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "general")
        .and_then(|c| c["id"].as_i64())
        .map(ChannelId)
        .ok_or_else(|| anyhow::anyhow!("no #general in {list}"))
}

/// Queues a job with `POST path` as `token` (202), waits for it to end, and returns it.
async fn run_job(stack: &Stack, token: &str, path: &str) -> anyhow::Result<Value> {
    let (status, job) = rest(stack, "POST", path, Some(token)).await?;
    anyhow::ensure!(status == 202 && job["state"] == "queued", "POST {path}: {status} {job}");
    wait_job(stack, token, &job).await
}

async fn wait_job(stack: &Stack, token: &str, job: &Value) -> anyhow::Result<Value> {
    let path = format!("/v1/jobs/{}", job["id"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, job) = rest(stack, "GET", &path, Some(token)).await?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {job}");
        if job["state"] == "done" || job["state"] == "failed" {
            return Ok(job);
        }
        anyhow::ensure!(Instant::now() < deadline, "{path} did not end within 60 s: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Downloads an export's document.
async fn document(stack: &Stack, token: &str, job: &Value) -> anyhow::Result<Value> {
    let path = format!("/v1/jobs/{}/archive", job["id"]);
    let (status, document, response) = rest_raw(stack, "GET", &path, Some(token), None).await?;
    anyhow::ensure!(status == 200, "GET {path}: {status} {document}");
    let disposition = response.header("content-disposition").unwrap_or_default();
    anyhow::ensure!(disposition.starts_with("attachment"), "GET {path}: Content-Disposition {disposition:?}");
    Ok(document)
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn bodies(messages: &Value) -> Vec<String> {
    messages.as_array().into_iter().flatten().filter_map(|m| m["body"].as_str()).map(str::to_owned).collect()
}

/// Everything the database holds, as `pg_dump --data-only` prints it.
fn dump(stack: &Stack) -> anyhow::Result<String> {
    let bindir = threadspace_devstack::tools::postgres_bindir()
        .ok_or_else(|| anyhow::anyhow!("no PostgreSQL binaries for pg_dump"))?;
    let output = std::process::Command::new(bindir.join("pg_dump"))
        .args(["--data-only", "--no-owner", "--dbname", &stack.postgres.url])
        .output()?;
    anyhow::ensure!(output.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Every payload the stream `name` retains (empty if the stream does not exist).
async fn retained(stack: &Stack, name: &str) -> anyhow::Result<Vec<String>> {
    let client = async_nats::connect(stack.nats.url.as_str()).await?;
    let jetstream = async_nats::jetstream::new(client);
    let Ok(stream) = jetstream.get_stream(name).await else { return Ok(Vec::new()) };
    let config = pull::OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() };
    let mut consumer = stream.create_consumer(config).await?;
    if consumer.info().await?.num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer.messages().await?;
    let mut payloads = Vec::new();
    while let Some(message) = tokio::time::timeout(WAIT, messages.next()).await? {
        let message = message?;
        payloads.push(String::from_utf8_lossy(&message.payload).into_owned());
        if message.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending == 0 {
            break;
        }
    }
    Ok(payloads)
}

/// Waits until the dead-letter stream holds `count` records.
async fn wait_dead_letters(stack: &Stack, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = retained(stack, DEAD_LETTER_STREAM).await?.len();
        if n >= count {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{n} dead letters after 30 s, expected {count}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_hold_what_the_docs_list_and_erasure_reaches_every_copy() -> anyhow::Result<()> {
    let mut options = StackOptions::for_tests(1);
    options.bridges = 1;
    options.api_args = ["--publish-timeout", "1s", "--erasure-settle", "1s"].map(String::from).to_vec();
    let stack = Stack::start(options).await?;
    let owner = create_org(&stack, "rights").await?;
    let ann = invite_named(&stack, &owner, "member", "annika", "Annika Zedler").await?;
    let bea = invite_named(&stack, &owner, "member", "beatrix", "Beatrix Quill").await?;
    // A failed login with Ann's address: the audit log keeps the address as typed.
    let (status, _) = login(&stack, "rights", &ann.email, "not her password at all").await?;
    assert_eq!(status, 401);
    let general = general_of(&stack, &owner).await?;

    // Ann writes five messages and reads; Bea writes two.
    let mut ann_ws = connect(&stack, &ann).await?;
    let mut ann_bodies = Vec::new();
    let mut last = 0;
    for i in 0..5 {
        let body = format!("zebracorn{i} says Annika");
        last = send_and_ack(&mut ann_ws, general, &format!("ann-{i}"), &body).await?.0;
        ann_bodies.push(body);
    }
    let mut bea_ws = connect(&stack, &bea).await?;
    for i in 0..2 {
        send_and_ack(&mut bea_ws, general, &format!("bea-{i}"), &format!("quokka{i} says Beatrix")).await?;
    }
    // One more of Ann's that the archive refuses (a time no database holds): a dead letter.
    let nats = async_nats::connect(stack.nats.url.as_str()).await?;
    let refused = json!({"org": ann.org.0, "channel": general.0, "sender": ann.user.0,
                         "client_msg_id": "ann-dead", "body": "zebracorn-dead says Annika", "ts": i64::MAX});
    let jetstream = async_nats::jetstream::new(nats);
    let ack = jetstream
        .publish(message_subject(16, ann.org, general), serde_json::to_vec(&refused)?.into())
        .await?;
    ack.await?;
    wait_archived(&stack, 7, WAIT).await?;
    wait_dead_letters(&stack, 1).await?;
    // Read once archived: a marker ahead of the archive is brought back to its newest message.
    ann_ws.send(&ClientFrame::Read { reference: "r1".into(), channel: general, seq: last }).await?;
    // The read marker is stored.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, me) = rest(&stack, "GET", "/v1/channels", Some(&ann.access)).await?;
        let marker = me["channels"].as_array().into_iter().flatten().find(|c| c["id"] == general.0);
        if marker.is_some_and(|c| c["last_read"] == last) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "Ann's read marker never reached {last}: {me}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Ann's export: exactly the documented keys, and her data.
    let job = run_job(&stack, &ann.access, "/v1/me/export").await?;
    assert_eq!((job["state"].as_str(), job["kind"].as_str()), (Some("done"), Some("export_user")), "{job}");
    assert!(job["archive_available"] == true && job["archive_bytes"].as_i64() > Some(0), "{job}");
    let mine = document(&stack, &ann.access, &job).await?;
    assert_eq!(keys(&mine), USER_EXPORT_KEYS.iter().map(|k| k.to_string()).collect(), "{mine}");
    assert_eq!(
        (mine["format"].as_str(), mine["scope"].as_str()),
        (Some("threadspace.export.v1"), Some("user"))
    );
    assert_eq!(mine["user"], ann.user.0);
    assert_eq!(mine["profile"]["email"], ann.email.as_str());
    assert_eq!(mine["profile"]["display_name"], "Annika Zedler");
    assert_eq!(bodies(&mine["messages"]), ann_bodies, "only her archived messages, in order");
    assert!(mine["channels"].as_array().into_iter().flatten().any(|c| c["id"] == general.0), "{mine}");
    assert!(mine["read_markers"].as_array().into_iter().flatten().any(|m| m["seq"] == last), "{mine}");
    assert!(mine["sessions"].as_array().is_some_and(|s| !s.is_empty()), "{mine}");
    let actions: Vec<&str> =
        mine["audit"].as_array().into_iter().flatten().filter_map(|a| a["action"].as_str()).collect();
    assert!(actions.contains(&"login.failed") && actions.contains(&"invite.accepted"), "{actions:?}");
    assert!(!mine.to_string().contains("password_hash") && !mine.to_string().contains("argon2"), "{mine}");
    // Someone else's job does not exist for Bea; the owner sees it.
    let path = format!("/v1/jobs/{}", job["id"]);
    let (status, body) = rest(&stack, "GET", &path, Some(&bea.access)).await?;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = rest(&stack, "GET", &format!("{path}/archive"), Some(&bea.access)).await?;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    // The owner sees the job, but the document is Ann's alone.
    assert_eq!(rest(&stack, "GET", &path, Some(&owner.access)).await?.0, 200);
    let (status, body) = rest(&stack, "GET", &format!("{path}/archive"), Some(&owner.access)).await?;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");

    // The org's export: its people, channels with members, and the public messages.
    let job = run_job(&stack, &owner.access, "/v1/org/export").await?;
    let org = document(&stack, &owner.access, &job).await?;
    assert_eq!(keys(&org), ORG_EXPORT_KEYS.iter().map(|k| k.to_string()).collect(), "{org}");
    let people: Vec<i64> =
        org["profile"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_i64()).collect();
    assert!(people.contains(&ann.user.0) && people.contains(&bea.user.0), "{people:?}");
    let channel = org["channels"].as_array().into_iter().flatten().find(|c| c["id"] == general.0).cloned();
    assert!(channel.is_some_and(|c| c["members"].as_array().is_some_and(|m| m.len() == 3)), "{org}");
    assert_eq!(org["messages"].as_array().map(Vec::len), Some(7), "{org}");

    // Refusals, each with the one error shape, none storing anything.
    let jobs_before =
        stack.pool.get().await?.query_one("SELECT count(*) FROM data_jobs", &[]).await?.get::<_, i64>(0);
    let erase = format!("/v1/users/{}/erase", ann.user);
    for (token, path, want) in [
        (Some(&bea.access), "/v1/org/export".to_owned(), (403, "forbidden")),
        (Some(&bea.access), erase.clone(), (403, "forbidden")),
        (Some(&owner.access), format!("/v1/users/{}/erase", owner.user), (403, "forbidden")),
        (Some(&owner.access), "/v1/users/abc/erase".to_owned(), (400, "invalid_parameter")),
        (Some(&owner.access), "/v1/users/9000000000000/erase".to_owned(), (404, "not_found")),
        (None, "/v1/me/export".to_owned(), (401, "auth_failed")),
        (None, erase.clone(), (401, "auth_failed")),
    ] {
        let (status, body) = rest(&stack, "POST", &path, token.map(String::as_str)).await?;
        assert_eq!((status, code(&body)), want, "POST {path}: {body}");
    }
    for (path, want) in [
        ("/v1/jobs/abc", (400, "invalid_parameter")),
        ("/v1/jobs/0", (400, "invalid_parameter")),
        ("/v1/jobs/9000000000000", (404, "not_found")),
        ("/v1/jobs/9000000000000/archive", (404, "not_found")),
    ] {
        let (status, body) = rest(&stack, "GET", path, Some(&owner.access)).await?;
        assert_eq!((status, code(&body)), want, "GET {path}: {body}");
    }
    for (body, field) in [
        (json!({"messages": "shred"}), "messages"),
        (json!({"messages": "delete", "also": 1}), "also"),
        (json!({}), "messages"),
    ] {
        let (status, answer) =
            rest_json(&stack, "PUT", "/v1/org/erasure-policy", Some(&owner.access), &body).await?;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains(field)), "{body}: {answer}");
    }
    let (status, answer) =
        rest_json(&stack, "PUT", "/v1/org/erasure-policy", Some(&bea.access), &json!({"messages": "delete"}))
            .await?;
    assert_eq!((status, code(&answer)), (403, "forbidden"), "{answer}");
    let jobs_after =
        stack.pool.get().await?.query_one("SELECT count(*) FROM data_jobs", &[]).await?.get::<_, i64>(0);
    assert_eq!(jobs_before, jobs_after, "a refused request queued a job");
    let (status, policy) = rest(&stack, "GET", "/v1/org/erasure-policy", Some(&owner.access)).await?;
    assert_eq!((status, policy["messages"].as_str()), (200, Some("anonymise")), "the default: {policy}");

    // Erase Ann under the delete policy.
    let (status, policy) = rest_json(
        &stack,
        "PUT",
        "/v1/org/erasure-policy",
        Some(&owner.access),
        &json!({"messages": "delete"}),
    )
    .await?;
    assert_eq!((status, policy["messages"].as_str()), (200, Some("delete")), "{policy}");
    let (status, queued) = rest(&stack, "POST", &erase, Some(&owner.access)).await?;
    assert_eq!((status, queued["kind"].as_str()), (202, Some("erase_user")), "{queued}");
    let (status, again) = rest(&stack, "POST", &erase, Some(&owner.access)).await?;
    assert_eq!((status, code(&again)), (409, "conflict"), "a second erasure while one runs: {again}");
    let done = wait_job(&stack, &owner.access, &queued).await?;
    assert_eq!(done["state"], "done", "{done}");
    let summary = &done["summary"];
    assert_eq!(summary["policy"], "delete", "{done}");
    assert_eq!(summary["stream"], json!({"deleted": 6}), "five archived and the dead one: {done}");
    // The archive and the search index each filed the refused message.
    assert_eq!(summary["dead_letters"], json!({"deleted": 2}), "{done}");
    assert_eq!(summary["hello_cache"], json!({"deleted": 1}), "the copy of her one hello: {done}");
    assert_eq!(summary["messages"], json!({"deleted": 5}), "{done}");
    assert_eq!(summary["read_markers"], json!({"deleted": 1}), "{done}");
    assert_eq!(summary["profile"], json!({"scrubbed": 1}), "{done}");
    assert_eq!(summary["exports"], json!({"deleted": 2}), "her export and the org's: {done}");
    let (status, body) = rest(&stack, "POST", &erase, Some(&owner.access)).await?;
    assert_eq!((status, code(&body)), (409, "conflict"), "erasing an erased user: {body}");
    let (status, body) =
        rest(&stack, "GET", &format!("/v1/jobs/{}/archive", done["id"]), Some(&owner.access)).await?;
    assert_eq!((status, code(&body)), (404, "not_found"), "an erasure has no document: {body}");

    // No copy of Ann is left: not in Postgres, not in either stream; Bea's messages are.
    let everything = dump(&stack)?;
    for trace in ["annika", "Annika", "Zedler", "zebracorn", &ann.email] {
        assert!(!everything.contains(trace), "the database still holds {trace:?}");
    }
    assert!(everything.contains("quokka0 says Beatrix"), "Bea's messages are gone too");
    // Export documents are bytea (hex in a dump): read them as text.
    let exported: i64 = stack
        .pool
        .get()
        .await?
        .query_one(
            "SELECT count(*) FROM data_jobs WHERE archive IS NOT NULL AND convert_from(archive, 'UTF8') LIKE '%Annika%'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(exported, 0, "an export document still holds Ann");
    let row = stack
        .pool
        .get()
        .await?
        .query_one(
            "SELECT handle, display_name, email IS NULL, erased_at IS NOT NULL FROM users WHERE id = $1",
            &[&ann.user.0],
        )
        .await?;
    let erased: (String, String, bool, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(erased, (format!("erased-{}", ann.user), "Erased user".to_owned(), true, true));
    let stream = retained(&stack, MESSAGES_STREAM).await?;
    assert!(stream.iter().any(|p| p.contains("quokka1")), "the scan reads the stream");
    assert!(!stream
        .iter()
        .any(|p| p.contains("zebracorn") || p.contains(&format!("\"sender\":{}", ann.user))));
    assert!(!retained(&stack, DEAD_LETTER_STREAM).await?.iter().any(|p| p.contains("zebracorn")));
    let copies = retained(&stack, HELLO_CACHE_STREAM).await?;
    assert!(copies.iter().any(|p| p.contains("beatrix")), "Bea's hello was copied: {copies:?}");
    assert!(!copies.iter().any(|p| p.contains("annika") || p.contains("Zedler")), "{copies:?}");
    // She stays deactivated; nobody takes her erased handle.
    let (status, body) =
        rest(&stack, "POST", &format!("/v1/users/{}/reactivate", ann.user), Some(&owner.access)).await?;
    assert_eq!((status, code(&body)), (409, "conflict"), "reactivating an erased person: {body}");
    let (status, invite) =
        rest_json(&stack, "POST", "/v1/invites", Some(&owner.access), &json!({"role": "member"})).await?;
    assert_eq!(status, 201, "{invite}");
    let taking = json!({"token": invite["token"], "email": "taker@rights.test", "handle": format!("erased-{}", bea.user),
                        "display_name": "Taker", "password": threadspace_tests::accounts::PASSWORD});
    let (status, body) = rest_json(&stack, "POST", "/v1/invites/accept", None, &taking).await?;
    assert_eq!((status, code(&body)), (400, "invalid_field"), "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("handle")), "{body}");
    // Ann can no longer sign in, and her token is dead; her socket was closed.
    assert_eq!(login(&stack, "rights", &ann.email, threadspace_tests::accounts::PASSWORD).await?.0, 401);
    assert_eq!(rest(&stack, "GET", "/v1/me", Some(&ann.access)).await?.0, 401);
    let closed =
        recv_until(&mut ann_ws, "Ann's socket closing", |item| matches!(item, Incoming::Close { .. }))
            .await?;
    assert!(matches!(closed, Incoming::Close { code: 4004, .. }), "{closed:?}");
    // History as Bea sees it: her two messages.
    let (_, page) =
        rest(&stack, "GET", &format!("/v1/channels/{general}/messages"), Some(&bea.access)).await?;
    assert_eq!(bodies(&page["messages"]), ["quokka0 says Beatrix", "quokka1 says Beatrix"], "{page}");
    let (_, log) = rest(&stack, "GET", "/v1/audit?action=user.erased", Some(&owner.access)).await?;
    assert_eq!(log["events"][0]["target_user"], ann.user.0, "{log}");

    // Another org keeps the default, anonymise: Cleo's messages stay, by "Erased user".
    let owner2 = create_org(&stack, "anon").await?;
    let cleo = invite_named(&stack, &owner2, "member", "cleopatra", "Cleopatra Vance").await?;
    let general2 = general_of(&stack, &owner2).await?;
    let mut cleo_ws = connect(&stack, &cleo).await?;
    send_and_ack(&mut cleo_ws, general2, "cleo-1", "narwhal facts by Cleo").await?;
    // Bea's two and Cleo's one: Ann's five are gone.
    wait_archived(&stack, 3, WAIT).await?;
    let done = run_job(&stack, &owner2.access, &format!("/v1/users/{}/erase", cleo.user)).await?;
    assert_eq!(done["summary"]["policy"], "anonymise", "{done}");
    assert!(done["summary"]["messages"]["kept"].is_string(), "{done}");
    let everything = dump(&stack)?;
    for trace in ["cleopatra", "Cleopatra", "Vance", &cleo.email] {
        assert!(!everything.contains(trace), "the database still holds {trace:?}");
    }
    let (_, page) =
        rest(&stack, "GET", &format!("/v1/channels/{general2}/messages"), Some(&owner2.access)).await?;
    let kept =
        page["messages"].as_array().into_iter().flatten().find(|m| m["body"] == "narwhal facts by Cleo");
    assert!(kept.is_some_and(|m| m["sender"] == cleo.user.0), "the message stays, by Cleo's id: {page}");
    let (_, person) = rest(&stack, "GET", &format!("/v1/users/{}", cleo.user), Some(&owner2.access)).await?;
    assert_eq!(
        (person["display_name"].as_str(), person["email"].as_str()),
        (Some("Erased user"), None),
        "{person}"
    );
    Ok(())
}
