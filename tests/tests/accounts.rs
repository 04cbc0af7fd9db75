//! Accounts and sessions end to end (docs/accounts.md): the demo flow over HTTP and WebSocket,
//! token security (logout, sign-out everywhere, deactivation, refresh rotation and reuse,
//! forged tokens), password reset and sign-up through the mail sink, abuse limits, and bad
//! input on every account route. Every REST answer is checked against the OpenAPI document.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_devstack::{Stack, StackOptions};
use threadspace_protocol::frames::{close_code, ErrorCode, ServerFrame};
use threadspace_protocol::ChannelId;
use threadspace_tests::accounts::{
    self, create_org, invite, login, mails, me_status, next_mail, Account, PASSWORD,
};
use threadspace_tests::{recv_until, rest, rest_json, rest_raw, send_and_ack, WAIT};

async fn stack_with_api(args: &[&str]) -> anyhow::Result<Stack> {
    let mut options = StackOptions::for_tests(2);
    options.api_args = args.iter().map(|s| s.to_string()).collect();
    Ok(Stack::start(options).await?)
}

async fn connect(stack: &Stack, gateway: usize, account: &Account) -> anyhow::Result<Client> {
    let mut client = Client::connect(&ConnectOptions::new(stack.ws_url(gateway))).await?;
    client.hello(&account.access, None, WAIT).await?;
    Ok(client)
}

/// Reads until the connection closes; its close code.
async fn closed_with(client: &mut Client, within: Duration) -> anyhow::Result<u16> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(!left.is_zero(), "the connection was not closed within {within:?}");
        match client.recv(left).await {
            Ok(Incoming::Close { code, .. }) => return Ok(code),
            Ok(Incoming::Failed(e)) => anyhow::bail!("connection failed instead of closing: {e}"),
            Ok(_) => {}
            Err(e) => anyhow::bail!("no close frame within {within:?}: {e}"),
        }
    }
}

/// A hello with `token` is refused with `auth_failed` and close 4001.
async fn hello_refused(stack: &Stack, token: &str) -> anyhow::Result<()> {
    let mut client = Client::connect(&ConnectOptions::new(stack.ws_url(0))).await?;
    client.send_text(&json!({"op": "hello", "token": token}).to_string()).await?;
    match client.recv(WAIT).await? {
        Incoming::Frame(ServerFrame::Error { code: ErrorCode::AuthFailed, .. }) => {}
        other => anyhow::bail!("expected auth_failed, got {other:?}"),
    }
    anyhow::ensure!(closed_with(&mut client, WAIT).await? == close_code::AUTH_FAILED);
    Ok(())
}

async fn general(stack: &Stack, account: &Account) -> anyhow::Result<ChannelId> {
    let id = stack
        .directory()
        .channel_by_name(account.org, "general")
        .await?
        .ok_or_else(|| anyhow::anyhow!("the org has no #general"))?;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_signs_up_invites_logs_in_and_chats_over_http_and_websocket() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::for_tests(2)).await?;
    let owner = create_org(&stack, "acme").await?;
    let (status, me) = rest(&stack, "GET", "/v1/me", Some(&owner.access)).await?;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["role"], "owner");
    assert_eq!(me["org"]["slug"], "acme");
    assert_eq!(me["session_id"], owner.session);

    // An invite by mail: the link reaches the sink, only the invited address may use it.
    let body = json!({"role": "member", "email": "Bob@Acme.test"});
    let (status, invite_answer) =
        rest_json(&stack, "POST", "/v1/invites", Some(&owner.access), &body).await?;
    assert_eq!(status, 201, "{invite_answer}");
    let mail = next_mail(&stack, 0).await?;
    assert_eq!((mail["kind"].as_str(), mail["to"].as_str()), (Some("invite"), Some("bob@acme.test")));
    assert_eq!(mail["token"], invite_answer["token"]);
    let accept = |email: &str| json!({"token": mail["token"], "email": email, "handle": "bob", "display_name": "Bob", "password": PASSWORD});
    let (status, refused) =
        rest_json(&stack, "POST", "/v1/invites/accept", None, &accept("eve@acme.test")).await?;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("invalid_field")), "{refused}");
    let (status, bob_user) =
        rest_json(&stack, "POST", "/v1/invites/accept", None, &accept("bob@acme.test")).await?;
    assert_eq!(status, 201, "{bob_user}");
    // Single use.
    let (status, again) =
        rest_json(&stack, "POST", "/v1/invites/accept", None, &accept("bob@acme.test")).await?;
    assert_eq!((status, again["error"]["code"].as_str()), (400, Some("token_invalid")), "{again}");

    let (status, tokens) = login(&stack, "acme", "bob@acme.test", PASSWORD).await?;
    assert_eq!(status, 200, "{tokens}");
    let bob_token = tokens["access_token"].as_str().expect("a token").to_owned();

    // Both meet in #general, which every new member joins, and talk across gateways.
    let channel = general(&stack, &owner).await?;
    let mut alice = connect(&stack, 0, &owner).await?;
    let mut bob = Client::connect(&ConnectOptions::new(stack.ws_url(1))).await?;
    let welcome = bob.hello(&bob_token, None, WAIT).await?;
    assert!(welcome.channels.iter().any(|c| c.id == channel), "bob is in #general");
    let (seq, _, _) = send_and_ack(&mut alice, channel, "hello-bob", "welcome aboard").await?;
    loop {
        match bob.recv_frame(WAIT).await? {
            ServerFrame::Msg(m) if m.seq == seq => {
                assert_eq!(m.body, "welcome aboard");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_session_closes_its_sockets_and_refuses_its_tokens() -> anyhow::Result<()> {
    let stack = stack_with_api(&["--refresh-grace", "2s"]).await?;
    let owner = create_org(&stack, "sec").await?;
    let member = invite(&stack, &owner, "member", "mia").await?;

    // Logout closes exactly the sockets of that session, on every gateway, with 4004.
    let laptop = accounts::login(&stack, "sec", &member.email, PASSWORD).await?.1;
    let laptop_token = laptop["access_token"].as_str().expect("token").to_owned();
    let mut phone_0 = connect(&stack, 0, &member).await?;
    let mut phone_1 = connect(&stack, 1, &member).await?;
    let mut lap = Client::connect(&ConnectOptions::new(stack.ws_url(0))).await?;
    lap.hello(&laptop_token, None, WAIT).await?;
    let started = Instant::now();
    let (status, _) = rest(&stack, "POST", "/v1/auth/logout", Some(&member.access)).await?;
    assert_eq!(status, 204);
    assert_eq!(closed_with(&mut phone_0, Duration::from_secs(5)).await?, close_code::SESSION_ENDED);
    assert_eq!(closed_with(&mut phone_1, Duration::from_secs(5)).await?, close_code::SESSION_ENDED);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "sockets closed after {took:?}");
    assert_eq!(me_status(&stack, &member.access).await?, 401, "a logged-out token is refused");
    hello_refused(&stack, &member.access).await?;
    // The laptop's session is another one: untouched.
    assert_eq!(me_status(&stack, &laptop_token).await?, 200);
    lap.send_text(r#"{"op":"ping","ref":"p"}"#).await?;
    recv_until(&mut lap, "the laptop's pong (it stays connected)", |i| {
        matches!(i, Incoming::Frame(ServerFrame::Pong { .. }))
    })
    .await?;

    // Sign out everywhere: every session ends, and so do operator-minted tokens issued before.
    let operator_token = stack.token(member.user, member.org);
    tokio::time::sleep(Duration::from_millis(1100)).await; // tokens_not_before has whole seconds
    let (status, _) = rest(&stack, "POST", "/v1/auth/sign-out-everywhere", Some(&laptop_token)).await?;
    assert_eq!(status, 204);
    assert_eq!(closed_with(&mut lap, Duration::from_secs(5)).await?, close_code::SESSION_ENDED);
    for token in [&laptop_token, &operator_token] {
        assert_eq!(me_status(&stack, token).await?, 401);
        hello_refused(&stack, token).await?;
    }
    let refreshed = rest_json(
        &stack,
        "POST",
        "/v1/auth/refresh",
        None,
        &json!({"refresh_token": laptop["refresh_token"]}),
    )
    .await?;
    assert_eq!((refreshed.0, refreshed.1["error"]["code"].as_str()), (401, Some("refresh_refused")));

    // Deactivation: sockets close, tokens and logins are refused; reactivation lets them back.
    let member = invite(&stack, &owner, "member", "max").await?;
    let mut socket = connect(&stack, 1, &member).await?;
    let path = format!("/v1/users/{}/deactivate", member.user);
    let (status, user) = rest(&stack, "POST", &path, Some(&owner.access)).await?;
    assert_eq!((status, user["deactivated"].as_bool()), (200, Some(true)), "{user}");
    assert_eq!(closed_with(&mut socket, Duration::from_secs(5)).await?, close_code::SESSION_ENDED);
    assert_eq!(me_status(&stack, &member.access).await?, 401);
    hello_refused(&stack, &member.access).await?;
    let (status, body) = login(&stack, "sec", &member.email, PASSWORD).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("login_failed")), "{body}");
    let path = format!("/v1/users/{}/reactivate", member.user);
    assert_eq!(rest(&stack, "POST", &path, Some(&owner.access)).await?.0, 200);
    assert_eq!(me_status(&stack, &member.access).await?, 401, "old tokens stay dead");
    assert_eq!(login(&stack, "sec", &member.email, PASSWORD).await?.0, 200);

    // Refresh rotation: a used token presented again within the grace window (two tabs) gets a
    // successor; after it, the whole family ends, its sockets included.
    let member = invite(&stack, &owner, "member", "rex").await?;
    let stack = &stack;
    let refresh = |token: &str| {
        let body = json!({"refresh_token": token});
        async move { rest_json(stack, "POST", "/v1/auth/refresh", None, &body).await }
    };
    let (status, first) = refresh(&member.refresh).await?;
    assert_eq!(status, 200, "{first}");
    assert_ne!(first["refresh_token"].as_str(), Some(member.refresh.as_str()));
    assert_eq!(first["session_id"], member.session, "rotation keeps the session");
    let (status, twin) = refresh(&member.refresh).await?;
    assert_eq!(status, 200, "a reuse within the grace window is a second tab: {twin}");
    // Each tab goes on rotating its own branch.
    let (status, first) = refresh(first["refresh_token"].as_str().expect("token")).await?;
    assert_eq!(status, 200, "{first}");
    let (status, twin) = refresh(twin["refresh_token"].as_str().expect("token")).await?;
    assert_eq!(status, 200, "{twin}");
    let mut socket = Client::connect(&ConnectOptions::new(stack.ws_url(0))).await?;
    socket.hello(first["access_token"].as_str().expect("token"), None, WAIT).await?;
    // A third use of the same token, even within the window, is reuse.
    let (status, reused) = refresh(&member.refresh).await?;
    assert_eq!((status, reused["error"]["code"].as_str()), (401, Some("refresh_reused")), "{reused}");
    assert_eq!(closed_with(&mut socket, Duration::from_secs(5)).await?, close_code::SESSION_ENDED);
    for token in [&first["refresh_token"], &twin["refresh_token"]] {
        let (status, _) = refresh(token.as_str().expect("token")).await?;
        assert_eq!(status, 401, "every token of a revoked family is refused");
    }

    // Outside the window, a second use is reuse at once.
    let member = invite(stack, &owner, "member", "ron").await?;
    let (status, first) = refresh(&member.refresh).await?;
    assert_eq!(status, 200, "{first}");
    let mut socket = Client::connect(&ConnectOptions::new(stack.ws_url(1))).await?;
    socket.hello(first["access_token"].as_str().expect("token"), None, WAIT).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, reused) = refresh(&member.refresh).await?;
    assert_eq!((status, reused["error"]["code"].as_str()), (401, Some("refresh_reused")), "{reused}");
    assert_eq!(closed_with(&mut socket, Duration::from_secs(5)).await?, close_code::SESSION_ENDED);
    for token in [&first["refresh_token"], &twin["refresh_token"]] {
        let (status, _) = refresh(token.as_str().expect("token")).await?;
        assert_eq!(status, 401, "every token of a revoked family is refused");
    }
    assert_eq!(me_status(stack, first["access_token"].as_str().expect("token")).await?, 401);
    for garbage in ["", "nonsense", "1.abc"] {
        let (status, body) = refresh(garbage).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("refresh_refused")), "{garbage:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_tokens_are_refused_by_rest_and_the_gateway() -> anyhow::Result<()> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let stack = Stack::start(StackOptions::for_tests(1)).await?;
    let owner = create_org(&stack, "forge").await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims = |aud: &str, exp: u64| {
        json!({"iss": "threadspace-local", "aud": aud, "sub": owner.user.0.to_string(), "org": owner.org.0,
               "iat": now, "exp": exp, "sid": owner.session})
    };
    let kid = stack.keys.signing.kid().to_owned();
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
    let unsigned = format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        encode(&claims("threadspace-gateway", now + 60))
    );
    // HS256 keyed with the public key: the classic algorithm confusion.
    let jwks: Value = serde_json::from_str(&std::fs::read_to_string(&stack.keys.jwks)?)?;
    let public = jwks["keys"][0]["x"].as_str().expect("an OKP key").to_owned();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.clone());
    let confused = jsonwebtoken::encode(
        &header,
        &claims("threadspace-gateway", now + 60),
        &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
    )?;
    let other = threadspace_protocol::token::SigningKey::generate("someone-else");
    let unknown_kid = other.mint_claims(&serde_json::from_value(claims("threadspace-gateway", now + 60))?);
    let expired =
        stack.keys.signing.mint_claims(&serde_json::from_value(claims("threadspace-gateway", now - 120))?);
    let wrong_aud = stack.keys.signing.mint_claims(&serde_json::from_value(claims("elsewhere", now + 60))?);
    let good =
        stack.keys.signing.mint_claims(&serde_json::from_value(claims("threadspace-gateway", now + 60))?);
    assert_eq!(me_status(&stack, &good).await?, 200, "the control token works");
    for (what, token) in [
        ("alg none", unsigned),
        ("HS256 with the public key", confused),
        ("unknown kid", unknown_kid),
        ("expired", expired),
        ("wrong aud", wrong_aud),
    ] {
        let (status, body) = rest(&stack, "GET", "/v1/me", Some(&token)).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("auth_failed")), "{what}: {body}");
        hello_refused(&stack, &token).await.map_err(|e| e.context(what))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_and_domain_sign_up_go_through_the_mail_sink() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::for_tests(1)).await?;
    let owner = create_org(&stack, "mailco").await?;
    let member = invite(&stack, &owner, "member", "nora").await?;
    let mut socket = connect(&stack, 0, &member).await?;

    // A reset for an unknown address answers the same as for a known one, and mails nothing.
    let before = mails(&stack).len();
    let body = json!({"org": "mailco", "email": "nobody@mailco.test"});
    assert_eq!(rest_json(&stack, "POST", "/v1/auth/password-reset", None, &body).await?.0, 202);
    let body = json!({"org": "mailco", "email": member.email});
    assert_eq!(rest_json(&stack, "POST", "/v1/auth/password-reset", None, &body).await?.0, 202);
    // The next mail is the known address's: none went to the unknown one.
    let mail = next_mail(&stack, before).await?;
    assert_eq!(
        (mail["kind"].as_str(), mail["to"].as_str()),
        (Some("password_reset"), Some(member.email.as_str()))
    );
    let complete = json!({"token": mail["token"], "new_password": "a brand new secret"});
    assert_eq!(rest_json(&stack, "POST", "/v1/auth/password-reset/complete", None, &complete).await?.0, 204);
    assert_eq!(closed_with(&mut socket, Duration::from_secs(5)).await?, close_code::SESSION_ENDED);
    assert_eq!(me_status(&stack, &member.access).await?, 401, "a reset ends every session");
    assert_eq!(login(&stack, "mailco", &member.email, PASSWORD).await?.0, 401);
    assert_eq!(login(&stack, "mailco", &member.email, "a brand new secret").await?.0, 200);
    let (status, again) =
        rest_json(&stack, "POST", "/v1/auth/password-reset/complete", None, &complete).await?;
    assert_eq!((status, again["error"]["code"].as_str()), (400, Some("token_invalid")));

    // Password change with the current password; a wrong one is refused.
    let (_, tokens) = login(&stack, "mailco", &member.email, "a brand new secret").await?;
    let token = tokens["access_token"].as_str().expect("token");
    let change = json!({"current_password": "wrong wrong", "new_password": "third secret!"});
    assert_eq!(rest_json(&stack, "POST", "/v1/auth/password", Some(token), &change).await?.0, 403);
    let change = json!({"current_password": "a brand new secret", "new_password": "third secret!"});
    let (status, fresh) = rest_json(&stack, "POST", "/v1/auth/password", Some(token), &change).await?;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(me_status(&stack, token).await?, 401, "the old session ended");
    assert_eq!(me_status(&stack, fresh["access_token"].as_str().expect("token")).await?, 200);

    // Sign-up by domain: closed until the owner opens it, then only for that domain.
    let ask = |email: &str| json!({"org": "mailco", "email": email});
    let (status, closed) = rest_json(&stack, "POST", "/v1/signup", None, &ask("sam@mailco.test")).await?;
    assert_eq!((status, closed["error"]["code"].as_str()), (403, Some("signup_closed")));
    let domain = json!({"domain": "mailco.test"});
    let (status, org) =
        rest_json(&stack, "PUT", "/v1/org/signup-domain", Some(&owner.access), &domain).await?;
    assert_eq!((status, org["signup_domain"].as_str()), (200, Some("mailco.test")), "{org}");
    let (status, _) = rest_json(&stack, "POST", "/v1/signup", None, &ask("sam@elsewhere.test")).await?;
    assert_eq!(status, 403, "another domain stays closed");
    let before = mails(&stack).len();
    assert_eq!(rest_json(&stack, "POST", "/v1/signup", None, &ask("Sam@MailCo.test")).await?.0, 202);
    let mail = next_mail(&stack, before).await?;
    assert_eq!((mail["kind"].as_str(), mail["to"].as_str()), (Some("signup"), Some("sam@mailco.test")));
    let complete =
        json!({"token": mail["token"], "handle": "sam", "display_name": "Sam", "password": "sam's password"});
    let (status, sam) = rest_json(&stack, "POST", "/v1/signup/complete", None, &complete).await?;
    assert_eq!((status, sam["role"].as_str()), (201, Some("member")), "{sam}");
    assert_eq!(login(&stack, "mailco", "sam@mailco.test", "sam's password").await?.0, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_slow_down_and_every_route_is_rate_limited() -> anyhow::Result<()> {
    let stack = stack_with_api(&["--rate-per-user", "2"]).await?;
    let owner = create_org(&stack, "limits").await?;
    for attempt in 0..3 {
        let (status, body) = login(&stack, "limits", &owner.email, "not the password").await?;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("login_failed")),
            "attempt {attempt}"
        );
    }
    // Unknown accounts answer exactly like wrong passwords.
    let (status, body) = login(&stack, "limits", "ghost@limits.test", "whatever!").await?;
    assert_eq!((status, body["error"]["message"].as_str()), (401, Some("wrong org, email or password")));
    let bytes = serde_json::to_vec(&json!({"org": "limits", "email": owner.email, "password": PASSWORD}))?;
    let (status, body, response) =
        rest_raw(&stack, "POST", "/v1/auth/login", None, Some(("application/json", &bytes))).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    let wait: u64 = response.header("retry-after").expect("Retry-After").parse()?;
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        login(&stack, "limits", &owner.email, PASSWORD).await?.0,
        200,
        "a growing delay, not a lockout"
    );

    // Per user: 2 requests a second with a burst of 10.
    let mut limited = None;
    for _ in 0..30 {
        let (status, body, response) = rest_raw(&stack, "GET", "/v1/me", Some(&owner.access), None).await?;
        if status == 429 {
            limited = Some((body, response.header("retry-after").map(str::to_owned)));
            break;
        }
    }
    let (body, retry) = limited.expect("30 quick requests hit the per-user limit");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(retry.is_some(), "429 carries Retry-After");
    Ok(())
}

/// A bad request: method, path, token, raw body, content type, then the expected status, error
/// code and a word the message must contain.
type Case<'a> = (&'a str, String, Option<&'a str>, String, &'a str, u16, &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_account_routes_is_named_and_stores_nothing() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::for_tests(1)).await?;
    let owner = create_org(&stack, "strict").await?;
    let db = threadspace_store::connect(&stack.postgres.url).await?;
    let count = || async {
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM orgs), (SELECT count(*) FROM users), \
                 (SELECT count(*) FROM account_tokens), (SELECT string_agg(role, ',' ORDER BY id) FROM users)",
                &[],
            )
            .await
            .expect("counts");
        (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2), row.get::<_, Option<String>>(3))
    };
    let before = count().await;
    let owner_body = |email: &str, handle: &str, name: &str, password: &str| json!({"email": email, "handle": handle, "display_name": name, "password": password});
    let org = |slug: &str, name: &str, owner: Value| json!({"slug": slug, "name": name, "owner": owner});
    let good_owner = owner_body("a@b.test", "ann", "Ann", PASSWORD);
    let user_path = format!("/v1/users/{}/role", owner.user);
    // (method, path, token, raw body, content type, status, code, the message mentions)
    let token = Some(owner.access.as_str());
    let json_of = |v: Value| v.to_string();
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/orgs".into(),
            None,
            "{not json".into(),
            "application/json",
            400,
            "invalid_body",
            "body",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(org("x", "X", good_owner.clone())),
            "text/plain",
            415,
            "unsupported_media_type",
            "JSON",
        ),
        ("POST", "/v1/orgs".into(), None, "{}".into(), "application/json", 400, "invalid_body", "slug"),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(json!({"slug": "x", "name": "X", "owner": good_owner, "plan": "pro"})),
            "application/json",
            400,
            "invalid_body",
            "unknown field `plan`",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(json!({"slug": 7, "name": "X", "owner": good_owner})),
            "application/json",
            400,
            "invalid_body",
            "`slug`",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(org("x", "X", json!({"email": "a@b.test"}))),
            "application/json",
            400,
            "invalid_body",
            "owner",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(org("Bad Slug", "X", good_owner.clone())),
            "application/json",
            400,
            "invalid_field",
            "`slug`",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(org("ok", "   \t ", good_owner.clone())),
            "application/json",
            400,
            "invalid_field",
            "`name`",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(org("ok", "A\u{1b}[31m", good_owner.clone())),
            "application/json",
            400,
            "invalid_field",
            "control",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(org("ok", &"n".repeat(201), good_owner.clone())),
            "application/json",
            400,
            "invalid_field",
            "200",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(org("ok", "Ok", owner_body("not-an-email", "ann", "Ann", PASSWORD))),
            "application/json",
            400,
            "invalid_field",
            "`owner.email`",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(org("ok", "Ok", owner_body("a@b.test", "Ann!", "Ann", PASSWORD))),
            "application/json",
            400,
            "invalid_field",
            "`owner.handle`",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(org("ok", "Ok", owner_body("a@b.test", "ann", "\u{0}", PASSWORD))),
            "application/json",
            400,
            "invalid_field",
            "`owner.display_name`",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(org("ok", "Ok", owner_body("a@b.test", "ann", "Ann", "short"))),
            "application/json",
            400,
            "invalid_field",
            "`owner.password`",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            json_of(org("strict", "Taken", good_owner.clone())),
            "application/json",
            409,
            "conflict",
            "slug",
        ),
        (
            "POST",
            "/v1/orgs".into(),
            None,
            format!("{{\"slug\":\"{}\"}}", "x".repeat(20_000)),
            "application/json",
            413,
            "too_large",
            "bytes",
        ),
        (
            "POST",
            "/v1/auth/login".into(),
            None,
            json_of(json!({"org": "strict", "email": "x"})),
            "application/json",
            400,
            "invalid_body",
            "password",
        ),
        (
            "POST",
            "/v1/auth/login".into(),
            None,
            json_of(json!({"org": "strict", "email": "nope", "password": "x"})),
            "application/json",
            400,
            "invalid_field",
            "`email`",
        ),
        (
            "POST",
            "/v1/invites".into(),
            token,
            json_of(json!({"role": "emperor"})),
            "application/json",
            400,
            "invalid_field",
            "`role`",
        ),
        (
            "POST",
            "/v1/invites".into(),
            token,
            json_of(json!({"role": "member", "email": "a b@c.test"})),
            "application/json",
            400,
            "invalid_field",
            "`email`",
        ),
        (
            "POST",
            "/v1/invites".into(),
            token,
            json_of(json!({"role": ["member"]})),
            "application/json",
            400,
            "invalid_body",
            "`role`",
        ),
        (
            "POST",
            "/v1/invites".into(),
            None,
            json_of(json!({"role": "member"})),
            "application/json",
            401,
            "auth_failed",
            "Authorization",
        ),
        (
            "POST",
            "/v1/invites/accept".into(),
            None,
            json_of(
                json!({"token": "made-up", "email": "x@y.test", "handle": "x", "display_name": "X", "password": PASSWORD}),
            ),
            "application/json",
            400,
            "token_invalid",
            "token",
        ),
        (
            "PUT",
            user_path.clone(),
            token,
            json_of(json!({"role": "admin"})),
            "application/json",
            403,
            "forbidden",
            "own",
        ),
        (
            "PUT",
            "/v1/users/abc/role".into(),
            token,
            json_of(json!({"role": "admin"})),
            "application/json",
            400,
            "invalid_parameter",
            "`user`",
        ),
        (
            "PUT",
            "/v1/users/999999/role".into(),
            token,
            json_of(json!({"role": "admin"})),
            "application/json",
            404,
            "not_found",
            "999999",
        ),
        (
            "PUT",
            "/v1/org/signup-domain".into(),
            token,
            json_of(json!({"domain": "not a domain"})),
            "application/json",
            400,
            "invalid_field",
            "`domain`",
        ),
        (
            "PUT",
            "/v1/org/signup-domain".into(),
            token,
            json_of(json!({})),
            "application/json",
            400,
            "invalid_body",
            "domain",
        ),
        (
            "POST",
            "/v1/auth/refresh".into(),
            None,
            json_of(json!({"refresh_token": 5})),
            "application/json",
            400,
            "invalid_body",
            "`refresh_token`",
        ),
        (
            "POST",
            "/v1/auth/password-reset/complete".into(),
            None,
            json_of(json!({"token": "x", "new_password": "tiny"})),
            "application/json",
            400,
            "invalid_field",
            "`new_password`",
        ),
    ];
    for (method, path, token, body, content_type, status, code, mentions) in cases {
        let (got, answer, _) =
            rest_raw(&stack, method, &path, token, Some((content_type, body.as_bytes()))).await?;
        let what = format!("{method} {path} {}", body.chars().take(80).collect::<String>());
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(mentions), "{what}: {message:?} should mention {mentions}");
    }
    assert_eq!(count().await, before, "refused requests stored nothing");
    Ok(())
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let header = token.split('.').next().and_then(|h| URL_SAFE_NO_PAD.decode(h).ok()).unwrap_or_default();
    serde_json::from_slice::<Value>(&header)
        .ok()
        .and_then(|h| h["kid"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_rotate_without_downtime() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions::for_tests(1)).await?;
    let owner = create_org(&stack, "keys").await?;
    let old_kid = kid_of(&owner.access);
    assert!(!old_kid.is_empty(), "tokens name their key");

    // Publish the next key beside the current one; once everyone re-read the JWKS, switch.
    let next = stack.keys.publish_next()?;
    let next_kid = next.kid().to_owned();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stack.keys.switch(next)?;
    let deadline = Instant::now() + Duration::from_secs(8);
    let fresh = loop {
        let (_, tokens) = login(&stack, "keys", &owner.email, PASSWORD).await?;
        let token = tokens["access_token"].as_str().unwrap_or_default().to_owned();
        if kid_of(&token) == next_kid {
            break token;
        }
        anyhow::ensure!(Instant::now() < deadline, "the api service still mints with {}", kid_of(&token));
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Both generations work everywhere: nobody was logged out by the rotation.
    for (what, token) in [("old key", &owner.access), ("new key", &fresh)] {
        assert_eq!(me_status(&stack, token).await?, 200, "{what} on REST");
        let mut client = Client::connect(&ConnectOptions::new(stack.ws_url(0))).await?;
        client.hello(token, None, WAIT).await.map_err(|e| anyhow::anyhow!("{what} on the gateway: {e}"))?;
    }

    // Retiring the old key refuses its tokens; the new ones keep working.
    stack.keys.retire_others()?;
    let deadline = Instant::now() + Duration::from_secs(8);
    while me_status(&stack, &owner.access).await? != 401 {
        anyhow::ensure!(Instant::now() < deadline, "tokens of the retired key still work");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // the gateway re-reads on its own tick
    hello_refused(&stack, &owner.access).await?;
    assert_eq!(me_status(&stack, &fresh).await?, 200);
    let mut client = Client::connect(&ConnectOptions::new(stack.ws_url(0))).await?;
    client.hello(&fresh, None, WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_pages_search_and_channel_lists_name_what_clients_show() -> anyhow::Result<()> {
    let stack = stack_with_api(&[]).await?;
    let owner = create_org(&stack, "acme").await?;
    let mut people = vec![owner.clone()];
    for handle in ["ann", "bea", "cid", "dot", "eli"] {
        people.push(invite(&stack, &owner, "member", handle).await?);
    }
    let guest = invite(&stack, &owner, "guest", "gus").await?;
    let member = &people[1];

    // Pages in id order, `next_after` until the last.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) =
            rest(&stack, "GET", &format!("/v1/users?limit=3&after={after}"), Some(&member.access)).await?;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["users"].as_array().into_iter().flatten().filter_map(|u| u["id"].as_i64()));
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    let mut want: Vec<i64> = people.iter().map(|p| p.user.0).chain([guest.user.0]).collect();
    want.sort_unstable();
    assert_eq!(seen, want, "every person once, in id order, across pages");

    // Search by handle or display name, ignoring case; by address only for owners and admins.
    let (_, found) = rest(&stack, "GET", "/v1/users?q=USER%20b", Some(&member.access)).await?;
    let handles: Vec<&str> =
        found["users"].as_array().into_iter().flatten().filter_map(|u| u["handle"].as_str()).collect();
    assert_eq!(handles, ["bea"], "{found}");
    let (_, by_mail) = rest(&stack, "GET", "/v1/users?q=cid%40acme", Some(&member.access)).await?;
    assert_eq!(by_mail["users"], json!([]), "a member cannot search by address: {by_mail}");
    let (_, by_mail) = rest(&stack, "GET", "/v1/users?q=cid%40acme", Some(&owner.access)).await?;
    assert_eq!(by_mail["users"][0]["handle"], "cid", "{by_mail}");
    assert_eq!(by_mail["users"][0]["email"], "cid@acme.test", "owners see addresses");
    // `%` and `_` are matched literally.
    let (_, literal) = rest(&stack, "GET", "/v1/users?q=%25", Some(&owner.access)).await?;
    assert_eq!(literal["users"], json!([]), "{literal}");

    // Bad parameters are named, before the token is looked at.
    for (query, named) in [
        ("limit=0", "`limit`"),
        ("limit=201", "`limit`"),
        ("after=-1", "`after`"),
        ("q=", "`q`"),
        ("q=%20%20", "`q`"),
        (&format!("q={}", "a".repeat(101)), "`q`"),
        ("q=a%01", "`q`"),
        ("bogus=1", "`bogus`"),
        ("q=a&q=b", "`q`"),
    ] {
        let (status, body) = rest(&stack, "GET", &format!("/v1/users?{query}"), None).await?;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{query}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{query}: {message:?} names {named}");
    }
    for path in ["/v1/users/0", "/v1/users/x", "/v1/users/-4"] {
        let (status, body) = rest(&stack, "GET", path, Some(&member.access)).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_parameter")), "{path}");
    }
    let (status, _) = rest(&stack, "GET", "/v1/users", None).await?;
    assert_eq!(status, 401);

    // One person: an address for owners, admins and oneself only.
    let (_, ann) =
        rest(&stack, "GET", &format!("/v1/users/{}", people[1].user), Some(&people[2].access)).await?;
    assert_eq!((ann["handle"].as_str(), ann["email"].is_null()), (Some("ann"), true), "{ann}");
    let (_, me) = rest(&stack, "GET", &format!("/v1/users/{}", member.user), Some(&member.access)).await?;
    assert_eq!(me["email"], "ann@acme.test", "{me}");

    // The channel list: `general` for everyone but the guest, DM members listed.
    let dm = accounts::channel(&stack, owner.org, "", "dm", &[member.user, people[2].user]).await?;
    let (status, list) = rest(&stack, "GET", "/v1/channels", Some(&member.access)).await?;
    assert_eq!(status, 200, "{list}");
    let channels = list["channels"].as_array().cloned().unwrap_or_default();
    assert_eq!(channels.len(), 2, "{list}");
    assert_eq!((channels[0]["name"].as_str(), channels[0]["members"].is_null()), (Some("general"), true));
    assert_eq!(channels[1]["id"], dm.0);
    assert_eq!(channels[1]["kind"], "dm");
    let mut members = vec![member.user.0, people[2].user.0];
    members.sort_unstable();
    assert_eq!(channels[1]["members"], json!(members));
    let (_, list) = rest(&stack, "GET", "/v1/channels", Some(&guest.access)).await?;
    assert_eq!(list["channels"], json!([]), "a guest starts in no channel: {list}");

    // Profiles: one's own, field by field; others see them; null or "" clears a field.
    let profile = "/v1/me/profile";
    let change = json!({"display_name": " Ann Lee ", "title": "Site reliability", "time_zone": "Europe/Berlin",
                        "avatar_url": "https://example.com/ann.png"});
    let (status, me) = rest_json(&stack, "PATCH", profile, Some(&member.access), &change).await?;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (
            me["display_name"].as_str(),
            me["title"].as_str(),
            me["time_zone"].as_str(),
            me["avatar_url"].as_str()
        ),
        (
            Some("Ann Lee"),
            Some("Site reliability"),
            Some("Europe/Berlin"),
            Some("https://example.com/ann.png")
        )
    );
    let (_, seen) =
        rest(&stack, "GET", &format!("/v1/users/{}", member.user), Some(&people[2].access)).await?;
    assert_eq!(
        (seen["title"].as_str(), seen["time_zone"].as_str()),
        (Some("Site reliability"), Some("Europe/Berlin"))
    );
    let (_, me) =
        rest_json(&stack, "PATCH", profile, Some(&member.access), &json!({"title": null, "avatar_url": ""}))
            .await?;
    assert_eq!(
        (
            me["title"].is_null(),
            me["avatar_url"].is_null(),
            me["time_zone"].as_str(),
            me["display_name"].as_str()
        ),
        (true, true, Some("Europe/Berlin"), Some("Ann Lee")),
        "cleared two fields, kept the others: {me}"
    );
    let before = rest(&stack, "GET", &format!("/v1/users/{}", member.user), Some(&owner.access)).await?.1;
    for (body, code, named) in [
        (json!({}), "invalid_body", "at least one"),
        (json!({"title": "x".repeat(101)}), "invalid_field", "`title`"),
        (json!({"title": "a\u{7}b"}), "invalid_field", "`title`"),
        (json!({"time_zone": "Mars/Olympus Mons"}), "invalid_field", "`time_zone`"),
        (json!({"time_zone": "<img src=x>"}), "invalid_field", "`time_zone`"),
        (json!({"avatar_url": "javascript:alert(1)"}), "invalid_field", "`avatar_url`"),
        (json!({"avatar_url": "https://a b"}), "invalid_field", "`avatar_url`"),
        (json!({"display_name": "  "}), "invalid_field", "`display_name`"),
        (json!({"display_name": null}), "invalid_field", "`display_name`"),
        (json!({"avatar_url": "https://"}), "invalid_field", "`avatar_url`"),
        (json!({"handle": "new"}), "invalid_body", "`handle`"),
        (json!({"title": 7}), "invalid_body", "`title`"),
    ] {
        let (status, answer) = rest_json(&stack, "PATCH", profile, Some(&member.access), &body).await?;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some(code)), "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{body}: {message:?} names {named}");
    }
    let after = rest(&stack, "GET", &format!("/v1/users/{}", member.user), Some(&owner.access)).await?.1;
    assert_eq!(after, before, "refused profile changes changed nothing");
    let (status, _) = rest_json(&stack, "PATCH", profile, None, &json!({"title": "x"})).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_security_and_admin_actions_for_owners_and_admins() -> anyhow::Result<()> {
    let stack = stack_with_api(&[]).await?;
    let owner = create_org(&stack, "acme").await?;
    let ann = invite(&stack, &owner, "member", "ann").await?;
    let (status, _) = login(&stack, "acme", &ann.email, "wrong password!").await?;
    assert_eq!(status, 401);
    let (status, _) = login(&stack, "acme", "nobody@acme.test", "wrong password!").await?;
    assert_eq!(status, 401);
    let (status, body) = rest_json(
        &stack,
        "PUT",
        &format!("/v1/users/{}/role", ann.user),
        Some(&owner.access),
        &json!({"role": "guest"}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        rest(&stack, "POST", &format!("/v1/users/{}/deactivate", ann.user), Some(&owner.access)).await?;
    assert_eq!(status, 200, "{body}");
    // Another org's actions never show.
    let other = create_org(&stack, "other").await?;
    invite(&stack, &other, "member", "olaf").await?;

    let (status, log) = rest(&stack, "GET", "/v1/audit", Some(&owner.access)).await?;
    assert_eq!(status, 200, "{log}");
    let events = log["events"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "user.deactivated",
            "role.changed",
            "login.failed",
            "login.failed",
            "login.succeeded",
            "invite.accepted",
            "invite.created",
            "login.succeeded",
            "org.created"
        ],
        "newest first, this org only: {log}"
    );
    let ids: Vec<i64> = events.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "ids descend: {ids:?}");
    let role = &events[1];
    assert_eq!(
        (role["actor"].as_i64(), role["target_user"].as_i64()),
        (Some(owner.user.0), Some(ann.user.0))
    );
    assert_eq!(role["detail"], json!({"from": "member", "to": "guest"}));
    assert_eq!(role["ip"], "127.0.0.1");
    // The failed login of an existing account names it; the unknown address names nobody.
    assert_eq!(events[3]["target_user"], ann.user.0, "{}", events[3]);
    assert_eq!(events[3]["detail"]["email"], ann.email.as_str());
    assert!(events[2]["target_user"].is_null() && events[2]["actor"].is_null(), "{}", events[2]);

    // Filters and pages.
    let (_, logins) = rest(&stack, "GET", "/v1/audit?action=login", Some(&owner.access)).await?;
    assert_eq!(logins["events"].as_array().map(Vec::len), Some(4), "{logins}");
    let (_, about_ann) =
        rest(&stack, "GET", &format!("/v1/audit?target={}", ann.user), Some(&owner.access)).await?;
    assert_eq!(about_ann["events"].as_array().map(Vec::len), Some(3), "{about_ann}");
    let (_, by_ann) =
        rest(&stack, "GET", &format!("/v1/audit?actor={}", ann.user), Some(&owner.access)).await?;
    let by_ann: Vec<&str> =
        by_ann["events"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(by_ann, ["login.succeeded", "invite.accepted"]);
    let mut paged = Vec::new();
    let mut before = String::new();
    loop {
        let (_, page) =
            rest(&stack, "GET", &format!("/v1/audit?limit=4{before}"), Some(&owner.access)).await?;
        paged.extend(page["events"].as_array().into_iter().flatten().filter_map(|e| e["id"].as_i64()));
        match page["next_before"].as_i64() {
            Some(next) => before = format!("&before={next}"),
            None => break,
        }
    }
    assert_eq!(paged, ids, "pages of 4 give every record once");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let (_, future) =
        rest(&stack, "GET", &format!("/v1/audit?since={}", now + 60_000), Some(&owner.access)).await?;
    assert_eq!(future["events"], json!([]));

    // Members may not read it; bad parameters are named.
    let member = invite(&stack, &owner, "member", "bea").await?;
    let (status, body) = rest(&stack, "GET", "/v1/audit", Some(&member.access)).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    for (query, named) in [
        ("action=Login", "`action`"),
        ("action=a.b.c", "`action`"),
        ("actor=0", "`actor`"),
        ("limit=201", "`limit`"),
        ("since=5&until=5", "`until`"),
        ("since=99999999999999999", "`since`"),
        ("bogus=1", "`bogus`"),
    ] {
        let (status, body) = rest(&stack, "GET", &format!("/v1/audit?{query}"), None).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_parameter")), "{query}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{query}: {message:?}");
    }

    // Append-only: the database refuses to change a record.
    let client = stack.pool.get().await?;
    let refused = client.execute("UPDATE audit_events SET action = 'org.created'", &[]).await;
    assert!(refused.is_err(), "an audit record was changed");
    Ok(())
}
