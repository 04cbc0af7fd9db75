//! Shared fixtures of the end-to-end tests: a started stack with one seeded org, and helpers to
//! connect users and collect what they receive. The tests themselves live in `tests/tests/`.

pub mod browser;

use std::collections::HashMap;
use std::time::Duration;

use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_devstack::{Stack, StackOptions};
use threadspace_protocol::frames::{ClientFrame, MessageFrame, ServerFrame, Welcome};
use threadspace_protocol::{ChannelId, OrgId, UserId};
use threadspace_store::seed::SeedSpec;

/// Generous per-frame wait: CI machines are small and shared.
pub const WAIT: Duration = Duration::from_secs(10);

/// Gateway flags lifting the per-user send limit and the per-connection frame limit, for tests
/// whose clients send faster than a person would.
pub const NO_RATE_LIMITS: &[&str] = &[
    "--sends-per-second",
    "1000",
    "--send-burst",
    "1000",
    "--frames-per-second",
    "1000",
    "--frame-burst",
    "1000",
];

/// Reads until the gateway closes the connection with 4029 and returns the `ref` of every
/// `rate_limited` error that came before the close; any other ending is an error.
pub async fn rate_limited_until_close(client: &mut Client) -> anyhow::Result<Vec<Option<String>>> {
    use threadspace_protocol::frames::{close_code, ErrorCode};
    let mut refs = Vec::new();
    loop {
        match client.recv(WAIT).await? {
            Incoming::Frame(ServerFrame::Error { code: ErrorCode::RateLimited, reference, .. }) => {
                refs.push(reference)
            }
            Incoming::Close { code, .. } => {
                anyhow::ensure!(code == close_code::RATE_LIMITED, "expected close 4029, got {code}");
                return Ok(refs);
            }
            Incoming::Failed(e) => anyhow::bail!("expected a close frame, got failure {e}"),
            _ => {}
        }
    }
}

/// A stack with one org of `users` users seeded with the standard layout.
pub struct Fixture {
    pub stack: Stack,
    pub org: OrgId,
    /// handle → user id
    pub users: HashMap<String, UserId>,
}

impl Fixture {
    pub async fn start(gateways: usize, gateway_args: &[&str]) -> anyhow::Result<Self> {
        let mut options = StackOptions::for_tests(gateways);
        options.gateway_args = gateway_args.iter().map(|s| s.to_string()).collect();
        Self::start_with(options).await
    }

    /// A fixture on a stack started with `options` (bridges, flags).
    pub async fn start_with(options: StackOptions) -> anyhow::Result<Self> {
        let stack = Stack::start(options).await?;
        stack.seed(&SeedSpec { orgs: 1, users_per_org: 12, slug_prefix: "test".into(), seed: 1 }).await?;
        let directory = stack.directory();
        let mut users = HashMap::new();
        let mut org = OrgId(0);
        for handle in ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"] {
            let (user, user_org) =
                directory.user_by_handle("test-1", handle).await?.expect("seeded user exists");
            users.insert(handle.to_owned(), user);
            org = user_org;
        }
        Ok(Self { stack, org, users })
    }

    pub fn user(&self, handle: &str) -> UserId {
        self.users[handle]
    }

    pub fn token(&self, handle: &str) -> String {
        self.stack.token(self.user(handle), self.org)
    }

    /// A named channel of the org.
    pub async fn channel(&self, name: &str) -> ChannelId {
        self.stack
            .directory()
            .channel_by_name(self.org, name)
            .await
            .expect("directory reachable")
            .expect("seeded channel exists")
    }

    /// Connects `handle` to gateway `gateway` and completes `hello`.
    pub async fn connect(&self, handle: &str, gateway: usize) -> anyhow::Result<(Client, Welcome)> {
        self.connect_with(handle, gateway, None, ConnectOptions::new(self.stack.ws_url(gateway))).await
    }

    /// Connects with a resume cursor and/or custom options.
    pub async fn connect_with(
        &self,
        handle: &str,
        gateway: usize,
        resume: Option<u64>,
        options: ConnectOptions,
    ) -> anyhow::Result<(Client, Welcome)> {
        let _ = gateway;
        let mut client = Client::connect(&options).await?;
        let welcome = client
            .hello(
                &self.token(handle),
                resume.map(|last_seq| threadspace_protocol::frames::Resume { last_seq }),
                WAIT,
            )
            .await?;
        Ok((client, welcome))
    }
}

/// Sends a message and waits for its ack, skipping interleaved frames (which are returned).
pub async fn send_and_ack(
    client: &mut Client,
    channel: ChannelId,
    id: &str,
    body: &str,
) -> anyhow::Result<(u64, bool, Vec<ServerFrame>)> {
    client
        .send(&ClientFrame::Send {
            reference: format!("r-{id}"),
            channel,
            client_msg_id: id.to_owned(),
            body: body.to_owned(),
        })
        .await?;
    let mut others = Vec::new();
    loop {
        match client.recv_frame(WAIT).await? {
            ServerFrame::Ack { client_msg_id, seq, duplicate, .. } if client_msg_id == id => {
                return Ok((seq, duplicate, others))
            }
            ServerFrame::Error { code, message, reference }
                if reference.as_deref() == Some(&format!("r-{id}")) =>
            {
                anyhow::bail!("send {id} failed: {code:?}: {message}")
            }
            other => others.push(other),
        }
    }
}

/// Receives until `count` message frames arrived (other frames are dropped); fails on timeout.
pub async fn recv_messages(client: &mut Client, count: usize) -> anyhow::Result<Vec<MessageFrame>> {
    let mut messages = Vec::new();
    while messages.len() < count {
        match client.recv(WAIT).await {
            Ok(Incoming::Frame(ServerFrame::Msg(message))) => messages.push(message),
            Ok(Incoming::Frame(_)) => {}
            Ok(other) => {
                anyhow::bail!("connection ended after {} of {count} messages: {other:?}", messages.len())
            }
            Err(error) => anyhow::bail!("after {} of {count} messages: {error}", messages.len()),
        }
    }
    Ok(messages)
}

/// Asserts no further message frame arrives within `quiet`.
pub async fn expect_no_message(client: &mut Client, quiet: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + quiet;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        match client.recv(left).await {
            Ok(Incoming::Frame(ServerFrame::Msg(message))) => anyhow::bail!("unexpected message {message:?}"),
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
}

/// Waits for the next frame matching `pred`, dropping others; returns it.
pub async fn recv_until(
    client: &mut Client,
    what: &str,
    pred: impl Fn(&Incoming) -> bool,
) -> anyhow::Result<Incoming> {
    loop {
        match client.recv(WAIT).await {
            Ok(item) if pred(&item) => return Ok(item),
            Ok(Incoming::Close { code, reason }) => {
                anyhow::bail!("closed ({code} {reason}) while waiting for {what}")
            }
            Ok(Incoming::Failed(e)) => anyhow::bail!("failed ({e}) while waiting for {what}"),
            Ok(_) => {}
            Err(e) => anyhow::bail!("{e} while waiting for {what}"),
        }
    }
}

/// Seeds a second org (`other-1`, 5 users) and returns its first user and the org, for tests
/// that check nothing crosses orgs.
pub async fn seed_other_org(stack: &Stack) -> anyhow::Result<(UserId, OrgId)> {
    stack.seed(&SeedSpec { orgs: 1, users_per_org: 5, slug_prefix: "other".into(), seed: 2 }).await?;
    let found = stack.directory().user_by_handle("other-1", "alice").await?;
    found.ok_or_else(|| anyhow::anyhow!("the seeded org has no alice"))
}

/// One archived row of `messages`, as the tests compare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archived {
    pub seq: u64,
    pub channel: ChannelId,
    pub sender: UserId,
    pub client_msg_id: String,
    pub body: String,
    pub sent_at_ms: i64,
}

/// Every row of `messages`, in seq order.
pub async fn archived(stack: &Stack) -> anyhow::Result<Vec<Archived>> {
    let client = stack.pool.get().await?;
    let rows = client
        .query(
            "SELECT seq, channel_id, sender_id, client_msg_id, body, (extract(epoch FROM sent_at) * 1000)::int8
             FROM messages ORDER BY seq",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Archived {
            seq: r.get::<_, i64>(0) as u64,
            channel: ChannelId(r.get(1)),
            sender: UserId(r.get(2)),
            client_msg_id: r.get(3),
            body: r.get(4),
            sent_at_ms: r.get(5),
        })
        .collect())
}

/// Waits until `messages` holds at least `count` rows (Postgres may be briefly unreachable);
/// returns them. Fails after `timeout` naming how many arrived.
pub async fn wait_archived(stack: &Stack, count: usize, timeout: Duration) -> anyhow::Result<Vec<Archived>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = 0;
    loop {
        if let Ok(rows) = archived(stack).await {
            if rows.len() >= count {
                return Ok(rows);
            }
            last = rows.len();
        }
        if tokio::time::Instant::now() >= deadline {
            let log = stack.bridges.first().map(|b| b.log_tail(20)).unwrap_or_default();
            anyhow::bail!("only {last} of {count} rows archived after {timeout:?}; bridge log tail:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the search index holds at least `count` rows.
pub async fn wait_indexed(stack: &Stack, count: i64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let client = stack.pool.get().await?;
        let n: i64 = client.query_one("SELECT count(*) FROM message_search", &[]).await?.get(0);
        if n >= count {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {n} of {count} rows indexed after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET path` on the stack's api service with a bearer token: status and parsed JSON body,
/// checked against the served OpenAPI document (see [`rest`]).
pub async fn get_json(
    stack: &Stack,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    rest(stack, "GET", path, token).await
}

/// A REST request to the stack's api service: status and parsed JSON body. Every answer is
/// checked against the OpenAPI document the service serves (`/v1/openapi.json`): the status
/// must be documented for the route and method, and the body must match its schema. Answers
/// for routes or methods the document does not have (404, 405) must have the error shape.
pub async fn rest(
    stack: &Stack,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    rest_raw(stack, method, path, token, None).await.map(|(status, value, _)| (status, value))
}

/// A REST request with a JSON body; as [`rest`], 204 answers give `Value::Null`.
pub async fn rest_json(
    stack: &Stack,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let bytes = serde_json::to_vec(body)?;
    rest_raw(stack, method, path, token, Some(("application/json", &bytes))).await.map(|(s, v, _)| (s, v))
}

/// A REST request with any body, checked against the OpenAPI document like [`rest`]; also
/// returns the response (for its headers). A 204 answer, and a 202 without a body, give
/// `Value::Null`.
pub async fn rest_raw(
    stack: &Stack,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> anyhow::Result<(u16, serde_json::Value, threadspace_client::rest::HttpResponse)> {
    let port = stack.api.port;
    let response = threadspace_client::rest::http_send(port, method, path, token, body)
        .await
        .ok_or_else(|| anyhow::anyhow!("{method} {path}: no response from the api service"))?;
    let status = response.status;
    let document = served_document(port).await?;
    // 204, and the 202 of a mail request, have no body; a queued job's 202 has one.
    if status == 204 || (status == 202 && response.body.is_empty()) {
        anyhow::ensure!(
            response.body.is_empty(),
            "{method} {path}: {status} with a body {:?}",
            response.body
        );
        let path_only = path.split('?').next().unwrap_or(path);
        let documented = document["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(template, _)| openapi::matches_template(template, path_only))
            .any(|(_, item)| {
                item[method.to_ascii_lowercase()]["responses"].get(status.to_string()).is_some()
            });
        anyhow::ensure!(documented, "{method} {path}: status {status} is not documented");
        return Ok((status, serde_json::Value::Null, response));
    }
    let value: serde_json::Value = serde_json::from_str(&response.body)
        .map_err(|e| anyhow::anyhow!("{method} {path}: {status} {:?}: {e}", response.body))?;
    openapi::check(&document, method, path, status, &value).map_err(|e| {
        anyhow::anyhow!("{method} {path} → {status} {value}: not as the OpenAPI document says: {e}")
    })?;
    Ok((status, value, response))
}

/// The OpenAPI document the api service on `port` serves, fetched once per port and test
/// process (every api binary of a run serves the same one).
async fn served_document(port: u16) -> anyhow::Result<std::sync::Arc<serde_json::Value>> {
    static DOCUMENTS: std::sync::Mutex<Vec<(u16, std::sync::Arc<serde_json::Value>)>> =
        std::sync::Mutex::new(Vec::new());
    let cached =
        DOCUMENTS.lock().expect("never poisoned").iter().find(|(p, _)| *p == port).map(|(_, d)| d.clone());
    if let Some(document) = cached {
        return Ok(document);
    }
    let (_, text) = threadspace_client::rest::http_get(port, "/v1/openapi.json")
        .await
        .ok_or_else(|| anyhow::anyhow!("no OpenAPI document on the api service"))?;
    let document = std::sync::Arc::new(serde_json::from_str::<serde_json::Value>(&text)?);
    DOCUMENTS.lock().expect("never poisoned").push((port, document.clone()));
    Ok(document)
}

/// Checking responses against an OpenAPI 3.1 document (its schemas are JSON Schema 2020-12).
pub mod openapi {
    use serde_json::Value;

    /// Checks one response: `Err` says what does not match.
    pub fn check(
        document: &Value,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), String> {
        let path = path.split('?').next().unwrap_or(path);
        // The most specific template wins: `/v1/search` before `/v1/{anything}`.
        let operation = document["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(template, _)| matches_template(template, path))
            .min_by_key(|(template, _)| template.matches('{').count())
            .and_then(|(_, item)| item.get(method.to_ascii_lowercase()));
        let schema = match operation {
            Some(operation) => {
                let response = operation["responses"]
                    .get(status.to_string())
                    .or_else(|| operation["responses"].get("default"))
                    .ok_or_else(|| format!("status {status} is not documented for this operation"))?;
                response["content"]["application/json"]["schema"].clone()
            }
            // Not a documented operation: only the shared error shape may answer.
            None if status == 404 || status == 405 => {
                serde_json::json!({ "$ref": "#/components/schemas/ErrorBody" })
            }
            None => return Err(format!("no documented operation, yet status {status}")),
        };
        if schema.is_null() {
            return Err("the documented response has no application/json schema".into());
        }
        let mut root = schema;
        root["components"] = document["components"].clone();
        // A field the document does not name is a contract break too (utoipa leaves objects
        // open): close every object schema that lists its properties.
        close_objects(&mut root);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .map_err(|e| format!("the document's schema does not compile: {e}"))?;
        let errors: Vec<String> =
            validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Sets `additionalProperties: false` on every object schema with `properties` that does
    /// not say otherwise.
    fn close_objects(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                    map.insert("additionalProperties".into(), Value::Bool(false));
                }
                map.values_mut().for_each(close_objects);
            }
            Value::Array(items) => items.iter_mut().for_each(close_objects),
            _ => {}
        }
    }

    /// Whether a concrete path matches a template such as `/v1/channels/{channel}/messages`.
    pub(crate) fn matches_template(template: &str, path: &str) -> bool {
        let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
        t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn document() -> Value {
            serde_json::json!({
                "paths": { "/v1/things/{id}": { "get": { "responses": {
                    "200": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Thing" } } } }
                } } } },
                "components": { "schemas": {
                    "Thing": { "type": "object", "required": ["id"], "properties": { "id": { "type": "integer" } } },
                    "ErrorBody": { "type": "object", "required": ["error"] }
                } }
            })
        }

        #[test]
        fn a_response_must_match_its_documented_schema_and_status() {
            let doc = document();
            assert_eq!(check(&doc, "GET", "/v1/things/3?x=1", 200, &serde_json::json!({ "id": 3 })), Ok(()));
            assert!(check(&doc, "GET", "/v1/things/3", 200, &serde_json::json!({ "id": "3" })).is_err());
            assert!(check(&doc, "GET", "/v1/things/3", 500, &serde_json::json!({})).is_err());
            assert!(check(&doc, "POST", "/v1/things/3", 405, &serde_json::json!({ "error": {} })).is_ok());
            assert!(check(&doc, "POST", "/v1/things/3", 405, &serde_json::json!({ "oops": 1 })).is_err());
            assert!(check(&doc, "GET", "/v1/other", 200, &serde_json::json!({})).is_err());
            // A field the document does not name fails too.
            assert!(
                check(&doc, "GET", "/v1/things/3", 200, &serde_json::json!({ "id": 3, "extra": 1 })).is_err()
            );
        }
    }
}

/// A metric's value summed over its label sets whose labels contain `labels` (e.g.
/// `sink="archive"`, or "" for all), from an HTTP `/metrics` on 127.0.0.1:`port`.
pub async fn metric(port: u16, name: &str, labels: &str) -> anyhow::Result<f64> {
    threadspace_client::rest::metric_sum(port, name, labels)
        .await
        .ok_or_else(|| anyhow::anyhow!("no /metrics on port {port}"))
}

/// Every frame `pick` selects among those arriving within `window` (others are dropped); stops
/// early if the connection ends.
pub async fn frames_within<T>(
    client: &mut Client,
    window: Duration,
    pick: impl Fn(&ServerFrame) -> Option<T>,
) -> Vec<T> {
    let deadline = tokio::time::Instant::now() + window;
    let mut picked = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return picked;
        }
        match client.recv(left).await {
            Ok(Incoming::Frame(frame)) => picked.extend(pick(&frame)),
            _ => return picked,
        }
    }
}

/// People who sign up and log in over the api service, for the account tests (docs/accounts.md).
pub mod accounts {
    use serde_json::{json, Value};
    use threadspace_devstack::Stack;
    use threadspace_protocol::{OrgId, UserId};

    use super::{rest, rest_json};

    /// The password every test account gets.
    pub const PASSWORD: &str = "correct horse battery";

    /// A logged-in account.
    #[derive(Clone, Debug)]
    pub struct Account {
        pub user: UserId,
        pub org: OrgId,
        pub slug: String,
        pub handle: String,
        pub email: String,
        pub access: String,
        pub refresh: String,
        pub session: i64,
    }

    /// Creates org `slug` with owner `owner@<slug>.test` over HTTP and logs the owner in.
    pub async fn create_org(stack: &Stack, slug: &str) -> anyhow::Result<Account> {
        let email = format!("owner@{slug}.test");
        let body = json!({
            "slug": slug,
            "name": format!("Org {slug}"),
            "owner": {"email": email, "handle": "owner", "display_name": "The Owner", "password": PASSWORD},
        });
        let (status, created) = rest_json(stack, "POST", "/v1/orgs", None, &body).await?;
        anyhow::ensure!(status == 201, "create org {slug}: {status} {created}");
        login_as(stack, slug, "owner", &email).await
    }

    /// `inviter` invites `handle` with `role`; the invitee accepts and logs in.
    pub async fn invite(
        stack: &Stack,
        inviter: &Account,
        role: &str,
        handle: &str,
    ) -> anyhow::Result<Account> {
        invite_named(stack, inviter, role, handle, &format!("User {handle}")).await
    }

    /// [`invite`] with the invitee's display name.
    pub async fn invite_named(
        stack: &Stack,
        inviter: &Account,
        role: &str,
        handle: &str,
        display_name: &str,
    ) -> anyhow::Result<Account> {
        let (status, invite) =
            rest_json(stack, "POST", "/v1/invites", Some(&inviter.access), &json!({"role": role})).await?;
        anyhow::ensure!(status == 201, "invite {handle} as {role}: {status} {invite}");
        let email = format!("{handle}@{}.test", inviter.slug);
        let body = json!({
            "token": invite["token"], "email": email, "handle": handle,
            "display_name": display_name, "password": PASSWORD,
        });
        let (status, user) = rest_json(stack, "POST", "/v1/invites/accept", None, &body).await?;
        anyhow::ensure!(status == 201, "accept invite of {handle}: {status} {user}");
        anyhow::ensure!(user["role"] == role, "{user}");
        login_as(stack, &inviter.slug, handle, &email).await
    }

    /// Logs in; the raw answer.
    pub async fn login(
        stack: &Stack,
        slug: &str,
        email: &str,
        password: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let body = json!({"org": slug, "email": email, "password": password});
        rest_json(stack, "POST", "/v1/auth/login", None, &body).await
    }

    /// Logs `email` in with [`PASSWORD`]; the account as the tests use it.
    pub async fn login_as(stack: &Stack, slug: &str, handle: &str, email: &str) -> anyhow::Result<Account> {
        let (status, tokens) = login(stack, slug, email, PASSWORD).await?;
        anyhow::ensure!(status == 200, "login {email}: {status} {tokens}");
        Ok(Account {
            user: UserId(tokens["user_id"].as_i64().unwrap_or_default()),
            org: OrgId(tokens["org_id"].as_i64().unwrap_or_default()),
            slug: slug.to_owned(),
            handle: handle.to_owned(),
            email: email.to_owned(),
            access: tokens["access_token"].as_str().unwrap_or_default().to_owned(),
            refresh: tokens["refresh_token"].as_str().unwrap_or_default().to_owned(),
            session: tokens["session_id"].as_i64().unwrap_or_default(),
        })
    }

    /// Creates a channel directly in the directory (channel routes come with the channels
    /// issue) and adds `members`; returns its id.
    pub async fn channel(
        stack: &Stack,
        org: OrgId,
        name: &str,
        kind: &str,
        members: &[UserId],
    ) -> anyhow::Result<threadspace_protocol::ChannelId> {
        let client = threadspace_store::connect(&stack.postgres.url).await?;
        let id: i64 = client
            .query_one(
                "INSERT INTO channels (org_id, kind, name) VALUES ($1, $2, $3) RETURNING id",
                &[&org.0, &kind, &(if kind == "dm" || kind == "group_dm" { None } else { Some(name) })],
            )
            .await?
            .get(0);
        for member in members {
            client
                .execute(
                    "INSERT INTO channel_members (channel_id, user_id) VALUES ($1, $2)",
                    &[&id, &member.0],
                )
                .await?;
        }
        Ok(threadspace_protocol::ChannelId(id))
    }

    /// Every mail the api service wrote so far, oldest first.
    pub fn mails(stack: &Stack) -> Vec<Value> {
        std::fs::read_to_string(&stack.api.mail)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits (up to 5 s: mail is written off the request path) for the mail after the first
    /// `before`, and returns it.
    pub async fn next_mail(stack: &Stack, before: usize) -> anyhow::Result<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Some(mail) = mails(stack).into_iter().nth(before) {
                return Ok(mail);
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "no mail number {} within 5 s", before + 1);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `GET /v1/me` with `token`: the status.
    pub async fn me_status(stack: &Stack, token: &str) -> anyhow::Result<u16> {
        Ok(rest(stack, "GET", "/v1/me", Some(token)).await?.0)
    }
}
