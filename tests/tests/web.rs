//! The web client (docs/web.md) in a real headless Chromium, against the real stack: the page,
//! its scripts and config come from the api service, its WebSocket goes to real gateways, and
//! what it shows is checked against what Postgres archived. The selectors are the client's DOM
//! contract, listed in docs/web.md.
//!
//! Two people chat across two gateways; one scrolls back through 500 messages; both gateways
//! are SIGKILLed in turn while messages keep coming; presence, idle and typing reach the other
//! window. Then the client's safety (an XSS payload through every field it renders, the
//! Content-Security-Policy), accessibility (axe-core), a 360 px wide phone, bad input, and the
//! account screens (invite acceptance, sign-up, admin, sign-out).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_devstack::{Stack, StackOptions};
use threadspace_protocol::{ChannelId, UserId};
use threadspace_tests::accounts::{self, Account, PASSWORD};
use threadspace_tests::browser::{axe_source, serious_accessibility_violations, Driver, Page, UI_TIMEOUT};
use threadspace_tests::{
    archived, rest_json, send_and_ack, wait_archived, wait_indexed, NO_RATE_LIMITS, WAIT,
};

/// Script that runs when the page renders it as HTML instead of text.
const PAYLOAD: &str = "<img src=x onerror=alert(1)>";
/// WebDriver's Enter key.
const ENTER: &str = "\u{E007}";

fn screenshots() -> PathBuf {
    threadspace_devstack::tools::repo_root().join("target/screenshots")
}

/// Signs in through the login form and waits for the live connection.
async fn sign_in(page: &Page, base: &str, account: &Account) -> anyhow::Result<()> {
    page.goto(&format!("{base}/#/login")).await?;
    page.fill("#login-org", &account.slug).await?;
    page.fill("#login-email", &account.email).await?;
    page.fill("#login-password", PASSWORD).await?;
    page.click("#login-submit").await?;
    connected(page).await
}

async fn connected(page: &Page) -> anyhow::Result<()> {
    page.wait("#connection-status[data-state=\"connected\"]").await.map(|_| ())
}

/// Opens a channel the way a person would: its link in the sidebar.
async fn open_channel(page: &Page, channel: ChannelId) -> anyhow::Result<()> {
    page.click(&format!("a.channel-link[data-channel=\"{channel}\"]")).await?;
    page.until(
        "the channel's first page",
        &format!(
            "return document.querySelector('#messages') && document.querySelector('a.channel-link[data-channel=\"{channel}\"][aria-current]') !== null"
        ),
        UI_TIMEOUT,
    )
    .await
    .map(|_| ())
}

/// Types `text` into the composer and presses Enter.
async fn send(page: &Page, text: &str) -> anyhow::Result<()> {
    page.fill("#composer", text).await?;
    let composer = page.wait("#composer").await?;
    composer.send_keys(ENTER).await?;
    Ok(())
}

/// The `data-seq` of every acknowledged message shown, in DOM order.
async fn shown_seqs(page: &Page) -> anyhow::Result<Vec<u64>> {
    let value = page
        .js(
            "return [...document.querySelectorAll('#messages li.message')]
                .map(li => li.dataset.seq).filter(s => s).map(Number);",
            Vec::new(),
        )
        .await?;
    Ok(serde_json::from_value(value)?)
}

/// Waits until a message with `body` is shown and acknowledged.
async fn shown(page: &Page, body: &str) -> anyhow::Result<()> {
    page.until(
        &format!("the message {body:?}"),
        &format!(
            "return [...document.querySelectorAll('#messages li.message[data-state=\"acked\"] .message-body')]
                .some(b => b.textContent === {});",
            json!(body)
        ),
        UI_TIMEOUT,
    )
    .await
    .map(|_| ())
}

/// Scrolls the message list to its top until the start-of-history marker shows.
async fn scroll_to_beginning(page: &Page) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let state = page
            .js(
                "const list = document.querySelector('#messages');
                 list.scrollTop = 0;
                 return {done: document.querySelector('#history-start') !== null,
                         shown: list.querySelectorAll('li.message').length,
                         top: list.scrollTop, height: list.scrollHeight, client: list.clientHeight};",
                Vec::new(),
            )
            .await?;
        if state["done"] == json!(true) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(90),
            "the beginning of the history never showed: {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The archived seqs of `channel`, in order.
async fn archived_seqs(stack: &Stack, channel: ChannelId) -> anyhow::Result<Vec<u64>> {
    Ok(archived(stack).await?.into_iter().filter(|m| m.channel == channel).map(|m| m.seq).collect())
}

async fn channel_named(stack: &Stack, account: &Account, name: &str) -> anyhow::Result<ChannelId> {
    stack
        .directory()
        .channel_by_name(account.org, name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no channel {name}"))
}

/// A WebSocket client of `account` on gateway `gateway` (the test's own sender).
async fn ws(stack: &Stack, account: &Account, gateway: usize) -> anyhow::Result<Client> {
    let mut client = Client::connect(&ConnectOptions::new(stack.ws_url(gateway))).await?;
    client.hello(&account.access, None, WAIT).await?;
    Ok(client)
}

/// Records every state the connection indicator takes from now on.
async fn record_connection_states(page: &Page) -> anyhow::Result<()> {
    page.js(
        "window.__states = [];
         const el = document.querySelector('#connection-status');
         new MutationObserver(() => window.__states.push(el.dataset.state))
             .observe(el, {attributes: true, attributeFilter: ['data-state']});",
        Vec::new(),
    )
    .await
    .map(|_| ())
}

async fn connection_states(page: &Page) -> anyhow::Result<Vec<String>> {
    Ok(serde_json::from_value(page.js("return window.__states || [];", Vec::new()).await?)?)
}

fn no_duplicates(seqs: &[u64]) -> bool {
    seqs.iter().collect::<HashSet<_>>().len() == seqs.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_in_browsers_through_history_a_gateway_crash_presence_and_typing(
) -> anyhow::Result<()> {
    let mut options = StackOptions::with_bridge(2, &[]);
    options.gateway_args = NO_RATE_LIMITS.iter().map(|s| s.to_string()).collect();
    let mut stack = Stack::start(options).await?;
    let base = stack.api.http_url();
    let ada = accounts::create_org(&stack, "acme").await?;
    let grace = accounts::invite(&stack, &ada, "member", "grace").await?;
    let general = channel_named(&stack, &ada, "general").await?;
    let history = accounts::channel(&stack, ada.org, "history", "public", &[ada.user, grace.user]).await?;

    // 500 messages of history, sent over the real path and archived by the bridge.
    let mut sender = ws(&stack, &ada, 0).await?;
    for i in 0..500 {
        send_and_ack(&mut sender, history, &format!("h{i}"), &format!("history message {i}")).await?;
    }
    wait_archived(&stack, 500, Duration::from_secs(60)).await?;
    drop(sender);

    let driver = Driver::start().await?;
    let (a, b) = (driver.page(1400, 900).await?, driver.page(1400, 900).await?);
    // Ada's window reports idle after 3 s without input (the client's test override).
    a.goto(&format!("{base}/#/login")).await?;
    a.js("localStorage.setItem('threadspace.idle_after_ms', '3000'); location.reload();", Vec::new()).await?;
    a.wait("#login-form").await?;
    sign_in(&a, &base, &ada).await?;
    sign_in(&b, &base, &grace).await?;
    open_channel(&a, general).await?;
    open_channel(&b, general).await?;

    // A message goes from one window to the other, pending then acknowledged.
    send(&a, "hello grace").await?;
    shown(&a, "hello grace").await?;
    shown(&b, "hello grace").await?;
    // Ada's presence shows online in Grace's window, next to the message.
    let online = format!(".presence[data-user=\"{}\"][data-status=\"online\"]", ada.user);
    b.wait(&online).await?;

    // Typing reaches the other window and ends with the message.
    // Ada keeps typing, a key every 300 ms, as a person does (the gateway forwards one `typing`
    // per 3 s, and the client announces only typing that goes on).
    a.fill("#composer", "about to say").await?;
    let composer = a.wait("#composer").await?;
    let deadline = tokio::time::Instant::now() + UI_TIMEOUT;
    while !b.text("#typing").await?.contains("is typing") {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "Grace never saw Ada typing");
        composer.send_keys(".").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let typing = b.text("#typing").await?;
    assert!(typing.contains("The Owner"), "the typing line names the typist: {typing:?}");

    // Left alone for 3 s, Ada's window reports idle; a key press makes her online again.
    let idle = format!(".presence[data-user=\"{}\"][data-status=\"idle\"]", ada.user);
    b.until("Ada shown idle", &format!("return document.querySelector('{idle}') !== null;"), UI_TIMEOUT)
        .await?;
    a.wait("#composer").await?.send_keys("!").await?;
    b.until(
        "Ada shown online again",
        &format!("return document.querySelector('{online}') !== null;"),
        UI_TIMEOUT,
    )
    .await?;

    // Grace scrolls back through the whole history: every message once, in order.
    open_channel(&b, history).await?;
    scroll_to_beginning(&b).await?;
    let want = archived_seqs(&stack, history).await?;
    assert_eq!(want.len(), 500);
    let seen = shown_seqs(&b).await?;
    assert_eq!(seen, want, "Grace's window shows the 500 archived messages, each once, in order");
    open_channel(&b, general).await?;

    // A message body is text: the payload shows as written and runs nothing.
    send(&a, PAYLOAD).await?;
    shown(&b, PAYLOAD).await?;
    let images = b.js("return document.querySelectorAll('#messages img').length;", Vec::new()).await?;
    assert_eq!(images, json!(0), "no element was made of a message body");
    assert!(!b.dialog_open().await && !a.dialog_open().await, "no script ran");

    // Both gateways crash in turn (SIGKILL) while another client keeps posting; each window
    // shows "reconnecting", resumes, and ends with exactly the archived messages.
    record_connection_states(&a).await?;
    record_connection_states(&b).await?;
    let mut posted = 0;
    for (dead, alive) in [(0usize, 1usize), (1, 0)] {
        stack.kill_gateway(dead);
        let mut poster = ws(&stack, &ada, alive).await?;
        for i in 0..5 {
            posted += 1;
            send_and_ack(
                &mut poster,
                general,
                &format!("crash{dead}-{i}"),
                &format!("while gateway {dead} is down {i}"),
            )
            .await?;
        }
        // Ada also types one herself while her socket may be down: pending until it is back.
        send(&a, &format!("typed while gateway {dead} was down")).await?;
        stack.start_gateway(dead).await?;
        connected(&a).await?;
        connected(&b).await?;
        shown(&a, &format!("typed while gateway {dead} was down")).await?;
        shown(&b, &format!("typed while gateway {dead} was down")).await?;
        shown(&b, &format!("while gateway {dead} is down 4")).await?;
    }
    assert_eq!(posted, 10);
    send(&b, "all good").await?;
    shown(&a, "all good").await?;
    let sent_in_general = 1 + 1 + 10 + 2 + 1;
    wait_archived(&stack, 500 + sent_in_general, Duration::from_secs(30)).await?;
    let want = archived_seqs(&stack, general).await?;
    assert_eq!(want.len(), sent_in_general);
    for (who, page) in [("Ada", &a), ("Grace", &b)] {
        let seen = shown_seqs(page).await?;
        assert!(no_duplicates(&seen), "{who}'s window shows a message twice: {seen:?}");
        assert_eq!(seen, want, "{who}'s window shows exactly the archived messages, in order");
        let pending = page
            .js("return document.querySelectorAll('#messages li.message:not([data-state=\"acked\"])').length;", Vec::new())
            .await?;
        assert_eq!(pending, json!(0), "{who}'s window has nothing left pending or failed");
    }
    let reconnected = [connection_states(&a).await?, connection_states(&b).await?];
    for (who, states) in ["Ada", "Grace"].iter().zip(&reconnected) {
        assert!(
            states.iter().any(|s| s == "reconnecting"),
            "{who}'s window showed no reconnecting state across two gateway crashes: {states:?}"
        );
    }

    // Viewing the channel moved Grace's read marker to its newest message.
    let newest = *want.last().expect("messages");
    let client = stack.pool.get().await?;
    let deadline = tokio::time::Instant::now() + UI_TIMEOUT;
    loop {
        let row = client
            .query_opt(
                "SELECT seq FROM read_markers WHERE user_id = $1 AND channel_id = $2",
                &[&grace.user.0, &general.0],
            )
            .await?;
        if row.map(|r| r.get::<_, i64>(0) as u64) >= Some(newest) {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "Grace's read marker never reached {newest}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Channels and conversations from the UI: Ada creates #launch; Grace finds it in the
    // channel browser, joins and posts; Ada opens a DM with Grace, which appears in Grace's
    // sidebar with the message.
    a.click("#new-channel").await?;
    a.fill("#new-channel-name", "launch").await?;
    a.click("#new-channel-submit").await?;
    let deadline = tokio::time::Instant::now() + UI_TIMEOUT;
    let launch = loop {
        if let Some(launch) = stack.directory().channel_by_name(ada.org, "launch").await? {
            break launch;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "#launch was never created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let current = |c: ChannelId| {
        format!(
            "return document.querySelector('a.channel-link[data-channel=\"{c}\"][aria-current]') !== null;"
        )
    };
    a.until("#launch open in Ada's window", &current(launch), UI_TIMEOUT).await?;
    b.click("#browse-link").await?;
    b.click(&format!("li.browse-channel[data-channel=\"{launch}\"] button.browse-join")).await?;
    b.until("#launch open in Grace's window", &current(launch), UI_TIMEOUT).await?;
    send(&b, "launch is go").await?;
    shown(&a, "launch is go").await?;
    a.click("#new-dm").await?;
    a.fill("#new-dm-search", "grace").await?;
    a.click(&format!("li.dm-candidate[data-user=\"{}\"] input.dm-candidate-check", grace.user)).await?;
    a.click("#new-dm-submit").await?;
    a.until(
        "the DM open in Ada's window",
        "const link = document.querySelector('a.channel-link[aria-current]');
         return link !== null && link.textContent.includes('User grace');",
        UI_TIMEOUT,
    )
    .await?;
    send(&a, "psst").await?;
    shown(&a, "psst").await?;
    b.until(
        "the DM in Grace's sidebar",
        "const link = [...document.querySelectorAll('a.channel-link')].find(l => l.textContent.includes('The Owner'));
         if (link) link.click();
         return link !== undefined;",
        UI_TIMEOUT,
    )
    .await?;
    shown(&b, "psst").await?;

    // Ada renames #launch and sets its topic from the channel's settings; Grace's window, on
    // the other gateway, shows both live. Then Ada archives it: Grace's window keeps it
    // readable, says so, and takes no more messages.
    open_channel(&a, launch).await?;
    open_channel(&b, launch).await?;
    a.click("[data-test=channel-settings]").await?;
    a.fill("[data-test=channel-settings-name]", "launch-eu").await?;
    a.fill("[data-test=channel-settings-topic]", "go live on friday").await?;
    a.click("[data-test=channel-settings-save]").await?;
    b.until(
        "the new name and topic in Grace's window",
        &format!(
            "const link = document.querySelector('a.channel-link[data-channel=\"{launch}\"]');
             const topic = document.querySelector('[data-test=channel-topic]');
             return link !== null && link.textContent.includes('launch-eu')
                 && topic !== null && topic.textContent.includes('go live on friday');"
        ),
        UI_TIMEOUT,
    )
    .await?;
    a.until(
        "the settings dialog closed",
        "const d = document.querySelector('#channel-settings-dialog'); return d === null || !d.open;",
        UI_TIMEOUT,
    )
    .await?;
    a.click("[data-test=channel-settings]").await?;
    a.click("[data-test=channel-archive]").await?;
    a.click("[data-test=channel-archive-confirm]").await?;
    b.until(
        "the archived notice and a disabled composer in Grace's window",
        &format!(
            "const notice = document.querySelector('[data-test=archived-notice]');
             return notice !== null && !notice.hidden && document.querySelector('#composer').disabled
                 && document.querySelector('a.channel-link[data-channel=\"{launch}\"]') === null;"
        ),
        UI_TIMEOUT,
    )
    .await?;
    shown(&b, "launch is go").await?;
    let state = stack
        .pool
        .get()
        .await?
        .query_one("SELECT name, topic, archived_at IS NOT NULL FROM channels WHERE id = $1", &[&launch.0])
        .await?;
    assert_eq!(
        (state.get::<_, String>(0), state.get::<_, String>(1), state.get::<_, bool>(2)),
        ("launch-eu".to_owned(), "go live on friday".to_owned(), true)
    );

    // Ada edits her profile; Grace opens it from one of Ada's messages and sees the title.
    open_channel(&a, general).await?;
    open_channel(&b, general).await?;
    a.click("#my-profile").await?;
    a.click("[data-test=profile-edit]").await?;
    a.fill("#profile-title", "Release manager").await?;
    a.click("[data-test=profile-save]").await?;
    wait_until("Ada's title is stored", || {
        let stack = &stack;
        let token = ada.access.clone();
        async move {
            let (_, me) = threadspace_tests::rest(stack, "GET", "/v1/me", Some(&token)).await?;
            Ok(me["user"]["title"] == "Release manager")
        }
    })
    .await?;
    // Her own export, from the same place: the job runs to done and offers the document.
    a.click("[data-test=export-mine]").await?;
    a.wait("[data-test=export-mine-progress][data-state=\"done\"]").await?;
    a.wait("[data-test=export-mine-download]").await?;
    b.click(&format!("li.message[data-sender=\"{}\"] button.message-author", ada.user)).await?;
    b.until(
        "Ada's title in her profile",
        "const t = document.querySelector('[data-test=profile-job-title]'); return t !== null && t.textContent.includes('Release manager');",
        UI_TIMEOUT,
    )
    .await?;

    a.close().await?;
    b.close().await?;
    Ok(())
}

/// Creates org `slug` named `name` whose owner is `Olive Owner`, and logs her in.
async fn org_named(stack: &Stack, slug: &str, name: &str) -> anyhow::Result<Account> {
    let email = format!("owner@{slug}.test");
    let body = json!({"slug": slug, "name": name,
        "owner": {"email": email, "handle": "olive", "display_name": "Olive Owner", "password": PASSWORD}});
    let (status, created) = rest_json(stack, "POST", "/v1/orgs", None, &body).await?;
    anyhow::ensure!(status == 201, "create org: {status} {created}");
    accounts::login_as(stack, slug, "olive", &email).await
}

/// The login form's error, once it shows.
async fn login_error(page: &Page) -> anyhow::Result<String> {
    page.until(
        "the login error",
        "return document.querySelector('#login-error').textContent.trim();",
        UI_TIMEOUT,
    )
    .await?;
    page.text("#login-error").await
}

/// Whether the document overflows its viewport sideways.
async fn scrolls_sideways(page: &Page) -> anyhow::Result<(bool, Value)> {
    let sizes = page
        .js(
            "const d = document.documentElement;
             return {scroll: d.scrollWidth, client: d.clientWidth, body: document.body.scrollWidth, inner: window.innerWidth};",
            Vec::new(),
        )
        .await?;
    let scroll = sizes["scroll"].as_u64().unwrap_or(u64::MAX).max(sizes["body"].as_u64().unwrap_or(u64::MAX));
    Ok((scroll > sizes["client"].as_u64().unwrap_or(0), sizes))
}

async fn accessible(page: &Page, axe: &str, what: &str) -> anyhow::Result<()> {
    let violations = serious_accessibility_violations(page, axe).await?;
    assert!(violations.is_empty(), "{what}: serious accessibility violations: {violations:#?}");
    Ok(())
}

/// Where the page renders untrusted text — org name, display name, message body, search hit —
/// it stays text; nothing injected runs, and the policy would stop it if it did.
async fn nothing_injected(page: &Page, what: &str) -> anyhow::Result<()> {
    let images = page.js("return document.images.length;", Vec::new()).await?;
    assert_eq!(images, json!(0), "{what}: an <img> was made from untrusted text");
    assert!(!page.dialog_open().await, "{what}: a dialog opened: injected script ran");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_safe_accessible_fits_a_phone_and_handles_accounts() -> anyhow::Result<()> {
    let mut options = StackOptions::with_bridge(1, &[]);
    // The erasure below waits this long for in-flight sends (there are none).
    options.api_args = ["--publish-timeout", "1s", "--erasure-settle", "1s"].map(String::from).to_vec();
    let stack = Stack::start(options).await?;
    let base = stack.api.http_url();
    let olive = org_named(&stack, "xss", PAYLOAD).await?;
    let mallory = accounts::invite_named(&stack, &olive, "member", "mallory", PAYLOAD).await?;
    let general = channel_named(&stack, &olive, "general").await?;
    // A DM is labelled with the other person's display name: the payload again.
    let dm = accounts::channel(&stack, olive.org, "", "dm", &[olive.user, mallory.user]).await?;
    // A channel name cannot carry it at all: names are `[a-z0-9_-]` (the schema refuses it).
    let refused = accounts::channel(&stack, olive.org, PAYLOAD, "public", &[olive.user]).await;
    assert!(refused.is_err(), "a channel named {PAYLOAD:?} was stored");

    // The page's policy: scripts and styles from this origin only, WebSockets to the gateway.
    let index = threadspace_client::rest::http_send(stack.api.port, "GET", "/", None, None)
        .await
        .ok_or_else(|| anyhow::anyhow!("GET / got no answer"))?;
    assert_eq!(index.status, 200);
    let policy = index.header("content-security-policy").unwrap_or_default().to_owned();
    for part in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
        assert!(policy.contains(part), "the policy has {part}: {policy}");
    }
    assert!(!policy.contains("unsafe"), "no unsafe-inline or unsafe-eval: {policy}");
    assert!(policy.contains(&stack.ws_url(0).trim_end_matches("/v1/ws").to_owned()), "{policy}");

    // Mallory (whose display name is the payload) posts payloads, a link and a long word.
    let long_word = "w".repeat(400);
    let mut mallory_ws = ws(&stack, &mallory, 0).await?;
    let bodies = [
        PAYLOAD.to_owned(),
        format!("findme {PAYLOAD}"),
        "see https://example.com/a?b=1 not javascript:alert(1)".to_owned(),
        long_word.clone(),
    ];
    for (i, body) in bodies.iter().enumerate() {
        send_and_ack(&mut mallory_ws, general, &format!("m{i}"), body).await?;
    }
    wait_archived(&stack, bodies.len(), Duration::from_secs(30)).await?;
    wait_indexed(&stack, bodies.len() as i64, Duration::from_secs(30)).await?;

    let driver = Driver::start().await?;
    let axe = axe_source()?;
    let desk = driver.page(1400, 900).await?;
    desk.goto(&format!("{base}/#/login")).await?;
    desk.wait("#login-form").await?;
    accessible(&desk, &axe, "the login page at 1,400 px").await?;

    // A wrong password and an unknown address get the same answer.
    desk.fill("#login-org", "xss").await?;
    desk.fill("#login-email", &olive.email).await?;
    desk.fill("#login-password", "not the password").await?;
    desk.click("#login-submit").await?;
    let wrong_password = login_error(&desk).await?;
    desk.js("document.querySelector('#login-error').textContent = '';", Vec::new()).await?;
    desk.fill("#login-email", "nobody@xss.test").await?;
    let cleared = desk.js("return document.querySelector('#login-password').value;", Vec::new()).await?;
    assert_eq!(cleared, json!(""), "a refused password is cleared from the form");
    desk.fill("#login-password", "not the password").await?;
    desk.click("#login-submit").await?;
    let unknown = login_error(&desk).await?;
    assert_eq!(wrong_password, unknown, "the error does not tell whether the account exists");
    assert!(!wrong_password.is_empty());

    sign_in(&desk, &base, &olive).await?;
    open_channel(&desk, general).await?;
    shown(&desk, &long_word).await?;
    let authors = desk
        .js(
            "return [...document.querySelectorAll('#messages .message-author')].map(a => a.textContent);",
            Vec::new(),
        )
        .await?;
    assert!(
        authors.as_array().is_some_and(|a| a.iter().any(|t| t.as_str().is_some_and(|t| t.contains(PAYLOAD)))),
        "the display name shows as text: {authors}"
    );
    let page_text = desk.js("return document.body.textContent;", Vec::new()).await?;
    assert!(page_text.as_str().is_some_and(|t| t.contains(PAYLOAD)), "the org name and bodies show as text");
    nothing_injected(&desk, "org name, display name and bodies").await?;
    let dm_label = desk.text(&format!("a.channel-link[data-channel=\"{dm}\"] .channel-name")).await?;
    assert!(dm_label.contains(PAYLOAD), "the DM is labelled with the display name as text: {dm_label:?}");
    // Only http(s) URLs become links, and they open without the page's context.
    let links = desk
        .js(
            "return [...document.querySelectorAll('#messages .message-body a')].map(a => [a.getAttribute('href'), a.rel]);",
            Vec::new(),
        )
        .await?;
    assert_eq!(
        links,
        json!([["https://example.com/a?b=1", "noopener noreferrer nofollow"]]),
        "links: {links}"
    );

    // Search: the hit's body is text too.
    desk.fill("#search", "findme").await?;
    desk.wait("#search").await?.send_keys(ENTER).await?;
    desk.until(
        "a search hit",
        &format!(
            "return [...document.querySelectorAll('#search-results .search-hit-body')].some(b => b.textContent.includes({}));",
            json!(PAYLOAD)
        ),
        UI_TIMEOUT,
    )
    .await?;
    nothing_injected(&desk, "search hits").await?;
    desk.wait("#search").await?.send_keys("\u{E00C}").await?; // Escape closes the results.

    // Were something to slip into the DOM as HTML, the policy would still stop it running.
    // (The test's own scripts run through WebDriver, which the policy does not govern; what they
    // insert into the page is governed.)
    desk.js(
        "document.body.insertAdjacentHTML('beforeend', '<img id=probe src=x onerror=\"window.__pwned = 1\">');
         const s = document.createElement('script'); s.id = 'probe-script'; s.textContent = 'window.__pwned = 2';
         document.body.append(s);",
        Vec::new(),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pwned = desk
        .js(
            "document.querySelector('#probe')?.remove(); document.querySelector('#probe-script')?.remove();
             return window.__pwned === undefined;",
            Vec::new(),
        )
        .await?;
    assert_eq!(pwned, json!(true), "inline event handlers and inline scripts are refused by the policy");

    // Bad input: an empty message is not sent; one over the limit shows the error and keeps the text.
    let count = "return document.querySelectorAll('#messages li.message').length;";
    let before = desk.js(count, Vec::new()).await?;
    desk.fill("#composer", "   ").await?;
    desk.wait("#composer").await?.send_keys(ENTER).await?;
    let too_long = "x".repeat(16 * 1024 + 1);
    desk.set_value("#composer", &too_long).await?;
    desk.click("#send-button").await?;
    desk.until(
        "the size error",
        "return document.querySelector('#composer-error').textContent.trim();",
        UI_TIMEOUT,
    )
    .await?;
    let error = desk.text("#composer-error").await?;
    assert!(error.contains("16384"), "the error names the limit: {error:?}");
    let kept = desk.js("return document.querySelector('#composer').value.length;", Vec::new()).await?;
    assert_eq!(kept, json!(too_long.len()), "the text stays in the box");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(desk.js(count, Vec::new()).await?, before, "neither was sent");
    desk.set_value("#composer", "").await?;

    accessible(&desk, &axe, "the chat at 1,400 px").await?;
    desk.screenshot(&screenshots(), "chat-1400").await?;

    // Admin: invite by mail, make Mallory a guest, then deactivate her (her socket closes).
    desk.click("#admin-link").await?;
    let row = format!("tr.person[data-user=\"{}\"]", mallory.user);
    desk.wait(&row).await?;
    accessible(&desk, &axe, "the admin screen at 1,400 px").await?;
    desk.js(
        "const s = document.querySelector(arguments[0] + ' select.role-select'); s.value = 'guest';
         s.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![json!(row)],
    )
    .await?;
    let client = stack.pool.get().await?;
    let role_of = |user: UserId| {
        let client = &client;
        async move {
            let row = client
                .query_one("SELECT role, deactivated_at IS NOT NULL FROM users WHERE id = $1", &[&user.0])
                .await?;
            anyhow::Ok((row.get::<_, String>(0), row.get::<_, bool>(1)))
        }
    };
    wait_until("Mallory is a guest", || async { Ok(role_of(mallory.user).await?.0 == "guest") }).await?;
    desk.click(&format!("{row} button.deactivate")).await?;
    wait_until("Mallory is deactivated", || async { Ok(role_of(mallory.user).await?.1) }).await?;
    // The audit log on the same screen shows both, newest first, the payload name as text.
    desk.until(
        "the audit log's newest records",
        "const rows = [...document.querySelectorAll('#audit-log tr.audit-event')].map(r => r.dataset.action);
         return rows[0] === 'user.deactivated' && rows[1] === 'role.changed';",
        UI_TIMEOUT,
    )
    .await?;
    nothing_injected(&desk, "the audit log").await?;

    // Integrations: a bot named with the payload, in #general, with an incoming webhook whose
    // URL is shown once; an alert posted to it appears in the chat, as text.
    desk.fill("#bot-handle", "alerts-bot").await?;
    desk.fill("#bot-display-name", PAYLOAD).await?;
    desk.click(&format!("#bot-channels-{general}")).await?;
    desk.click("#bot-create").await?;
    let bot = desk
        .until("the new bot", "return document.querySelector('li.bot')?.dataset.user;", UI_TIMEOUT)
        .await?;
    let bot = bot.as_str().unwrap_or_default().to_owned();
    nothing_injected(&desk, "the bot list").await?;
    desk.click(&format!("li.bot[data-user=\"{bot}\"] button.bot-new-webhook")).await?;
    desk.fill("#webhook-name", "Alertmanager").await?;
    desk.set_value("#webhook-channel", &general.to_string()).await?;
    desk.click("#webhook-create").await?;
    let url = desk
        .until(
            "the webhook URL",
            "return document.querySelector('#credential-url')?.value || null;",
            UI_TIMEOUT,
        )
        .await?;
    let url = url.as_str().unwrap_or_default().to_owned();
    assert!(url.starts_with(&format!("{base}/v1/hooks/tsw_")), "{url}");
    accessible(&desk, &axe, "the admin screen showing a new webhook").await?;
    desk.click("#credential-done").await?;
    let stored = desk
        .js("return JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage});", Vec::new())
        .await?;
    assert!(!stored.to_string().contains("tsw_"), "the webhook secret was stored in the browser: {stored}");
    let alert = json!({"text": "URGENT: disk 95% full", "client_msg_id": "alert-1"});
    let (status, posted) = rest_json(&stack, "POST", &url[base.len()..], None, &alert).await?;
    assert_eq!(status, 201, "{posted}");
    desk.js("location.hash = arguments[0];", vec![json!(format!("#/c/{general}"))]).await?;
    shown(&desk, "URGENT: disk 95% full").await?;
    nothing_injected(&desk, "a bot's message").await?;
    desk.click("#admin-link").await?;
    desk.wait(&format!("li.bot[data-user=\"{bot}\"] li.credential[data-kind=\"webhook\"]")).await?;
    loop {
        match mallory_ws.recv(WAIT).await? {
            Incoming::Close { code, .. } => {
                assert_eq!(code, 4004, "a deactivated user's socket closes with session_ended");
                break;
            }
            Incoming::Frame(_) => {}
            other => anyhow::bail!("Mallory's socket ended without 4004: {other:?}"),
        }
    }
    // Olive erases Mallory: the dialog names her as text, typing her handle confirms, and the
    // job's progress runs to done with what it did to each kind of data.
    desk.click(&format!("{row} [data-test=erase-user]")).await?;
    desk.wait("[data-test=erase-confirm-handle]").await?;
    nothing_injected(&desk, "the erase dialog").await?;
    accessible(&desk, &axe, "the erase dialog").await?;
    desk.fill("[data-test=erase-confirm-handle]", "mallory").await?;
    desk.click("#erase-confirm").await?;
    desk.wait("[data-test=erase-progress][data-state=\"done\"]").await?;
    desk.wait("[data-test=erase-summary] li[data-kind=\"profile\"]").await?;
    desk.click("#erase-dialog button.dialog-cancel").await?;
    let erased = client
        .query_one(
            "SELECT handle, display_name, erased_at IS NOT NULL FROM users WHERE id = $1",
            &[&mallory.user.0],
        )
        .await?;
    assert_eq!(
        (erased.get::<_, String>(0), erased.get::<_, String>(1), erased.get::<_, bool>(2)),
        (format!("erased-{}", mallory.user), "Erased user".to_owned(), true)
    );
    desk.fill("#invite-email-input", "newbie@xss.test").await?;
    desk.click("#invite-create").await?;
    let link = desk
        .until("the invite link", "return document.querySelector('#invite-link').value;", UI_TIMEOUT)
        .await?;
    let link = link.as_str().unwrap_or_default().to_owned();
    assert!(link.starts_with(&format!("{base}/#/invite?token=")), "{link}");

    // A phone: the invitee accepts in a 360 px wide window; nothing scrolls sideways.
    let phone = driver.page(360, 740).await?;
    phone.goto(&link).await?;
    phone.wait("#invite-handle").await?;
    let (sideways, sizes) = scrolls_sideways(&phone).await?;
    assert!(!sideways, "the invite page scrolls sideways at 360 px: {sizes}");
    accessible(&phone, &axe, "the invite page at 360 px").await?;
    phone.fill("#invite-org", "xss").await?;
    phone.fill("#invite-handle", "newbie").await?;
    phone.fill("#invite-display-name", "Newbie").await?;
    phone.fill("#invite-email", "newbie@xss.test").await?;
    phone.fill("#invite-password", PASSWORD).await?;
    phone.click("#invite-submit").await?;
    connected(&phone).await?;
    phone.js("location.hash = arguments[0];", vec![json!(format!("#/c/{general}"))]).await?;
    shown(&phone, &long_word).await?;
    let (sideways, sizes) = scrolls_sideways(&phone).await?;
    assert!(!sideways, "the chat scrolls sideways at 360 px: {sizes}");
    nothing_injected(&phone, "the chat at 360 px").await?;
    accessible(&phone, &axe, "the chat at 360 px").await?;
    phone.screenshot(&screenshots(), "chat-360").await?;
    phone.click("#sidebar-toggle").await?;
    phone.wait("nav#sidebar").await?;
    phone.screenshot(&screenshots(), "sidebar-360").await?;

    // Sign out, then sign up where the org allows it (a verified address at its domain).
    let (status, body) = rest_json(
        &stack,
        "PUT",
        "/v1/org/signup-domain",
        Some(&olive.access),
        &json!({"domain": "xss.test"}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    phone.click("#sign-out").await?;
    phone.wait("#login-form").await?;
    let mails = accounts::mails(&stack).len();
    phone.goto(&format!("{base}/#/signup")).await?;
    phone.fill("#signup-org", "xss").await?;
    phone.fill("#signup-email", "signer@xss.test").await?;
    phone.click("#signup-submit").await?;
    phone.wait("#signup-notice").await?;
    let mail = accounts::next_mail(&stack, mails).await?;
    let link = mail["link"].as_str().unwrap_or_default().to_owned();
    assert!(link.contains("#/signup?token="), "{mail}");
    phone.goto(&link).await?;
    phone.fill("#signup-org", "xss").await.ok();
    phone.fill("#signup-handle", "signer").await?;
    phone.fill("#signup-display-name", "Signer").await?;
    phone.fill("#signup-password", PASSWORD).await?;
    phone.click("#signup-complete-submit").await?;
    connected(&phone).await?;
    let me = phone.text("#me").await?;
    assert_eq!(me.trim(), "Signer");

    desk.close().await?;
    phone.close().await?;
    Ok(())
}

async fn wait_until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + UI_TIMEOUT;
    while !check().await? {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Resident memory of every Chromium renderer process on the machine (during the benchmark:
/// the one open tab's), from /proc.
fn renderer_rss_bytes() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut total = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("chromium") || !cmdline.contains("--type=renderer") {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_default();
        total += kib * 1024;
    }
    total
}

/// The client's figures (docs/web.md, "Measured"): time from page load to the first message
/// rendered, cold (a new browser profile, nothing cached) and warm (a reload), the JavaScript
/// bytes transferred, and the tab's memory after scrolling back through 5,000 messages. A
/// benchmark, not a check: run it with
/// `cargo nextest run -p threadspace-tests --test web --run-ignored only --no-capture`.
/// It prints the figures and writes `target/reports/web-client.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints figures (docs/web.md)"]
async fn web_client_figures() -> anyhow::Result<()> {
    let mut options = StackOptions::with_bridge(1, &[]);
    options.gateway_args = NO_RATE_LIMITS.iter().map(|s| s.to_string()).collect();
    let stack = Stack::start(options).await?;
    let base = stack.api.http_url();
    let owner = accounts::create_org(&stack, "bench").await?;
    let general = channel_named(&stack, &owner, "general").await?;
    let big = accounts::channel(&stack, owner.org, "big", "public", &[owner.user]).await?;
    let mut sender = ws(&stack, &owner, 0).await?;
    for i in 0..50 {
        send_and_ack(&mut sender, general, &format!("g{i}"), &format!("general message {i}")).await?;
    }
    for i in 0..5_000 {
        let body = format!("message {i} of the big channel, about as long as a chat line usually is");
        send_and_ack(&mut sender, big, &format!("b{i}"), &body).await?;
    }
    wait_archived(&stack, 5_050, Duration::from_secs(120)).await?;
    let driver = Driver::start().await?;

    // Signed in through a refresh token already in storage, as a returning person is.
    let first_message = "return performance.getEntriesByName('threadspace:first-message')[0]?.startTime;";
    let mut cold = Vec::new();
    for _ in 0..3 {
        let page = driver.page(1400, 900).await?;
        page.goto(&format!("{base}/app/config.json")).await?;
        let (_, tokens) = accounts::login(&stack, &owner.slug, &owner.email, PASSWORD).await?;
        page.js(
            "localStorage.setItem('threadspace.refresh', arguments[0]); localStorage.setItem('threadspace.org', arguments[1]);",
            vec![tokens["refresh_token"].clone(), json!(owner.slug)],
        )
        .await?;
        page.goto(&format!("{base}/")).await?;
        cold.push(
            page.until("the first message", first_message, UI_TIMEOUT).await?.as_f64().unwrap_or(f64::NAN),
        );
        let js_bytes = page
            .js(
                "return performance.getEntriesByType('resource').filter(r => r.name.endsWith('.js'))
                    .reduce((n, r) => n + r.transferSize, 0);",
                Vec::new(),
            )
            .await?
            .as_u64()
            .unwrap_or_default();
        let mut warm = Vec::new();
        for _ in 0..5 {
            page.js("location.reload();", Vec::new()).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            warm.push(
                page.until("the first message", first_message, UI_TIMEOUT)
                    .await?
                    .as_f64()
                    .unwrap_or(f64::NAN),
            );
        }
        println!("cold {:.0} ms, warm {:?} ms", cold.last().copied().unwrap_or_default(), warm);
        if cold.len() == 3 {
            // The last profile: memory after scrolling back through the big channel.
            page.js("location.hash = arguments[0];", vec![json!(format!("#/c/{big}"))]).await?;
            page.wait("#messages li.message").await?;
            let before = renderer_rss_bytes();
            let started = std::time::Instant::now();
            scroll_to_beginning(&page).await?;
            let after = renderer_rss_bytes();
            let scrolled = started.elapsed();
            let memory = page
                .js(
                    "return {heap: performance.memory.usedJSHeapSize, total: performance.memory.totalJSHeapSize,
                             nodes: document.getElementsByTagName('*').length,
                             messages: document.querySelectorAll('#messages li.message').length};",
                    Vec::new(),
                )
                .await?;
            let mut sorted = cold.clone();
            sorted.sort_by(f64::total_cmp);
            let mut warm_sorted = warm.clone();
            warm_sorted.sort_by(f64::total_cmp);
            let report = json!({
                "first_message_ms": {"cold": sorted, "warm": warm_sorted,
                    "cold_median": sorted[sorted.len() / 2], "warm_median": warm_sorted[warm_sorted.len() / 2]},
                "javascript_bytes_transferred": js_bytes,
                "after_scrolling_5000": {"seconds": scrolled.as_secs_f64(), "js_heap_bytes": memory["heap"],
                    "js_heap_total_bytes": memory["total"], "dom_elements": memory["nodes"],
                    "messages_in_dom": memory["messages"],
                    "renderer_rss_bytes_before": before, "renderer_rss_bytes_after": after},
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            let dir = threadspace_devstack::tools::repo_root().join("target/reports");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("web-client.json"), serde_json::to_vec_pretty(&report)?)?;
        }
        page.close().await?;
    }
    Ok(())
}
