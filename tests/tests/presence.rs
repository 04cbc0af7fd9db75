//! Presence against real servers and several gateways: connect, idle, active and disconnect
//! are seen by org members on another gateway within 10 s; a user with two connections stays
//! online when one closes; a SIGKILLed gateway's users go offline within 10 s and come back
//! when they reconnect elsewhere; another org never hears any of it.

use std::time::Duration;

use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_protocol::frames::{
    close_code, ClientFrame, ClientStatus, ErrorCode, PresenceEntry, PresenceStatus, ServerFrame,
};
use threadspace_protocol::UserId;
use threadspace_tests::{frames_within, recv_until, Fixture};
use tokio::time::Instant;

use PresenceStatus::{Idle, Offline, Online};

/// The SLO: every presence change is visible within this.
const SLO: Duration = Duration::from_secs(10);

/// A client watching presence: entries that one wait did not need stay in the backlog for the
/// next (one frame often carries several users, and changes of different users may arrive in
/// any order).
struct Watcher {
    client: Client,
    backlog: std::collections::VecDeque<PresenceEntry>,
}

impl Watcher {
    fn new(client: Client) -> Self {
        Self { client, backlog: Default::default() }
    }

    /// Waits until an entry says `user` is `status`; returns how long that took. Fails after
    /// `within`.
    async fn wait(
        &mut self,
        user: UserId,
        status: PresenceStatus,
        within: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let deadline = started + within;
        let wanted = PresenceEntry { user, status };
        loop {
            if let Some(at) = self.backlog.iter().position(|e| *e == wanted) {
                // Consume it and the user's earlier entries; other users' entries stay.
                let mut i = 0;
                self.backlog.retain(|e| {
                    i += 1;
                    i > at + 1 || e.user != user
                });
                return Ok(started.elapsed());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(!left.is_zero(), "{user} was not seen {status:?} within {within:?}");
            match self.client.recv(left).await {
                Ok(Incoming::Frame(ServerFrame::Presence { users })) => self.backlog.extend(users),
                Ok(Incoming::Frame(_)) => {}
                Ok(other) => anyhow::bail!("connection ended waiting for {user} {status:?}: {other:?}"),
                Err(_) => anyhow::bail!("{user} was not seen {status:?} within {within:?}"),
            }
        }
    }
}

async fn wait_presence(
    watcher: &mut Watcher,
    user: UserId,
    status: PresenceStatus,
    within: Duration,
) -> anyhow::Result<Duration> {
    watcher.wait(user, status, within).await
}

/// Every presence entry about `user` received within `window`.
async fn presence_of(watcher: &mut Watcher, user: UserId, window: Duration) -> Vec<PresenceStatus> {
    let mut seen: Vec<PresenceStatus> =
        watcher.backlog.drain(..).filter(|e| e.user == user).map(|e| e.status).collect();
    seen.extend(
        frames_within(&mut watcher.client, window, |frame| match frame {
            ServerFrame::Presence { users } => users.iter().find(|e| e.user == user).map(|e| e.status),
            _ => None,
        })
        .await,
    );
    seen
}

async fn say(client: &Client, status: ClientStatus) -> anyhow::Result<()> {
    client.send(&ClientFrame::Presence { status }).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_idle_active_and_disconnect_reach_another_gateway() -> anyhow::Result<()> {
    let fx = Fixture::start(2, &[]).await?;
    let (alice, carol) = (fx.user("alice"), fx.user("carol"));
    let (carol_conn, _) = fx.connect("carol", 0).await?;
    let mut carol_conn = Watcher::new(carol_conn);
    // bob, on gateway 1, finds carol (gateway 0) in his welcome snapshot once she is known.
    let mut bob = None;
    for _ in 0..50 {
        let (client, welcome) = fx.connect("bob", 1).await?;
        if welcome.presence.contains(&PresenceEntry { user: carol, status: Online }) {
            bob = Some(Watcher::new(client));
            break;
        }
        drop(client);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut bob = bob.ok_or_else(|| anyhow::anyhow!("carol never appeared in bob's welcome snapshot"))?;

    let (alice_a, welcome) = fx.connect("alice", 0).await?;
    assert!(welcome.presence.iter().all(|e| e.status != Offline), "a snapshot lists only who is there");
    let took = wait_presence(&mut bob, alice, Online, SLO).await?;
    println!("connect seen after {took:?}");

    say(&alice_a, ClientStatus::Idle).await?;
    let took = wait_presence(&mut bob, alice, Idle, SLO).await?;
    println!("idle seen after {took:?}");
    say(&alice_a, ClientStatus::Online).await?;
    let took = wait_presence(&mut bob, alice, Online, SLO).await?;
    println!("active seen after {took:?}");

    // A second connection on the other gateway: closing the first keeps alice online.
    let (alice_b, _) = fx.connect("alice", 1).await?;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    alice_a.close(close_code::NORMAL).await?;
    drop(alice_a);
    let seen = presence_of(&mut bob, alice, Duration::from_secs(3)).await;
    assert!(!seen.contains(&Offline), "alice still has a connection, yet bob saw {seen:?}");
    // Idle on her only connection makes her idle; closing it makes her offline.
    say(&alice_b, ClientStatus::Idle).await?;
    wait_presence(&mut bob, alice, Idle, SLO).await?;
    alice_b.close(close_code::NORMAL).await?;
    drop(alice_b);
    let took = wait_presence(&mut bob, alice, Offline, SLO).await?;
    println!("disconnect seen after {took:?}");

    // carol, on the first gateway, heard the same story.
    let carol_saw = presence_of(&mut carol_conn, alice, Duration::from_millis(500)).await;
    assert_eq!(carol_saw.last(), Some(&Offline), "carol (same gateway as alice) saw {carol_saw:?}");

    // A bad presence frame names the field; nothing changes for anyone.
    carol_conn.client.send_text(r#"{"op":"presence","status":"away"}"#).await?;
    let invalid = recv_until(&mut carol_conn.client, "invalid_field", |i| {
        matches!(i, Incoming::Frame(ServerFrame::Error { code: ErrorCode::InvalidField, .. }))
    })
    .await?;
    assert!(format!("{invalid:?}").contains("status"), "{invalid:?}");
    assert!(presence_of(&mut bob, carol, Duration::from_millis(1_000)).await.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactivity_makes_a_user_idle_and_activity_brings_them_back() -> anyhow::Result<()> {
    let fx = Fixture::start(2, &["--idle-after", "2s"]).await?;
    let alice = fx.user("alice");
    let general = fx.channel("general").await;
    let mut bob = Watcher::new(fx.connect("bob", 1).await?.0);
    let (alice_conn, _) = fx.connect("alice", 0).await?;
    wait_presence(&mut bob, alice, Online, SLO).await?;
    // Pings are not a person: alice pings but does nothing else.
    alice_conn.send(&ClientFrame::Ping { reference: None }).await?;
    let took = wait_presence(&mut bob, alice, Idle, SLO).await?;
    assert!(took >= Duration::from_millis(1_000), "idle only after inactivity, not at once ({took:?})");
    alice_conn.send(&ClientFrame::Typing { channel: general }).await?;
    wait_presence(&mut bob, alice, Online, SLO).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_gateways_users_go_offline_within_10s_and_return_elsewhere() -> anyhow::Result<()> {
    let mut fx = Fixture::start(2, &[]).await?;
    let (alice, carol) = (fx.user("alice"), fx.user("carol"));
    let mut bob = Watcher::new(fx.connect("bob", 1).await?.0);
    let (_alice_conn, _) = fx.connect("alice", 0).await?;
    let (_carol_conn, _) = fx.connect("carol", 0).await?;
    wait_presence(&mut bob, alice, Online, SLO).await?;
    wait_presence(&mut bob, carol, Online, SLO).await?;
    // Let a few heartbeats pass, so the crash lands at an arbitrary point of the interval.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let killed = Instant::now();
    fx.stack.kill_gateway(0);
    let mut offline = Vec::new();
    for user in [alice, carol] {
        let left = SLO.saturating_sub(killed.elapsed());
        wait_presence(&mut bob, user, Offline, left).await?;
        offline.push((user, killed.elapsed()));
    }
    println!("offline after the crash: {offline:?}");

    // alice reconnects to the surviving gateway: online again.
    let (_alice_again, _) = fx.connect("alice", 1).await?;
    wait_presence(&mut bob, alice, Online, SLO).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_org_never_receives_this_orgs_presence() -> anyhow::Result<()> {
    let fx = Fixture::start(2, &[]).await?;
    let (mallory, other_org) = threadspace_tests::seed_other_org(&fx.stack).await?;
    let mut bob = Watcher::new(fx.connect("bob", 1).await?.0);
    let (_alice, _) = fx.connect("alice", 0).await?;
    wait_presence(&mut bob, fx.user("alice"), Online, SLO).await?;

    let mut outsider = Client::connect(&ConnectOptions::new(fx.stack.ws_url(1))).await?;
    let welcome = outsider.hello(&fx.stack.token(mallory, other_org), None, threadspace_tests::WAIT).await?;
    let ours: Vec<UserId> = fx.users.values().copied().collect();
    assert!(
        welcome.presence.iter().all(|e| !ours.contains(&e.user)),
        "another org's snapshot lists this org's users: {:?}",
        welcome.presence
    );
    // This org comes and goes on both gateways; the outsider hears only about itself.
    let (dave, _) = fx.connect("dave", 0).await?;
    let (erin, _) = fx.connect("erin", 1).await?;
    say(&dave, ClientStatus::Idle).await?;
    wait_presence(&mut bob, fx.user("dave"), Idle, SLO).await?;
    // (erin must have been seen online first: a connect and close within one coalescing
    // window is, by design, never announced.)
    wait_presence(&mut bob, fx.user("erin"), Online, SLO).await?;
    drop(erin);
    wait_presence(&mut bob, fx.user("erin"), Offline, SLO).await?;
    let heard = frames_within(&mut outsider, Duration::from_millis(1_000), |frame| match frame {
        ServerFrame::Presence { users } => Some(users.clone()),
        _ => None,
    })
    .await;
    for entry in heard.iter().flatten() {
        assert!(!ours.contains(&entry.user), "the outsider heard about {:?}", entry);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_gateway_says_goodbye_instead_of_being_expired() -> anyhow::Result<()> {
    let mut fx = Fixture::start(2, &[]).await?;
    let alice = fx.user("alice");
    let mut bob = Watcher::new(fx.connect("bob", 1).await?.0);
    let (_alice_conn, _) = fx.connect("alice", 0).await?;
    wait_presence(&mut bob, alice, Online, SLO).await?;
    let survivor = fx.stack.gateways[1].port;
    let known = |port| threadspace_tests::metric(port, "threadspace_gateway_presence_gateways", "");
    assert_eq!(known(survivor).await?, 2.0, "both gateways in the table");

    let status = fx.stack.terminate_gateway(0, Duration::from_secs(25));
    assert!(status.is_some_and(|s| s.success()), "gateway 0 drains and exits 0: {status:?}");
    wait_presence(&mut bob, alice, Offline, SLO).await?;
    // Past the 6 s expiry: the drained gateway left by `bye`, it was never expired.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(known(survivor).await?, 1.0, "the drained gateway left the table");
    let expired =
        threadspace_tests::metric(survivor, "threadspace_gateway_presence_gateway_expiries_total", "")
            .await?;
    assert_eq!(expired, 0.0, "a drained gateway is not mistaken for a dead one");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_reconnect_to_the_same_gateway_is_not_announced() -> anyhow::Result<()> {
    let fx = Fixture::start(2, &[]).await?;
    let dave = fx.user("dave");
    let mut carol = Watcher::new(fx.connect("carol", 1).await?.0);
    for trial in 0..3 {
        let (conn, _) = fx.connect("dave", 0).await?;
        wait_presence(&mut carol, dave, Online, SLO).await?;
        // Let a beat pass, then drop and come straight back on the same gateway.
        tokio::time::sleep(Duration::from_millis(700)).await;
        conn.close(close_code::NORMAL).await?;
        drop(conn);
        let (again, _) = fx.connect("dave", 0).await?;
        let seen = presence_of(&mut carol, dave, Duration::from_secs(3)).await;
        assert!(
            !seen.contains(&Offline),
            "trial {trial}: dave reconnected at once, yet carol (another gateway) saw {seen:?}"
        );
        // A real departure is still announced: within the grace period plus propagation.
        again.close(close_code::NORMAL).await?;
        drop(again);
        let took = wait_presence(&mut carol, dave, Offline, SLO).await?;
        println!("trial {trial}: a clean disconnect was seen offline after {took:?}");
        assert!(took < Duration::from_secs(5), "a departure is announced within seconds ({took:?})");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_moved_by_a_rolling_restart_are_not_shown_offline() -> anyhow::Result<()> {
    let fx = Fixture::start(2, &["--reconnect-spread", "4s"]).await?;
    let alice = fx.user("alice");
    let mut bob = Watcher::new(fx.connect("bob", 1).await?.0);
    let (mut alice_conn, _) = fx.connect("alice", 0).await?;
    wait_presence(&mut bob, alice, Online, SLO).await?;

    // Gateway 0 drains (SIGTERM): alice is told to reconnect elsewhere within the spread.
    let pid = fx.stack.gateways[0].process.as_ref().expect("gateway 0 runs").pid();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    assert!(sent.success(), "SIGTERM sent to gateway 0 (pid {pid})");
    recv_until(&mut alice_conn, "reconnect", |i| matches!(i, Incoming::Frame(ServerFrame::Reconnect { .. })))
        .await?;
    drop(alice_conn);
    // She takes 3 s: longer than the 2 s offline grace, within the 4 s spread.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_alice_again, _) = fx.connect("alice", 1).await?;
    let seen = presence_of(&mut bob, alice, Duration::from_secs(6)).await;
    assert!(
        !seen.contains(&Offline),
        "alice moved to gateway 1 within the reconnect spread, yet bob saw {seen:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_knows_the_other_gateways_users_at_once() -> anyhow::Result<()> {
    let mut fx = Fixture::start(2, &[]).await?;
    let alice = fx.user("alice");
    let (_alice_conn, _) = fx.connect("alice", 1).await?;
    let mut bob = Watcher::new(fx.connect("bob", 0).await?.0);
    wait_presence(&mut bob, alice, Online, SLO).await?;
    drop(bob);
    // Past gateway 1's first full snapshot: its next one is up to 10 s away.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    fx.stack.kill_gateway(0);
    fx.stack.start_gateway(0).await?;
    let started = Instant::now();
    // The other gateway answers the newcomer's first beat with its table (not at its next
    // scheduled snapshot), so a welcome from the restarted gateway soon lists alice.
    loop {
        let (_bob, welcome) = fx.connect("bob", 0).await?;
        if welcome.presence.iter().any(|e| e.user == alice && e.status == Online) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3),
            "3 s after the restart, its welcome still lacks alice: {:?}",
            welcome.presence
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("the restarted gateway knew alice {:?} after it was ready", started.elapsed());
    Ok(())
}
