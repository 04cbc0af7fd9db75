//! `nats-meta-leader-kill` (docs/drills.md, "The meta leader's death"): one kill of the node
//! that leads both the MESSAGES stream and the JetStream meta group, the group every consumer
//! is created through. Which node leads the meta group is read from the nodes' `/jsz`; the
//! stream's leader is moved onto it with a leader stepdown that prefers it.

use std::time::Duration;

use anyhow::Context as _;
use threadspace_devstack::stack::Stack;
use threadspace_protocol::subjects::MESSAGES_STREAM;

/// How long a moved stream leader is left alone before the strike, so the consumers that the
/// move disturbed are back and the strike, not the move, is what the fault measures.
pub(super) const SETTLE: Duration = Duration::from_secs(3);

/// How long the move may take, stepdowns and elections included.
const MOVE_LIMIT: Duration = Duration::from_secs(20);

/// The JetStream meta leader as the first node (other than `except`) that names one says.
pub(super) async fn meta_leader(stack: &Stack, except: Option<usize>) -> Option<String> {
    for (i, node) in stack.nats_servers().enumerate() {
        if Some(i) == except {
            continue;
        }
        if let Some(leader) = node.meta_leader().await {
            return Some(leader);
        }
    }
    None
}

/// The server name of NATS node `i`.
fn node_name(stack: &Stack, i: usize) -> &str {
    stack.nats_servers().nth(i).map_or("", |n| n.name.as_str())
}

/// Fails if, just after node `killed` was killed, the other nodes name a meta leader other
/// than it: followers keep naming a dead leader until they elect another, which takes
/// seconds, so another name means the meta leader had moved before the kill.
pub(super) async fn led_at_kill(stack: &Stack, killed: usize) -> anyhow::Result<()> {
    let name = node_name(stack, killed);
    match meta_leader(stack, Some(killed)).await {
        Some(now) if now != name => {
            anyhow::bail!("the meta leader had moved from {name} to {now} before the kill")
        }
        _ => Ok(()),
    }
}

/// The meta leader the nodes other than `down` elect after it: the first name they give
/// that is not `down`'s (they keep naming the dead node until the election), up to 30 s.
pub(super) async fn wait_for_another(stack: &Stack, down: usize) -> Option<String> {
    let name = node_name(stack, down);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match meta_leader(stack, Some(down)).await {
            Some(leader) if leader != name => return Some(leader),
            _ if tokio::time::Instant::now() > deadline => return None,
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Moves the MESSAGES leader onto the JetStream meta leader: asks the stream's leader to step
/// down in favour of that node (nats-server 2.11 and later) until it leads, retrying a refused
/// or unanswered stepdown (a replica not yet current is refused) for up to [`MOVE_LIMIT`];
/// then waits [`SETTLE`]. Each stepdown is added to `actions`.
pub(super) async fn lead_from_meta_leader(stack: &Stack, actions: &mut Vec<String>) -> anyhow::Result<()> {
    let jetstream = stack.jetstream().await?;
    let subject = format!("STREAM.LEADER.STEPDOWN.{MESSAGES_STREAM}");
    let started = tokio::time::Instant::now();
    loop {
        let stream_leader = stack.stream_leader(MESSAGES_STREAM).await.ok().flatten();
        let why_not = match (meta_leader(stack, None).await, stream_leader) {
            (Some(meta), Some(stream)) if meta == stream => break,
            (Some(meta), Some(stream)) => {
                let request = serde_json::json!({ "placement": { "preferred": meta } });
                let answer: anyhow::Result<serde_json::Value> = jetstream
                    .request(subject.clone(), &request)
                    .await
                    .with_context(|| format!("the stepdown request to {stream} failed"));
                match answer {
                    // A refusal is an answer with an `error` member, not an Err.
                    Ok(answer) => match answer.get("error") {
                        Some(error) => format!("{stream} refused to step down for {meta}: {error}"),
                        None => {
                            actions.push(format!(
                                "asked the MESSAGES leader {stream} to step down for {meta}, the meta leader"
                            ));
                            format!("{stream} stepped down for {meta}, which did not take the lead")
                        }
                    },
                    Err(error) => format!("{error:#}"),
                }
            }
            (None, _) => "no NATS node names a JetStream meta leader".to_owned(),
            (_, None) => "the MESSAGES stream has no leader".to_owned(),
        };
        anyhow::ensure!(
            started.elapsed() < MOVE_LIMIT,
            "the MESSAGES leader was not moved onto the JetStream meta leader within {}: {why_not}",
            humantime::format_duration(MOVE_LIMIT)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(SETTLE).await;
    Ok(())
}
