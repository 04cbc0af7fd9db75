//! Bad input at the edge: each abuse gets its documented error frame or close code, and a
//! bystander on the same gateway keeps receiving normally throughout.

use std::time::Duration;

use fastwebsockets::OpCode;
use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_protocol::frames::{close_code, ErrorCode, ServerFrame};
use threadspace_protocol::token::{Claims, Identity, SigningKey, TokenRequest};
use threadspace_protocol::ChannelId;
use threadspace_tests::{rate_limited_until_close, recv_messages, recv_until, send_and_ack, Fixture, WAIT};

/// Small limits so abuses trip them quickly.
const LIMITS: &[&str] = &[
    "--max-frame-bytes",
    "4096",
    "--max-message-bytes",
    "8192",
    "--max-body-bytes",
    "2048",
    "--frames-per-second",
    "20",
    "--frame-burst",
    "40",
    "--flood-strikes",
    "10",
    "--sends-per-second",
    "5",
    "--send-burst",
    "5",
    "--hello-timeout",
    "1s",
    "--outbound-queue",
    "16",
    "--socket-send-buffer",
    "4096",
    "--write-timeout",
    "3s",
];

/// LIMITS with the send and frame rate limits lifted, so one client can flood.
fn flood_limits() -> Vec<&'static str> {
    let mut args: Vec<&str> = Vec::new();
    for pair in LIMITS.chunks(2) {
        if !matches!(pair[0], "--sends-per-second" | "--send-burst" | "--frames-per-second" | "--frame-burst")
        {
            args.extend_from_slice(pair);
        }
    }
    args.extend_from_slice(threadspace_tests::NO_RATE_LIMITS);
    args
}

/// Connects `handle` to gateway 0 as a client that stops reading at once: its reader queue
/// holds one frame and its socket a 4 KiB receive buffer.
async fn connect_non_reader(fx: &Fixture, handle: &str) -> anyhow::Result<Client> {
    let mut options = ConnectOptions::new(fx.stack.ws_url(0));
    options.queue = 1;
    options.recv_buffer = Some(4096);
    Ok(fx.connect_with(handle, 0, None, options).await?.0)
}

/// Reads what a client that stopped reading has buffered, then requires the 4008 close frame
/// (not a reset or an end of stream); `context` is added to the failure message.
async fn read_until_slow_consumer_close(client: &mut Client, context: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no slow-consumer close{context}");
        match client.recv(WAIT).await? {
            Incoming::Close { code, .. } => {
                anyhow::ensure!(
                    code == close_code::SLOW_CONSUMER,
                    "expected close 4008{context}, got {code}"
                );
                return Ok(());
            }
            Incoming::Failed(e) => anyhow::bail!("expected close 4008{context}, got failure {e}"),
            _ => {}
        }
    }
}

/// alice sends to #general and bob must receive it: proves the gateway still serves others.
struct Bystander {
    alice: Client,
    bob: Client,
    general: ChannelId,
    n: u32,
}

impl Bystander {
    async fn new(fx: &Fixture) -> anyhow::Result<Self> {
        let (alice, _) = fx.connect("alice", 0).await?;
        let (bob, _) = fx.connect("bob", 0).await?;
        Ok(Self { alice, bob, general: fx.channel("general").await, n: 0 })
    }

    async fn still_served(&mut self) -> anyhow::Result<()> {
        self.n += 1;
        // Stay under alice's send limit of 5/s.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (seq, _, _) =
            send_and_ack(&mut self.alice, self.general, &format!("b{}", self.n), "still here").await?;
        let got = recv_messages(&mut self.bob, 1).await?;
        anyhow::ensure!(got[0].seq == seq, "bystander got {:?}, expected seq {seq}", got[0]);
        Ok(())
    }
}

async fn expect_error(client: &mut Client, code: ErrorCode) -> anyhow::Result<(Option<String>, String)> {
    match recv_until(client, "an error frame", |i| matches!(i, Incoming::Frame(ServerFrame::Error { .. })))
        .await?
    {
        Incoming::Frame(ServerFrame::Error { code: got, reference, message }) => {
            anyhow::ensure!(got == code, "expected {code:?}, got {got:?}: {message}");
            Ok((reference, message))
        }
        _ => unreachable!("recv_until matched an error frame"),
    }
}

async fn expect_close(client: &mut Client, code: u16) -> anyhow::Result<()> {
    match recv_until(client, "a close frame", |i| matches!(i, Incoming::Close { .. })).await {
        Ok(Incoming::Close { code: got, reason }) => {
            anyhow::ensure!(got == code, "expected close {code}, got {got} ({reason})");
            Ok(())
        }
        Ok(_) => unreachable!("recv_until matched a close"),
        Err(e) => Err(e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_error_frames_and_the_connection_lives_on() -> anyhow::Result<()> {
    let fx = Fixture::start(1, LIMITS).await?;
    let mut by = Bystander::new(&fx).await?;
    let (mut erin, _) = fx.connect("erin", 0).await?;

    erin.send_text("{not json").await?;
    expect_error(&mut erin, ErrorCode::BadJson).await?;
    erin.send_text(r#"{"op":"teleport","ref":"t1"}"#).await?;
    let (reference, message) = expect_error(&mut erin, ErrorCode::UnknownOp).await?;
    assert_eq!(reference.as_deref(), Some("t1"));
    assert!(message.contains("teleport"));
    erin.send_text(r#"{"op":"send","ref":"s1","channel":"general","client_msg_id":"x","body":"b"}"#).await?;
    let (reference, message) = expect_error(&mut erin, ErrorCode::InvalidField).await?;
    assert_eq!(reference.as_deref(), Some("s1"));
    assert!(message.contains("channel"), "{message}");
    erin.send_text(r#"{"op":"send","ref":"s2","channel":1,"body":"b"}"#).await?;
    let (_, message) = expect_error(&mut erin, ErrorCode::InvalidField).await?;
    assert!(message.contains("client_msg_id"), "{message}");
    erin.send_raw(OpCode::Binary, true, vec![1, 2, 3]).await?;
    expect_error(&mut erin, ErrorCode::BadFrame).await?;
    erin.send_text(r#"{"op":"hello","token":"again"}"#).await?;
    expect_error(&mut erin, ErrorCode::AlreadyAuthenticated).await?;
    let general = fx.channel("general").await;
    let body = "x".repeat(3000);
    erin.send_text(
        &serde_json::json!({"op":"send","ref":"big","channel":general,"client_msg_id":"big","body":body})
            .to_string(),
    )
    .await?;
    let (reference, _) = expect_error(&mut erin, ErrorCode::BodyTooLarge).await?;
    assert_eq!(reference.as_deref(), Some("big"));

    // Still alive: a ping is answered.
    erin.send_text(r#"{"op":"ping","ref":"p"}"#).await?;
    recv_until(
        &mut erin,
        "pong",
        |i| matches!(i, Incoming::Frame(ServerFrame::Pong { reference: Some(r) }) if r == "p"),
    )
    .await?;
    by.still_served().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_cannot_send_and_bad_tokens_are_refused() -> anyhow::Result<()> {
    let fx = Fixture::start(1, LIMITS).await?;
    let mut by = Bystander::new(&fx).await?;

    // A private channel erin is not in (the seeded layout has private-1 with 5 members).
    let private = fx.channel("private-1").await;
    let directory = fx.stack.directory();
    let outsider = {
        let mut found = None;
        for handle in ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"] {
            if !directory.is_member(private, fx.user(handle)).await? {
                found = Some(handle);
                break;
            }
        }
        found.expect("private-1 has 5 of 12 members")
    };
    let (mut client, welcome) = fx.connect(outsider, 0).await?;
    assert!(welcome.channels.iter().all(|c| c.id != private), "welcome lists only the user's channels");
    client.send_text(&serde_json::json!({"op":"send","ref":"np","channel":private,"client_msg_id":"np","body":"sneak"}).to_string()).await?;
    let (reference, _) = expect_error(&mut client, ErrorCode::NotMember).await?;
    assert_eq!(reference.as_deref(), Some("np"));
    by.still_served().await?;

    let url = fx.stack.ws_url(0);
    let identity = Identity::new(fx.user("erin"), fx.org);
    let forger = SigningKey::generate(fx.stack.keys.signing.kid());
    let forged = forger.mint(TokenRequest {
        identity,
        issuer: "threadspace-local",
        audience: "threadspace-gateway",
        ttl: Duration::from_secs(60),
    });
    let expired = fx.stack.keys.signing.mint_claims(&Claims {
        iss: "threadspace-local".into(),
        aud: "threadspace-gateway".into(),
        sub: identity.user.0.to_string(),
        org: identity.org,
        iat: 1,
        exp: 2,
        sid: None,
    });
    let wrong_audience = fx.stack.keys.signing.mint(TokenRequest {
        identity,
        issuer: "threadspace-local",
        audience: "somewhere-else",
        ttl: Duration::from_secs(60),
    });
    let wrong_org = fx.stack.keys.token(
        Identity::new(identity.user, threadspace_protocol::OrgId(identity.org.0 + 1)),
        Duration::from_secs(60),
    );
    for (what, token) in [
        ("forged", forged),
        ("expired", expired),
        ("wrong audience", wrong_audience),
        ("wrong org", wrong_org),
        ("garbage", "abc".into()),
    ] {
        let mut client = Client::connect(&ConnectOptions::new(url.clone())).await?;
        client.send_text(&serde_json::json!({"op":"hello","token":token}).to_string()).await?;
        expect_error(&mut client, ErrorCode::AuthFailed).await.map_err(|e| e.context(what))?;
        expect_close(&mut client, close_code::AUTH_FAILED).await.map_err(|e| e.context(what))?;
    }
    by.still_served().await?;

    // No hello at all, and a first frame that is not hello.
    let mut silent = Client::connect(&ConnectOptions::new(url.clone())).await?;
    expect_close(&mut silent, close_code::HELLO_TIMEOUT).await?;
    let mut rude = Client::connect(&ConnectOptions::new(url.clone())).await?;
    rude.send_text(r#"{"op":"ping"}"#).await?;
    expect_error(&mut rude, ErrorCode::HelloRequired).await?;
    expect_close(&mut rude, close_code::HELLO_REQUIRED).await?;
    // A browser from a foreign origin cannot even upgrade.
    let mut options = ConnectOptions::new(url);
    options.origin = Some("https://evil.example".into());
    assert!(Client::connect(&options).await.is_err(), "a foreign Origin is refused");
    by.still_served().await?;
    Ok(())
}

/// Runs `check` and records its failure under `what` instead of stopping at the first one.
async fn collect(
    failures: &mut Vec<String>,
    what: &str,
    check: impl std::future::Future<Output = anyhow::Result<()>>,
) {
    if let Err(e) = check.await {
        failures.push(format!("{what}: {e:#}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_corners_and_close_codes_follow_the_protocol_doc() -> anyhow::Result<()> {
    let fx = Fixture::start(1, LIMITS).await?;
    let url = fx.stack.ws_url(0);
    let mut failures = Vec::new();
    // A first frame that is not JSON at all is not a hello either (protocol.md: hello_required).
    collect(&mut failures, "non-JSON first frame", async {
        let mut garbled = Client::connect(&ConnectOptions::new(url.clone())).await?;
        garbled.send_text("{not json").await?;
        expect_error(&mut garbled, ErrorCode::HelloRequired).await?;
        expect_close(&mut garbled, close_code::HELLO_REQUIRED).await
    })
    .await;
    // Another op is not a hello, even when it is malformed too.
    collect(&mut failures, "malformed read as first frame", async {
        let mut early = Client::connect(&ConnectOptions::new(url.clone())).await?;
        early.send_text(r#"{"op":"read","ref":"r","channel":1,"seq":-1}"#).await?;
        expect_error(&mut early, ErrorCode::HelloRequired).await?;
        expect_close(&mut early, close_code::HELLO_REQUIRED).await
    })
    .await;
    // A hello without a token, or with a token that is not a string, is an authentication
    // failure: auth_failed and 4001, like any rejected token.
    for hello in [r#"{"op":"hello"}"#, r#"{"op":"hello","token":42}"#] {
        collect(&mut failures, hello, async {
            let mut tokenless = Client::connect(&ConnectOptions::new(url.clone())).await?;
            tokenless.send_text(hello).await?;
            let (_, message) = expect_error(&mut tokenless, ErrorCode::AuthFailed).await?;
            anyhow::ensure!(message.contains("token"), "the error names the token: {message}");
            expect_close(&mut tokenless, close_code::AUTH_FAILED).await
        })
        .await;
    }
    // A client close with a code no endpoint may send (999) is a protocol error: RFC 6455
    // §7.4 — answered with 1002, not echoed as a normal closure.
    collect(&mut failures, "close 999", async {
        let (mut client, _) = fx.connect("frank", 0).await?;
        client.send_raw(OpCode::Close, true, 999u16.to_be_bytes().to_vec()).await?;
        expect_close(&mut client, close_code::PROTOCOL_ERROR).await
    })
    .await;
    // A valid code with a reason is a normal closure: answered 1000 (protocol.md, close codes).
    collect(&mut failures, "close 4000", async {
        let (mut client, _) = fx.connect("frank", 0).await?;
        let mut payload = 4000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        client.send_raw(OpCode::Close, true, payload).await?;
        expect_close(&mut client, close_code::NORMAL).await
    })
    .await;
    // session_id names the connection on its gateway: two sessions of one user differ.
    collect(&mut failures, "session ids", async {
        let (_, first) = fx.connect("heidi", 0).await?;
        let (_, second) = fx.connect("heidi", 0).await?;
        anyhow::ensure!(first.session_id != second.session_id, "two connections share a session_id");
        let me = threadspace_protocol::frames::PresenceEntry {
            user: fx.user("heidi"),
            status: threadspace_protocol::frames::PresenceStatus::Online,
        };
        anyhow::ensure!(
            first.presence.contains(&me),
            "the welcome snapshot lists the user themself: {:?}",
            first.presence
        );
        Ok(())
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} corners differ from protocol.md:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_fragment_floods_and_send_floods_are_closed() -> anyhow::Result<()> {
    let fx = Fixture::start(1, LIMITS).await?;
    let mut by = Bystander::new(&fx).await?;

    // One frame over --max-frame-bytes.
    let (mut big, _) = fx.connect("carol", 0).await?;
    big.send_raw(OpCode::Text, true, vec![b' '; 5000]).await?;
    expect_close(&mut big, close_code::TOO_LARGE).await?;
    by.still_served().await?;

    // Fragments each under the frame limit, together over --max-message-bytes.
    let (mut fragments, _) = fx.connect("dave", 0).await?;
    fragments.send_raw(OpCode::Text, false, vec![b' '; 3000]).await?;
    // The gateway may close as soon as the total passes the limit, so a later write can fail.
    for _ in 0..3 {
        if fragments.send_raw(OpCode::Continuation, false, vec![b' '; 3000]).await.is_err() {
            break;
        }
    }
    expect_close(&mut fragments, close_code::TOO_LARGE).await?;
    by.still_served().await?;

    // A flood of tiny fragments: past the frame rate limit the connection is closed.
    let (mut flood, _) = fx.connect("erin", 0).await?;
    flood.send_raw(OpCode::Text, false, b"{".to_vec()).await?;
    for _ in 0..200 {
        if flood.send_raw(OpCode::Continuation, false, b" ".to_vec()).await.is_err() {
            break;
        }
    }
    expect_close(&mut flood, close_code::RATE_LIMITED).await?;
    by.still_served().await?;

    // Sends past the per-user limit get rate_limited errors, then the connection is closed.
    let (mut spammer, _) = fx.connect("frank", 0).await?;
    let general = fx.channel("general").await;
    for i in 0..40 {
        let frame = serde_json::json!({"op":"send","ref":format!("f{i}"),"channel":general,"client_msg_id":format!("f{i}"),"body":"spam"});
        if spammer.send_text(&frame.to_string()).await.is_err() {
            break;
        }
    }
    let limited = rate_limited_until_close(&mut spammer).await?.len();
    assert!(limited >= 10, "rate_limited errors came before the close ({limited})");
    // frank's accepted messages reached bob, then the bystander check continues in order.
    let mut frank_msgs = 0;
    while frank_msgs < 5 {
        let m = recv_messages(&mut by.bob, 1).await?;
        assert_eq!(m[0].sender, fx.user("frank"));
        frank_msgs += 1;
    }
    by.still_served().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_as_slow_consumer() -> anyhow::Result<()> {
    // LIMITS with a generous send rate, so heidi can flood.
    let fx = Fixture::start(1, &flood_limits()).await?;
    let mut by = Bystander::new(&fx).await?;
    let general = fx.channel("general").await;

    let mut grace = connect_non_reader(&fx, "grace").await?;

    // heidi floods #general with 1.5 KiB messages: grace's queue fills up.
    let (mut heidi, _) = fx.connect("heidi", 0).await?;
    let body = "z".repeat(1500);
    let mut acked = Vec::new();
    for i in 0..150 {
        let (seq, _, _) = send_and_ack(&mut heidi, general, &format!("h{i}"), &body).await?;
        acked.push(seq);
    }
    // bob (the bystander) got all of them in order.
    let got: Vec<u64> = recv_messages(&mut by.bob, acked.len()).await?.iter().map(|m| m.seq).collect();
    assert_eq!(got, acked);
    by.still_served().await?;

    // grace finally reads: whatever was buffered, then the slow-consumer close.
    read_until_slow_consumer_close(&mut grace, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_sending_but_never_reads_gets_a_readable_slow_consumer_close(
) -> anyhow::Result<()> {
    let fx = Fixture::start(1, &flood_limits()).await?;
    let general = fx.channel("general").await;
    let mut grace = connect_non_reader(&fx, "grace").await?;
    let (mut heidi, _) = fx.connect("heidi", 0).await?;

    // heidi floods #general while grace, who reads nothing, keeps sending pings — before, during
    // and after the moment her queue overflows.
    let body = "z".repeat(1500);
    let mut pinged = 0;
    let ping = |n: u32| serde_json::json!({"op":"ping","ref":format!("p{n}")}).to_string();
    for i in 0..150 {
        send_and_ack(&mut heidi, general, &format!("h{i}"), &body).await?;
        if grace.send_text(&ping(pinged)).await.is_ok() {
            pinged += 1;
        }
    }
    // Longer than the old one-second linger after the three-second write timeout.
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < until {
        if grace.send_text(&ping(pinged)).await.is_ok() {
            pinged += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // grace reads at last: what was buffered, then a close frame she can read — not a reset.
    read_until_slow_consumer_close(&mut grace, &format!(" after {pinged} pings")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_by_the_header_read_timeout() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let fx = Fixture::start(1, &["--header-read-timeout", "1s"]).await?;
    let mut by = Bystander::new(&fx).await?;
    let port = fx.stack.gateways[0].port;
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    slow.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n").await?;
    // Never finish the headers: the gateway must give up on its own.
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the gateway kept a half-sent request open for 5 s");
    assert!(started.elapsed() < Duration::from_secs(4), "closed after {:?}", started.elapsed());
    by.still_served().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed_as_idle() -> anyhow::Result<()> {
    let fx = Fixture::start(1, &["--heartbeat", "500ms", "--idle-timeout", "2s"]).await?;
    // The bystander answers pings (the reference client does by default) and must survive.
    let mut by = Bystander::new(&fx).await?;
    let mut options = ConnectOptions::new(fx.stack.ws_url(0));
    options.auto_pong = false;
    let (mut mute, _) = fx.connect_with("carol", 0, None, options).await?;
    let started = std::time::Instant::now();
    expect_close(&mut mute, close_code::IDLE_TIMEOUT).await?;
    let after = started.elapsed();
    assert!(after >= Duration::from_millis(1500) && after < Duration::from_secs(6), "closed after {after:?}");
    by.still_served().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_dropped_by_the_frame_limit_are_named_by_ref() -> anyhow::Result<()> {
    let fx = Fixture::start(1, &["--frames-per-second", "5", "--frame-burst", "5", "--flood-strikes", "10"])
        .await?;
    let mut by = Bystander::new(&fx).await?;
    let (mut pinger, _) = fx.connect("grace", 0).await?;
    for i in 0..30 {
        if pinger.send_text(&format!(r#"{{"op":"ping","ref":"p{i}"}}"#)).await.is_err() {
            break;
        }
    }
    let refs = rate_limited_until_close(&mut pinger).await?;
    assert!(refs.iter().all(|r| r.as_deref().is_some_and(|r| r.starts_with('p'))), "{refs:?}");
    let named = refs.len();
    assert!(named >= 10, "frame-limited requests were named ({named})");
    by.still_served().await?;
    Ok(())
}
