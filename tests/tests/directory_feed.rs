//! The directory feed orders membership changes with messages (docs/accounts.md, "The
//! directory feed"): a member removed from a private channel while another member sends into it
//! receives nothing stored after the removal's position — on either gateway, including one
//! SIGKILLed and restarted around the removal, whose client resumes — and everything stored
//! after a later re-addition.

use std::time::Duration;

use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_devstack::{Stack, StackOptions};
use threadspace_protocol::frames::{MemberChange, Resume, ServerFrame};
use threadspace_protocol::ChannelId;
use threadspace_tests::accounts::{self, create_org, invite, Account};
use threadspace_tests::{rest, send_and_ack, NO_RATE_LIMITS, WAIT};
use tokio::sync::watch;

/// What one connection received: message seqs in `channel`, and the member frames about it.
#[derive(Debug, Default)]
struct Seen {
    seqs: Vec<u64>,
    left: bool,
    joined: bool,
    last_seq: u64,
}

/// Collects frames until `stop` turns true (then drains for a moment) or the connection ends.
fn collect(
    mut client: Client,
    channel: ChannelId,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        loop {
            let stopping = *stop.borrow();
            let wait = if stopping { Duration::from_millis(500) } else { Duration::from_millis(200) };
            let frame = match client.recv(wait).await {
                Ok(frame) => frame,
                Err(_) if stopping => return seen,
                Err(_) => {
                    let _ = stop.has_changed();
                    continue;
                }
            };
            match frame {
                Incoming::Frame(ServerFrame::Msg(m)) => {
                    seen.last_seq = seen.last_seq.max(m.seq);
                    if m.channel == channel {
                        seen.seqs.push(m.seq);
                    }
                }
                Incoming::Frame(ServerFrame::Member { channel: c, change, .. }) if c == channel => {
                    match change {
                        MemberChange::Left => seen.left = true,
                        MemberChange::Joined => seen.joined = true,
                    }
                }
                Incoming::Close { .. } | Incoming::Failed(_) => return seen,
                _ => {}
            }
        }
    })
}

async fn hello(
    stack: &Stack,
    gateway: usize,
    account: &Account,
    resume: Option<u64>,
) -> anyhow::Result<Client> {
    let mut client = Client::connect(&ConnectOptions::new(stack.ws_url(gateway))).await?;
    client.hello(&account.access, resume.map(|last_seq| Resume { last_seq }), WAIT).await?;
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_receives_nothing_stored_after_the_removal_on_any_gateway() -> anyhow::Result<()> {
    let mut options = StackOptions::for_tests(2);
    options.gateway_args = NO_RATE_LIMITS.iter().map(|s| s.to_string()).collect();
    let mut stack = Stack::start(options).await?;
    let owner = create_org(&stack, "order").await?;
    let sender = invite(&stack, &owner, "member", "sally").await?;
    let victim = invite(&stack, &owner, "member", "victor").await?;
    let channel =
        accounts::channel(&stack, owner.org, "secret", "private", &[owner.user, sender.user, victim.user])
            .await?;

    let (stop_tx, stop) = watch::channel(false);
    let on_0 = collect(hello(&stack, 0, &victim, None).await?, channel, stop.clone());
    let mut doomed = hello(&stack, 1, &victim, None).await?;
    let watcher = collect(hello(&stack, 1, &owner, None).await?, channel, stop.clone());

    // Sally sends as fast as acks come back, for the whole test.
    let mut sally = hello(&stack, 0, &sender, None).await?;
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let sending = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !*stop.borrow() {
                n += 1;
                let (seq, _, _) = send_and_ack(&mut sally, channel, &format!("m{n}"), "steady").await?;
                let _ = acked_tx.send(seq);
                // About 300 messages a second: a busy channel, under the test gateways' limits.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            anyhow::Ok(n)
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Gateway 2 crashes with one of Victor's connections; remember where it got to.
    let mut last_on_1 = 0;
    let drained_by = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Ok(Incoming::Frame(frame))) = tokio::time::timeout_at(drained_by, doomed.recv(WAIT)).await {
        if let ServerFrame::Msg(m) = frame {
            last_on_1 = last_on_1.max(m.seq);
        }
    }
    stack.kill_gateway(1);
    drop(doomed);

    // Victor is removed while Sally keeps sending.
    let path = format!("/v1/channels/{channel}/members/{}", victim.user);
    let (status, removal) = rest(&stack, "DELETE", &path, Some(&owner.access)).await?;
    anyhow::ensure!(status == 200 && removal["changed"] == true, "removal: {status} {removal}");
    let removed_at = removal["position"].as_u64().expect("a removal has a position");
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Gateway 2 comes back; Victor resumes there from where it was.
    stack.start_gateway(1).await?;
    let resumed = collect(hello(&stack, 1, &victim, Some(last_on_1)).await?, channel, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Victor is added again: what is stored after that reaches him.
    let (status, addition) = rest(&stack, "PUT", &path, Some(&owner.access)).await?;
    anyhow::ensure!(status == 200, "re-addition: {status} {addition}");
    let added_at = addition["position"].as_u64().expect("an addition has a position");
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop_tx.send(true)?;
    let sent = sending.await??;
    let mut acked = Vec::new();
    while let Ok(seq) = acked_rx.try_recv() {
        acked.push(seq);
    }
    let (on_0, resumed, watcher) = (on_0.await?, resumed.await?, watcher.await?);

    let between = |seq: &u64| *seq > removed_at && *seq < added_at;
    assert!(acked.iter().filter(|s| between(s)).count() >= 10, "Sally kept sending: {sent} sent");
    for (name, seen) in [("gateway 1", &on_0), ("restarted gateway 2", &resumed)] {
        let leaked: Vec<u64> = seen.seqs.iter().copied().filter(between).collect();
        assert!(
            leaked.is_empty(),
            "{name}: Victor received {} messages stored after his removal at {removed_at}: {leaked:?}",
            leaked.len()
        );
        let after: Vec<u64> = acked.iter().copied().filter(|s| *s > added_at).collect();
        let missing: Vec<u64> = after.iter().copied().filter(|s| !seen.seqs.contains(s)).collect();
        assert!(
            !after.is_empty() && missing.is_empty(),
            "{name}: after the re-addition at {added_at}, missing {missing:?}"
        );
    }
    // Gateway 1's connection saw every message before the removal and was told.
    let before: Vec<u64> = acked.iter().copied().filter(|s| *s < removed_at).collect();
    let missing: Vec<u64> = before.iter().copied().filter(|s| !on_0.seqs.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "gateway 1 missed {} messages before the removal: {missing:?}",
        missing.len()
    );
    assert!(on_0.left && on_0.joined, "member frames told Victor: {on_0:?}");
    // The owner, a member throughout, got everything sent while connected to gateway 2 both times.
    assert!(watcher.seqs.iter().any(|s| *s < removed_at), "the owner received messages");
    Ok(())
}
